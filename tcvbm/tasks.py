"""Tasks: how a clean clip ``X_0`` becomes the source clip ``X_1`` a bridge starts from.

Each task splits that into two steps so that training and inference share one code path:

* ``degrade(x0)`` gives what a user actually has (keyframes, a first frame, a low-resolution
  clip, a blurred or noisy clip);
* ``prepare(observation, num_frames)`` turns that observation into the source clip in model
  space (same frame count and size as ``X_0``) and, for a task that has one, a *context*:
  extra per-frame channels a model reads beside the source (None otherwise). ``lift`` is
  the source alone.

Training calls ``task(x0)`` (both steps); inference calls ``prepare`` on real input. Images
are clips with one frame and go through the same functions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Task", "TaskSample", "TrainingLayout", "FrameInterpolation", "ImageToVideo",
           "SuperResolution", "Blur", "Noise", "TASKS", "get_task", "task_from_config"]


class TaskSample(NamedTuple):
    source: Tensor        # X_1, (B, C, N, H, W)
    known_frames: Tensor  # (B, 1, N, 1, 1) bool: frames of X_0 that the source carries exactly
    observation: Tensor   # what degrade() returned
    context: Tensor | None = None  # (B, Task.context_channels, N, H, W), or None


class TrainingLayout(NamedTuple):
    """One way a training step lays out its window (:meth:`Task.training_layouts`)."""

    task: "Task"                # degrades and prepares the window
    num_frames: int             # the window's first ``num_frames`` frames are used
    times: list[float] | None   # the bridge's frame times (None: uniform, 0, 1, 2, ...)


def _require_clip(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (B, C, N, H, W) tensor, got {shape}")


def _map_frames(fn, x: Tensor) -> Tensor:
    """Apply an image op ``fn((B*N, C, H, W))`` to every frame of a clip."""
    b, c, n, h, w = x.shape
    frames = x.transpose(1, 2).reshape(b * n, c, h, w)
    out = fn(frames)
    return out.reshape(b, n, c, *out.shape[-2:]).transpose(1, 2)


@dataclass(frozen=True)
class Task:
    """Base class: subclasses define ``degrade``, ``lift`` and ``known_frames``; a task with
    a context defines ``prepare`` (and ``lift`` as its source)."""

    name: ClassVar[str]

    @property
    def context_channels(self) -> int:
        """Channels of the context :meth:`prepare` returns (0: it returns None)."""
        return 0

    def degrade(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def lift(self, observation: Tensor, num_frames: int) -> Tensor:
        raise NotImplementedError

    def prepare(self, observation: Tensor, num_frames: int) -> tuple[Tensor, Tensor | None]:
        """The source clip and the context from one observation (one pass: a context built
        from the same optical flow as the source costs no second flow)."""
        return self.lift(observation, num_frames), None

    def known_frames(self, num_frames: int) -> Tensor:
        """(N,) bool: frames the source carries exactly (none by default)."""
        return torch.zeros(num_frames, dtype=torch.bool)

    def training_layouts(self, num_frames: int) -> list[TrainingLayout]:
        """The layouts a training step draws one of: by default the task on the whole window
        at uniform times."""
        return [TrainingLayout(self, num_frames, None)]

    def __call__(self, x0: Tensor, generator: torch.Generator | None = None) -> TaskSample:
        _require_clip("x0", x0)
        num_frames = x0.shape[2]
        observation = self.degrade(x0, generator)
        source, context = self.prepare(observation, num_frames)
        known = self.known_frames(num_frames).to(x0.device).view(1, 1, num_frames, 1, 1)
        return TaskSample(source, known.expand(x0.shape[0], -1, -1, -1, -1), observation,
                          context)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class FrameInterpolation(Task):
    """Keep every ``factor``-th frame; fill the frames in between from their neighbours.

    Keyframes sit at 0, f, 2f, ...; ``N = K f + 1`` frames fit ``K + 1`` keyframes exactly.
    Frames after the last keyframe (when ``N - 1`` is not a multiple of ``f``) hold it.
    ``mode="blend"`` mixes the two neighbouring keyframes linearly, ``"nearest"`` copies
    the closer one (the earlier one on a tie), ``"flow"`` warps both along OpenCV DIS
    optical flow (classical interpolation, :mod:`tcvbm.flow`): a source that already
    follows the motion leaves the bridge only flow's errors to correct.

    ``context=True`` (mode ``"flow"`` only) keeps what the flow source mixes apart, so that
    a model can tell which keyframe to trust where the two disagree (occlusions, flow
    failures). Per frame, with ``tau`` in [0, 1] its time between its two keyframes, the
    :data:`CONTEXT_CHANNELS` channels of RGB clips are:

    * 0-2: ``A``, the left keyframe backward-warped to the frame's time;
    * 3-5: ``B``, the right keyframe warped there;
    * 6: ``1 - tau``, the weight of ``A`` in the source ``(1 - tau) A + tau B``; it also
      tells the model each frame's time position;
    * 7-8 and 9-10: the flows (x, y) from the frame to its left and right keyframe, divided
      by :data:`FLOW_SCALE` pixels so that they are of order one;
    * 11: ``|A - B|`` averaged over channels, where the candidates disagree;
    * 12-14: the two keyframes mixed linearly, unwarped (``mode="blend"``'s source): where
      flow fails (fades, blur, periodic texture) this is the better guess, and only a
      model that sees it can fall back to it per pixel.

    Keyframes (and frames after the last one) have ``A = B =`` blend ``=`` the frame, weight
    1 and zero flows. The fusion output of :class:`tcvbm.models.VideoBackbone` reads channels
    0-6 and the last three.
    """

    factor: int = 2
    mode: str = "blend"
    context: bool = False
    train_factors: tuple[int, ...] = ()
    name: ClassVar[str] = "interp"
    CONTEXT_CHANNELS: ClassVar[int] = 15
    FLOW_SCALE: ClassVar[float] = 32.0

    def __post_init__(self) -> None:
        def whole(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 2

        if not whole(self.factor):
            raise ValueError(f"factor: expected an integer >= 2, got {self.factor!r}")
        factors = self.train_factors
        if not isinstance(factors, (list, tuple)) or not all(whole(f) for f in factors):
            raise ValueError(f"train_factors: expected a list of integers >= 2, got {factors!r}")
        object.__setattr__(self, "train_factors", tuple(factors))
        if self.mode not in ("blend", "nearest", "flow"):
            raise ValueError(f"mode: expected 'blend', 'nearest' or 'flow', got {self.mode!r}")
        if not isinstance(self.context, bool) or (self.context and self.mode != "flow"):
            raise ValueError(f"context: true needs mode 'flow' (the context is flow's "
                             f"candidates), got context={self.context!r}, mode={self.mode!r}")

    @property
    def context_channels(self) -> int:
        return self.CONTEXT_CHANNELS if self.context else 0

    def to_config(self) -> dict[str, Any]:
        """Without ``context`` and ``train_factors`` when they are off: the format bundles
        saved before they existed."""
        config = super().to_config()
        if not self.context:
            del config["context"]
        if self.train_factors:
            config["train_factors"] = list(self.train_factors)
        else:
            del config["train_factors"]
        return config

    def training_layouts(self, num_frames: int) -> list[TrainingLayout]:
        """One layout per factor of ``train_factors`` (the task's own factor without them).

        Factor ``f`` keeps every ``f``-th frame of the window's first ``m`` frames, ``m`` the
        most that end on a keyframe, so its in-between frames sit at ``tau = 1/f, ..., (f-1)/f``
        (x3: 1/3 and 2/3 in a 4-frame pair window; x4: 1/4, 1/2, 3/4 in 5 frames). Each
        frame's context carries its ``tau``, and the bridge correlates the frames at
        :meth:`bridge_times`, in this model's units, as inference does at any rate: one model
        learns every time between two frames, not only the middle.
        """
        layouts = []
        for f in self.train_factors or (self.factor,):
            used = (num_frames - 1) // f * f + 1
            if used < f + 1:
                raise ValueError(f"train_factors: factor {f} needs windows of at least {f + 1} "
                                 f"frames, got {num_frames}")
            variant = replace(self, factor=f, train_factors=())
            uniform = f == self.factor and used == num_frames
            times = None if uniform else self.bridge_times(variant.layout(used))
            layouts.append(TrainingLayout(variant, used, times))
        return layouts

    def num_keyframes(self, num_frames: int) -> int:
        return (num_frames - 1) // self.factor + 1

    def degrade(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _require_clip("x0", x0)
        return x0[:, :, :: self.factor]

    def lift(self, observation: Tensor, num_frames: int) -> Tensor:
        return self.prepare(observation, num_frames)[0]

    def layout(self, num_frames: int) -> list[float]:
        """The training layout's frame positions in keyframe units: frame ``i`` at ``i / f``,
        the frames after the last keyframe at it (what :meth:`prepare` places)."""
        last = self.num_keyframes(num_frames) - 1
        return [min(i / self.factor, last) for i in range(num_frames)]

    def bridge_times(self, times: Sequence[float]) -> list[float]:
        """The bridge's frame times of frames at ``times`` (keyframe units): ``factor * t``,
        the units in which the training layout's frames are 1 apart, so a model's prior
        correlates frames at any positions as it did the frames it was trained on
        (``bridge.with_num_frames(len(times)).with_times(...)``)."""
        return [self.factor * float(t) for t in times]

    def prepare(self, observation: Tensor, num_frames: int) -> tuple[Tensor, Tensor | None]:
        _require_clip("observation", observation)
        k = observation.shape[2]
        if k != self.num_keyframes(num_frames):
            raise ValueError(
                f"observation: {k} keyframes do not fill {num_frames} frames at factor "
                f"{self.factor} (expected {self.num_keyframes(num_frames)})")
        return self.prepare_at(observation, self.layout(num_frames))

    def prepare_at(self, observation: Tensor,
                   times: Sequence[float]) -> tuple[Tensor, Tensor | None]:
        """:meth:`prepare` for frames at any positions between the keyframes.

        ``times``: one position per frame in keyframe units, non-decreasing, in
        ``[0, K - 1]``: frame ``j`` lies between keyframes ``floor(t)`` and ``floor(t) + 1``
        at ``tau = t - floor(t)`` (a whole ``t`` is that keyframe). Any output rate places
        its frames this way; :meth:`layout` is the training layout, which :meth:`prepare`
        passes. The context's weight channel carries each frame's ``1 - tau``.
        """
        _require_clip("observation", observation)
        k = observation.shape[2]
        t = torch.as_tensor(times, dtype=torch.float64).flatten()
        if (not len(t) or not bool(torch.isfinite(t).all()) or bool((t.diff() < 0).any())
                or float(t[0]) < 0 or float(t[-1]) > k - 1):
            raise ValueError(f"times: expected non-decreasing positions in [0, {k - 1}] (the "
                             f"keyframes of the observation), got {t.tolist()}")
        left = t.floor().long().clamp_max(k - 1)
        right = (left + 1).clamp_max(k - 1)
        tau = torch.where(right == left, torch.zeros_like(t), t - left)
        alpha = tau.to(device=observation.device, dtype=observation.dtype)
        if self.mode == "nearest":
            alpha = (alpha > 0.5).to(observation.dtype)
        mix = alpha.view(1, 1, -1, 1, 1)
        left, right = left.to(observation.device), right.to(observation.device)
        blended = (1 - mix) * observation[:, :, left] + mix * observation[:, :, right]
        if self.mode == "flow":
            return self._flow(observation, blended, left.cpu(), tau)
        return blended, None

    def _flow(self, observation: Tensor, blended: Tensor, left: Tensor,
              tau: Tensor) -> tuple[Tensor, Tensor | None]:
        """The flow source, and the context (class docstring) when it is asked for.

        Frames with two distinct keyframes (``tau > 0``; ``left``: the earlier one's index)
        are flow's; the others keep ``blended`` (their keyframe). The pairs whose frames sit
        at the same ``tau``s are warped by one call (each pair's flow is computed once): the
        training layout is one call for all pairs. Computed on the CPU, returned on
        ``observation``'s device and in its dtype.
        """
        from tcvbm.flow import warp_candidates  # OpenCV: only for this mode

        b, c, k, h, w = observation.shape
        keys = (observation.detach().float().clamp(-1, 1).cpu() + 1) / 2
        between = tau > 0
        per_pair: dict[int, list[int]] = {}
        for j in between.nonzero().flatten().tolist():
            per_pair.setdefault(int(left[j]), []).append(j)
        groups: dict[tuple[float, ...], tuple[list[int], list[int]]] = {}   # taus: pairs, frames
        for pair, members in per_pair.items():
            pairs, frames = groups.setdefault(tuple(tau[members].tolist()), ([], []))
            pairs.append(pair)
            frames.extend(members)

        def to_frames(x: Tensor, count: int) -> Tensor:
            """(B P, T, ch, H, W) -> (B, ch, P T, H, W): pair p's frames, in time order."""
            return x.reshape(b, count * x.shape[1], *x.shape[2:]).transpose(1, 2)

        linear = blended.detach().float().cpu().clamp(-1, 1)
        source = linear.clone()
        warped = []
        for taus, (pairs, frames) in groups.items():
            cand = warp_candidates(keys[:, :, pairs].transpose(1, 2).reshape(-1, c, h, w),
                                   keys[:, :, [p + 1 for p in pairs]].transpose(1, 2)
                                   .reshape(-1, c, h, w), list(taus))
            t = torch.tensor(taus, dtype=torch.float32).view(1, -1, 1, 1, 1)
            source[:, :, frames] = to_frames((1 - t) * cand.left + t * cand.right,
                                             len(pairs)) * 2 - 1
            warped.append((frames, len(pairs), cand))
        source = source.clamp(-1, 1)
        context = None
        if self.context:
            cand_a, cand_b = source.clone(), source.clone()
            flows = torch.zeros(b, 4, source.shape[2], h, w)
            for frames, count, cand in warped:
                cand_a[:, :, frames] = (to_frames(cand.left, count) * 2 - 1).clamp(-1, 1)
                cand_b[:, :, frames] = (to_frames(cand.right, count) * 2 - 1).clamp(-1, 1)
                flows[:, :, frames] = to_frames(torch.cat([cand.left_flow, cand.right_flow], 2),
                                                count)
            prior = (1 - tau).float().view(1, 1, -1, 1, 1).expand(b, 1, -1, h, w)
            context = torch.cat([cand_a, cand_b, prior, flows / self.FLOW_SCALE,
                                 (cand_a - cand_b).abs().mean(1, keepdim=True),
                                 linear], dim=1)
            context = context.to(device=observation.device, dtype=observation.dtype)
        return source.to(device=observation.device, dtype=observation.dtype), context

    def known_frames(self, num_frames: int) -> Tensor:
        return torch.arange(num_frames) % self.factor == 0


@dataclass(frozen=True)
class ImageToVideo(Task):
    """The first frame, repeated over the clip."""

    name: ClassVar[str] = "i2v"

    def degrade(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _require_clip("x0", x0)
        return x0[:, :, :1]

    def lift(self, observation: Tensor, num_frames: int) -> Tensor:
        _require_clip("observation", observation)
        if observation.shape[2] != 1:
            raise ValueError(f"observation: expected one frame, got {observation.shape[2]}")
        return observation.expand(-1, -1, num_frames, -1, -1).contiguous()

    def known_frames(self, num_frames: int) -> Tensor:
        return torch.arange(num_frames) == 0


@dataclass(frozen=True)
class SuperResolution(Task):
    """Antialiased bicubic downscale by ``scale``; the source is its bicubic upscale."""

    scale: int = 4
    name: ClassVar[str] = "vsr"

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4, 8):
            raise ValueError(f"scale: expected 2, 3, 4 or 8, got {self.scale!r}")

    def degrade(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _require_clip("x0", x0)
        h, w = x0.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(f"x0: size {h}x{w} is not divisible by scale {self.scale}")
        size = (h // self.scale, w // self.scale)
        return _map_frames(lambda f: F.interpolate(f, size=size, mode="bicubic",
                                                   antialias=True, align_corners=False), x0)

    def lift(self, observation: Tensor, num_frames: int) -> Tensor:
        _require_clip("observation", observation)
        size = (observation.shape[-2] * self.scale, observation.shape[-1] * self.scale)
        up = _map_frames(lambda f: F.interpolate(f, size=size, mode="bicubic",
                                                 align_corners=False), observation)
        return up.clamp(-1.0, 1.0)


@dataclass(frozen=True)
class Blur(Task):
    """Separable Gaussian blur of standard deviation ``sigma`` pixels on every frame."""

    sigma: float = 1.5
    name: ClassVar[str] = "blur"

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma: must be > 0, got {self.sigma!r}")

    def degrade(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _require_clip("x0", x0)
        radius = max(1, math.ceil(3 * self.sigma))
        grid = torch.arange(-radius, radius + 1, device=x0.device, dtype=x0.dtype)
        kernel = torch.exp(-0.5 * (grid / self.sigma) ** 2)
        kernel = kernel / kernel.sum()
        c = x0.shape[1]

        def blur(f: Tensor) -> Tensor:
            f = F.pad(f, (radius, radius, radius, radius), mode="replicate")
            f = F.conv2d(f, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
            return F.conv2d(f, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

        return _map_frames(blur, x0)

    def lift(self, observation: Tensor, num_frames: int) -> Tensor:
        _require_clip("observation", observation)
        return observation


@dataclass(frozen=True)
class Noise(Task):
    """Additive Gaussian noise of standard deviation ``sigma`` (in [-1, 1] units)."""

    sigma: float = 0.1
    name: ClassVar[str] = "noise"

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma: must be > 0, got {self.sigma!r}")

    def degrade(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _require_clip("x0", x0)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return x0 + self.sigma * noise

    def lift(self, observation: Tensor, num_frames: int) -> Tensor:
        _require_clip("observation", observation)
        return observation


TASKS: dict[str, type[Task]] = {
    "interp": FrameInterpolation,
    "i2v": ImageToVideo,
    "vsr": SuperResolution,
    # Image restoration: the same classes on one-frame clips.
    "image-sr": SuperResolution,
    "image-blur": Blur,
    "image-noise": Noise,
    "blur": Blur,
    "noise": Noise,
}


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name: ``get_task("interp", factor=4)``."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; expected one of {sorted(TASKS)}")
    try:
        return TASKS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"task {name!r}: bad arguments {kwargs}: {err}") from None


def task_from_config(config: dict[str, Any]) -> Task:
    """Inverse of :meth:`Task.to_config`."""
    config = dict(config)
    return get_task(config.pop("name"), **config)
