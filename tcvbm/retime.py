"""Output frames at any time: the retiming plan, its streaming, and repeated-frame detection.

Doubling the frame rate puts every output at an input or halfway between two; any other rate
(60 fps from 24, 25 or 23.976, a factor of 2.5) puts outputs anywhere in between. A
:class:`RetimePlan` says where: output ``k`` is at ``times[0] + k / fps`` on the input's clock,
for as many outputs as keep the input's duration. An output within :data:`KEY_TOLERANCE` of
an input is that input, bit for bit; any other is the point ``tau`` of the way from the input
before it to the input after it, which a ``pair_fn`` makes. :class:`Retimer` streams a plan
shot by shot; it is a :class:`tcvbm.windows.Stage`, as the window blender is, so
:func:`tcvbm.windows.restore_stream` drives it (uint8 frames in and out, a cut ends a
shot). :class:`DuplicateDetector` finds repeated frames (animation on twos, 24 fps padded
to 30, encoder duplicates); the retimer then interpolates between the unique frames at the
times they first appear, so motion does not stall. Tensors and numbers only: no files, no
models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import torch.nn.functional as F
from torch import Tensor

from tcvbm.workers import OrderedCalls

__all__ = ["PairFn", "KEY_TOLERANCE", "DUPLICATE_MEAN", "DUPLICATE_BLOCK", "output_rate",
           "input_duration", "output_count", "Slot", "RetimePlan", "Timeline", "Retimer",
           "frame_difference", "DuplicateDetector", "duplicate_mask"]

PairFn = Callable[..., Tensor]
"""``fn(left, right, taus, key=None)`` -> (len(taus), C, H, W): float (C, H, W) frames in
[-1, 1], taus in (0, 1) increasing; frame ``i`` is the scene ``taus[i]`` of the way from
``left`` to ``right``. ``key`` names the call as a window function's does
(:data:`tcvbm.windows.WindowFn`)."""

# An output this close to an input, in output periods, is that input. 1/1000 of a period is
# far above the float64 rounding of k / fps (about 1e-12 periods after hours of video) and far
# below visible motion. Constant-rate input should be planned at its exact times (i / fps,
# RetimePlan.constant): container timestamps rounded to the millisecond are off by far more,
# and the outputs at their frames would be made by pair_fn rather than copied.
KEY_TOLERANCE = 1e-3
# A duplicate: mean absolute difference below DUPLICATE_MEAN 8-bit levels and no whole
# 16x16 block with a mean above DUPLICATE_BLOCK (the evidence: DuplicateDetector).
DUPLICATE_MEAN = 0.5
DUPLICATE_BLOCK = 8.0
_BLOCK = 16
_LEVELS = 127.5     # 8-bit levels per unit of the [-1, 1] range (tcvbm.data.visual.from_uint8)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def output_rate(fps_in: float, *, factor: float | None = None, fps: float | None = None) -> float:
    """The output rate of ``--factor F`` (``F * fps_in``, any ``F > 1``) or of ``--fps R``.

    Exactly one of ``factor`` and ``fps`` is given. ``fps`` may be below the input's rate:
    outputs are then made at their own times too, not picked from the inputs.
    """
    if (factor is None) == (fps is None):
        raise ValueError("rate: give either a factor or an output fps (exactly one)")
    fps_in = _positive("input fps", fps_in)
    if fps is not None:
        return _positive("fps", fps)
    if _positive("factor", factor) <= 1:
        raise ValueError(f"factor: expected a number > 1, got {factor!r}")
    return fps_in * factor


def input_duration(times: Sequence[float], fps_in: float) -> float:
    """Seconds shown by frames at ``times``: the last one lasts one period of ``fps_in``.

    That is ``n / fps`` for a constant rate. For a variable rate ``fps_in`` is the typical
    one (:func:`tcvbm.data.streams.variable_rate`): the last frame is shown for as long as
    most frames are, not for the mean period, which a long-held frame earlier would
    stretch. Frames that all share one time last ``1 / fps_in`` each.
    """
    if not len(times):
        raise ValueError("times: no input frames")
    period, span = 1 / _positive("input fps", fps_in), max(times) - times[0]
    return span + period if span > 0 else len(times) * period


def output_count(duration: float, fps: float) -> int:
    """How many outputs at ``fps`` last ``duration``, to the nearest frame (half rounds up)."""
    return max(1, math.floor(duration * _positive("fps", fps) + 0.5))


class Slot(NamedTuple):
    """One output: input ``left`` itself (``left == right``, ``tau == 0``) or the point
    ``tau`` in (0, 1) of the way from input ``left`` to input ``right``."""

    time: float
    left: int
    right: int
    tau: float


@dataclass(frozen=True)
class RetimePlan:
    """Inputs at ``times`` (seconds, increasing; constant or variable rate) and ``count``
    outputs at ``fps``, output ``k`` at ``times[0] + k / fps``."""

    times: tuple[float, ...]
    fps: float
    count: int

    def __post_init__(self) -> None:
        if not self.times:
            raise ValueError("times: no input frames")
        if not all(math.isfinite(t) for t in self.times):
            raise ValueError("times: input times must be finite numbers")
        _positive("fps", self.fps)
        if self.count < 1:
            raise ValueError(f"count: expected at least one output, got {self.count}")

    @classmethod
    def for_input(cls, times: Iterable[float], fps_in: float, fps_out: float) -> RetimePlan:
        """The plan that keeps the duration of inputs at ``times`` (:func:`input_duration`)."""
        times = tuple(float(t) for t in times)
        return cls(times, float(fps_out), output_count(input_duration(times, fps_in), fps_out))

    @classmethod
    def constant(cls, frames: int, fps_in: float, fps_out: float) -> RetimePlan:
        """The plan of ``frames`` inputs at a constant ``fps_in``, at their exact times."""
        return cls.for_input((i / fps_in for i in range(frames)), fps_in, fps_out)

    def slots(self, duplicates: Sequence[bool] | None = None) -> list[Slot]:
        """Every output's slot for one shot, ``duplicates[j]`` marking input ``j`` a repeat."""
        if duplicates is not None and len(duplicates) != len(self.times):
            raise ValueError(f"duplicates: {len(duplicates)} flags for {len(self.times)} inputs")
        timeline = Timeline(self)
        out = [s for j in range(len(self.times))
               for s in timeline.push(unique=not (duplicates and duplicates[j]))]
        return out + timeline.finish()


