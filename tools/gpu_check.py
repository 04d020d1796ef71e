#!/usr/bin/env python
"""The Python side of ``tools/gpu_check.sh``: its preflight, its loader step and its summary.

    python tools/gpu_check.py preflight
    python tools/gpu_check.py loader --workers 8 16 --seconds 3 --json OUT/loader.json
    python tools/gpu_check.py summary OUT_DIR

``preflight``: the interpreter, torch, the GPU, and whether every module the steps import
is there (the check machine may lack some of the package's dependencies); exit 1 naming
those that are not.

``loader``: clips/s of ``tools/bench_data.py``'s dataset cell (``VideoFolder`` through a
``DataLoader``, batch 4, spawned workers) for the clips training reads, float 16 x 256 x 256,
4 per decoded stretch, at each worker count, and none of that tool's other tables, so that
the step fits its share of the check. The videos are the sample clips in ``--samples`` when
it holds any, else one clip of a moving texture written for the step: a machine that gets a
copy of the tracked files has no ``data/``. Each video is linked under several names, since
an epoch of that dataset is one pass over its folder and a pass over three videos gives 16
workers nothing to do.

``summary``: reads what the check wrote into OUT_DIR (``models-*.json`` of
``tools/bench_models.py``, ``loader.json``, ``inference.md`` of ``tools/bench_inference.py
--synthetic``, ``steps.jsonl`` of the script) and prints markdown tables ready for
``docs/benchmarks.md``: backbone throughput and MFU, the loader against what each backbone's
training step consumes, output frames/s, and how each step ended.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parent
REPO_ROOT = TOOLS.parent
CLIPS_PER_VIDEO = 4  # clips per decoded stretch in the loader cell (bench_data's middle row)
LOADER_BATCH = 4     # the batch size of bench_data's dataset cells
INFERENCE_ROW = re.compile(r"^\| (.+?) \| (\d+) \| (\d+x\d+) \| ([\d.]+) \|$", re.M)


def load_tool(name: str) -> ModuleType:
    """``tools/NAME.py``, loaded from its file (tools are not a package)."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- preflight

STEP_MODULES = ("torch", "av", "cv2", "einops", "safetensors", "PIL", "tcvbm.pipeline",
                "tcvbm.data")


def preflight() -> int:
    import platform

    import torch

    cuda = torch.cuda.is_available()
    print(f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, {os.cpu_count()} CPUs"
          + (f", {torch.cuda.get_device_name()}" if cuda else ", no CUDA device"))
    missing = []
    for name in STEP_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:
            missing.append(f"{name} ({err})")
    decord = importlib.util.find_spec("decord") is not None
    print(f"decord: {'yes' if decord else 'no (the loader reads with PyAV)'}")
    if missing:
        print(f"missing, needed by the steps: {'; '.join(missing)}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------ loader

def texture_video(path: Path, size: tuple[int, int], frames: int) -> Path:
    """``frames`` frames of bench_inference's moving texture at ``size`` (H, W), H.264."""
    import torch

    from tcvbm.data import write_video
    from tcvbm.data.visual import to_uint8

    texture = load_tool("bench_inference").moving_texture(frames, *size)
    write_video(to_uint8(torch.stack(texture, 1)), path, 25)
    return path


def linked_folder(videos: list[Path], folder: Path, entries: int) -> Path:
    """``folder`` holding ``max(entries, len(videos))`` links to ``videos``, taken in turn."""
    folder.mkdir(parents=True)
    for i in range(max(entries, len(videos))):
        video = videos[i % len(videos)]
        os.symlink(video.resolve(), folder / f"{i:03d}-{video.name}")
    return folder


def loader(argv: list[str]) -> dict:
    from tcvbm.cli import parse_size

    parser = argparse.ArgumentParser(prog="gpu_check.py loader",
                                     description="dataset clips/s at the given worker counts")
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "data" / "samples",
                        help="folder of *.mp4 (default data/samples); none there: a texture clip")
    parser.add_argument("--workers", type=int, nargs="+", required=True)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    parser.add_argument("--entries", type=int, default=64,
                        help="names the videos are linked under (an epoch: entries x 4 clips)")
    parser.add_argument("--clip-size", type=parse_size, default=(720, 1280),
                        help="WxH of the texture clip written when --samples has no videos")
    parser.add_argument("--clip-frames", type=int, default=48)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    bench_data = load_tool("bench_data")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        videos = sorted(args.samples.glob("*.mp4"))
        samples = args.samples.resolve()
        shown = samples.relative_to(REPO_ROOT) if samples.is_relative_to(REPO_ROOT) else samples
        if videos:
            source = f"{len(videos)} sample clips from {shown}"
        else:
            h, w = args.clip_size
            videos = [texture_video(tmp / "texture.mp4", args.clip_size, args.clip_frames)]
            source = (f"no clips in {shown}: one {w}x{h} {args.clip_frames}-frame "
                      f"moving-texture clip (H.264)")
        root = linked_folder(videos, tmp / "videos", args.entries)
        entries = len(list(root.iterdir()))
        print(f"{source}, linked {entries} times", flush=True)
        configs = [{"backend": "auto", "clips_per_video": CLIPS_PER_VIDEO}]
        rows = bench_data.bench_dataset(root, args.workers, args.seconds, configs, tmp / "cache")
    report = {"source": source, "entries": entries,
              "frames": bench_data.N, "size": bench_data.SIZE, "batch": LOADER_BATCH, "rows": rows}
    for row in rows:
        print(f"workers={row['workers']}: {row['clips/s']:.1f} clips/s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


# ------------------------------------------------------------------------------ summary

def read_json(path: Path) -> tuple[object | None, str | None]:
    """The JSON in ``path``, or None and why not (missing, or cut short by a killed step)."""
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except ValueError as err:
        return None, f"{path.name}: unreadable JSON ({err})"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(row) + " |" for row in rows)]


