"""The models shipped inside the package load offline and run through the samplers."""

from __future__ import annotations

import pytest
import torch

from tcvbm.data import VideoReader
from tcvbm.pipeline import interpolate
from tcvbm.runs import load_bundle
from tcvbm.samplers import get_sampler, get_timesteps


@pytest.mark.parametrize("name,kind", [("default-interp", "bridge"),
                                       ("default-interp-student", "generator")])
def test_shipped_bundle_runs(name: str, kind: str) -> None:
    bundle = load_bundle(name)
    assert bundle.kind == kind and bundle.task.name == "interp" and bundle.task.factor == 2
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, bundle.num_frames, 32, 32, generator=g) * 2 - 1
    x1 = bundle.task(x0).source
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        out = get_sampler(bundle.sampler)(bundle.model_fn(x1, gen), x1, bundle.bridge,
                                          get_timesteps(bundle.steps), generator=gen)
    assert out.shape == x0.shape and torch.isfinite(out).all()
    # a model that learnt the task stays close to the blended source it refines
    assert (out - x1).abs().mean() < 0.1


def test_interpolate_with_the_default_model(tmp_path, make_clip) -> None:
    clip = make_clip(tmp_path / "in.mp4", n=6, h=48, w=64, fps=12)
    summary = interpolate(clip, tmp_path / "out.mp4", progress=False)
    with VideoReader(tmp_path / "out.mp4", backend="pyav") as reader:
        assert len(reader) == summary.frames_out == 12 and reader.fps == pytest.approx(24)


def test_shipped_models_beat_blending_on_the_held_out_clip(sample_clips, tmp_path) -> None:
    """The quality claim of docs/models.md, on 4 clips of carphone (never trained on) at
    its own 176x144: both shipped models clearly beat linear blending of the keyframes."""
    from tcvbm.evaluate import run_eval

    psnr = {}
    for name, baselines in (("default-interp", True), ("default-interp-student", False)):
        result = run_eval("interp", sample_clips["carphone"], name, baselines=baselines,
                          output_dir=tmp_path / name, size=(144, 176), clips_per_video=4)
        psnr.update({m["method"]: m["mean"]["psnr"] for m in result["methods"]})
    assert psnr["default-interp@1"] > psnr["blend"] + 0.5
    assert psnr["default-interp-student@1"] > psnr["blend"] + 0.5
