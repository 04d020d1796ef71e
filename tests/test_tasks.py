"""Tasks build the source clip from a clean one; keyframes and shapes are exact."""

from __future__ import annotations

import pytest
import torch

from tcvbm.tasks import TASKS, get_task, task_from_config


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("mode", ["blend", "nearest"])
def test_interpolation_keeps_keyframes(factor: int, mode: str) -> None:
    n = 2 * factor + 1
    x0 = torch.rand(2, 3, n, 6, 7) * 2 - 1
    out = get_task("interp", factor=factor, mode=mode)(x0)
    assert out.source.shape == x0.shape and out.observation.shape == (2, 3, 3, 6, 7)
    keys = torch.arange(n) % factor == 0
    assert torch.equal(out.source[:, :, keys], x0[:, :, keys])
    assert out.mask.shape == (2, 1, n, 1, 1) and torch.equal(out.mask[0, 0, :, 0, 0], keys)
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
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 48, 100, generator=g), 5, 1, 2) * 2 - 1
    x0 = torch.stack([texture[..., 3 * i: 3 * i + 64] for i in range(5)], dim=2)  # (1, 3, 5, 48, 64)
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
    assert out.mask[0, 0, :, 0, 0].tolist() == [True] + [False] * 5


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("frames", [1, 5])
def test_super_resolution_shapes_and_content(scale: int, frames: int) -> None:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 24), indexing="ij")
    smooth = (0.5 * (xx + yy)).expand(1, 3, frames, 16, 24)
    out = get_task("vsr", scale=scale)(smooth)
    assert out.observation.shape == (1, 3, frames, 16 // scale, 24 // scale)
    assert out.source.shape == smooth.shape
    assert (out.source - smooth)[..., 4:-4, 4:-4].abs().max() < 0.05  # a ramp survives
    assert not out.mask.any()
    with pytest.raises(ValueError, match="^x0"):
        get_task("vsr", scale=4)(torch.zeros(1, 3, 1, 10, 12))


def test_image_tasks_are_one_frame_clips_through_the_same_code() -> None:
    image = torch.rand(2, 3, 1, 16, 16) * 2 - 1
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert type(get_task("image-sr", scale=2)) is type(get_task("vsr", scale=2))
    blurred = get_task("image-blur", sigma=2.0)(image).source
    assert blurred.shape == image.shape and blurred.std() < image.std()
    noisy1 = get_task("image-noise", sigma=0.2)(image, generator=g()).source
    noisy2 = get_task("image-noise", sigma=0.2)(image, generator=g()).source
    assert torch.equal(noisy1, noisy2)
    assert 0.15 < (noisy1 - image).std() < 0.25


def test_blur_is_per_frame() -> None:
    clip = torch.rand(1, 3, 4, 12, 12)
    blur = get_task("blur", sigma=1.0)
    whole = blur(clip).source
    single = torch.cat([blur(clip[:, :, i:i + 1]).source for i in range(4)], dim=2)
    assert torch.allclose(whole, single, atol=1e-6)


def test_config_round_trip_and_errors() -> None:
    for name in TASKS:
        task = get_task(name)
        assert task_from_config(task.to_config()) == task
    with pytest.raises(ValueError, match="^task"):
        get_task("deblur")
    with pytest.raises(ValueError, match="^factor"):
        get_task("interp", factor=3)
    with pytest.raises(ValueError, match="bad arguments"):
        get_task("i2v", factor=2)
    with pytest.raises(ValueError, match="^x0"):
        get_task("interp")(torch.zeros(3, 9, 4, 4))
