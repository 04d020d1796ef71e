"""Scene-cut detection between consecutive frames.

Interpolating across a hard cut invents a cross-fade that never existed, so the pipeline asks
this module, frame by frame, whether two neighbours belong to the same shot. Two cheap
signals must agree: the mean absolute difference of small grey thumbnails (large for any
big change, including fast motion) and the distance between colour histograms (large when
the content changes, small under motion, which only moves pixels around). Requiring both
keeps fast pans from being cut while still catching cuts between similar-looking shots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SceneCutDetector", "frame_change", "DIFF_THRESHOLD", "HIST_THRESHOLD"]

_THUMB = 64     # thumbnails this many pixels on the long side: fast and noise-robust
_BINS = 16      # histogram bins per channel
DIFF_THRESHOLD = 0.12   # mean grey difference of a cut (the defaults: see SceneCutDetector)
HIST_THRESHOLD = 0.15   # histogram distance of a cut


def _thumbnail(frame: Tensor) -> Tensor:
    """uint8 or uint16 (H, W, 3) -> float (3, h, w) in [0, 1], long side about ``_THUMB``
    pixels."""
    step = max(1, max(frame.shape[:2]) // (4 * _THUMB))   # subsample first: cheap on 4K
    x = frame[::step, ::step].permute(2, 0, 1).unsqueeze(0).float()
    x = x / torch.iinfo(frame.dtype).max
    h, w = x.shape[-2:]
    scale = _THUMB / max(h, w)
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x, size=size, mode="area")
    return x[0]


def _histogram(thumb: Tensor) -> Tensor:
    """Per-channel normalised histograms, (3, _BINS), each row summing to 1."""
    idx = (thumb.clamp(0, 1) * (_BINS - 1)).round().long().flatten(1)
    hist = torch.zeros(3, _BINS).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float))
    return hist / hist.sum(dim=1, keepdim=True)


def frame_change(a: Tensor, b: Tensor) -> tuple[float, float]:
    """(mean absolute grey difference, histogram distance), both in [0, 1], of two frames.

    ``a`` and ``b`` are uint8 (or uint16) (H, W, 3) frames of the same size. The histogram
    distance is half the L1 distance between the per-channel histograms, averaged over
    channels (the fraction of pixel mass that has to move between bins).
    """
    ta, tb = _thumbnail(a), _thumbnail(b)
    mad = (ta.mean(0) - tb.mean(0)).abs().mean().item()
    hist = 0.5 * (_histogram(ta) - _histogram(tb)).abs().sum(dim=1).mean().item()
    return mad, hist


@dataclass
class SceneCutDetector:
    """Says whether ``cur`` starts a new shot after ``prev``, and counts the cuts it found.

    Defaults were set on the sample clips: ordinary motion, including fast pans, stays
    below both thresholds (mean difference at most 0.08, histogram distance about 0.12),
    while each of the five hard cuts in ``bikes.mp4`` exceeds both (at least 0.17 and 0.2).
    ``enabled=False`` turns detection off (every frame continues the shot). :meth:`scaled`
    moves both thresholds together, the one knob the commands expose.
    """

    diff_threshold: float = DIFF_THRESHOLD
    hist_threshold: float = HIST_THRESHOLD
    enabled: bool = True
    cuts: int = field(default=0, init=False)

    @classmethod
    def scaled(cls, threshold: float = 1.0, enabled: bool = True) -> SceneCutDetector:
        """A detector whose two thresholds are the defaults times ``threshold``.

        A cut needs both signals above their thresholds, so one factor keeps their balance:
        1.0 is the default, 0.5 calls a cut at half the change (softer cuts are found, and
        fast motion may be cut), 2.0 only at twice the change (only the starkest cuts). On
        the sample clips every factor from 0.6 to 1.4 finds the five cuts of ``bikes.mp4``
        and nothing else; 0.5 also cuts one fast move there (three times), 2.0 keeps one
        of the five.
        """
        if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                or not math.isfinite(threshold) or threshold <= 0):
            raise ValueError(f"scene threshold: expected a number > 0 (1.0 is the default), "
                             f"got {threshold!r}")
        return cls(DIFF_THRESHOLD * threshold, HIST_THRESHOLD * threshold, enabled)

    def is_cut(self, prev: Tensor, cur: Tensor) -> bool:
        if not self.enabled:
            return False
        if prev.shape == cur.shape:
            mad, hist = frame_change(prev, cur)
            if mad <= self.diff_threshold or hist <= self.hist_threshold:
                return False
        self.cuts += 1
        return True
