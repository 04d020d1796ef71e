"""Frame-exact video reading: decord when it is safe, PyAV otherwise.

The reference for every frame is a sequential PyAV decode converted with
``frame.to_ndarray(format="rgb24")``: frame ``i`` is the ``i``-th frame that decode
yields. Random access must give exactly those pixels, so

* the PyAV backend maps frame indices to presentation timestamps from a demux
  pass (packets only, no decoding), seeks to the keyframe at or before a wanted
  frame and decodes forward, identifying frames by timestamp;
* decord (much faster for random clips) is used only where it was checked to agree:
  8-bit 4:2:0 streams whose frame count decord reports equal to the container's
  (or to a demux count when the container does not say), with increasing
  timestamps. Anything else (grayscale, palette, alpha, 10-bit, odd containers, files
  decord cannot open) goes to PyAV.

Resizing happens inside the pixel-format conversion (swscale for PyAV, decord's
own scaler), which is much cheaper than converting at full size and resizing
afterwards; only native-size reads are frame-exact across backends.
"""

from __future__ import annotations

import bisect
import os
import re
import weakref
from collections.abc import Iterator, Sequence

import av
import numpy as np
import torch
from PIL import Image

from tcvbm.data.errors import VideoReadError

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
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".ogv"}
)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

# Pixel formats decord converts exactly like PyAV's rgb24 conversion (checked by the tests).
_DECORD_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
# swscale's area filter averages source pixels when shrinking: antialiased, and fast.
_SCALE_INTERPOLATION = "AREA"

Size = int | tuple[int, int]
Box = tuple[int, int, int, int]


def as_hw(size: Size, name: str = "size") -> tuple[int, int]:
    """Normalise an int or (H, W) pair to a validated (H, W) tuple."""
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or (H, W) pair of positive ints, got {size!r}")
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
            raise ValueError(f"crop {crop!r} (top, left, height, width) does not fit in a {h0}x{w0} frame")
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
        raise ValueError(f"clip frames {start}..{last} (stride {stride}) outside a video of {length} frames")
    return list(range(start, last + 1, stride))


