"""Backbone contract: shapes, temporal mixing, N = 1 identity, save/load, noise channels,
gradients, bf16, attention kernel dispatch and the registry. Tiny configs only (CPU)."""

from __future__ import annotations

import logging
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from tcvbm.models import (
    DiTVideo,
    UNetVideo,
    attention,
    available_models,
    create,
    dit,
    load_pretrained,
)

TINY = ["unet-tiny", "dit-tiny", "unet-tiny-p2"]
NAMED = ["unet-tiny", "unet-small", "unet-base", "dit-tiny", "dit-small", "dit-base"]
# Variants of the named configs, built like them: the UNet reading 2x2 patches.
VARIANTS = {"unet-tiny-p2": ("unet-tiny", {"patch_size": 2})}


def build(name: str):
    base, overrides = VARIANTS.get(name, (name, {}))
    return create(base, **overrides)
SIZES = {"tiny": (0, 2e6), "small": (20e6, 50e6), "base": (100e6, 200e6)}


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its (often zero) initialisation, so every path is live."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def clip(b: int = 1, n: int = 3, h: int = 24, w: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, n, h, w, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


@pytest.fixture(scope="module", params=TINY)
def model(request):
    torch.manual_seed(0)
    return perturb(build(request.param)).eval()


def test_named_configs_are_listed():
    assert set(NAMED) <= set(available_models())


