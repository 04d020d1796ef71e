"""Could a better classical source lift default-interp? Variants of DIS flow interpolation,
scored on the training videos and the selection set (never the dev set, whose figures are
the ones reported).

    python studies/interp-source/classical.py data/media/train data/media/select \
        --clips-per-video 4 -o docs/results/interp-source-cpu

Each window is three consecutive frames at 320x240 (frames scaled to cover it, as
``tcvbm eval --size 320x240``): the outer two in, the middle one scored (PSNR on 8-bit
levels, mean of a video's windows, then of videos). The variants:

* ``flow``: what the project ships, :func:`tcvbm.flow.warp_candidates` (DIS, preset medium:
  finest scale 1, i.e. half resolution, patch stride 3), mixed by time;
* ``flow-full``: the same at full resolution (``setFinestScale(0)``);
* ``flow-stride2``: a denser patch grid (``setPatchStride(2)``);
* ``projected``: flows to the middle frame by forward projection (each keyframe pixel splatted
  to where its flow puts it at the middle time, weighted by how well the flow matches, holes
  filled with the linear approximation) instead of the linear (Super SloMo) approximation;
* ``outer-averaged``: the two inner keyframes first averaged with their outer neighbours
  (aligned by flow, where the aligned pixel matches within 0.02), to lower their coding
  noise; needs 7-frame windows (frames 0, 2, 4, 6 in, 3 scored).

Also the time per pair of each variant's flows (one thread). Writes ``OUT/table.md`` and
``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from statistics import fmean

import cv2
import numpy as np

from tcvbm.evaluate import load_eval_clips
from tcvbm.flow import backward_warp, dis_flow, linear_time_flows

SIZE = (320, 240)
MATCH = 0.02          # [0, 1] units: an aligned pixel this close counts as the same content
PROJECTION_SHARPNESS = 20.0   # splat weight exp(-k |a - warp(b)|): trust matching pixels


def splat(values: np.ndarray, flow: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, ...]:
    """Bilinear forward splatting: sums of ``weight * values`` and of ``weight`` at x + flow."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = gx + flow[..., 0], gy + flow[..., 1]
    acc = np.zeros((h * w, values.shape[2]))
    total = np.zeros(h * w)
    for xi in (np.floor(x), np.floor(x) + 1):
        for yi in (np.floor(y), np.floor(y) + 1):
            bw = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi)) * weight
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (bw > 0)
            idx = (yi[inside] * w + xi[inside]).astype(np.int64)
            total += np.bincount(idx, bw[inside], h * w)
            for ch in range(values.shape[2]):
                acc[:, ch] += np.bincount(idx, values[..., ch][inside] * bw[inside], h * w)
    return acc.reshape(h, w, -1), total.reshape(h, w)


def projected_flows(a: np.ndarray, b: np.ndarray, f01: np.ndarray, f10: np.ndarray,
                    t: float) -> tuple[np.ndarray, np.ndarray]:
    """Flows from time t to both ends, each keyframe pixel projected to where it is at t."""
    trust_a = np.exp(-PROJECTION_SHARPNESS * np.abs(a - backward_warp(b, f01)).mean(2))
    trust_b = np.exp(-PROJECTION_SHARPNESS * np.abs(b - backward_warp(a, f10)).mean(2))
    sa, wa = splat(np.concatenate([-t * f01, (1 - t) * f01], 2), t * f01, trust_a)
    sb, wb = splat(np.concatenate([t * f10, -(1 - t) * f10], 2), (1 - t) * f10, trust_b)
    total = wa + wb
    flows = (sa + sb) / np.maximum(total, 1e-8)[..., None]
    hole = total < 1e-3
    flows[hole] = np.concatenate(linear_time_flows(f01, f10, t), 2)[hole]
    flows = flows.astype(np.float32)
    return flows[..., :2], flows[..., 2:]


