"""Seeded TCVBM-against-BM tables from the evaluations one study script wrote.

    python studies/tcvbm-vs-bm/summarize.py RUNS_DIR -o docs/results/seeds-interp-cpu

Reads every ``RUNS_DIR/eval-PRIOR-sSEED-SAMPLER/metrics.json`` (``tcvbm eval`` output of
studies/tcvbm-vs-bm/*.sh). Each figure is a mean of videos (each video's windows averaged
first, so a video counts once); across seeds it is reported as mean ± sample standard
deviation, and the TCVBM - BM difference is taken seed by seed (a seed fixes both runs'
initialisation and data order) before its mean and sd. Writes ``OUT/table.md``,
``OUT/summary.json``, ``OUT/psnr_vs_steps.png`` and copies the raw JSON to ``OUT/raw/``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from statistics import fmean, stdev

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tcvbm.eval_report import copy_raw  # noqa: E402

METRICS = [("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"),
           ("stlpips", "ST-LPIPS", "{:.4f}"), ("warp_error", "warp err", "{:.4f}"),
           ("spread", "spread", "{:.4f}")]
RUN = re.compile(r"eval-(?P<prior>[a-z0-9]+)-s(?P<seed>\d+)-(?P<sampler>[a-z-]+)$")
PRIORS = ("ar1", "brownian")  # the correlated prior first, then plain BM


def per_video(rows: list[dict], metric: str) -> dict[str, float]:
    """Each video's windows averaged (a window is named VIDEO@START)."""
    by_video: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if metric in row:
            by_video[row["clip"].rsplit("@", 1)[0]].append(row[metric])
    return {video: fmean(values) for video, values in by_video.items()}


def mean_of_videos(rows: list[dict], metric: str) -> float | None:
    videos = per_video(rows, metric)
    return fmean(videos.values()) if videos else None


def load(runs_dir: Path) -> tuple[dict, dict, list[Path]]:
    """{(sampler, steps, prior): {seed: {metric: value}}}, baselines of the first evaluation
    ({method: {metric: value}}), and the metrics files read."""
    cells: dict = defaultdict(dict)
    baselines: dict = {}
    files = sorted(runs_dir.glob("eval-*/metrics.json"))
    for path in files:
        match = RUN.match(path.parent.name)
        if not match:
            continue
        data = json.loads(path.read_text())
        for method in data["methods"]:
            figures = {m: mean_of_videos(method["per_clip"], m) for m, _, _ in METRICS}
            figures = {m: v for m, v in figures.items() if v is not None}
            figures["videos"] = per_video(method["per_clip"], "psnr")
            if method["steps"]:
                key = (match["sampler"], method["steps"], match["prior"])
                cells[key][int(match["seed"])] = figures
            elif method["method"] not in baselines:
                baselines[method["method"]] = figures
    if not cells:
        raise SystemExit(f"{runs_dir}: no eval-PRIOR-sSEED-SAMPLER/metrics.json found")
    return cells, baselines, files


def spread_of(values: list[float]) -> tuple[float, float | None]:
    return fmean(values), (stdev(values) if len(values) > 1 else None)


def cell(values: list[float], fmt: str) -> str:
    mean, sd = spread_of(values)
    return fmt.format(mean) + ("" if sd is None else " ± " + fmt.replace("+", "").format(sd))


def summarise(cells: dict) -> list[dict]:
    """One row per (sampler, steps): each prior's mean and sd per metric, and the paired
    difference ar1 - brownian over the seeds both have."""
    rows = []
    for sampler, steps in sorted({k[:2] for k in cells}):
        row: dict = {"sampler": sampler, "steps": steps}
        runs = {p: cells.get((sampler, steps, p), {}) for p in PRIORS}
        paired = sorted(set(runs["ar1"]) & set(runs["brownian"]))
        for metric, _, _ in METRICS:
            for prior in PRIORS:
                values = [r[metric] for r in runs[prior].values() if metric in r]
                if values:
                    row[f"{prior}/{metric}"] = values
            diffs = [runs["ar1"][s][metric] - runs["brownian"][s][metric] for s in paired
                     if metric in runs["ar1"][s] and metric in runs["brownian"][s]]
            if diffs:
                row[f"diff/{metric}"] = diffs
        row["seeds"] = {p: sorted(runs[p]) for p in PRIORS}
        rows.append(row)
    return rows


