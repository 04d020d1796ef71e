"""The side-by-side interpolation picture reads both videos and lines their frames up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tcvbm.data.writer import write_video
from tcvbm.preview import interpolation_preview


def solid(colours: list[tuple[int, int, int]], h: int = 32, w: int = 48) -> torch.Tensor:
    """uint8 frames ``(n, h, w, 3)``, each one flat colour: it survives coding and scaling."""
    return torch.tensor(colours, dtype=torch.uint8)[:, None, None].expand(-1, h, w, -1).contiguous()


def panel_colours(image: np.ndarray) -> list[list[np.ndarray]]:
    """The median colour of every frame in each row of frames of a preview, top row first.

    Frames are the runs of colourful pixels (text, axes and the white gaps are grey): rows
    of frames are bands of image rows full of them, frames the runs along a band's middle.
    """
    rgb = image[..., :3].astype(int)
    colourful = rgb.max(-1) - rgb.min(-1) > 60
    rows = np.flatnonzero(colourful.sum(1) > 100)
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    found = []
    for band in bands:
        middle = band[len(band) // 3: 2 * len(band) // 3]
        cols = np.flatnonzero(colourful[middle].all(0))
        runs = [r for r in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1) if len(r) > 5]
        found.append([np.median(rgb[middle][:, r].reshape(-1, 3), axis=0) for r in runs])
    return found


def test_preview_rows_line_up(tmp_path) -> None:
    """Top row: linear blending of the input frames around the middle; bottom row: the
    output frames of the same stretch, in order (told apart by their green level)."""
    keys = [(220, 50 * k, 30) for k in range(6)]
    made = [(30, 10 + 22 * i, 220) for i in range(12)]
    write_video(solid(keys), tmp_path / "in.mp4", fps=10)
    write_video(solid(made), tmp_path / "out.mp4", fps=20)
    path = interpolation_preview(tmp_path / "in.mp4", tmp_path / "out.mp4",
                                 tmp_path / "p.png", factor=2, keyframes=3)
    top, bottom = panel_colours(np.asarray(Image.open(path)))
    # 3 keyframes from the middle of 6 are input frames 1-3, output frames 2-6 at x2.
    blend = [keys[1], np.mean([keys[1], keys[2]], 0), keys[2], np.mean([keys[2], keys[3]], 0),
             keys[3]]
    assert len(top) == len(blend) and len(bottom) == 5
    np.testing.assert_allclose(top, blend, atol=8)
    np.testing.assert_allclose(bottom, made[2:7], atol=8)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4", "p.png"]


def test_preview_of_a_missing_output_names_it(tmp_path) -> None:
    write_video(torch.zeros(4, 16, 16, 3, dtype=torch.uint8), tmp_path / "in.mp4", fps=10)
    with pytest.raises(ValueError, match="missing.mp4"):
        interpolation_preview(tmp_path / "in.mp4", tmp_path / "missing.mp4", tmp_path / "p.png", 2)
