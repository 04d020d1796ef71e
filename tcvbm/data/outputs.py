"""Where a command's frames go: a video file, or a folder of numbered PNG frames.

``out.mp4`` (``.mkv``, ``.mov``, ``.avi``) is a video (:class:`tcvbm.data.writer.VideoWriter`,
its container from the name). ``DIR/`` (a trailing slash, or a folder that exists) or a printf
pattern such as ``frames_%06d.png`` is an image sequence: one PNG per frame, numbered from 0,
``%06d.png`` inside ``DIR``. PNG is lossless (the frames come back bit for bit) and is what
video editors import as a sequence; it holds no frame rate and no audio. Frames of an input
deeper than 8 bits are 16-bit PNGs (the 0..65535 samples the commands work on). FFmpeg's PNG
encoder writes them all, and puts a tagged input's primaries and transfer in the colour
chunks (``cICP``, with ``cHRM`` and ``gAMA`` where those can say them).

:func:`resolve_output` checks a target without writing anything, so the commands refuse a
name, codec or container that does not fit before they load a model or read a frame.
Frames are staged and put in place only when the command succeeds, like a video: a new
folder is written beside its target and renamed into place whole; frames that join an
existing folder are staged in a hidden folder inside it and moved in when complete. Files
already in the folder are never replaced or removed: names the pattern would write are an
error, other files stay as they are.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tcvbm.atomic import AtomicPath
from tcvbm.data.colour import Colour
from tcvbm.data.encoding import CONTAINERS, DEFAULT_CRF, Encoding, video_encoding
from tcvbm.data.errors import VideoReadError
from tcvbm.data.writer import FrameBatch, FrameWriter, VideoWriter, as_frames

__all__ = ["SEQUENCE_NAME", "OutputTarget", "resolve_output", "ImageSequenceWriter",
           "open_output"]

SEQUENCE_NAME = "%06d.png"      # the frames' names inside a DIR/ output
# A frame pattern: one integer conversion (%d, %6d, %06d) in the file name, PNG only.
_PATTERN = re.compile(r"(?P<head>[^%]*)%0?\d*d(?P<tail>[^%]*)")


@dataclass(frozen=True)
class OutputTarget:
    """A checked output: a video with its ``encoding``, or PNG frames named by ``pattern``."""

    path: str
    encoding: Encoding | None = None
    pattern: Path | None = None


def _sequence_pattern(output: str) -> Path | None:
    """The frame pattern an output names (``DIR/%06d.png`` for a folder), None for a video."""
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        return path / SEQUENCE_NAME
    if "%" not in path.name:
        return None
    match = _PATTERN.fullmatch(path.name)
    if match is None:
        raise ValueError(f"output {output!r}: a frame pattern holds one integer conversion "
                         "such as %06d (for example frames_%06d.png)")
    if not match["tail"].lower().endswith(".png"):
        raise ValueError(f"output {output!r}: image sequences are PNG; end the pattern with "
                         ".png (for example frames_%06d.png)")
    return path


def _taken(pattern: Path) -> list[str]:
    """Names in the pattern's folder that the pattern could write (any frame number)."""
    folder = pattern.parent
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise ValueError(f"output {pattern}: {folder} exists and is not a folder")
    match = _PATTERN.fullmatch(pattern.name)
    names = re.compile(re.escape(match["head"]) + r"\d+" + re.escape(match["tail"]))
    return sorted(name for name in os.listdir(folder) if names.fullmatch(name))


def _check_free(pattern: Path) -> None:
    taken = _taken(pattern)
    if taken:
        raise ValueError(f"output {pattern}: {pattern.parent} already holds {len(taken)} "
                         f"frame file(s) named like {pattern.name} (first {taken[0]}); frames "
                         "are never written over: move them or choose another folder")


def resolve_output(output: str | os.PathLike, codec: str | None = None,
                   crf: int = DEFAULT_CRF, lossless: bool = False,
                   colour: Colour | None = None) -> OutputTarget:
    """Check ``output`` as a target and say what it is; a ``ValueError`` when it cannot be.

    A video takes ``codec`` (default h264), ``crf`` and ``lossless``, checked against its
    container (:func:`tcvbm.data.encoding.video_encoding`) for frames of ``colour``'s depth (the
    input's; 8 bits by default). An image sequence takes no codec (``crf`` and ``lossless``
    do not apply: PNG is lossless), and its folder must not hold files the pattern would
    write.
    """
    text = os.fspath(output)
    pattern = _sequence_pattern(text)
    if pattern is None:
        if Path(text).suffix.lower() not in CONTAINERS:
            raise ValueError(f"output {text!r}: expected a video ({', '.join(CONTAINERS)}) or "
                             "PNG frames (DIR/ or a pattern such as frames_%06d.png)")
        depth = (colour or Colour()).depth
        return OutputTarget(text, encoding=video_encoding(text, codec or "h264", crf, lossless,
                                                          depth))
    if codec is not None:
        raise ValueError(f"codec: output {text!r} is a sequence of PNG frames; a codec "
                         f"({codec}) is for video outputs")
    _check_free(pattern)
    return OutputTarget(text, pattern=pattern)


