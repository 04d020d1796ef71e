"""Any-length video in, video out: windows in time, tiles in space, scene cuts, audio.

A trained model sees clips of a fixed frame count ``N`` (and was trained at a fixed size);
real videos are longer and larger. This module cuts a stream of frames into overlapping
windows of the model's frame count, builds each window's source with the task's own
``lift`` (the function used in training), runs the sampler, and blends the windows back
with linear ramps over their overlap so no seam shows in time. Frames larger than the tile
budget are cut into overlapping tiles that are feathered back together, padded to the
model's size multiple and cropped back. Frames stream from the reader to the writer:
memory is bounded by one batch of windows, never by the length of the video.

The window and tile logic are small pure pieces (``TemporalBlender``, ``tiled``,
``tile_starts``, ``feather``) that take any ``window_fn(observation) -> clip``, so they are
tested with fake models independently of trained weights.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from tcvbm import samplers
from tcvbm.scenes import SceneCutDetector

__all__ = [
    "WindowFn", "TemporalBlender", "tile_starts", "feather", "tiled", "model_window_fn",
    "cfr_indices", "stage_count", "restore_stream", "RunSummary", "window_keys",
    "build_window_fn", "resolve_bundle", "model_label",
    "interpolate", "image_to_video", "upscale", "sample_files",
    "IMAGE_SUFFIXES", "VIDEO_SUFFIXES",
]

WindowFn = Callable[[Tensor], Tensor]
"""(B, C, K, h, w) observation in [-1, 1] -> (B, C, N, h*s, w*s) restored clip."""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}

DEFAULT_TILE = 512          # pixels per tile side: bounds activation memory on CPU and GPU
DEFAULT_TILE_OVERLAP = 32   # pixels blended between neighbouring tiles
DEFAULT_MULTIPLE = 16       # pad frames to this multiple (the UNets halve the size 4 times)
MIN_SIZE = 8                # frames smaller than this on a side carry too little to restore


# ----------------------------------------------------------------------------- pure pieces

def feather(length: int, ramp: int) -> Tensor:
    """1-D blending weights: linear ramps of ``ramp`` samples at both ends, 1 in between.

    Never zero, so a sample covered by a single window keeps its value after the weighted
    average is normalised; where windows overlap their ramps cross-fade.
    """
    i = torch.arange(length, dtype=torch.float32)
    edge = torch.minimum(i + 1, length - i) / (max(ramp, 0) + 1)
    return edge.clamp(max=1.0)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` samples covering ``size`` with >= ``overlap``.

    Tiles are evenly spread and the last one ends exactly at ``size``, so every tile has
    the same size (one batch) and no tile reads past the edge.
    """
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap: expected 0 <= overlap < tile ({tile}), got {overlap}")
    count = math.ceil((size - tile) / (tile - overlap)) + 1
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the last two dims of a clip up to a multiple (bottom and right)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    b, c, n = x.shape[:3]
    flat = F.pad(x.reshape(b, c * n, h, w), (0, pw, 0, ph), mode="replicate")
    return flat.reshape(b, c, n, h + ph, w + pw)


