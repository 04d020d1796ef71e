"""The side-by-side interpolation picture reads both videos and lines their frames up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tcvbm.data.writer import write_video
from tcvbm.preview import interpolation_preview


def test_preview_rows_line_up(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    keys = (torch.rand(6, 32, 48, 3, generator=g) * 255).to(torch.uint8)
    doubled = keys.repeat_interleave(2, dim=0)
    write_video(keys, tmp_path / "in.mp4", fps=10)
    write_video(doubled, tmp_path / "out.mp4", fps=20)
    path = interpolation_preview(tmp_path / "in.mp4", tmp_path / "out.mp4",
                                 tmp_path / "p.png", factor=2, keyframes=3)
    image = np.asarray(Image.open(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_preview_of_a_missing_output_names_it(tmp_path) -> None:
    write_video(torch.zeros(4, 16, 16, 3, dtype=torch.uint8), tmp_path / "in.mp4", fps=10)
    with pytest.raises(ValueError, match="missing.mp4"):
        interpolation_preview(tmp_path / "in.mp4", tmp_path / "missing.mp4", tmp_path / "p.png", 2)
