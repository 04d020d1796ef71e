"""The ``tcvbm`` command: parse, then call one function of the package per command.

Heavy modules are imported inside each command so that ``tcvbm --help`` is instant and a
problem in one part (say, a missing video codec) does not stop the others from running.
Bad input surfaces as ``ValueError``; it is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from fractions import Fraction
from pathlib import Path


def parse_steps(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` (square) or ``"WxH"`` as video sizes are written (``"176x144"``) -> (H, W)."""
    w, _, h = text.partition("x")
    try:
        return int(h or w), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected N or WxH (e.g. 176x144), got {text!r}") from None


def parse_factor(text: str) -> int | float:
    """A frame-rate factor above 1: ``"2"`` (a whole number stays an int), ``"2.5"``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan      # refused below, with the same message
    if not 1 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number above 1 (2, 3, 2.5), got {text!r}")
    return int(value) if value.is_integer() else value


def parse_fps(text: str) -> float:
    """An output rate above 0: ``"60"``, ``"59.94"`` or a fraction such as ``"60000/1001"``."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        value = math.nan      # refused below, with the same message
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(
            f"expected a frame rate above 0 (60, 59.94 or 60000/1001), got {text!r}")
    return value


def parse_eval_size(text: str) -> tuple[int, int] | str:
    """``parse_size``, or ``"native"``: score every video at its own size."""
    return "native" if text == "native" else parse_size(text)


def _sampling_flags(p: argparse.ArgumentParser) -> None:
    """How a model is sampled: the flags of every command that runs one, eval included."""
    p.add_argument("--sampler", default=None,
                   help="stochastic, deterministic or posterior-mean (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--seed", type=int, default=0)


def _inference_flags(p: argparse.ArgumentParser, model_default: str | None, *,
                     model: bool = True) -> None:
    """The flags shared by the commands that restore or make files (interpolate, i2v,
    upscale, sample), named after the pipeline functions' parameters; ``model=False`` for
    ``sample``, which takes its model as a positional run directory."""
    if model:
        p.add_argument("--model", default=model_default,
                       help="a run directory, a saved model directory or a shipped model name"
                            + (f" (default: {model_default})" if model_default else ""))
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    _sampling_flags(p)
    p.add_argument("--tile", type=int, default=None, metavar="PX",
                   help="largest tile side in pixels: larger frames run as overlapping tiles "
                        "(default: 512; smaller uses less memory)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--codec", choices=["h264", "h265", "ffv1"], default=None,
                   help="video codec: h264 (default; plays everywhere), h265 (libx265; .mp4, "
                        ".mkv, .mov) or ffv1 (lossless archive; .mkv, .avi); not for PNG frames")
    quality = p.add_mutually_exclusive_group()
    quality.add_argument("--crf", type=int, default=None, metavar="N",
                         help="output quality of h264/h265, CRF from 0 to 51: lower is better "
                              "and larger (default: 18)")
    quality.add_argument("--lossless", action="store_true",
                         help="output that decodes to exactly the frames made (RGB H.264 at "
                              "qp 0, in .mp4, .mkv, .mov or .avi; or with --codec ffv1); not "
                              "with --crf")


def _output_flag(p: argparse.ArgumentParser) -> None:
    """Where a command that makes frames writes them (interpolate, i2v, upscale)."""
    p.add_argument("-o", "--output", required=True,
                   help="a video (.mp4, .mkv, .mov, .avi), or PNG frames: DIR/ or a pattern "
                        "such as frames_%%06d.png (numbered from 0)")


def _window_flags(p: argparse.ArgumentParser) -> None:
    """How a video is cut into windows in time (interpolate, upscale)."""
    p.add_argument("--batch", type=int, default=1, help="windows per model call")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="model calls (windows or pairs) run at once, each on its own thread "
                        "with its share of the CPUs (default: one per CPU, at most 4, on a "
                        "CPU; 1 on a GPU); the output does not depend on it")
    p.add_argument("--overlap", type=int, default=None, metavar="FRAMES",
                   help="input frames shared by neighbouring windows (default: one keyframe for "
                        "interpolation, half a window for upscaling)")


