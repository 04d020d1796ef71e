"""Baselines without a learned model, with the same signature as a model's window function.

Each baseline maps a task's observation (keyframes, a first frame, a low-resolution clip,
``(B, C, K, h, w)`` in [-1, 1]) to a clip of ``num_frames`` frames, so the evaluation
harness scores them exactly like a model. Linear blending, bicubic upscaling and the static
clip are the tasks' own ``lift``: the source a bridge starts from is itself the baseline
the model has to beat.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from tcvbm.flow import backward_warp, dis_flow
from tcvbm.tasks import FrameInterpolation, Task

__all__ = ["BASELINES", "Baseline", "get_baseline", "frame_repetition", "linear_blending",
           "flow_interpolation", "task_lift"]

Baseline = Callable[[Task, Tensor, int], Tensor]


def task_lift(task: Task, obs: Tensor, num_frames: int) -> Tensor:
    """The task's own source clip: bicubic upscaling (vsr), static clip (i2v)."""
    return task.lift(obs, num_frames)


def linear_blending(task: FrameInterpolation, obs: Tensor, num_frames: int) -> Tensor:
    """Each in-between frame mixes its two keyframes in proportion to its distance."""
    return FrameInterpolation(factor=task.factor, mode="blend").lift(obs, num_frames)


def frame_repetition(task: FrameInterpolation, obs: Tensor, num_frames: int) -> Tensor:
    """Each keyframe is held until the next one (what a player does at a lower rate)."""
    held = torch.arange(num_frames, device=obs.device) // task.factor
    return obs[:, :, held.clamp_max(obs.shape[2] - 1)]


def _flow_pair(a: np.ndarray, b: np.ndarray, alphas: list[float]) -> list[np.ndarray]:
    """Frames at times ``alphas`` between float (H, W, 3) frames ``a`` and ``b`` in [0, 1].

    Bidirectional: flows a->b and b->a give, under linear motion, the flows from the
    intermediate time back to both ends (the Super SloMo approximation); both ends are
    warped there and mixed by temporal distance.
    """
    f01 = dis_flow(a, b)          # a(x) ~ b(x + f01(x)): a -> b on a's grid
    f10 = dis_flow(b, a)          # b(x) ~ a(x + f10(x)): b -> a on b's grid
    out = []
    for t in alphas:
        ft0 = -(1 - t) * t * f01 + t * t * f10
        ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
        warped0 = backward_warp(a, ft0.astype(np.float32))
        warped1 = backward_warp(b, ft1.astype(np.float32))
        out.append((1 - t) * warped0 + t * warped1)
    return out


def flow_interpolation(task: FrameInterpolation, obs: Tensor, num_frames: int) -> Tensor:
    """Classical interpolation: OpenCV DIS flow in both directions, bidirectional warping."""
    clip = linear_blending(task, obs, num_frames).clone()
    f = task.factor
    alphas = [j / f for j in range(1, f)]
    frames = ((obs.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).cpu().numpy()  # (B,K,H,W,C)
    for b in range(obs.shape[0]):
        for k in range(obs.shape[2] - 1):
            mids = _flow_pair(np.ascontiguousarray(frames[b, k]),
                              np.ascontiguousarray(frames[b, k + 1]), alphas)
            for j, mid in enumerate(mids, start=1):
                pos = k * f + j
                if pos < num_frames:
                    clip[b, :, pos] = torch.from_numpy(mid).permute(2, 0, 1) * 2 - 1
    return clip.clamp(-1, 1)


BASELINES: dict[str, dict[str, Baseline]] = {
    "interp": {"repeat": frame_repetition, "blend": linear_blending, "flow": flow_interpolation},
    "vsr": {"bicubic": task_lift},
    "image-sr": {"bicubic": task_lift},
    "i2v": {"static": task_lift},
}


def get_baseline(task_name: str, name: str) -> Baseline:
    if name not in BASELINES.get(task_name, {}):
        raise ValueError(f"baseline: no {name!r} baseline for task {task_name!r}; expected one "
                         f"of {sorted(BASELINES.get(task_name, {}))}")
    return BASELINES[task_name][name]