def number(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(scale * value, spec)


def backbone_table(reports: list[dict]) -> list[str]:
    """One row per (config, compile) of bench_models' reports."""
    rows = []
    for report in reports:
        for r in report["rows"]:
            head = [r["config"], "yes" if r["compile"] else "no",
                    f"{r['batch']}x{r['frames']}x{r['size']}x{r['size']}",
                    f"{r['params_M']:.2f}"]
            if "error" in r:
                rows.append(head + [r["error"]] + [""] * 7)
                continue
            rows.append(head + [number(r["fwd_s"], ".1f", 1e3), number(r["train_s"], ".1f", 1e3),
                                f"{r['clips_per_s']:.2f}", f"{r['train_gflop']:.1f}",
                                f"{r['train_tflops']:.3f}",
                                number(r.get("train_mfu"), ".1f", 100),
                                number(r["train_vs_matmul"], ".1f", 100),
                                number(r["peak_mem_GB"], ".2f")])
    first = reports[0]
    peak = first["peak_tflops"]
    lines = [f"Backbones on {first['device']} (torch {first['torch']}), "
             f"{first['rows'][0]['dtype']}: one training step = forward + MSE + backward; "
             f"measured matmul ({first['peak_size']}^3) {first['matmul_tflops']:.3g} TFLOP/s; "
             + (f"MFU against {peak} TFLOP/s." if peak
                else "no MFU: no data-sheet peak for this device."), ""]
    return lines + table(["config", "compile", "clips BxNxHxW", "params M", "fwd ms",
                          "fwd+bwd ms", "clips/s", "GFLOP f+b", "TFLOP/s", "MFU %",
                          "/matmul %", "peak GB"], rows)


def consumption_table(reports: list[dict], loaded: dict) -> list[str]:
    """The loader's clips/s against each backbone's training clips/s: over 1, it keeps up.

    A ratio is given only where the training clips are the loader's (N x SIZE x SIZE): the
    clips/s of other shapes are not the same unit.
    """
    workers = [row["workers"] for row in loaded["rows"]]
    rates = {row["workers"]: row["clips/s"] for row in loaded["rows"]}
    lines = [f"Loader ({loaded['source']}, linked {loaded['entries']} times; float "
             f"{loaded['frames']}x{loaded['size']}x{loaded['size']} clips, batch "
             f"{loaded['batch']}, {CLIPS_PER_VIDEO} per decoded stretch):", ""]
    lines += table(["workers", "clips/s"], [[str(w), f"{rates[w]:.1f}"] for w in workers])
    rows = []
    for report in reports:
        for r in report["rows"]:
            if "clips_per_s" not in r:
                continue
            same = r["frames"] == loaded["frames"] and r["size"] == loaded["size"]
            rows.append([r["config"], "yes" if r["compile"] else "no", f"{r['clips_per_s']:.2f}"]
                        + [f"{rates[w] / r['clips_per_s']:.2f}" if same else "-"
                           for w in workers])
    if rows:
        lines += ["", "Loader clips/s over what one training step consumes (under 1: training "
                  "waits for data; '-': the training clips are not the loader's shape):", ""]
        lines += table(["config", "compile", "training clips/s",
                        *(f"loader / training, {w} workers" for w in workers)], rows)
    return lines


def inference_table(text: str) -> list[str]:
    """bench_inference's rows as it printed them, under the line naming device and precision."""
    rows = [list(m) for m in INFERENCE_ROW.findall(text)]
    if not rows:
        return []
    setting = text.splitlines()[0]
    return [f"Output frames/s ({setting}; x2 interpolation through the windowing pipeline, "
            f"flow source included):", ""] + table(
        ["model", "steps", "size (WxH)", "output frames/s"], rows)


def step_table(steps: list[dict]) -> list[str]:
    rows = []
    for s in steps:
        result = {"ok": "ok", "failed": f"failed (exit {s['rc']})",
                  "timeout": f"stopped at its {s['limit_s']} s limit",
                  "out-of-time": f"not started: {s.get('reason')}",
                  "skipped": f"skipped: {s.get('reason')}"}[s["status"]]
        rows.append([s["step"], result, str(s["seconds"])])
    return table(["step", "result", "seconds"], rows)


def summary(out: Path) -> str:
    notes: list[str] = []
    reports = []
    for path in sorted(out.glob("models-*.json")):
        report, why = read_json(path)
        if why:
            notes.append(why)
        elif report and report["rows"]:
            reports.append(report)
    loaded, why = read_json(out / "loader.json")
    notes += [why] if why else []
    steps_file = out / "steps.jsonl"
    steps = ([json.loads(line) for line in steps_file.read_text().splitlines() if line.strip()]
             if steps_file.is_file() else [])
    inference = out / "inference.md"
    sections = [backbone_table(reports) if reports else [],
                consumption_table(reports, loaded) if loaded else [],
                inference_table(inference.read_text()) if inference.is_file() else [],
                step_table(steps) if steps else [],
                [f"Not read: {note}" for note in notes]]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["preflight"]:
        return preflight()
    if argv[:1] == ["loader"]:
        loader(argv[1:])
        return 0
    if argv[:1] == ["summary"] and len(argv) == 2:
        text = summary(Path(argv[1]))
        (Path(argv[1]) / "summary.md").write_text(text)
        print(text, end="")
        return 0
    print(f"usage:\n{__doc__.split(chr(10) * 2)[1]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
