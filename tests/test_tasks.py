"""Tasks build the source clip from a clean one; keyframes and shapes are exact."""

from __future__ import annotations

from typing import Callable, NamedTuple

import pytest
import torch
from torch import Tensor

from tcvbm.tasks import TASKS, Task, TaskSample, get_task, task_from_config


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("mode", ["blend", "nearest"])
def test_interpolation_keeps_keyframes(factor: int, mode: str) -> None:
    n = 2 * factor + 1
    x0 = torch.rand(2, 3, n, 6, 7) * 2 - 1
    out = get_task("interp", factor=factor, mode=mode)(x0)
    assert out.source.shape == x0.shape and out.observation.shape == (2, 3, 3, 6, 7)
    keys = torch.arange(n) % factor == 0
    assert torch.equal(out.source[:, :, keys], x0[:, :, keys])
    assert (out.known_frames.shape == (2, 1, n, 1, 1)
            and torch.equal(out.known_frames[0, 0, :, 0, 0], keys))
    mid = factor // 2
    expected = x0[:, :, 0] if mode == "nearest" else 0.5 * (x0[:, :, 0] + x0[:, :, factor])
    assert torch.allclose(out.source[:, :, mid], expected, atol=1e-6)


def test_interpolation_linear_blend_and_trailing_frames() -> None:
    keys = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 3, 1, 1)
    task = get_task("interp", factor=4)
    lifted = task.lift(keys, 10)  # keyframes at 0, 4, 8; frame 9 holds the last keyframe
    assert torch.allclose(lifted.flatten(), torch.tensor([0, .25, .5, .75, 1, 1.5, 2, 2.5, 3, 3.]))
    with pytest.raises(ValueError, match="^observation"):
        task.lift(keys, 17)


def test_flow_interpolation_follows_motion() -> None:
    """A texture moving 3 px a frame: flow puts the in-between frame where it belongs,
    blending leaves a double image; keyframes stay exact in both."""
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, 48, 100, generator=g)
    texture = torch.nn.functional.avg_pool2d(noise, 5, 1, 2) * 2 - 1
    # x0: (1, 3, 5, 48, 64), the texture drifting 3 pixels a frame
    x0 = torch.stack([texture[..., 3 * i: 3 * i + 64] for i in range(5)], dim=2)
    flow, blend = (get_task("interp", factor=2, mode=m)(x0).source for m in ("flow", "blend"))
    assert flow.shape == x0.shape and torch.equal(flow[:, :, ::2], x0[:, :, ::2])
    inner = (slice(None), slice(None), slice(1, None, 2), slice(8, -8), slice(8, -8))
    flow_err = (flow - x0)[inner].abs().mean()
    blend_err = (blend - x0)[inner].abs().mean()
    assert flow_err < 0.25 * blend_err
    with pytest.raises(ValueError, match="mode"):
        get_task("interp", factor=2, mode="warp")


@pytest.mark.parametrize("hw", [(8, 8), (12, 40), (14, 100), (100, 3)])
def test_flow_interpolation_on_frames_too_small_for_dis(hw) -> None:
    """OpenCV DIS rejects frames under 12 px and crashes on 12-15 px high wide ones: the
    frames are padded for it, so these sizes work like any other."""
    x0 = torch.rand(1, 3, 5, *hw, generator=torch.Generator().manual_seed(1)) * 2 - 1
    source = get_task("interp", factor=2, mode="flow")(x0).source
    assert source.shape == x0.shape and torch.isfinite(source).all()
    assert torch.equal(source[:, :, ::2], x0[:, :, ::2])


