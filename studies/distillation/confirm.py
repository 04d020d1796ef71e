"""The verdict of studies/distillation/confirm.sh: the picked students against the teacher on
windows no earlier score read.

    python studies/distillation/confirm.py RUNS_DIR -o docs/results/distill-vsr-confirm-cpu \
        [--teacher default-vsr]

Reads ``RUNS_DIR/new-NAME-sSEED/metrics.json`` (``tcvbm eval``, 5 windows per test video) and
keeps each window's row except the first of each video (``VIDEO@0``, the window every earlier
distillation score read); a figure is the mean over a video's new windows, then over videos,
then mean ± sd over sampling seeds. The first windows are reported apart, as a check that the
runs reproduce the earlier figures. The claim (fixed in confirm.sh before any score was seen):
for each training seed, the student at 40 generator updates, 2 steps, has a mean ST-LPIPS at
most the teacher's 4 steps plus ``MARGIN``. Writes ``OUT/table.md`` and ``OUT/summary.json``
(every checkpoint) and copies the raw JSON of the teacher and the picked students to
``OUT/raw/``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from statistics import fmean

from summarize import mean_sd, weight_change  # this folder: the script's own is on sys.path

from tcvbm.eval_report import copy_raw
from tcvbm.runs import bundle_dir

MARGIN = 0.002
PICKED = 440
METRICS = [("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"),
           ("stlpips", "ST-LPIPS", "{:.4f}"), ("spread", "spread", "{:.4f}")]
EVAL = re.compile(r"new-(?P<name>[a-z0-9-]+)-s(?P<seed>\d+)$")


def window_means(rows: list[dict], first: bool) -> dict[str, dict[str, float]]:
    """{metric: {video: mean over its windows}}: the first windows only, or all the others."""
    per_video: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        video, start = row["clip"].rsplit("@", 1)
        if (start == "0") == first:
            for metric, _, _ in METRICS:
                if metric in row:
                    per_video[metric][video].append(row[metric])
    return {m: {v: fmean(x) for v, x in videos.items()} for m, videos in per_video.items()}


def load(runs_dir: Path) -> tuple[dict, list[Path]]:
    """{part: {method: {seed: {metric: mean of videos, "videos": {video: ST-LPIPS}}}}} for the
    new windows ("new") and the first ones ("first"); a student's method is NAME@STEPS."""
    cells: dict = {"new": defaultdict(dict), "first": defaultdict(dict)}
    files = sorted(p for p in runs_dir.glob("new-*/metrics.json") if EVAL.match(p.parent.name))
    for path in files:
        match = EVAL.match(path.parent.name)
        for method in json.loads(path.read_text())["methods"]:
            if not method["steps"]:
                continue
            name = f"{match['name']}@{method['steps']}"
            for part in cells:
                means = window_means(method["per_clip"], first=part == "first")
                figures = {m: fmean(videos.values()) for m, videos in means.items()}
                figures["videos"] = means.get("stlpips", {})
                cells[part][name][int(match["seed"])] = figures
    if not files:
        raise SystemExit(f"{runs_dir}: no new-NAME-sSEED/metrics.json found")
    return cells, files


def verdict(cells: dict, runs_dir: Path, teacher_dir: Path | None) -> tuple[str, dict]:
    """The claim, checked for each training seed's picked student, with how far its weights
    moved from the teacher's (its exported model ``RUNS_DIR/model-NAME``, when there)."""
    teacher = fmean(s["stlpips"] for s in cells["teacher@4"].values())
    checks = {}
    for name, seeds in sorted(cells.items()):
        if name.endswith(f"-{PICKED}@2"):
            student = fmean(s["stlpips"] for s in seeds.values())
            checks[name] = {"student": student, "teacher@4": teacher,
                            "holds": student <= teacher + MARGIN}
            model = runs_dir / f"model-{name.split('@')[0]}"
            if teacher_dir is not None and model.is_dir():
                checks[name]["weight_change"] = weight_change(model, teacher_dir)
    lines = []
    for name, c in checks.items():
        moved = c.get("weight_change")
        lines.append(f"- {name}: {c['student']:.4f} against the teacher's 4 steps {teacher:.4f} "
                     f"+ {MARGIN}: {'holds' if c['holds'] else 'fails'}" + (
                         f" (weights {moved['relative_l2']:.1e} from the teacher's, relative "
                         f"L2; noise-input weights' norm {moved['noise_weight_norm']:.3f})"
                         if moved else ""))
    return "\n".join(lines) + "\n", checks


def order(method: str) -> tuple:
    """The teacher first, then each run's checkpoints by training step (NAME-STEP@STEPS)."""
    name, _, steps = method.partition("@")
    run, _, step = name.rpartition("-")
    return (not method.startswith("teacher"), run if step.isdigit() else name,
            int(step) if step.isdigit() else 0, int(steps or 0))


def table(part: dict) -> str:
    lines = ["| model | " + " | ".join(label for _, label, _ in METRICS) + " |",
             "|---" * (len(METRICS) + 1) + "|"]
    for method, seeds in sorted(part.items(), key=lambda kv: order(kv[0])):
        row = [mean_sd([s[m] for s in seeds.values() if m in s], fmt)
               if any(m in s for s in seeds.values()) else "" for m, _, fmt in METRICS]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def per_video(part: dict) -> str:
    """ST-LPIPS per video of the teacher and the picked students."""
    methods = sorted((m for m in part if m.startswith("teacher") or f"-{PICKED}@" in m),
                     key=order)
    videos = sorted({v for seeds in part.values() for s in seeds.values() for v in s["videos"]})
    lines = ["| video | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for video in videos:
        lines.append(f"| {video} | " + " | ".join(
            mean_sd([s["videos"][video] for s in part[m].values()], "{:.4f}")
            for m in methods) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--teacher", default="default-vsr", help="the teacher model's name or "
                        "folder, for the weight change ('' to skip it)")
    args = parser.parse_args()
    cells, files = load(args.runs_dir)
    teacher_dir = bundle_dir(args.teacher) if args.teacher else None
    text, checks = verdict(cells["new"], args.runs_dir, teacher_dir)
    text = ("The new windows (4 per test video, mean of videos; mean ± sd over sampling "
            "seeds):\n\n" + table(cells["new"]) + "\nThe claim:\n\n" + text
            + "\nST-LPIPS per video, new windows, the teacher and the picked students:\n\n"
            + per_video(cells["new"])
            + "\nThe first windows (frame 0, read by every earlier score; the check that the "
            "runs reproduce them):\n\n" + table(cells["first"]))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "table.md").write_text(text)
    (args.output / "summary.json").write_text(json.dumps(
        {"cells": cells, "claim": checks, "margin": MARGIN}, indent=1) + "\n")
    copy_raw([f for f in files if f.parent.name.startswith("new-teacher-")
              or f"-{PICKED}-s" in f.parent.name], args.output)
    print(text)


if __name__ == "__main__":
    main()
