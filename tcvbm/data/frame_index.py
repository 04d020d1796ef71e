"""Which frame is which: numbering a video's frames and seeking to them with PyAV.

Frame ``i`` is the ``i``-th picture a sequential PyAV decode yields. Random access seeks
to a keyframe and decodes forward, so it needs, per keyframe, the number of the picture
decoded from it, a way to find that keyframe's packet again after a seek, and a check
that decoding from there gives the pictures a decode from the start gives. Timestamps
alone provide none of these in every container:

* AVI stores no presentation times (FFmpeg guesses them from the picture types), and most
  MPEG-PS pictures carry none; the MPEG-PS guesses differ after a seek.
* AVI, MPEG-TS and MPEG-PS seek on decode times, so seeking to a keyframe's presentation
  time can land on a later keyframe (or, in MPEG-TS, on no keyframe at all).
* DivX-style packed B-frames put two pictures in one packet and a few-byte placeholder in
  another: packets and pictures do not pair up, the decoder labels pictures with other
  packets' times, and after a seek to a keyframe it drops pictures a decode from the
  start shows.

So frames are numbered by counting from *anchors*. An anchor is a keyframe packet, found
again after a seek by its size and checksum whatever timestamps the demuxer gives it,
with the number of its picture: the first key picture decoded from that packet on. The
index comes

* from the times the container stores (demuxing only, no decoding) where every packet
  can be taken to show one picture: each has a distinct stored time, none (in MPEG-4
  Part 2, the one codec with placeholders) is small
  enough to be a placeholder (nothing but a decode tells one that shows no picture from
  a tiny picture), and the stream starts at a keyframe that no later-decoded picture is
  shown before (a file cut mid-GOP starts with pictures the decoder drops). Every decoded
  picture must then carry the stored time of its number (an anchor's picture is returned
  only once the picture after it does too, its own time matching by construction); one
  that does not shows that those times do not number the pictures, and the file is
  indexed by decoding instead;
* otherwise from one sequential decode, which records a checksum of every picture. A
  frame decoded after a seek is returned only when its checksum is that picture's;
  otherwise decoding from that keyframe is not decoding from the start, and the keyframe
  is dropped for an earlier one, down to decoding from the start of the file.

Each fallback is logged once per file, at debug level.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import re
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

import av
import numpy as np

from tcvbm.data.colour import Colour
from tcvbm.data.errors import VideoReadError

_log = logging.getLogger(__name__)

# Indexes kept per process: datasets reopen readers, and a decoded index costs a decode.
_CACHE_SIZE = 64
# FFmpeg's MAX_NVOP_SIZE: the largest MPEG-4 not-coded VOP its decoder and unpacking
# filter take for a placeholder. A packet this small may show no picture, so its stored
# time may number nothing: such files are numbered by decoding. Only MPEG-4 Part 2 has
# them; in other codecs (H.264, VP8/9, ...) a tiny packet is a real picture (a static one).
_PLACEHOLDER_BYTES = 19
_PLACEHOLDER_CODECS = frozenset({"mpeg4"})
# Keyframes whose seeks are tried before trusting decord with a file.
_SEEK_PROBES = 16
_DECORD_PREFIX = re.compile(r"(\[[0-9:]+\] \S+:\d+: )+")


def short_error(error: BaseException) -> str:
    """First line of an error, without decord's ``[time] file.cc:line:`` prefixes."""
    text = str(error).strip().splitlines()
    line = _DECORD_PREFIX.sub("", text[0]) if text else ""
    return (line or type(error).__name__)[:300]


def open_container(path: str, stored_times_only: bool = False):
    """Open ``path`` for reading its first video stream.

    ``stored_times_only``: timestamps exactly as the container stores them (FFmpeg's
    ``nofillin``), so a frame without a stored time has ``pts`` None instead of a guess.
    """
    options = {"fflags": "nofillin"} if stored_times_only else None
    try:
        container = av.open(path, metadata_errors="ignore", container_options=options)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoReadError(path, f"not a readable media file ({short_error(e)})") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "contains no video stream")
    return container


@dataclass(frozen=True)
class Anchor:
    """A keyframe packet decoding can start from, and the number of its picture."""

    frame: int  # number of the keyframe's picture
    key: tuple[int, int]  # packet size and CRC-32: the packet, whatever its timestamps
    pos: int | None  # byte offset, where the demuxer reports one
    pts: int | None
    dts: int | None
    decode_pos: int  # packets of the stream before it

    @property
    def seek_times(self) -> list[int]:
        """Times to seek to, latest first: the presentation time lands on the keyframe
        where the demuxer seeks on those; the earlier decode time where it seeks on those."""
        return sorted({t for t in (self.pts, self.dts) if t is not None}, reverse=True)


