"""Errors and warnings of the data layer.

They live apart from the readers and writers so both can raise them without
importing each other.
"""

from __future__ import annotations

import os


class VideoReadError(ValueError):
    """A file cannot be read as a video (or image sequence).

    Subclasses ``ValueError`` because it is bad input, and always names the file
    and the reason, so a skipped file in a log can be found and fixed.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path!r}: {reason}")


class SkippedVideoWarning(UserWarning):
    """A dataset skipped a file it could not use (issued once per file)."""
