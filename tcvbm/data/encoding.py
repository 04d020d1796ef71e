"""Choosing a video's encoding: container, codec, encoder, pixel format and options.

The container follows the output name (:data:`CONTAINERS`: ``.mp4``, ``.mkv``, ``.mov``,
``.avi``), the codec is one of :data:`CODECS`: H.264 4:2:0 at an x264 ``crf`` (small, plays
everywhere), H.265 4:2:0 at an x265 ``crf`` (the newer codec: slower to encode, played by
fewer browsers and devices), or FFV1 (FFmpeg's lossless archive codec, in RGB). ``lossless``
H.264 is RGB H.264 at qp 0 (libx264rgb). FFV1 and lossless H.264 decode to exactly the RGB
that was written (a 4:2:0 or even 4:4:4 YUV encode cannot: the RGB -> YUV conversion rounds).
A name or a codec that does not fit is refused by :func:`video_encoding` before anything is
written, which the inference commands call before they load a model; the writer
(:class:`tcvbm.data.writer.VideoWriter`) encodes with what it returns.

An output keeps its input's bit depth (:mod:`tcvbm.data.colour`): frames deeper than 8 bits
are encoded at that depth where the encoder can, H.264 and H.265 as 10-bit 4:2:0 (12-bit for
12-bit input with H.265), FFV1 and lossless output as FFV1 in planar RGB of the input's depth
(RGB H.264 holds 8 bits). A lossy encoder that cannot hold the depth (x264 built for 8 bits
only, the mpeg4 stand-in) writes its deepest, and the writer warns; lossless output never
drops bits.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import av

from tcvbm.data.colour import pix_fmt_depth

__all__ = ["Encoding", "video_encoding", "check_crf", "x265_options", "CODECS", "CONTAINERS",
           "DEFAULT_CRF", "MPEG4"]

DEFAULT_CRF = 18        # x264 quality: visually lossless for most content
_CRF_MAX = 51           # x264's and x265's 8-bit scale runs from 0 (best) to 51 (smallest file)
CODECS = ("h264", "h265", "ffv1")
# The codecs each accepted container holds, as this project writes them and FFmpeg muxes them.
# WebM takes none of them (VP8, VP9 and AV1 only), MOV and AVI refuse FFV1 and H.265 in turn,
# and FFV1 has no registered MP4 mapping (FFmpeg alone would read it back).
CONTAINERS: dict[str, frozenset[str]] = {
    ".mp4": frozenset({"h264", "h265"}),
    ".mkv": frozenset(CODECS),
    ".mov": frozenset({"h264", "h265"}),
    ".avi": frozenset({"h264", "ffv1"}),
}
MPEG4 = "mpeg4"         # H.264's stand-in where the build has no x264; rate-controlled
# Pixel formats of each kind of encoding, shallowest first: each encoding takes the shallowest
# its encoder has that holds the input's depth (:func:`_format_for`). FFV1's 8-bit RGB is bgr0.
_YUV420 = ("yuv420p", "yuv420p10le", "yuv420p12le")
_FFV1_RGB = ("bgr0", "gbrp10le", "gbrp12le", "gbrp16le")
# x264's SIMD macroblock-tree code (its AVX-512 version, here) made the same frames encode to
# different pixels from run to run, even on one thread. cpu-independent runs the portable
# version instead, documented by x264 as giving the same output on every CPU.
_X264_REPRODUCIBLE = {"x264-params": "cpu-independent=1"}
# Lossless RGB encoders, first available wins: (encoder, pixel formats, options). H.264 in RGB
# at qp 0 fits MP4, MOV, MKV and AVI and plays wherever FFmpeg does; FFV1 (FFmpeg's own) is
# for builds without x264 and for input deeper than 8 bits, which libx264rgb cannot hold. At
# qp 0 x264's presets change only the size and the time: veryfast made files no larger than
# medium's, in 60% of its time.
_FFV1 = ("ffv1", _FFV1_RGB, {})
_LOSSLESS = (("libx264rgb", ("rgb24",), {"qp": "0", "preset": "veryfast", **_X264_REPRODUCIBLE}),
             _FFV1)
# x265 prints a banner and statistics on stderr at every encode; errors are still reported.
_X265_QUIET = {"x265-params": "log-level=error"}
_X265_MIN = 16          # x265 refuses to open for frames smaller than this on a side
# On frames this narrow or narrower x265's cuTree (its lookahead's quality tuning) writes past
# its buffers: valgrind showed invalid writes at widths 16 and 48, none at 50, 56 and up, and the
# corrupted heap crashed the process. Without cuTree the same encodes are clean.
_X265_NARROW = 48


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


class Encoding(NamedTuple):
    """How a video is encoded: ``codec`` (one of :data:`CODECS`), the FFmpeg ``encoder``, its
    pixel format and options; ``exact`` when it decodes to exactly the RGB written."""

    codec: str
    encoder: str
    pix_fmt: str
    options: dict[str, str]
    exact: bool

    @property
    def depth(self) -> int:
        """Bits per sample written."""
        return pix_fmt_depth(self.pix_fmt)

    @property
    def rgb(self) -> bool:
        """Whether it stores RGB (else 4:2:0 YUV, converted from RGB by FFmpeg)."""
        return av.VideoFormat(self.pix_fmt).is_rgb


def _format_for(encoder: str, formats: tuple[str, ...], depth: int) -> str:
    """The shallowest of ``formats`` (shallowest first) that this build's ``encoder`` takes and
    that holds ``depth`` bits, else the deepest it takes: x264, for one, writes 10-bit video
    only where it was built for it."""
    offered = {f.name for f in av.codec.Codec(encoder, "w").video_formats or ()}
    usable = [f for f in formats if f in offered] or [formats[0]]
    return next((f for f in usable if pix_fmt_depth(f) >= depth), usable[-1])


def _encoder_for(codec: str, crf: int, lossless: bool, depth: int) -> Encoding:
    if codec == "ffv1":
        if not _has_encoder("ffv1"):
            raise ValueError("codec ffv1: this FFmpeg build has no ffv1 encoder")
        return Encoding("ffv1", "ffv1", _format_for("ffv1", _FFV1_RGB, depth), {}, True)
    if lossless:
        if codec != "h264":
            raise ValueError(f"lossless: RGB-exact output is H.264 (libx264rgb) or FFV1, not "
                             f"{codec}: use codec h264 or ffv1")
        for name, formats, options in _LOSSLESS:   # the first that holds every bit
            if not _has_encoder(name):
                continue
            pix_fmt = _format_for(name, formats, depth)
            if pix_fmt_depth(pix_fmt) >= depth:
                return Encoding("ffv1" if name == "ffv1" else "h264", name, pix_fmt,
                                dict(options), True)
        if depth > 8:
            raise ValueError(f"lossless: this FFmpeg build has no ffv1 encoder, which lossless "
                             f"{depth}-bit output needs")
        raise ValueError("lossless: this FFmpeg build has neither a libx264rgb nor an ffv1 "
                         "encoder")
    if codec == "h265":
        if not _has_encoder("libx265"):
            raise ValueError("codec h265: this FFmpeg build has no libx265 encoder; use h264")
        return Encoding("h265", "libx265", _format_for("libx265", _YUV420, depth),
                        {"crf": str(crf), "preset": "medium", **_X265_QUIET}, False)
    if not _has_encoder("libx264"):
        return Encoding("h264", MPEG4, "yuv420p", {}, False)
    return Encoding("h264", "libx264", _format_for("libx264", _YUV420, depth),
                    {"crf": str(crf), "preset": "medium", **_X264_REPRODUCIBLE}, False)


def video_encoding(path: str | os.PathLike, codec: str = "h264", crf: int = DEFAULT_CRF,
                   lossless: bool = False, depth: int = 8) -> Encoding:
    """The encoding of a video written to ``path``, or a ``ValueError`` naming what does not fit.

    Checks, without writing anything, that the extension is a container of
    :data:`CONTAINERS`, that ``codec`` is one of :data:`CODECS` and this FFmpeg build has its
    encoder, that the container holds it, and ``crf`` (which FFV1 and ``lossless`` ignore).
    ``depth``: bits per sample of the input, which the encoding keeps where it can (see the
    module); lossless output deeper than 8 bits is FFV1, which ``.mp4`` and ``.mov`` cannot
    hold.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in CONTAINERS:
        raise ValueError(f"output {path!r}: expected a video name ending in "
                         f"{', '.join(CONTAINERS)} (got {ext or 'no extension'})")
    if codec not in CODECS:
        raise ValueError(f"codec: expected one of {', '.join(CODECS)}, got {codec!r}")
    encoding = _encoder_for(codec, check_crf(crf), lossless, depth)
    if encoding.codec not in CONTAINERS[ext]:
        fits = [e for e, codecs in CONTAINERS.items() if encoding.codec in codecs]
        if codec == encoding.codec:
            what = encoding.codec
        elif depth > 8:
            what = f"lossless {depth}-bit video (ffv1: RGB H.264 holds 8 bits)"
        else:
            what = "lossless (ffv1 in this build)"
        raise ValueError(f"output {path!r}: {ext} cannot hold {what}; use "
                         f"{' or '.join(fits)}")
    return encoding


def x265_options(options: dict[str, str], height: int, width: int,
                 path: str) -> dict[str, str]:
    """x265's options for frames of this size, or a ``ValueError`` when it cannot take them."""
    if min(height, width) < _X265_MIN:
        raise ValueError(f"h265: cannot write {path!r}: x265 takes frames of at least "
                         f"{_X265_MIN}x{_X265_MIN}, these are {width}x{height}; use h264")
    if width > _X265_NARROW:
        return options
    return {**options, "x265-params": f"{options['x265-params']}:cutree=0"}