class Timeline:
    """The plan's slots, handed out as input frames arrive: the frame-free half of
    :class:`Retimer`, so the slots a plan lists are the ones a stream makes.

    An input completes the outputs before it (between the shot's previous unique input and
    it) and the one at its time. A repeat completes nothing: its time passes and the outputs
    around it fall between the unique inputs on either side. :meth:`finish` ends a shot: the
    outputs up to the next input's time (to the end after the last) hold the shot's last
    unique input, so no output mixes two shots. The first input of a shot is always unique.
    """

    def __init__(self, plan: RetimePlan) -> None:
        self.plan = plan
        self.next = 0                   # the next output to hand out
        self.received = 0               # inputs pushed
        self.last: int | None = None    # the shot's latest unique input

    def _position(self, j: int) -> float:
        """Input ``j``'s time in output periods (output ``k`` is at position ``k``)."""
        return (self.plan.times[j] - self.plan.times[0]) * self.plan.fps

    def _take(self, stop: int) -> range:
        ks = range(self.next, min(max(stop, self.next), self.plan.count))
        self.next = ks.stop
        return ks

    def _slot(self, k: int, left: int, right: int, tau: float) -> Slot:
        return Slot(self.plan.times[0] + k / self.plan.fps, left, right, tau)

    def push(self, unique: bool = True) -> list[Slot]:
        """The slots the next input completes."""
        j = self.received
        if j >= len(self.plan.times):
            raise ValueError(f"frame {j}: the plan has only {len(self.plan.times)} input times")
        self.received += 1
        if not unique and self.last is not None:
            return []
        x = self._position(j)
        slots = []
        if self.last is not None:   # outputs strictly between the previous unique input and j
            x0 = self._position(self.last)
            slots = [self._slot(k, self.last, j, (k - x0) / (x - x0))
                     for k in self._take(math.ceil(x - KEY_TOLERANCE))]
        slots += [self._slot(k, j, j, 0.0) for k in self._take(math.floor(x + KEY_TOLERANCE) + 1)]
        self.last = j
        return slots

    def finish(self) -> list[Slot]:
        """End the shot: its last unique input holds up to the next input (or the end)."""
        if self.last is None:
            return []
        stop = self.plan.count
        if self.received < len(self.plan.times):
            stop = math.ceil(self._position(self.received) - KEY_TOLERANCE)
        slots = [self._slot(k, self.last, self.last, 0.0) for k in self._take(stop)]
        self.last = None
        return slots


