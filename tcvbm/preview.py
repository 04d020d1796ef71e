"""Side-by-side pictures of what a command did, for a person to look at.

``interpolation_preview`` puts a stretch of an interpolated video under the same stretch made
by linear blending of the input frames (the task's own source), so ghosting and its removal
are visible frame by frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tcvbm.atomic import AtomicPath  # noqa: E402
from tcvbm.data.video import VideoReader  # noqa: E402
from tcvbm.data.visual import frame_grid, from_uint8, to_uint8  # noqa: E402
from tcvbm.tasks import get_task  # noqa: E402


def interpolation_preview(input: str | os.PathLike, output: str | os.PathLike,
                          path: str | os.PathLike, factor: int, keyframes: int = 3,
                          start: int | None = None) -> Path:
    """Write a png: linear blending (top) and the interpolated video (bottom) over
    ``keyframes`` consecutive input frames starting at ``start`` (default: the middle)."""
    with VideoReader(input, backend="pyav") as src, VideoReader(output, backend="pyav") as out:
        keyframes = max(2, min(keyframes, len(src)))
        if start is None:
            start = max(0, (len(src) - keyframes) // 2)
        start = min(start, len(src) - keyframes)
        keys = src.read(list(range(start, start + keyframes)))
        n = (keyframes - 1) * factor + 1
        first = start * factor
        made = out.read(list(range(first, min(first + n, len(out)))))
    h, w = keys.shape[1:3]
    made = made[:, :h, :w]  # the writer pads odd sizes by one pixel
    blend = to_uint8(get_task("interp", factor=factor).lift(from_uint8(keys)[None], n)[0])
    fig, axes = plt.subplots(2, 1, figsize=(min(2 + 1.6 * n * w / h, 40), 4.2),
                             constrained_layout=True)
    for ax, frames, label in [(axes[0], blend.numpy(), "linear blending"),
                              (axes[1], made.numpy(), f"{Path(output).name}")]:
        ax.imshow(frame_grid(frames[None]))
        ax.set_yticks([])
        ax.set_xticks([(w + 2) * (j + 0.5) for j in range(len(frames))],
                      [f"{first + j}{'*' if j % factor == 0 else ''}" for j in range(len(frames))])
        ax.set_title(label, fontsize=10)
    axes[1].set_xlabel("output frame (* input frame, kept exactly)")
    fig.suptitle(f"{Path(input).name}: x{factor} interpolation, input frames {start}-"
                 f"{start + keyframes - 1}", fontsize=11)
    try:
        with AtomicPath(path) as staged:
            fig.savefig(staged, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)
