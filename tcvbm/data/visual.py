"""Conversions between model clips and pixels, and quick-look pictures.

Model space is float ``(C, N, H, W)`` (or batched ``(B, C, N, H, W)``) in [-1, 1];
pixel space is uint8 ``(N, H, W, 3)`` (or ``(B, N, H, W, 3)``), what readers return
and writers take, or uint16 on the full 0..65535 scale for video deeper than 8 bits
(:mod:`tcvbm.data.video`). The two conversions are exact inverses on pixel values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from tcvbm.atomic import AtomicPath

__all__ = ["to_uint8", "to_pixels", "uint8_levels", "from_uint8", "from_pixels", "frame_grid",
           "save_grid_png", "save_gif"]

PIXEL_DTYPES = (torch.uint8, torch.uint16)


def _half_peak(dtype: torch.dtype) -> float:
    """Half the largest pixel value of ``dtype``: the scale between pixels and [-1, 1]."""
    if dtype not in PIXEL_DTYPES:
        raise ValueError(f"pixels are uint8 or uint16, not {dtype}")
    return torch.iinfo(dtype).max / 2


def to_pixels(clip: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float ``([B,] C, N, H, W)`` in [-1, 1] -> ``dtype`` (uint8 or uint16) pixels
    ``([B,] N, H, W, 3)`` (1 channel -> gray RGB)."""
    if (not isinstance(clip, torch.Tensor) or clip.ndim not in (4, 5)
            or clip.shape[-4] not in (1, 3)):
        shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
        raise ValueError(f"clip must be a ([B,] C, N, H, W) tensor with C in (1, 3), got {shape}")
    half = _half_peak(dtype)
    x = ((clip.detach().float().clamp(-1, 1) + 1) * half).round().to(dtype)
    x = x.movedim(-4, -1)
    return x.expand(*x.shape[:-1], 3).contiguous() if x.shape[-1] == 1 else x.contiguous()


def to_uint8(clip: torch.Tensor) -> torch.Tensor:
    """float ``([B,] C, N, H, W)`` in [-1, 1] -> uint8 ``([B,] N, H, W, 3)``
    (:func:`to_pixels`)."""
    return to_pixels(clip, torch.uint8)


def uint8_levels(clip: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> the nearest of the 256 levels :func:`to_uint8` writes, as floats.

    What a video command writes is 8-bit: scoring a method's float output before this
    rounding would credit differences smaller than half a level that no written frame has.
    """
    return ((clip.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def from_pixels(frames: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float32,
                pixel_dtypes: tuple[torch.dtype, ...] = PIXEL_DTYPES) -> torch.Tensor:
    """uint8 or uint16 ``([B,] N, H, W, 3)`` -> float ``([B,] 3, N, H, W)`` in [-1, 1].

    ``pixel_dtypes``: the pixel types accepted (:func:`from_uint8` takes uint8 only).
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.dtype not in pixel_dtypes or frames.ndim not in (4, 5) or frames.shape[-1] != 3:
        kinds = " or ".join(str(d).removeprefix("torch.") for d in pixel_dtypes)
        raise ValueError(f"frames must be {kinds} ([B,] N, H, W, 3), got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    return frames.movedim(-1, -4).to(dtype).div(_half_peak(frames.dtype)).sub(1)


def from_uint8(frames: torch.Tensor | np.ndarray,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``([B,] N, H, W, 3)`` -> float ``([B,] 3, N, H, W)`` in [-1, 1]."""
    return from_pixels(frames, dtype, (torch.uint8,))


def _as_pixels(clips) -> np.ndarray:
    """A clip, a batch or a list of clips (float or uint8) -> uint8 (rows, N, H, W, 3)."""
    if isinstance(clips, (list, tuple)):
        rows = [_as_pixels(c) for c in clips]
        n = max(r.shape[1] for r in rows)
        hw = {r.shape[2:4] for r in rows}
        if len(hw) != 1:
            raise ValueError(f"all rows of a grid need the same frame size, got {sorted(hw)}")
        pad = [np.pad(r, ((0, 0), (0, n - r.shape[1]), (0, 0), (0, 0), (0, 0))) for r in rows]
        return np.concatenate(pad)
    if isinstance(clips, np.ndarray):
        clips = torch.from_numpy(clips)
    if clips.dtype == torch.uint8:
        pixels = clips if clips.ndim == 5 else clips[None]
    else:
        pixels = to_uint8(clips)
        pixels = pixels if pixels.ndim == 5 else pixels[None]
    if pixels.ndim != 5:
        raise ValueError(f"cannot make a picture of a tensor of shape {tuple(clips.shape)}")
    return pixels.numpy()


def _save_image(image: Image.Image, path: str | os.PathLike, **kwargs) -> str:
    """Save atomically (PIL picks the format by the suffix, which the staging name keeps)."""
    with AtomicPath(path) as staged:
        image.save(staged, **kwargs)
    return os.fspath(path)


def frame_grid(frames: np.ndarray, pad: int = 2, margin: int = 0) -> np.ndarray:
    """uint8 ``(rows, cols, H, W, 3)`` -> one uint8 picture ``(height, width, 3)``.

    Frames are laid out row by row, ``pad`` white pixels between neighbours and ``margin``
    around the whole; every picture of clips (grids, GIF frames, previews) is made here so
    they all line frames up the same way.
    """
    if frames.ndim != 5 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (rows, cols, H, W, 3), got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    rows, cols, h, w, _ = frames.shape
    grid = np.full((rows * (h + pad) - pad + 2 * margin, cols * (w + pad) - pad + 2 * margin, 3),
                   255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = margin + r * (h + pad), margin + c * (w + pad)
            grid[y : y + h, x : x + w] = frames[r, c]
    return grid


def save_grid_png(
    clips: torch.Tensor | np.ndarray | Sequence, path: str | os.PathLike, pad: int = 2,
    max_frames: int | None = None,
) -> str:
    """One row per clip, one column per frame, on a white background.

    ``clips``: float ``([B,] C, N, H, W)`` in [-1, 1], uint8 ``([B,] N, H, W, 3)``, or a
    list of those (rows may differ in frame count). Returns the path.
    """
    pixels = _as_pixels(clips)
    if max_frames is not None:
        pixels = pixels[:, :max_frames]
    return _save_image(Image.fromarray(frame_grid(pixels, pad, margin=pad)), path)


def save_gif(clips: torch.Tensor | np.ndarray | Sequence, path: str | os.PathLike,
             fps: float = 8.0, pad: int = 2) -> str:
    """An animated GIF; several clips play side by side. Same inputs as :func:`save_grid_png`."""
    pixels = _as_pixels(clips)
    # frame t of the animation: frame t of every clip, side by side
    frames = [Image.fromarray(frame_grid(pixels[None, :, t], pad)) for t in range(pixels.shape[1])]
    duration = max(20, round(1000 / fps))
    return _save_image(frames[0], path, save_all=True, append_images=frames[1:], duration=duration,
                       loop=0)
