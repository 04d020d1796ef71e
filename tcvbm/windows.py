"""Windows in time and tiles in space: the pure tensor side of running a model on any video.

A trained model sees clips of a fixed frame count at a bounded size. ``TemporalBlender`` cuts
a stream of frames into overlapping windows and blends their outputs back with linear ramps
over the overlap, so no seam shows in time; ``tiled`` cuts large frames into overlapping
tiles that are feathered back together, padded to the model's size multiple and cropped
back. Both take any ``window_fn(observation) -> clip`` and know nothing about files or
trained weights, so they are tested with fake models whose answer is known.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Protocol

import torch
from torch import Tensor

from tcvbm.data.streams import MIN_SIZE
from tcvbm.data.visual import from_pixels, to_pixels
from tcvbm.models.layers import pad_to_multiple
from tcvbm.scenes import SceneCutDetector
from tcvbm.workers import OrderedCalls

__all__ = ["WindowFn", "Stage", "TemporalBlender", "feather", "tile_starts", "tiled",
           "restore_stream", "stage_count", "power_count", "DEFAULT_TILE",
           "DEFAULT_TILE_OVERLAP", "DEFAULT_MULTIPLE"]

WindowFn = Callable[..., Tensor]
"""``fn(observation, key=None)``: (B, C, K, h, w) observation in [-1, 1] -> (B, C, N, h*s,
w*s) restored clip. ``key`` (a tuple of ints: the window's number, then the tile's) names
the call, so that a model that draws noise draws its own stream for it
(:func:`tcvbm.workers.call_generator`), whatever thread runs it and in whatever order calls
finish; None means one stream shared by calls made one at a time."""

DEFAULT_TILE = 512          # pixels per tile side: bounds activation memory on CPU and GPU
DEFAULT_TILE_OVERLAP = 32   # pixels blended between neighbouring tiles
DEFAULT_MULTIPLE = 16       # pad frames to this multiple (the UNets halve the size 4 times)


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

    def run_batched(x: Tensor, key: tuple[int, ...] | None) -> Tensor:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, multiple)
        outs = [window_fn(chunk, key=None if key is None else (*key, j))
                for j, chunk in enumerate(padded.split(max_batch))]
        return torch.cat(outs)[..., : h * scale, : w * scale]

    def fn(obs: Tensor, key: tuple[int, ...] | None = None) -> Tensor:
        b, _, _, h, w = obs.shape
        th, tw = min(tile, h), min(tile, w)
        ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
        if len(ys) == 1 and len(xs) == 1:
            return run_batched(obs, key)
        crops = torch.cat([obs[..., y:y + th, x:x + tw] for y in ys for x in xs])
        tiles = run_batched(crops, key)
        ramp = overlap * scale
        weight = feather(th * scale, ramp)[:, None] * feather(tw * scale, ramp)
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

    ``keys`` is the number of input frames per window (the keyframes of interpolation, the
    low-resolution frames of upscaling); windows start every ``keys - overlap`` inputs. A
    window of ``K`` inputs yields ``(K - 1) * factor + 1`` outputs (input ``i`` sits at
    output ``i * factor``). Overlapping outputs are averaged with ``feather`` weights. The
    last window of a shot is padded by repeating its last input, and the shot ends with
    ``factor - 1`` copies of its last output, so a shot of ``L`` inputs gives exactly
    ``L * factor`` outputs (the same duration at ``factor`` times the frame rate).
    With ``keep_inputs`` the outputs at input positions are the inputs themselves (the
    keyframes of interpolation are kept exactly). Frames are float (C, H, W) tensors.
    ``batch`` windows are run through ``window_fn`` at once, ``workers`` such calls at a
    time on their own threads (:class:`tcvbm.workers.OrderedCalls`); call ``n`` of the
    blender's life gets ``key=(n,)``, so the output does not depend on ``workers``. Memory
    holds at most ``(workers + 1) * batch + 1`` windows of frames, whatever the length of
    the shot.
    """

    def __init__(self, window_fn: WindowFn, keys: int, overlap: int, factor: int = 1,
                 keep_inputs: bool = False, batch: int = 1, workers: int = 1) -> None:
        min_overlap = 1 if factor > 1 else 0   # interpolating windows must share a keyframe
        if keys < 1 or not min_overlap <= overlap < keys or factor < 1 or batch < 1:
            raise ValueError(f"keys/overlap/factor/batch: need keys >= 1, {min_overlap} <= "
                             f"overlap < keys, factor >= 1, batch >= 1; got "
                             f"{keys}/{overlap}/{factor}/{batch}")
        self.window_fn, self.inputs_per_window = window_fn, keys
        self.stride = keys - overlap
        self.factor, self.keep_inputs, self.batch = factor, keep_inputs, batch
        self.span = (keys - 1) * factor + 1
        self.weight = feather(self.span, overlap * factor)
        self.calls = OrderedCalls(workers)
        self.runs = 0           # window_fn calls so far, over every shot: each call's key
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
        frames += [frames[-1]] * (self.inputs_per_window - len(frames))
        self.pending.append((start, stop - start, torch.stack(frames, dim=1)))
        self.covered = stop

    def _run(self) -> None:
        """Hand the pending windows to ``window_fn`` as one call (on a worker thread)."""
        if not self.pending:
            return
        spans = [(start, valid) for start, valid, _ in self.pending]
        self.calls.submit(spans, self.window_fn,
                          torch.stack([obs for _, _, obs in self.pending]), key=(self.runs,))
        self.runs += 1
        self.pending = []

    def _add(self, results: list[tuple[list[tuple[int, int]], Tensor]]) -> None:
        """Blend finished calls' clips into the output sums."""
        for spans, clips in results:
            if clips.shape[2] < self.span:
                raise ValueError(f"window_fn: returned {clips.shape[2]} frames for "
                                 f"{self.inputs_per_window} inputs at factor {self.factor}; "
                                 f"need {self.span}")
            for (start, valid), clip in zip(spans, clips):
                base = start * self.factor
                for p in range((valid - 1) * self.factor + 1):
                    frame = clip[:, p].float() * self.weight[p]
                    if base + p in self.sums:
                        self.sums[base + p] += frame
                        self.norms[base + p] += float(self.weight[p])
                    else:
                        self.sums[base + p] = frame
                        self.norms[base + p] = float(self.weight[p])

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

    def _final(self) -> list[Tensor]:
        """The outputs no window still running or still to come contributes to."""
        self._add(self.calls.ready())
        running = self.calls.outstanding
        first = running[0][0][0] if running else self.next_start
        if self.pending:
            first = min(first, self.pending[0][0])
        return self._emit(min(first, self.next_start) * self.factor)

    def push(self, frame: Tensor) -> list[Tensor]:
        """Add the next input of the current shot; returns outputs that are now final."""
        self.inputs[self.count] = frame
        self.count += 1
        if self.count - self.next_start < self.inputs_per_window:
            return self._final()
        self._schedule(self.next_start, self.next_start + self.inputs_per_window)
        self.next_start += self.stride
        if len(self.pending) >= self.batch:
            self._run()
        return self._final()

    def finish(self) -> list[Tensor]:
        """End the shot: flush the last (padded) window and the tail; reset for the next."""
        if self.count == 0:
            return []
        if self.covered < self.count:
            self._schedule(self.next_start, self.count)
        self._run()
        self._add(self.calls.drain())
        out = self._emit((self.count - 1) * self.factor + 1)
        if self.factor > 1:
            out += [out[-1]] * (self.factor - 1)
        self._reset()
        return out


