"""The models shipped inside the package load offline and run through the samplers."""

from __future__ import annotations

import pytest
import torch

from tcvbm.data import VideoReader
from tcvbm.pipeline import interpolate
from tcvbm.runs import load_bundle
from tcvbm.samplers import get_sampler, get_timesteps

SHIPPED_GAIN_DB = 0.05   # what the shipped model gains over its source on carphone, at least


@pytest.mark.parametrize("name,task", [("default-interp", "interp"), ("default-vsr", "vsr")])
def test_shipped_bundle_runs(name: str, task: str) -> None:
    bundle = load_bundle(name)
    assert bundle.kind == "bridge" and bundle.task.name == task
    assert getattr(bundle.task, "factor", 2) == 2 and getattr(bundle.task, "scale", 4) == 4
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, bundle.num_frames, 32, 32, generator=g) * 2 - 1
    x1, context = bundle.task.prepare(bundle.task.degrade(x0), bundle.num_frames)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        out = get_sampler(bundle.sampler)(bundle.model_fn(x1, gen, context=context), x1,
                                          bundle.bridge, get_timesteps(bundle.steps),
                                          generator=gen)
    assert out.shape == x0.shape and torch.isfinite(out).all()
    # a model that learnt the task stays close to the source it refines
    assert (out - x1).abs().mean() < 0.1


def test_interpolate_with_the_default_model(tmp_path, make_clip) -> None:
    clip = make_clip(tmp_path / "in.mp4", n=6, h=48, w=64, fps=12)
    summary = interpolate(clip, tmp_path / "out.mp4", progress=False)
    with VideoReader(tmp_path / "out.mp4", backend="pyav") as reader:
        assert len(reader) == summary.frames_out == 12 and reader.fps == pytest.approx(24)


def _model_and_source_psnr(bundle, clip, out_dir) -> tuple[float, float]:
    """Mean-of-videos PSNR of ``bundle`` at 1 step and of its own source, in one run."""
    from tcvbm.evaluate import run_eval

    result = run_eval("interp", clip, bundle, [1], baselines=False, output_dir=out_dir,
                      size="native", clips_per_video=8)
    psnr = result["mean_of_videos"]["psnr"]
    return psnr[result["methods"][0]["method"]], psnr["source"]


def test_the_default_model_beats_its_own_source_on_a_clip_it_never_saw(sample_clips,
                                                                        tmp_path) -> None:
    """carphone is in no training set of the shipped model (docs/models.md): at its own
    176x144, 8 windows, the model must be above the flow interpolation it starts from."""
    bundle = load_bundle("default-interp")
    model, source = _model_and_source_psnr(bundle, sample_clips["carphone"], tmp_path)
    assert model > source + SHIPPED_GAIN_DB, (model, source)


def test_a_model_that_learnt_nothing_fails_the_source_check(sample_clips, tmp_path) -> None:
    """The shipped model with its output layer zeroed returns its flow source exactly: the
    check above must fail for it, whatever the shipped weights are."""
    bundle = load_bundle("default-interp")
    head = bundle.model.out[2]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    model, source = _model_and_source_psnr(bundle, sample_clips["carphone"], tmp_path)
    assert model == pytest.approx(source, abs=1e-4)
    assert not model > source + SHIPPED_GAIN_DB


def test_the_default_model_beats_blending_on_the_held_out_clip(sample_clips, tmp_path) -> None:
    """The quality claim of docs/models.md, on 4 clips of carphone (never trained on) at
    its own 176x144: the model clearly beats linear blending of the keyframes."""
    from tcvbm.evaluate import run_eval

    result = run_eval("interp", sample_clips["carphone"], "default-interp", baselines=True,
                      output_dir=tmp_path, size=(144, 176), clips_per_video=4)
    psnr = {m["method"]: m["mean"]["psnr"] for m in result["methods"]}
    assert psnr["default-interp@1"] > psnr["blend"] + 0.5


