"""Metrics on inputs whose answer is known by construction or by a reference implementation."""

from __future__ import annotations

import math

import pytest
import torch

from tcvbm import metrics


def pattern(n: int = 3, size: int = 64, shift: float = 0.0) -> torch.Tensor:
    """(1, 3, n, size, size) smooth pattern moving ``shift`` px per frame, in [-1, 1]."""
    h = torch.arange(float(size)).view(size, 1)
    w = torch.arange(float(size)).view(1, size)
    frames = [torch.stack([torch.sin(0.3 * (w - shift * i) + c) * torch.cos(0.2 * h)
                           for c in range(3)]) for i in range(n)]
    return torch.stack(frames, dim=1)[None]


def test_psnr_known_values():
    x = pattern()
    assert float(metrics.psnr(x, x)) == metrics.PSNR_MAX
    y = (x + 0.1).clamp(-1, 1)
    mse = float(((y - x) ** 2).mean())
    assert float(metrics.psnr(y, x)) == pytest.approx(10 * math.log10(4 / mse), abs=0.2)
    frames = torch.tensor([False, True, False])
    z = x.clone()
    z[:, :, 0] = -z[:, :, 0]                      # damage a frame that is not scored
    assert float(metrics.psnr(z, x, frames)) == metrics.PSNR_MAX


def test_ssim_and_ms_ssim():
    x = pattern()
    assert float(metrics.ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(metrics.ssim(x * 0.5, x)) < 0.99
    with pytest.raises(metrics.MetricUnavailable, match="ms_ssim"):
        metrics.ms_ssim(x, x)
    big = pattern(n=1, size=176)
    assert float(metrics.ms_ssim(big, big)) == pytest.approx(1.0, abs=1e-4)
    assert float(metrics.ms_ssim(big * 0.5, big)) < 0.99


def test_ssim_of_identical_flat_frames_is_one():
    """Windowed variances of a flat frame are differences of equal sums: float32 leaves
    enough of them to score identical frames below 1."""
    x = torch.full((1, 3, 2, 32, 32), 30 / 255 * 2 - 1)
    assert float(metrics.ssim(x, x)) == pytest.approx(1.0, abs=1e-9)


def test_ssim_is_computed_on_intensities():
    """Two flat grey frames differ only in SSIM's luminance term, ``(2ab + C1) / (a^2 + b^2 +
    C1)`` on intensities a, b in [0, 1] with ``C1 = 0.01^2``; on zero-centred values that term
    compares means near 0 and collapses (0.0099 for these two greys)."""
    a, b = 0.5, 0.6
    x = torch.full((1, 3, 1, 32, 32), 2 * a - 1)
    y = torch.full((1, 3, 1, 32, 32), 2 * b - 1)
    c1 = 0.01 ** 2
    assert float(metrics.ssim(y, x)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1),
                                                      abs=1e-4)


def test_ssim_of_frames_smaller_than_its_window():
    """Frames under 11 px (a training run's tiny evaluation clips) are scored over their
    reflection, as torchmetrics pads every border; at 5 px the reflection no longer fits."""
    from torchmetrics.functional.image import structural_similarity_index_measure as reference

    x = pattern(n=2, size=8)
    y = x * 0.8
    assert float(metrics.ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    frames = lambda clip: clip[0].transpose(0, 1)  # noqa: E731  (N, 3, H, W)
    expected = float(reference((frames(y).double() + 1) / 2, (frames(x).double() + 1) / 2,
                               data_range=1.0))
    assert float(metrics.ssim(y, x)) == pytest.approx(expected, abs=1e-6) and expected < 0.99
    with pytest.raises(metrics.MetricUnavailable, match="ssim: frames of .5, 5. px"):
        metrics.ssim(pattern(size=5), pattern(size=5))


def test_temporal_warp_error_sees_flicker():
    truth = pattern(n=4, shift=1.5)
    out, ref = metrics.temporal_warp_error(truth, truth)
    assert torch.equal(out, ref) and float(ref) < 0.05
    flicker = truth.clone()
    flicker[:, :, 1::2] *= 0.7
    out, ref = metrics.temporal_warp_error(flicker, truth)
    assert float(out) > float(ref) + 0.03


def test_stlpips_matches_the_reference_implementation():
    net = metrics.load_stlpips()
    x = pattern(n=1)[:, :, 0]
    # Values of stlpips_pytorch.stlpips.LPIPS(net="alex", variant="shift_tolerant") on the
    # same inputs (its code needs torchvision, so they were computed once and kept here).
    assert float(net(x, torch.roll(x, 2, -1))) == pytest.approx(0.016786, abs=1e-5)
    assert float(net(x, x * 0.5)) == pytest.approx(0.096531, abs=1e-5)
    clip = pattern(n=2)
    assert float(metrics.perceptual_distance(net, clip, clip)) == 0.0


def test_weightless_metrics_are_skipped_not_faked(tmp_path):
    with pytest.raises(metrics.MetricUnavailable, match="lpips"):
        metrics.load_lpips(None)
    with pytest.raises(metrics.MetricUnavailable, match="alexnet"):
        metrics.load_lpips(__file__, tmp_path / "alexnet.pth")
    with pytest.raises(metrics.MetricUnavailable, match="fvd"):
        metrics.load_torchscript_features(tmp_path / "i3d.pt", "fvd")
    bogus = tmp_path / "lin.pth"
    torch.save({"something": torch.zeros(1)}, bogus)
    with pytest.raises(metrics.MetricUnavailable, match="not an AlexNet"):
        metrics.load_lpips(bogus)


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, 2.0, 0, 0, 0, 0])
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(5.0, abs=1e-6)


def test_ssim_and_ms_ssim_are_torchmetrics_definitions() -> None:
    """The separable window and the framewise loop change the cost, not the numbers: SSIM
    and MS-SSIM agree with torchmetrics' reference on odd-sized noisy frames."""
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure as ms_reference,
        structural_similarity_index_measure as reference,
    )

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 2, 181, 197, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    unit = lambda clip: (clip.transpose(1, 2).flatten(0, 1).double() + 1) / 2  # noqa: E731
    per_frame = {"ssim": reference(unit(y), unit(x), data_range=1.0, reduction="none"),
                 "ms_ssim": ms_reference(unit(y), unit(x), data_range=1.0, reduction="none")}
    for name, fn in (("ssim", metrics.ssim), ("ms_ssim", metrics.ms_ssim)):
        expected = per_frame[name].view(2, 2).mean(1)
        torch.testing.assert_close(fn(y, x), expected, atol=1e-7, rtol=0)
        assert float(expected.max()) < 0.95