class _FrameSource:
    """What both readers share: argument checks, clip geometry, the public surface."""

    path: str

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def size(self) -> tuple[int, int]:
        raise NotImplementedError

    def _read(self, indices: list[int], scaled_hw: tuple[int, int] | None) -> np.ndarray:
        raise NotImplementedError

    def read(self, indices: Sequence[int], size: Size | None = None, crop: Box | None = None) -> torch.Tensor:
        """Frames ``indices`` (any order, repeats allowed) as uint8 ``(n, H, W, 3)``.

        With ``size``/``crop`` see :func:`cover_geometry`; without them the frames are
        exactly those of a sequential PyAV decode.
        """
        scaled_hw, (top, left, h, w) = cover_geometry(self.size, size, crop)
        frames = self.read_resized(indices, scaled_hw)
        if (top, left, h, w) != (0, 0, *frames.shape[1:3]):
            frames = frames[:, top : top + h, left : left + w].contiguous()
        return frames

    def read_resized(self, indices: Sequence[int], hw: tuple[int, int]) -> torch.Tensor:
        """Frames ``indices`` scaled to exactly ``hw`` (H, W) during decoding, uint8 ``(n, H, W, 3)``."""
        idx = [int(i) for i in indices]
        n = len(self)
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise ValueError(f"frame indices {bad[:5]} outside a video of {n} frames ({self.path})")
        hw = as_hw(hw, "hw")
        if not idx:
            return torch.empty((0, *hw, 3), dtype=torch.uint8)
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
        """``num_frames`` frames from ``start`` every ``stride`` frames, uint8 ``(N, H, W, 3)``."""
        return self.read(clip_indices(start, num_frames, stride, len(self)), size=size, crop=crop)

    def close(self) -> None:
        """Release open files; the reader reopens them if used again."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoReader(_FrameSource):
    """Random access to the frames of one video file.

    ``backend``: ``"auto"`` (decord where it is exact, else PyAV), ``"decord"`` or
    ``"pyav"``. ``threads``: decoder threads (0 lets the decoder choose; data loader
    workers usually want 1). ``backend`` tells which one was chosen.

    Handles are opened lazily and per process, so a reader can be built in the main
    process and used in forked or spawned data loader workers, and it is cheap to
    keep many readers around (``close`` releases files; they reopen on demand).
    """

    def __init__(self, path: str | os.PathLike, backend: str = "auto", threads: int = 0) -> None:
        if backend not in ("auto", "decord", "pyav"):
            raise ValueError(f"backend must be 'auto', 'decord' or 'pyav', got {backend!r}")
        self.path = os.fspath(path)
        self.threads = threads
        self._auto = backend == "auto"
        self._pyav: _PyAVDecoder | None = None
        self._decord: dict[tuple[int, int] | None, object] = {}
        self._pid = os.getpid()
        if not os.path.isfile(self.path):
            raise VideoReadError(self.path, "no such file")
        if os.path.getsize(self.path) == 0:
            raise VideoReadError(self.path, "file is empty (0 bytes)")
        probe = _probe(self.path)
        self._height, self._width = probe["height"], probe["width"]
        self.pix_fmt: str = probe["pix_fmt"]
        self.backend = "pyav"
        if backend == "decord" or (backend == "auto" and _decord_usable() and self.pix_fmt in _DECORD_PIX_FMTS):
            self.backend = self._try_decord(probe["frames"], strict=backend == "decord")
        if self.backend == "pyav":
            self._timestamps = self._pyav_decoder().timestamps
        self.fps: float = probe["fps"] or _fps_from_timestamps(self._timestamps)

    # -- public surface --------------------------------------------------------
    def __len__(self) -> int:
        return len(self._timestamps)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the stored frames."""
        return self._height, self._width

    @property
    def timestamps(self) -> np.ndarray:
        """Presentation time in seconds of every frame, in frame (decode-output) order."""
        return self._timestamps

    def close(self) -> None:
        self._check_process()
        if self._pyav is not None:
            self._pyav.close()
        self._pyav = None
        self._decord.clear()

    def __repr__(self) -> str:
        return f"VideoReader({self.path!r}, backend={self.backend!r}, frames={len(self)}, fps={self.fps:.3f}, size={self.size})"

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

    def _pyav_decoder(self) -> _PyAVDecoder:
        self._check_process()
        if self._pyav is None:
            self._pyav = _PyAVDecoder(self.path, self.threads)
        return self._pyav

    def _decord_reader(self, scaled_hw: tuple[int, int] | None):
        self._check_process()
        reader = self._decord.get(scaled_hw)
        if reader is None:
            h, w = scaled_hw or (-1, -1)
            try:
                reader = decord.VideoReader(self.path, ctx=decord.cpu(0), width=w, height=h, num_threads=self.threads)
            except Exception as e:  # decord raises bare RuntimeError/DECORDError
                raise VideoReadError(self.path, f"decord cannot open it: {_short(e)}") from e
            self._decord[scaled_hw] = reader
            _LIVE_READERS.add(self)
        return reader

    def _try_decord(self, container_frames: int, strict: bool) -> str:
        """Use decord only when its frame count and timestamps agree with PyAV's view."""
        if decord is None:
            if strict:
                raise ValueError("backend='decord' requested but decord is not installed")
            return "pyav"
        try:
            reader = self._decord_reader(None)
            n = len(reader)
            ts = reader.get_frame_timestamp(list(range(n)))[:, 0].astype(np.float64) if n else np.zeros(0)
        except VideoReadError:
            if strict:
                raise
            return "pyav"
        expected = container_frames or len(self._pyav_decoder().timestamps)
        if n == 0 or n != expected or np.any(np.diff(ts) <= 0):
            if strict:
                raise VideoReadError(self.path, f"decord sees {n} frames, PyAV {expected}: not frame-exact")
            self._decord.clear()
            return "pyav"
        self._timestamps = ts
        return "decord"

    def _read(self, indices: list[int], scaled_hw: tuple[int, int] | None) -> np.ndarray:
        if self.backend == "decord":
            try:
                return self._decord_reader(scaled_hw).get_batch(indices).asnumpy()
            except Exception as e:
                error = VideoReadError(self.path, f"decoding frames {indices[0]}..{indices[-1]}: {_short(e)}")
                if not self._auto:
                    raise error from e
                # decord fails on some files PyAV reads (odd widths in some containers):
                # switch this reader to PyAV; a truly damaged file fails there too.
                self._decord.clear()
                if len(self._pyav_decoder().timestamps) != len(self):
                    raise error from e
                self.backend = "pyav"
        return self._pyav_decoder().read(indices, scaled_hw)


_DECORD_PREFIX = re.compile(r"(\[[0-9:]+\] \S+:\d+: )+")
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


def _short(error: BaseException) -> str:
    """First line of an error, without decord's ``[time] file.cc:line:`` prefixes."""
    text = str(error).strip().splitlines()
    line = _DECORD_PREFIX.sub("", text[0]) if text else ""
    return (line or type(error).__name__)[:300]


def _fps_from_timestamps(ts: np.ndarray) -> float:
    return float((len(ts) - 1) / (ts[-1] - ts[0])) if len(ts) > 1 and ts[-1] > ts[0] else 0.0


def _open_container(path: str):
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoReadError(path, f"not a readable media file ({_short(e)})") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "contains no video stream")
    return container


def _probe(path: str) -> dict:
    """Header facts (no decoding): size, pixel format, nominal fps and frame count."""
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        cc = stream.codec_context
        if not cc.width or not cc.height:
            raise VideoReadError(path, "video stream has no frame size")
        rate = stream.average_rate or stream.guessed_rate
        return {
            "height": cc.height,
            "width": cc.width,
            "pix_fmt": cc.pix_fmt or "",
            "fps": float(rate) if rate else 0.0,
            "frames": stream.frames or 0,
        }
    finally:
        container.close()