@dataclass(frozen=True)
class Header:
    """What the video stream's header says (no decoding)."""

    size: tuple[int, int]  # (H, W)
    pix_fmt: str
    fps: float  # nominal; 0 when the header does not say
    colour: Colour  # bit depth and colour tags, which an output of the video keeps


def _header(path: str, stream) -> Header:
    cc = stream.codec_context
    if not cc.width or not cc.height:
        raise VideoReadError(path, "video stream has no frame size")
    rate = stream.average_rate or stream.guessed_rate
    return Header((cc.height, cc.width), cc.pix_fmt or "", float(rate) if rate else 0.0,
                  Colour.of(cc))


@dataclass
class FrameIndex:
    """A video's frames in decode-output order and the keyframes decoding can start from."""

    header: Header
    times: np.ndarray  # seconds, per frame
    anchors: list[Anchor]  # sorted by frame
    # Container index: the stored time of each frame, which its decoded picture must carry.
    labels: np.ndarray | None
    # Decoded index: CRC-32 of each picture, which a frame decoded after a seek must have.
    pictures: np.ndarray | None
    # What decord assumes: frame i is the packet with the i-th smallest timestamp, and
    # seeking to a keyframe's presentation time lands on it (only known for files whose
    # keyframes are numbered by their position among the packets; False for others).
    packet_order: bool
    seeks_land: bool
    noted: set[str] = field(default_factory=set)

    def note(self, path: str, kind: str, message: str) -> None:
        """Log a fallback at debug level, once per kind and file."""
        if kind not in self.noted:
            self.noted.add(kind)
            _log.debug("%s: %s", path, message)

    def anchor_for(self, frame: int) -> Anchor | None:
        """The latest anchor at or before ``frame`` (None: decode from the start)."""
        i = bisect.bisect_right(self.anchors, frame, key=lambda a: a.frame)
        return self.anchors[i - 1] if i else None


def packet_key(packet: av.Packet) -> tuple[int, int]:
    return packet.size, zlib.crc32(packet)


def _anchor(packet: av.Packet, frame: int, decode_pos: int) -> Anchor:
    return Anchor(frame, packet_key(packet), packet.pos, packet.pts, packet.dts, decode_pos)


def _numbered(anchor: Anchor, frame: int) -> Anchor:
    return Anchor(frame, anchor.key, anchor.pos, anchor.pts, anchor.dts, anchor.decode_pos)


def container_index(path: str) -> FrameIndex | None:
    """Index from the presentation times the container stores, by demuxing only.

    None unless every packet can be taken to show one picture (see the module): only a
    decode can number other files. Packets the demuxer marks for discarding (before an
    MP4 edit list's start) are decoded but show nothing.
    """
    container = open_container(path, stored_times_only=True)
    try:
        stream = container.streams.video[0]
        header = _header(path, stream)
        pts: list[int] = []
        keyframes: list[Anchor] = []
        start: int | None = None  # stored time of the first packet, a keyframe
        tiny = _PLACEHOLDER_BYTES if stream.codec_context.name in _PLACEHOLDER_CODECS else 0
        for n, packet in enumerate(container.demux(stream)):
            if not packet.size:
                continue
            if start is None:
                if not packet.is_keyframe or packet.pts is None:
                    return None
                start = packet.pts
            if packet.is_discard:
                continue
            if packet.pts is None or packet.pts < start or packet.size <= tiny:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(_anchor(packet, -1, n))
        labels = np.sort(np.asarray(pts, dtype=np.int64))
        if np.any(np.diff(labels) == 0):
            return None
        anchors = [_numbered(a, int(np.searchsorted(labels, a.pts))) for a in keyframes]
        anchors.sort(key=lambda a: a.frame)
        times = labels * float(stream.time_base or 0)
        land = _seeks_land(container, stream, anchors)
    except av.error.FFmpegError as e:
        raise VideoReadError(path, f"damaged container ({short_error(e)})") from e
    finally:
        container.close()
    return FrameIndex(header, times, anchors, labels, None, True, land)


def picture_crc(frame: av.VideoFrame) -> int:
    """CRC-32 of a decoded picture's pixels, in its own format where PyAV exports it."""
    try:
        pixels = frame.to_ndarray()
    except ValueError:  # a format PyAV does not export as is
        pixels = frame.to_ndarray(format="rgb24")
    return zlib.crc32(np.ascontiguousarray(pixels))


