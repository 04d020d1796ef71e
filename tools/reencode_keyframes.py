#!/usr/bin/env python
"""Re-encode training videos with a short keyframe interval.

Random clips decode from the keyframe before them, so with an encoder's default
interval (250 frames for x264) a 16-frame clip costs up to 250 decoded frames;
with 8 it costs at most 23. Re-encoding once trades a little disk space for a
several-fold faster loader (numbers in docs/data.md).

Usage::

    python tools/reencode_keyframes.py SRC [SRC ...] --out DIR [--gop 8] [--crf 18] [--force]

SRC may be files or folders (searched recursively); the folder structure below
each SRC is kept under DIR, audio is copied, frames and fps are unchanged, and
every output is written atomically (a crash leaves no half-written file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from tcvbm.data.video import VIDEO_EXTENSIONS
from tcvbm.data.writer import DEFAULT_GOP, VideoWriter

CHUNK = 32  # frames handed to the encoder at a time: bounded memory for long videos


def _decode_frames(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        batch = []
        for frame in container.decode(video=0):
            batch.append(frame.to_ndarray(format="rgb24"))
            if len(batch) == CHUNK:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)


def reencode(src: Path, dst: Path, gop: int = DEFAULT_GOP, crf: int = 18) -> Path:
    """Re-encode one file with keyframes every ``gop`` frames, keeping fps and audio."""
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate
        has_audio = bool(container.streams.audio)
    if not fps:
        raise ValueError(f"{src}: no frame rate in the container")
    with VideoWriter(dst, fps, audio_from=src if has_audio else None, gop=gop, crf=crf) as writer:
        for batch in _decode_frames(src):
            writer.write(batch)
    return dst


def _targets(sources: list[Path], out: Path) -> Iterator[tuple[Path, Path]]:
    for source in sources:
        if source.is_file():
            yield source, out / source.with_suffix(".mp4").name
            continue
        for path in sorted(source.rglob("*")):
            if path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("."):
                yield path, out / path.relative_to(source).with_suffix(".mp4")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="video files or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--gop", type=int, default=DEFAULT_GOP, help="keyframe interval in frames")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality, lower is better")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = parser.parse_args(argv)
    failed = 0
    for src, dst in _targets(args.sources, args.out):
        if dst.exists() and not args.force:
            print(f"exists, skipped: {dst}")
            continue
        try:
            reencode(src, dst, args.gop, args.crf)
            print(f"{src} -> {dst}")
        except (av.error.FFmpegError, ValueError) as e:
            failed += 1
            print(f"FAILED {src}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
