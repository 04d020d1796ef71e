"""Optical flow (OpenCV DIS) and backward warping, shared by the flow baseline and metrics.

Classical flow is the reference a learned interpolator has to beat and the ruler for
temporal consistency; one implementation serves both so they measure the same motion.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["dis_flow", "backward_warp", "interpolate_pair", "fill_between_keyframes"]

_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
# DIS rejects frames under 12 px and crashes on some under 16 px high (OpenCV 4.x-5.0, for
# example 12x40): smaller frames are edge-padded to this size and their flow cropped back.
_MIN_SIDE = 16


def _grey(frame: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB or float [0, 1] -> uint8 (H, W) grey, what DIS expects."""
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def dis_flow(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Flow (H, W, 2) float32 with ``target(x) ~ source(x + flow(x))``.

    The direction suits backward warping: ``backward_warp(source, flow)`` predicts
    ``target``.
    """
    h, w = target.shape[:2]
    ph, pw = max(_MIN_SIDE - h, 0), max(_MIN_SIDE - w, 0)
    grey = [cv2.copyMakeBorder(_grey(f), 0, ph, 0, pw, cv2.BORDER_REPLICATE) for f in (target, source)]
    dis = cv2.DISOpticalFlow_create(_PRESET)
    return dis.calc(grey[0], grey[1], None)[:h, :w]


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` (H, W, C) at ``x + flow(x)`` (bilinear, edges replicated)."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def interpolate_pair(a: np.ndarray, b: np.ndarray, alphas: list[float]) -> list[np.ndarray]:
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


def fill_between_keyframes(clip: Tensor, keyframes: Tensor, factor: int) -> Tensor:
    """``clip`` (B, C, N, H, W) in [-1, 1] with every frame between two keyframes replaced
    by its flow interpolation; keyframes (B, C, K, H, W) sit at 0, ``factor``, ... .

    Frames outside the last pair (a clip whose ``N - 1`` is not a multiple of ``factor``)
    keep what ``clip`` holds. Runs on the CPU (OpenCV); the result is on ``clip``'s device.
    """
    out = clip.detach().float().cpu().clone()
    alphas = [j / factor for j in range(1, factor)]
    frames = ((keyframes.detach().float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).cpu().numpy()
    for b in range(frames.shape[0]):
        for k in range(frames.shape[1] - 1):
            mids = interpolate_pair(np.ascontiguousarray(frames[b, k]),
                                    np.ascontiguousarray(frames[b, k + 1]), alphas)
            for j, mid in enumerate(mids, start=1):
                if k * factor + j < out.shape[2]:
                    out[b, :, k * factor + j] = torch.from_numpy(mid).permute(2, 0, 1) * 2 - 1
    return out.clamp(-1, 1).to(device=clip.device, dtype=clip.dtype)
