"""A look at the bridges themselves: states X_t of TCVBM and BM on a real clip.

The clip is degraded by frame interpolation (its source holds blended frames), then both
bridges are sampled at several times with the *same* standard normal noise, so the only
difference in the picture is how the prior shapes that noise across frames: BM adds
independent noise to every frame, TCVBM noise that is coherent from frame to frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tcvbm.atomic import AtomicPath  # noqa: E402
from tcvbm.bridges import Bridge  # noqa: E402
from tcvbm.data.video import VideoReader  # noqa: E402
from tcvbm.data.visual import frame_grid, from_uint8, to_uint8  # noqa: E402
from tcvbm.tasks import get_task  # noqa: E402

TIMES = (1.0, 0.75, 0.5, 0.25, 0.0)


def _states(bridge: Bridge, x0: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor) -> np.ndarray:
    """Rows of frames: X_t for each t in TIMES (endpoints exactly the source and the clip)."""
    rows = []
    for t in TIMES:
        if t in (0.0, 1.0):
            xt = x0 if t == 0.0 else x1
        else:
            xt = bridge.sample(x0, x1, torch.tensor([t]), noise=noise)
        rows.append(to_uint8(xt[0]).numpy())
    return np.stack(rows)


def bridge_demo(input: str | os.PathLike, output_dir: str | os.PathLike, num_frames: int = 9,
                size: int = 96, factor: int = 4, seed: int = 0) -> Path:
    """Write ``bridges.png`` (states across t and frames, both priors, and the noise each
    prior puts on every temporal frequency) into ``output_dir``; returns its path."""
    input = Path(input)
    if not input.exists():
        raise ValueError(f"input: {input} does not exist (fetch the samples with "
                         "`python tools/fetch_sample_clips.py`, or pass --input VIDEO)")
    with VideoReader(input) as reader:
        stride = max(1, min(2, (len(reader) - 1) // max(1, num_frames - 1)))
        frames = reader.read_clip(0, num_frames, stride=stride, size=size)
    x0 = from_uint8(frames).unsqueeze(0)
    x1 = get_task("interp", factor=factor)(x0).source
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    bridges = {"TCVBM (ar1, rho 0.9, strength 8)": Bridge(num_frames, prior="ar1"),
               "BM (brownian)": Bridge(num_frames, prior="brownian")}

    fig = plt.figure(figsize=(2 + 1.1 * num_frames, 11), constrained_layout=True)
    grid = fig.add_gridspec(3, 1, height_ratios=[5, 5, 3])
    for k, (label, bridge) in enumerate(bridges.items()):
        ax = fig.add_subplot(grid[k])
        image = frame_grid(_states(bridge, x0, x1, noise))
        ax.imshow(image)
        h = image.shape[0] / len(TIMES)
        ax.set_yticks([h * (i + 0.5) for i in range(len(TIMES))],
                      [f"t = {t:g}" + (" (source)" if t == 1 else " (clip)" if t == 0 else "")
                       for t in TIMES])
        w = image.shape[1] / num_frames
        ax.set_xticks([w * (j + 0.5) for j in range(num_frames)],
                      [f"{j}{'*' if j % factor == 0 else ''}" for j in range(num_frames)])
        ax.set_xlabel("frame (* keyframe)")
        ax.set_title(label)
    ax = fig.add_subplot(grid[2])
    for label, bridge in bridges.items():
        _, cov = bridge.marginal(x0.double(), x1.double(), torch.tensor([0.5]))
        lam, u = torch.linalg.eigh(bridge.A)
        order = lam.abs().argsort()
        per_mode = torch.einsum("nk,nm,mk->k", u[:, order], cov[0], u[:, order]).clamp_min(0).sqrt()
        ax.plot(range(num_frames), per_mode.numpy(), marker="o",
                label=f"{label}  (|lambda| up to {lam.abs().max():.0f})")
    ax.set_xlabel("temporal mode (slowest to fastest change across frames)")
    ax.set_ylabel("noise std at t = 0.5")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.suptitle(f"{input.name}: bridge states between the x{factor} interpolation source "
                 "(t = 1) and the clip (t = 0), same noise for both priors")
    path = Path(output_dir) / "bridges.png"
    try:
        with AtomicPath(path) as staged:
            fig.savefig(staged, dpi=90)
    finally:
        plt.close(fig)
    return path
