"""Writing videos: streaming, atomic, keeping the audio of the source.

Outputs are written to a hidden staging file next to the target and moved into
place (``tcvbm.atomic.AtomicPath``) only when the encoder has been flushed, so a crash
or an exception never leaves a half-written video under the requested name. Frames can
arrive in pieces (the inference pipeline streams windows of any-length videos),
and the audio of ``audio_from`` is copied packet by packet while the video
advances, re-encoded to AAC only when the target container cannot hold it.

Two encodings: H.264 4:2:0 at an x264 ``crf`` (small, plays everywhere), or, ``lossless``,
RGB H.264 at qp 0 (libx264rgb), which decodes to exactly the RGB that was written (a
4:2:0 or even 4:4:4 YUV encode cannot: the RGB -> YUV conversion rounds).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np
import torch

from tcvbm.atomic import AtomicPath
from tcvbm.data.errors import VideoReadError

__all__ = ["VideoWriter", "write_video", "DEFAULT_GOP", "DEFAULT_CRF", "check_crf",
           "fps_fraction"]

# A keyframe every 8 frames: random clips decode about 3x faster than with the
# encoders' default of 250 (see docs/data.md), for a modest size cost.
DEFAULT_GOP = 8
DEFAULT_CRF = 18        # x264 quality: visually lossless for most content
_CRF_MAX = 51           # x264's 8-bit scale runs from 0 (best) to 51 (smallest file)
_H264_NAMES = frozenset({"h264", "libx264", "avc"})
# x264's SIMD macroblock-tree code (its AVX-512 version, here) made the same frames encode to
# different pixels from run to run, even on one thread. cpu-independent runs the portable
# version instead, documented by x264 as giving the same output on every CPU.
_X264_REPRODUCIBLE = {"x264-params": "cpu-independent=1"}
# Lossless RGB encoders, first available wins: (encoder, pixel format, options). H.264 in RGB
# at qp 0 fits MP4, MOV, MKV and AVI and plays wherever FFmpeg does; FFV1 (FFmpeg's own) is
# for builds without x264. At qp 0 x264's presets change only the size and the time: veryfast
# made files no larger than medium's, in 60% of its time.
_LOSSLESS = (("libx264rgb", "rgb24", {"qp": "0", "preset": "veryfast", **_X264_REPRODUCIBLE}),
             ("ffv1", "bgr0", {}))
# Audio codecs each container takes as they are; others are re-encoded to AAC.
_AUDIO_REMUX: dict[str, frozenset[str] | None] = {
    ".mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}),
    ".m4v": frozenset({"aac", "mp3", "alac", "ac3", "eac3"}),
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


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def check_crf(crf: int) -> int:
    """``crf`` itself when it is on x264's scale, else a ``ValueError`` saying what is."""
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= _CRF_MAX:
        raise ValueError(f"crf: expected an integer from 0 (best quality) to {_CRF_MAX} "
                         f"(smallest file), got {crf!r}")
    return crf


def _pick_encoder(codec: str) -> str:
    if _has_encoder(codec):
        return codec
    if codec in _H264_NAMES:
        warnings.warn("no h264 encoder in this FFmpeg build: writing mpeg4 instead",
                      RuntimeWarning, stacklevel=4)
        return "mpeg4"
    raise ValueError(f"codec {codec!r}: no such video encoder in this FFmpeg build")


def _encoding(codec: str, crf: int, lossless: bool) -> tuple[str, str, dict[str, str]]:
    """(encoder, pixel format, encoder options) of a writer."""
    if lossless:
        for name, pix_fmt, options in _LOSSLESS:
            if _has_encoder(name):
                return name, pix_fmt, dict(options)
        raise ValueError("lossless: this FFmpeg build has neither a libx264rgb nor an ffv1 "
                         "encoder")
    codec = _pick_encoder(codec)
    options = ({"crf": str(crf), "preset": "medium", **_X264_REPRODUCIBLE}
               if codec in _H264_NAMES else {})
    return codec, "yuv420p", options