def decoded_index(path: str, threads: int) -> FrameIndex:
    """Index by one sequential decode: frame ``i`` is the ``i``-th picture decoded.

    Key pictures come out in the order of the keyframe packets they are decoded from
    (an open GOP's leading pictures are not key pictures), so the ``j``-th key picture
    is the ``j``-th keyframe's. Without that pairing there are no anchors and every read
    decodes from the start.
    """
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        header = _header(path, stream)
        stream.codec_context.thread_count = threads
        keyframes: list[Anchor] = []
        packet_pts: list[int | None] = []
        labels: list[int | None] = []
        crcs: list[int] = []
        key_pictures: list[int] = []
        for n, packet in enumerate(container.demux(stream)):
            if packet.size:
                packet_pts.append(packet.pts)
                if packet.is_keyframe and not packet.is_discard:  # a discarded one shows nothing
                    keyframes.append(_anchor(packet, -1, n))
            for frame in packet.decode():
                if frame.key_frame:
                    key_pictures.append(len(labels))
                labels.append(frame.pts)
                crcs.append(picture_crc(frame))
        paired = len(keyframes) == len(key_pictures)
        anchors = [_numbered(a, f) for a, f in zip(keyframes, key_pictures)] if paired else []
        distinct = None not in labels and len(set(labels)) == len(labels)
        in_order = distinct and None not in packet_pts and sorted(packet_pts) == labels
        land = in_order and _seeks_land(container, stream, anchors)
        tb = float(stream.time_base or 0)
    except av.error.FFmpegError as e:
        raise VideoReadError(path, f"decoding failed ({short_error(e)})") from e
    finally:
        container.close()
    if distinct and tb > 0:
        times = np.sort(np.asarray(labels, dtype=np.int64)) * tb
    else:  # nominal times
        times = np.arange(len(labels), dtype=np.float64) / (header.fps or 1.0)
    pictures = np.asarray(crcs, dtype=np.uint32)
    index = FrameIndex(header, times, anchors, None, pictures, in_order, land)
    if not paired:
        index.note(path, "seek", f"its {len(keyframes)} keyframe packets decode to "
                   f"{len(key_pictures)} key pictures: every read decodes from the start")
    return index


_CACHE: OrderedDict[tuple, FrameIndex] = OrderedDict()
_CACHE_LOCK = threading.Lock()  # datasets index files from a thread pool


def _file_id(path: str) -> tuple:
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


def frame_index(path: str, threads: int) -> FrameIndex:
    """The index of ``path``: from the container's stored times where they can number the
    frames (:func:`container_index`), else by decoding once. Kept per process, keyed by
    path, size and modification time."""
    fid = _file_id(path)
    with _CACHE_LOCK:
        index = _CACHE.get(fid)
    if index is None:
        index = container_index(path)
        if index is None:
            index = decoded_index(path, threads)
            index.note(path, "decoded", "the container does not store a distinct presentation "
                       "time for every picture: frames numbered by decoding it once")
    _remember(fid, index)
    if len(index.times) == 0:
        raise VideoReadError(path, "video stream has no frames")
    return index


def _remember(fid: tuple, index: FrameIndex) -> None:
    """Keep ``index`` as the newest entry of the per-process cache."""
    with _CACHE_LOCK:
        _CACHE[fid] = index
        _CACHE.move_to_end(fid)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)


def _seeks_land(container, stream, anchors: list[Anchor]) -> bool:
    """Whether seeking, backward and forward, to a keyframe's presentation time makes the
    demuxer's next packet that keyframe, for keyframes spread over the file.

    Only asked (it costs up to ``2 * _SEEK_PROBES`` seeks) where decord's other
    assumption holds: each keyframe is numbered by its position among the packets.
    """
    if not anchors or any(a.decode_pos != a.frame for a in anchors):
        return False
    spread = np.linspace(0, len(anchors) - 1, min(len(anchors), _SEEK_PROBES)).round().astype(int)
    try:
        for i, backward in itertools.product(sorted(set(spread.tolist())), (True, False)):
            anchor = anchors[i]
            if anchor.pts is None:
                return False
            container.seek(anchor.pts, stream=stream, backward=backward)
            packet = next(iter(container.demux(stream)), None)
            if packet is None or not packet.size or packet_key(packet) != anchor.key:
                return False
    except av.error.FFmpegError:
        return False
    return True


def index_by_decoding(path: str, threads: int) -> FrameIndex:
    """Number ``path``'s frames by one decode and keep that index in place of the one from
    stored times, which a read found not to number its pictures."""
    index = decoded_index(path, threads)
    _remember(_file_id(path), index)
    return index
