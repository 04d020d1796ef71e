"""Dataset layouts: where each kind of dataset keeps its videos, and the dataset for a root.

Each video layout (a folder of videos, UCF-101, Vimeo-90K, REDS, DAVIS, a folder of images)
turns its tree into :class:`~tcvbm.data.clips.Entry` lists for the one clip sampler,
:class:`~tcvbm.data.clips.ClipDataset`; ``synthetic`` makes clips of motion over a folder of
still photographs instead (:class:`~tcvbm.data.synthetic.SyntheticMotion`).
:func:`build_dataset` picks the layout by name, or detects it, so a config names a folder
and, at most, a layout. The trees are drawn in ``data/README.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tcvbm.data.clips import ClipDataset, Entry
from tcvbm.data.files import describe_files, list_files
from tcvbm.data.index_cache import default_cache_dir, index_videos
from tcvbm.data.synthetic import SyntheticMotion
from tcvbm.data.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Size

__all__ = ["VideoFolder", "UCF101", "Vimeo90K", "REDS", "DAVIS", "ImageFolder",
           "synthetic_motion", "LAYOUTS", "STRIDELESS_LAYOUTS", "detect_layout", "build_dataset"]


def _split_root(root: Path, split: str | None) -> Path:
    """``root/split`` when the dataset keeps splits in subfolders, else ``root``."""
    return root / split if split and (root / split).is_dir() else root


def _require_dir(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise ValueError(f"dataset root {os.fspath(root)!r} is not a folder")
    return path


def _video_entries(paths: Sequence[str], cache_dir: Path) -> tuple[list[Entry], dict[str, str]]:
    """Entries of the readable video files, and the reason each unreadable one is skipped."""
    index = index_videos(paths, cache_dir)
    entries = [Entry(p, info["frames"], info["fps"]) for p, info in index.items()
               if not info["error"]]
    return entries, {p: info["error"] for p, info in index.items() if info["error"]}


def _sequence_entries(folders: Sequence[Path], fps: float) -> list[Entry]:
    """One entry per folder of frame files (a missing folder: an empty, too-short entry)."""
    entries = []
    for folder in folders:
        frames = tuple(list_files(folder, IMAGE_EXTENSIONS)) if folder.is_dir() else ()
        entries.append(Entry(os.fspath(folder), len(frames), fps, frames))
    return entries


class VideoFolder(ClipDataset):
    """All video files under ``root`` (recursively; ``root/<split>`` when that exists)."""

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1,
                 split: str | None = None, **opts) -> None:
        folder = _split_root(_require_dir(root), split)
        cache_dir = Path(opts.pop("cache_dir", None) or default_cache_dir(folder))
        entries, skipped = _video_entries(list_files(folder, VIDEO_EXTENSIONS), cache_dir)
        super().__init__(entries, num_frames, size, stride, cache_dir=cache_dir, skipped=skipped,
                         root=folder, **opts)


class UCF101(ClipDataset):
    """UCF-101: class folders of .avi files and ``ucfTrainTestlist/{train,test}list0<fold>.txt``.

    ``split``: ``"train"``, ``"test"`` (or ``"val"``), or ``"all"``.
    """

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str = "train",
                 fold: int = 1, **opts):
        root = _require_dir(root)
        lists = root / "ucfTrainTestlist"
        videos = root / "UCF-101" if (root / "UCF-101").is_dir() else root
        if split == "all":
            paths = list_files(videos, VIDEO_EXTENSIONS)
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
        super().__init__(entries, num_frames, size, stride, cache_dir=cache_dir, skipped=skipped,
                         root=root, **opts)


class Vimeo90K(ClipDataset):
    """Vimeo-90K septuplets (``sequences/XXXXX/XXXX/im1..im7.png`` + ``sep_{train,test}list.txt``),
    or triplets (``tri_*``). Nominal 30 fps; ``split``: ``"train"`` or ``"test"``/``"val"``."""

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str = "train",
                 **opts):
        root = _require_dir(root)
        septuplets = any((root / f"sep_{s}list.txt").is_file() for s in ("train", "test"))
        kind, count = ("sep", 7) if septuplets else ("tri", 3)
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

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str = "train",
                 **opts):
        root = _require_dir(root)
        candidates = [root / f"{split}_sharp", root / split / f"{split}_sharp"]
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            raise ValueError(f"REDS folder for split {split!r} not found: tried "
                             f"{[os.fspath(c) for c in candidates]}")
        sequences = sorted(p for p in folder.iterdir() if p.is_dir())
        super().__init__(_sequence_entries(sequences, 24.0), num_frames, size, stride, root=root,
                         **opts)


class DAVIS(ClipDataset):
    """DAVIS: ``JPEGImages/480p/<seq>/00000.jpg`` and ``ImageSets/<year>/<split>.txt`` (24 fps)."""

    def __init__(self, root, num_frames: int, size: Size, stride: int = 1, split: str = "train",
                 resolution: str = "480p", **opts):
        root = _require_dir(root)
        images = root / "JPEGImages" / resolution
        if not images.is_dir():
            raise ValueError(f"DAVIS frames folder {os.fspath(images)!r} not found")
        sets = sorted((root / "ImageSets").glob(f"*/{split}.txt"), reverse=True)  # newest first
        if sets:
            names = [line.strip() for line in sets[0].read_text().splitlines() if line.strip()]
        else:
            names = sorted(p.name for p in images.iterdir() if p.is_dir())
        super().__init__(_sequence_entries([images / n for n in names], 24.0), num_frames, size,
                         stride, root=root, **opts)


class ImageFolder(ClipDataset):
    """Images under ``root`` (recursively; ``root/<split>`` when it exists) as one-frame clips."""

    def __init__(self, root, num_frames: int = 1, size: Size = 256, stride: int = 1,
                 split: str | None = None, **opts):
        if num_frames != 1:
            raise ValueError(f"an image folder gives one-frame clips: num_frames must be 1, "
                             f"got {num_frames}")
        folder = _split_root(_require_dir(root), split)
        entries = [Entry(p, 1, 0.0, (p,)) for p in list_files(folder, IMAGE_EXTENSIONS)]
        super().__init__(entries, 1, size, stride, root=folder, **opts)


def synthetic_motion(root, num_frames: int, size: Size, stride: int = 1,
                     split: str | None = None, **opts) -> SyntheticMotion:
    """Layout ``synthetic``: :class:`SyntheticMotion` over the still images under ``root``
    (recursively; ``root/<split>`` when it exists).

    ``opts`` are SyntheticMotion's: ``clips_per_epoch`` (required: stills give no count of
    their own), ``seed``, ``max_motion``, ``layers``, ``times``, ``keyframe_every``, ... The
    clips have no ``stride``: their motion per frame is set by ``max_motion``, so anything
    but 1 is refused rather than ignored.
    """
    if stride != 1:
        raise ValueError(f"layout 'synthetic' takes no stride (its clips move up to max_motion "
                         f"pixels per frame), got stride={stride}")
    if "clips_per_epoch" not in opts:
        raise ValueError("layout 'synthetic' needs the option clips_per_epoch")
    return SyntheticMotion(_split_root(_require_dir(root), split), num_frames, size, **opts)


LAYOUTS: dict[str, Callable[..., ClipDataset | SyntheticMotion]] = {
    "videos": VideoFolder,
    "ucf101": UCF101,
    "vimeo90k": Vimeo90K,
    "reds": REDS,
    "davis": DAVIS,
    "images": ImageFolder,
    "synthetic": synthetic_motion,
}
# layouts whose clips are not cut from frames at a stride (a mixture gives them no default)
STRIDELESS_LAYOUTS = frozenset({"synthetic"})


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the layout of ``root`` (a key of :data:`LAYOUTS`).

    Never ``synthetic``: a folder of stills reads as ``images`` unless synthetic motion is
    asked for by name.
    """
    root = _require_dir(root)
    if (root / "sequences").is_dir() and any(root.glob("*_t*list.txt")):
        return "vimeo90k"
    if any(root.glob("*_sharp")) or any(root.glob("*/*_sharp")):
        return "reds"
    if (root / "JPEGImages").is_dir():
        return "davis"
    if (root / "ucfTrainTestlist").is_dir():
        return "ucf101"
    if list_files(root, VIDEO_EXTENSIONS):
        return "videos"
    if list_files(root, IMAGE_EXTENSIONS):
        return "images"
    raise ValueError(f"no videos or images in {os.fspath(root)!r}: found {describe_files(root)}")


def build_dataset(root: str | os.PathLike, num_frames: int, size: Size, layout: str = "auto",
                  split: str = "train", **opts) -> ClipDataset | SyntheticMotion:
    """The dataset for ``root`` in its layout (detected with ``layout="auto"``).

    ``opts`` go to :class:`ClipDataset` (``stride``, ``fps``, ``clips_per_video``, ...), or
    to :class:`SyntheticMotion` for ``layout="synthetic"``. A plain folder of videos or
    images without ``train``/``val`` subfolders is used whole for every split.
    """
    name = detect_layout(root) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {sorted(LAYOUTS)}, got {layout!r}")
    return LAYOUTS[name](root, num_frames, size, split=split, **opts)