def test_image_to_video_repeats_first_frame() -> None:
    x0 = torch.randn(1, 3, 6, 4, 4)
    out = get_task("i2v")(x0)
    assert torch.equal(out.source, x0[:, :, :1].expand_as(x0))
    assert out.known_frames[0, 0, :, 0, 0].tolist() == [True] + [False] * 5


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("frames", [1, 5])
def test_super_resolution_shapes_and_content(scale: int, frames: int) -> None:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 24), indexing="ij")
    smooth = (0.5 * (xx + yy)).expand(1, 3, frames, 16, 24)
    out = get_task("vsr", scale=scale)(smooth)
    assert out.observation.shape == (1, 3, frames, 16 // scale, 24 // scale)
    assert out.source.shape == smooth.shape
    assert (out.source - smooth)[..., 4:-4, 4:-4].abs().max() < 0.05  # a ramp survives
    assert not out.known_frames.any()
    with pytest.raises(ValueError, match="^x0"):
        get_task("vsr", scale=4)(torch.zeros(1, 3, 1, 10, 12))


# ---- every registered task against an expectation computed here ------------------------


def random_clip(n: int) -> Tensor:
    return torch.rand(2, 3, n, 16, 16, generator=torch.Generator().manual_seed(n)) * 2 - 1


def plane_clip(n: int) -> Tensor:
    """Frames that are planes ``c + a y + b x``, another plane per frame and channel, in [-1, 1]."""
    g = torch.Generator().manual_seed(n)
    a, b = (0.02 * torch.rand(2, 3, n, 1, 1, generator=g) - 0.01 for _ in range(2))
    c = 0.6 * torch.rand(2, 3, n, 1, 1, generator=g) - 0.3
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    return c + a * yy + b * xx


def impulse_clip(n: int) -> Tensor:
    """One bright pixel a frame and channel, each elsewhere, far enough from the borders."""
    x0 = torch.zeros(1, 3, n, 24, 24)
    for f in range(n):
        for ch in range(3):
            x0[0, ch, f, 7 + 2 * f + ch, 16 - 2 * f] = 1.0
    return x0


def plane_at(x0: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Values of :func:`plane_clip`'s planes at (fractional) rows ``y`` and columns ``x``."""
    corner = x0[..., :1, :1]
    dy, dx = x0[..., 1:2, :1] - corner, x0[..., :1, 1:2] - corner
    return corner + dy * y[:, None] + dx * x[None, :]


def expect_interp(task: Task, x0: Tensor, out: TaskSample) -> list[bool]:
    """Factor 2, blend: frames 0, 2, 4 observed; the others the mean of their neighbours."""
    assert torch.equal(out.observation, x0[:, :, [0, 2, 4]])
    for i in (1, 3):
        torch.testing.assert_close(out.source[:, :, i], (x0[:, :, i - 1] + x0[:, :, i + 1]) / 2)
    return [True, False, True, False, True]


def expect_i2v(task: Task, x0: Tensor, out: TaskSample) -> list[bool]:
    """The first frame observed and held over the clip."""
    assert torch.equal(out.observation, x0[:, :, :1])
    for i in range(x0.shape[2]):
        assert torch.equal(out.source[:, :, i], x0[:, :, 0])
    return [True] + [False] * (x0.shape[2] - 1)


def expect_sr(task: Task, x0: Tensor, out: TaskSample) -> list[bool]:
    """Scale 2 on planes, away from the borders the kernels overhang: a symmetric, normalised
    (antialiased) kernel samples a plane at the low-resolution pixel centres, and the bicubic
    upscale gives the plane back, to within what Keys' cubic (a = -0.75) misses on a slope:
    3/64 of the change over one low-resolution pixel, per axis."""
    centres = 2 * torch.arange(16.0) + 0.5
    torch.testing.assert_close(out.observation[..., 2:-2, 2:-2],
                               plane_at(x0, centres, centres)[..., 2:-2, 2:-2])
    slopes = (x0[..., 1, 0] - x0[..., 0, 0]).abs() + (x0[..., 0, 1] - x0[..., 0, 0]).abs()
    miss = float(3 / 64 * 2 * slopes.max())
    torch.testing.assert_close(out.source[..., 8:-8, 8:-8], x0[..., 8:-8, 8:-8],
                               atol=miss + 1e-5, rtol=0)
    return [False] * x0.shape[2]


def expect_blur(task: Task, x0: Tensor, out: TaskSample) -> list[bool]:
    """Every impulse becomes a normalised Gaussian of standard deviation ``sigma`` pixels
    around it, in its own frame and channel (weights past three sigmas aside)."""
    sigma = task.sigma
    grid = torch.arange(24.0)
    norm = torch.exp(-torch.arange(-50.0, 51.0) ** 2 / (2 * sigma**2)).sum() ** 2
    expected = torch.zeros_like(x0)
    for ch, f, py, px in x0[0].nonzero().tolist():
        dist2 = (grid[:, None] - py) ** 2 + (grid[None, :] - px) ** 2
        expected[0, ch, f] = torch.exp(-dist2 / (2 * sigma**2)) / norm
    torch.testing.assert_close(out.source, expected, atol=2e-4, rtol=0)
    assert torch.equal(out.observation, out.source)
    return [False] * x0.shape[2]


def expect_noise(task: Task, x0: Tensor, out: TaskSample) -> list[bool]:
    """Independent Gaussian noise of standard deviation ``sigma``, drawn from the generator."""
    noise = out.source - x0
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) / task.sigma - 1) < 0.05
    if x0.shape[2] > 1:
        first, second = noise[:, :, 0].flatten(), noise[:, :, 1].flatten()
        assert abs(float(torch.corrcoef(torch.stack([first, second]))[0, 1])) < 0.1
    assert torch.equal(task(x0, generator=torch.Generator().manual_seed(0)).source, out.source)
    assert not torch.equal(task(x0, generator=torch.Generator().manual_seed(1)).source, out.source)
    assert torch.equal(out.observation, out.source)
    return [False] * x0.shape[2]