class Retimer:
    """Float (C, H, W) frames in, the plan's output frames out, in order, shot by shot.

    Outputs at input times are the input tensors themselves; the outputs between two inputs
    come from one ``pair_fn`` call for that pair. ``push`` takes the next input and returns
    the outputs now final, ``finish`` ends a shot (a cut, or the end of the stream), as
    :class:`tcvbm.windows.TemporalBlender` does, ``workers`` pairs at a time on their own
    threads (:class:`tcvbm.workers.OrderedCalls`; pair call ``n`` gets ``key=(n,)``, so the
    output does not depend on ``workers``). With ``duplicates`` a frame that repeats the
    last unique one is dropped, and its time falls between the unique frames around it.
    Memory: the shot's last unique frame, the new one and the pairs running.
    """

    def __init__(self, pair_fn: PairFn, plan: RetimePlan,
                 duplicates: DuplicateDetector | None = None, workers: int = 1) -> None:
        self.pair_fn, self.plan, self.duplicates = pair_fn, plan, duplicates
        self.timeline = Timeline(plan)
        self.held: dict[int, Tensor] = {}   # the shot's last unique input, by index
        self.calls = OrderedCalls(workers)
        self.pairs = 0                      # pair_fn calls so far: each call's key

    def push(self, frame: Tensor) -> list[Tensor]:
        """Add the next input; returns the outputs that are now final."""
        j = self.timeline.received
        unique = self.duplicates is None or not self.duplicates.is_duplicate(frame)
        self._submit(self.timeline.push(unique), {**self.held, j: frame})
        if self.timeline.last == j:
            self.held = {j: frame}
        return [f for _, frames in self.calls.ready() for f in frames]

    def finish(self) -> list[Tensor]:
        """End the shot: its last frame holds up to the next input; reset for the next."""
        self._submit(self.timeline.finish(), self.held)
        self.held = {}
        if self.duplicates is not None:
            self.duplicates.reset()
        return [f for _, frames in self.calls.drain() for f in frames]

    def _submit(self, slots: list[Slot], frames: dict[int, Tensor]) -> None:
        """Frames for ``slots`` (all the in-between ones of one push share one pair), made
        on a worker and taken back in order."""
        if not slots:
            return
        between = [s for s in slots if s.left != s.right]
        key = None
        if between:
            key, self.pairs = (self.pairs,), self.pairs + 1
        self.calls.submit(None, self._render, slots, frames, between, key)

    def _render(self, slots: list[Slot], frames: dict[int, Tensor], between: list[Slot],
                key: tuple[int, ...] | None) -> list[Tensor]:
        made: Iterator[Tensor] = iter(())
        if between:
            left, right = frames[between[0].left], frames[between[0].right]
            taus = [s.tau for s in between]
            clip = self.pair_fn(left, right, taus, key=key)
            if tuple(clip.shape) != (len(taus), *left.shape):
                raise ValueError(f"pair_fn: returned {tuple(clip.shape)} for {len(taus)} "
                                 f"times of {tuple(left.shape)} frames")
            made = iter(clip.unbind(0))
        return [next(made) if s.left != s.right else frames[s.left] for s in slots]