class Stage(Protocol):
    """What :func:`restore_stream` drives, shot by shot: float (C, H, W) frames in, finished
    frames out. :class:`TemporalBlender` (windows) and :class:`tcvbm.retime.Retimer` (any
    output rate) are the two."""

    def push(self, frame: Tensor) -> list[Tensor]:
        """Add the next input of the current shot; returns the outputs now final."""
        ...

    def finish(self) -> list[Tensor]:
        """End the shot (a cut, or the end of the stream); returns its last outputs."""
        ...


def restore_stream(frames: Iterable[Tensor], stage: Stage,
                   detector: SceneCutDetector | None = None) -> Iterator[Tensor]:
    """uint8 (H, W, 3) frames in, uint8 frames out (uint16 in, uint16 out): one run of
    ``stage`` (windows, or a retimer) per shot.

    A detected cut ends the shot, so no window or pair ever mixes frames of two shots; for
    interpolation that means the last frame of a shot is repeated up to the cut.
    """
    def out(batch: list[Tensor]) -> Iterator[Tensor]:
        for frame in batch:
            yield to_pixels(frame.clamp(-1, 1).unsqueeze(1), dtype)[0]

    prev, dtype = None, torch.uint8
    for frame in frames:
        if prev is not None and detector is not None and detector.is_cut(prev, frame):
            yield from out(stage.finish())
        dtype = frame.dtype
        yield from out(stage.push(from_pixels(frame.unsqueeze(0))[:, 0]))
        prev = frame
    yield from out(stage.finish())


def power_count(requested: float, model_factor: int) -> int | None:
    """How many passes of a ``model_factor`` model give ``requested`` (x4 = two x2 passes);
    None when no whole number of passes does (x3, x2.5 with an x2 model)."""
    stages, total = 0, 1
    while total < requested and model_factor >= 2:
        total *= model_factor
        stages += 1
    return stages if total == requested and model_factor >= 2 else None


def stage_count(requested: int, model_factor: int, what: str = "factor") -> int:
    """:func:`power_count`, or a ``ValueError`` naming ``what`` when there is none."""
    stages = power_count(requested, model_factor)
    if stages is None:
        raise ValueError(f"{what}: {requested} is not a power of the model's {what} "
                         f"{model_factor} (use a model trained for x{requested})")
    return stages
