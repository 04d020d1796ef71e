"""What a dataset knows about its video files between runs and between processes.

Two things live in a dataset's cache folder (outside the dataset, see
:func:`default_cache_dir`), both keyed by a file's path, size and modification time so that a
changed file is looked at again:

* ``index.json``: the frame count and fps of every video file, or why it is unreadable.
  Probing demuxes a file without decoding it, but a large dataset still takes minutes, so
  only new or changed files are probed (:func:`index_videos`).
* ``skipped/``: one marker per file found damaged while reading (:class:`SkipMarkers`).
  DataLoader workers are separate processes: a marker is how the main process's
  ``stats()`` sees what a worker met, how a file gets one warning instead of one per
  worker, and how a later run skips it up front.

Both are written atomically (:class:`tcvbm.atomic.AtomicPath`): processes writing at the
same time never leave a half-written file for another to read.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tcvbm.atomic import AtomicPath
from tcvbm.data.errors import VideoReadError
from tcvbm.data.video import VideoReader

__all__ = ["default_cache_dir", "index_videos", "SkipMarkers"]

_INDEX_VERSION = 1


def default_cache_dir(root: str | os.PathLike) -> Path:
    """``$TCVBM_CACHE_DIR`` or ``~/.cache/tcvbm/datasets``, one folder per dataset root.

    Outside the dataset so read-only dataset folders work and nothing is added to them.
    """
    base = os.environ.get("TCVBM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tcvbm", "datasets"
    )
    digest = hashlib.sha1(os.path.abspath(os.fspath(root)).encode()).hexdigest()[:16]
    return Path(base) / digest


def _file_identity(path: str) -> str:
    """Path, size and modification time: what tells a cached fact about a file is stale."""
    try:
        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return os.path.abspath(path)


def _write_json(path: Path, data) -> None:
    with AtomicPath(path) as staged:
        staged.write_text(json.dumps(data))


def _probe_video(path: str) -> dict:
    try:
        with VideoReader(path, backend="pyav") as r:
            return {"frames": len(r), "fps": r.fps, "error": None}
    except VideoReadError as e:
        return {"frames": 0, "fps": 0.0, "error": e.reason}


def index_videos(paths: Sequence[str], cache_dir: Path) -> dict[str, dict]:
    """Frame count, fps (or the reason it is unreadable) of each video, cached on disk."""
    cache_file = cache_dir / "index.json"
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("version") != _INDEX_VERSION:
            cached = {}
    except (OSError, ValueError):
        cached = {}
    files: dict[str, dict] = cached.get("files", {})
    ids = {p: _file_identity(p) for p in paths}
    todo = [p for p in paths if files.get(p, {}).get("id") != ids[p]]
    if todo:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for p, info in zip(todo, pool.map(_probe_video, todo)):
                files[p] = {"id": ids[p], **info}
        try:
            _write_json(cache_file, {"version": _INDEX_VERSION, "files": files})
        except OSError as e:  # a read-only cache only costs start-up time
            warnings.warn(f"cannot write the dataset index cache {cache_file}: {e}",
                          RuntimeWarning, stacklevel=2)
    return {p: files[p] for p in paths}


class SkipMarkers:
    """Files found unreadable by any process, one marker file each in ``cache_dir/skipped``.

    A marker is named after the file's identity (path, size, modification time), so a file
    replaced by a good copy is read again.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.folder = cache_dir / "skipped"

    def path(self, key: str) -> Path:
        """The marker file of ``key`` (a video's path)."""
        digest = hashlib.sha1(_file_identity(key).encode()).hexdigest()[:20]
        return self.folder / f"{digest}.json"

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def read(self, keys: set[str]) -> dict[str, str]:
        """The reasons recorded for those of ``keys`` that have a current marker."""
        found = {}
        if self.folder.is_dir():
            for marker in self.folder.glob("*.json"):
                try:
                    info = json.loads(marker.read_text())
                except (OSError, ValueError):
                    continue
                if info.get("key") in keys and marker == self.path(info["key"]):
                    found[info["key"]] = info.get("reason", "unreadable")
        return found

    def add(self, key: str, reason: str) -> bool:
        """Record ``key`` as unreadable; False when a marker was already there (another
        process met it first and warned)."""
        marker = self.path(key)
        if marker.exists():
            return False
        try:
            _write_json(marker, {"key": key, "reason": reason})
        except OSError:
            pass  # without a writable cache the record stays per process
        return True
