"""Optical flow (OpenCV DIS) and backward warping, shared by interpolation and metrics.

Classical flow is the reference a learned interpolator has to beat and the ruler for
temporal consistency; one implementation serves both so they measure the same motion.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["dis_flow", "linear_time_flows", "backward_warp", "Candidates", "warp_candidates"]

_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
# DIS rejects frames under 12 px and crashes on some under 16 px high (OpenCV 4.x-5.0, for
# example 12x40): smaller frames are edge-padded to this size and their flow cropped back.
_MIN_SIDE = 16


def _grey(frame: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB or float [0, 1] -> uint8 (H, W) grey, what DIS expects."""
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def dis_flow(target: np.ndarray, source: np.ndarray, finest_scale: int | None = None,
             patch_stride: int | None = None) -> np.ndarray:
    """Flow (H, W, 2) float32 with ``target(x) ~ source(x + flow(x))``.

    The direction suits backward warping: ``backward_warp(source, flow)`` predicts
    ``target``. ``finest_scale`` and ``patch_stride`` replace the preset's (1: half
    resolution, and 3 px), for studies of other settings (studies/interp-source).
    """
    h, w = target.shape[:2]
    ph, pw = max(_MIN_SIDE - h, 0), max(_MIN_SIDE - w, 0)
    grey = [cv2.copyMakeBorder(_grey(f), 0, ph, 0, pw, cv2.BORDER_REPLICATE)
            for f in (target, source)]
    dis = cv2.DISOpticalFlow_create(_PRESET)
    if finest_scale is not None:
        dis.setFinestScale(finest_scale)
    if patch_stride is not None:
        dis.setPatchStride(patch_stride)
    return dis.calc(grey[0], grey[1], None)[:h, :w]


def linear_time_flows(f01: np.ndarray, f10: np.ndarray,
                      t: float) -> tuple[np.ndarray, np.ndarray]:
    """Flows from time ``t`` back to both ends, from the flows between them.

    ``f01``: a -> b on a's grid, ``f10``: b -> a on b's grid. Under linear motion these give
    the flows from the in-between time to ``a`` and to ``b`` (the Super SloMo approximation),
    float32.
    """
    ft0 = -(1 - t) * t * f01 + t * t * f10
    ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
    return ft0.astype(np.float32), ft1.astype(np.float32)


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` (H, W, C) at ``x + flow(x)`` (bilinear, edges replicated)."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


class Candidates(NamedTuple):
    """What bidirectional flow interpolation knows about in-between frames, before it mixes.

    For ``P`` keyframe pairs ``(a, b)`` and ``T`` times, each ``(P, T, ...)``, float32 on the
    CPU. Flows are in pixels and point from the in-between frame to a keyframe: the
    candidate is that keyframe sampled at ``x + flow(x)``. Kept apart (rather than mixed at
    once) so a model can weigh the two per pixel where they disagree (occlusions, flow
    failures), which the mix alone cannot tell it.
    """

    left: Tensor        # (P, T, C, H, W) in [0, 1]: ``a`` warped to the time
    right: Tensor       # (P, T, C, H, W) in [0, 1]: ``b`` warped to the time
    left_flow: Tensor   # (P, T, 2, H, W): (x, y) from the time to ``a``
    right_flow: Tensor  # (P, T, 2, H, W): (x, y) from the time to ``b``


def _warps(a: np.ndarray, b: np.ndarray, times: Sequence[float]) -> list[tuple[np.ndarray, ...]]:
    """(a warped, b warped, flow to a, flow to b) at each time, for float (H, W, 3) frames:
    both ends warped along :func:`linear_time_flows`."""
    f01 = dis_flow(a, b)          # a(x) ~ b(x + f01(x)): a -> b on a's grid
    f10 = dis_flow(b, a)          # b(x) ~ a(x + f10(x)): b -> a on b's grid
    out = []
    for t in times:
        ft0, ft1 = linear_time_flows(f01, f10, t)
        out.append((backward_warp(a, ft0), backward_warp(b, ft1), ft0, ft1))
    return out


def warp_candidates(a: Tensor, b: Tensor, times: Sequence[float]) -> Candidates:
    """Both frames of each pair warped to each time in (0, 1), with the flows that did it.

    ``a``, ``b``: (P, C, H, W) RGB in [0, 1], the pairs' earlier and later frames. The one
    implementation behind the flow source, the flow baseline and a model's flow context
    (:class:`tcvbm.tasks.FrameInterpolation`); runs on the CPU (OpenCV).
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"a, b: expected two (P, C, H, W) tensors of one shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    frames = [f.detach().float().cpu().permute(0, 2, 3, 1).numpy() for f in (a, b)]
    fields: list[list[Tensor]] = [[], [], [], []]
    for pa, pb in zip(*frames):
        warps = _warps(np.ascontiguousarray(pa), np.ascontiguousarray(pb), times)
        for field, arrays in zip(fields, zip(*warps)):
            field.append(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))
    p, c, h, w = a.shape  # no pairs (a clip with one keyframe): empty fields of these shapes
    shapes = [(p, len(times), c, h, w)] * 2 + [(p, len(times), 2, h, w)] * 2
    return Candidates(*(torch.stack(f) if f else torch.zeros(shape)
                        for f, shape in zip(fields, shapes)))
