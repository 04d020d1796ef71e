"""The command line: every command is reachable, bad input is one clear line."""

from __future__ import annotations

import subprocess
import sys

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

    args = build_parser().parse_args(["train", "interp-tiny", "train.max_steps=3", "--resume", "latest"])
    assert _overrides(args) == ["train.max_steps=3", "resume=latest"]
    args = build_parser().parse_args(["distill", "distill-tiny", "teacher=runs/x"])
    assert _overrides(args) == ["teacher=runs/x"]
