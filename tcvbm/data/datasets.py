"""Clip datasets over video files and frame sequences.

Every layout (a folder of videos, UCF-101, Vimeo-90K, REDS, DAVIS, a folder of
images) becomes a list of :class:`Entry` ("a video": a file or an ordered list of
frame files) and shares one sampler, :class:`ClipDataset`:

* items are float ``(3, N, H, W)`` clips in [-1, 1];
* an epoch holds ``clips_per_video`` clips of every usable video; clip ``i`` of
  epoch ``e`` depends only on (``seed``, ``e``, ``i``), not on the number of workers;
* it is an ``IterableDataset``: each DataLoader worker (and each rank, after
  ``set_shard``) takes a disjoint share of the videos, keeps their readers open,
  and cuts all clips of a video from one decoded stretch, resized during decoding;
* damaged files are skipped with one warning each, recorded in a marker folder
  shared by all workers (so ``stats()`` in the main process sees what the workers
  met), and replaced by clips of another video, so an epoch never ends early;
* the index of video files (frame counts, fps) is cached on disk, keyed by path,
  size and modification time: only new or changed files are probed, by demuxing
  (no decoding).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tcvbm.data.errors import SkippedVideoWarning, VideoReadError
from tcvbm.data.video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ImageSequenceReader,
    Size,
    VideoReader,
    as_hw,
    cover_geometry,
)
from tcvbm.data.visual import from_uint8

__all__ = [
    "Entry",
    "ClipDataset",
    "VideoFolder",
    "UCF101",
    "Vimeo90K",
    "REDS",
    "DAVIS",
    "ImageFolder",
    "LAYOUTS",
    "detect_layout",
    "build_dataset",
    "default_cache_dir",
    "worker_options",
]

_MAX_REPLACEMENTS = 16
_INDEX_VERSION = 1


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


def default_cache_dir(root: str | os.PathLike) -> Path:
    """``$TCVBM_CACHE_DIR`` or ``~/.cache/tcvbm/datasets``, one folder per dataset root.

    Outside the dataset so read-only dataset folders work and nothing is added to them.
    """
    base = os.environ.get("TCVBM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tcvbm", "datasets"
    )
    digest = hashlib.sha1(os.path.abspath(os.fspath(root)).encode()).hexdigest()[:16]
    return Path(base) / digest


def _file_identity(path: str) -> str:
    try:
        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return os.path.abspath(path)


def _write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _describe_files(root: Path) -> str:
    """What a folder holds, for the 'no usable video' error."""
    counts = Counter(p.suffix.lower() or "(no extension)" for p in root.rglob("*") if p.is_file())
    if not counts:
        return "no files at all"
    kinds = ", ".join(f"{n} {ext}" for ext, n in counts.most_common(6))
    return f"{sum(counts.values())} files ({kinds})"


def _probe_video(path: str) -> dict:
    try:
        with VideoReader(path, backend="pyav") as r:
            return {"frames": len(r), "fps": r.fps, "error": None}
    except VideoReadError as e:
        return {"frames": 0, "fps": 0.0, "error": e.reason}


def index_videos(paths: Sequence[str], cache_dir: Path) -> dict[str, dict]:
    """Frame count, fps (or the reason it is unreadable) of each video, cached on disk."""
    cache_file = cache_dir / "index.json"
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("version") != _INDEX_VERSION:
            cached = {}
    except (OSError, ValueError):
        cached = {}
    files: dict[str, dict] = cached.get("files", {})
    ids = {p: _file_identity(p) for p in paths}
    todo = [p for p in paths if files.get(p, {}).get("id") != ids[p]]
    if todo:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for p, info in zip(todo, pool.map(_probe_video, todo)):
                files[p] = {"id": ids[p], **info}
        try:
            _write_json_atomic(cache_file, {"version": _INDEX_VERSION, "files": files})
        except OSError as e:  # a read-only cache only costs start-up time
            warnings.warn(f"cannot write the dataset index cache {cache_file}: {e}", RuntimeWarning, stacklevel=2)
    return {p: files[p] for p in paths}


class ClipDataset(IterableDataset):
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
            raise ValueError(
                f"num_frames, stride and clips_per_video must be >= 1, got {num_frames}, {stride}, {clips_per_video}"
            )
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        if short not in ("skip", "loop", "pad"):
            raise ValueError(f"short must be 'skip', 'loop' or 'pad', got {short!r}")
        if output not in ("float", "uint8"):
            raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.num_frames, self.size, self.stride, self.fps = num_frames, as_hw(size), stride, fps
        self.clips_per_video, self.random_offset, self.crop, self.hflip = clips_per_video, random_offset, crop, hflip
        self.short, self.seed, self.shuffle, self.shuffle_buffer = short, seed, shuffle, shuffle_buffer
        self.backend, self.decode_threads, self.max_open, self.cache_frames = backend, decode_threads, max_open, cache_frames
        self.output = output
        self.short_side = _side_range(short_side, self.size)
        self.root = Path(root) if root is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root or "tcvbm-entries")
        self.entries = list(entries)
        self._skipped: dict[str, str] = dict(skipped or {})
        self._skipped.update(self._markers({e.key for e in self.entries}))
        for key, reason in sorted(self._skipped.items()):
            warnings.warn(f"skipping unreadable video {key!r}: {reason}", SkippedVideoWarning, stacklevel=3)
        readable = [e for e in self.entries if e.key not in self._skipped]
        self.too_short = [e.key for e in readable if short == "skip" and e.length < self._span(e)]
        self.usable = [e for e in readable if not (short == "skip" and e.length < self._span(e))]
        if not self.usable:
            where = f" in {os.fspath(root)!r}" if root is not None else ""
            found = _describe_files(Path(root)) if root is not None and Path(root).is_dir() else f"{len(self.entries)} entries"
            raise ValueError(
                f"no usable video{where}: found {found}; {len(self.entries)} candidate videos, "
                f"{len(self._skipped)} unreadable, {len(self.too_short)} shorter than a "
                f"{num_frames}-frame clip (stride {stride})"
            )
        self._epoch, self._passes = 0, 0
        self.rank, self.world_size = 0, 1
        self._readers: OrderedDict[int, VideoReader | ImageSequenceReader] = OrderedDict()
        self._frame_cache: dict[tuple[int, tuple[int, int]], torch.Tensor] = {}

    # -- public ------------------------------------------------------------------
    def __len__(self) -> int:
        """Clips per epoch for this shard (all clips when not sharded)."""
        videos = len(range(self.rank, len(self.usable), self.world_size))
        return videos * self.clips_per_video

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose clips the next pass yields (like DistributedSampler)."""
        self._epoch, self._passes = int(epoch), 0

    def set_shard(self, rank: int, world_size: int) -> None:
        """Read only this process's share of the videos (multi-process training)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.rank, self.world_size = rank, world_size

    def __getitem__(self, i: int) -> torch.Tensor:
        """Clip ``i`` of the current epoch (unsharded numbering), float (3, N, H, W)."""
        total = len(self.usable) * self.clips_per_video
        if not -total <= i < total:
            raise IndexError(f"clip index {i} out of range for {total} clips")
        i %= total
        v = self._order(self._epoch)[i // self.clips_per_video]
        return self._emit(self._video_clips(self._epoch, v)[i % self.clips_per_video])

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch = self._epoch + self._passes
        self._passes += 1
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
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
        skipped.update(self._markers({e.key for e in self.entries}))
        return {
            "videos": len(self.entries),
            "usable": len(self.usable),
            "too_short": len(self.too_short),
            "skipped": len(skipped),
            "skipped_files": skipped,
            "clips_per_epoch": len(self),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={os.fspath(self.root) if self.root else None!r}, videos={len(self.usable)}, "
            f"num_frames={self.num_frames}, size={self.size}, clips_per_epoch={len(self)})"
        )

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
        """Per clip: start fraction, crop top/left fractions, flip; independent of the video read."""
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

    def _frame_indices(self, entry: Entry, start_fraction: float) -> list[int]:
        stride, length = self._stride_of(entry), entry.length
        room = length - self._span(entry)
        start = min(int(start_fraction * (room + 1)), room) if room > 0 else 0
        idx = [start + j * stride for j in range(self.num_frames)]
        if room >= 0:
            return idx
        return [i % length for i in idx] if self.short == "loop" else [min(i, length - 1) for i in idx]

    # -- reading -----------------------------------------------------------------
    def _video_clips(self, epoch: int, v: int) -> list[torch.Tensor]:
        """All clips planned for video ``v``; another video stands in when it is unreadable."""
        plan = self._clip_plan(epoch, v)
        fallback = np.random.default_rng([self.seed, epoch, v, 2]).permutation(len(self.usable))
        for attempt, u in enumerate([v, *fallback[:_MAX_REPLACEMENTS].tolist()]):
            key = self.usable[u].key
            if key in self._skipped or self._marker(key).exists():
                continue
            try:
                return self._read_clips(u, plan, self._side(epoch, v))
            except VideoReadError as e:
                self._mark_bad(key, e.reason)
        raise RuntimeError(f"{_MAX_REPLACEMENTS + 1} videos in a row were unreadable; see the warnings")

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
            clip_idx = [self._frame_indices(entry, start) for start, *_ in plan]
            if self.cache_frames:
                if (v, scaled) not in self._frame_cache:
                    self._frame_cache[(v, scaled)] = reader.read_resized(range(entry.length), scaled)
                frames, pos = self._frame_cache[(v, scaled)], None
            else:
                wanted = sorted({i for idx in clip_idx for i in idx})
                frames, pos = reader.read_resized(wanted, scaled), {i: j for j, i in enumerate(wanted)}
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

    # -- skipped files, shared between processes through marker files -----------
    def _marker(self, key: str) -> Path:
        digest = hashlib.sha1(_file_identity(key).encode()).hexdigest()[:20]
        return self.cache_dir / "skipped" / f"{digest}.json"

    def _markers(self, keys: set[str]) -> dict[str, str]:
        found = {}
        folder = self.cache_dir / "skipped"
        if folder.is_dir():
            for marker in folder.glob("*.json"):
                try:
                    info = json.loads(marker.read_text())
                except (OSError, ValueError):
                    continue
                if info.get("key") in keys and marker == self._marker(info["key"]):
                    found[info["key"]] = info.get("reason", "unreadable")
        return found

    def _mark_bad(self, key: str, reason: str) -> None:
        self._skipped[key] = reason
        marker = self._marker(key)
        if marker.exists():  # another worker met it first and warned
            return
        warnings.warn(f"skipping unreadable video {key!r}: {reason}", SkippedVideoWarning, stacklevel=2)
        try:
            _write_json_atomic(marker, {"key": key, "reason": reason})
        except OSError:
            pass  # without a writable cache the count stays per process


def _side_range(short_side: int | Sequence[int] | None, size: tuple[int, int]) -> tuple[int, int] | None:
    """``short_side`` as an inclusive ``(low, high)`` range, checked against the crop size."""
    if short_side is None:
        return None
    low, high = (short_side, short_side) if isinstance(short_side, int) else tuple(short_side)
    if not max(size) <= low <= high:
        raise ValueError(f"short_side must be one length or a [low, high] range with "
                         f"{max(size)} <= low <= high (the crop is {size[0]}x{size[1]}), got {short_side!r}")
    return int(low), int(high)


def _split_root(root: Path, split: str | None) -> Path:
    """``root/split`` when the dataset keeps splits in subfolders, else ``root``."""
    return root / split if split and (root / split).is_dir() else root


def _walk(root: Path, extensions: frozenset[str]) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(folder, f) for f in sorted(files) if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions]
    return found


def _require_dir(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise ValueError(f"dataset root {os.fspath(root)!r} is not a folder")
    return path


def _video_entries(paths: Sequence[str], cache_dir: Path) -> tuple[list[Entry], dict[str, str]]:
    index = index_videos(paths, cache_dir)
    entries = [Entry(p, info["frames"], info["fps"]) for p, info in index.items() if not info["error"]]
    return entries, {p: info["error"] for p, info in index.items() if info["error"]}


def _sequence_entries(folders: Sequence[Path], fps: float) -> list[Entry]:
    entries = []
    for folder in folders:
        frames = tuple(_walk(folder, IMAGE_EXTENSIONS)) if folder.is_dir() else ()
        entries.append(Entry(os.fspath(folder), len(frames), fps, frames))
    return entries


class VideoFolder(ClipDataset):
    """All video files under ``root`` (recursively; ``root/<split>`` when that exists)."""

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str | None = None, **opts) -> None:
        folder = _split_root(_require_dir(root), split)
        cache_dir = Path(opts.pop("cache_dir", None) or default_cache_dir(folder))
        entries, skipped = _video_entries(_walk(folder, VIDEO_EXTENSIONS), cache_dir)
        super().__init__(entries, num_frames, size, stride, cache_dir=cache_dir, skipped=skipped, root=folder, **opts)


class UCF101(ClipDataset):
    """UCF-101: class folders of .avi files and ``ucfTrainTestlist/{train,test}list0<fold>.txt``.

    ``split``: ``"train"``, ``"test"`` (or ``"val"``), or ``"all"``.
    """

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str = "train", fold: int = 1, **opts):
        root = _require_dir(root)
        lists = root / "ucfTrainTestlist"
        videos = root / "UCF-101" if (root / "UCF-101").is_dir() else root
        if split == "all":
            paths = _walk(videos, VIDEO_EXTENSIONS)
        elif split in ("train", "test", "val"):
            list_file = lists / f"{'train' if split == 'train' else 'test'}list0{fold}.txt"
            if not list_file.is_file():
                raise ValueError(f"UCF-101 split file {os.fspath(list_file)!r} not found")
            names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
            paths = [os.fspath(videos / name) for name in names]
        else:
            raise ValueError(f"split must be 'train', 'test', 'val' or 'all', got {split!r}")
        cache_dir = Path(opts.pop("cache_dir", None) or default_cache_dir(root))
        entries, skipped = _video_entries(paths, cache_dir)
        super().__init__(entries, num_frames, size, stride, cache_dir=cache_dir, skipped=skipped, root=root, **opts)


class Vimeo90K(ClipDataset):
    """Vimeo-90K septuplets (``sequences/XXXXX/XXXX/im1..im7.png`` + ``sep_{train,test}list.txt``),
    or triplets (``tri_*``). Nominal 30 fps; ``split``: ``"train"`` or ``"test"``/``"val"``."""

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str = "train", **opts):
        root = _require_dir(root)
        kind, count = ("sep", 7) if any((root / f"sep_{s}list.txt").is_file() for s in ("train", "test")) else ("tri", 3)
        list_file = root / f"{kind}_{'train' if split == 'train' else 'test'}list.txt"
        if not list_file.is_file():
            raise ValueError(f"Vimeo-90K split file {os.fspath(list_file)!r} not found")
        names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        entries = []
        for name in names:
            folder = root / "sequences" / name
            frames = tuple(os.fspath(folder / f"im{i}.png") for i in range(1, count + 1))
            entries.append(Entry(os.fspath(folder), count, 30.0, frames))
        super().__init__(entries, num_frames, size, stride, root=root, **opts)


class REDS(ClipDataset):
    """REDS: ``<split>_sharp/000/00000000.png`` (or ``<split>/<split>_sharp/...``), 24 fps."""

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str = "train", **opts):
        root = _require_dir(root)
        candidates = [root / f"{split}_sharp", root / split / f"{split}_sharp"]
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            raise ValueError(f"REDS folder for split {split!r} not found: tried {[os.fspath(c) for c in candidates]}")
        sequences = sorted(p for p in folder.iterdir() if p.is_dir())
        super().__init__(_sequence_entries(sequences, 24.0), num_frames, size, stride, root=root, **opts)


class DAVIS(ClipDataset):
    """DAVIS: ``JPEGImages/480p/<seq>/00000.jpg`` and ``ImageSets/<year>/<split>.txt`` (24 fps)."""

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str = "train", resolution: str = "480p", **opts):
        root = _require_dir(root)
        images = root / "JPEGImages" / resolution
        if not images.is_dir():
            raise ValueError(f"DAVIS frames folder {os.fspath(images)!r} not found")
        sets = sorted((root / "ImageSets").glob(f"*/{split}.txt"), reverse=True)  # newest year first
        if sets:
            names = [line.strip() for line in sets[0].read_text().splitlines() if line.strip()]
        else:
            names = sorted(p.name for p in images.iterdir() if p.is_dir())
        super().__init__(_sequence_entries([images / n for n in names], 24.0), num_frames, size, stride, root=root, **opts)


class ImageFolder(ClipDataset):
    """Images under ``root`` (recursively; ``root/<split>`` when it exists) as one-frame clips."""

    def __init__(self, root, num_frames: int = 1, size: Size = 256, stride: int = 1, split: str | None = None, **opts):
        if num_frames != 1:
            raise ValueError(f"an image folder gives one-frame clips: num_frames must be 1, got {num_frames}")
        folder = _split_root(_require_dir(root), split)
        entries = [Entry(p, 1, 0.0, (p,)) for p in _walk(folder, IMAGE_EXTENSIONS)]
        super().__init__(entries, 1, size, stride, root=folder, **opts)


LAYOUTS: dict[str, type[ClipDataset]] = {
    "videos": VideoFolder,
    "ucf101": UCF101,
    "vimeo90k": Vimeo90K,
    "reds": REDS,
    "davis": DAVIS,
    "images": ImageFolder,
}


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the layout of ``root`` (a key of :data:`LAYOUTS`)."""
    root = _require_dir(root)
    if (root / "sequences").is_dir() and any(root.glob("*_t*list.txt")):
        return "vimeo90k"
    if any(root.glob("*_sharp")) or any(root.glob("*/*_sharp")):
        return "reds"
    if (root / "JPEGImages").is_dir():
        return "davis"
    if (root / "ucfTrainTestlist").is_dir():
        return "ucf101"
    if _walk(root, VIDEO_EXTENSIONS):
        return "videos"
    if _walk(root, IMAGE_EXTENSIONS):
        return "images"
    raise ValueError(f"no videos or images in {os.fspath(root)!r}: found {_describe_files(root)}")


def build_dataset(
    root: str | os.PathLike, num_frames: int, size: Size, layout: str = "auto", split: str = "train", **opts
) -> ClipDataset:
    """The dataset for ``root`` in its layout (detected with ``layout="auto"``).

    ``opts`` go to :class:`ClipDataset` (``stride``, ``fps``, ``clips_per_video``, ...).
    A plain folder of videos or images without ``train``/``val`` subfolders is used
    whole for every split.
    """
    name = detect_layout(root) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {sorted(LAYOUTS)}, got {layout!r}")
    return LAYOUTS[name](root, num_frames, size, split=split, **opts)


def worker_options(num_workers: int) -> dict:
    """DataLoader worker settings: spawned, never forked.

    A forked worker inherits the locks of every thread the parent runs (decoder threads,
    OpenMP, progress and logging threads); one held at fork time deadlocks the worker for
    good. Spawned workers start clean, for a start-up of a few seconds per epoch.
    """
    if num_workers <= 0:
        return {"num_workers": 0}
    return {"num_workers": num_workers, "multiprocessing_context": "spawn"}
