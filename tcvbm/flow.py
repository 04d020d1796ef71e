"""Optical flow (OpenCV DIS) and backward warping, shared by the flow baseline and metrics.

Classical flow is the reference a learned interpolator has to beat and the ruler for
temporal consistency; one implementation serves both so they measure the same motion.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["dis_flow", "backward_warp"]

_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


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
    dis = cv2.DISOpticalFlow_create(_PRESET)
    return dis.calc(_grey(target), _grey(source), None)


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` (H, W, C) at ``x + flow(x)`` (bilinear, edges replicated)."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