def _inference_kwargs(args: argparse.Namespace, output: str | None) -> dict:
    """The values of :func:`_inference_flags` as keyword arguments of the pipeline.

    ``--crf``, ``--codec`` and ``output`` (the file or frames they go to; None for ``sample``,
    which names its own) are checked here, before the command loads a model or reads a
    frame. Only the command line knows whether ``--crf`` was given, so it alone refuses one
    that would not apply (FFV1 and PNG frames are lossless).
    """
    from tcvbm.data.encoding import DEFAULT_CRF, check_crf
    from tcvbm.data.outputs import resolve_output

    crf = DEFAULT_CRF if args.crf is None else check_crf(args.crf)
    frames = (output is not None
              and resolve_output(output, args.codec, crf, args.lossless).pattern is not None)
    if args.crf is not None and (frames or args.codec == "ffv1"):
        raise ValueError(f"crf: sets the quality of h264 and h265 videos; "
                         f"{'PNG frames are' if frames else 'ffv1 is'} lossless")
    if frames and getattr(args, "preview", None):   # interpolate's picture reads its video
        raise ValueError("preview: drawn from a video output; write a video to get one")
    return dict(steps=args.steps, sampler=args.sampler, device=args.device,
                precision=args.precision, seed=args.seed, tile=args.tile, compile=args.compile,
                codec=args.codec, crf=crf, lossless=args.lossless)


def _cmd_demo(args: argparse.Namespace) -> None:
    from tcvbm.demo import bridge_demo

    path = bridge_demo(args.input, args.output, num_frames=args.frames, size=args.size,
                       factor=args.factor, seed=args.seed)
    print(f"wrote {path}")


def _overrides(args: argparse.Namespace) -> list[str]:
    """Command-line overrides, with ``--resume`` as the ``resume=`` key (the last one wins)."""
    return [*args.overrides, *([f"resume={args.resume}"] if args.resume else [])]


def _cmd_train(args: argparse.Namespace) -> None:
    from tcvbm.config import load_config
    from tcvbm.train.run import train

    train(load_config(args.config, _overrides(args)))


def _cmd_distill(args: argparse.Namespace) -> None:
    from tcvbm.config import load_config
    from tcvbm.train.run import distill

    distill(load_config(args.config, _overrides(args)))


def _cmd_sample(args: argparse.Namespace) -> None:
    from tcvbm.pipeline import sample_files

    for path in sample_files(args.run_dir, args.input, args.output,
                             **_inference_kwargs(args, None)):
        print(f"wrote {path}")


def _cmd_interpolate(args: argparse.Namespace) -> None:
    from tcvbm.pipeline import interpolate

    factor = args.factor or 2   # the preview's; the pipeline takes --factor or --fps
    if args.preview and (args.fps is not None or args.dedup or factor not in (2, 4, 8)):
        raise ValueError("preview: drawn for --factor 2, 4 or 8, whose every factor-th output "
                         "frame is an input frame; not with --fps, --dedup or other factors")
    interpolate(args.input, args.output, factor=args.factor, model=args.model, fps=args.fps,
                dedup=args.dedup, scene_cuts=not args.no_scene_cuts,
                scene_threshold=args.scene_threshold, batch=args.batch, overlap=args.overlap,
                workers=args.workers, **_inference_kwargs(args, args.output))
    if args.preview:
        from tcvbm.preview import interpolation_preview

        print(f"wrote {interpolation_preview(args.input, args.output, args.preview, factor)}")


def _cmd_i2v(args: argparse.Namespace) -> None:
    from tcvbm.pipeline import image_to_video

    image_to_video(args.input, args.output, frames=args.frames, fps=args.fps, model=args.model,
                   **_inference_kwargs(args, args.output))


def _cmd_upscale(args: argparse.Namespace) -> None:
    from tcvbm.pipeline import upscale

    upscale(args.input, args.output, scale=args.scale, model=args.model, batch=args.batch,
            overlap=args.overlap, workers=args.workers, **_inference_kwargs(args, args.output))