def _has_audio(path: str | os.PathLike) -> bool:
    try:
        with av.open(os.fspath(path), metadata_errors="ignore") as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError as e:
        raise VideoReadError(path, f"cannot open it to look for audio ({e})") from e


def _png(frame: np.ndarray, colour: Colour) -> bytes:
    """One RGB frame (uint8, or uint16 for a 16-bit PNG) as a PNG file tagged with ``colour``."""
    deep = frame.dtype == np.uint16
    picture = av.VideoFrame.from_ndarray(frame, format="rgb48le" if deep else "rgb24")
    colour.tag(picture, rgb=True)
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height = picture.width, picture.height
    encoder.pix_fmt = "rgb48be" if deep else "rgb24"
    return b"".join(bytes(packet) for packet in encoder.encode(picture) + encoder.encode(None))


class ImageSequenceWriter(FrameWriter):
    """Streams frames to PNG files named by ``pattern`` (``pattern % i``, ``i`` from 0).

    ``audio_from`` is the input whose audio a video would copy: an image sequence cannot hold
    it, so one warning says so when it has audio. ``colour``: the input's depth and colour
    tags; deeper than 8 bits, frames are uint16 and written as 16-bit PNGs.
    """

    def __init__(self, pattern: str | os.PathLike,
                 audio_from: str | os.PathLike | None = None,
                 colour: Colour | None = None) -> None:
        self.pattern = Path(pattern)
        self.path = os.fspath(pattern)
        self.colour = colour or Colour()
        _check_free(self.pattern)
        if audio_from is not None and _has_audio(audio_from):
            warnings.warn(f"{os.fspath(audio_from)}: its audio is not written; an image "
                          f"sequence ({self.path}) holds frames only", UserWarning, stacklevel=3)
        folder = self.pattern.parent
        self._atomic = AtomicPath(folder / "frames" if folder.is_dir() else folder,
                                  directory=True)
        self.frames_written = 0
        self.closed = False

    def write(self, frames: FrameBatch) -> None:
        if self.closed:
            raise ValueError(f"writer for {self.path!r} is closed")
        for array in as_frames(frames, np.uint16 if self.colour.deep else np.uint8):
            name = self.pattern.name % self.frames_written
            (self._atomic.staged / name).write_bytes(_png(array, self.colour))
            self.frames_written += 1

    def _finish(self) -> None:
        """Put the frames in place: all at once in a new folder, or moved into an existing one."""
        if self.pattern.parent.exists():   # also when it appeared while writing
            self._move_in()
        else:
            self._atomic.commit()

    def _move_in(self) -> None:
        """Move the staged frames into the existing folder; none stay there if one fails."""
        _check_free(self.pattern)        # a file may have appeared while the frames were made
        folder, moved = self.pattern.parent, []
        try:
            for name in sorted(os.listdir(self._atomic.staged)):
                os.replace(self._atomic.staged / name, folder / name)
                moved.append(folder / name)
        except BaseException:
            for path in moved:
                path.unlink(missing_ok=True)
            raise
        self._atomic.discard()

    def abort(self) -> None:
        self.closed = True
        self._atomic.discard()


def open_output(output: str | os.PathLike, fps: float | Fraction,
                audio_from: str | os.PathLike | None = None, codec: str | None = None,
                crf: int = DEFAULT_CRF, lossless: bool = False,
                colour: Colour | None = None) -> FrameWriter:
    """The writer of ``output`` (see :func:`resolve_output`): a video at ``fps`` with the audio
    of ``audio_from``, or PNG frames, keeping the depth and colour tags of ``colour``."""
    target = resolve_output(output, codec, crf, lossless, colour)
    if target.pattern is not None:
        return ImageSequenceWriter(target.pattern, audio_from, colour)
    return VideoWriter(target.path, fps, audio_from=audio_from, codec=codec or "h264", crf=crf,
                       lossless=lossless, colour=colour)
