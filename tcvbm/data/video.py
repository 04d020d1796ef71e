"""Frame-exact video reading: decord when it is safe, PyAV otherwise.

The reference for every frame is a sequential PyAV decode converted with
``frame.to_ndarray(format="rgb24")``: frame ``i`` is the ``i``-th frame that decode
yields. Random access must give exactly those pixels, so

* the PyAV backend seeks to a keyframe at or before a wanted frame and decodes
  forward, counting frames from that keyframe's picture (see
  :mod:`tcvbm.data.frame_index` for how frames are numbered and keyframes found
  again in containers whose timestamps mislead);
* decord (much faster for random clips) is used only where its assumptions were
  checked against that index: 8-bit 4:2:0 streams whose frames are their packets in
  timestamp order, whose keyframes are shown in decode order, and whose demuxer
  lands on a keyframe when asked for its time. Anything else (grayscale, palette,
  alpha, 10-bit, open GOPs as in most AVI/mpeg4 with B-frames and mpeg2 in MPEG-PS/TS,
  files decord cannot open) goes to PyAV, which is logged once at debug level.

Resizing happens inside the pixel-format conversion (swscale for PyAV, decord's
own scaler), which is much cheaper than converting at full size and resizing
afterwards; only native-size reads are frame-exact across backends.

Frames are uint8 RGB. A reader made with ``keep_depth`` gives the frames of a source deeper
than 8 bits (10-bit video, for one) as uint16 RGB instead, FFmpeg's ``rgb48le`` conversion
on the full 0..65535 scale, so its samples are not rounded to 8 bits; the inference
commands read their input so and write it back at its depth (:mod:`tcvbm.data.colour`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from tcvbm.data.colour import Colour
from tcvbm.data.errors import VideoReadError
from tcvbm.data.frame_index import FrameIndex, frame_index, short_error
from tcvbm.data.pyav_decoder import PyAVDecoder

try:  # decord is optional: PyAV reads everything it reads
    import decord
    # Its FFmpeg messages only repeat the errors raised here as VideoReadError.
    decord.logging.set_level(decord.logging.QUIET)
except ImportError:  # pragma: no cover - depends on the platform
    decord = None

__all__ = [
    "VideoReader",
    "ImageSequenceReader",
    "VideoReadError",
    "as_hw",
    "cover_geometry",
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
     ".3gp", ".ogv", ".gif"}
)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

# Pixel formats decord converts exactly like PyAV's rgb24 conversion (checked by the tests).
_DECORD_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})

Size = int | tuple[int, int]
Box = tuple[int, int, int, int]


def as_hw(size: Size, name: str = "size") -> tuple[int, int]:
    """Normalise an int or (H, W) pair to a validated (H, W) tuple."""
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or (H, W) pair of positive ints, "
                         f"got {size!r}")
    return int(size[0]), int(size[1])


def cover_geometry(
    frame_hw: tuple[int, int], size: Size | None = None, crop: Box | None = None
) -> tuple[tuple[int, int], Box]:
    """Where to scale a frame and which box of the scaled frame to keep.

    ``crop`` is (top, left, height, width) in source pixels; without it the largest
    centred box with the aspect of ``size`` is used. Returns ``(scaled_hw, box)``: scale
    the whole frame to ``scaled_hw`` and cut ``box`` (top, left, H, W) out of it, so the
    scaling can happen during decoding.
    """
    h0, w0 = frame_hw
    if crop is None:
        if size is None:
            return (h0, w0), (0, 0, h0, w0)
        h, w = as_hw(size)
        s = max(h / h0, w / w0)
        ch, cw = h / s, w / s
        top, left = (h0 - ch) / 2, (w0 - cw) / 2
    else:
        top, left, ch, cw = crop
        if ch <= 0 or cw <= 0 or top < 0 or left < 0 or top + ch > h0 or left + cw > w0:
            raise ValueError(f"crop {crop!r} (top, left, height, width) does not fit in a "
                             f"{h0}x{w0} frame")
        if size is None:
            return (h0, w0), (int(top), int(left), int(ch), int(cw))
    h, w = as_hw(size)
    sy, sx = h / ch, w / cw
    sh, sw = max(h, round(h0 * sy)), max(w, round(w0 * sx))
    return (sh, sw), (min(round(top * sy), sh - h), min(round(left * sx), sw - w), h, w)


def clip_indices(start: int, num_frames: int, stride: int, length: int) -> list[int]:
    """Frame indices of a clip, validated against the video length."""
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames} and {stride}")
    last = start + (num_frames - 1) * stride
    if start < 0 or last >= length:
        raise ValueError(f"clip frames {start}..{last} (stride {stride}) outside a video of "
                         f"{length} frames")
    return list(range(start, last + 1, stride))


class _FrameSource:
    """What both readers share: argument checks, clip geometry, the public surface."""

    path: str
    dtype: torch.dtype = torch.uint8  # of the frames read

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def size(self) -> tuple[int, int]:
        raise NotImplementedError

    def _read(self, indices: list[int], scaled_hw: tuple[int, int] | None) -> np.ndarray:
        raise NotImplementedError

    def read(self, indices: Sequence[int], size: Size | None = None,
             crop: Box | None = None) -> torch.Tensor:
        """Frames ``indices`` (any order, repeats allowed) as ``(n, H, W, 3)`` of ``dtype``.

        With ``size``/``crop`` see :func:`cover_geometry`; without them the frames are
        exactly those of a sequential PyAV decode.
        """
        scaled_hw, (top, left, h, w) = cover_geometry(self.size, size, crop)
        frames = self.read_resized(indices, scaled_hw)
        if (top, left, h, w) != (0, 0, *frames.shape[1:3]):
            frames = frames[:, top : top + h, left : left + w].contiguous()
        return frames

    def read_resized(self, indices: Sequence[int], hw: tuple[int, int]) -> torch.Tensor:
        """Frames ``indices`` scaled to exactly ``hw`` (H, W) during decoding,
        ``(n, H, W, 3)`` of ``dtype``."""
        idx = [int(i) for i in indices]
        n = len(self)
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise ValueError(f"frame indices {bad[:5]} outside a video of {n} frames ({self.path})")
        hw = as_hw(hw, "hw")
        if not idx:
            return torch.empty((0, *hw, 3), dtype=self.dtype)
        wanted = sorted(set(idx))
        frames = self._read(wanted, None if hw == self.size else hw)
        if wanted != idx:
            pos = {i: j for j, i in enumerate(wanted)}
            frames = frames[[pos[i] for i in idx]]
        return torch.from_numpy(np.ascontiguousarray(frames))

    def read_clip(
        self,
        start: int,
        num_frames: int,
        stride: int = 1,
        size: Size | None = None,
        crop: Box | None = None,
    ) -> torch.Tensor:
        """``num_frames`` frames from ``start`` every ``stride`` frames, ``(N, H, W, 3)``."""
        return self.read(clip_indices(start, num_frames, stride, len(self)), size=size, crop=crop)

    def close(self) -> None:
        """Release open files; the reader reopens them if used again."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoReader(_FrameSource):
    """Random access to the frames of one video file.

    ``backend``: ``"auto"`` (decord where it is exact, else PyAV), ``"decord"`` (the
    same, but also in a process forked from one using decord, and decoding errors are
    not retried with PyAV) or ``"pyav"``. ``threads``: decoder threads (0 lets the
    decoder choose; data loader workers usually want 1). ``backend`` tells which one
    was chosen. ``keep_depth``: frames of a source deeper than 8 bits are uint16 (see the
    module); ``colour`` is the source's depth and colour tags, ``dtype`` that of the frames.

    Handles are opened lazily and per process, so a reader can be built in the main
    process and used in forked or spawned data loader workers, and it is cheap to
    keep many readers around (``close`` releases files; they reopen on demand).
    """

    def __init__(self, path: str | os.PathLike, backend: str = "auto", threads: int = 0,
                 keep_depth: bool = False) -> None:
        if backend not in ("auto", "decord", "pyav"):
            raise ValueError(f"backend must be 'auto', 'decord' or 'pyav', got {backend!r}")
        self.path = os.fspath(path)
        self.threads = threads
        self._auto = backend == "auto"
        self._pyav: PyAVDecoder | None = None
        self._decord: dict[tuple[int, int] | None, object] = {}
        self._pid = os.getpid()
        if not os.path.isfile(self.path):
            raise VideoReadError(self.path, "no such file")
        if os.path.getsize(self.path) == 0:
            raise VideoReadError(self.path, "file is empty (0 bytes)")
        self._index: FrameIndex = frame_index(self.path, threads)
        self.pix_fmt: str = self._index.header.pix_fmt
        self.colour: Colour = self._index.header.colour
        self.dtype = torch.uint16 if keep_depth and self.colour.deep else torch.uint8
        self.backend = "pyav" if backend == "pyav" else self._try_decord(strict=backend == "decord")
        self.fps: float = self._index.header.fps or _fps_from_timestamps(self._index.times)

    # -- public surface --------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index.times)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the stored frames."""
        return self._index.header.size

    @property
    def timestamps(self) -> np.ndarray:
        """Presentation time in seconds of every frame, in frame (decode-output) order."""
        return self._index.times

    def close(self) -> None:
        self._check_process()
        if self._pyav is not None:
            self._pyav.close()
        self._pyav = None
        self._decord.clear()

    def __repr__(self) -> str:
        return (f"VideoReader({self.path!r}, backend={self.backend!r}, frames={len(self)}, "
                f"fps={self.fps:.3f}, size={self.size})")

    def __getstate__(self) -> dict:
        # Open decoders do not survive pickling (spawned workers): reopen there.
        state = self.__dict__.copy()
        state.update(_pyav=None, _decord={})
        return state

    # -- backends --------------------------------------------------------------
    def _check_process(self) -> None:
        """After a fork, never touch the parent's decoders (shared file offsets, dead threads)."""
        if self._pid != os.getpid():
            self._pyav, self._decord, self._pid = None, {}, os.getpid()

    def _pyav_decoder(self) -> PyAVDecoder:
        self._check_process()
        if self._pyav is None:
            rgb_format = "rgb48le" if self.dtype == torch.uint16 else "rgb24"
            self._pyav = PyAVDecoder(self.path, self.threads, self._index, rgb_format)
        return self._pyav

    def _decord_reader(self, scaled_hw: tuple[int, int] | None):
        self._check_process()
        reader = self._decord.get(scaled_hw)
        if reader is None:
            h, w = scaled_hw or (-1, -1)
            try:
                reader = decord.VideoReader(self.path, ctx=decord.cpu(0), width=w, height=h,
                                            num_threads=self.threads)
            except Exception as e:  # decord raises bare RuntimeError/DECORDError
                raise VideoReadError(self.path, f"decord cannot open it: {short_error(e)}") from e
            self._decord[scaled_hw] = reader
            _LIVE_READERS.add(self)
        return reader

    def _try_decord(self, strict: bool) -> str:
        """``"decord"`` where decord gives exactly this file's frames, else ``"pyav"``."""
        if decord is None:
            if strict:
                raise ValueError("backend='decord' requested but decord is not installed")
            return "pyav"
        if not strict and not _decord_usable():
            return "pyav"
        reason = self._decord_mismatch()
        if reason is None:
            return "decord"
        self._decord.clear()
        self._index.note(self.path, "decord", f"read with PyAV, not decord: {reason}")
        return "pyav"

    def _decord_mismatch(self) -> str | None:
        """Why decord would not give this file's frames exactly (None: it would).

        decord converts only some pixel formats like PyAV, numbers frames by sorting the
        packets' timestamps, takes a keyframe's position among the packets for its frame
        number, and seeks to that frame's time trusting the demuxer to land on the
        keyframe; each is checked against the index before decord opens the file.
        """
        index = self._index
        if self.pix_fmt not in _DECORD_PIX_FMTS:
            return f"decord converts {self.pix_fmt or 'its pixel format'} differently"
        if not index.packet_order:
            return "its frames are not its packets in timestamp order"
        if any(a.decode_pos != a.frame for a in index.anchors):
            return "a keyframe is shown after frames decoded after it (open GOP)"
        if not index.seeks_land:
            return "seeking to a keyframe's time does not land on it"
        try:
            count = len(self._decord_reader(None))
        except VideoReadError as e:
            return e.reason
        return None if count == len(self) else f"decord counts {count} frames, PyAV {len(self)}"

    def _read(self, indices: list[int], scaled_hw: tuple[int, int] | None) -> np.ndarray:
        if self.backend == "decord":
            try:
                return self._decord_reader(scaled_hw).get_batch(indices).asnumpy()
            except Exception as e:
                what = f"decoding frames {indices[0]}..{indices[-1]}: {short_error(e)}"
                error = VideoReadError(self.path, what)
                if not self._auto:
                    raise error from e
                # decord fails on some files PyAV reads (odd widths in some containers):
                # switch this reader to PyAV; a truly damaged file fails there too.
                self._decord.clear()
                self.backend = "pyav"
        decoder = self._pyav_decoder()
        try:
            return decoder.read(indices, scaled_hw)
        finally:
            self._index = decoder.index  # numbered anew when the container's times proved wrong


