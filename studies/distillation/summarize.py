"""Tables, curves and weight changes of the distillation study (studies/distillation/run.sh).

    python studies/distillation/summarize.py RUNS_DIR -o docs/results/distill-vsr-cpu \
        [--teacher default-vsr]

Reads ``RUNS_DIR/eval-NAME-sSEED/metrics.json`` (``tcvbm eval`` of the teacher and of each
student, one per sampling seed), each student's run folder ``RUNS_DIR/NAME`` (its
``metrics.jsonl`` and exported ``model/``) and the evaluations of its checkpoints
(``RUNS_DIR/curve-NAME-STEP`` on the test clips, ``RUNS_DIR/select-NAME-STEP`` on the
selection clip, carphone, and ``RUNS_DIR/selset-NAME-STEP`` on the selection set,
data/media/select: ``tcvbm eval`` of tools/export_checkpoint.py's export, one sampling seed).
``--pick NAME`` prints the training step of NAME's checkpoint that the selection set chooses
(the lowest mean-of-videos ST-LPIPS there) and writes nothing.
Every figure is a mean of videos (a video's windows averaged first; spread and time are
means of windows); across sampling seeds it is reported as mean ± sample sd. The weight
change is the student's relative L2 distance from the teacher over the weights they share,
and the norm of the noise-input weights that the teacher does not have (zero at the start:
a student with none still ignores its noise). Writes ``OUT/table.md``, ``OUT/summary.json``,
``OUT/curves.png`` and copies the raw JSON to ``OUT/raw/``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from statistics import fmean, stdev

import matplotlib
from safetensors.torch import load_file

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tcvbm.config import load_config  # noqa: E402
from tcvbm.eval_report import copy_raw  # noqa: E402
from tcvbm.runs import bundle_dir  # noqa: E402

METRICS = [("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"),
           ("stlpips", "ST-LPIPS", "{:.4f}"), ("spread", "spread", "{:.4f}"),
           ("seconds_per_frame", "s/frame", "{:.4f}")]
EVAL = re.compile(r"eval-(?P<name>[a-z0-9-]+)-s(?P<seed>\d+)$")
CURVES = [("loss/fake", "fake-model loss"), ("loss/generator", "generator loss"),
          ("eval/psnr", "PSNR, 2 carphone windows (dB)"),
          ("select/stlpips", "ST-LPIPS, carphone (selection)"),
          ("selset/stlpips", "ST-LPIPS, selection set"),
          ("dev/psnr", "PSNR, dev set (dB)"), ("dev/stlpips", "ST-LPIPS, dev set")]
# tcvbm eval of exported checkpoints: FOLDER-NAME-STEP, on the dev set, the selection clip
# or the selection set
CHECKPOINT_EVALS = {"dev": "curve", "select": "select", "selset": "selset"}
SELECTIONS = [("select", "carphone ST-LPIPS"), ("selset", "selection-set ST-LPIPS")]


def mean_sd(values: list[float], fmt: str) -> str:
    """``mean ± sd`` (the sd only over two values or more)."""
    sd = "" if len(values) < 2 else " ± " + fmt.format(stdev(values))
    return fmt.format(fmean(values)) + sd


def load_evals(runs_dir: Path) -> tuple[dict, dict, list[Path]]:
    """{method: {seed: {metric: mean of videos, "videos": {video: ST-LPIPS}}}} for every
    model row (renamed NAME@STEPS), the baselines of the first evaluation, the files read."""
    cells: dict = defaultdict(dict)
    baselines: dict = {}
    files = sorted(p for p in runs_dir.glob("eval-*/metrics.json") if EVAL.match(p.parent.name))
    for path in files:
        match = EVAL.match(path.parent.name)
        data = json.loads(path.read_text())
        for method in data["methods"]:
            own = method["method"]
            # the mean of videos where eval has it (quality), else of clips (spread, time)
            figures = {m: data["mean_of_videos"].get(m, {}).get(own, method["mean"].get(m))
                       for m, _, _ in METRICS}
            figures = {m: v for m, v in figures.items() if v is not None}
            figures["videos"] = {video: row[own] for video, row in
                                 data["per_video"].get("stlpips", {}).items() if own in row}
            if method["steps"]:
                cells[f"{match['name']}@{method['steps']}"][int(match["seed"])] = figures
            elif own not in baselines:
                baselines[own] = figures
    if not cells:
        raise SystemExit(f"{runs_dir}: no eval-NAME-sSEED/metrics.json found")
    return cells, baselines, files


def weight_change(student_dir: Path, teacher_dir: Path) -> dict[str, float]:
    """Relative L2 distance and largest change over the shared weights; the noise-input
    weights' norm."""
    student = load_file(str(student_dir / "diffusion_pytorch_model.safetensors"))
    teacher = load_file(str(teacher_dir / "diffusion_pytorch_model.safetensors"))
    diff = ref = noise = largest = 0.0
    for name, w in teacher.items():
        s = student[name]
        if s.shape != w.shape:  # the first layer: the teacher's inputs, then the noise's
            noise += s[:, w.shape[1]:].double().pow(2).sum().item()
            s = s[:, :w.shape[1]]
        delta = s.double() - w.double()
        diff += delta.pow(2).sum().item()
        largest = max(largest, delta.abs().max().item())
        ref += w.double().pow(2).sum().item()
    return {"relative_l2": (diff / ref) ** 0.5, "max_abs": largest,
            "noise_weight_norm": noise ** 0.5}


