"""Video data: exact frame reading, clip datasets in common layouts, atomic writing.

Public names: :class:`VideoReader`, :class:`VideoFolder`, :func:`build_dataset`,
:func:`write_video` (and :class:`VideoWriter` for streaming), :class:`VideoReadError`,
the layout datasets, :class:`SyntheticMotion`, the :class:`Mixture` of several sources
(:func:`build_mixture`), and the pixel helpers :func:`to_uint8`, :func:`from_uint8`,
:func:`save_grid_png`, :func:`save_gif`. See docs/data.md.
"""

from tcvbm.data.clips import ClipDataset, Entry, worker_options
from tcvbm.data.errors import SkippedVideoWarning, VideoReadError
from tcvbm.data.index_cache import default_cache_dir
from tcvbm.data.layouts import (
    DAVIS,
    LAYOUTS,
    REDS,
    UCF101,
    ImageFolder,
    VideoFolder,
    Vimeo90K,
    build_dataset,
    detect_layout,
)
from tcvbm.data.mixture import Mixture, build_mixture
from tcvbm.data.synthetic import SyntheticMotion
from tcvbm.data.video import ImageSequenceReader, VideoReader, cover_geometry
from tcvbm.data.visual import from_uint8, save_gif, save_grid_png, to_uint8
from tcvbm.data.writer import DEFAULT_GOP, VideoWriter, write_video

__all__ = [
    "VideoReader",
    "ImageSequenceReader",
    "VideoReadError",
    "SkippedVideoWarning",
    "cover_geometry",
    "write_video",
    "VideoWriter",
    "DEFAULT_GOP",
    "ClipDataset",
    "Entry",
    "VideoFolder",
    "UCF101",
    "Vimeo90K",
    "REDS",
    "DAVIS",
    "ImageFolder",
    "SyntheticMotion",
    "Mixture",
    "LAYOUTS",
    "build_dataset",
    "build_mixture",
    "detect_layout",
    "default_cache_dir",
    "worker_options",
    "to_uint8",
    "from_uint8",
    "save_grid_png",
    "save_gif",
]