# Readers holding decord handles. decord runs decoder threads, and a process forked
# while they exist (a DataLoader worker) crashes or hangs when it uses decord again
# (dmlc/decord#294). So a child keeps inherited handles alive and untouched, and
# reads with PyAV when its parent had used decord; workers of a parent that only
# indexed (the datasets index with PyAV) use decord freely.
_LIVE_READERS: weakref.WeakSet[VideoReader] = weakref.WeakSet()
_FORKED_LEFTOVERS: list = []
_DECORD_FORK_TAINTED = False


def _keep_inherited_handles() -> None:
    global _DECORD_FORK_TAINTED
    for reader in list(_LIVE_READERS):
        _FORKED_LEFTOVERS.append((reader._pyav, reader._decord))
        reader._pyav, reader._decord = None, {}
        _DECORD_FORK_TAINTED = True
        if reader.backend == "decord" and reader._auto:
            reader.backend = "pyav"
    _LIVE_READERS.clear()


os.register_at_fork(after_in_child=_keep_inherited_handles)


def _decord_usable() -> bool:
    return decord is not None and not _DECORD_FORK_TAINTED


def _fps_from_timestamps(ts: np.ndarray) -> float:
    return float((len(ts) - 1) / (ts[-1] - ts[0])) if len(ts) > 1 and ts[-1] > ts[0] else 0.0


