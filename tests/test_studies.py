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