def interpolate(a: np.ndarray, b: np.ndarray, variant: str, t: float = 0.5) -> np.ndarray:
    """The frame at ``t`` between ``a`` and ``b`` by one variant; ``flow`` is
    :func:`tcvbm.flow.warp_candidates` mixed by time, as the project's flow source."""
    settings = {"flow-full": {"finest_scale": 0},
                "flow-stride2": {"patch_stride": 2}}.get(variant, {})
    f01, f10 = dis_flow(a, b, **settings), dis_flow(b, a, **settings)
    if variant == "projected":
        ft0, ft1 = projected_flows(a, b, f01, f10, t)
    else:
        ft0, ft1 = linear_time_flows(f01, f10, t)
    return (1 - t) * backward_warp(a, ft0) + t * backward_warp(b, ft1)


def averaged_with(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """``inner`` with ``outer`` aligned to it and averaged in (a third) where it matches."""
    aligned = backward_warp(outer, dis_flow(inner, outer))
    same = (np.abs(aligned - inner).mean(2, keepdims=True) < MATCH).astype(np.float32)
    return inner + same * (aligned - inner) / 3


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    pred = np.round(np.clip(pred, 0, 1) * 255) / 255
    return min(100.0, -10 * float(np.log10(max(((pred - target) ** 2).mean(), 1e-10))))


VARIANTS = ["flow", "flow-full", "flow-stride2", "projected"]


def frames(clip) -> np.ndarray:
    """(3, N, H, W) in [-1, 1] -> (N, H, W, 3) in [0, 1], the scored frames on 8-bit levels."""
    return ((clip.permute(1, 2, 3, 0).numpy() + 1) / 2).astype(np.float32)


def score(data: str, per_video: int) -> dict[str, dict[str, float]]:
    """{variant: {video: mean PSNR of its windows}}, blending and the outer-averaged flow too."""
    scores: dict = defaultdict(lambda: defaultdict(list))
    for name, clip in load_eval_clips(data, 7, SIZE, clips_per_video=per_video):
        x, video = frames(clip), name.rsplit("@", 1)[0]
        a, target, b = x[2], np.round(x[3] * 255) / 255, x[4]
        scores["blend"][video].append(psnr((a + b) / 2, target))
        for variant in VARIANTS:
            scores[variant][video].append(psnr(interpolate(a, b, variant), target))
        scores["outer-averaged"][video].append(psnr(interpolate(
            averaged_with(a, x[0]), averaged_with(b, x[6]), "flow"), target))
    return {v: {video: fmean(p) for video, p in videos.items()} for v, videos in scores.items()}


def seconds_per_pair(repeats: int = 10) -> dict[str, float]:
    """Both flows of one 320x240 pair (and the projection), one thread, median of repeats."""
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.random((SIZE[1], SIZE[0], 3)).astype(np.float32), (0, 0), 3)
    b = np.roll(a, 3, axis=1)
    out = {}
    for variant in VARIANTS:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            interpolate(a, b, variant)
            times.append(time.perf_counter() - start)
        out[variant] = float(np.median(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="folders of videos (never the dev set)")
    parser.add_argument("--clips-per-video", type=int, default=4)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    names = ["blend", *VARIANTS, "outer-averaged"]
    lines, summary = [], {"seconds_per_pair": seconds_per_pair()}
    for data in args.data:
        scores = score(data, args.clips_per_video)
        summary[data] = scores
        videos = list(scores["flow"])
        lines += [f"## {data} ({args.clips_per_video} windows per video), PSNR", "",
                  "| video | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {v} | " + " | ".join(f"{scores[n][v]:.2f}" for n in names) + " |"
                  for v in videos]
        lines += ["| **mean of videos** | " + " | ".join(
            f"{fmean(scores[n].values()):.2f}" for n in names) + " |", ""]
    lines += ["Seconds per 320x240 pair (both flows, warps and mix; one thread): " + ", ".join(
        f"{v} {s * 1000:.0f} ms" for v, s in summary["seconds_per_pair"].items()) + "."]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "table.md").write_text("\n".join(lines) + "\n")
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
