"""Baselines without a learned model, with the same signature as a model's window function.

Each baseline maps a task's observation (keyframes, a first frame, a low-resolution clip,
``(B, C, K, h, w)`` in [-1, 1]) to a clip of ``num_frames`` frames, so the evaluation
harness scores them exactly like a model. Linear blending, bicubic upscaling and the static
clip are the tasks' own ``lift``: the source a bridge starts from is itself the baseline
the model has to beat.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from tcvbm.tasks import FrameInterpolation, SuperResolution, Task

__all__ = ["BASELINES", "Baseline", "get_baseline", "frame_repetition", "linear_blending",
           "flow_interpolation", "lanczos_upscaling", "task_lift"]

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


def flow_interpolation(task: FrameInterpolation, obs: Tensor, num_frames: int) -> Tensor:
    """Classical interpolation: OpenCV DIS flow in both directions, bidirectional warping."""
    return FrameInterpolation(factor=task.factor, mode="flow").lift(obs, num_frames)


def lanczos_upscaling(task: SuperResolution, obs: Tensor, num_frames: int) -> Tensor:
    """Each frame upscaled by OpenCV's Lanczos filter (8x8 taps), the sharpest classical
    resampler editors and players offer; 0.2-0.3 dB above bicubic at x4 on real clips
    (docs/models.md, default-vsr)."""
    import cv2  # OpenCV: only for this baseline and flow

    b, c, n, h, w = obs.shape
    size = (w * task.scale, h * task.scale)
    frames = obs.detach().float().cpu().permute(0, 2, 3, 4, 1).reshape(b * n, h, w, c).numpy()
    up = torch.stack([torch.from_numpy(cv2.resize(f, size, interpolation=cv2.INTER_LANCZOS4))
                      .reshape(size[1], size[0], c) for f in frames])
    up = up.reshape(b, n, size[1], size[0], c).permute(0, 4, 1, 2, 3)
    return up.clamp(-1, 1).to(device=obs.device, dtype=obs.dtype)


BASELINES: dict[str, dict[str, Baseline]] = {
    "interp": {"repeat": frame_repetition, "blend": linear_blending, "flow": flow_interpolation},
    "vsr": {"bicubic": task_lift, "lanczos": lanczos_upscaling},
    "i2v": {"static": task_lift},
}


def get_baseline(task_name: str, name: str) -> Baseline:
    if name not in BASELINES.get(task_name, {}):
        raise ValueError(f"baseline: no {name!r} baseline for task {task_name!r}; expected one "
                         f"of {sorted(BASELINES.get(task_name, {}))}")
    return BASELINES[task_name][name]
