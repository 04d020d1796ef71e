"""The command line: every command is reachable, bad input is one clear line."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from tcvbm.cli import build_parser, main
from tcvbm.data.writer import write_video

COMMANDS = ["demo", "train", "distill", "sample", "interpolate", "i2v", "upscale", "eval"]


def test_every_command_has_help() -> None:
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, "--help"])
        assert exit_info.value.code == 0


def test_console_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "tcvbm.cli", "--help"], capture_output=True,
                         text=True, check=True)
    for command in COMMANDS:
        assert command in out.stdout


def test_demo_writes_the_bridge_picture(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(12, 48, 64, 3, generator=g) * 255).to(torch.uint8)
    clip = tmp_path / "clip.mp4"
    write_video(frames, clip, fps=12)
    assert main(["demo", "--input", str(clip), "-o", str(tmp_path / "out"), "--size", "32",
                 "--frames", "5", "--factor", "2"]) == 0
    png = tmp_path / "out" / "bridges.png"
    assert png.exists() and png.stat().st_size > 10_000


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys) -> None:
    assert main(["demo", "--input", str(tmp_path / "missing.mp4")]) == 2
    err = capsys.readouterr().err
    assert "missing.mp4" in err and err.count("\n") == 1


def test_resume_flag_becomes_the_resume_override() -> None:
    from tcvbm.cli import _overrides

    args = build_parser().parse_args(["train", "interp-tiny", "train.max_steps=3",
                                      "--resume", "latest"])
    assert _overrides(args) == ["train.max_steps=3", "resume=latest"]
    args = build_parser().parse_args(["distill", "distill-tiny", "teacher=runs/x"])
    assert _overrides(args) == ["teacher=runs/x"]


def _record_calls(monkeypatch, module: str, name: str) -> list[tuple[tuple, dict]]:
    """Replace ``module.name`` by a recorder; the command imports it at call time."""
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(f"{module}.{name}", lambda *a, **kw: calls.append((a, kw)) or [])
    return calls


INFERENCE = ["--steps", "3", "--sampler", "posterior-mean", "--device", "cuda:1", "--precision",
             "bf16", "--seed", "7", "--tile", "64", "--compile", "--codec", "h264", "--crf", "23"]
INFERENCE_KWARGS = dict(steps=3, sampler="posterior-mean", device="cuda:1", precision="bf16",
                        seed=7, tile=64, compile=True, codec="h264", crf=23, lossless=False)


@pytest.mark.parametrize("command,function,argv,extra", [
    ("interpolate", "interpolate", ["in.mp4", "-o", "out.mp4", "--overlap", "2", "--batch", "3",
                                    "--workers", "2"],
     dict(overlap=2, batch=3, workers=2, model="default-interp", factor=None, fps=None,
          dedup=False, scene_cuts=True, scene_threshold=1.0)),
    ("upscale", "upscale", ["in.mp4", "-o", "out.mp4", "--model", "m", "--overlap", "1"],
     dict(overlap=1, batch=1, workers=None, model="m", scale=None)),
    ("i2v", "image_to_video", ["in.png", "-o", "out.mp4", "--model", "m"],
     dict(model="m", frames=None, fps=8.0)),
])
def test_inference_flags_reach_the_pipeline(monkeypatch, command, function, argv, extra) -> None:
    calls = _record_calls(monkeypatch, "tcvbm.pipeline", function)
    assert main([command, *argv, *INFERENCE]) == 0
    (_, kwargs), = calls
    assert kwargs == {**INFERENCE_KWARGS, **extra}


@pytest.mark.parametrize("command,function,argv", [
    ("interpolate", "interpolate", ["in.mp4", "-o", "out.mkv"]),
    ("upscale", "upscale", ["in.mp4", "-o", "out.mkv", "--model", "m"]),
    ("i2v", "image_to_video", ["in.png", "-o", "out.mkv", "--model", "m"]),
])
def test_output_quality_defaults_and_lossless(monkeypatch, command, function, argv) -> None:
    from tcvbm.data.encoding import DEFAULT_CRF

    calls = _record_calls(monkeypatch, "tcvbm.pipeline", function)
    assert main([command, *argv]) == 0
    assert main([command, *argv, "--lossless"]) == 0
    (_, default), (_, lossless) = calls
    assert (default["crf"], default["lossless"]) == (DEFAULT_CRF, False)
    assert (lossless["crf"], lossless["lossless"]) == (DEFAULT_CRF, True)


@pytest.mark.parametrize("crf", ["-1", "52"])
def test_crf_off_the_scale_is_one_line_before_any_work(monkeypatch, capsys, crf) -> None:
    calls = _record_calls(monkeypatch, "tcvbm.pipeline", "interpolate")
    assert main(["interpolate", "in.mp4", "-o", "out.mp4", "--crf", crf]) == 2
    err = capsys.readouterr().err
    assert err == (f"tcvbm interpolate: error: crf: expected an integer from 0 (best quality) "
                   f"to 51 (smallest file), got {crf}\n")
    assert calls == []


def test_crf_and_lossless_together_are_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["interpolate", "in.mp4", "-o", "out.mkv", "--crf", "18", "--lossless"])
    assert exit_info.value.code == 2
    assert "argument --lossless: not allowed with argument --crf" in capsys.readouterr().err


@pytest.mark.parametrize("task,function", [("interp", "interpolate"), ("vsr", "upscale")])
def test_sample_passes_the_flags_to_the_command_of_the_run(monkeypatch, tmp_path, task,
                                                           function) -> None:
    bundle = SimpleNamespace(model_fn=None, task=SimpleNamespace(name=task, factor=2, scale=4))
    monkeypatch.setattr("tcvbm.pipeline.resolve_bundle", lambda run_dir: bundle)
    calls = _record_calls(monkeypatch, "tcvbm.pipeline", function)
    (tmp_path / "clip.mp4").touch()
    assert main(["sample", "run", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                 *INFERENCE]) == 0
    (args, kwargs), = calls
    assert args == (tmp_path / "clip.mp4", tmp_path / "out" / "clip.mp4", 2 if task == "interp"
                    else 4)
    assert kwargs == {**INFERENCE_KWARGS, "model": bundle}


def test_eval_passes_the_local_perceptual_weights(monkeypatch, tmp_path) -> None:
    calls = _record_calls(monkeypatch, "tcvbm.evaluate", "run_eval")
    assert main(["eval", "--task", "interp", "--data", "clips", "-o", str(tmp_path),
                 "--lpips-weights", "lin.pth", "--alexnet-weights", "alex.pth"]) == 0
    (_, kwargs), = calls
    assert kwargs["lpips_weights"] == "lin.pth" and kwargs["alexnet_weights"] == "alex.pth"


def test_tile_flag_runs_like_the_python_api(tmp_path, make_clip) -> None:
    """``--tile 32`` on a 48x64 clip tiles it exactly as ``interpolate(tile=32)`` does."""
    from tcvbm.data import VideoReader
    from tcvbm.pipeline import interpolate

    clip = make_clip(tmp_path / "in.mp4", n=3, h=48, w=64, fps=12)
    outputs = {}
    for name, tile in (("cli", 32), ("api", 32), ("whole", None)):
        out = tmp_path / f"{name}.mp4"
        if name == "cli":
            assert main(["interpolate", str(clip), "-o", str(out), "--tile", "32"]) == 0
        else:
            interpolate(clip, out, tile=tile, progress=False)
        with VideoReader(out, backend="pyav") as reader:
            outputs[name] = reader.read(range(len(reader)))
    assert torch.equal(outputs["cli"], outputs["api"])
    assert not torch.equal(outputs["cli"], outputs["whole"])     # the tiles made a difference