def _cmd_eval(args: argparse.Namespace) -> None:
    from tcvbm.evaluate import run_eval

    run_eval(args.task, args.data, model=args.model, steps=args.steps,
             baselines=args.baselines, output_dir=args.output, sampler=args.sampler,
             device=args.device, precision=args.precision, factor=args.factor,
             scale=args.scale, num_frames=args.frames, size=args.size,
             clips_per_video=args.clips_per_video, seed=args.seed, samples=args.samples,
             lpips_weights=args.lpips_weights, alexnet_weights=args.alexnet_weights,
             fid_weights=args.fid_weights, fvd_weights=args.fvd_weights)
    print(f"wrote {Path(args.output) / 'metrics.md'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcvbm", description="Time-correlated video bridge matching: train, distill, "
                                  "sample, interpolate, animate and upscale videos.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="picture of TCVBM and BM bridge states on a real clip")
    p.add_argument("--input", default="data/samples/bikes.mp4",
                   help="a video (default: a sample from tools/fetch_sample_clips.py)")
    p.add_argument("-o", "--output", default="outputs/demo", help="output folder")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--factor", type=int, default=4, choices=[2, 4, 8])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_demo)

    for name, fn, what in [("train", _cmd_train, "train a bridge model"),
                           ("distill", _cmd_distill, "distill a trained bridge model into a "
                                                     "1-4 step generator (needs teacher=RUN_DIR)")]:
        p = sub.add_parser(name, help=what)
        p.add_argument("config", help="a YAML file under configs/ (or its name, e.g. interp-tiny)")
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted overrides, e.g. data.root=DIR train.max_steps=30 "
                            "output_dir=OUT")
        p.add_argument("--resume", default=None, metavar="latest|PATH",
                       help="resume from output_dir's latest checkpoint or a checkpoint path "
                            "(a run whose output_dir has checkpoints resumes on its own)")
        p.set_defaults(fn=fn)

    p = sub.add_parser("sample", help="run a trained model on a file or a folder")
    p.add_argument("run_dir")
    p.add_argument("--input", required=True, help="a video, an image or a folder of them")
    p.add_argument("--output", required=True, help="output folder")
    _inference_flags(p, None, model=False)
    p.set_defaults(fn=_cmd_sample)

    p = sub.add_parser("interpolate", help="raise a video's frame rate (any factor or fps)")
    p.add_argument("input")
    _output_flag(p)
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--factor", type=parse_factor, default=None, metavar="F",
                      help="output rate = input rate x F, any F above 1: 2, 3, 2.5 (default 2; "
                           "2, 4 and 8 run an x2 model's windows, others pair by pair)")
    rate.add_argument("--fps", type=parse_fps, default=None, metavar="R",
                      help="output rate R instead of a factor: 60, 59.94 or 60000/1001")
    p.add_argument("--dedup", action="store_true",
                   help="find repeated frames (animation on twos, 24 fps padded to 30) and "
                        "interpolate over them at the unique frames' times")
    _window_flags(p)
    p.add_argument("--no-scene-cuts", action="store_true",
                   help="interpolate across detected scene cuts too")
    p.add_argument("--scene-threshold", type=float, default=1.0, metavar="X",
                   help="scene-cut sensitivity: both cut thresholds times X (default 1.0; 0.5 "
                        "finds softer cuts and may cut fast motion, 2.0 only the starkest)")
    p.add_argument("--preview", default=None, metavar="PNG",
                   help="also write a picture: linear blending above the output, frame by frame")
    _inference_flags(p, "default-interp")
    p.set_defaults(fn=_cmd_interpolate)

    p = sub.add_parser("i2v", help="animate an image into a clip")
    p.add_argument("input", metavar="IMAGE")
    _output_flag(p)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--fps", type=float, default=8.0)
    _inference_flags(p, None)
    p.set_defaults(fn=_cmd_i2v)

    p = sub.add_parser("upscale", help="video super-resolution")
    p.add_argument("input")
    _output_flag(p)
    p.add_argument("--scale", type=int, default=None, choices=[2, 4])
    _window_flags(p)
    _inference_flags(p, "default-vsr")
    p.set_defaults(fn=_cmd_upscale)

    p = sub.add_parser("eval", help="score a model and the baselines on held-out clips")
    p.add_argument("--task", required=True, choices=["interp", "i2v", "vsr"])
    p.add_argument("--data", required=True, help="a video file or a folder of videos")
    p.add_argument("--model", default=None, help="omit to score only the baselines")
    p.add_argument("--steps", type=parse_steps, default=None, help="e.g. 1,2,5,10,50")
    p.add_argument("--baselines", action="store_true")
    p.add_argument("-o", "--output", default="outputs/eval")
    _sampling_flags(p)
    p.add_argument("--factor", type=int, default=None,
                   help="interpolation: keep every F-th frame and score the frames between "
                        "(default: the model's own, 2); a model at another factor makes them "
                        "pair by pair at their times, as interpolate does at --factor 3")
    p.add_argument("--scale", type=int, default=None)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=parse_eval_size, default=None,
                   help="frames scaled to cover and centre-cropped to N or WxH (default: the "
                        "model's training size); 'native' scores every video at its own size")
    p.add_argument("--clips-per-video", type=int, default=4)
    p.add_argument("--samples", type=int, default=1,
                   help="sample each clip this many times (seeds --seed, --seed + 1, ...) and "
                        "report the samples' spread, a stochastic model's diversity "
                        "(image-to-video); the other metrics score the first sample")
    p.add_argument("--lpips-weights", default=None,
                   help="local LPIPS weights (.pth): a full LPIPS AlexNet state dict, or the "
                        "linear layers alone with --alexnet-weights")
    p.add_argument("--alexnet-weights", default=None,
                   help="local ImageNet AlexNet state dict, the trunk for linear-only "
                        "--lpips-weights")
    p.add_argument("--fid-weights", default=None, help="local Inception weights")
    p.add_argument("--fvd-weights", default=None, help="local I3D weights")
    p.set_defaults(fn=_cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"tcvbm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tcvbm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
