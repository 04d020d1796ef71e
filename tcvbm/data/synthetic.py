"""Synthetic motion clips over real photographs, with exact in-between frames.

Real video is scarce, so training can mix real clips with motion made up over still photos
(in the manner of FlyingChairs): a background photo moved by a smooth random affine motion,
and foreground layers, crops of other photos cut out by soft ellipse, polygon or blob masks,
each moving on its own. Every frame is rendered from the photos at its own time, so the
in-between frames of a clip are exact ground truth at whatever times are asked for, not an
interpolation of the keyframes; with ``times="random"`` they sit at uneven times, which
arbitrary-rate interpolation needs.

The motion is not exactly linear (a small acceleration on top of translation, rotation and
zoom), since a model trained on linear motion only learns to average flows. Sensor noise,
motion blur and compression artefacts are not simulated.

:class:`SyntheticMotion` samples like :class:`tcvbm.data.ClipDataset`: an ``IterableDataset``
of float ``(3, N, H, W)`` clips in [-1, 1] (rounded to 8 bits like decoded video), with
``set_epoch``/``set_shard``, ``len`` = clips per epoch of this shard, and clip ``i`` of epoch
``e`` a pure function of (``seed``, ``e``, ``i``). This module draws and renders clips; the
geometry of a clip's layers (motion, masks, sampling) is :mod:`tcvbm.data.scene`.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from tcvbm.data.clips import ShardedEpochs
from tcvbm.data.files import list_files
from tcvbm.data.scene import (
    MASK_KINDS,
    ClipPlan,
    LayerPlan,
    Motion,
    footprint,
    frame_corners,
    mask_alpha,
    mask_outline,
    relight,
    sample_layer,
)
from tcvbm.data.video import IMAGE_EXTENSIONS, Size, as_hw
from tcvbm.data.visual import from_uint8

__all__ = ["SyntheticMotion", "load_photo"]

_MAX_SPIN = 0.03          # rad per frame, and _MAX_TURN over a clip: rotation stays mild
_MAX_TURN = 0.35
_MAX_ZOOM = 0.03          # log-scale per frame, and _MAX_ZOOM_TOTAL over a clip
_MAX_ZOOM_TOTAL = math.log(1.5)
_MARGIN = 2.0             # output pixels of photo kept beyond what the motion reaches


def load_photo(path: str | os.PathLike, short_side: int) -> Tensor:
    """A photo as uint8 (3, H, W), upright (EXIF orientation applied), its short side
    reduced to at most ``short_side`` (never enlarged).

    Photos are large (up to 6k pixels) and a clip needs only a few times the output size:
    JPEGs are decoded at a reduced scale directly, then resized with an antialiasing filter.
    """
    try:
        with Image.open(path) as img:
            img.draft("RGB", (short_side, short_side))
            img = ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ValueError(f"stills: cannot read {os.fspath(path)}: {err}") from err
    scale = short_side / min(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)




class SyntheticMotion(ShardedEpochs):
    """Clips of ``num_frames`` frames of photos in motion, ``clips_per_epoch`` per epoch.

    ``stills``: a folder (searched recursively) or a list of image files. Each clip moves a
    background photo, shown with its short side 1-2x the output's, and ``layers``
    (min, max) foreground crops of photos. Every layer moves at most ``max_motion`` pixels
    per frame at the output size (its top speed is drawn up to that bound) and drifts in
    brightness and contrast by up to ``photometric`` per frame.

    Frame ``k`` sits at time ``t_k``: ``t_k = k`` with ``times="uniform"``; with
    ``"random"`` the keyframes (every ``keyframe_every``-th frame and the last, default:
    the first and last) keep ``t_k = k`` and the frames between them sit at sorted random
    times in between. ``return_times=True`` yields ``(clip, times)`` with ``times`` float
    ``(N,)``; by default only the clip, like :class:`tcvbm.data.ClipDataset`.
    ``cache_photos``: decoded photos kept per worker (each reduced to 4x the output's
    short side: twice the largest zoom, at twice the output resolution).

    Rendering: each layer's region of its photo is resized once (antialiased) to twice the
    output resolution, sampled along the motion with ``grid_sample`` at twice the output
    size, composited with soft alpha and averaged down 2x2; the background's region covers
    everything the motion shows, so borders are always real photo.
    """

    def __init__(
        self,
        stills: str | os.PathLike | Sequence[str | os.PathLike],
        num_frames: int,
        size: Size,
        clips_per_epoch: int,
        seed: int = 0,
        *,
        max_motion: float = 8.0,
        layers: tuple[int, int] = (1, 3),
        times: str = "uniform",
        keyframe_every: int | None = None,
        photometric: float = 0.01,
        return_times: bool = False,
        cache_photos: int = 64,
    ) -> None:
        if num_frames < 1 or clips_per_epoch < 1 or cache_photos < 1:
            raise ValueError(f"num_frames, clips_per_epoch and cache_photos must be >= 1, got "
                             f"{num_frames}, {clips_per_epoch}, {cache_photos}")
        if not (len(layers) == 2 and 0 <= layers[0] <= layers[1]):
            raise ValueError(f"layers must be (min, max) with 0 <= min <= max, got {layers!r}")
        if times not in ("uniform", "random"):
            raise ValueError(f"times must be 'uniform' or 'random', got {times!r}")
        if keyframe_every is not None and keyframe_every < 1:
            raise ValueError(f"keyframe_every must be >= 1, got {keyframe_every}")
        if max_motion < 0 or photometric < 0:
            raise ValueError(f"max_motion and photometric must be >= 0, got {max_motion}, "
                             f"{photometric}")
        super().__init__()
        self.photos = _list_stills(stills)
        self.num_frames, self.size = num_frames, as_hw(size)
        self.clips_per_epoch, self.seed = clips_per_epoch, seed
        self.max_motion, self.layers = float(max_motion), (int(layers[0]), int(layers[1]))
        self.times, self.photometric, self.return_times = times, float(photometric), return_times
        self.keyframe_every = keyframe_every or max(1, num_frames - 1)
        self.cache_photos = cache_photos
        self._cache: OrderedDict[int, Tensor] = OrderedDict()

    # -- the dataset interface ---------------------------------------------------
    def __len__(self) -> int:
        """Clips per epoch for this shard (all clips when not sharded)."""
        return len(range(self.rank, self.clips_per_epoch, self.world_size))

    def __getitem__(self, i: int) -> Tensor | tuple[Tensor, Tensor]:
        """Clip ``i`` of the current epoch (unsharded numbering)."""
        if not -self.clips_per_epoch <= i < self.clips_per_epoch:
            raise IndexError(f"clip index {i} out of range for {self.clips_per_epoch} clips")
        return self._item(self._epoch, i % self.clips_per_epoch)

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        """This shard's clips: clips ``rank::world_size``, split again between workers."""
        epoch, wid, workers = self._start_pass()
        for i in range(self.rank, self.clips_per_epoch, self.world_size)[wid::workers]:
            yield self._item(epoch, i)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # each worker decodes its own photos
        return state

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(photos={len(self.photos)}, num_frames={self.num_frames}, "
                f"size={self.size}, clips_per_epoch={len(self)}, max_motion={self.max_motion})")

    def _item(self, epoch: int, i: int) -> Tensor | tuple[Tensor, Tensor]:
        plan = self.plan(i, epoch)
        clip = self.render(plan)
        return (clip, torch.from_numpy(plan.times).float()) if self.return_times else clip

    # -- planning ----------------------------------------------------------------
    def plan(self, i: int, epoch: int | None = None) -> ClipPlan:
        """The random draws of clip ``i`` of ``epoch`` (default: the current one)."""
        rng = np.random.default_rng([self.seed, self._epoch if epoch is None else epoch, i])
        count = int(rng.integers(self.layers[0], self.layers[1] + 1))
        layers = [self._plan_layer(rng, None)]
        layers += [self._plan_layer(rng, MASK_KINDS[int(rng.integers(3))]) for _ in range(count)]
        return ClipPlan(self._frame_times(rng), tuple(layers))

    def _frame_times(self, rng: np.random.Generator) -> np.ndarray:
        times = np.arange(self.num_frames, dtype=np.float64)
        if self.times == "random":
            keys = sorted({*range(0, self.num_frames, self.keyframe_every), self.num_frames - 1})
            for a, b in zip(keys, keys[1:]):
                times[a + 1 : b] = np.sort(rng.uniform(a, b, b - a - 1))
        return times

    def _plan_layer(self, rng: np.random.Generator, kind: str | None) -> LayerPlan:
        """The background (``kind`` None) or a foreground with a mask of that kind."""
        h, w = self.size
        if kind is None:
            centre, outline, edge = (0.0, 0.0), None, 0.0
        else:
            centre = (rng.uniform(-w / 2, w / 2), rng.uniform(-h / 2, h / 2))
            outline = mask_outline(rng, kind, rng.uniform(0.12, 0.35) * min(h, w))
            edge = 1.0 if kind != "blob" else 0.15 * float(outline.mean())
        motion = self._draw_motion(rng, centre, outline, edge)
        photo, zoom_draw = int(rng.integers(len(self.photos))), float(rng.uniform(1.0, 2.0))
        place = (float(rng.uniform()), float(rng.uniform()))
        light = rng.uniform(-1, 1, 2) * self.photometric
        return LayerPlan(photo, zoom_draw, place, motion, outline, edge,
                         float(light[0]), float(light[1]))

    def _draw_motion(self, rng: np.random.Generator, centre: tuple[float, float],
                     outline: np.ndarray | None, edge: float) -> Motion:
        """A random motion, scaled so that its top speed is a random part of ``max_motion``.

        The draws fix the motion's shape (heading, bend, turn and zoom relative to the
        translation); one factor scales it, found by bisection because the speed is not
        linear in it (the zoom and turn act on the translated content).
        """
        h, w = self.size
        span = float(self.num_frames - 1)
        corners = frame_corners(h, w)
        reach = math.hypot(h, w) / 2 if outline is None else float(outline.max()) + edge
        heading, bend = rng.uniform(0, 2 * np.pi, 2)
        curve = rng.uniform(0, 0.5) / max(span, 1.0)  # the speed changes by up to half
        turn, zoom = rng.uniform(-0.4, 0.4) / reach, rng.uniform(-0.3, 0.3) / reach
        target = rng.uniform() * self.max_motion
        spin_cap = min(_MAX_SPIN, _MAX_TURN / max(span, 1.0))
        zoom_cap = min(_MAX_ZOOM, _MAX_ZOOM_TOTAL / max(span, 1.0))

        def scaled(c: float) -> Motion:
            return Motion(centre, (c * math.cos(heading), c * math.sin(heading)),
                          (c * curve * math.cos(bend), c * curve * math.sin(bend)),
                          float(np.clip(c * turn, -spin_cap, spin_cap)),
                          float(np.clip(c * zoom, -zoom_cap, zoom_cap)))

        def speed(c: float) -> float:
            m = scaled(c)
            if outline is None:
                return m.max_speed(span, corners)
            return m.max_speed(span, radius=reach)

        low, high = 0.0, max(target, 1e-6)
        while speed(high) <= target and high < 1e6:
            low, high = high, 2 * high
        for _ in range(24):  # speed(low) <= target throughout
            mid = (low + high) / 2
            low, high = (mid, high) if speed(mid) <= target else (low, mid)
        return scaled(low)

    # -- rendering ---------------------------------------------------------------
    def render(self, plan: ClipPlan, times: Sequence[float] | np.ndarray | None = None) -> Tensor:
        """Frames of ``plan`` at ``times`` (default: the plan's), float (3, n, H, W) in [-1, 1].

        Any time in ``[0, num_frames - 1]`` renders exactly, from the photos, so a frame
        rendered on its own equals the same frame of the clip.
        """
        times = plan.times if times is None else np.asarray(times, dtype=np.float64).reshape(-1)
        span = self.num_frames - 1
        if times.size == 0 or times.min() < 0 or times.max() > span:
            raise ValueError(f"times must be non-empty and within [0, {span}], "
                             f"got {times.tolist()}")
        h, w = self.size
        # frame coordinates of the pixel centres at twice the output size
        xs = (torch.arange(2 * w, dtype=torch.float32) + 0.5) / 2 - w / 2
        ys = (torch.arange(2 * h, dtype=torch.float32) + 0.5) / 2 - h / 2
        back, *fronts = plan.layers
        source, box = self._layer_source(back, span)
        frames = sample_layer(source, box, back.motion, xs, ys, times.tolist())  # (3, n, ...)
        for j, t in enumerate(times.tolist()):
            relight(frames[:, j], back, t)
        for layer in fronts:
            source, box = self._layer_source(layer, span)
            for j, t in enumerate(times.tolist()):
                rows, cols = footprint(*layer.motion.reach(t, layer.radius + _MARGIN), h, w)
                if rows.start >= rows.stop or cols.start >= cols.stop:
                    continue  # the layer is out of the frame at this time
                patch = sample_layer(source, box, layer.motion, xs[cols], ys[rows], [t])[:, 0]
                under = frames[:, j, rows, cols]
                under += patch[3:] * (relight(patch[:3], layer, t) - under)
        # 2x2 means over the frames stacked vertically (an even number of rows each)
        pixels = F.avg_pool2d(frames.view(3, -1, 2 * w), 2).clamp_(0, 1).mul_(255).round_()
        return from_uint8(pixels.to(torch.uint8).view(3, -1, h, w).permute(1, 2, 3, 0))

    def _layer_source(self, layer: LayerPlan, span: float) -> tuple[Tensor, tuple[float, ...]]:
        """The layer's photo region at twice the output resolution (RGB, plus alpha for a
        foreground), and the box (x0, y0, x1, y1) it covers in layer coordinates."""
        h, w = self.size
        m = layer.motion
        if layer.outline is None:  # all the frame shows over the clip, sampled under a pixel apart
            corners = frame_corners(h, w)
            steps = max(2, math.ceil(span * (self.max_motion + 1)) + 1)
            seen = np.array([m.to_layer(corners[:, 0], corners[:, 1], t)
                             for t in np.linspace(0.0, span, steps).tolist()])
            need = (seen[:, 0].min(), seen[:, 1].min(), seen[:, 0].max(), seen[:, 1].max())
        else:
            r = layer.radius
            need = (m.centre[0] - r, m.centre[1] - r, m.centre[0] + r, m.centre[1] + r)
        need = (need[0] - _MARGIN, need[1] - _MARGIN, need[2] + _MARGIN, need[3] + _MARGIN)
        photo = self._photo(layer.photo)
        ph, pw = photo.shape[1:]
        short, photo_short = min(h, w), min(ph, pw)
        # the drawn zoom, or more where the region would not fit in the photo
        zoom = max(layer.zoom_draw, (need[2] - need[0]) * photo_short / (short * pw),
                   (need[3] - need[1]) * photo_short / (short * ph))
        k = photo_short / (zoom * short)  # photo pixels per layer unit
        box, crop = [], []
        for lo, hi, length, place in [(need[0], need[2], pw, layer.place[1]),
                                      (need[1], need[3], ph, layer.place[0])]:
            start = place * max(0.0, length - (hi - lo) * k)
            first, last = math.floor(start), min(length, math.ceil(start + (hi - lo) * k))
            box.append((lo + (first - start) / k, lo + (last - start) / k))
            crop.append(slice(first, last))
        (x0, x1), (y0, y1) = box
        # twice the output resolution where the motion shrinks content most (e^(zoom span))
        density = 2 * min(1.0, math.exp(m.zoom * span))
        out = (max(1, round((y1 - y0) * density)), max(1, round((x1 - x0) * density)))
        region = photo[None, :, crop[1], crop[0]].float() / 255
        source = F.interpolate(region, size=out, mode="bilinear", antialias=True,
                               align_corners=False)
        if layer.outline is not None:
            source = torch.cat([source, mask_alpha(layer, (x0, y0, x1, y1), out)[None, None]], 1)
        return source, (x0, y0, x1, y1)

    def _photo(self, index: int) -> Tensor:
        """Photo ``index``, decoded once per worker (the least recently used one goes)."""
        photo = self._cache.pop(index, None)
        if photo is None:
            photo = load_photo(self.photos[index], 4 * min(self.size))
            while len(self._cache) >= self.cache_photos:
                self._cache.popitem(last=False)
        self._cache[index] = photo
        return photo


def _list_stills(stills: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The image files of ``stills``, each checked to open as an image."""
    if isinstance(stills, (str, os.PathLike)):
        root = Path(stills)
        if root.is_dir():
            paths = list_files(root, IMAGE_EXTENSIONS)
        elif root.is_file():
            paths = [os.fspath(root)]
        else:
            raise ValueError(f"stills: {os.fspath(root)} is neither a folder nor an image file")
        where = os.fspath(root)
    else:
        paths, where = [os.fspath(p) for p in stills], "the list given"
    if not paths:
        raise ValueError(f"stills: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {where}")
    for path in paths:
        try:
            with Image.open(path):
                pass  # reads the header only
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"stills: cannot read {path}: {err}") from err
    return paths
