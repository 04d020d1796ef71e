"""Training at every time between two frames: an interpolation task's ``train_factors`` lay a
window out as x2, x3 or x4 (one layout per step), with each frame's time in its context and
the bridge on the frames' real times; ``tcvbm eval --factor`` scores a model at those rates."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tcvbm.bridges import Bridge
from tcvbm.evaluate import run_eval
from tcvbm.runs import InferenceBundle
from tcvbm.tasks import FrameInterpolation, get_task, task_from_config
from tcvbm.train.objectives import BridgeMatching, SampleRandom, TimeSampler, Weighting

from test_evaluate import write_lossless
from test_fusion import fusion_model
from test_tasks import drifting_texture

pytestmark = pytest.mark.usefixtures("one_thread")

MIXED = get_task("interp", factor=2, mode="flow", context=True, train_factors=[2, 3, 4])


def test_each_factor_lays_out_its_window_at_its_own_times() -> None:
    """5-frame windows: x2 uses all five (3 keyframes, the bridge uniform), x3 the first four
    (2 keyframes, frames at 1/3 and 2/3), x4 all five (frames at 1/4, 1/2, 3/4); the bridge
    times are in the model's x2 units, keyframes 2 apart whatever the factor."""
    layouts = MIXED.training_layouts(5)
    assert [(lay.task.factor, lay.num_frames) for lay in layouts] == [(2, 5), (3, 4), (4, 5)]
    assert layouts[0].times is None
    torch.testing.assert_close(torch.tensor(layouts[1].times), torch.tensor([0, 2 / 3, 4 / 3, 2]))
    assert layouts[2].times == [0.0, 0.5, 1.0, 1.5, 2.0]
    clip = drifting_texture(5, shift=1)[..., :24, :32]
    for lay, taus in zip(layouts, ([0.5, 0.5], [1 / 3, 2 / 3], [0.25, 0.5, 0.75])):
        sample = lay.task(clip[:, :, :lay.num_frames])
        made = ~lay.task.known_frames(lay.num_frames)
        assert int(made.sum()) == len(taus)
        weight = sample.context[0, 6, made, 0, 0]   # the context's 1 - tau
        torch.testing.assert_close(weight, 1 - torch.tensor(taus), atol=1e-6, rtol=0)
    assert get_task("interp", factor=2).training_layouts(5)[0].task.factor == 2


def test_train_factors_round_trip_and_are_checked() -> None:
    assert task_from_config(MIXED.to_config()) == MIXED
    assert MIXED.to_config()["train_factors"] == [2, 3, 4]
    assert "train_factors" not in get_task("interp", factor=2).to_config()  # older bundles
    assert get_task("interp", factor=3).factor == 3
    for bad in ({"factor": 1}, {"factor": 2.5}, {"train_factors": [2, 1]},
                {"train_factors": 3}):
        with pytest.raises(ValueError, match="factor"):
            get_task("interp", **bad)
    with pytest.raises(ValueError, match="at least 5 frames"):
        FrameInterpolation(train_factors=(4,)).training_layouts(3)


def test_bridge_matching_draws_one_layout_per_step_from_the_shared_stream() -> None:
    """Over steps the model sees every layout (its frame count and times), the same one for
    every sample of a step, and a seed fixes which."""
    objective = BridgeMatching(fusion_model(), Bridge(5, eps=0.05), MIXED,
                               TimeSampler(t_one_prob=0.5), Weighting(), lr=1e-3)
    seen: list[tuple[int, tuple[float, ...]]] = []

    def record(module, args, kwargs) -> None:
        context = kwargs["context"]
        seen.append((context.shape[2], tuple(round(float(v), 3) for v in context[0, 6, :, 0, 0])))
        assert all(torch.equal(c[6], context[0, 6]) for c in context)

    handle = objective.model.register_forward_pre_hook(record, with_kwargs=True)
    x0 = torch.cat([drifting_texture(5, shift=1)[..., :16, :16]] * 2)
    for step in range(12):
        out = objective.loss("model", {"model": objective.model}, x0,
                             SampleRandom(0, step, range(2), 2))
        assert torch.isfinite(out.loss)
    handle.remove()
    counts = Counter(seen)
    assert set(counts) == {(5, (1, .5, 1, .5, 1)), (4, (1, .667, .333, 1)),
                           (5, (1, .75, .5, .25, 1))}, counts
    again = []
    objective.model.register_forward_pre_hook(
        lambda m, a, k: again.append(k["context"].shape[2]), with_kwargs=True)
    for step in range(12):
        objective.loss("model", {"model": objective.model}, x0, SampleRandom(0, step, range(2), 2))
    assert again == [n for n, _ in seen]
    expected = {lay.task.factor: lay.times for lay in MIXED.training_layouts(5)}
    for step in range(12):
        task, bridge, used = objective._layout(x0, SampleRandom(0, step, range(2), 2))
        times = expected[task.factor]
        assert bridge.times == (None if times is None else tuple(times))
        assert used.shape[2] == bridge.num_frames == len(times or range(5))


def test_eval_at_another_factor_scores_pairs_at_their_times(tmp_path) -> None:
    """x3 on a 2 px/frame drift: windows of one pair and the two frames between it; an
    untrained fusion model returns flow there (the model row equals its source's), and flow
    beats blending."""
    data = tmp_path / "data"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 20, generator=g),
                                              size=(48, 100), mode="bicubic")[0].clamp(0, 1)
    frames = torch.stack([texture[:, :, 2 * i:2 * i + 64] for i in range(13)])
    write_lossless(data / "drift.mkv", (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
    bundle = InferenceBundle(fusion_model().eval(), Bridge(5), MIXED, 5, (48, 64),
                             "posterior-mean", 1, "bridge")
    result = run_eval("interp", data, model=bundle, steps=[1], factor=3, size=(48, 64),
                      output_dir=tmp_path / "eval", clips_per_video=2)
    by_name = {m["method"]: m["mean"]["psnr"] for m in result["methods"]}
    assert result["num_frames"] == 4 and result["scored_frames"] == 2
    assert result["task"]["factor"] == 3
    assert by_name["InferenceBundle@1"] == pytest.approx(by_name["source"], abs=1e-6)
    assert by_name["flow"] == pytest.approx(by_name["source"], abs=1e-6)
    assert by_name["flow"] > by_name["blend"] + 3
