"""The seeded-study summary: means, standard deviations and paired differences over seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from statistics import stdev

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SUMMARIZE = REPO_ROOT / "studies" / "tcvbm-vs-bm" / "summarize.py"


def write_eval(root: Path, name: str, model: dict[str, float], baseline: float) -> None:
    """A ``tcvbm eval`` metrics.json: the model at 1 step and a flow baseline, two videos,
    the first cut into two windows (so a mean over windows would differ from one of videos)."""
    def rows(values: dict[str, float]) -> list[dict]:
        return [{"clip": clip, "psnr": psnr, "ssim": psnr / 100} for clip, psnr in values.items()]
    methods = [{"method": "m@1", "steps": 1, "mean": {}, "per_clip": rows(model)},
               {"method": "flow", "steps": None, "mean": {},
                "per_clip": rows({"a@0": baseline, "a@9": baseline, "b@0": baseline})}]
    (root / name).mkdir(parents=True)
    (root / name / "metrics.json").write_text(json.dumps({"methods": methods}))


def test_summary_reports_seed_means_sds_and_paired_differences(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # video a's windows average to a; video b counts as much as both of a's windows together
    ar1 = {0: {"a@0": 30.0, "a@9": 32.0, "b@0": 40.0}, 1: {"a@0": 31.0, "a@9": 31.0, "b@0": 42.0}}
    bm = {0: {"a@0": 30.0, "a@9": 30.0, "b@0": 40.0}, 1: {"a@0": 29.0, "a@9": 29.0, "b@0": 41.0}}
    for seed in (0, 1):
        write_eval(runs, f"eval-ar1-s{seed}-posterior-mean", ar1[seed], 33.0)
        write_eval(runs, f"eval-brownian-s{seed}-posterior-mean", bm[seed], 33.0)
    out = tmp_path / "summary"
    subprocess.run([sys.executable, str(SUMMARIZE), str(runs), "-o", str(out)], check=True)
    row = json.loads((out / "summary.json").read_text())["rows"][0]
    assert row["ar1/psnr"] == [35.5, 36.5]            # (31 + 40) / 2 and (31 + 42) / 2
    assert row["brownian/psnr"] == [35.0, 35.0]
    assert row["diff/psnr"] == [0.5, 1.5]
    table = (out / "table.md").read_text()
    assert f"| posterior-mean | 1 | 36.00 ± {stdev([35.5, 36.5]):.2f} | 35.00 ± 0.00 | " \
           f"+1.00 ± {stdev([0.5, 1.5]):.2f} |" in table
    assert "flow 33.00 dB" in table
    assert "| a | 31.00 ± 0.00 | 29.50 ± 0.71 | 33.00 |" in table
    assert (out / "psnr_vs_steps.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "raw").iterdir()) == sorted(
        f"eval-{p}-s{s}-posterior-mean.json" for p in ("ar1", "brownian") for s in (0, 1))


def test_summary_without_evaluations_says_where_it_looked(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SUMMARIZE), str(tmp_path), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode != 0 and "no eval-PRIOR-sSEED-SAMPLER/metrics.json" in done.stderr


@pytest.mark.parametrize("script", ["interp.sh", "vsr.sh", "i2v.sh", "common.sh"])
def test_study_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(SUMMARIZE.parent / script)], check=True)


DISTILL = REPO_ROOT / "studies" / "distillation"


def write_distill_eval(root: Path, name: str, rows: dict[str, dict[str, float]]) -> None:
    """A ``tcvbm eval`` metrics.json as the distillation study reads it: per-video and
    mean-of-videos tables, and per-method means (spread, time)."""
    methods, mean_of_videos, per_video = [], {}, {}
    for method, figures in rows.items():
        steps = int(method.split("@")[1]) if "@" in method else None
        methods.append({"method": method, "steps": steps, "mean": figures, "per_clip": []})
        for metric in ("psnr", "stlpips"):
            mean_of_videos.setdefault(metric, {})[method] = figures[metric]
            per_video.setdefault(metric, {}).setdefault("v", {})[method] = figures[metric]
    (root / name).mkdir(parents=True)
    (root / name / "metrics.json").write_text(json.dumps(
        {"methods": methods, "mean_of_videos": mean_of_videos, "per_video": per_video}))


def test_distillation_summary_reports_seeds_weight_change_and_curves(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    runs, teacher = tmp_path / "runs", tmp_path / "teacher"
    for seed, lp in ((0, 0.10), (1, 0.12)):
        write_distill_eval(runs, f"eval-teacher-s{seed}", {
            "t@1": {"psnr": 30.0, "stlpips": 0.2, "spread": 0.0},
            "t@8": {"psnr": 29.0, "stlpips": lp, "spread": 0.01},
            "source": {"psnr": 28.0, "stlpips": 0.3}})
        write_distill_eval(runs, f"eval-student-1-s{seed}", {
            "s@1": {"psnr": 29.5, "stlpips": lp + 0.01, "spread": 0.008}})
    # the teacher's first layer has 2 inputs; the student appends 1 noise input (weights 3, 4)
    teacher.mkdir()
    (teacher / "tcvbm.json").write_text("{}")
    save_file({"conv": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([2.0])},
              str(teacher / "diffusion_pytorch_model.safetensors"))
    (runs / "student-1" / "model").mkdir(parents=True)
    save_file({"conv": torch.tensor([[1.0, 1.0, 3.0]]), "b": torch.tensor([2.0])},
              str(runs / "student-1" / "model" / "diffusion_pytorch_model.safetensors"))
    (runs / "student-1" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 6, "loss/fake": 1.0, "loss/generator": 0.1},
        {"step": 12, "loss/fake": 0.5, "loss/generator": 0.05, "eval/psnr": 30.0}]) + "\n")
    (runs / "student-1" / "config.yaml").write_text("distill: {fake_per_generator: 3}\n")
    write_distill_eval(runs, "curve-student-1-8", {"s@1": {"psnr": 29.8, "stlpips": 0.15}})
    write_distill_eval(runs, "curve-student-1-real-8", {"s@1": {"psnr": 1.0, "stlpips": 1.0}})
    write_distill_eval(runs, "curve-student-1-4", {"s@1": {"psnr": 29.9, "stlpips": 0.16}})
    write_distill_eval(runs, "select-student-1-8", {"s@1": {"psnr": 29.0, "stlpips": 0.2}})
    write_distill_eval(runs, "select-student-1-4", {"s@1": {"psnr": 29.0, "stlpips": 0.3}})
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(DISTILL / "summarize.py"), str(runs), "-o", str(out),
                    "--teacher", str(teacher)], check=True)
    summary = json.loads((out / "summary.json").read_text())
    change = summary["weight_change"]["student-1"]
    assert change["relative_l2"] == pytest.approx((1 / 5) ** 0.5)   # |(0,1,0)| / |(1,0,2)|
    assert change["noise_weight_norm"] == pytest.approx(3.0)
    assert summary["curves"]["student-1"]["eval/psnr"] == [[12, 30.0]]
    assert summary["curves"]["student-1"]["dev/stlpips"] == [[4, 0.16], [8, 0.15]]  # not -real's
    assert summary["curves"]["student-1"]["select/stlpips"] == [[4, 0.3], [8, 0.2]]
    assert "| student-1 | 4 | 1 | 0.3000 | 29.90 | 0.1600 |" in (out / "table.md").read_text()
    assert "| student-1 | 8 | 2 | **0.2000** | 29.80 | 0.1500 |" in (out / "table.md").read_text()
    table = (out / "table.md").read_text()
    assert f"| teacher@8 | 29.00 ± 0.00 |  | 0.1100 ± {stdev([0.10, 0.12]):.4f} | 0.0100 ± " \
           in table
    assert "| student-1@1 | 29.50 ± 0.00 |  | 0.1200 ± " in table
    assert "| 4.47e-01 | 1.00e+00 | 3.000 |" in table
    assert "| source | 28.00 |  | 0.3000 |" in table
    assert table.index("| teacher@8") < table.index("| student-1@1")
    assert (out / "curves.png").stat().st_size > 0
    assert len(list((out / "raw").iterdir())) == 4


@pytest.mark.parametrize("script", [
    "run.sh", "fake-model.sh", "real-term.sh", "selection-set.sh", "confirm.sh", "common.sh"])
def test_distillation_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(DISTILL / script)], check=True)


def test_distillation_summary_picks_on_the_selection_set(tmp_path: Path) -> None:
    """The selection set (selset-NAME-STEP) is a second selection beside carphone: each marks
    its own pick, --pick prints the set's, and a checkpoint scored on its own (eval-NAME-STEP,
    exported as model-NAME-STEP) gets its weight change."""
    import torch
    from safetensors.torch import save_file

    runs, teacher = tmp_path / "runs", tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "tcvbm.json").write_text("{}")
    save_file({"w": torch.tensor([1.0, 0.0])}, str(teacher / "diffusion_pytorch_model.safetensors"))
    (runs / "student-2").mkdir(parents=True)
    (runs / "student-2" / "config.yaml").write_text("distill: {fake_per_generator: 1}\n")
    for step, dev, carphone, selset in ((2, 0.10, 0.30, 0.20), (4, 0.12, 0.25, 0.22)):
        write_distill_eval(runs, f"curve-student-2-{step}", {"s@2": {"psnr": 30.0, "stlpips": dev}})
        write_distill_eval(runs, f"select-student-2-{step}", {"s@2": {"psnr": 29.0,
                                                                     "stlpips": carphone}})
        write_distill_eval(runs, f"selset-student-2-{step}", {"s@2": {"psnr": 28.0,
                                                                     "stlpips": selset}})
    write_distill_eval(runs, "selset-teacher", {"t@4": {"psnr": 27.5, "stlpips": 0.21},
                                                "bicubic": {"psnr": 27.0, "stlpips": 0.4}})
    write_distill_eval(runs, "eval-teacher-s0", {"t@4": {"psnr": 30.0, "stlpips": 0.1}})
    write_distill_eval(runs, "eval-student-2-2-s0", {"s@2": {"psnr": 30.0, "stlpips": 0.1}})
    (runs / "model-student-2-2").mkdir()
    save_file({"w": torch.tensor([1.0, 1.0])},
              str(runs / "model-student-2-2" / "diffusion_pytorch_model.safetensors"))
    summarize = [sys.executable, str(DISTILL / "summarize.py"), str(runs)]
    pick = subprocess.run([*summarize, "--pick", "student-2"], check=True, capture_output=True,
                          text=True).stdout
    assert pick.strip() == "2"   # carphone would pick 4
    out = tmp_path / "out"
    subprocess.run([*summarize, "-o", str(out), "--teacher", str(teacher)], check=True)
    table = (out / "table.md").read_text()
    assert "| run | step | generator updates | carphone ST-LPIPS | selection-set ST-LPIPS |" \
        in table
    assert "| student-2 | 2 | 1 | 0.3000 | **0.2000** | 30.00 | 0.1000 |" in table
    assert "| student-2 | 4 | 2 | **0.2500** | 0.2200 | 30.00 | 0.1200 |" in table
    assert "The teacher on the selection set (PSNR / ST-LPIPS, mean of videos): t@4 27.50 / " \
           "0.2100, bicubic 27.00 / 0.4000." in table
    change = json.loads((out / "summary.json").read_text())["weight_change"]["student-2-2"]
    assert change["relative_l2"] == pytest.approx(1.0)


def write_window_eval(root: Path, name: str, method: str, steps: int,
                      stlpips: dict[str, float]) -> None:
    """A ``tcvbm eval`` metrics.json with one model row and per-window ST-LPIPS and PSNR."""
    rows = [{"clip": clip, "stlpips": value, "psnr": 30.0} for clip, value in stlpips.items()]
    (root / name).mkdir(parents=True)
    (root / name / "metrics.json").write_text(json.dumps({"methods": [
        {"method": method, "steps": steps, "mean": {}, "per_clip": rows},
        {"method": "bicubic", "steps": None, "mean": {}, "per_clip": rows}]}))


def test_confirmation_reads_only_the_new_windows_and_applies_its_margin(tmp_path: Path) -> None:
    """The first window of each video (@0) is left out of the claim and reported apart; the
    claim holds for a student within the margin of the teacher's 4 steps, and fails beyond."""
    runs = tmp_path / "runs"
    teacher = {"a@0": 0.5, "a@10": 0.10, "a@20": 0.12, "b@0": 0.5, "b@30": 0.10}
    for seed in (0, 1):
        write_window_eval(runs, f"new-teacher-s{seed}", "default-vsr@4", 4, teacher)
        # within the margin on the new windows (a: 0.1115, b: 0.1015; teacher 0.11, 0.10),
        # far better on the first ones: a mean over every window would pass the other seed
        write_window_eval(runs, f"new-student-2-seed0-440-s{seed}", "m@2", 2,
                          {"a@0": 0.0, "a@10": 0.111, "a@20": 0.112, "b@0": 0.0, "b@30": 0.1015})
        write_window_eval(runs, f"new-student-2-seed1-440-s{seed}", "m@2", 2,
                          {"a@0": 0.0, "a@10": 0.12, "a@20": 0.12, "b@0": 0.0, "b@30": 0.11})
    # another checkpoint: in the tables, ordered by step, not a claim, its raw JSON not copied
    write_window_eval(runs, "new-student-2-seed0-1320-s0", "m@2", 2, {"a@10": 0.2, "b@30": 0.2})
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(DISTILL / "confirm.py"), str(runs), "-o", str(out)],
                   check=True, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    claim = summary["claim"]
    assert claim["student-2-seed0-440@2"]["teacher@4"] == pytest.approx(0.105)
    assert claim["student-2-seed0-440@2"]["student"] == pytest.approx(0.1065)
    assert claim["student-2-seed0-440@2"]["holds"] is True
    assert claim["student-2-seed1-440@2"]["student"] == pytest.approx(0.115)
    assert claim["student-2-seed1-440@2"]["holds"] is False
    assert summary["cells"]["first"]["teacher@4"]["0"]["stlpips"] == pytest.approx(0.5)
    table = (out / "table.md").read_text()
    assert "student-2-seed1-440@2: 0.1150 against the teacher's 4 steps 0.1050 + 0.002: fails" \
        in table
    assert "| a | 0.1100 ± 0.0000 | 0.1115 ± 0.0000 | 0.1200 ± 0.0000 |" in table
    assert "| student-2-seed0-1320@2 | 30.00 |  | 0.2000 |  |" in table
    assert table.index("| student-2-seed0-440@2") < table.index("| student-2-seed0-1320@2")
    assert set(claim) == {"student-2-seed0-440@2", "student-2-seed1-440@2"}
    assert len(list((out / "raw").iterdir())) == 6


def test_classical_source_variants_follow_a_known_translation() -> None:
    """Every flow variant of the source study rebuilds the middle frame of a texture moving
    3 px a frame far better than blending does."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location(
        "classical", REPO_ROOT / "studies" / "interp-source" / "classical.py")
    classical = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(classical)
    rng = np.random.default_rng(0)
    import cv2
    texture = cv2.GaussianBlur(rng.random((72, 140, 3)).astype(np.float32), (0, 0), 2.5)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    a, middle, b = (texture[4:68, 10 + s:106 + s] for s in (0, 3, 6))
    blend = classical.psnr((a + b) / 2, middle)
    for variant in classical.VARIANTS:
        assert classical.psnr(classical.interpolate(a, b, variant), middle) > blend + 8, variant
    # the study's "flow" is the project's flow source, not a copy of it
    import torch

    from tcvbm.flow import warp_candidates
    cand = warp_candidates(*(torch.from_numpy(f).permute(2, 0, 1)[None] for f in (a, b)), [0.5])
    shipped = (0.5 * cand.left + 0.5 * cand.right)[0, 0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(classical.interpolate(a, b, "flow"), shipped, atol=1e-6)
