"""A ``tcvbm eval`` run's summary as markdown tables and plots.

The summary is :func:`tcvbm.evaluate.run_eval`'s list of methods, each a dict with
``method``, ``steps`` (None for a baseline), ``mean`` (means over all clip windows) and
``per_clip`` records (clip names ``VIDEO@START``). A video cut into many windows dominates
a mean over windows, so the per-video tables average each video's windows first and end
with the mean of videos, each video weighted once: the figure to quote.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from statistics import fmean

__all__ = ["COLUMNS", "PER_VIDEO_METRICS", "markdown_table", "per_video", "mean_of_videos",
           "per_video_metrics", "per_video_table", "plots", "copy_raw"]

COLUMNS = [("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("ms_ssim", "MS-SSIM", "{:.4f}"),
           ("stlpips", "ST-LPIPS", "{:.4f}"), ("lpips", "LPIPS", "{:.4f}"),
           ("spread", "spread", "{:.4f}"), ("warp_error", "warp err", "{:.4f}"),
           ("warp_error_gt", "warp err (GT)", "{:.4f}"),
           ("seconds_per_frame", "s/frame", "{:.4f}")]
PER_VIDEO_METRICS = ("psnr", "ssim", "stlpips")  # the metrics that get a per-video table


def markdown_table(summary: list[dict], title: str) -> str:
    """One row per method of its means, the known metrics in :data:`COLUMNS` order first."""
    present = [c for c in COLUMNS if any(c[0] in row["mean"] for row in summary)]
    extra = sorted({k for row in summary for k in row["mean"]} - {c[0] for c in COLUMNS})
    head = ["method", "steps"] + [label for _, label, _ in present] + extra
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        cells = [row["method"], str(row["steps"] or "")]
        for key, _, fmt in present:
            value = row["mean"].get(key)
            cells.append("" if value is None else fmt.format(value))
        cells += [f"{row['mean'][k]:.3f}" if k in row["mean"] else "" for k in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _video(clip: str) -> str:
    """The video a clip window was cut from: its name before the last ``@``."""
    return clip.rpartition("@")[0] or clip


def per_video(summary: list[dict], metric: str) -> dict[str, dict[str, float]]:
    """``{video: {method: mean of that video's windows}}``, videos in the order clips came.

    A method without ``metric`` on any window of a video has no entry for that video.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for row in summary:
        for record in row["per_clip"]:
            cell = values.setdefault(_video(record["clip"]), {})
            if metric in record:
                cell.setdefault(row["method"], []).append(record[metric])
    return {video: {method: fmean(v) for method, v in cells.items()}
            for video, cells in values.items()}


def mean_of_videos(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{method: mean over videos}`` of a :func:`per_video` table, each video weighted once."""
    methods = dict.fromkeys(m for cells in table.values() for m in cells)
    return {m: fmean(cells[m] for cells in table.values() if m in cells) for m in methods}


def per_video_metrics(summary: list[dict]) -> list[str]:
    """Those of :data:`PER_VIDEO_METRICS` that some per-clip record holds."""
    return [m for m in PER_VIDEO_METRICS
            if any(m in record for row in summary for record in row["per_clip"])]


def per_video_table(summary: list[dict], metric: str, fmt: str) -> str:
    """Videos down, methods across (summary order), then the ``mean of videos`` row."""
    label = next((lab for key, lab, _ in COLUMNS if key == metric), metric)
    table = per_video(summary, metric)
    methods = [row["method"] for row in summary]
    lines = [f"## {label} per video (mean of its windows)", "",
             "| " + " | ".join(["video"] + methods) + " |", "|" + "---|" * (len(methods) + 1)]
    for video, cells in [*table.items(), ("mean of videos", mean_of_videos(table))]:
        row = [fmt.format(cells[m]) if m in cells else "" for m in methods]
        lines.append("| " + " | ".join([video] + row) + " |")
    return "\n".join(lines) + "\n"


def plots(summary: list[dict], out_dir: Path, metric: str = "psnr") -> list[Path]:
    """``quality_vs_steps.png`` (model rows against steps, the others as lines) and
    ``quality_vs_time.png`` (every method against seconds per output frame) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model_rows = [r for r in summary if r["steps"]]
    base_rows = [r for r in summary if not r["steps"]]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    if model_rows:
        ax.plot([r["steps"] for r in model_rows], [r["mean"][metric] for r in model_rows],
                "o-", label=model_rows[0]["method"].split("@")[0])
        ax.set_xscale("log")
    for i, r in enumerate(base_rows):
        ax.axhline(r["mean"][metric], ls="--", color=f"C{i + 1}", label=r["method"])
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(f"{metric.upper()} (mean)")
    ax.set_title("quality vs steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "quality_vs_steps.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(summary):
        x = max(r["mean"]["seconds_per_frame"], 1e-6)
        ax.scatter([x], [r["mean"][metric]], color=f"C{i % 10}")
        ax.annotate(r["method"], (x, r["mean"][metric]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per output frame")
    ax.set_ylabel(f"{metric.upper()} (mean)")
    ax.set_title("quality vs time")
    fig.tight_layout()
    paths.append(out_dir / "quality_vs_time.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def copy_raw(files: list[Path], out_dir: Path) -> Path:
    """Copy evaluations' ``EVAL_DIR/metrics.json`` into ``out_dir/raw/EVAL_DIR.json``, the raw
    figures a summary of several runs was made from, kept beside it."""
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, raw / f"{path.parent.name}.json")
    return raw
