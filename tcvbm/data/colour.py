"""Bit depth and colour tags of a video's pictures, carried from an input to its output.

A decoded picture is samples of some bit depth (8, 10, 12...) with four tags that say how
to show them: the primaries (which red, green and blue), the transfer function (the curve
from light to code values: SDR gamma, PQ, HLG), the matrix between YUV and RGB, and the
range (limited "tv" or full "pc"). The inference commands work on RGB frames. FFmpeg
converts each decoded picture to RGB with the matrix and range it is tagged with, and an
output is converted back to YUV with the same matrix and range and tagged like its input,
so a 10-bit BT.2020 PQ video comes out a 10-bit BT.2020 PQ video. Primaries and transfer
are never converted: the pixels stay in the input's colours and the tags say which.

An RGB output (FFV1, lossless H.264, PNG) has no YUV matrix: its samples are full-range
RGB, tagged so, with the input's primaries and transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
from av.video.reformatter import ColorPrimaries, ColorRange, ColorTrc

__all__ = ["Colour", "pix_fmt_depth"]

# FFmpeg's AVColorSpace values (PyAV has no enum for them): the matrix of RGB pictures, and
# the value of an untagged one.
_RGB_MATRIX = 0
_UNSPECIFIED_MATRIX = 2


def pix_fmt_depth(pix_fmt: str) -> int:
    """Bits per sample of an FFmpeg pixel format (its deepest component); 8 when unknown."""
    try:
        components = av.VideoFormat(pix_fmt).components
    except ValueError:   # no format, or one this FFmpeg does not know
        return 8
    return max((c.bits for c in components), default=8)


@dataclass(frozen=True)
class Colour:
    """A video's bit depth and colour tags (FFmpeg's values; unspecified by default).

    ``depth`` decides how an output is written (:mod:`tcvbm.data.writer`), the tags are
    copied to it; the values are those of ``AVCodecContext`` (``color_primaries``,
    ``color_trc``, ``colorspace`` for the matrix, ``color_range``).
    """

    depth: int = 8
    primaries: int = int(ColorPrimaries.UNSPECIFIED)
    transfer: int = int(ColorTrc.UNSPECIFIED)
    matrix: int = _UNSPECIFIED_MATRIX
    range: int = int(ColorRange.UNSPECIFIED)

    @classmethod
    def of(cls, codec_context) -> Colour:
        """The colour of a stream, from its (decoder's) codec context."""
        return cls(pix_fmt_depth(codec_context.pix_fmt or ""), int(codec_context.color_primaries),
                   int(codec_context.color_trc), int(codec_context.colorspace),
                   int(codec_context.color_range))

    @property
    def deep(self) -> bool:
        """More than 8 bits per sample: frames of it are read and written as 16-bit RGB."""
        return self.depth > 8

    def tags(self, rgb: bool) -> dict[str, int]:
        """The tags of an output in RGB (``rgb``) or YUV, as PyAV attribute names.

        An RGB output is full-range RGB. A YUV output takes the input's matrix and range,
        unless the input was RGB: its matrix does not apply to YUV, and FFmpeg's default
        (BT.601, limited range) is used and left untagged, as for an untagged input.
        """
        if rgb:
            matrix, range_ = _RGB_MATRIX, ColorRange.JPEG
        elif self.matrix == _RGB_MATRIX:
            matrix, range_ = _UNSPECIFIED_MATRIX, ColorRange.UNSPECIFIED
        else:
            matrix, range_ = self.matrix, self.range
        return {"color_primaries": int(self.primaries), "color_trc": int(self.transfer),
                "colorspace": int(matrix), "color_range": int(range_)}

    def tag(self, target, rgb: bool) -> None:
        """Tag a PyAV codec context or frame as an RGB (``rgb``) or YUV output of this colour.

        On a frame the matrix and range are what FFmpeg converts it to the encoder's pixel
        format with, so the samples and the stream's tags agree.
        """
        for name, value in self.tags(rgb).items():
            setattr(target, name, value)