class _PyAVDecoder:
    """Seek-and-decode random access that reproduces a sequential decode."""

    def __init__(self, path: str, threads: int) -> None:
        self.path = path
        self.threads = threads
        self._container = None
        self._frames: Iterator | None = None  # live decode generator
        self._next = -1  # index of the frame the live generator yields next (-1: unknown)
        self._scan()

    def _open(self):
        if self._container is None:
            self._container = _open_container(self.path)
            stream = self._container.streams.video[0]
            stream.codec_context.thread_count = self.threads
            self._frames, self._next = None, -1
        return self._container

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._next = None, None, -1

    def _scan(self) -> None:
        """Index frames by demuxing packets: timestamps, keyframes, pts -> index."""
        container = self._open()
        stream = container.streams.video[0]
        tb = float(stream.time_base or 0)
        pts: list[int | None] = []
        key: list[bool] = []
        try:
            for packet in container.demux(stream):
                if packet.size:
                    pts.append(packet.pts)
                    key.append(packet.is_keyframe)
        except av.error.FFmpegError as e:
            raise VideoReadError(self.path, f"damaged container ({_short(e)})") from e
        self.close()
        self.seekable = bool(pts) and None not in pts and len(set(pts)) == len(pts)
        if self.seekable:
            order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
            sorted_pts = np.asarray(pts, dtype=np.int64)[order]
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            self.keyframes = sorted(int(rank[i]) for i, k in enumerate(key) if k) or [0]
            self.pts = sorted_pts.tolist()
            self.index_of = {p: i for i, p in enumerate(self.pts)}
            self.timestamps = sorted_pts.astype(np.float64) * tb
        else:
            # No usable timestamps: count by decoding once; reads then decode from the start.
            self.timestamps = np.asarray([f.time or 0.0 for f in self._decode_all()], dtype=np.float64)
            self.close()
        if len(self.timestamps) == 0:
            raise VideoReadError(self.path, "video stream has no frames")

    def _decode_all(self) -> Iterator:
        container = self._open()
        try:
            yield from container.decode(container.streams.video[0])
        except av.error.FFmpegError as e:
            raise VideoReadError(self.path, f"decoding failed ({_short(e)})") from e

    def _seek(self, index: int) -> None:
        """Position the decoder so the next frames lead up to ``index``."""
        container = self._open()
        stream = container.streams.video[0]
        if not self.seekable:
            self.close()
            container = self._open()
            self._frames, self._next = self._numbered(self._decode_all()), 0
            return
        k = self.keyframes[bisect.bisect_right(self.keyframes, index) - 1]
        try:
            container.seek(self.pts[k], stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            self.close()  # some containers cannot seek: restart from the top
            container = self._open()
        self._frames, self._next = self._numbered(self._decode_all()), -1

    def _numbered(self, frames: Iterator) -> Iterator:
        if self.seekable:
            for f in frames:
                i = self.index_of.get(f.pts)
                if i is not None:
                    yield i, f
        else:
            yield from enumerate(frames)

    def read(self, indices: list[int], scaled_hw: tuple[int, int] | None) -> np.ndarray:
        """Sorted unique ``indices`` -> uint8 (n, H, W, 3)."""
        out: list[np.ndarray] = []
        for target in indices:
            frame = self._advance_to(target)
            if scaled_hw is None:
                out.append(frame.to_ndarray(format="rgb24"))
            else:
                h, w = scaled_hw
                out.append(
                    frame.reformat(width=w, height=h, format="rgb24", interpolation=_SCALE_INTERPOLATION).to_ndarray()
                )
        return np.stack(out)

    def _advance_to(self, target: int):
        """Decode forward (seeking first when that is shorter) until frame ``target``."""
        for _ in range(2):
            k = self.keyframes[bisect.bisect_right(self.keyframes, target) - 1] if self.seekable else 0
            if self._frames is None or not k <= self._next <= target:
                self._seek(target)
            try:
                for i, frame in self._frames:
                    self._next = i + 1
                    if i == target:
                        return frame
                    if i > target:
                        break
                else:
                    raise VideoReadError(self.path, f"frame {target} missing: the stream ends early")
            except VideoReadError:
                self.close()
                raise
            # The seek landed past the target: this file's keyframe index cannot be
            # trusted, so decode it from the start from now on.
            self.close()
            self.keyframes = [0]
        raise VideoReadError(self.path, f"frame {target} cannot be reached by seeking")


class ImageSequenceReader(_FrameSource):
    """A folder of frames (PNG/JPEG...) read like a video: ``len``, ``fps``, ``size``, ``read``.

    Frame-sequence datasets (Vimeo-90K, REDS, DAVIS) and image folders share the clip
    code of video files through it. JPEGs are decoded at reduced size when shrinking
    (``Image.draft``), the image analogue of scaling during video decoding.
    """

    def __init__(self, files: Sequence[str | os.PathLike], fps: float = 0.0, name: str | None = None) -> None:
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
                raise VideoReadError(self.files[0], f"not a readable image ({_short(e)})") from e
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
                raise VideoReadError(self.files[i], f"not a readable image ({_short(e)})") from e
        return np.stack(out)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Grayscale, palette and alpha images -> RGB (alpha dropped, as for videos)."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode.startswith("I;16"):
        im = Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8))
    return im.convert("RGB")
