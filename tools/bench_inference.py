"""Output frames per second of frame interpolation, through the real windowing pipeline.

    python tools/bench_inference.py                                 # shipped teacher + student
    python tools/bench_inference.py --teacher runs/interp --student runs/interp-student
    python tools/bench_inference.py --untrained unet-tiny --steps 1,2,10  # an architecture's speed
    python tools/bench_inference.py --device cuda --precision bf16 --compile

Frames of a moving texture go through ``TemporalBlender`` (windows, overlap, blending) and
``tiled`` (tiles, padding) exactly as ``tcvbm interpolate`` runs them; decoding and encoding
are left out so the number is the model's. The first window is a warm-up and not timed.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from tcvbm.cli import parse_size
from tcvbm.pipeline import build_window_fn, window_inputs
from tcvbm.windows import TemporalBlender


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
    from tcvbm.bridges import Bridge
    from tcvbm.models import create
    from tcvbm.runs import InferenceBundle
    from tcvbm.tasks import get_task

    return InferenceBundle(create(name), Bridge(num_frames, prior="ar1"),
                           get_task("interp", factor=2), num_frames, (64, 64), "stochastic", 1,
                           "bridge")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="default-interp")
    parser.add_argument("--student", default="default-interp-student")
    parser.add_argument("--teacher-steps", default="10,50")
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

    from tcvbm.runs import load_bundle

    if args.untrained:
        runs = [(f"{args.untrained} (untrained)", untrained_bundle(args.untrained, args.num_frames),
                 args.steps)]
    else:
        runs = [(args.teacher, load_bundle(args.teacher), args.teacher_steps),
                (args.student, load_bundle(args.student), args.student_steps)]
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


if __name__ == "__main__":
    sys.exit(main())