def frame_difference(a: Tensor, b: Tensor) -> tuple[float, float]:
    """(mean, largest 16x16-block mean) absolute difference of two frames, in 8-bit levels.

    ``a``, ``b``: float (C, H, W) in [-1, 1]. Per pixel the difference is averaged over the
    channels; whole blocks tile the frame from its corner (on a frame under 16 pixels on a
    side, blocks of its shorter side).
    """
    d = (a.float() - b.float()).abs().mean(0) * _LEVELS
    size = min(_BLOCK, *d.shape)
    return float(d.mean()), float(F.avg_pool2d(d[None, None], size).max())


@dataclass
class DuplicateDetector:
    """Says whether a frame repeats the last unique frame, and counts the repeats it found.

    A repeat differs from the last unique frame by less than ``mean_threshold`` 8-bit levels
    on average and by less than ``block_threshold`` in every 16x16 block
    (:func:`frame_difference`). Comparing with the last unique frame, not the previous one,
    lets slow motion add up until it counts. Measured on the clips of data/samples (100, 60
    and 120 frames of bikes, bigbuckbunny and carphone), re-encoded with each frame shown
    twice (on twos) and with every fourth frame twice (24 fps padded to 30): 356 repeats per
    encoding, of which a running detector at the defaults finds

    - x264 4:2:0 (the project's writer): 344 at crf 18 and 312 at crf 28 (a keyframe every 8
      frames), 355 at crf 23 with a keyframe every 250; mpeg4: 317 at 0.25 bit per pixel,
      214 at FFmpeg's default rate. The misses are mostly repeats coded as a keyframe after
      a predicted frame (mean differences up to 4.35 levels at crf 28, where real motion in
      the same encodes starts at 0.59) and the noisy blocks of the low-rate mpeg4;
    - and takes no real frame for a repeat in any of them but the default-rate mpeg4 (4 of
      its 548 moving frames, motion it smeared below half a level), nor in the 494 moving
      pairs of the clips as they are, whose own five 24-to-25 fps repeats (bigbuckbunny,
      0.05-0.12 levels) are all found.

    The block test keeps small motion: seven moving pairs of bigbuckbunny (a small figure
    on a still background) differ by only 0.34-0.5 levels on average, but each changes some
    block by 8.56 levels or more; 1011 of the 1012 x264 repeats below 0.5 stay below 8.
    """

    mean_threshold: float = DUPLICATE_MEAN
    block_threshold: float = DUPLICATE_BLOCK
    duplicates: int = field(default=0, init=False)
    _last: Tensor | None = field(default=None, init=False, repr=False)

    def is_duplicate(self, frame: Tensor) -> bool:
        """Whether ``frame`` (float (C, H, W) in [-1, 1]) repeats the last unique frame; if
        not, it becomes the last unique frame."""
        if self._last is not None and self._last.shape == frame.shape:
            mean, block = frame_difference(self._last, frame)
            if mean < self.mean_threshold and block < self.block_threshold:
                self.duplicates += 1
                return True
        self._last = frame
        return False

    def reset(self) -> None:
        """Forget the last unique frame (a new shot starts with a unique frame)."""
        self._last = None


def duplicate_mask(frames: Iterable[Tensor],
                   detector: DuplicateDetector | None = None) -> list[bool]:
    """For each float (C, H, W) frame, whether it repeats the last unique one before it."""
    detector = detector or DuplicateDetector()
    return [detector.is_duplicate(frame) for frame in frames]
