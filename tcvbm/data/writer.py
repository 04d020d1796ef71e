"""Writing videos: streaming, atomic, keeping the audio of the source.

Outputs are written to a hidden staging file next to the target and moved into
place (``tcvbm.atomic.AtomicPath``) only when the encoder has been flushed, so a crash
or an exception never leaves a half-written video under the requested name. Frames can
arrive in pieces (the inference pipeline streams windows of any-length videos),
and the audio of ``audio_from`` is copied packet by packet while the video
advances, re-encoded to AAC only when the target container cannot hold it.
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

__all__ = ["VideoWriter", "write_video", "DEFAULT_GOP", "fps_fraction"]

# A keyframe every 8 frames: random clips decode about 3x faster than with the
# encoders' default of 250 (see docs/data.md), for a modest size cost.
DEFAULT_GOP = 8
_H264_NAMES = frozenset({"h264", "libx264", "avc"})
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
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def _pick_encoder(codec: str) -> str:
    if _has_encoder(codec):
        return codec
    if codec in _H264_NAMES:
        warnings.warn("no h264 encoder in this FFmpeg build: writing mpeg4 instead", RuntimeWarning, stacklevel=3)
        return "mpeg4"
    raise ValueError(f"codec {codec!r}: no such video encoder in this FFmpeg build")


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
            f"frames must be uint8 (n, H, W, 3) or (H, W, 3), got {frames.dtype} {tuple(frames.shape)} "
            "(convert [-1, 1] clips with tcvbm.data.to_uint8)"
        )
    return np.ascontiguousarray(frames)


class VideoWriter:
    """Streaming video writer; use as a context manager or call ``close``.

    ``codec``: an FFmpeg encoder name; ``"h264"`` falls back to ``"mpeg4"`` when the
    build has no h264 encoder. ``crf``: x264 quality (lower is better; 18 is visually
    lossless). ``gop``: keyframe interval. Odd frame sizes are padded by one
    replicated row/column (4:2:0 needs even sizes). With ``audio_from`` the first
    audio stream of that file is copied, trimmed to the video's duration.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        audio_from: str | os.PathLike | None = None,
        codec: str = "h264",
        crf: int = 18,
        gop: int = DEFAULT_GOP,
    ) -> None:
        self.path = os.fspath(path)
        self.fps = fps_fraction(fps)
        if gop < 1:
            raise ValueError(f"gop must be >= 1, got {gop}")
        self.codec = _pick_encoder(codec)
        self.crf, self.gop = crf, gop
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
        stream = self._out.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = self.gop
        if self.codec in _H264_NAMES:
            stream.options = {"crf": str(self.crf), "preset": "medium"}
        else:  # mpeg4 and friends are rate-controlled: give them ample bits
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
            raise ValueError(f"frame size changed from {self._shape} to {(h, w)} while writing {self.path!r}")
        if h % 2 or w % 2:
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
            self._resampler = av.AudioResampler(format="fltp", layout=self._stream.layout.name, rate=self._out_stream.rate)
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

    ``options`` go to :class:`VideoWriter` (``crf``, ``gop``).
    """
    with VideoWriter(path, fps, audio_from=audio_from, codec=codec, **options) as writer:
        if isinstance(frames, (torch.Tensor, np.ndarray)):
            writer.write(frames)
        else:
            for batch in frames:
                writer.write(batch)
    return writer.path
