"""Atomic writes: a file or a folder appears under its name complete, or not at all.

Everything the project writes for later reading (videos, pictures, configs, index caches,
model bundles, checkpoints) is first written under a hidden staging name in the target's own
folder, so the final move is a rename on one file system, and only then moved into place.
A reader, a resumed run or a second process therefore never sees half a file, and an error
or Ctrl-C while writing leaves the previous version untouched and no staging name behind.

``AtomicPath`` is the one mechanism: a context manager for a body that writes in one go, and
explicit :meth:`AtomicPath.commit` / :meth:`AtomicPath.discard` for a writer that streams
(``tcvbm.data.writer.VideoWriter``). :func:`replace_dir` is its folder swap, public for
folders that several processes fill under an agreed name (training checkpoints).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

__all__ = ["AtomicPath", "replace_dir"]


def replace_dir(staged: Path, final: Path) -> None:
    """Put the finished folder ``staged`` at ``final`` (same file system).

    A folder cannot be renamed over a non-empty one, so the old ``final`` is first renamed
    aside to ``<final>.old``, then ``staged`` renamed into place, then the old one removed: a
    reader sees the old folder or the new one, never a half-written one.
    """
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staged, final)
    if old.exists():
        shutil.rmtree(old)


class AtomicPath:
    """A staging path beside ``final`` that becomes ``final`` only once it is complete.

    ``with AtomicPath(final) as staged:`` yields the staging path; when the body returns it
    replaces ``final``, when the body raises (``KeyboardInterrupt`` included) it is removed
    and ``final`` is left as it was. The staging name is hidden, unique to the process and
    the call (two writers of one target never share it), and ends with ``final``'s suffix,
    or with ``suffix`` when given, because encoders (PIL, matplotlib, FFmpeg) choose the
    format by the extension of the name they write. ``directory=True`` stages a folder,
    created empty, and swaps it in with :func:`replace_dir`.
    """

    def __init__(self, final: str | os.PathLike, directory: bool = False,
                 suffix: str | None = None) -> None:
        self.final = Path(final)
        self.directory = directory
        self.final.parent.mkdir(parents=True, exist_ok=True)
        ending = self.final.suffix if suffix is None else suffix
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.staged = self.final.with_name(f".{self.final.stem}.{token}.partial{ending}")
        if directory:
            self.staged.mkdir()

    def commit(self) -> Path:
        """Move the staged file or folder onto ``final``; returns ``final``."""
        if not self.staged.exists():
            raise FileNotFoundError(f"{self.final}: nothing was written to its staging path "
                                    f"{self.staged.name}, so there is nothing to put in place")
        if self.directory:
            replace_dir(self.staged, self.final)
        else:
            os.replace(self.staged, self.final)
        return self.final

    def discard(self) -> None:
        """Remove whatever was staged; ``final`` is not touched."""
        if self.staged.is_dir() and not self.staged.is_symlink():
            shutil.rmtree(self.staged)
        else:
            self.staged.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.staged

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise
