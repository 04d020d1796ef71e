"""The scene of a synthetic clip: layers of photos, each with its own motion, mask and light.

:class:`~tcvbm.data.synthetic.SyntheticMotion` draws a :class:`ClipPlan` per clip (frame
times and layers, background first) and renders it with the pieces here: a layer's affine
:class:`Motion` (what it shows where, at any time, and how fast its content moves), the
outline and soft alpha of a foreground's mask, its brightness and contrast drift, and
sampling a layer's photo region through its motion. They are kept apart from the dataset
because they hold no state: each depends on its arguments only, whatever the epoch, the
worker or the photo cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Motion", "LayerPlan", "ClipPlan", "MASK_KINDS", "mask_outline", "mask_alpha",
           "frame_corners", "relight", "footprint", "sample_layer"]

MASK_KINDS = ("ellipse", "polygon", "blob")
_PROFILE = 256            # angles at which a mask's outline radius is kept


@dataclass(frozen=True)
class Motion:
    """Affine motion of a layer, in output pixels centred on the frame centre (y down).

    Content at layer point ``q`` shows at ``p(t) = c + d(t) + exp(zoom t) R(spin t) (q - c)``
    with ``d(t) = velocity t + accel t^2 / 2``: at ``t = 0`` layer and frame coordinates
    agree. The content at ``p`` moves with ``d'(t) + K (p - c - d(t))``, ``K = zoom I +
    spin J`` (``J`` turns by 90 degrees), which is what bounds the speed.
    """

    centre: tuple[float, float]
    velocity: tuple[float, float]
    accel: tuple[float, float]
    spin: float
    zoom: float

    def offset(self, t):
        """``d(t)`` as (x, y); ``t`` a float or an array."""
        return (self.velocity[0] * t + 0.5 * self.accel[0] * t * t,
                self.velocity[1] * t + 0.5 * self.accel[1] * t * t)

    def inverse(self, t: float) -> tuple[float, float, float, float, float, float]:
        """The inverse motion at time ``t`` as coefficients ``(a, b, c, d, e, f)``: frame
        point (x, y) shows layer point ``(a x + b y + c, d x + e y + f)``.

        Python floats from a single time, so a frame rendered alone is bit-identical to the
        same frame rendered within a clip.
        """
        (cx, cy), (dx, dy) = self.centre, self.offset(t)
        shrink = math.exp(-self.zoom * t)
        sc, ss = shrink * math.cos(self.spin * t), shrink * math.sin(self.spin * t)
        ex, ey = cx + dx, cy + dy
        return sc, ss, cx - sc * ex - ss * ey, -ss, sc, cy + ss * ex - sc * ey

    def to_layer(self, x, y, t: float):
        """Layer point shown at frame point (x, y) (floats, arrays or tensors) at time ``t``."""
        a, b, c, d, e, f = self.inverse(t)
        return a * x + b * y + c, d * x + e * y + f

    def reach(self, t: float, radius: float) -> tuple[float, float, float]:
        """Where a disc of ``radius`` around the centre shows at time ``t``: (x, y, radius)."""
        dx, dy = self.offset(t)
        return self.centre[0] + dx, self.centre[1] + dy, radius * math.exp(self.zoom * t)

    def max_speed(self, span: float, corners: np.ndarray | None = None,
                  radius: float = 0.0) -> float:
        """Largest speed (pixels per frame) of visible content over times ``[0, span]``.

        ``corners`` (4, 2): the layer fills the frame, and the speed, convex in ``p``, is
        largest at a corner. Otherwise the layer is a disc of ``radius`` around its centre.
        """
        t = np.linspace(0.0, span, max(2, math.ceil(8 * span) + 1))
        vx, vy = self.velocity[0] + self.accel[0] * t, self.velocity[1] + self.accel[1] * t
        if corners is None:
            scale = math.hypot(self.zoom, self.spin) * np.exp(self.zoom * t) * radius
            return float(np.max(np.hypot(vx, vy) + scale))
        dx, dy = self.offset(t)
        rx = corners[None, :, 0] - self.centre[0] - dx[:, None]
        ry = corners[None, :, 1] - self.centre[1] - dy[:, None]
        ux = vx[:, None] + self.zoom * rx - self.spin * ry
        uy = vy[:, None] + self.spin * rx + self.zoom * ry
        return float(np.max(np.hypot(ux, uy)))


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One layer of a clip: which photo, where in it, how it moves, its mask and light.

    ``zoom_draw``: the photo's short side over the frame's short side (raised at render
    time when the motion needs more of the photo); ``place``: where the needed region sits
    in the photo, as fractions (y, x) of the room left. ``outline``: the mask's radius at
    ``_PROFILE`` angles around the motion's centre (None: the background, fully opaque),
    ``edge``: the width of its soft border. ``brightness``/``contrast``: drift per frame.
    """

    photo: int
    zoom_draw: float
    place: tuple[float, float]
    motion: Motion
    outline: np.ndarray | None
    edge: float
    brightness: float
    contrast: float

    @property
    def radius(self) -> float:
        """How far from its centre a foreground's mask reaches (soft border included)."""
        return float(self.outline.max()) + self.edge if self.outline is not None else math.inf