def tiled(window_fn: WindowFn, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_TILE_OVERLAP,
          multiple: int = DEFAULT_MULTIPLE, scale: int = 1, max_batch: int = 4) -> WindowFn:
    """Wrap ``window_fn`` to run on padded, overlapping spatial tiles of at most ``tile`` px.

    ``scale`` is the output/input size ratio of ``window_fn`` (the upscaling factor).
    Tiles of all windows in the batch go through ``window_fn`` together, ``max_batch`` at a
    time; their outputs are cropped back, weighted with ``feather`` ramps over the overlap
    and normalised, so a seam can move a pixel by at most the tiles' disagreement spread
    over the overlap.
    """
    if tile < MIN_SIZE or multiple < 1 or scale < 1 or max_batch < 1:
        raise ValueError(f"tile/multiple/scale/max_batch: bad values {tile}/{multiple}/"
                         f"{scale}/{max_batch}")

    def run_batched(x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        padded = _pad_to_multiple(x, multiple)
        outs = [window_fn(chunk) for chunk in padded.split(max_batch)]
        return torch.cat(outs)[..., : h * scale, : w * scale]

    def fn(obs: Tensor) -> Tensor:
        b, _, _, h, w = obs.shape
        th, tw = min(tile, h), min(tile, w)
        ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
        if len(ys) == 1 and len(xs) == 1:
            return run_batched(obs)
        crops = torch.cat([obs[..., y:y + th, x:x + tw] for y in ys for x in xs])
        tiles = run_batched(crops)
        weight = feather(th * scale, overlap * scale)[:, None] * feather(tw * scale, overlap * scale)
        out = tiles.new_zeros(b, *tiles.shape[1:3], h * scale, w * scale)
        norm = tiles.new_zeros(h * scale, w * scale)
        for i, (y, x) in enumerate((y, x) for y in ys for x in xs):
            sy, sx = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
            out[..., sy, sx] += tiles[i * b:(i + 1) * b] * weight
            norm[sy, sx] += weight
        return out / norm

    return fn


class TemporalBlender:
    """Streams input frames in and finished output frames out, one shot at a time.

    Windows of ``keys`` input frames start every ``keys - overlap`` inputs; a window of
    ``K`` inputs yields ``(K - 1) * factor + 1`` outputs (input ``i`` sits at output
    ``i * factor``). Overlapping outputs are averaged with ``feather`` weights. The last
    window of a shot is padded by repeating its last input, and the shot ends with
    ``factor - 1`` copies of its last output, so a shot of ``L`` inputs gives exactly
    ``L * factor`` outputs (the same duration at ``factor`` times the frame rate).
    With ``keep_inputs`` the outputs at input positions are the inputs themselves (the
    keyframes of interpolation are kept exactly). Frames are float (C, H, W) tensors.
    ``batch`` windows are run through ``window_fn`` at once; memory holds at most
    ``batch + 1`` windows of frames, whatever the length of the shot.
    """

    def __init__(self, window_fn: WindowFn, keys: int, overlap: int, factor: int = 1,
                 keep_inputs: bool = False, batch: int = 1) -> None:
        min_overlap = 1 if factor > 1 else 0   # interpolating windows must share a keyframe
        if keys < 1 or not min_overlap <= overlap < keys or factor < 1 or batch < 1:
            raise ValueError(f"keys/overlap/factor/batch: need keys >= 1, {min_overlap} <= overlap "
                             f"< keys, factor >= 1, batch >= 1; got {keys}/{overlap}/{factor}/{batch}")
        self.window_fn, self.keys, self.stride = window_fn, keys, keys - overlap
        self.factor, self.keep_inputs, self.batch = factor, keep_inputs, batch
        self.span = (keys - 1) * factor + 1
        self.weight = feather(self.span, overlap * factor)
        self._reset()

    def _reset(self) -> None:
        self.inputs: dict[int, Tensor] = {}
        self.count = 0          # inputs received in this shot
        self.next_start = 0     # first input of the next window
        self.covered = 0        # inputs covered by scheduled windows
        self.emitted = 0        # outputs handed out
        self.pending: list[tuple[int, int, Tensor]] = []   # (start, valid inputs, (C,K,H,W))
        self.sums: dict[int, Tensor] = {}
        self.norms: dict[int, float] = {}

    def _schedule(self, start: int, stop: int) -> None:
        frames = [self.inputs[i] for i in range(start, stop)]
        frames += [frames[-1]] * (self.keys - len(frames))
        self.pending.append((start, stop - start, torch.stack(frames, dim=1)))
        self.covered = stop

    def _run(self) -> None:
        if not self.pending:
            return
        clips = self.window_fn(torch.stack([obs for _, _, obs in self.pending]))
        if clips.shape[2] < self.span:
            raise ValueError(f"window_fn: returned {clips.shape[2]} frames for {self.keys} "
                             f"inputs at factor {self.factor}; need {self.span}")
        for (start, valid, _), clip in zip(self.pending, clips):
            base = start * self.factor
            for p in range((valid - 1) * self.factor + 1):
                frame = clip[:, p].float() * self.weight[p]
                if base + p in self.sums:
                    self.sums[base + p] += frame
                    self.norms[base + p] += float(self.weight[p])
                else:
                    self.sums[base + p] = frame
                    self.norms[base + p] = float(self.weight[p])
        self.pending = []

    def _emit(self, limit: int) -> list[Tensor]:
        out = []
        for pos in range(self.emitted, limit):
            frame = self.sums.pop(pos) / self.norms.pop(pos)
            if self.keep_inputs and pos % self.factor == 0:
                frame = self.inputs[pos // self.factor]
            out.append(frame)
        self.emitted = max(self.emitted, limit)
        keep_from = min(self.next_start, self.emitted // self.factor)
        for i in [i for i in self.inputs if i < keep_from]:
            del self.inputs[i]
        return out

    def push(self, frame: Tensor) -> list[Tensor]:
        """Add the next input of the current shot; returns outputs that are now final."""
        self.inputs[self.count] = frame
        self.count += 1
        if self.count - self.next_start < self.keys:
            return []
        self._schedule(self.next_start, self.next_start + self.keys)
        self.next_start += self.stride
        if len(self.pending) < self.batch:
            return []
        self._run()
        return self._emit(self.next_start * self.factor)

    def finish(self) -> list[Tensor]:
        """End the shot: flush the last (padded) window and the tail; reset for the next."""
        if self.count == 0:
            return []
        if self.covered < self.count:
            self._schedule(self.next_start, self.count)
        self._run()
        out = self._emit((self.count - 1) * self.factor + 1)
        if self.factor > 1:
            out += [out[-1]] * (self.factor - 1)
        self._reset()
        return out


def restore_stream(frames: Iterable[Tensor], blender: TemporalBlender,
                   detector: SceneCutDetector | None = None) -> Iterator[Tensor]:
    """uint8 (H, W, 3) frames in, uint8 frames out: one blender run per shot.

    A detected cut ends the shot, so no window ever mixes frames of two shots; for
    interpolation that means the last frame of a shot is repeated up to the cut.
    """
    from tcvbm.data import from_uint8, to_uint8

    def out(batch: list[Tensor]) -> Iterator[Tensor]:
        for frame in batch:
            yield to_uint8(frame.clamp(-1, 1).unsqueeze(1))[0]

    prev = None
    for frame in frames:
        if prev is not None and detector is not None and detector.is_cut(prev, frame):
            yield from out(blender.finish())
        yield from out(blender.push(from_uint8(frame.unsqueeze(0))[:, 0]))
        prev = frame
    yield from out(blender.finish())


def cfr_indices(timestamps: Sequence[float], fps: float) -> list[int]:
    """Frame indices that resample a variable-frame-rate stream to constant ``fps``.

    Slot ``j`` at ``t_0 + j / fps`` takes the frame shown at that time (the last one whose
    timestamp is not after it, so a long-held frame is repeated and a burst is thinned),
    allowing just under half a period of jitter so rounded timestamps (millisecond time
    bases) of a constant-rate video map one to one. The slot count keeps the duration.
    """
    if not len(timestamps):
        return []
    if fps <= 0:
        raise ValueError(f"fps: must be > 0, got {fps}")
    ts = torch.as_tensor(list(timestamps), dtype=torch.float64)
    ts = torch.cummax(ts, 0).values                      # damaged streams may step back
    count = max(1, round(float(ts[-1] - ts[0]) * fps) + 1)
    slots = ts[0] + torch.arange(count, dtype=torch.float64) / fps
    idx = torch.searchsorted(ts, slots + 0.499 / fps, right=True) - 1
    return idx.clamp(0, len(ts) - 1).tolist()


def stage_count(requested: int, model_factor: int, what: str = "factor") -> int:
    """How many passes of a ``model_factor`` model give ``requested`` (x4 = two x2 passes)."""
    stages, total = 0, 1
    while total < requested:
        total *= model_factor
        stages += 1
    if total != requested or model_factor < 2:
        raise ValueError(f"{what}: {requested} is not a power of the model's {what} "
                         f"{model_factor} (use a model trained for x{requested})")
    return stages


# ------------------------------------------------------------------------ the model side

def model_window_fn(bundle, steps: int | None = None, sampler: str | None = None,
                    device: str = "cpu", precision: str = "fp32", seed: int = 0,
                    compile: bool = False) -> WindowFn:
    """A ``WindowFn`` that lifts observations with the bundle's task and samples the model.

    ``steps``/``sampler`` default to the bundle's own (the values it was trained or
    distilled for). Sampling is seeded so the same input gives the same output.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
    steps = int(steps or bundle.steps or 1)
    sample = samplers.get_sampler(sampler or bundle.sampler or "stochastic")
    dev = torch.device(device)
    model = bundle.model.to(dev).eval()
    if compile:
        model.forward = torch.compile(model.forward)
    timesteps = samplers.get_timesteps(steps, device=dev)
    generator = torch.Generator(dev).manual_seed(seed)

    def fn(obs: Tensor) -> Tensor:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            x1 = bundle.task.lift(obs.to(dev), bundle.num_frames)
            x0 = sample(bundle.model_fn(x1, generator=generator), x1, bundle.bridge, timesteps,
                        generator=generator)
        return x0.float().clamp(-1, 1).cpu()

    return fn


def window_keys(bundle) -> tuple[int, int]:
    """(inputs per window, model factor) for the bundle's task."""
    task = bundle.task
    if task.name == "interp":
        keys = task.num_keyframes(bundle.num_frames)
        if (keys - 1) * task.factor + 1 > bundle.num_frames or keys < 2:
            raise ValueError(f"model: {bundle.num_frames} frames cannot hold two keyframes at "
                             f"factor {task.factor}")
        return keys, task.factor
    return bundle.num_frames, 1


@dataclass
class RunSummary:
    """What one command did, printed as the closing line."""

    input: str
    output: str
    frames_in: int
    frames_out: int
    seconds: float
    model: str
    steps: int
    sampler: str
    warnings: int = 0

    def __str__(self) -> str:
        rate = self.frames_out / max(self.seconds, 1e-9)
        tail = f", {self.warnings} warning(s)" if self.warnings else ""
        return (f"{self.input} -> {self.output}: {self.frames_in} frames in, {self.frames_out} "
                f"frames out in {self.seconds:.1f} s ({rate:.1f} frames/s), model {self.model}, "
                f"{self.steps} step(s) ({self.sampler}){tail}")


class _Warnings:
    """Counts best-effort repairs so the summary can say the output is not pristine."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        warnings.warn(message, stacklevel=3)


def _open_video(path: str | os.PathLike):
    from tcvbm.data import VideoReadError, VideoReader

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"input: {path} does not exist or is not a file")
    try:   # PyAV: the frame-exact reference decoder, and the right one to read in order
        reader = VideoReader(str(path), backend="pyav")
        length = len(reader)
    except VideoReadError as err:
        raise ValueError(f"input: cannot read {path} as a video: {err}") from err
    if length == 0:
        raise ValueError(f"input: {path} has no frames")
    h, w = reader.size
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"input: {path} is {h}x{w}; frames must be at least "
                         f"{MIN_SIZE}x{MIN_SIZE}")
    return reader


def _frame_indices(reader, warn: _Warnings) -> tuple[list[int], float]:
    """(indices to read, their constant rate): variable-rate input resampled by timestamp.

    A constant-rate video reads every frame at its own fps. When frame intervals vary (more
    than 1.5x between the shortest and the longest), the video is resampled to its typical
    (median) interval, so a frame held for longer is repeated for as long as it was shown.
    """
    timestamps = getattr(reader, "timestamps", None)
    everything = list(range(len(reader)))
    if timestamps is None or len(timestamps) != len(reader) or len(reader) < 3:
        return everything, reader.fps
    steps = torch.as_tensor(timestamps, dtype=torch.float64).diff()
    steps = steps[steps > 0]
    if not len(steps) or float(steps.max()) <= 1.5 * float(steps.min()):
        return everything, reader.fps
    rate = 1.0 / float(steps.median())
    indices = cfr_indices(timestamps, rate)
    warn(f"variable frame rate: resampled {len(reader)} frames to {len(indices)} at "
         f"{rate:g} fps by timestamp")
    return indices, rate


def _iter_frames(reader, indices: Sequence[int], warn: _Warnings,
                 chunk: int = 16) -> Iterator[Tensor]:
    """Stream uint8 (H, W, 3) frames; a damaged frame is replaced by the previous good one.

    Decoders report damage as ``VideoReadError`` (a ``ValueError``) or as the errors of the
    underlying library; a failing chunk is retried frame by frame to find the bad ones.
    """
    last: Tensor | None = None
    for i in range(0, len(indices), chunk):
        part = list(indices[i:i + chunk])
        try:
            frames = list(reader.read(part))
        except (RuntimeError, OSError, ValueError):
            frames = []
            for j in part:
                try:
                    frames.append(reader.read([j])[0])
                except (RuntimeError, OSError, ValueError):
                    frames.append(None)
        for j, frame in zip(part, frames):
            if frame is None:
                if last is None:
                    warn(f"frame {j}: unreadable and no earlier frame to repeat; skipped")
                    continue
                warn(f"frame {j}: unreadable; repeated the previous frame")
                frame = last
            last = frame
            yield torch.as_tensor(frame)


def _progress(frames: Iterable[Tensor], total: int, desc: str) -> Iterator[Tensor]:
    bar = tqdm(frames, total=total, desc=desc, unit="frame", dynamic_ncols=True,
               disable=None, file=sys.stderr)
    yield from bar
    bar.close()


def _write(frames: Iterable[Tensor], output: str | os.PathLike, fps: float,
           audio_from: str | os.PathLike | None) -> int:
    """Write through the atomic writer, counting frames; nothing is left on failure."""
    from tcvbm.data import write_video

    count = 0

    def counted() -> Iterator[Tensor]:
        nonlocal count
        for frame in frames:
            count += 1
            yield frame

    write_video(counted(), str(output), fps, audio_from=audio_from)
    return count


def resolve_bundle(model):
    """A loaded bundle from a name/path, or an ``InferenceBundle`` itself (passed through)."""
    from tcvbm.runs import load_bundle

    return model if hasattr(model, "model_fn") else load_bundle(model)


def model_label(model) -> str:
    """How a model is named in summaries and tables."""
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__


def build_window_fn(bundle, scale: int, steps: int | None, sampler: str | None, device: str,
                    precision: str, tile: int | None, batch: int, seed: int,
                    compile: bool) -> WindowFn:
    """The bundle's sampler wrapped in tiles, padded to the model's size multiple."""
    fn = model_window_fn(bundle, steps, sampler, device, precision, seed, compile)
    multiple = int(getattr(bundle.model, "multiple", DEFAULT_MULTIPLE))
    tile = tile or DEFAULT_TILE
    return tiled(fn, tile=tile, overlap=min(DEFAULT_TILE_OVERLAP, tile // 4),
                 multiple=multiple, scale=scale, max_batch=batch)


def _summary(input, output, frames_in: int, frames_out: int, started: float, model, bundle,
             steps: int | None, sampler: str | None, warnings: int, progress: bool) -> RunSummary:
    """The closing line of a command (printed when the command shows progress)."""
    summary = RunSummary(str(input), str(output), frames_in, frames_out,
                         time.perf_counter() - started, model_label(model),
                         int(steps or bundle.steps or 1), sampler or bundle.sampler, warnings)
    if progress:
        print(summary, file=sys.stderr)
    return summary


# -------------------------------------------------------------------------- the commands

def interpolate(input: str | os.PathLike, output: str | os.PathLike, factor: int = 2,
                model="default-interp", steps: int | None = None, sampler: str | None = None,
                device: str = "cpu", precision: str = "fp32", *, overlap: int | None = None,
                tile: int | None = None, batch: int = 1, scene_cuts: bool = True,
                seed: int = 0, compile: bool = False, progress: bool = True) -> RunSummary:
    """Multiply the frame rate of ``input`` by ``factor``; writes ``output`` atomically.

    Same duration, fps x ``factor``, audio copied, input frames kept exactly, shots never
    blended across cuts. A model trained for x2 reaches x4/x8 by repeated passes.
    ``overlap`` counts input frames shared by neighbouring windows (default: half).
    """
    if factor not in (2, 4, 8):
        raise ValueError(f"factor: expected 2, 4 or 8, got {factor!r}")
    started = time.perf_counter()
    warn = _Warnings()
    reader = _open_video(input)
    bundle = resolve_bundle(model)
    if bundle.task.name != "interp":
        raise ValueError(f"model: {model_label(model)} is a {bundle.task.name!r} model, "
                         "not a frame-interpolation model")
    keys, model_factor = window_keys(bundle)
    stages = stage_count(factor, model_factor)
    overlap = keys // 2 if overlap is None else overlap
    fn = build_window_fn(bundle, 1, steps, sampler, device, precision, tile, batch, seed,
                         compile)
    indices, fps = _frame_indices(reader, warn)
    if len(indices) == 1:
        warn(f"input: {input} has a single frame; it is repeated {factor} times")
    stream: Iterable[Tensor] = _iter_frames(reader, indices, warn)
    for _ in range(stages):
        blender = TemporalBlender(fn, keys, overlap, model_factor, keep_inputs=True, batch=batch)
        stream = restore_stream(stream, blender, SceneCutDetector(enabled=scene_cuts))
    total = len(indices) * factor
    if progress:
        stream = _progress(stream, total, "interpolate")
    frames_out = _write(stream, output, fps * factor, audio_from=input)
    reader.close()
    return _summary(input, output, len(indices), frames_out, started, model, bundle, steps,
                    sampler, warn.count, progress)


def upscale(input: str | os.PathLike, output: str | os.PathLike, scale: int | None = None,
            model=None, steps: int | None = None, sampler: str | None = None,
            device: str = "cpu", precision: str = "fp32", *, overlap: int | None = None,
            tile: int | None = None, batch: int = 1, seed: int = 0, compile: bool = False,
            progress: bool = True) -> RunSummary:
    """Upscale every frame of ``input`` by ``scale`` (default: the model's) with a VSR model."""
    if model is None:
        raise ValueError("model: upscaling needs a trained super-resolution model (--model)")
    started = time.perf_counter()
    warn = _Warnings()
    reader = _open_video(input)
    bundle = resolve_bundle(model)
    if bundle.task.name not in ("vsr", "image-sr"):
        raise ValueError(f"model: {model_label(model)} is a {bundle.task.name!r} model, "
                         "not a super-resolution model")
    model_scale = bundle.task.scale
    stages = stage_count(scale or model_scale, model_scale, "scale")
    keys = bundle.num_frames
    overlap = keys // 2 if overlap is None else overlap
    fn = build_window_fn(bundle, model_scale, steps, sampler, device, precision, tile, batch,
                         seed, compile)
    indices, fps = _frame_indices(reader, warn)
    stream: Iterable[Tensor] = _iter_frames(reader, indices, warn)
    for _ in range(stages):
        stream = restore_stream(stream, TemporalBlender(fn, keys, overlap, batch=batch),
                                SceneCutDetector())
    if progress:
        stream = _progress(stream, len(indices), "upscale")
    frames_out = _write(stream, output, fps, audio_from=input)
    reader.close()
    return _summary(input, output, len(indices), frames_out, started, model, bundle, steps,
                    sampler, warn.count, progress)


def _read_image(path: str | os.PathLike) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image: {path} does not exist or is not a file")
    try:
        with Image.open(path) as img:
            array = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
            w, h = img.size
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"image: cannot read {path}: {err}") from err
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"image: {path} is {h}x{w}; need at least {MIN_SIZE}x{MIN_SIZE}")
    return array.view(h, w, 3)


def image_to_video(image: str | os.PathLike, output: str | os.PathLike,
                   frames: int | None = None, fps: float = 8.0, model=None,
                   steps: int | None = None, sampler: str | None = None, device: str = "cpu",
                   precision: str = "fp32", *, tile: int | None = None, seed: int = 0,
                   compile: bool = False, progress: bool = True) -> RunSummary:
    """Animate ``image`` into ``frames`` frames (default: the model's clip length).

    Longer videos chain windows: each new window starts from the last frame generated, so
    consecutive windows share one frame exactly instead of cutting.
    """
    from tcvbm.data import from_uint8, to_uint8

    if model is None:
        raise ValueError("model: image-to-video needs a trained i2v model (--model)")
    if fps <= 0:
        raise ValueError(f"fps: must be > 0, got {fps}")
    started = time.perf_counter()
    bundle = resolve_bundle(model)
    if bundle.task.name != "i2v":
        raise ValueError(f"model: {model_label(model)} is a {bundle.task.name!r} model, "
                         "not an image-to-video model")
    frames = frames or bundle.num_frames
    if frames < 1:
        raise ValueError(f"frames: must be >= 1, got {frames}")
    first = _read_image(image)
    fn = build_window_fn(bundle, 1, steps, sampler, device, precision, tile, 1, seed,
                         compile)

    def generate() -> Iterator[Tensor]:
        current = from_uint8(first.unsqueeze(0))      # (C, 1, H, W)
        yield first
        made = 1
        while made < frames:
            clip = fn(current.unsqueeze(0))[0]          # (C, N, H, W)
            for i in range(1, min(clip.shape[1], frames - made + 1)):
                yield to_uint8(clip[:, i:i + 1].clamp(-1, 1))[0]
                made += 1
            current = clip[:, -1:]

    stream: Iterable[Tensor] = generate()
    if progress:
        stream = _progress(stream, frames, "i2v")
    frames_out = _write(stream, output, fps, audio_from=None)
    return _summary(image, output, 1, frames_out, started, model, bundle, steps, sampler, 0,
                    progress)


def sample_files(run_dir: str | os.PathLike, input: str | os.PathLike,
                 output_dir: str | os.PathLike, steps: int | None = None,
                 sampler: str | None = None, device: str = "cpu",
                 precision: str = "fp32") -> list[Path]:
    """Run a trained model on a file or every video/image in a folder (``tcvbm sample``).

    The run's own task decides the command: interpolation at the model's factor,
    upscaling at its scale, image-to-video from images; outputs are named after inputs.
    """
    bundle = resolve_bundle(run_dir)
    root = Path(input)
    if root.is_dir():
        files = sorted(p for p in root.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    elif root.is_file():
        files = [root]
    else:
        raise ValueError(f"input: {root} does not exist")
    if not files:
        raise ValueError(f"input: no video or image files in {root}")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = bundle.task.name
    common = dict(steps=steps, sampler=sampler, device=device, precision=precision)
    written = []
    for path in files:
        target = out_dir / f"{path.stem}.mp4"
        if name == "interp":
            interpolate(path, target, bundle.task.factor, model=bundle, **common)
        elif name in ("vsr", "image-sr"):
            upscale(path, target, bundle.task.scale, model=bundle, **common)
        elif name == "i2v":
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"input: {path} is not an image; i2v models start from one")
            image_to_video(path, target, model=bundle, **common)
        else:
            raise ValueError(f"model: task {name!r} has no sampling command")
        written.append(target)
    return written