class Expected(NamedTuple):
    kwargs: dict
    clip: Callable[[int], Tensor]
    frames: int
    check: Callable[[Task, Tensor, TaskSample], list[bool]]  # asserts; returns known frames


EXPECTED = {
    "interp": Expected({"factor": 2, "mode": "blend"}, random_clip, 5, expect_interp),
    "i2v": Expected({}, random_clip, 5, expect_i2v),
    "vsr": Expected({"scale": 2}, plane_clip, 3, expect_sr),
    "image-sr": Expected({"scale": 2}, plane_clip, 1, expect_sr),
    "blur": Expected({"sigma": 1.2}, impulse_clip, 3, expect_blur),
    "image-blur": Expected({"sigma": 0.8}, impulse_clip, 1, expect_blur),
    "noise": Expected({"sigma": 0.3}, random_clip, 5, expect_noise),
    "image-noise": Expected({"sigma": 0.2}, random_clip, 1, expect_noise),
}


def test_every_task_has_an_expectation() -> None:
    assert sorted(TASKS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_maps_a_clip_as_documented(name: str) -> None:
    """Source and observation as the task's documentation says, and the mask names exactly
    the frames the source carries unchanged; image tasks are one-frame clips."""
    expected = EXPECTED[name]
    task = get_task(name, **expected.kwargs)
    x0 = expected.clip(expected.frames)
    out = task(x0, generator=torch.Generator().manual_seed(0))
    assert out.source.shape == x0.shape
    known = torch.tensor(expected.check(task, x0, out))
    assert out.known_frames.shape == (x0.shape[0], 1, expected.frames, 1, 1)
    assert torch.equal(out.known_frames[:, 0, :, 0, 0], known.expand(x0.shape[0], -1))
    assert torch.equal(out.source[:, :, known], x0[:, :, known])


def test_blur_is_per_frame() -> None:
    clip = torch.rand(1, 3, 4, 12, 12)
    blur = get_task("blur", sigma=1.0)
    whole = blur(clip).source
    single = torch.cat([blur(clip[:, :, i:i + 1]).source for i in range(4)], dim=2)
    assert torch.allclose(whole, single, atol=1e-6)


def test_config_round_trip_and_errors() -> None:
    saved = [("interp", {"factor": 4, "mode": "nearest"}, "interp"), ("i2v", {}, "i2v"),
             ("vsr", {"scale": 3}, "vsr"), ("image-sr", {"scale": 8}, "vsr"),
             ("blur", {"sigma": 0.7}, "blur"), ("image-noise", {"sigma": 0.3}, "noise")]
    for name, kwargs, saved_as in saved:
        config = get_task(name, **kwargs).to_config()
        assert config == {"name": saved_as, **kwargs}
        assert task_from_config(config) == get_task(name, **kwargs)
    with pytest.raises(ValueError, match="^task"):
        get_task("deblur")
    with pytest.raises(ValueError, match="^factor"):
        get_task("interp", factor=1)
    with pytest.raises(ValueError, match="bad arguments"):
        get_task("i2v", factor=2)
    with pytest.raises(ValueError, match="^x0"):
        get_task("interp")(torch.zeros(3, 9, 4, 4))


# ---- frame interpolation's flow context ------------------------------------------------


def drifting_texture(frames: int, shift: int = 3) -> Tensor:
    """(1, 3, frames, 48, 64): a smooth texture whose content moves ``shift`` px left a frame,
    with values that a round trip through [0, 1] (as OpenCV sees frames) does not keep."""
    g = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 48, 64 + shift * frames,
                                                        generator=g), 5, 1, 2) * 1.8 - 0.9
    return torch.stack([texture[..., shift * i: shift * i + 64] for i in range(frames)], dim=2)


@pytest.mark.parametrize("factor,frames,shift", [(2, 5, 3), (2, 6, 3), (4, 9, 1), (4, 11, 1)])
def test_flow_context_holds_both_candidates_their_weight_and_flows(factor: int, frames: int,
                                                                   shift: int) -> None:
    """Per frame: the two warped keyframes that the flow source mixes by (1 - tau, tau), the
    weight 1 - tau, the flows back to both keyframes in units of FLOW_SCALE pixels, and
    where the candidates disagree. Keyframes and the frames held after the last one carry
    the frame twice, weight 1 and no motion. N need not be a multiple of the factor (DIS
    follows this texture up to about 6 px between keyframes)."""
    task = get_task("interp", factor=factor, mode="flow", context=True)
    x0 = drifting_texture(frames, shift)
    out = task(x0)
    assert task.context_channels == task.CONTEXT_CHANNELS == 15
    assert out.context.shape == (1, 15, frames, 48, 64)
    assert torch.equal(out.source, get_task("interp", factor=factor, mode="flow")(x0).source)
    a, b, weight = out.context[:, 0:3], out.context[:, 3:6], out.context[:, 6:7]
    flow_a, flow_b, differ = out.context[:, 7:9], out.context[:, 9:11], out.context[:, 11:12]
    blend = out.context[:, 12:]
    assert torch.equal(blend, get_task("interp", factor=factor, mode="blend")(x0).source)
    last = (frames - 1) // factor * factor
    tau = torch.tensor([0.0 if i >= last else i % factor / factor for i in range(frames)])
    assert torch.equal(weight, (1 - tau).view(1, 1, -1, 1, 1).expand_as(weight))
    torch.testing.assert_close(weight * a + (1 - weight) * b, out.source, atol=1e-6, rtol=0)
    torch.testing.assert_close(differ, (a - b).abs().mean(1, keepdim=True))
    held = tau == 0
    assert torch.equal(a[:, :, held], out.source[:, :, held])
    assert torch.equal(b[:, :, held], out.source[:, :, held])
    assert torch.equal(blend[:, :, held], out.source[:, :, held])
    assert not flow_a[:, :, held].any() and not flow_b[:, :, held].any()
    inner = (slice(None), slice(None), ~held, slice(12, -12), slice(12, -12))
    left = x0[:, :, torch.arange(frames) // factor * factor]
    for candidate in (a, b):  # warped: far nearer the frame than a keyframe is
        assert (candidate - x0)[inner].abs().mean() < 0.25 * (left - x0)[inner].abs().mean()
    # frame kf + j shows keyframe k at x + shift j and keyframe k + 1 at x - shift (f - j)
    steps = (tau * factor)[~held].view(1, -1, 1, 1)
    scale = task.FLOW_SCALE
    want_a, want_b = shift * steps / scale, -shift * (factor - steps) / scale
    assert (flow_a[inner][:, 0] - want_a).abs().median() < 0.5 / scale
    assert (flow_b[inner][:, 0] - want_b).abs().median() < 0.5 / scale
    assert flow_a[inner][:, 1].abs().median() < 0.5 / scale  # no vertical motion


def test_flow_context_is_an_option_of_the_flow_mode() -> None:
    plain = get_task("interp", factor=2, mode="flow")
    x0 = drifting_texture(5)
    assert plain.context_channels == 0 and plain(x0).context is None
    assert plain.prepare(x0[:, :, ::2], 5)[1] is None
    assert get_task("vsr", scale=2).prepare(x0[..., ::2, ::2], 5)[1] is None
    task = get_task("interp", factor=2, mode="flow", context=True)
    assert task.to_config() == {"name": "interp", "factor": 2, "mode": "flow", "context": True}
    assert task_from_config(task.to_config()) == task
    assert task_from_config({"name": "interp", "factor": 2, "mode": "flow"}) == plain
    source, context = task.prepare(x0[:, :, ::2], 5)
    assert torch.equal(source, task.lift(x0[:, :, ::2], 5)) and context.shape[1] == 15
    # one keyframe (too few frames for a pair): every frame holds it, with no motion
    source, context = task.prepare(x0[:, :, :1], 2)
    assert torch.equal(source, x0[:, :, :1].expand(-1, -1, 2, -1, -1))
    assert torch.equal(context[:, :3], source) and torch.equal(context[:, 3:6], source)
    assert (context[:, 6] == 1).all() and not context[:, 7:12].any()
    assert torch.equal(context[:, 12:], source)
    with pytest.raises(ValueError, match="^context"):
        get_task("interp", factor=2, mode="blend", context=True)
