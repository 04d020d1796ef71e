"""Finding media files in folders, and saying what a folder holds when nothing fits.

Shared by the dataset layouts, the clip sampler's "no usable video" error and the stills of
synthetic motion, so every dataset lists files in the same order: sorted at every depth,
hidden files and folders left out, extensions matched case-insensitively.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

__all__ = ["list_files", "describe_files"]


def list_files(root: Path, extensions: frozenset[str]) -> list[str]:
    """Paths of the files under ``root`` (recursively) whose extension is in ``extensions``."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(folder, f) for f in sorted(files)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions]
    return found


def describe_files(root: Path) -> str:
    """What a folder holds, by extension, for errors about a folder without usable media."""
    counts = Counter(p.suffix.lower() or "(no extension)" for p in root.rglob("*") if p.is_file())
    if not counts:
        return "no files at all"
    kinds = ", ".join(f"{n} {ext}" for ext, n in counts.most_common(6))
    return f"{sum(counts.values())} files ({kinds})"
