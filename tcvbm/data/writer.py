"""Writing videos: streaming, atomic, keeping the audio of the source.

Outputs are written to a hidden staging file next to the target and moved into
place (``tcvbm.atomic.AtomicPath``) only when the encoder has been flushed, so a crash
or an exception never leaves a half-written video under the requested name. Frames can
arrive in pieces (the inference pipeline streams windows of any-length videos),
and the audio of ``audio_from`` is copied packet by packet while the video
advances, re-encoded to AAC only when the target container cannot hold it.

The container, codec, encoder and pixel format are chosen from the name, ``codec``, ``crf``,
``lossless`` and the input's depth by :func:`tcvbm.data.encoding.video_encoding`, which
refuses what does not fit before anything is written; the writer encodes with its choice.

An output keeps its input's bit depth and colour tags (:mod:`tcvbm.data.colour`): a writer
given a ``colour`` deeper than 8 bits takes uint16 RGB frames (0..65535) and writes them at
the depth its encoding holds (see :mod:`tcvbm.data.encoding`), with a warning where that is
less than the input's; lossless output never drops bits.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np
import torch

from tcvbm.atomic import AtomicPath
from tcvbm.data.colour import Colour
from tcvbm.data.encoding import DEFAULT_CRF, MPEG4, video_encoding, x265_options
from tcvbm.data.errors import VideoReadError

__all__ = ["FrameWriter", "VideoWriter", "write_video", "as_frames", "DEFAULT_GOP",
           "fps_fraction"]

# A keyframe every 8 frames: random clips decode about 3x faster than with the
# encoders' default of 250 (see docs/data.md), for a modest size cost.
DEFAULT_GOP = 8
# Apple's players open H.265 in MP4 and MOV only under the hvc1 tag; FFmpeg's default is hev1.
_HVC1 = frozenset({".mp4", ".mov"})
# Audio codecs each container takes as they are; others are re-encoded to AAC.
_AUDIO_REMUX: dict[str, frozenset[str] | None] = {
    ".mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}),
    ".mov": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le", "pcm_f32le"}),
    ".mkv": None,  # Matroska holds anything
    ".avi": frozenset({"mp3", "ac3", "pcm_s16le", "aac"}),
}

FrameBatch = torch.Tensor | np.ndarray


def fps_fraction(fps: float | Fraction) -> Fraction:
    """fps as a small fraction (29.97 -> 30000/1001), the form container time bases need."""
    if isinstance(fps, Fraction) and fps > 0:
        return fps
    if (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not np.isfinite(fps)
            or fps <= 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def as_frames(frames: FrameBatch, dtype: type = np.uint8) -> np.ndarray:
    """One frame (H, W, 3) or a batch (n, H, W, 3) of ``dtype`` (uint8, or uint16 for an
    output deeper than 8 bits) -> contiguous (n, H, W, 3) array."""
    want = np.dtype(dtype)
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a {want} tensor or array, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != want or frames.ndim != 4 or frames.shape[-1] != 3:
        if frames.dtype in (np.uint8, np.uint16) and frames.dtype != want:
            hint = (f"this output was opened for {want} frames: its colour's depth "
                    f"(tcvbm.data.colour.Colour, a reader's .colour) says which")
        else:
            hint = "convert [-1, 1] clips with tcvbm.data.to_uint8 or to_pixels"
        raise ValueError(f"frames must be {want} (n, H, W, 3) or (H, W, 3), got {frames.dtype} "
                         f"{tuple(frames.shape)} ({hint})")
    return np.ascontiguousarray(frames)


def _narrowed(samples: np.ndarray, depth: int) -> np.ndarray:
    """uint16 samples on the 0..65535 scale rounded to ``depth`` bits (0..2**depth - 1).

    FFmpeg narrows by dropping the low bits, which lowers a sample by up to a level; rounding
    keeps each within half a level, and gives back exactly the samples of a ``depth``-bit
    picture that FFmpeg widened (by repeating the high bits) when it was read.
    """
    return np.rint(samples.astype(np.float32) * (((1 << depth) - 1) / 65535)).astype(np.uint16)


class FrameWriter(ABC):
    """A streaming output of frames: ``write`` batches, then ``close`` puts the output in place
    (returning its path) or ``abort`` drops it, leaving the target as it was.

    As a context manager it closes when the body returns and aborts when it raises (Ctrl-C
    included), so a failed command leaves nothing half-written. ``path`` names the output and
    ``frames_written`` counts the frames so far.
    """

    path: str
    frames_written: int
    closed: bool

    @abstractmethod
    def write(self, frames: FrameBatch) -> None:
        """Append uint8 frames ``(n, H, W, 3)`` (or one ``(H, W, 3)``)."""

    def close(self) -> str:
        """Finish the output and move it into place; returns the path. On any failure the
        output is aborted first, so nothing half-written stays behind."""
        if self.closed:
            return self.path
        try:
            if not self.frames_written:
                raise ValueError(f"no frames were written to {self.path!r}")
            self._finish()
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return self.path

    @abstractmethod
    def _finish(self) -> None:
        """Complete the staged output and put it in place (:meth:`close` handles failure)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written so far; the target is left untouched."""

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            self.abort()


class VideoWriter(FrameWriter):
    """Streaming video writer; use as a context manager or call ``close``.

    ``codec``: one of :data:`~tcvbm.data.encoding.CODECS`; ``"h264"`` falls back to
    ``"mpeg4"`` when the build has no x264. ``crf``: x264/x265 quality, 0 to 51 (lower is
    better; 18 is visually lossless for x264). ``lossless``: every frame decodes to exactly
    the RGB written (libx264rgb at qp 0, or FFV1 where the build has no x264); ``crf`` then
    does not apply, nor to FFV1, which is always lossless. The container is the extension's,
    checked with ``codec`` by :func:`~tcvbm.data.encoding.video_encoding` here, before
    anything is written. ``gop``: keyframe interval. Odd frame sizes are padded by one
    replicated row/column in 4:2:0 (which needs even sizes), kept as they are by the RGB
    encodings. With ``audio_from`` the first audio stream of that file is copied, trimmed to
    the video's duration.
    ``colour``: the input's bit depth and colour tags (default: 8-bit, untagged), which the
    output keeps (see the module); frames are uint16 when it is deeper than 8 bits.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        audio_from: str | os.PathLike | None = None,
        codec: str = "h264",
        crf: int = DEFAULT_CRF,
        gop: int = DEFAULT_GOP,
        lossless: bool = False,
        colour: Colour | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.fps = fps_fraction(fps)
        if gop < 1:
            raise ValueError(f"gop must be >= 1, got {gop}")
        self.colour = colour or Colour()
        self.encoding = video_encoding(self.path, codec, crf, lossless, self.colour.depth)
        if self.encoding.encoder == MPEG4:
            warnings.warn("no h264 encoder in this FFmpeg build: writing mpeg4 instead",
                          RuntimeWarning, stacklevel=3)
        if self.encoding.depth < self.colour.depth:
            warnings.warn(f"{self.encoding.encoder} in this FFmpeg build writes at most "
                          f"{self.encoding.depth} bits: the {self.colour.depth}-bit input is "
                          f"written at {self.encoding.depth} bits ({self.path}); codec ffv1 "
                          "keeps them all", RuntimeWarning, stacklevel=3)
        self.crf, self.gop, self.lossless = crf, gop, self.encoding.exact
        self.codec = self.encoding.encoder
        self._pads = not self.encoding.rgb   # 4:2:0 needs even sizes
        self._dtype = np.uint16 if self.colour.deep else np.uint8
        self.audio_from = None if audio_from is None else os.fspath(audio_from)
        self._ext = os.path.splitext(self.path)[1].lower()
        # FFmpeg picks the container by the staged name's extension, hence suffix=
        self._atomic = AtomicPath(self.path, suffix=self._ext)
        self._out = None
        self._video = None
        self._audio: _AudioCopier | None = None
        self._shape: tuple[int, int] | None = None
        self.frames_written = 0
        self.closed = False

    def _start(self, height: int, width: int) -> None:
        try:
            self._out = av.open(str(self._atomic.staged), "w")
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot write video {self.path!r}: {e}") from e
        try:
            stream = self._out.add_stream(self.codec, rate=self.fps)
        except ValueError as e:  # a build whose muxer disagrees with CONTAINERS
            raise ValueError(f"cannot write {self.path!r}: {e}") from e
        if self._pads:
            width, height = width + width % 2, height + height % 2
        stream.width, stream.height, stream.pix_fmt = width, height, self.encoding.pix_fmt
        self.colour.tag(stream.codec_context, self.encoding.rgb)
        stream.codec_context.gop_size = self.gop
        if self.encoding.codec == "h265" and self._ext in _HVC1:
            stream.codec_context.codec_tag = "hvc1"
        # PyAV opens encoders with slice threads: x264 then cuts each frame into one slice per
        # thread, as many as the CPUs the process may use, so one CPU and two gave different
        # videos. Frame threads give the same pixels for any thread count, and run faster.
        stream.codec_context.thread_type = "FRAME"
        if self.encoding.encoder == MPEG4:   # rate-controlled: give it ample bits
            stream.bit_rate = int(max(2e6, stream.width * stream.height * float(self.fps) * 0.4))
        elif self.encoding.codec == "h265":
            stream.options = x265_options(self.encoding.options, height, width, self.path)
        elif self.encoding.options:
            stream.options = self.encoding.options
        self._video = stream
        if self.audio_from is not None:
            self._audio = _AudioCopier(self.audio_from, self._out, self._ext)

    def write(self, frames: FrameBatch) -> None:
        if self.closed:
            raise ValueError(f"writer for {self.path!r} is closed")
        batch = as_frames(frames, self._dtype)
        h, w = batch.shape[1:3]
        if self._shape is None:
            self._shape = (h, w)
            self._start(h, w)
        elif self._shape != (h, w):
            raise ValueError(f"frame size changed from {self._shape} to {(h, w)} while writing "
                             f"{self.path!r}")
        if self._pads and (h % 2 or w % 2):
            batch = np.pad(batch, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for array in batch:
            frame = self._frame(array)
            frame.pts = self.frames_written
            frame.time_base = 1 / self.fps
            self._out.mux(self._video.encode(frame))
            self.frames_written += 1
        if self._audio is not None:
            self._audio.copy_until(self.frames_written / self.fps)

    def _frame(self, array: np.ndarray) -> av.VideoFrame:
        """One RGB frame for the encoder, tagged with the output's matrix and range: FFmpeg
        converts it to the encoder's pixel format with those."""
        if array.dtype == np.uint8:
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        elif self.encoding.rgb and self.encoding.depth > 8:   # rounded here, not truncated
            frame = av.VideoFrame.from_ndarray(_narrowed(array, self.encoding.depth),
                                               format=self.encoding.pix_fmt)
        else:
            frame = av.VideoFrame.from_ndarray(array, format="rgb48le")
        self.colour.tag(frame, self.encoding.rgb)
        return frame

    def _finish(self) -> None:
        """Flush, mux the rest of the audio and move the file into place."""
        self._out.mux(self._video.encode(None))
        if self._audio is not None:
            self._audio.copy_until(self.frames_written / self.fps, final=True)
        self._out.close()
        self._out = None
        self._atomic.commit()

    def abort(self) -> None:
        """Drop everything written so far; the target path is left untouched."""
        self.closed = True
        for resource in (self._audio, self._out):
            try:
                if resource is not None:
                    resource.close()
            except Exception:  # already failing: cleaning up must not mask the cause
                pass
        self._audio = self._out = None
        self._atomic.discard()


class _AudioCopier:
    """Moves the audio of a source file into an output container as the video advances.

    A source without audio is not an error: "copy the audio, if any" is what every caller
    that passes an input video through means, so the output is then simply silent.
    """

    def __init__(self, source: str, out, ext: str) -> None:
        try:
            self._in = av.open(source, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise VideoReadError(source, f"cannot open it to copy its audio ({e})") from e
        self._stream = self._in.streams.audio[0] if self._in.streams.audio else None
        self._packets: Iterator | None = None
        self._pending = None
        if self._stream is None:
            return
        codec = self._stream.codec_context.name
        allowed = _AUDIO_REMUX.get(ext, frozenset({"aac", "mp3"}))
        self._remux = allowed is None or codec in allowed
        if self._remux:
            self._out_stream = out.add_stream_from_template(self._stream)
        else:
            self._out_stream = out.add_stream("aac", rate=self._stream.rate or 48000)
            self._resampler = av.AudioResampler(format="fltp", layout=self._stream.layout.name,
                                                rate=self._out_stream.rate)
        self._out = out
        self._packets = self._in.demux(self._stream)

    def copy_until(self, seconds: float, final: bool = False) -> None:
        """Mux source audio up to ``seconds`` (the video's end); ``final`` flushes."""
        if self._packets is None:
            return
        for packet in self._next_packets(seconds):
            if self._remux:
                packet.stream = self._out_stream
                self._out.mux(packet)
            else:
                for frame in packet.decode():
                    self._encode(frame)
        if final:
            if not self._remux:
                self._encode(None)
            self._packets = None

    def _encode(self, frame) -> None:
        frames = self._resampler.resample(frame) if frame is not None else [None]
        for f in frames:
            if f is not None:
                f.pts = None
            self._out.mux(self._out_stream.encode(f))

    def _next_packets(self, seconds: float) -> Iterable:
        tb = self._stream.time_base
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                self._packets = iter(())
                return
            if packet.size == 0 or packet.pts is None:
                continue
            if packet.pts * tb >= seconds:
                self._pending = packet
                return
            yield packet

    def close(self) -> None:
        self._in.close()


def write_video(
    frames: FrameBatch | Iterable[FrameBatch],
    path: str | os.PathLike,
    fps: float | Fraction,
    audio_from: str | os.PathLike | None = None,
    codec: str = "h264",
    **options,
) -> str:
    """Write uint8 frames (a ``(n, H, W, 3)`` tensor/array or an iterable of such
    batches or single frames, consumed lazily) to ``path`` atomically; returns the path.

    ``codec`` and ``options`` go to :class:`VideoWriter` (``crf``, ``gop``, ``lossless``,
    ``colour``).
    """
    with VideoWriter(path, fps, audio_from=audio_from, codec=codec, **options) as writer:
        if isinstance(frames, (torch.Tensor, np.ndarray)):
            writer.write(frames)
        else:
            for batch in frames:
                writer.write(batch)
    return writer.path
