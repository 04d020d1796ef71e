"""The evaluation harness and the baselines on clips with a known answer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import fmean

import pytest
import torch

from tcvbm.baselines import flow_interpolation, frame_repetition, get_baseline, linear_blending
from tcvbm.eval_report import mean_of_videos, per_video, per_video_metrics, per_video_table
from tcvbm.evaluate import load_eval_clips, run_eval
from tcvbm.metrics import PSNR_MAX, psnr
from tcvbm.tasks import get_task

from conftest import _make_clip as make_clip
from test_pipeline import SourceModel, moving_frames, source_bundle


def write_lossless(path: Path, frames: torch.Tensor, fps: int = 10) -> Path:
    """uint8 (n, H, W, 3) frames to a lossless FFV1 file, so the pixels read back exactly."""
    return make_clip(path, fps=fps, codec="ffv1", pix_fmt="bgr0", frames=frames.numpy())


def fade(n: int = 17, size: int = 32, step: int = 10) -> torch.Tensor:
    """Flat grey frames brightening by ``step`` levels a frame: blending is exact."""
    levels = 20 + step * torch.arange(n)
    return levels.view(n, 1, 1, 1).expand(n, size, size, 3).to(torch.uint8).contiguous()


def test_baselines_on_a_moving_pattern():
    task = get_task("interp", factor=2)
    g = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 30, generator=g),
                                              size=(96, 136), mode="bicubic")[0]
    clip = torch.stack([texture[:, :, 20 - 2 * i:116 - 2 * i] for i in range(5)], 1)  # 2 px/frame
    clip = (clip[None] * 2 - 1).clamp(-1, 1)
    obs = task.degrade(clip)
    scored = ~task.known_frames(5)
    scores = {f.__name__: float(psnr(f(task, obs, 5), clip, scored))
              for f in (frame_repetition, linear_blending, flow_interpolation)}
    assert scores["flow_interpolation"] > scores["linear_blending"] + 5
    assert scores["linear_blending"] > scores["frame_repetition"]
    with pytest.raises(ValueError, match="baseline"):
        get_baseline("interp", "bicubic")


def test_eval_numbers_on_a_linear_fade(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_lossless(data / "fade.mkv", fade())
    result = run_eval("interp", data, model=source_bundle(9), steps=[1, 2], baselines=True,
                      output_dir=tmp_path / "eval", clips_per_video=2)
    by_name = {m["method"]: m for m in result["methods"]}
    assert set(by_name) == {"InferenceBundle@1", "InferenceBundle@2", "source", "repeat", "blend",
                            "flow"}
    assert result["clips"] == ["fade@0", "fade@8"] and result["scored_frames"] == 4
    # Blending (and a model that returns its blended source) is exact on a linear fade.
    for name in ("blend", "InferenceBundle@1", "InferenceBundle@2"):
        assert by_name[name]["mean"]["psnr"] == PSNR_MAX
        assert by_name[name]["mean"]["ssim"] == pytest.approx(1.0, abs=1e-4)
    # Repetition is off by one step (10 levels) on every scored frame.
    assert by_name["repeat"]["mean"]["psnr"] == pytest.approx(20 * math.log10(255 / 10), abs=0.01)
    assert len(by_name["repeat"]["per_clip"]) == 2
    saved = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert saved["methods"][0]["mean"]["psnr"] == PSNR_MAX
    assert "ms_ssim" in saved["skipped"] and "fvd" in saved["skipped"]
    table = (tmp_path / "eval/metrics.md").read_text()
    assert "| blend |" in table and "PSNR" in table and "ST-LPIPS" in table
    for png in ("quality_vs_steps.png", "quality_vs_time.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 1000


def test_per_video_means_weight_each_video_once():
    """Three windows of one video and one of another: the mean of videos is not the mean of
    windows, and a video is named by what comes before the last ``@``."""
    def rows(values: dict[str, float]) -> list[dict]:
        return [{"clip": clip, "psnr": v, "ssim": v / 100} for clip, v in values.items()]

    summary = [{"method": "model@1", "steps": 1, "mean": {},
                "per_clip": rows({"a@0": 30.0, "a@8": 32.0, "a@16": 34.0, "take@2@0": 20.0})},
               {"method": "blend", "steps": None, "mean": {},
                "per_clip": rows({"a@0": 25.0, "a@8": 25.0, "a@16": 25.0, "take@2@0": 15.0})}]
    windows = [r["psnr"] for r in summary[0]["per_clip"]]
    assert fmean(windows) == 29.0
    table = per_video(summary, "psnr")
    assert table == {"a": {"model@1": 32.0, "blend": 25.0},
                     "take@2": {"model@1": 20.0, "blend": 15.0}}
    assert mean_of_videos(table) == {"model@1": 26.0, "blend": 20.0}
    assert per_video_metrics(summary) == ["psnr", "ssim"]
    text = per_video_table(summary, "psnr", "{:.2f}")
    assert "| video | model@1 | blend |" in text
    assert "| a | 32.00 | 25.00 |" in text and "| take@2 | 20.00 | 15.00 |" in text
    assert text.rstrip().endswith("| mean of videos | 26.00 | 20.00 |")


def test_eval_scores_the_models_own_source_per_video(tmp_path):
    """A model that returns its source scores exactly the ``source`` row, which is there
    without baselines; metrics.md and metrics.json carry the per-video figures."""
    data = tmp_path / "data"
    data.mkdir()
    write_lossless(data / "pan.mkv", moving_frames(17))
    write_lossless(data / "short.mkv", moving_frames(9, seed=1))
    result = run_eval("interp", data, model=source_bundle(9), steps=[1], baselines=False,
                      output_dir=tmp_path / "eval", clips_per_video=2)
    assert result["clips"] == ["pan@0", "pan@8", "short@0"]
    model, source = result["methods"]
    assert (model["method"], source["method"], source["steps"]) == ("InferenceBundle@1",
                                                                     "source", None)
    assert source["mean"]["psnr"] < 60        # blending is not exact on a pan: a real check
    for ours, theirs in zip(model["per_clip"], source["per_clip"]):
        assert ours["psnr"] == pytest.approx(theirs["psnr"], abs=1e-6)
    saved = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert set(saved["per_video"]) == set(saved["mean_of_videos"]) == {"psnr", "ssim", "stlpips"}
    pan = fmean(r["psnr"] for r in source["per_clip"] if r["clip"].startswith("pan@"))
    assert saved["per_video"]["psnr"]["pan"]["source"] == pytest.approx(pan)
    assert saved["mean_of_videos"]["psnr"]["source"] == pytest.approx(
        fmean(saved["per_video"]["psnr"][v]["source"] for v in ("pan", "short")))
    text = (tmp_path / "eval/metrics.md").read_text()
    for label in ("PSNR", "SSIM", "ST-LPIPS"):
        assert f"## {label} per video" in text
    assert text.count("| mean of videos |") == 3 and "| short |" in text


def test_training_eval_of_an_exact_model_is_capped(tmp_path):
    """A training run's evaluation scores with the same metrics: a model (and a source) that
    is exact on the frames it makes gets ``PSNR_MAX``, as in ``tcvbm eval``, not infinity."""
    from tcvbm.data import from_uint8
    from tcvbm.evaluate import evaluate_bundle

    clips = [(f"fade@{k}", from_uint8(fade()[k:k + 9])) for k in (0, 8)]
    figures = evaluate_bundle(source_bundle(9), clips, tmp_path / "step-5", fps=8)
    assert figures["psnr"] == figures["psnr_source"] == PSNR_MAX
    assert figures["ssim"] == pytest.approx(1.0, abs=1e-4) == figures["ssim_source"]
    assert set(figures) == {"psnr", "ssim", "psnr_source", "ssim_source"}
    assert json.loads((tmp_path / "step-5" / "metrics.json").read_text()) == figures
    for name in ("sample-0.mp4", "sample-1.mp4", "grid.png"):
        assert (tmp_path / "step-5" / name).stat().st_size > 0


def test_eval_baselines_only_for_vsr_and_i2v(tmp_path):
    data = write_lossless(tmp_path / "fade.mkv", fade(n=5, size=32))
    vsr = run_eval("vsr", data, baselines=True, output_dir=tmp_path / "vsr", scale=2,
                   num_frames=3, size=32, clips_per_video=1)
    assert [m["method"] for m in vsr["methods"]] == ["bicubic", "lanczos"]
    assert min(m["mean"]["psnr"] for m in vsr["methods"]) > 40  # flat frames upscale exactly
    i2v = run_eval("i2v", data, output_dir=tmp_path / "i2v", num_frames=3, size=32,
                   clips_per_video=1)
    static = i2v["methods"][0]["mean"]["psnr"]           # off by 10 and 20 levels
    expected = 0.5 * (20 * math.log10(255 / 10) + 20 * math.log10(255 / 20))
    assert static == pytest.approx(expected, abs=0.01)
    with pytest.raises(ValueError, match="model"):
        run_eval("interp", data, baselines=False, output_dir=tmp_path / "x")


def test_eval_command_takes_width_by_height(tmp_path):
    """``--size WxH`` as videos are written; the table and JSON say H x W."""
    from tcvbm.cli import main, parse_size

    assert parse_size("176x144") == (144, 176) and parse_size("64") == (64, 64)
    data = write_lossless(tmp_path / "fade.mkv", fade(n=9, size=48))
    out = tmp_path / "eval"
    assert main(["eval", "--task", "interp", "--data", str(data), "--baselines", "--size", "48x32",
                 "--frames", "5", "--clips-per-video", "1", "-o", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["size"] == [32, 48]
    with pytest.raises(SystemExit):
        main(["eval", "--task", "interp", "--data", str(data), "--size", "wide"])


def test_eval_at_native_size_scores_each_video_at_its_own_size(tmp_path):
    from tcvbm.cli import main

    data = tmp_path / "data"
    data.mkdir()
    write_lossless(data / "big.mkv", moving_frames(9, h=40, w=56))
    write_lossless(data / "small.mkv", moving_frames(9, h=24, w=32, seed=1))
    out = tmp_path / "eval"
    assert main(["eval", "--task", "interp", "--data", str(data), "--baselines", "--size",
                 "native", "--frames", "5", "--clips-per-video", "1", "-o", str(out)]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["size"] == "native" and saved["clips"] == ["big@0", "small@0"]
    assert "each video's own size" in (out / "metrics.md").read_text()
    shapes = [tuple(c.shape[-2:]) for _, c in load_eval_clips(data, 5, None, 1)]
    assert shapes == [(40, 56), (24, 32)]


def test_outputs_are_scored_as_the_8_bit_frames_a_command_writes(tmp_path):
    """A method a third of a level off its source everywhere writes the same 8-bit frames:
    it scores exactly the source; a method two levels off does not. (The source copies the
    nearer keyframe: its frames are 8-bit levels themselves.)"""
    from tcvbm.evaluate import Method, score_methods

    task = get_task("interp", factor=2, mode="nearest")
    frame = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    clips = [("still@0", (torch.round((frame + 1) * 127.5) / 127.5 - 1).expand(3, 5, 16, 16))]
    lift = lambda obs: task.lift(obs, 5)  # noqa: E731
    methods = [Method("source", lift),
               Method("third", lambda obs: lift(obs) + (1 / 3) / 127.5),
               Method("two", lambda obs: lift(obs) + 2 / 127.5)]
    score_methods(methods, clips, task, 5, perceptual={}, notes={}, temporal=False)
    source, third, two = (m.results[0]["psnr"] for m in methods)
    assert third == source == PSNR_MAX and two < 50


def test_lanczos_upscaling_is_a_sharp_classical_resampler() -> None:
    """On a smooth texture Lanczos is at least about as close as bicubic and far above
    pixel repetition; it keeps the clip's shape, device and dtype."""
    from tcvbm.baselines import lanczos_upscaling

    task = get_task("vsr", scale=4)
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 3, 12, 12, generator=g),
                                             size=(3, 96, 96), mode="trilinear") * 2 - 1
    obs = task.degrade(smooth)
    up = lanczos_upscaling(task, obs, 3)
    assert up.shape == smooth.shape and up.dtype == smooth.dtype
    lanczos, bicubic = float(psnr(up, smooth)), float(psnr(task.lift(obs, 3), smooth))
    nearest = float(psnr(obs.repeat_interleave(4, -1).repeat_interleave(4, -2), smooth))
    assert lanczos > bicubic - 0.5 and lanczos > nearest + 3, (lanczos, bicubic, nearest)