class ImageSequenceReader(_FrameSource):
    """A folder of frames (PNG/JPEG...) read like a video: ``len``, ``fps``, ``size``, ``read``.

    Frame-sequence datasets (Vimeo-90K, REDS, DAVIS) and image folders share the clip
    code of video files through it. JPEGs are decoded at reduced size when shrinking
    (``Image.draft``), the image analogue of scaling during video decoding.
    """

    def __init__(self, files: Sequence[str | os.PathLike], fps: float = 0.0,
                 name: str | None = None) -> None:
        self.files = [os.fspath(f) for f in files]
        if not self.files:
            raise ValueError("ImageSequenceReader needs at least one image file")
        self.path = name or os.path.dirname(self.files[0]) or self.files[0]
        self.fps = float(fps)
        self._size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def timestamps(self) -> np.ndarray:
        step = 1.0 / self.fps if self.fps else 1.0
        return np.arange(len(self.files), dtype=np.float64) * step

    @property
    def size(self) -> tuple[int, int]:
        if self._size is None:
            try:
                with Image.open(self.files[0]) as im:
                    self._size = (im.height, im.width)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise VideoReadError(self.files[0],
                                     f"not a readable image ({short_error(e)})") from e
        return self._size

    def _read(self, indices: list[int], scaled_hw: tuple[int, int] | None) -> np.ndarray:
        h, w = scaled_hw or self.size
        out = []
        for i in indices:
            try:
                with Image.open(self.files[i]) as im:
                    if scaled_hw is not None and im.format == "JPEG":
                        im.draft("RGB", (w, h))
                    rgb = _to_rgb(im)
                    if rgb.size != (w, h):
                        rgb = rgb.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
                    out.append(np.asarray(rgb))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise VideoReadError(self.files[i],
                                     f"not a readable image ({short_error(e)})") from e
        return np.stack(out)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Grayscale, palette and alpha images -> RGB (alpha dropped, as for videos)."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode.startswith("I;16"):
        im = Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8))
    return im.convert("RGB")
