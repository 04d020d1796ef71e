"""Scene cuts on real footage: nothing is interpolated across a cut between two real shots,
the summary counts the cuts, and ``--scene-threshold`` scales the detector's two thresholds.

The model returns its source (linear blending for interpolation), so an in-between frame
across the cut would be the mean of the two shots' frames; with cuts detected it is the
last frame of the first shot, repeated.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tcvbm.cli import main
from tcvbm.data import VideoReader
from tcvbm.data.writer import write_video
from tcvbm.pipeline import RunSummary, interpolate
from tcvbm.scenes import DIFF_THRESHOLD, HIST_THRESHOLD, SceneCutDetector

from conftest import decode_all
from test_pipeline import source_bundle

pytestmark = pytest.mark.usefixtures("one_thread")

SHOT = 4            # frames taken from each clip


@pytest.fixture
def two_shots(tmp_path: Path, sample_clips) -> tuple[Path, np.ndarray, np.ndarray]:
    """A lossless clip of two real shots, 144x176 each: a crop of bikes, then carphone."""
    with VideoReader(sample_clips["bikes"], backend="pyav") as reader:
        bikes = reader.read(range(40, 40 + SHOT))[:, 64:208, 232:408].numpy()
    with VideoReader(sample_clips["carphone"], backend="pyav") as reader:
        carphone = reader.read(range(SHOT)).numpy()
    path = write_video(np.concatenate([bikes, carphone]), tmp_path / "two_shots.mkv", fps=25,
                       lossless=True)
    return Path(path), bikes, carphone


def run(clip: Path, out: Path, **options) -> tuple[RunSummary, np.ndarray]:
    summary = interpolate(clip, out, model=source_bundle(), lossless=True, progress=False,
                          **options)
    return summary, decode_all(out)


def test_no_frame_between_two_real_shots_is_a_blend(tmp_path: Path, two_shots) -> None:
    clip, first, second = two_shots
    summary, made = run(clip, tmp_path / "cut.mkv")
    assert made.shape == (4 * SHOT, 144, 176, 3)
    assert np.array_equal(made[0:2 * SHOT:2], first) and np.array_equal(made[2 * SHOT::2], second)
    at_cut = made[2 * SHOT - 1]                       # between the shots' facing frames
    assert np.array_equal(at_cut, first[-1]) or np.array_equal(at_cut, second[0])
    assert summary.scene_cuts == 1 and str(summary).endswith(", 1 scene cut(s)")

    summary, blended = run(clip, tmp_path / "blend.mkv", scene_cuts=False)
    mean = (first[-1].astype(np.float32) + second[0]) / 2
    assert np.abs(blended[2 * SHOT - 1] - mean).max() <= 1    # the cross-fade that never was
    assert not np.array_equal(blended[2 * SHOT - 1], first[-1])
    assert summary.scene_cuts == 0 and "scene cut" not in str(summary)


def test_the_threshold_scales_how_many_cuts_are_found(tmp_path: Path, two_shots) -> None:
    clip, first, second = two_shots
    cuts = {x: run(clip, tmp_path / f"x{x}.mkv", scene_threshold=x)[0].scene_cuts
            for x in (0.2, 1.0, 2.5)}
    assert cuts[0.2] > cuts[1.0] == 1 > cuts[2.5] == 0   # 0.2 also cuts the bikes' motion
    made = decode_all(tmp_path / "x2.5.mkv")             # 2.5: this cut is not stark enough
    assert not np.array_equal(made[2 * SHOT - 1], first[-1])


def test_scaled_moves_both_thresholds_and_refuses_nonsense() -> None:
    assert SceneCutDetector.scaled() == SceneCutDetector()
    half = SceneCutDetector.scaled(0.5)
    assert (half.diff_threshold, half.hist_threshold) == (DIFF_THRESHOLD / 2, HIST_THRESHOLD / 2)
    assert not SceneCutDetector.scaled(2.0, enabled=False).enabled
    for bad in (0, -1.0, math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="scene threshold: expected a number > 0"):
            SceneCutDetector.scaled(bad)


def test_the_detector_counts_its_cuts() -> None:
    grey, white = torch.full((16, 16, 3), 40, dtype=torch.uint8), torch.full((16, 16, 3), 250,
                                                                           dtype=torch.uint8)
    detector = SceneCutDetector()
    found = [detector.is_cut(a, b) for a, b in [(grey, grey), (grey, white), (white, grey)]]
    assert found == [False, True, True] and detector.cuts == 2


def test_the_option_reaches_the_command_and_is_checked_first(tmp_path: Path, two_shots,
                                                            monkeypatch, capsys) -> None:
    clip = two_shots[0]
    calls = []
    monkeypatch.setattr("tcvbm.pipeline.interpolate", lambda *a, **kw: calls.append(kw))
    assert main(["interpolate", str(clip), "-o", "out.mp4", "--scene-threshold", "0.5"]) == 0
    assert calls[0]["scene_threshold"] == 0.5 and calls[0]["scene_cuts"] is True
    monkeypatch.undo()
    # a threshold that makes no sense fails before the (missing) model is looked for
    assert main(["interpolate", str(clip), "-o", str(tmp_path / "out.mp4"), "--scene-threshold",
                 "0", "--model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert err == ("tcvbm interpolate: error: scene threshold: expected a number > 0 (1.0 is "
                   "the default), got 0.0\n")
    assert not (tmp_path / "out.mp4").exists()