def _as_frames(frames: FrameBatch) -> np.ndarray:
    """One frame (H, W, 3) or a batch (n, H, W, 3) of uint8 -> contiguous (n, H, W, 3) array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a uint8 tensor or array, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be uint8 (n, H, W, 3) or (H, W, 3), got {frames.dtype} "
            f"{tuple(frames.shape)} "
            "(convert [-1, 1] clips with tcvbm.data.to_uint8)"
        )
    return np.ascontiguousarray(frames)


class VideoWriter:
    """Streaming video writer; use as a context manager or call ``close``.

    ``codec``: an FFmpeg encoder name; ``"h264"`` falls back to ``"mpeg4"`` when the
    build has no h264 encoder. ``crf``: x264 quality, 0 to 51 (lower is better; 18 is
    visually lossless). ``lossless``: every frame decodes to exactly the RGB written
    (libx264rgb at qp 0, or FFV1 where the build has no x264); it decides the encoder, so
    ``codec`` and ``crf`` do not apply. ``gop``: keyframe interval. Odd frame sizes are
    padded by one replicated row/column in 4:2:0 (which needs even sizes), kept as they are
    when lossless. With ``audio_from`` the first audio stream of that file is copied,
    trimmed to the video's duration.
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
    ) -> None:
        self.path = os.fspath(path)
        self.fps = fps_fraction(fps)
        if gop < 1:
            raise ValueError(f"gop must be >= 1, got {gop}")
        self.crf, self.gop, self.lossless = check_crf(crf), gop, lossless
        self.codec, self._pix_fmt, self._options = _encoding(codec, crf, lossless)
        self._pads = self._pix_fmt == "yuv420p"   # 4:2:0 needs even sizes
        self.audio_from = None if audio_from is None else os.fspath(audio_from)
        self._ext = os.path.splitext(self.path)[1].lower() or ".mp4"
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
        except ValueError as e:  # the container cannot hold this codec
            option = "lossless: " if self.lossless else ""
            raise ValueError(f"{option}cannot write {self.path!r}: {e}; use .mkv or .mp4") from e
        if self._pads:
            width, height = width + width % 2, height + height % 2
        stream.width, stream.height, stream.pix_fmt = width, height, self._pix_fmt
        stream.codec_context.gop_size = self.gop
        # PyAV opens encoders with slice threads: x264 then cuts each frame into one slice per
        # thread, as many as the CPUs the process may use, so one CPU and two gave different
        # videos. Frame threads give the same pixels for any thread count, and run faster.
        stream.codec_context.thread_type = "FRAME"
        if self._options:
            stream.options = self._options
        elif not self.lossless:  # mpeg4 and friends are rate-controlled: give them ample bits
            stream.bit_rate = int(max(2e6, stream.width * stream.height * float(self.fps) * 0.4))
        self._video = stream
        if self.audio_from is not None:
            self._audio = _AudioCopier(self.audio_from, self._out, self._ext)

    def write(self, frames: FrameBatch) -> None:
        """Append uint8 frames ``(n, H, W, 3)`` (or one ``(H, W, 3)``)."""
        if self.closed:
            raise ValueError(f"writer for {self.path!r} is closed")
        batch = _as_frames(frames)
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
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = 1 / self.fps
            self._out.mux(self._video.encode(frame))
            self.frames_written += 1
        if self._audio is not None:
            self._audio.copy_until(self.frames_written / self.fps)

    def close(self) -> str:
        """Flush, mux the rest of the audio and move the file into place; returns the path."""
        if self.closed:
            return self.path
        try:
            if self._out is None:
                raise ValueError(f"no frames were written to {self.path!r}")
            self._out.mux(self._video.encode(None))
            if self._audio is not None:
                self._audio.copy_until(self.frames_written / self.fps, final=True)
            self._out.close()
            self._out = None
            self._atomic.commit()
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return self.path

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

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            self.abort()


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

    ``options`` go to :class:`VideoWriter` (``crf``, ``gop``, ``lossless``).
    """
    with VideoWriter(path, fps, audio_from=audio_from, codec=codec, **options) as writer:
        if isinstance(frames, (torch.Tensor, np.ndarray)):
            writer.write(frames)
        else:
            for batch in frames:
                writer.write(batch)
    return writer.path
