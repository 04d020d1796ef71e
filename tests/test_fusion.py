"""Frame interpolation that can beat flow: both warped keyframes reach the model as context,
and a fusion head picks between them per pixel, starting exactly at flow interpolation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tcvbm.bridges import Bridge
from tcvbm.config import load_config
from tcvbm.metrics import psnr
from tcvbm.model_fns import model_window_fn
from tcvbm.models import create
from tcvbm.runs import InferenceBundle
from tcvbm.tasks import get_task
from tcvbm.train.objectives import (
    BridgeMatching,
    SampleRandom,
    TimeSampler,
    Weighting,
    bridge_matching_loss,
    bridge_state,
)
from tcvbm.train.run import build_task

from test_tasks import drifting_texture
from test_train import TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

CONTEXT = get_task("interp", factor=4, mode="flow", context=True)
ARCHS = {"unet": ("unet-tiny", TINY_MODEL), "dit": ("dit-tiny", {"depth": 1})}


def fusion_model(arch: str = "unet", fusion: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    name, params = ARCHS[arch]
    return create(name, **params, context_channels=CONTEXT.CONTEXT_CHANNELS, fusion=fusion)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_an_untrained_fusion_model_returns_the_flow_source(arch: str) -> None:
    """Zero-initialised output: mask logit 0 leaves flow's own weights (1 - tau at factor 4:
    0.75, 0.5, 0.25, which tell A from B) and the residual is 0, whatever x_t and t are;
    keyframes, two identical candidates, come back exactly."""
    sample = CONTEXT(drifting_texture(9, shift=1)[..., :24, :32])
    model = fusion_model(arch).eval()
    x_t = torch.rand(sample.source.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        out = model(x_t, torch.tensor([0.3]), cond=sample.source, context=sample.context)
    torch.testing.assert_close(out, sample.source, atol=1e-6, rtol=0)
    assert torch.equal(out[:, :, ::4], sample.source[:, :, ::4])


def test_the_window_function_prepares_the_context_for_the_model() -> None:
    """Inference (the pipeline's window function, 1 step) gives the model the context its
    task prepares with the source: an untrained fusion model's output is the flow source."""
    obs = CONTEXT.degrade(drifting_texture(9, shift=1)[..., :24, :32])
    bundle = InferenceBundle(fusion_model().eval(), Bridge(9), CONTEXT, 9, (24, 32),
                             "posterior-mean", 1, "bridge")
    out = model_window_fn(bundle)(obs)
    torch.testing.assert_close(out, CONTEXT.lift(obs, 9), atol=1e-6, rtol=0)


@torch.no_grad()
def test_identical_candidates_come_back_exactly_whatever_the_mask() -> None:
    """Keyframes carry A = B = blend: with a live mask and blend weight and no residual the
    fusion returns them bit for bit, while the in-between frames move away from flow."""
    model = fusion_model().eval()
    head = model.out[2]  # the zero-initialised output convolution: 3 residual channels, 1 mask
    for channel in (3, 8):   # the mask logit and the blend weight
        head.weight[channel].normal_(0.0, 0.5, generator=torch.Generator().manual_seed(2))
        head.bias[channel] = 0.3
    sample = CONTEXT(drifting_texture(9, shift=1)[..., :24, :32])
    out = model(sample.source, torch.ones(1), cond=sample.source, context=sample.context)
    assert torch.equal(out[:, :, ::4], sample.source[:, :, ::4])
    assert (out - sample.source)[:, :, 1::4].abs().max() > 1e-3


def test_a_blend_weight_of_one_returns_the_unwarped_blend() -> None:
    """v = 1 (and no other output) gives the keyframes mixed linearly on in-between frames."""
    from tcvbm.models.fusion import fuse_candidates

    sample = CONTEXT(drifting_texture(9, shift=1)[..., :24, :32])
    out = torch.zeros(1, 9, 9, 24, 32)
    out[:, 8] = 1.0
    blend = get_task("interp", factor=4, mode="blend")(drifting_texture(9, shift=1)[..., :24, :32])
    torch.testing.assert_close(fuse_candidates(out, sample.context, 3), blend.source,
                               atol=1e-6, rtol=0)


def test_the_network_runs_only_on_the_frames_it_makes() -> None:
    """9 frames at factor 4: the 3 keyframes are known, the network sees the other 6."""
    model = fusion_model().eval()
    seen = []
    predict = model.predict
    model.predict = lambda x, t: seen.append(x.shape[2]) or predict(x, t)
    sample = CONTEXT(drifting_texture(9, shift=1)[..., :24, :32])
    with torch.no_grad():
        model(sample.source, torch.ones(1), cond=sample.source, context=sample.context)
        keyframe = sample.context[:, :, :1]
        model(keyframe[:, :3], torch.ones(1), cond=keyframe[:, :3], context=keyframe)
    assert seen == [6]                 # a clip of keyframes only never reaches the network


def selection_toy(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(x0, source, context) where candidate A is right on the left third of every frame, B
    on the middle third and the unwarped blend on the right third (where flow failed on
    both sides); elsewhere each is unrelated noise. The source is the average of A and B."""
    x0 = torch.rand(count, 3, 3, 18, 18, generator=generator) * 2 - 1
    third = torch.arange(18) // 6
    a, b, blend = (torch.where(third == k, x0, torch.rand(x0.shape, generator=generator) * 2 - 1)
                   for k in range(3))
    weight = torch.full((count, 1, 3, 18, 18), 0.5)
    flows = torch.zeros(count, 4, 3, 18, 18)
    context = torch.cat([a, b, weight, flows, (a - b).abs().mean(1, keepdim=True), blend], dim=1)
    return x0, 0.5 * (a + b), context


def trained_psnr(fusion: bool, steps: int = 60) -> tuple[float, float]:
    """PSNR of a tiny model trained ``steps`` Adam steps of bridge matching at t = 1 (where
    1-step inference calls it) on fresh toy clips, and of the source, on held-out toys."""
    model = fusion_model(fusion=fusion)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    bridge = Bridge(3, prior="ar1", eps=0.05, rho=0.5)
    g = torch.Generator().manual_seed(0)
    ones = torch.ones(4)
    for _ in range(steps):
        x0, x1, context = selection_toy(4, g)
        loss = bridge_matching_loss(model, bridge, x0, x1, ones, torch.zeros_like(x0), ones,
                                    context=context).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x0, x1, context = selection_toy(8, torch.Generator().manual_seed(99))
    with torch.no_grad():
        out = model.eval()(x1, torch.ones(8), cond=x1, context=context).clamp(-1, 1)
    return float(psnr(out, x0).mean()), float(psnr(x1, x0).mean())


def test_fusion_learns_a_per_pixel_choice_the_residual_model_does_not() -> None:
    """Sixty steps: the fusion head learns to take A on the left, B in the middle and the
    blend on the right, far above the average (the flow-like source); a residual model
    reading the same context has to synthesise the choice and stays at the average."""
    fused, average = trained_psnr(fusion=True)
    residual, _ = trained_psnr(fusion=False)
    assert fused > average + 10, (fused, average)
    assert residual < fused - 10, (residual, fused)


def test_resample_moves_frames_by_whole_pixels_and_not_at_all_at_zero() -> None:
    from tcvbm.models.fusion import resample

    x = torch.rand(2, 3, 4, 10, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(resample(x, torch.zeros(2, 2, 4, 10, 12)), x)
    right = torch.zeros(2, 2, 4, 10, 12)
    right[:, 0] = 1.0                                 # sample one pixel to the right
    torch.testing.assert_close(resample(x, right)[..., :-1], x[..., 1:], atol=1e-5, rtol=0)
    down = torch.zeros(2, 2, 4, 10, 12)
    down[:, 1] = -2.0                                 # two pixels up: rows move down
    torch.testing.assert_close(resample(x, down)[..., 2:, :], x[..., :-2, :], atol=1e-5, rtol=0)


def test_the_residual_and_the_corrections_act_only_where_the_candidates_disagree() -> None:
    """Left half: A = B (still content), right half: they differ by 0.1: a residual of 0.05
    and corrections of a pixel leave the left half at the candidates bit for bit; the right
    half moves by all of the residual (without corrections) and further with them."""
    from tcvbm.models.fusion import fuse_candidates

    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 3, 8, 8, generator=g) * 2 - 1
    b = a.clone()
    b[..., 4:] -= 0.1
    context = torch.cat([a, b, torch.full((1, 1, 3, 8, 8), 0.5), torch.zeros(1, 5, 3, 8, 8),
                         0.5 * (a + b)], 1)
    out = torch.zeros(1, 9, 3, 8, 8)
    out[:, :3] = 0.05
    x0 = fuse_candidates(out, context, 3)
    mix = 0.5 * (a + b)
    assert torch.equal(x0[..., :4], mix[..., :4])
    torch.testing.assert_close(x0[..., 4:], mix[..., 4:] + 0.05)
    out[:, 4:8] = 1.0   # both candidates resampled a pixel right and down
    corrected = fuse_candidates(out, context, 3)
    assert torch.equal(corrected[..., :4], mix[..., :4])
    assert (corrected - x0)[..., 1:-1, 5:-1].abs().min() > 0


def shifted_toy(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(x0, source, context) where the candidates are the frame one pixel off, ``A`` to the
    right and ``B`` to the left, as flow that misplaced every edge by two pixels between the
    keyframes would give them at the middle time: choosing between them cannot help,
    resampling each back by one pixel can."""
    smooth = torch.rand(count * 3, 3, 6, 7, generator=generator)
    x0 = torch.nn.functional.interpolate(smooth, size=(16, 18), mode="bicubic",
                                         align_corners=False)
    x0 = (x0.reshape(count, 3, 3, 16, 18) * 2 - 1).clamp(-1, 1)
    right = torch.cat([x0[..., :1], x0[..., :-1]], dim=-1)     # content moved right by one
    left = torch.cat([x0[..., 1:], x0[..., -1:]], dim=-1)
    mix = 0.5 * (right + left)
    weight = torch.full((count, 1, 3, 16, 18), 0.5)
    context = torch.cat([right, left, weight, torch.zeros(count, 4, 3, 16, 18),
                         torch.zeros(count, 1, 3, 16, 18), mix], dim=1)
    return x0[..., 1:-1], mix[..., 1:-1], context[..., 1:-1]


def test_fusion_corrects_a_flow_error_of_one_pixel() -> None:
    """Sixty steps: the head learns to resample both candidates one pixel back, far above the
    source, where mask and residual alone stay near it."""
    model = fusion_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(0)
    ones = torch.ones(4)
    for _ in range(60):
        x0, x1, context = shifted_toy(4, g)
        pred = model(x1, ones, cond=x1, context=context)
        loss = (pred - x0)[..., 2:-2].pow(2).mean()   # away from the replicated edges
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x0, x1, context = shifted_toy(8, torch.Generator().manual_seed(99))
    with torch.no_grad():
        out = model.eval()(x1, torch.ones(8), cond=x1, context=context).clamp(-1, 1)
    inner = (..., slice(2, -2))
    fused, source = (float(psnr(v[inner], x0[inner]).mean()) for v in (out, x1))
    assert fused > source + 6, (fused, source)


def test_bridge_matching_and_its_time_sampler_feed_the_context_and_t_one() -> None:
    """The objective hands the model its task's context; the sampled times include t = 1,
    where X_t is the source itself."""
    times = TimeSampler(t_one_prob=0.5)
    objective = BridgeMatching(fusion_model(), Bridge(9, eps=0.05), CONTEXT, times,
                               Weighting(), lr=1e-3)
    x0 = torch.cat([drifting_texture(9, shift=1)[..., :16, :16]] * 4)
    rng = SampleRandom(0, 3, range(4), 4)
    out = objective.loss("model", {"model": objective.model}, x0, rng)
    assert torch.isfinite(out.loss) and (out.t == 1).any() and (out.t < 1).any()
    out.loss.backward()
    assert objective.model.out[2].weight.grad.abs().sum() > 0
    blind = BridgeMatching(fusion_model(), Bridge(9), get_task("interp", factor=4, mode="flow"),
                           times, Weighting(), lr=1e-3)
    with pytest.raises(ValueError, match="^context"):
        blind.loss("model", {"model": blind.model}, x0, SampleRandom(0, 3, range(4), 4))


def test_t_one_is_drawn_per_sample_and_its_state_is_the_source() -> None:
    rng = SampleRandom(0, 1, range(400), 400)
    t = TimeSampler(t_one_prob=0.25)(rng)
    assert 0.18 < float((t == 1).float().mean()) < 0.32
    assert float(t[t < 1].max()) <= 0.999
    # no draw is spent on it when it is off: the times of runs made before it stay
    plain = TimeSampler()(SampleRandom(0, 1, range(8), 8))
    u = torch.cat([torch.rand(1, generator=g) for g in SampleRandom(0, 1, range(8), 8).generators])
    assert torch.equal(plain, 1e-3 + (0.999 - 1e-3) * u)
    bridge = Bridge(3)
    x0, x1, noise = torch.randn(3, 2, 1, 3, 4, 4)
    t = torch.tensor([1.0, 0.4])
    x_t = bridge_state(bridge, x0, x1, t, noise)
    assert torch.equal(x_t[:1], x1[:1])
    assert torch.equal(x_t[1:], bridge.sample(x0[1:], x1[1:], t[1:], noise=noise[1:]))


def test_the_fusion_recipe_builds_a_model_that_reads_its_task_context() -> None:
    cfg = load_config("interp-fusion")
    task = build_task(cfg)
    model = create(cfg.model.name, **cfg.model.params)
    assert task.context_channels == model.config.context_channels == 15 and model.config.fusion
    assert cfg.bridge.eps < 0.25 and cfg.loss.t_one_prob > 0
    for bad, key in (("loss.t_one_prob=1.0", "loss.t_one_prob"),
                     ("loss.weighting=min-snr", "loss.t_one_prob")):
        with pytest.raises(ValueError, match=rf"^config: {key}"):
            load_config("interp-fusion", [bad])


def test_log_mse_weighs_clips_by_their_relative_error() -> None:
    """An easy clip (flow nearly right) and a hard one, each with a bias to learn: under MSE
    the hard clip gives 97% of the gradient, under log-MSE (what mean PSNR counts) the easy
    clip gives most of it, so a model cannot buy the hard clip's fraction of a dB with the
    easy clip's several dB."""
    from tcvbm.train.objectives import per_sample_log_mse, per_sample_mse

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 2, 8, 8, generator=g)
    errors = torch.stack([torch.full((3, 2, 8, 8), 0.003), torch.full((3, 2, 8, 8), 0.1)])
    shares = {}
    for name, distance in (("mse", per_sample_mse), ("log", per_sample_log_mse)):
        bias = torch.zeros(2, requires_grad=True)
        pred = target + errors + bias.view(2, 1, 1, 1, 1)
        distance(pred, target).sum().backward()
        shares[name] = float(bias.grad[0].abs() / bias.grad.abs().sum())
    assert shares["mse"] < 0.05 and shares["log"] > 0.5, shares
    torch.testing.assert_close(per_sample_log_mse(target + errors, target),
                               torch.log(torch.tensor([0.003 ** 2, 0.1 ** 2]) + 1e-5))


def test_the_loss_distance_is_a_checked_bridge_matching_option(tmp_path) -> None:
    from tcvbm.train.run import distance, distillation_objective

    cfg = load_config("configs/interp-fusion.yaml")
    assert cfg.loss.distance == "log-mse" and distance(cfg).func.__name__ == "per_sample_log_mse"
    with pytest.raises(ValueError, match="loss.distance"):
        load_config("configs/interp-fusion.yaml", ["loss.distance=l1"])
    with pytest.raises(ValueError, match="loss.distance"):
        distillation_objective(load_config("configs/distill-interp-v1.yaml",
                                           ["loss.distance=log-mse"]))



def test_the_head_skips_the_known_frames_and_changes_nothing() -> None:
    """A trained-like (non-zero) head: running it on the made frames only gives what the head
    over the whole window gives, the keyframes come back exactly and the caller's context
    is left as it was."""
    from tcvbm.models.fusion import fuse_candidates

    model = fusion_model().eval()
    with torch.no_grad():
        head = model.out[2]
        head.weight.copy_(torch.randn(head.weight.shape,
                                      generator=torch.Generator().manual_seed(3)) * 0.05)
        sample = CONTEXT(drifting_texture(9, shift=1)[..., :24, :32])
        x_t, t, context = sample.source, torch.ones(1), sample.context.clone()
        got = model(x_t, t, cond=x_t, context=sample.context)
        assert torch.equal(sample.context, context)          # the caller's context is kept
        made = torch.arange(9) % 4 != 0
        out = torch.zeros(1, 3 + 6, 9, 24, 32)
        stacked = torch.cat([x_t, x_t, sample.context], dim=1)
        out[:, :, made] = model.predict(stacked[:, :, made], t)
        want = fuse_candidates(out, sample.context, 3)
    assert (got - sample.source).abs().max() > 1e-3          # the head does act
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert torch.equal(got[:, :, ::4], sample.source[:, :, ::4])