@pytest.mark.parametrize("name", NAMED)
def test_parameter_counts(name):
    with torch.device("meta"):  # no memory, no init cost: only the count matters
        m = create(name)
    lo, hi = SIZES[name.split("-")[1]]
    assert lo <= sum(p.numel() for p in m.parameters()) < hi


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_output_shapes(model, n):
    x = clip(n=n, h=24, w=40)
    with torch.no_grad():
        out = model(x, torch.full((1,), 0.5), cond=x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("hw", [(17, 29), (9, 13)])
def test_odd_sizes_are_padded_and_cropped(model, hw):
    """Frames are replicate-padded at the bottom and right to the size multiple the model
    needs, and the answer is cropped back: the same as padding outside and cropping after."""
    h, w = hw
    multiple = getattr(model, "multiple", None) or model.config.patch_size
    ph, pw = -h % multiple, -w % multiple
    assert ph and pw, "the sizes must need padding"
    x, cond = clip(b=2, n=2, h=h, w=w, seed=1), clip(b=2, n=2, h=h, w=w, seed=2)
    pad = lambda v: F.pad(v, (0, pw, 0, ph, 0, 0), mode="replicate")  # noqa: E731
    t = torch.tensor([0.2, 0.8])
    with torch.no_grad():
        out = model(x, t, cond=cond)
        outside = model(pad(x), t, cond=pad(cond))[..., :h, :w]
    assert out.shape == x.shape
    torch.testing.assert_close(out, outside, atol=1e-6, rtol=1e-6)


def test_temporal_mixing(model):
    x = clip(n=5)
    y = x.clone()
    y[:, :, 3] = -y[:, :, 3]
    t = torch.full((1,), 0.7)
    with torch.no_grad():
        a, b = model(x, t, cond=x), model(y, t, cond=y)
        for j in (0, 1, 4):
            assert (a[:, :, j] - b[:, :, j]).abs().max() > 1e-4, f"frame {j} did not see frame 3"
        model.set_temporal_enabled(False)
        try:
            a, b = model(x, t, cond=x), model(y, t, cond=y)
        finally:
            model.set_temporal_enabled(True)
    assert torch.equal(a[:, :, [0, 1, 2, 4]], b[:, :, [0, 1, 2, 4]])


def test_the_temporal_convolution_runs_as_its_conv3d():
    """frame_conv (a (3, 1) Conv2d over frames x pixels) sums exactly what the Conv3d whose
    weights it reads does, so checkpoints keep their meaning."""
    from tcvbm.models.unet import frame_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(8, 6, (3, 1, 1), padding=(1, 0, 0))
    v = torch.randn(2, 8, 5, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(frame_conv(conv, v), conv(v), atol=1e-5, rtol=1e-5)


def test_single_frames_equal_video_with_temporal_layers_off(model):
    """An image model and a video model are one network: N = 1 skips the temporal layers."""
    x = clip(b=2, n=4)
    t = torch.tensor([0.3, 0.9])
    with torch.no_grad():
        frames = torch.cat([model(x[:, :, i : i + 1], t, cond=x[:, :, i : i + 1])
                            for i in range(4)], dim=2)
        model.set_temporal_enabled(False)
        try:
            video = model(x, t, cond=x)
        finally:
            model.set_temporal_enabled(True)
    torch.testing.assert_close(frames, video, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(model, tmp_path):
    x = clip(n=3)
    t = torch.full((1,), 0.4)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    for loaded in (type(model).from_pretrained(tmp_path), load_pretrained(tmp_path),
                   create(tmp_path)):
        assert type(loaded) is type(model)
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x, t, cond=x), model(x, t, cond=x))


@pytest.mark.parametrize("name", TINY)
def test_add_noise_channels(name, tmp_path):
    torch.manual_seed(1)
    m = perturb(build(name)).eval()
    x = clip(n=3)
    t = torch.ones(1)
    with torch.no_grad():
        before = m(x, t, cond=x)
        m.add_noise_channels(4)
        assert m.config.noise_channels == 4
        z = torch.randn(1, 4, 3, 24, 40)
        torch.testing.assert_close(m(x, t, cond=x, noise=z), before, atol=1e-6, rtol=0)
        m.save_pretrained(tmp_path)
        loaded = load_pretrained(tmp_path).eval()
        assert loaded.config.noise_channels == 4
        assert torch.equal(loaded(x, t, cond=x, noise=z), m(x, t, cond=x, noise=z))
        perturb(m, seed=3)  # once trained, the noise must matter
        assert not torch.allclose(m(x, t, cond=x, noise=z), m(x, t, cond=x, noise=-z))
        with pytest.raises(ValueError, match="noise"):
            m(x, t, cond=x, noise=z[:, :2])


def test_a_model_with_noise_channels_needs_its_noise_and_never_draws_it():
    """Noise a model drew itself could not be reproduced from any seed the caller holds."""
    m = build("unet-tiny").eval()
    m.add_noise_channels(2)
    x = clip(n=2, h=16, w=16)
    state = torch.random.get_rng_state()
    with torch.no_grad(), pytest.raises(ValueError, match=r"UNetVideo has 2 noise channels"):
        m(x, torch.ones(1), cond=x)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(2)
    m = perturb(build(name)).train()
    x = clip(b=2, n=3, h=16, w=24)
    m(x, torch.rand(2), cond=-x).square().mean().backward()
    missing = [k for k, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", TINY)
def test_gradient_checkpointing_matches(name):
    torch.manual_seed(3)
    m = perturb(build(name)).train()
    x = clip(b=1, n=2, h=16, w=16)
    t = torch.rand(1)
    m(x, t, cond=x).sum().backward()
    ref = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.enable_gradient_checkpointing()
    m(x, t, cond=x).sum().backward()
    for r, p in zip(ref, m.parameters()):
        torch.testing.assert_close(p.grad, r, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_forward(model):
    """Under bf16 autocast the network really runs in bf16, and its part of the prediction
    (the output less the source it is added to) stays within a few percent of fp32's."""
    x = clip(n=2, h=16, w=16)
    t = torch.full((1,), 0.5)
    with torch.no_grad():
        ref = model(x, t, cond=x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, cond=x)
    net_fp32, net_bf16 = ref - x, out.float() - x
    assert out.shape == x.shape and not torch.equal(out, ref), "autocast changed nothing"
    assert net_fp32.abs().mean() > 0.1  # the perturbed network contributes: a real comparison
    assert (net_bf16 - net_fp32).norm() < 0.05 * net_fp32.norm()


def test_unconditional_ignores_cond():
    torch.manual_seed(4)
    m = perturb(create("dit-tiny", conditional=False)).eval()
    x = clip(n=2)
    with torch.no_grad():
        t = torch.full((1,), 0.5)
        assert torch.equal(m(x, t), m(x, t, cond=-x))


def test_fresh_conditional_model_returns_the_source():
    """Zero-initialised output layers plus the residual over the source: x0_hat = x1 at init."""
    x, x1 = clip(n=2, seed=1), clip(n=2, seed=2)
    for name in TINY:
        with torch.no_grad():
            assert torch.equal(build(name).eval()(x, torch.rand(1), cond=x1), x1)


def test_patch_size_reads_patches_and_shuffles_back():
    m = build("unet-tiny-p2")
    assert m.multiple == 2 * create("unet-tiny").multiple
    assert m.conv_in.stride == (2, 2) and m.out[-1].upscale_factor == 2
    with pytest.raises(ValueError, match="patch_size"):
        create("unet-tiny", patch_size=0)


def test_input_validation(model):
    x = clip(n=2)
    t = torch.rand(1)
    with pytest.raises(ValueError, match="x_t"):
        model(x[:, :, 0], t, cond=x)
    with pytest.raises(ValueError, match="cond"):
        model(x, t)
    with pytest.raises(ValueError, match="t must"):
        model(x, torch.rand(3), cond=x)
    with pytest.raises(ValueError, match="noise"):
        model(x, t, cond=x, noise=torch.randn(1, 1, 2, 24, 40))


@pytest.mark.parametrize("name", ["unet-tiny", "dit-tiny"])
def test_context_channels_are_read_after_the_source_and_round_trip(name, tmp_path):
    """A task's context enters after the source and before the noise: it changes the output,
    is required exactly as configured, survives save/load, and noise channels added later
    still start at zero."""
    m = perturb(create(name, context_channels=5)).eval()
    x, t = clip(n=3), torch.full((1,), 0.6)
    ctx = torch.randn(1, 5, 3, 24, 40, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = m(x, t, cond=x, context=ctx)
        assert not torch.allclose(out, m(x, t, cond=x, context=-ctx))
        m.save_pretrained(tmp_path)
        loaded = load_pretrained(tmp_path).eval()
        assert loaded.config.context_channels == 5 and not loaded.config.fusion
        assert torch.equal(loaded(x, t, cond=x, context=ctx), out)
        m.add_noise_channels(2)
        z = torch.randn(1, 2, 3, 24, 40)
        torch.testing.assert_close(m(x, t, cond=x, context=ctx, noise=z), out, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"^context: this \w+ reads 5 context channels"):
        loaded(x, t, cond=x)
    with pytest.raises(ValueError, match=r"^context: this \w+ reads 5"):
        loaded(x, t, cond=x, context=ctx[:, :4])
    with pytest.raises(ValueError, match=r"^context: given to a \w+ without context channels"):
        build(name)(x, t, cond=x, context=ctx)


@pytest.mark.parametrize("name", ["unet-tiny", "dit-tiny"])
def test_fusion_mixes_the_context_candidates_and_round_trips(name, tmp_path):
    """x0 = F + v (L - F) + g r with F = B + m (A - B), m = sigmoid(logit(w) + l), w clamped
    away from 0 and 1: a network that outputs zeros gives the prior mix whatever the blend
    L (the last three channels), and a trained one saves and loads as it computes."""
    x = clip(n=3)
    a, b, blend = clip(n=3, seed=1), clip(n=3, seed=2), clip(n=3, seed=4)
    w = torch.rand(1, 1, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    ctx = torch.cat([a, b, w, blend], dim=1)
    m = create(name, context_channels=10, fusion=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x, torch.rand(1), cond=x, context=ctx),
                                   b + w.clamp(1e-3, 1 - 1e-3) * (a - b), atol=1e-6, rtol=0)
        perturb(m)
        m.save_pretrained(tmp_path)
        loaded = load_pretrained(tmp_path).eval()
        assert loaded.config.fusion and loaded.config.context_channels == 10
        t = torch.full((1,), 0.5)
        assert torch.equal(loaded(x, t, cond=x, context=ctx), m(x, t, cond=x, context=ctx))


def test_fusion_needs_its_candidates_and_a_residual():
    with pytest.raises(ValueError, match="context_channels must be >= 10"):
        create("unet-tiny", context_channels=9, fusion=True)
    with pytest.raises(ValueError, match="predict_residual"):
        create("dit-tiny", context_channels=10, fusion=True, predict_residual=False)
    with pytest.raises(ValueError, match="out_channels == in_channels"):
        create("unet-tiny", context_channels=10, fusion=True, out_channels=1)
    with pytest.raises(ValueError, match="context_channels must be >= 0"):
        create("unet-tiny", context_channels=-1)


def test_full_space_time_attention():
    torch.manual_seed(5)
    m = perturb(create("dit-tiny", attention="full")).eval()
    x = clip(n=3)
    y = x.clone()
    y[:, :, 2] = 0
    with torch.no_grad():
        a, b = m(x, torch.ones(1), cond=x), m(y, torch.ones(1), cond=y)
        single = m(x[:, :, :1], torch.ones(1), cond=x[:, :, :1])
        m.set_temporal_enabled(False)
        off = m(x, torch.ones(1), cond=x)
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-4
    torch.testing.assert_close(off[:, :, :1], single, atol=1e-5, rtol=1e-5)


def test_rope_generalises_to_unseen_grids(monkeypatch):
    """Positions come from the actual grid: the same model runs on any N, H, W, and on each
    the frames' order matters. Rotary angles are the only position signal across frames:
    with every angle zero, reversing the frames just reverses the output."""
    torch.manual_seed(6)
    m = perturb(create("dit-tiny")).eval()
    t = torch.full((1,), 0.6)

    def reversed_output_gap(x: torch.Tensor) -> float:
        flipped = m(x.flip(2), t, cond=x.flip(2)).flip(2)
        return float((m(x, t, cond=x) - flipped).abs().max())

    grids = [(9, 12, 20), (32, 4, 6)]
    with torch.no_grad():
        x = clip(n=1, h=8, w=8)
        assert m(x, t, cond=x).shape == x.shape
        for n, h, w in grids:
            assert reversed_output_gap(clip(n=n, h=h, w=w)) > 1e-3, (n, h, w)
        zero = lambda sizes, pairs, *args: torch.zeros(math.prod(sizes), sum(pairs))  # noqa: E731
        monkeypatch.setattr(dit, "rope_angles", zero)
        for n, h, w in grids:
            assert reversed_output_gap(clip(n=n, h=h, w=w)) < 1e-5, (n, h, w)


# ---- attention kernel dispatch ---------------------------------------------------------


@pytest.fixture
def fresh_probe_cache(monkeypatch):
    monkeypatch.setattr(attention, "_probe_results", {})
    monkeypatch.setattr(attention, "_logged", set())


def fake_xformers(monkeypatch, fn):
    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = fn
    pkg = types.ModuleType("xformers")
    pkg.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", pkg)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)


def test_sdpa_on_cpu_and_debug_log(fresh_probe_cache, caplog):
    q = torch.randn(2, 2, 5, 8)
    with caplog.at_level(logging.DEBUG, logger="tcvbm.models.attention"):
        assert attention.select_kernel(q) == "sdpa"
    assert "sdpa" in caplog.text
    with pytest.raises(ValueError, match="xformers"):
        attention.select_kernel(q, "xformers")
    with pytest.raises(ValueError, match="kernel"):
        attention.select_kernel(q, "flash")


def test_broken_xformers_falls_back(fresh_probe_cache, monkeypatch, caplog):
    """An xformers built for another torch imports but raises NotImplementedError."""
    calls = []

    def broken(q, k, v):
        calls.append(1)
        raise NotImplementedError("no operator found")

    fake_xformers(monkeypatch, broken)
    with caplog.at_level(logging.DEBUG, logger="tcvbm.models.attention"):
        assert not attention.xformers_usable("cpu", torch.float32)
        assert not attention.xformers_usable("cpu", torch.float32)
    assert len(calls) == 1, "the probe result must be cached"
    assert "NotImplementedError" in caplog.text


def test_working_xformers_probe(fresh_probe_cache, monkeypatch):
    fake_xformers(monkeypatch, lambda q, k, v: q)
    assert attention.xformers_usable("cpu", torch.float32)


def test_large_batches_are_chunked(monkeypatch):
    q, k, v = torch.randn(3, 7, 2, 4, 8).unbind(0)
    ref = attention.dot_product_attention(q, k, v)
    monkeypatch.setattr(attention, "MAX_ATTENTION_BATCH", 3)
    torch.testing.assert_close(attention.dot_product_attention(q, k, v), ref)


def test_kernels_agree():
    if not torch.cuda.is_available():
        pytest.skip("xformers and SDPA can only be compared on CUDA; no CUDA device here")
    q, k, v = torch.randn(3, 4, 8, 256, 64, device="cuda", dtype=torch.bfloat16).unbind(0)
    if not attention.xformers_usable(q.device, q.dtype):
        pytest.skip("xformers is not installed or cannot run with this torch build")
    torch.testing.assert_close(
        attention.dot_product_attention(q, k, v, "xformers"),
        attention.dot_product_attention(q, k, v, "sdpa"),
        atol=2e-2,
        rtol=2e-2,
    )


# ---- registry ---------------------------------------------------------------------------


def test_create_from_name_yaml_and_overrides(tmp_path):
    assert isinstance(create("unet-tiny"), UNetVideo)
    m = create("dit-tiny", conditional=False, depth=2)
    assert isinstance(m, DiTVideo) and not m.config.conditional and m.config.depth == 2
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("arch: unet\nbase_channels: 16\nchannel_mult: [1, 2]\nnum_res_blocks: 1\n"
                   "attention_levels: [1]\ntemporal_attention_levels: [1]\nhead_dim: 16\n"
                   "groups: 8\n")
    m = create(cfg)
    assert isinstance(m, UNetVideo) and m.config.base_channels == 16
    x = clip(n=2, h=10, w=14)
    with torch.no_grad():
        assert m(x, torch.rand(1), cond=x).shape == x.shape


def test_create_errors(tmp_path):
    with pytest.raises(ValueError, match="unet-tiny"):
        create("unet-huge")
    with pytest.raises(ValueError, match="widht"):
        create("unet-tiny", widht=3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("arch: transformer\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        create(bad)
    bad.write_text("arch: dit\nhidden: 3\n")
    with pytest.raises(ValueError, match="hidden"):
        create(bad)
    create("dit-tiny").save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="overrides"):
        create(tmp_path / "saved", depth=1)