def curves(runs_dir: Path, names: list[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run: {key: [(step, value)]}}: losses and the in-training evaluation from each run's
    metrics.jsonl, and the dev-set scores of its exported checkpoints
    (``RUNS_DIR/curve-NAME-STEP/metrics.json``, tools/export_checkpoint.py)."""
    out: dict = {}
    for name in names:
        series: dict = defaultdict(list)
        log = runs_dir / name / "metrics.jsonl"
        for line in log.read_text().splitlines() if log.is_file() else []:
            record = json.loads(line)
            for key, _ in CURVES:
                if key in record:
                    series[key].append((record["step"], record[key]))
        for key, folder in CHECKPOINT_EVALS.items():
            for path in runs_dir.glob(f"{folder}-{name}-*/metrics.json"):
                step = path.parent.name.rsplit("-", 1)[1]
                if not step.isdigit() or path.parent.name != f"{folder}-{name}-{step}":
                    continue  # another run whose name starts with this one's
                data = json.loads(path.read_text())
                model = next(m["method"] for m in data["methods"] if m["steps"])
                for metric in ("psnr", "stlpips"):
                    series[f"{key}/{metric}"].append(
                        (int(step), data["mean_of_videos"][metric][model]))
        if series:
            out[name] = {key: sorted(values) for key, values in series.items()}
    return out


def plot_curves(series: dict, teacher: dict[str, dict[str, dict[str, float]]],
                path: Path) -> None:
    """One panel per curve; the teacher's scores at each step count as dashed lines
    (``teacher``: {"dev" or "select": {method: {metric: value}}})."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(18, 3.6))
    for ax, (key, label) in zip(axes, CURVES):
        for name, run in series.items():
            if key in run:
                steps, values = zip(*run[key])
                ax.plot(steps, values, marker=None if key.startswith("loss") else ".",
                        label=name)
        where, _, metric = key.partition("/")
        for method, figures in teacher.get(where, {}).items():
            ax.axhline(figures[metric], ls="--", lw=0.8, color="grey")
            ax.annotate(method, (0, figures[metric]), xycoords=("axes fraction", "data"),
                        fontsize=7, color="grey")
        ax.set_xlabel("training step (fake and generator updates)", fontsize=8)
        ax.set_title(label, fontsize=9)
    if series:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def updates_per_step(run_dir: Path) -> int:
    """Training steps per generator update: the run's fake updates per generator update + 1."""
    cfg = load_config(run_dir / "config.yaml")
    return cfg.distill.fake_per_generator + 1


def picked(run: dict, key: str) -> int | None:
    """The training step of the checkpoint with the lowest ST-LPIPS on selection ``key``."""
    scores = dict(run.get(f"{key}/stlpips", []))
    return min(scores, key=scores.get) if scores else None


def curve_table(series: dict, runs_dir: Path) -> str:
    """The scores of each run's checkpoints by training step: on each selection (the clip,
    and the set where it was scored), and on the dev set; each selection's pick is marked."""
    shown = [(key, label) for key, label in SELECTIONS
             if any(f"{key}/stlpips" in run for run in series.values())]
    lines = ["| run | step | generator updates | " + " | ".join(label for _, label in shown)
             + " | dev PSNR | dev ST-LPIPS |", "|---" * (len(shown) + 5) + "|"]
    for name, run in series.items():
        dev = dict(run.get("dev/stlpips", []))
        per_update = updates_per_step(runs_dir / name)
        scores = {key: dict(run.get(f"{key}/stlpips", [])) for key, _ in shown}
        picks = {key: picked(run, key) for key, _ in shown}
        for step, psnr in run.get("dev/psnr", []):
            cells = []
            for key, _ in shown:
                cell = f"{scores[key][step]:.4f}" if step in scores[key] else ""
                cells.append(f"**{cell}**" if step == picks[key] else cell)
            lines.append(f"| {name} | {step} | {step // per_update} | " + " | ".join(cells)
                         + f" | {psnr:.2f} | {dev[step]:.4f} |")
    return "\n".join(lines) + "\n"


def table(cells: dict, baselines: dict, changes: dict) -> str:
    all_seeds = sorted({seed for runs in cells.values() for seed in runs})
    lines = [f"Mean of videos; mean ± sd over sampling seeds {all_seeds}.", "",
             "| model | " + " | ".join(label for _, label, _ in METRICS) +
             " | weight change (relative L2) | largest weight change | noise weights |",
             "|---" * (len(METRICS) + 4) + "|"]
    for method, seeds in sorted(cells.items(), key=lambda kv: not kv[0].startswith("teacher")):
        row = [mean_sd([s[m] for s in seeds.values() if m in s], fmt) if any(
            m in s for s in seeds.values()) else "" for m, _, fmt in METRICS]
        change = changes.get(method.split("@")[0])
        row += [f"{change['relative_l2']:.2e}", f"{change['max_abs']:.2e}",
                f"{change['noise_weight_norm']:.3f}"] if change else ["", "", ""]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    for name, figures in baselines.items():
        row = [fmt.format(figures[m]) if m in figures else "" for m, _, fmt in METRICS]
        lines.append(f"| {name} | " + " | ".join(row + ["", "", ""]) + " |")
    videos = sorted({v for seeds in cells.values() for s in seeds.values() for v in s["videos"]})
    lines += ["", "### ST-LPIPS per video", "",
              "| video | " + " | ".join(cells) + " |", "|---" * (len(cells) + 1) + "|"]
    for video in videos:
        row = [mean_sd([s["videos"][video] for s in seeds.values()], "{:.4f}")
               for seeds in cells.values()]
        lines.append(f"| {video} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--pick", metavar="NAME", help="print the step the selection set picks "
                        "for run NAME, and nothing else")
    parser.add_argument("--teacher", default="default-vsr", help="the teacher model's name or "
                        "folder, for the weight change")
    args = parser.parse_args()
    if args.pick:
        step = picked(curves(args.runs_dir, [args.pick]).get(args.pick, {}), "selset")
        if step is None:
            raise SystemExit(f"{args.runs_dir}: no selset-{args.pick}-STEP/metrics.json found")
        print(step)
        return
    if args.output is None:
        parser.error("-o/--output is required")
    cells, baselines, files = load_evals(args.runs_dir)
    students = sorted({m.split("@")[0] for m in cells} - {"teacher"})
    teacher_dir = bundle_dir(args.teacher)
    # a run's final model, or a checkpoint scored on its own (exported as model-NAME)
    models = {name: next((d for d in (args.runs_dir / name / "model",
                                      args.runs_dir / f"model-{name}") if d.is_dir()), None)
              for name in students}
    changes = {name: weight_change(model, teacher_dir) for name, model in models.items() if model}
    runs = {d.name for d in args.runs_dir.iterdir() if (d / "config.yaml").is_file()}
    series = curves(args.runs_dir, sorted(runs | set(students)))
    args.output.mkdir(parents=True, exist_ok=True)
    teacher = {"dev": {m: {k: fmean(s[k] for s in seeds.values()) for k in ("psnr", "stlpips")}
                       for m, seeds in cells.items() if m.startswith("teacher@")}}
    text = table(cells, baselines, changes)
    if any("dev/psnr" in run for run in series.values()):
        text += ("\n### Against training step (checkpoints, sampling seed 0)\n\n"
                 + curve_table(series, args.runs_dir))
    for key, where in (("select", "carphone"), ("selset", "the selection set")):
        selection = args.runs_dir / f"{key}-teacher" / "metrics.json"
        if not selection.is_file():
            continue
        data = json.loads(selection.read_text())  # the teacher there, beside the curve
        figures = {m["method"]: {metric: data["mean_of_videos"][metric][m["method"]]
                                 for metric in ("psnr", "stlpips")} for m in data["methods"]}
        text += f"\nThe teacher on {where} (PSNR / ST-LPIPS, mean of videos): " + ", ".join(
            f"{name} {f['psnr']:.2f} / {f['stlpips']:.4f}" for name, f in figures.items()) + ".\n"
        teacher[key] = {f"teacher@{m['steps']}": figures[m["method"]]
                        for m in data["methods"] if m["steps"]}
    (args.output / "table.md").write_text(text)
    plot_curves(series, teacher, args.output / "curves.png")
    (args.output / "summary.json").write_text(json.dumps(
        {"evals": cells, "baselines": baselines, "weight_change": changes, "curves": series},
        indent=1) + "\n")
    copy_raw(files, args.output)
    print(f"wrote {args.output / 'table.md'}")


if __name__ == "__main__":
    main()
