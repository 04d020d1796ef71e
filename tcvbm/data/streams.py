"""Video streams for the inference commands: open, pick frames, read with repair, write.

A command reads one video in order and writes another as it goes. Real files are not always
clean, so reading is best-effort where it can be honest about it: a variable-frame-rate
stream is resampled to a constant rate by timestamp, a frame that fails to decode is
replaced by the previous good one, and every such repair is a warning counted by
:class:`RepairCounter`, so the closing summary can say the output is not pristine. Anything
that cannot be repaired (a missing file, no frames, frames too small) is a ``ValueError``
naming the file.

Frames are uint8 RGB, or uint16 RGB for an input deeper than 8 bits (10-bit video, for one):
:func:`open_video` reads those at their depth, and :func:`write_counted` given the reader's
``colour`` writes the output at that depth with the same colour tags
(:mod:`tcvbm.data.colour`).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tcvbm.data.colour import Colour
from tcvbm.data.encoding import DEFAULT_CRF
from tcvbm.data.errors import VideoReadError
from tcvbm.data.outputs import open_output
from tcvbm.data.video import VideoReader

__all__ = ["MIN_SIZE", "RepairCounter", "open_video", "cfr_indices", "variable_rate",
           "constant_rate_indices", "read_repaired", "prefetched", "with_progress",
           "write_counted", "read_image"]

T = TypeVar("T")
MIN_SIZE = 8                # frames smaller than this on a side carry too little to restore


class RepairCounter:
    """Warns about each best-effort repair and counts them for the run's summary."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        warnings.warn(message, stacklevel=3)


def open_video(path: str | os.PathLike) -> VideoReader:
    """A reader for ``path``, or a ``ValueError`` saying why the file cannot be restored.

    Frames of a source deeper than 8 bits are read as uint16, keeping their depth.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"input: {path} does not exist or is not a file")
    try:   # PyAV: the frame-exact reference decoder, and the right one to read in order
        reader = VideoReader(str(path), backend="pyav", keep_depth=True)
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


def variable_rate(reader) -> float | None:
    """The typical (median-interval) rate of a variable-frame-rate video; None when its
    frame intervals agree within 1.5x (constant rate: read it at its own fps)."""
    timestamps = getattr(reader, "timestamps", None)
    if timestamps is None or len(timestamps) != len(reader) or len(reader) < 3:
        return None
    steps = torch.as_tensor(timestamps, dtype=torch.float64).diff()
    steps = steps[steps > 0]
    if not len(steps) or float(steps.max()) <= 1.5 * float(steps.min()):
        return None
    return 1.0 / float(steps.median())


def constant_rate_indices(reader, warn: RepairCounter) -> tuple[list[int], float]:
    """(indices to read, their constant rate): variable-rate input resampled by timestamp.

    A constant-rate video reads every frame at its own fps. When frame intervals vary
    (:func:`variable_rate`), the video is resampled to its typical (median) interval, so a
    frame held for longer is repeated for as long as it was shown.
    """
    rate = variable_rate(reader)
    if rate is None:
        return list(range(len(reader))), reader.fps
    indices = cfr_indices(reader.timestamps, rate)
    warn(f"variable frame rate: resampled {len(reader)} frames to {len(indices)} at "
         f"{rate:g} fps by timestamp")
    return indices, rate


def read_repaired(reader, indices: Sequence[int], warn: RepairCounter,
                  chunk: int = 16) -> Iterator[Tensor]:
    """Stream (H, W, 3) frames (the reader's dtype); a damaged frame is replaced by the previous
    good one.

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


_DONE = object()


def prefetched(items: Iterable[T], depth: int = 8) -> Iterator[T]:
    """``items`` produced in a background thread, at most ``depth`` ahead of the consumer.

    Decoding, the model and encoding each spend most of their time in native code that
    releases the GIL (FFmpeg, torch kernels), so a stage running in its own thread overlaps
    with the others instead of waiting for them. An exception of the producer is raised in
    the consumer, at the item where it happened; a consumer that stops early stops the
    producer at its next item.
    """
    if depth < 1:
        raise ValueError(f"depth: must be >= 1, got {depth}")
    box: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer, raised there
            put(err)

    worker = threading.Thread(target=produce, name="tcvbm-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def with_progress(frames: Iterable[Tensor], total: int, desc: str) -> Iterator[Tensor]:
    """Pass frames through a progress bar on stderr (hidden when stderr is not a terminal)."""
    bar = tqdm(frames, total=total, desc=desc, unit="frame", dynamic_ncols=True,
               disable=None, file=sys.stderr)
    yield from bar
    bar.close()


def write_counted(frames: Iterable[Tensor], output: str | os.PathLike, fps: float,
                  audio_from: str | os.PathLike | None, *, codec: str | None = None,
                  crf: int = DEFAULT_CRF, lossless: bool = False,
                  colour: Colour | None = None) -> int:
    """Write frames to ``output`` atomically, a video or PNG frames; returns how many.

    ``codec``, ``crf`` and ``lossless`` are the writer's
    (:func:`tcvbm.data.outputs.resolve_output`); nothing is left on failure. ``colour``: the
    input's depth and colour tags (a reader's ``colour``), which the output keeps; frames are
    uint16 when it is deeper than 8 bits.
    """
    with open_output(output, fps, audio_from, codec, crf, lossless, colour) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames_written


def read_image(path: str | os.PathLike) -> Tensor:
    """One image as uint8 (H, W, 3) RGB, or a ``ValueError`` naming the file."""
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