VSR_GAIN_DB = 0.5   # what the shipped x4 model gains over Lanczos on carphone, at least


def _vsr_psnr(bundle, clip, out_dir) -> dict[str, float]:
    """Mean-of-videos PSNR of ``bundle`` at 1 step, its bicubic source and Lanczos, x4 from
    carphone's own 176x144 (44x36 in), 4 windows, one run."""
    from tcvbm.evaluate import run_eval

    result = run_eval("vsr", clip, bundle, [1], baselines=True, output_dir=out_dir,
                      size="native", clips_per_video=4)
    psnr = result["mean_of_videos"]["psnr"]
    return {"model": psnr[result["methods"][0]["method"]], "lanczos": psnr["lanczos"],
            "bicubic": psnr["bicubic"]}


def test_the_shipped_upscaler_beats_lanczos_on_a_clip_it_never_saw(sample_clips,
                                                                  tmp_path) -> None:
    """carphone is in no training set of default-vsr; its x4 from 44x36 must beat the
    sharpest classical resampler, and the same model with its output layer zeroed (which
    returns its bicubic source) must fail that check."""
    bundle = load_bundle("default-vsr")
    assert bundle.kind == "bridge" and bundle.task.name == "vsr" and bundle.task.scale == 4
    trained = _vsr_psnr(bundle, sample_clips["carphone"], tmp_path / "trained")
    assert trained["model"] > trained["lanczos"] + VSR_GAIN_DB, trained
    head = bundle.model.out[2]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    blank = _vsr_psnr(bundle, sample_clips["carphone"], tmp_path / "blank")
    assert blank["model"] == pytest.approx(blank["bicubic"], abs=1e-4)
    assert not blank["model"] > blank["lanczos"] + VSR_GAIN_DB, blank


def test_upscale_works_out_of_the_box(tmp_path, make_clip) -> None:
    """`tcvbm upscale clip.mp4 -o out.mp4` with no model named: the shipped x4 model."""
    from tcvbm.pipeline import upscale

    clip = make_clip(tmp_path / "in.mp4", n=5, h=24, w=32, fps=10)
    summary = upscale(clip, tmp_path / "out.mp4", progress=False)
    with VideoReader(tmp_path / "out.mp4", backend="pyav") as reader:
        assert len(reader) == summary.frames_out == 5 and reader.size == (96, 128)


def test_the_shipped_upscaler_returns_black_frames_exactly() -> None:
    """default-vsr gates its residual by the source's detail (``flat_gate``): black frames
    and a letterbox come back as their bicubic upscale, where the same network without the
    gate changes them (each level off costs a frame that should be exact tens of dB);
    textured pixels get the network's correction either way."""
    from tcvbm.model_fns import model_window_fn

    bundle = load_bundle("default-vsr")
    assert bundle.model.config.flat_gate == 0.02
    g = torch.Generator().manual_seed(0)
    clip = torch.full((1, 3, 5, 64, 64), -1.0)           # three black frames, then a texture
    clip[:, :, 3:, 32:] = torch.rand((1, 3, 2, 32, 64), generator=g) * 2 - 1  # under a black band
    obs = bundle.task.degrade(clip)
    source = bundle.task.lift(obs, 5)
    gated = model_window_fn(bundle, 1, "posterior-mean")(obs)
    bundle.model.register_to_config(flat_gate=0.0)
    plain = model_window_fn(bundle, 1, "posterior-mean")(obs)
    flat = (slice(None), slice(None), slice(None), slice(0, 12))  # every frame's top rows
    torch.testing.assert_close(gated[flat], source[flat], atol=1e-5, rtol=0)
    assert (plain[flat] - source[flat]).abs().max() > 1e-3
    textured = (slice(None), slice(None), slice(3, 5), slice(40, 56))
    torch.testing.assert_close(gated[textured], plain[textured])
    assert (gated[textured] - source[textured]).abs().max() > 0.01