def test_frames_larger_than_a_tile_are_scored_on_the_pipelines_tiles(tmp_path) -> None:
    """A 600 px wide clip reaches the model as tiles of at most 512 px (bounded memory, as
    the commands run it); a per-pixel source (blending) comes back as untiled, to within
    the rounding of the feathered seams to 8-bit levels."""
    from tcvbm.windows import DEFAULT_TILE

    data = write_lossless(tmp_path / "wide.mkv", moving_frames(5, h=24, w=600))
    bundle = source_bundle(5)
    widths: list[int] = []
    bundle.model.register_forward_pre_hook(lambda m, args: widths.append(args[0].shape[-1]))
    result = run_eval("interp", data, model=bundle, steps=[1], baselines=True, size="native",
                      output_dir=tmp_path / "eval", clips_per_video=1)
    by_name = {m["method"]: m["mean"]["psnr"] for m in result["methods"]}
    assert widths and max(widths) <= DEFAULT_TILE + 32 and len(widths) >= 2
    assert by_name["InferenceBundle@1"] == pytest.approx(by_name["blend"], abs=0.02)  # 8-bit


class StateModel(SourceModel):
    """x0 prediction = the bridge state x_t: its output is whatever noise the sampler drew."""

    def forward(self, x_t, t, cond=None, context=None, noise=None):
        return x_t