@dataclass(frozen=True, eq=False)
class ClipPlan:
    """Everything random about a clip: frame times and layers, background first."""

    times: np.ndarray
    layers: tuple[LayerPlan, ...]


def mask_outline(rng: np.random.Generator, kind: str, radius: float) -> np.ndarray:
    """Radius of a mask's outline at ``_PROFILE`` angles (star-shaped around its centre)."""
    phi = np.arange(_PROFILE) * (2 * np.pi / _PROFILE)
    if kind == "ellipse":
        a, b, turn = radius, radius * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
        return a * b / np.hypot(b * np.cos(phi - turn), a * np.sin(phi - turn))
    if kind == "polygon":  # vertices spread so that no gap reaches pi: the centre is inside
        k = int(rng.integers(4, 9))
        angles = (np.arange(k) + rng.uniform(-0.3, 0.3, k)) * (2 * np.pi / k)
        angles = np.sort((angles + rng.uniform(0, 2 * np.pi)) % (2 * np.pi))
        size = rng.uniform(0.5, 1.0, k) * radius
        vx, vy = size * np.cos(angles), size * np.sin(angles)
        side = np.searchsorted(angles, phi, side="right") - 1          # -1 wraps to the last
        ax, ay, bx, by = vx[side], vy[side], vx[(side + 1) % k], vy[(side + 1) % k]
        # where the ray at phi meets the side from vertex a to vertex b
        return (ax * by - ay * bx) / (np.cos(phi) * (by - ay) - np.sin(phi) * (bx - ax))
    waves = sum(rng.uniform(0, 0.25 / m) * np.cos(m * phi + rng.uniform(0, 2 * np.pi))
                for m in range(1, 5))
    return radius * (0.75 + waves)


def frame_corners(h: int, w: int) -> np.ndarray:
    """The frame's corners (4, 2) as (x, y), in frame coordinates."""
    return np.array([[-w, -h], [w, -h], [-w, h], [w, h]], dtype=np.float64) / 2


def mask_alpha(layer: LayerPlan, box: tuple[float, float, float, float],
           out: tuple[int, int]) -> Tensor:
    """Soft mask of a foreground on its source's pixel grid ``out``: (H, W) in [0, 1]."""
    x0, y0, x1, y1 = box
    ys = y0 + (torch.arange(out[0], dtype=torch.float64) + 0.5) * (y1 - y0) / out[0]
    xs = x0 + (torch.arange(out[1], dtype=torch.float64) + 0.5) * (x1 - x0) / out[1]
    ry, rx = torch.meshgrid(ys - layer.motion.centre[1], xs - layer.motion.centre[0], indexing="ij")
    position = torch.atan2(ry, rx).remainder(2 * math.pi) * (_PROFILE / (2 * math.pi))
    outline = torch.from_numpy(layer.outline)
    left, frac = position.floor().long() % _PROFILE, position - position.floor()
    reach = outline[left] * (1 - frac) + outline[(left + 1) % _PROFILE] * frac
    return ((reach - torch.hypot(rx, ry)) / layer.edge + 0.5).clamp(0, 1).float()


def relight(rgb: Tensor, layer: LayerPlan, t: float) -> Tensor:
    """Drift ``rgb`` (in place) to time ``t``: contrast about mid-grey, then brightness."""
    gain = 1 + layer.contrast * t
    return rgb.mul_(gain).add_(0.5 * (1 - gain) + layer.brightness * t)


def footprint(x: float, y: float, radius: float, h: int, w: int) -> tuple[slice, slice]:
    """Rows and columns, at twice the output size, of a disc around frame point (x, y)."""

    def cover(centre: float, length: int) -> slice:
        first = math.floor(2 * (centre - radius + length / 2) - 0.5)
        last = math.ceil(2 * (centre + radius + length / 2) - 0.5) + 1
        return slice(max(0, first), min(2 * length, last))

    return cover(y, h), cover(x, w)


def sample_layer(source: Tensor, box: tuple[float, ...], motion: Motion, xs: Tensor,
                  ys: Tensor, times: list[float]) -> Tensor:
    """``source`` (1, C, h, w), covering ``box`` (x0, y0, x1, y1) in layer coordinates, seen
    through ``motion`` at frame columns ``xs`` and rows ``ys`` at each time: (C, n, rows,
    cols). A time's sampling grid is affine in the pixel position: a row plus a column."""
    x0, y0, x1, y1 = box
    kx, ky = 2 / (x1 - x0), 2 / (y1 - y0)
    gx, gy = [], []
    for t in times:
        a, b, c, d, e, f = motion.inverse(t)
        gx.append((xs * (a * kx))[None] + (ys * (b * kx) + ((c - x0) * kx - 1))[:, None])
        gy.append((xs * (d * ky))[None] + (ys * (e * ky) + ((f - y0) * ky - 1))[:, None])
    grid = torch.stack([torch.cat(gx), torch.cat(gy)], -1)[None]  # the times stacked vertically
    padding = "border" if source.shape[1] == 3 else "zeros"         # a foreground has a mask
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.view(source.shape[1], len(times), len(ys), len(xs))
