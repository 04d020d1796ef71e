"""Random access to video frames with PyAV that reproduces a sequential decode.

:class:`PyAVDecoder` seeks to the anchor (keyframe) before a requested frame and decodes
forward, checking every picture against the file's :class:`~tcvbm.data.frame_index.FrameIndex`
(stored times or picture checksums); when a check fails, that anchor is dropped for an
earlier one, down to decoding from the start. How frames are numbered and why these checks
are needed: :mod:`tcvbm.data.frame_index`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import av
import numpy as np

from tcvbm.data.errors import VideoReadError
from tcvbm.data.frame_index import (
    Anchor,
    FrameIndex,
    index_by_decoding,
    open_container,
    packet_key,
    picture_crc,
    short_error,
)

# A decoder gives a keyframe's picture within a few packets of it (reorder delay, frame
# threads); when it has not after this many, that keyframe is no place to start from.
_ANCHOR_WINDOW = 64
# swscale's area filter averages source pixels when shrinking: antialiased, and fast.
_SCALE_INTERPOLATION = "AREA"


def _carries(labels: np.ndarray, number: int, pts: int | None) -> bool:
    """Whether a picture with time ``pts`` can be frame ``number``."""
    return number < len(labels) and pts is not None and pts == labels[number]


class _Missed(Exception):
    """Decoding from an anchor does not give the pictures a decode from the start gives."""


class _Untrusted(Exception):
    """The container's stored times do not number the decoded pictures."""


class PyAVDecoder:
    """Seek-and-decode random access that reproduces a sequential decode (see the module).

    ``rgb_format``: what frames are converted to, ``"rgb24"`` (uint8) or ``"rgb48le"``
    (uint16, which keeps the samples of a source deeper than 8 bits).
    """

    def __init__(self, path: str, threads: int, index: FrameIndex,
                 rgb_format: str = "rgb24") -> None:
        self.path = path
        self.threads = threads
        self.index = index
        self.rgb_format = rgb_format
        self._container = None
        self._frames: Iterator | None = None  # live (number, frame) generator
        self._from: Anchor | None = None  # the anchor it decodes from
        self._next = -1  # number of the frame it yields next

    def _open(self):
        if self._container is None:
            self._container = open_container(self.path)
            self._container.streams.video[0].codec_context.thread_count = self.threads
        return self._container

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._from, self._next = None, None, None, -1

    def read(self, indices: list[int], scaled_hw: tuple[int, int] | None) -> np.ndarray:
        """Sorted unique ``indices`` -> (n, H, W, 3) in ``rgb_format``."""
        try:
            return self._read(indices, scaled_hw)
        except _Untrusted as e:
            self.close()
            self.index = index_by_decoding(self.path, self.threads)
            self.index.note(self.path, "decoded", f"{e}: frames numbered by decoding it once")
            return self._read(indices, scaled_hw)

    def _read(self, indices: list[int], scaled_hw: tuple[int, int] | None) -> np.ndarray:
        out: list[np.ndarray] = []
        for target in indices:
            frame = self._advance_to(target)
            if scaled_hw is None:
                out.append(frame.to_ndarray(format=self.rgb_format))
            else:
                h, w = scaled_hw
                scaled = frame.reformat(width=w, height=h, format=self.rgb_format,
                                        interpolation=_SCALE_INTERPOLATION)
                out.append(scaled.to_ndarray())
        return np.stack(out)

    def _advance_to(self, target: int):
        """Decode forward (from an anchor first when that is shorter) until frame ``target``."""
        while True:
            anchor = self.index.anchor_for(target)
            start = 0 if anchor is None else anchor.frame
            if self._frames is None or not start <= self._next <= target:
                if anchor is None:
                    self.close()  # from the top: a fresh demuxer, no seek
                self._frames, self._from, self._next = self._decode_from(anchor), anchor, start
            try:
                for number, frame in self._frames:
                    self._next = number + 1
                    if number == target:
                        self._confirm(number, frame)
                        return frame
            except _Missed as e:
                missed = self._from
                self.close()
                if missed in self.index.anchors:  # another reader of the file may have dropped it
                    self.index.anchors.remove(missed)
                self.index.note(self.path, "seek", f"{e}: decoding from earlier keyframes there")
                continue
            except (VideoReadError, _Untrusted):
                self.close()
                raise
            self.close()
            if self.index.labels is not None:
                raise _Untrusted(f"the stream ends before frame {target} of its stored times")
            raise VideoReadError(self.path, f"frame {target} missing: the stream ends early")

    def _confirm(self, number: int, frame: av.VideoFrame) -> None:
        """With a decoded index, a frame decoded from an anchor is returned only when it is
        the picture a decode from the start gives (a decode from the start is one)."""
        pictures = self.index.pictures
        if self._from is None or pictures is None:
            return
        if picture_crc(frame) != pictures[number]:
            raise _Missed(f"decoding from frame {self._from.frame}'s keyframe gives another "
                          f"picture for frame {number} than decoding from the start")

    def _decode_from(self, anchor: Anchor | None) -> Iterator:
        """(number, frame) pairs decoded from ``anchor`` (None: the start of the file)."""
        container = self._open()
        stream = container.streams.video[0]
        if anchor is None:
            packets = container.demux(stream)
        else:
            packets = self._packets_from(container, stream, anchor)
        labels = self.index.labels
        number = 0 if anchor is None else None  # None: the anchor's picture is still to come
        # With stored times, the anchor's picture is held until the picture after it carries
        # its stored time too: the anchor's own time matches by construction.
        held = None
        fed = 0
        try:
            for packet in packets:
                fed += 1
                for frame in packet.decode():
                    if number is None:
                        # From the anchor's packet on, the first key picture is its picture;
                        # the ones before are shown before it (open GOP) and not counted.
                        if not frame.key_frame:
                            continue
                        number = anchor.frame
                    if labels is not None and not _carries(labels, number, frame.pts):
                        raise _Untrusted(f"decoded frame {number} has time {frame.pts}, "
                                         "not the stored one")
                    if held is not None:
                        yield held
                        held = None
                    if labels is not None and anchor is not None and number == anchor.frame:
                        held = number, frame
                    else:
                        yield number, frame
                    number += 1
                if number is None and fed > _ANCHOR_WINDOW:
                    raise _Missed(f"no key picture decoded from frame {anchor.frame}'s keyframe on")
        except av.error.FFmpegError as e:
            raise VideoReadError(self.path, f"decoding failed ({short_error(e)})") from e
        if held is not None:
            yield held
        if anchor is not None:  # the wanted frame was not reached: fewer pictures than from the top
            raise _Missed(f"decoding from frame {anchor.frame}'s keyframe ends at frame {number}")

    def _packets_from(self, container, stream, anchor: Anchor) -> Iterator[av.Packet]:
        """Seek to ``anchor``'s packet; the stream's packets from it on."""
        later = {a.key for a in self.index.anchors if a.frame > anchor.frame}
        for ts in anchor.seek_times:
            try:
                container.seek(ts, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                break
            packets = container.demux(stream)
            for packet in packets:
                if packet.is_keyframe and packet.size:
                    key = packet_key(packet)
                    if key == anchor.key:
                        return itertools.chain([packet], packets)
                    if key in later:
                        break  # landed past it: try an earlier time
                if packet.pos is not None and anchor.pos is not None and packet.pos > anchor.pos:
                    break
        raise _Missed(f"seeking does not reach frame {anchor.frame}'s keyframe")
