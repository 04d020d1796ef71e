"""Several model calls at once (tcvbm.workers): results in order, the same output whatever
the number of workers, errors raised, memory bounded."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tcvbm.pipeline import interpolate
from tcvbm.retime import RetimePlan, Retimer
from tcvbm.windows import TemporalBlender, tiled
from tcvbm.workers import OrderedCalls, auto_workers, call_generator, intra_op_threads, worker_count

from test_pipeline import SourceModel, decode, make_video, moving_frames, source_bundle

pytestmark = pytest.mark.usefixtures("one_thread")


def test_results_come_back_in_submission_order_when_later_calls_finish_first() -> None:
    calls = OrderedCalls(3)
    finished: list[int] = []

    def slow(i: int) -> int:
        time.sleep(0.02 * (4 - i))    # call 0 is the slowest
        finished.append(i)
        return i * 10

    for i in range(4):
        calls.submit(f"tag{i}", slow, i)
    got = calls.ready() + calls.drain()
    assert got == [("tag0", 0), ("tag1", 10), ("tag2", 20), ("tag3", 30)]
    assert finished != sorted(finished)    # they did run at once, out of order


def test_one_worker_runs_inline_and_many_run_on_other_threads() -> None:
    where: list[int] = []
    inline = OrderedCalls(1)
    inline.submit(None, lambda: where.append(threading.get_ident()))
    assert where == [threading.get_ident()] and len(inline.ready()) == 1
    pooled = OrderedCalls(2)
    for _ in range(3):
        pooled.submit(None, lambda: where.append(threading.get_ident()))
    pooled.drain()
    assert threading.get_ident() not in where[1:]


def test_a_failing_call_raises_where_its_result_is_taken() -> None:
    calls = OrderedCalls(2)
    calls.submit(0, lambda: 1)
    calls.submit(1, lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        calls.drain()
    with pytest.raises(ValueError, match="workers"):
        OrderedCalls(0)


def test_submit_waits_so_that_at_most_workers_plus_one_are_unfinished() -> None:
    calls = OrderedCalls(2)
    done: list[int] = []
    unfinished = []
    for i in range(6):
        calls.submit(i, lambda i=i: time.sleep(0.03) or done.append(i))
        unfinished.append(i + 1 - len(done))
    assert max(unfinished) == 3
    assert [tag for tag, _ in calls.ready() + calls.drain()] == list(range(6))


def test_each_call_key_has_its_own_reproducible_stream() -> None:
    draw = [torch.randn(4, generator=call_generator("cpu", 0, key)) for key in
            [(0,), (1,), (0, 1), (0,)]]
    assert torch.equal(draw[0], draw[3])
    assert not torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    assert not torch.equal(draw[0], torch.randn(4, generator=call_generator("cpu", 1, (0,))))


def test_auto_workers_and_thread_shares(monkeypatch) -> None:
    import cv2

    monkeypatch.setattr("tcvbm.workers.available_cpus", lambda: 2)
    assert auto_workers("cpu") == 2 and auto_workers("cuda") == 1
    monkeypatch.setattr("tcvbm.workers.available_cpus", lambda: 64)
    assert auto_workers("cpu") == 4
    before = torch.get_num_threads(), cv2.getNumThreads()
    with intra_op_threads(4):
        assert torch.get_num_threads() == 16 and cv2.getNumThreads() == 16
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


def test_worker_count_takes_the_request_or_the_default_and_refuses_zero(monkeypatch) -> None:
    monkeypatch.setattr("tcvbm.workers.available_cpus", lambda: 2)
    assert worker_count(None, "cpu") == 2 and worker_count(None, "cuda") == 1
    assert worker_count(3, "cpu") == 3
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"workers must be at least 1.*got {bad}"):
            worker_count(bad, "cpu")


def noisy_window(obs: torch.Tensor, key: tuple[int, ...] | None = None) -> torch.Tensor:
    """Nearest-keyframe interpolation plus noise of the call's own stream, slower for the
    first calls, so that with several workers calls finish out of order."""
    time.sleep(0.01 * max(3 - key[0], 0))
    clip = obs.repeat_interleave(2, dim=2)[:, :, :-1]
    return clip + torch.randn(clip.shape, generator=call_generator("cpu", 5, key))


def test_the_blender_gives_the_same_frames_with_any_number_of_workers() -> None:
    frames = [torch.full((1, 4, 4), float(i)) for i in range(11)]

    def run(workers: int, batch: int) -> list[torch.Tensor]:
        blender = TemporalBlender(tiled(noisy_window, tile=16, multiple=1), keys=3, overlap=1,
                                  factor=2, keep_inputs=True, batch=batch, workers=workers)
        out = []
        for i, frame in enumerate(frames):
            out += blender.push(frame)
            if i == 6:                 # a cut in the middle
                out += blender.finish()
        return out + blender.finish()

    for batch in (1, 2):
        one = run(1, batch)
        assert len(one) == 2 * len(frames)
        assert not torch.allclose(one[1] - one[0], one[5] - one[4])   # each call its own noise
        for workers in (2, 3):
            assert all(torch.equal(a, b) for a, b in zip(one, run(workers, batch), strict=True))


def test_the_retimer_gives_the_same_frames_with_any_number_of_workers() -> None:
    frames = [torch.full((1, 4, 4), float(i)) for i in range(9)]

    def pair(left, right, taus, key=None):
        time.sleep(0.01 * max(3 - key[0], 0))
        t = torch.tensor(taus).view(-1, 1, 1, 1)
        mix = (1 - t) * left + t * right
        return mix + torch.randn(mix.shape, generator=call_generator("cpu", 5, key))

    def run(workers: int) -> list[torch.Tensor]:
        retimer = Retimer(pair, RetimePlan.constant(len(frames), 10, 25), workers=workers)
        return [f for frame in frames for f in retimer.push(frame)] + retimer.finish()

    one = run(1)
    assert len(one) == 23
    assert all(torch.equal(a, b) for a, b in zip(one, run(3), strict=True))


class StateModel(SourceModel):
    """x0 prediction = the bridge state itself: the output keeps the sampler's noise."""

    def forward(self, x_t, t, cond=None, context=None, noise=None):
        return x_t


@pytest.mark.parametrize("factor", [2, 2.5])
def test_interpolate_output_does_not_depend_on_workers(tmp_path: Path, factor: float) -> None:
    """A stochastic 2-step sampler draws noise in every window (windows at x2, pairs at
    x2.5): with 1 and 3 workers the frames are the same (a model without convolutions: no
    rounding that threads change), and a different seed changes them, so the noise is
    really there."""
    clip = make_video(tmp_path / "in.mp4", moving_frames(9))
    bundle = replace(source_bundle(5), model=StateModel())
    outs = []
    for workers, seed in [(1, 0), (3, 0), (1, 1)]:
        out = tmp_path / f"out-{workers}-{seed}.mkv"
        interpolate(clip, out, factor=factor, model=bundle, steps=2,
                    sampler="stochastic", seed=seed, workers=workers, lossless=True,
                    progress=False)
        outs.append(decode(out)[0])
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])
