"""The clip sampler every dataset layout shares: :class:`ClipDataset` over :class:`Entry` lists.

Every layout (see :mod:`tcvbm.data.layouts`) becomes a list of entries ("a video": a file or
an ordered list of frame files) and samples them the same way:

* items are float ``(3, N, H, W)`` clips in [-1, 1];
* an epoch holds ``clips_per_video`` clips of every usable video; clip ``i`` of
  epoch ``e`` depends only on (``seed``, ``e``, ``i``), not on the number of workers;
* it is an ``IterableDataset``: each DataLoader worker (and each rank, after
  ``set_shard``) takes a disjoint share of the videos, keeps their readers open,
  and cuts all clips of a video from one decoded stretch, resized during decoding;
* damaged files are skipped with one warning each, recorded in a marker folder
  shared by all workers (:class:`tcvbm.data.index_cache.SkipMarkers`, so ``stats()`` in
  the main process sees what the workers met), and replaced by clips of another video,
  so an epoch never ends early.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tcvbm.data.errors import SkippedVideoWarning, VideoReadError
from tcvbm.data.files import describe_files
from tcvbm.data.index_cache import SkipMarkers, default_cache_dir
from tcvbm.data.video import ImageSequenceReader, Size, VideoReader, as_hw, cover_geometry
from tcvbm.data.visual import from_uint8

__all__ = ["Entry", "ShardedEpochs", "ClipDataset", "worker_options"]

_MAX_REPLACEMENTS = 16


@dataclass(frozen=True)
class Entry:
    """One video: a file (``frames is None``) or an ordered list of frame files."""

    key: str
    length: int
    fps: float = 0.0
    frames: tuple[str, ...] | None = None

    def open(self, backend: str = "auto", threads: int = 0) -> VideoReader | ImageSequenceReader:
        if self.frames is None:
            return VideoReader(self.key, backend=backend, threads=threads)
        return ImageSequenceReader(self.frames, fps=self.fps, name=self.key)


class ShardedEpochs(IterableDataset):
    """Where a dataset that shards and shuffles itself is: its epoch and its shard.

    ``set_epoch(e)`` picks the epoch the next pass yields, and every later pass the epoch
    after (persistent DataLoader workers never see ``set_epoch`` again);
    ``set_shard(rank, world_size)`` picks this process's share, which each DataLoader
    worker splits again (:meth:`_start_pass`).
    """

    def __init__(self) -> None:
        self._epoch, self._passes = 0, 0
        self.rank, self.world_size = 0, 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose clips the next pass yields (like DistributedSampler)."""
        self._epoch, self._passes = int(epoch), 0

    def set_shard(self, rank: int, world_size: int) -> None:
        """Read only this process's share (multi-process training)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, "
                             f"world_size={world_size}")
        self.rank, self.world_size = rank, world_size

    def _start_pass(self) -> tuple[int, int, int]:
        """The epoch of the pass starting now, and the DataLoader worker reading it:
        ``(epoch, worker id, workers)``, ``(epoch, 0, 1)`` outside a DataLoader worker."""
        epoch = self._epoch + self._passes
        self._passes += 1
        info = get_worker_info()
        return (epoch, info.id, info.num_workers) if info is not None else (epoch, 0, 1)


class ClipDataset(ShardedEpochs):
    """Seeded clips of ``num_frames`` frames from a list of entries.

    Sampling: ``stride`` between frames, or ``fps`` (target frame rate: the stride of
    each video becomes ``round(video_fps / fps)``); ``clips_per_video`` clips per video
    per epoch, at random temporal offsets (``random_offset``) or evenly spread;
    frames resized so they cover ``size`` then cropped at random (``crop="random"``)
    or in the centre; ``hflip`` flips half of the clips. ``short_side`` (pixels, or a
    ``[low, high]`` range drawn per video and epoch) scales frames so their short side
    has that length before cropping instead: crops then keep the motion of the video at
    that scale (scaling to cover a small ``size`` shrinks motion to a pixel or two,
    which a model can learn nothing from), and a range shows a model several scales.
    Videos shorter than a clip are skipped (``short="skip"``) or read cyclically
    (``"loop"``) or with the last frame repeated (``"pad"``).

    Loading: ``backend``/``decode_threads`` go to the readers, ``max_open`` readers
    stay open per worker, ``cache_frames`` keeps decoded (resized) videos in memory
    (for small datasets: memory grows with every video a worker has seen),
    ``shuffle_buffer`` mixes clips of the same video within a worker.
    ``output="uint8"`` yields the uint8 frames ``(N, H, W, 3)`` instead of float
    clips: a quarter of the bytes to move from workers to the trainer, which then
    converts on its device with :func:`tcvbm.data.from_uint8`.

    Use with ``DataLoader(ds, batch_size=..., **worker_options(n))`` (no ``shuffle`` or
    sampler: the dataset shuffles itself) and call ``ds.set_epoch(e)`` before each
    epoch (persistent workers advance their epoch by themselves). For several
    processes, call ``ds.set_shard(rank, world_size)``.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        num_frames: int,
        size: Size,
        stride: int = 1,
        *,
        fps: float | None = None,
        clips_per_video: int = 1,
        random_offset: bool = True,
        crop: str = "random",
        hflip: bool = False,
        short_side: int | Sequence[int] | None = None,
        short: str = "skip",
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 8,
        backend: str = "auto",
        decode_threads: int = 0,
        max_open: int = 8,
        cache_frames: bool = False,
        output: str = "float",
        cache_dir: str | os.PathLike | None = None,
        skipped: dict[str, str] | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        if num_frames < 1 or stride < 1 or clips_per_video < 1:
            raise ValueError(f"num_frames, stride and clips_per_video must be >= 1, got "
                             f"{num_frames}, {stride}, {clips_per_video}")
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        if short not in ("skip", "loop", "pad"):
            raise ValueError(f"short must be 'skip', 'loop' or 'pad', got {short!r}")
        if output not in ("float", "uint8"):
            raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        super().__init__()
        self.num_frames, self.size, self.stride, self.fps = num_frames, as_hw(size), stride, fps
        self.clips_per_video, self.random_offset = clips_per_video, random_offset
        self.crop, self.hflip, self.short, self.seed = crop, hflip, short, seed
        self.shuffle, self.shuffle_buffer = shuffle, shuffle_buffer
        self.backend, self.decode_threads, self.max_open = backend, decode_threads, max_open
        self.cache_frames, self.output = cache_frames, output
        self.short_side = _side_range(short_side, self.size)
        self.root = Path(root) if root is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(
            root or "tcvbm-entries")
        self.skip_markers = SkipMarkers(self.cache_dir)
        self.entries = list(entries)
        self._skipped: dict[str, str] = dict(skipped or {})
        self._skipped.update(self.skip_markers.read({e.key for e in self.entries}))
        for key, reason in sorted(self._skipped.items()):
            warnings.warn(f"skipping unreadable video {key!r}: {reason}", SkippedVideoWarning,
                          stacklevel=3)
        readable = [e for e in self.entries if e.key not in self._skipped]
        self.too_short = [e.key for e in readable if short == "skip" and e.length < self._span(e)]
        self.usable = [e for e in readable if not (short == "skip" and e.length < self._span(e))]
        if not self.usable:
            where = f" in {os.fspath(root)!r}" if root is not None else ""
            found = (describe_files(Path(root)) if root is not None and Path(root).is_dir()
                     else f"{len(self.entries)} entries")
            raise ValueError(
                f"no usable video{where}: found {found}; {len(self.entries)} candidate videos, "
                f"{len(self._skipped)} unreadable, {len(self.too_short)} shorter than a "
                f"{num_frames}-frame clip (stride {stride})"
            )
        self._readers: OrderedDict[int, VideoReader | ImageSequenceReader] = OrderedDict()
        self._frame_cache: dict[tuple[int, tuple[int, int]], torch.Tensor] = {}

    # -- public ------------------------------------------------------------------
    def __len__(self) -> int:
        """Clips per epoch for this shard (all clips when not sharded)."""
        videos = len(range(self.rank, len(self.usable), self.world_size))
        return videos * self.clips_per_video

    def __getitem__(self, i: int) -> torch.Tensor:
        """Clip ``i`` of the current epoch (unsharded numbering), float (3, N, H, W)."""
        total = len(self.usable) * self.clips_per_video
        if not -total <= i < total:
            raise IndexError(f"clip index {i} out of range for {total} clips")
        i %= total
        v = self._order(self._epoch)[i // self.clips_per_video]
        return self._emit(self._video_clips(self._epoch, v)[i % self.clips_per_video])

    def __iter__(self) -> Iterator[torch.Tensor]:
        """This shard's clips: every video ``rank * workers + worker`` of the epoch's order."""
        epoch, wid, workers = self._start_pass()
        shard, shards = self.rank * workers + wid, self.world_size * workers
        rng = np.random.default_rng([self.seed, epoch, shard, 1])
        buffer: list[torch.Tensor] = []
        size = self.shuffle_buffer if self.shuffle else 0
        for v in self._order(epoch)[shard::shards]:
            for clip in self._video_clips(epoch, v):
                buffer.append(clip)
                if len(buffer) > size:
                    yield self._emit(buffer.pop(int(rng.integers(len(buffer))) if size else 0))
        while buffer:
            yield self._emit(buffer.pop(int(rng.integers(len(buffer))) if size else 0))

    def _emit(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.contiguous() if self.output == "uint8" else from_uint8(frames)

    def stats(self) -> dict:
        """Counts for logs: videos found, usable, too short, skipped (unreadable) and which."""
        skipped = dict(self._skipped)
        skipped.update(self.skip_markers.read({e.key for e in self.entries}))
        return {
            "videos": len(self.entries),
            "usable": len(self.usable),
            "too_short": len(self.too_short),
            "skipped": len(skipped),
            "skipped_files": skipped,
            "clips_per_epoch": len(self),
        }

    def __repr__(self) -> str:
        root = os.fspath(self.root) if self.root else None
        return (f"{type(self).__name__}(root={root!r}, videos={len(self.usable)}, "
                f"num_frames={self.num_frames}, size={self.size}, clips_per_epoch={len(self)})")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_readers=OrderedDict(), _frame_cache={})
        return state

    # -- sampling ----------------------------------------------------------------
    def _span(self, entry: Entry) -> int:
        return (self.num_frames - 1) * self._stride_of(entry) + 1

    def _stride_of(self, entry: Entry) -> int:
        if self.fps is None or not entry.fps:
            return self.stride
        return max(1, round(entry.fps / self.fps))

    def _order(self, epoch: int) -> list[int]:
        n = len(self.usable)
        if not self.shuffle:
            return list(range(n))
        return np.random.default_rng([self.seed, epoch]).permutation(n).tolist()

    def _clip_plan(self, epoch: int, v: int) -> list[tuple[float, float, float, bool]]:
        """Per clip: start fraction, crop top/left fractions, flip; independent of the read."""
        plan = []
        for k in range(self.clips_per_video):
            u = np.random.default_rng([self.seed, epoch, v, k]).random(4)
            if self.random_offset:
                start = float(u[0])
            else:
                start = (k + 0.5) / self.clips_per_video
            top, left = (float(u[1]), float(u[2])) if self.crop == "random" else (0.5, 0.5)
            plan.append((start, top, left, bool(self.hflip and u[3] < 0.5)))
        return plan

    def _clip_frame_numbers(self, entry: Entry, start_fraction: float) -> list[int]:
        """The numbers of the frames of ``entry`` that a clip starting at ``start_fraction``
        of the room left shows (looped or padded where the video is too short)."""
        stride, length = self._stride_of(entry), entry.length
        room = length - self._span(entry)
        start = min(int(start_fraction * (room + 1)), room) if room > 0 else 0
        idx = [start + j * stride for j in range(self.num_frames)]
        if room >= 0:
            return idx
        if self.short == "loop":
            return [i % length for i in idx]
        return [min(i, length - 1) for i in idx]

    # -- reading -----------------------------------------------------------------
    def _video_clips(self, epoch: int, v: int) -> list[torch.Tensor]:
        """All clips planned for video ``v``; another video stands in when it is unreadable."""
        plan = self._clip_plan(epoch, v)
        fallback = np.random.default_rng([self.seed, epoch, v, 2]).permutation(len(self.usable))
        for u in [v, *fallback[:_MAX_REPLACEMENTS].tolist()]:
            key = self.usable[u].key
            if key in self._skipped or key in self.skip_markers:
                continue
            try:
                return self._read_clips(u, plan, self._side(epoch, v))
            except VideoReadError as e:
                self._mark_bad(key, e.reason)
        raise RuntimeError(f"{_MAX_REPLACEMENTS + 1} videos in a row were unreadable; "
                           "see the warnings")

    def _reader(self, v: int) -> VideoReader | ImageSequenceReader:
        reader = self._readers.pop(v, None)
        if reader is None:
            reader = self.usable[v].open(self.backend, self.decode_threads)
            while len(self._readers) >= self.max_open:
                self._readers.popitem(last=False)[1].close()
        self._readers[v] = reader
        return reader

    def _side(self, epoch: int, v: int) -> int | None:
        """Short side of video ``v``'s frames in ``epoch`` (None: scale to cover ``size``)."""
        if self.short_side is None:
            return None
        low, high = self.short_side
        return int(np.random.default_rng([self.seed, epoch, v, 3]).integers(low, high + 1))

    def _read_clips(self, v: int, plan: list[tuple[float, float, float, bool]],
                    side: int | None = None) -> list[torch.Tensor]:
        entry = self.usable[v]
        reader = self._reader(v)
        try:
            scaled, _ = cover_geometry(reader.size, self.size if side is None else (side, side))
            clip_idx = [self._clip_frame_numbers(entry, start) for start, *_ in plan]
            if self.cache_frames:
                if (v, scaled) not in self._frame_cache:
                    self._frame_cache[(v, scaled)] = reader.read_resized(range(entry.length),
                                                                         scaled)
                frames, pos = self._frame_cache[(v, scaled)], None
            else:
                wanted = sorted({i for idx in clip_idx for i in idx})
                frames = reader.read_resized(wanted, scaled)
                pos = {i: j for j, i in enumerate(wanted)}
        except VideoReadError:
            self._readers.pop(v, None)
            reader.close()
            raise
        h, w = self.size
        clips = []
        for idx, (_, top, left, flip) in zip(clip_idx, plan):
            y, x = round(top * (scaled[0] - h)), round(left * (scaled[1] - w))
            rows = idx if pos is None else [pos[i] for i in idx]
            clip = frames[rows, y : y + h, x : x + w]
            clips.append(clip.flip(2) if flip else clip)
        return clips

    def _mark_bad(self, key: str, reason: str) -> None:
        self._skipped[key] = reason
        if self.skip_markers.add(key, reason):  # else another worker met it first and warned
            warnings.warn(f"skipping unreadable video {key!r}: {reason}", SkippedVideoWarning,
                          stacklevel=2)


def _side_range(short_side: int | Sequence[int] | None,
                size: tuple[int, int]) -> tuple[int, int] | None:
    """``short_side`` as an inclusive ``(low, high)`` range, checked against the crop size."""
    if short_side is None:
        return None
    low, high = (short_side, short_side) if isinstance(short_side, int) else tuple(short_side)
    if not max(size) <= low <= high:
        raise ValueError(f"short_side must be one length or a [low, high] range with "
                         f"{max(size)} <= low <= high (the crop is {size[0]}x{size[1]}), "
                         f"got {short_side!r}")
    return int(low), int(high)


def worker_options(num_workers: int) -> dict:
    """DataLoader worker settings: spawned, never forked.

    A forked worker inherits the locks of every thread the parent runs (decoder threads,
    OpenMP, progress and logging threads); one held at fork time deadlocks the worker for
    good. Spawned workers start clean, for a start-up of a few seconds per epoch.
    """
    if num_workers <= 0:
        return {"num_workers": 0}
    return {"num_workers": num_workers, "multiprocessing_context": "spawn"}
