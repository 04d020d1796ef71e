"""Retiming: output times, keyframes, shots and repeated frames, with a linear-blend pair_fn.

Blending is linear in ``tau``, so on frames that change linearly in time an output equals the
frame at its exact time: a wrong time or ``tau`` shows as a wrong value.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from tcvbm.data.visual import from_uint8
from tcvbm.retime import (
    DuplicateDetector,
    RetimePlan,
    Retimer,
    Slot,
    duplicate_mask,
    frame_difference,
    output_rate,
)
from tcvbm.scenes import SceneCutDetector
from tcvbm.windows import TemporalBlender, restore_stream

from test_pipeline import blend_fn, moving_frames, run_blender


def linear_pair(left: torch.Tensor, right: torch.Tensor, taus: list[float],
                key: tuple[int, ...] | None = None) -> torch.Tensor:
    t = torch.tensor(taus, dtype=left.dtype).view(-1, 1, 1, 1)
    return (1 - t) * left + t * right


def run(retimer: Retimer, frames) -> list[torch.Tensor]:
    out = []
    for frame in frames:
        out += retimer.push(frame)
    return out + retimer.finish()


def as_float(frames: torch.Tensor) -> list[torch.Tensor]:
    """uint8 (N, H, W, 3) -> float (C, H, W) frames in [-1, 1]."""
    return list(from_uint8(frames).unbind(1))


def linear_frames(n: int, h: int = 4, w: int = 6) -> list[torch.Tensor]:
    """Frames ``a + i * d``: a horizontal ramp brightening by 0.05 per frame."""
    ramp = torch.linspace(-0.9, 0.0, w).expand(3, h, w)
    return [ramp + 0.05 * i for i in range(n)]


# ------------------------------------------------------------------------------ rates

def test_output_rate():
    assert output_rate(25, factor=2.5) == 62.5 and output_rate(24000 / 1001, fps=60) == 60
    with pytest.raises(ValueError, match="factor"):
        output_rate(25, factor=1)
    with pytest.raises(ValueError, match="exactly one"):
        output_rate(25, factor=2, fps=60)
    with pytest.raises(ValueError, match="fps"):
        output_rate(25, fps=0)


# -------------------------------------------------------------------- factor 2 = today

@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("length", [1, 2, 7])
def test_integer_factors_are_the_blenders_layout(factor, length):
    keys = [torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(i)) * 2 - 1
            for i in range(length)]
    blended = run_blender(keys, window_fn=blend_fn(2 * factor + 1, factor), keys=3, overlap=1,
                          factor=factor, keep_inputs=True)
    plan = RetimePlan.constant(length, 10, output_rate(10, factor=factor))
    retimed = run(Retimer(linear_pair, plan), keys)
    assert plan.count == len(retimed) == len(blended) == factor * length
    last = (length - 1) * factor
    for k, (a, b) in enumerate(zip(retimed, blended)):
        if k % factor == 0 or k >= last:
            assert torch.equal(a, b)                 # keyframes and the held last frame
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    expected = []
    for k in range(factor * length):                         # input i at output i * factor
        i, r = divmod(k, factor)
        between = r and k < last
        i = i if between else min(i, length - 1)
        expected.append(Slot(k / (10 * factor), i, i + 1 if between else i,
                             r / factor if between else 0.0))
    assert plan.slots() == expected


def test_factor_two_matches_the_blender_across_a_cut():
    even = lambda f: f // 2 * 2   # noqa: E731  even levels: midpoints are whole levels
    frames = torch.cat([even(moving_frames(5, seed=0)), even(moving_frames(4, seed=3).flip(2))])
    blender = TemporalBlender(blend_fn(9), keys=5, overlap=1, factor=2, keep_inputs=True)
    old = list(restore_stream(iter(frames), blender, SceneCutDetector()))
    detector = SceneCutDetector()
    retimer = Retimer(linear_pair, RetimePlan.constant(len(frames), 10, 20))
    new = list(restore_stream(iter(frames), retimer, detector))
    assert detector.cuts == 1 and len(new) == len(old) == 18
    assert all(torch.equal(a, b) for a, b in zip(new, old))


# ---------------------------------------------------------------------- common rates

@pytest.mark.parametrize("fps_in,fps_out,frames,keys,held", [
    (Fraction(24), Fraction(60), 48, 24, 2),
    (Fraction(25), Fraction(60), 49, 10, 2),
    (Fraction(30), Fraction(144), 30, 6, 4),
    (Fraction(24000, 1001), Fraction(60), 48, 1, 2),
    # float positions off by an ulp: input 15 of 29.97 fps x2 lands at output 30.000000000000004
    (Fraction(30000, 1001), Fraction(60000, 1001), 64, 64, 1),
    (Fraction(24000, 1001), Fraction(60000, 1001), 48, 24, 2),
])
def test_rate_conversion_plans(fps_in, fps_out, frames, keys, held):
    plan = RetimePlan.constant(frames, float(fps_in), float(fps_out))
    exact = frames * fps_out / fps_in                       # outputs in the input's duration
    assert plan.count == math.floor(exact + Fraction(1, 2))
    assert abs(plan.count / fps_out - frames / fps_in) <= 1 / fps_out
    slots = plan.slots()
    assert len(slots) == plan.count
    for k, slot in enumerate(slots):
        at = k / fps_out * fps_in                           # the output's position in inputs
        assert slot.time == pytest.approx(float(k / fps_out), abs=1e-12)
        if at >= frames - 1:
            assert slot == (slot.time, frames - 1, frames - 1, 0.0)
        elif at.denominator == 1:
            assert slot == (slot.time, int(at), int(at), 0.0)
        else:
            assert (slot.left, slot.right) == (math.floor(at), math.floor(at) + 1)
            assert slot.tau == pytest.approx(float(at - math.floor(at)), abs=1e-9)
    inside = [s for s in slots if s.left == s.right and s.time < (frames - 1) / fps_in + 1e-9]
    assert len(inside) == keys
    assert sum(s.time > (frames - 1) / fps_in + 1e-9 for s in slots) == held


@pytest.mark.parametrize("factor,frames,copies", [(2.5, 6, [0, 5, 10, 13, 14]),
                                                  (3, 5, [0, 3, 6, 9, 12, 13, 14])])
def test_factors_blend_at_exact_times(factor, frames, copies):
    inputs = linear_frames(frames)
    fps_out = output_rate(10, factor=factor)
    plan = RetimePlan.constant(frames, 10, fps_out)
    out = run(Retimer(linear_pair, plan), inputs)
    assert len(out) == plan.count == round(frames * factor)
    for k, frame in enumerate(out):
        at = min(k / factor, frames - 1)                     # input position of output k
        torch.testing.assert_close(frame, inputs[0] + 0.05 * at, atol=1e-6, rtol=0)
    exact = [k for k, frame in enumerate(out) if any(frame is key for key in inputs)]
    assert exact == copies             # the inputs themselves: keyframes, then the held last


def test_variable_rate_follows_the_timestamps():
    times = [0.0, 0.05, 0.2, 0.25, 0.4]
    plan = RetimePlan.for_input(times, 10, 20)   # lasts 0.4 + one period at 10 fps: 10 outputs
    assert plan.count == 10
    held = RetimePlan.for_input([0.0, 0.1, 0.6, 0.7], 10, 10)   # frame 1 held for 0.5 s
    assert held.count == 8          # the last frame lasts a typical period, not the mean one
    taus = [(s.left, s.right, round(s.tau, 9)) for s in plan.slots()]
    third = round(1 / 3, 9)
    assert taus == [(0, 0, 0), (1, 1, 0), (1, 2, third), (1, 2, round(2 / 3, 9)), (2, 2, 0),
                    (3, 3, 0), (3, 4, third), (3, 4, round(2 / 3, 9)), (4, 4, 0), (4, 4, 0)]
    clock = [torch.full((3, 2, 2), t) for t in times]        # each frame shows its own time
    out = run(Retimer(linear_pair, plan), clock)
    values = [float(f[0, 0, 0]) for f in out]
    assert values == pytest.approx([k / 20 for k in range(9)] + [0.4], abs=1e-6)


# --------------------------------------------------------------------------- shots

def test_no_output_mixes_two_shots():
    shot1, shot2 = moving_frames(4, seed=0), moving_frames(4, seed=3).flip(2) // 3
    frames = torch.cat([shot1, shot2])
    detector = SceneCutDetector()
    plan = RetimePlan.constant(8, 10, output_rate(10, factor=2.5))   # inputs every 2.5 outputs
    out = list(restore_stream(iter(frames), Retimer(linear_pair, plan), detector))
    assert detector.cuts == 1 and len(out) == plan.count == 20
    assert torch.equal(out[8], shot1[-1]) and torch.equal(out[9], shot1[-1])  # held to the cut
    assert torch.equal(out[10], shot2[0])
    mixed = (shot1[-1].float() + shot2[0].float()) / 2
    assert (out[9].float() - mixed).abs().mean() > 10


def test_errors_name_the_problem():
    retimer = Retimer(lambda a, b, taus, key=None: a[None], RetimePlan.constant(2, 10, 30))
    frames = linear_frames(3)
    retimer.push(frames[0])
    with pytest.raises(ValueError, match="pair_fn"):
        retimer.push(frames[1])
    with pytest.raises(ValueError, match="frame 2"):
        retimer.push(frames[2])


# ------------------------------------------------------------------------ duplicates

def test_a_clip_on_twos_moves_on_every_output():
    drawings = linear_frames(6)
    on_twos = [d.clone() for d in drawings for _ in range(2)]
    assert duplicate_mask(on_twos) == [False, True] * 6
    plan = RetimePlan.constant(12, 24, output_rate(24, factor=2))
    detector = DuplicateDetector()
    retimer = Retimer(linear_pair, plan, duplicates=detector)
    out = run(retimer, on_twos)
    assert len(out) == 24 and detector.duplicates == 6
    assert len(retimer.held) <= 1
    assert all(out[4 * i] is on_twos[2 * i] for i in range(6))   # drawings at their own times
    last = 4 * 5                                                 # the last drawing's output
    assert all(not torch.equal(out[k], out[k - 1]) for k in range(1, last + 1))
    assert all(torch.equal(out[k], out[last]) for k in range(last, 24))
    stalled = run(Retimer(linear_pair, plan), on_twos)       # without: every other one stalls
    assert sum(torch.equal(stalled[k], stalled[k - 1]) for k in range(1, 24)) >= 11


def test_duplicate_threshold():
    g = torch.Generator().manual_seed(0)
    base = moving_frames(2, h=64, w=128, seed=1)
    noise = (torch.rand(base[0].shape, generator=g) < 0.3).to(torch.uint8)
    reencoded = (base[0].short() + noise).clamp(0, 255).to(torch.uint8)     # +1 on 30%
    grainy = (base[0].short() + 4 * noise.short() - 2).clamp(0, 255).to(torch.uint8)  # +-2
    small = base[0].clone()
    square = small[16:24, 16:24]                             # a small thing changes by 50
    small[16:24, 16:24] = torch.where(square < 128, square + 50, square - 50)
    a, dup, grain, moved, local = as_float(torch.stack([base[0], reencoded, grainy, base[1],
                                                        small]))
    mean, block = frame_difference(a, dup)
    assert 0.2 < mean < 0.5 and block < 8
    assert frame_difference(a, grain)[0] > 1.5
    mean, block = frame_difference(a, local)
    assert mean < 0.5 and block >= 8                         # only the block test sees it
    assert duplicate_mask([a, dup, grain]) == [False, True, False]
    assert duplicate_mask([a, moved]) == [False, False]
    assert duplicate_mask([a, local]) == [False, False]


def test_slow_change_adds_up_against_the_last_unique_frame():
    step = 0.2 / 127.5                                      # 0.2 levels a frame
    frames = [torch.zeros(3, 32, 32) + i * step for i in range(7)]
    assert duplicate_mask(frames) == [False, True, True, False, True, True, False]
