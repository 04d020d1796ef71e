"""Measuring a media file by decoding all of it with PyAV.

The fetch tools (``tools/fetch_sample_clips.py``, ``tools/fetch_media.py``) record in their
manifests what a file really holds, and its checksum. Container headers are not enough for
that: their frame counts can be missing or wrong, so every frame is decoded and counted. A
file PyAV cannot decode raises the PyAV error here (one without video, ``ValueError``); the
tools report it and act on it, since the readers in :mod:`tcvbm.data` decode with PyAV too.
"""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction

import av

__all__ = ["measure_video", "sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (the checksums the manifests pin)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def measure_video(path: str | os.PathLike) -> dict:
    """fps (float and exact fraction), frames, width, height, codec and audio of the first
    video stream of ``path`` (an image file counts as a one-frame video)."""
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{os.fspath(path)}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        frames = sum(1 for _ in container.decode(stream))
        return {
            "fps": float(rate),
            "fps_fraction": f"{rate.numerator}/{rate.denominator}",
            "frames": frames,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "codec": stream.codec_context.name,
            "audio": bool(container.streams.audio),
        }