def table(rows: list[dict], baselines: dict) -> str:
    """One table per metric: a row per (sampler, steps), TCVBM, BM and their difference."""
    seeds = rows[0]["seeds"]
    lines = [f"Seeds: TCVBM (ar1) {seeds['ar1']}, BM (brownian) {seeds['brownian']}; mean ± sd "
             "over seeds of the mean of videos; the difference is taken seed by seed.", "",
             "Baselines on the same windows (PSNR, mean of videos): " + ", ".join(
                 f"{name} {figures['psnr']:.2f} dB" for name, figures in baselines.items())]
    for metric, label, fmt in METRICS:
        if not any(f"ar1/{metric}" in r for r in rows):
            continue
        diff_fmt = "{:+.2f}" if metric == "psnr" else "{:+.4f}"
        lines += ["", f"### {label}", "", "| sampler | steps | TCVBM | BM | TCVBM - BM |",
                  "|---|---|---|---|---|"]
        for row in rows:
            cells = [row["sampler"], str(row["steps"])] + [
                cell(row[f"{who}/{metric}"], diff_fmt if who == "diff" else fmt)
                if f"{who}/{metric}" in row else "" for who in ("ar1", "brownian", "diff")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def video_table(cells: dict, baselines: dict) -> str:
    """PSNR per video, each prior's mean ± sd over seeds, at the first sampler's fewest steps
    and the last sampler's most, beside the baselines."""
    keys = sorted({k[:2] for k in cells})
    picked = list(dict.fromkeys([keys[0], keys[-1]]))
    columns = [(f"{label}, {sampler} {steps}", cells.get((sampler, steps, prior), {}))
               for sampler, steps in picked for prior, label in zip(PRIORS, ("TCVBM", "BM"))]
    videos = sorted({v for _, runs in columns for r in runs.values() for v in r["videos"]})
    lines = ["| video | " + " | ".join([c for c, _ in columns] + list(baselines)) + " |",
             "|" + "---|" * (1 + len(columns) + len(baselines))]
    for video in videos:
        row = [cell([r["videos"][video] for r in runs.values()], "{:.2f}") if runs else ""
               for _, runs in columns]
        row += [f"{b['videos'][video]:.2f}" for b in baselines.values()]
        lines.append(f"| {video} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for sampler in sorted({r["sampler"] for r in rows}):
        for prior, label in zip(PRIORS, ("TCVBM", "BM")):
            pts = [(r["steps"], *spread_of(r[f"{prior}/psnr"])) for r in rows
                   if r["sampler"] == sampler and f"{prior}/psnr" in r]
            if not pts:
                continue
            steps, means, sds = zip(*pts)
            ax.errorbar(steps, means, yerr=[sd or 0 for sd in sds], marker="o", capsize=3,
                        label=f"{label}, {sampler}")
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("PSNR (dB), mean of videos")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    cells, baselines, files = load(args.runs_dir)
    rows = summarise(cells)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "table.md").write_text(table(rows, baselines) + "\n### PSNR per video\n\n"
                                          + video_table(cells, baselines))
    (args.output / "summary.json").write_text(
        json.dumps({"rows": rows, "baselines": baselines}, indent=1) + "\n")
    plot(rows, args.output / "psnr_vs_steps.png")
    copy_raw(files, args.output)
    print(f"wrote {args.output / 'table.md'}")


if __name__ == "__main__":
    main()
