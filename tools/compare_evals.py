"""Merge several ``tcvbm eval`` results into one table and one quality-vs-steps plot.

    python tools/compare_evals.py NAME=EVAL_DIR [NAME=EVAL_DIR ...] -o docs/results/interp \
        [--metric psnr]

Each EVAL_DIR holds the ``metrics.json`` that ``tcvbm eval`` wrote. Model rows are renamed
``NAME@steps``; baselines (identical across runs on the same clips) are taken from the first
run only. Writes ``OUT/table.md`` (means over windows, then per-video tables ending with the
mean of videos, the figure to quote), ``OUT/quality_vs_steps.png`` and ``OUT/merged.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tcvbm.eval_report import COLUMNS, markdown_table, per_video_metrics, per_video_table  # noqa: E402


def load(runs: list[tuple[str, Path]]) -> list[dict]:
    """Every run's model rows (``NAME@steps``), then the first run's baselines."""
    models, baselines = [], []
    for i, (name, folder) in enumerate(runs):
        data = json.loads((folder / "metrics.json").read_text())
        for row in data["methods"]:
            kept = {"steps": row["steps"], "mean": row["mean"], "per_clip": row["per_clip"]}
            if row["steps"]:
                models.append({**kept, "method": f"{name}@{row['steps']}", "run": name})
            elif i == 0:
                baselines.append({**kept, "method": row["method"], "run": None})
    return models + baselines


def plot(rows: list[dict], path: Path, metric: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    runs = [r for r in dict.fromkeys(r["run"] for r in rows) if r]
    for i, run in enumerate(runs):
        pts = sorted((r["steps"], r["mean"][metric]) for r in rows if r["run"] == run)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{i}", label=run)
    for j, r in enumerate(r for r in rows if not r["steps"]):
        ax.axhline(r["mean"][metric], ls="--", color=f"C{len(runs) + j}", label=r["method"])
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(f"{metric.upper()} (mean over clips)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=EVAL_DIR")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--metric", default="psnr")
    args = p.parse_args(argv)
    runs = []
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep:
            p.error(f"expected NAME=EVAL_DIR, got {item!r}")
        runs.append((name, Path(folder)))
    rows = load(runs)
    args.output.mkdir(parents=True, exist_ok=True)
    text = markdown_table(rows, f"{args.metric.upper()} and more, merged from {len(runs)} runs")
    formats = {key: fmt for key, _, fmt in COLUMNS}
    for metric in per_video_metrics(rows):
        text += "\n" + per_video_table(rows, metric, formats[metric])
    (args.output / "table.md").write_text(text)
    (args.output / "merged.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.output / "quality_vs_steps.png", args.metric)
    print(text)


if __name__ == "__main__":
    main()