def test_samples_report_the_spread_of_a_stochastic_model_and_none_of_a_deterministic_one(
        tmp_path) -> None:
    """``samples=3``: each model row gets the spread of three seeded samples; 1 posterior-mean
    step from the source is deterministic (spread 0), 2 stochastic steps carry the bridge
    noise drawn at t = 1/2 (spread > 0); the fidelity metrics score the first sample."""
    data = tmp_path / "data"
    data.mkdir()
    write_lossless(data / "pan.mkv", moving_frames(9))
    bundle = source_bundle(5, task="i2v")
    bundle.model = StateModel()
    rows = {}
    for sampler, steps in (("posterior-mean", 1), ("stochastic", 2)):
        result = run_eval("i2v", data, model=bundle, steps=[steps], baselines=False,
                          output_dir=tmp_path / sampler, sampler=sampler, clips_per_video=1,
                          samples=3)
        rows[sampler] = result["methods"][0]["mean"]
        single = run_eval("i2v", data, model=bundle, steps=[steps], baselines=False,
                          output_dir=tmp_path / f"{sampler}-1", sampler=sampler, clips_per_video=1)
        assert "spread" not in single["methods"][0]["mean"]
        assert single["methods"][0]["mean"]["psnr"] == rows[sampler]["psnr"]
    assert rows["posterior-mean"]["spread"] == 0
    assert rows["stochastic"]["spread"] > 0.01
    assert " spread |" in (tmp_path / "stochastic/metrics.md").read_text()


def test_sample_spread_is_the_per_pixel_standard_deviation_in_unit_intensities() -> None:
    from tcvbm.metrics import sample_spread

    a = torch.zeros(1, 3, 2, 4, 4)
    samples = torch.stack([a - 0.5, a + 0.5])                # [-1, 1] values 1 apart
    frames = torch.tensor([True, False])
    assert sample_spread(samples, frames).tolist() == pytest.approx([0.5 / math.sqrt(2)])
    assert sample_spread(torch.stack([a, a, a])).tolist() == [0.0]
    with pytest.raises(ValueError, match="samples"):
        sample_spread(a[None])
