"""Inverse bridge-matching distillation on CPU with tiny UNets."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tcvbm.bridges import Bridge
from tcvbm.config import load_config
from tcvbm.models import create
from tcvbm.runs import draw_model_noise, load_bundle, save_bundle
from tcvbm.samplers import get_sampler, get_timesteps
from tcvbm.tasks import get_task
from tcvbm.train.objectives import (
    InverseDistillation,
    SampleRandom,
    TimeSampler,
    Weighting,
    frozen,
    generator_loss,
)
from tcvbm.train.run import distill, distillation_objective, fit_objective as fit

from test_train import FRAMES, SIZE, TINY_MODEL, Clips, bridge_matching, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def teacher_dir(tmp_path: Path) -> Path:
    """A saved bridge model whose output is not simply its source (non-zero last layer)."""
    torch.manual_seed(0)
    model = create("unet-tiny", **TINY_MODEL)
    with torch.no_grad():
        for p in model.out.parameters():
            p.normal_(0.0, 0.05)
    save_bundle(tmp_path / "teacher" / "model", model, Bridge(FRAMES), get_task("interp", factor=2),
                FRAMES, [SIZE, SIZE], "stochastic", 4)
    return tmp_path / "teacher"


def distill_cfg(tmp_path: Path, *overrides: str):
    return load_config("distill-tiny", [f"teacher={teacher_dir(tmp_path)}",
                                        f"output_dir={tmp_path / 'student'}", *overrides])


@pytest.mark.parametrize("steps", [1, 3])
def test_generator_starts_exactly_at_teacher_t1_prediction(tmp_path: Path, steps: int) -> None:
    objective = distillation_objective(distill_cfg(tmp_path, f"distill.student_steps={steps}"))
    assert objective.generator.config.noise_channels == 4
    x0 = Clips(2).clips
    x1 = objective.task(x0).source
    rng = SampleRandom(0, 0, [0, 1], 2)
    rng.randint_shared = lambda high: 0  # type: ignore[method-assign]  # the t = 1 grid point
    with torch.no_grad():
        student = objective.generate(objective.generator, x1, rng)
        teacher = objective.teacher(x1, torch.ones(2), cond=x1)
        fake = objective.fake(x1, torch.ones(2), cond=x1)
    assert not torch.equal(teacher, x1)
    assert torch.equal(student, teacher)
    assert torch.equal(fake, teacher)


def test_a_fusion_teacher_is_distilled_with_its_task_context(tmp_path: Path) -> None:
    """Teacher, fake model and generator all read the context of the step's sources: the
    generator starts at the teacher's t = 1 prediction, and a fake and a generator step run
    and train the generator."""
    task = get_task("interp", factor=2, mode="flow", context=True)
    torch.manual_seed(0)
    model = create("unet-tiny", **TINY_MODEL, context_channels=task.context_channels,
                   fusion=True)
    with torch.no_grad():
        for p in model.out.parameters():
            p.normal_(0.0, 0.05)
    save_bundle(tmp_path / "teacher" / "model", model, Bridge(FRAMES), task, FRAMES,
                [SIZE, SIZE], "stochastic", 4)
    objective = distillation_objective(load_config("distill-tiny", [
        f"teacher={tmp_path / 'teacher'}", f"output_dir={tmp_path / 'student'}"]))
    x0 = Clips(2).clips
    sample = objective.task(x0)
    rng = SampleRandom(0, 0, [0, 1], 2)
    rng.randint_shared = lambda high: 0  # type: ignore[method-assign]  # the t = 1 grid point
    with torch.no_grad():
        student = objective.generate(objective.generator, sample.source, rng, sample.context)
        teacher = objective.teacher(sample.source, torch.ones(2), cond=sample.source,
                                    context=sample.context)
    assert torch.equal(student, teacher) and not torch.equal(teacher, sample.source)
    nets = {"generator": objective.generator, "fake": objective.fake}
    fake = objective.loss("fake", nets, x0, SampleRandom(0, 0, [0, 1], 2))
    fake.loss.backward()
    with torch.no_grad():  # make the fake differ from the teacher, as it does after training
        for p in objective.fake.out.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with frozen(objective.fake):
        gen = objective.loss("generator", nets, x0, SampleRandom(0, 5, [0, 1], 2))
        gen.loss.backward()
    assert torch.isfinite(fake.loss) and torch.isfinite(gen.loss)
    assert objective.generator.out[2].weight.grad.abs().sum() > 0


class Tap(nn.Module):
    """Records the input a frozen network is called with, to read its gradient."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x_t, t, cond=None, context=None):
        x_t.retain_grad()
        self.seen = x_t
        return self.inner(x_t, t, cond=cond, context=context)


def test_generator_gradient_passes_through_frozen_teacher_and_fake(tmp_path: Path) -> None:
    objective = distillation_objective(distill_cfg(tmp_path))
    with torch.no_grad():  # make the fake differ from the teacher, as it does after training
        for p in objective.fake.out.parameters():
            p.add_(0.05 * torch.randn_like(p))
    teacher, fake = Tap(objective.teacher), Tap(objective.fake)
    objective.teacher = teacher
    x0 = Clips(2).clips
    with frozen(objective.fake):  # as the loop keeps it through the step's backward
        out = objective.loss("generator", {"generator": objective.generator, "fake": fake}, x0,
                             SampleRandom(0, 5, [0, 1], 2))
        out.loss.backward()
    assert teacher.seen.grad is not None and teacher.seen.grad.abs().sum() > 0
    assert fake.seen.grad is not None and fake.seen.grad.abs().sum() > 0
    assert all(p.grad is None for p in objective.teacher.parameters())
    assert all(p.grad is None and p.requires_grad for p in objective.fake.parameters())
    assert sum(float(p.grad.abs().sum()) for p in objective.generator.parameters()
               if p.grad is not None) > 0


class GaussianDenoiser(nn.Module):
    """The exact x0-predictor E[X_0 | X_t] for X_0 ~ N(mean, var) per pixel, under the
    Brownian bridge of one frame: X_t = X_1 + a (X_0 - X_1) + sqrt(v) xi with a = 1 - t,
    v = eps t (1 - t). Then E[X_0 | X_t] = mean + k (X_t - X_1 - a (mean - X_1)),
    k = a var / (a^2 var + v)."""

    def __init__(self, mean: float, var: float, eps: float) -> None:
        super().__init__()
        self.mean, self.var, self.eps = mean, var, eps

    def forward(self, x_t, t, cond=None, context=None):
        t = t.view(-1, 1, 1, 1, 1)
        a, v = 1 - t, self.eps * t * (1 - t)
        k = a * self.var / (a * a * self.var + v)
        return self.mean + k * (x_t - cond - a * (self.mean - cond))


def test_generator_gradient_matches_the_gaussian_closed_form() -> None:
    """Generator G(z) = mu + s z, teacher exact for N(m_T, q_T), fake exact for the
    generator's own law N(mu, s^2) (frozen at the current mu, s). With r(q) = v / (a^2 q + v),
    E||D_q(X_t) - x0||^2 = r(q)^2 ((m_q - x0 mean)^2 + s^2) + const per pixel, so

        dL/dmu = -2 lam r(q_T)^2 (m_T - mu),    dL/ds = 2 lam s (r(q_T)^2 - r(s^2)^2):

    the mean moves to the teacher's, the scale grows while s^2 < q_T. Autograd through
    ``generator_loss`` (a Monte Carlo estimate over 2^18 pixels a sample) must agree."""
    eps, m_t, q_t, mu0, s0 = 0.5, 0.6, 0.5, 0.1, 0.4
    t, lam = torch.tensor([0.3, 0.7]), torch.tensor([1.0, 0.5])
    g = torch.Generator().manual_seed(0)
    shape = (2, 1, 1, 512, 512)
    z, xi = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    x1 = 0.3 * torch.randn(shape, generator=g)
    mu = torch.tensor(mu0, requires_grad=True)
    s = torch.tensor(s0, requires_grad=True)
    teacher, fake = GaussianDenoiser(m_t, q_t, eps), GaussianDenoiser(mu0, s0**2, eps)
    per = generator_loss(teacher, fake, Bridge(1, prior="brownian", eps=eps), mu + s * z, x1,
                         t, xi, lam)
    grad_mu, grad_s = torch.autograd.grad(per.mean(), (mu, s))

    a, v = 1 - t.double(), eps * t.double() * (1 - t.double())
    r_t, r_f = v / (a * a * q_t + v), v / (a * a * s0**2 + v)
    lam = lam.double()
    want_mu = float((-2 * lam * r_t**2 * (m_t - mu0)).mean())
    want_s = float((2 * lam * s0 * (r_t**2 - r_f**2)).mean())
    assert want_mu < 0 and want_s < 0  # descent raises mu towards m_T and s towards sqrt(q_T)
    assert float(grad_mu) == pytest.approx(want_mu, rel=0.02), (float(grad_mu), want_mu)
    assert float(grad_s) == pytest.approx(want_s, rel=0.02), (float(grad_s), want_s)


def test_distillation_moves_generator_to_teacher_and_its_loss_goes_down(tmp_path: Path) -> None:
    """A problem with a known answer: the teacher has learnt one clip (a point mass), so
    the teacher's output distribution is that clip. A generator that starts elsewhere (at
    its source, untrained) must move to it, and the generator loss (about
    E||T - F||^2 once the fake model tracks the generator) must come down."""
    data = Clips(1)
    teach = bridge_matching()
    fit(teach, data, tiny_cfg(tmp_path / "teacher", 60))
    teacher = teach.model.eval()
    torch.manual_seed(1)
    generator = create("unet-tiny", **TINY_MODEL)
    generator.add_noise_channels(2)
    objective = InverseDistillation(teacher, copy.deepcopy(teacher), generator, teach.bridge,
                                    teach.task, TimeSampler(), Weighting(), lr=3e-3, fake_lr=1e-2)
    x1 = teach.task(data.clips).source
    z = draw_model_noise(generator, x1, torch.Generator().manual_seed(0))

    def distance() -> float:
        with torch.no_grad():
            out = generator(x1, torch.ones(1), cond=x1, noise=z)
            return float((out - data.clips).pow(2).mean())

    before = distance()
    result = fit(objective, data, tiny_cfg(tmp_path / "student", 120))
    gen = [loss for loss, phase in zip(result.losses, result.phases) if phase == "generator"]
    assert len(gen) == 20 and result.phases[:6] == ["fake"] * 5 + ["generator"]
    assert distance() < 0.85 * before, (before, distance())
    assert np.mean(gen[-3:]) < 0.75 * max(gen), gen


def test_distill_entry_point_saves_a_runnable_generator(tmp_path: Path, make_clip) -> None:
    for i in range(2):
        make_clip(tmp_path / "videos" / f"clip{i}.mp4", n=12, h=16, w=16, seed=i)
    cfg = distill_cfg(tmp_path, f"data.root={tmp_path / 'videos'}", "train.max_steps=6",
                      "train.progress=false", "eval.num_clips=1", "distill.student_steps=2",
                      "distill.alpha=0.9", "distill.beta=0.9",
                      "optim.warmup_steps=0")  # the one generator update moves it
    result = distill(cfg)
    assert result.phases == ["fake"] * 5 + ["generator"] and np.isfinite(result.losses).all()
    meta = json.loads((tmp_path / "student" / "model" / "tcvbm.json").read_text())
    assert (meta["kind"], meta["steps"], meta["num_frames"]) == ("generator", 2, FRAMES)
    bundle = load_bundle(tmp_path / "student")
    assert bundle.model.config.noise_channels == 4
    # The trained generator was exported: its noise inputs start at zero and only a
    # generator update moves them.
    assert bundle.model.first_conv().weight[:, -4:].abs().max() > 0
    x1 = bundle.task(Clips(1).clips).source
    ones = torch.ones(1)

    def predict(seed: int) -> torch.Tensor:
        with torch.no_grad():
            return bundle.model_fn(x1, torch.Generator().manual_seed(seed))(x1, ones)

    assert torch.equal(predict(0), predict(0)) and not torch.allclose(predict(0), predict(1))
    gen = torch.Generator().manual_seed(0)
    times: list[float] = []
    with torch.no_grad():
        out = get_sampler(bundle.sampler)(bundle.model_fn(x1, gen), x1, bundle.bridge,
                                          get_timesteps(bundle.steps), generator=gen,
                                          callback=lambda info: times.append(info["t"]))
    assert times == [1.0, 0.5] and torch.isfinite(out).all()  # its own two steps
    scores = json.loads((tmp_path / "student" / "eval" / "step-6" / "metrics.json").read_text())
    assert scores.keys() >= {"psnr", "ssim"} and all(map(math.isfinite, scores.values()))
    assert (tmp_path / "student" / "eval" / "step-6" / "grid.png").is_file()


class Affine(nn.Module):
    """A stand-in network with a known output, ``gain x_t + shift X_1 + t``, that records the
    inputs of its calls and whether autograd was on."""

    def __init__(self, gain: float, shift: float) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(gain))
        self.shift = shift
        self.config = SimpleNamespace(noise_channels=0)
        self.calls: list[tuple[torch.Tensor, torch.Tensor, bool]] = []

    def forward(self, x_t, t, cond=None, context=None, noise=None):
        self.calls.append((x_t.detach().clone(), t.detach().clone(), torch.is_grad_enabled()))
        return self.gain * x_t + self.shift * cond + t.view(-1, 1, 1, 1, 1)


def affine_distillation(sampler: str = "stochastic", steps: int = 1, alpha: float = 1.0,
                        beta: float = 1.0) -> InverseDistillation:
    """Distillation with :class:`Affine` networks on the Brownian bridge and min-SNR weights."""
    return InverseDistillation(
        Affine(0.7, 0.2), Affine(0.5, 0.3), Affine(0.8, 0.1), Bridge(FRAMES, prior="brownian"),
        get_task("interp", factor=2), TimeSampler(), Weighting("min-snr"), lr=1.0, fake_lr=1.0,
        student_steps=steps, student_sampler=sampler, alpha=alpha, beta=beta)


@pytest.mark.parametrize("steps", [2, 4])
@pytest.mark.parametrize("sampler", ["stochastic", "posterior-mean", "deterministic"])
def test_few_step_student_rollout_follows_the_sampler(sampler: str, steps: int) -> None:
    """Rolled to its deepest grid point, the student sees the times and states the sampler
    of the same name gives the same network (with the same bridge noise), and only its
    last call carries a gradient."""
    objective = affine_distillation(sampler, steps)
    student = objective.generator
    x1 = objective.task(Clips(1).clips).source
    rng = SampleRandom(0, 3, [0], 1)
    rng.randint_shared = lambda high: high - 1  # type: ignore[method-assign]  # t_{K-1}
    bridge_noise = torch.Generator().set_state(rng.generators[0].get_state())
    x0 = objective.generate(student, x1, rng)
    rollout, student.calls = student.calls, []
    with torch.no_grad():
        get_sampler(sampler)(lambda x, t: student(x, t, cond=x1), x1, objective.bridge,
                             get_timesteps(steps), generator=bridge_noise)
    grid = get_timesteps(steps)[:-1].float().tolist()
    assert [c[1].tolist() for c in rollout] == [c[1].tolist() for c in student.calls] == \
        [[t] for t in grid]
    for (x, *_), (ref, *_) in zip(rollout, student.calls):
        torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(rollout[-1][0], x1)  # the states did move
    assert [grad for *_, grad in rollout] == [False] * (steps - 1) + [True]
    assert x0.requires_grad
    last_x, last_t, _ = rollout[-1]
    torch.testing.assert_close(x0.detach(), student(last_x, last_t, cond=x1).detach())


class NoisyAffine(Affine):
    """:class:`Affine` with one noise channel, so that its output shows the noise it got."""

    def __init__(self, gain: float, shift: float) -> None:
        super().__init__(gain, shift)
        self.config = SimpleNamespace(noise_channels=1)

    def forward(self, x_t, t, cond=None, context=None, noise=None):
        return super().forward(x_t, t, cond) + 0.1 * noise


@pytest.mark.parametrize("sampler", ["stochastic", "deterministic"])
def test_student_noise_comes_from_each_samples_own_stream(sampler: str) -> None:
    """The generator's noise and the rollout's step noise of a sample are the same whether
    it is drawn in a batch of two or on its own (as on two processes)."""
    objective = affine_distillation(sampler, 3)
    objective.generator = NoisyAffine(0.8, 0.1)
    x1 = objective.task(Clips(2).clips).source
    depths = set()
    for step in range(6):
        objective.generator.calls = []
        with torch.no_grad():
            both = objective.generate(objective.generator, x1, SampleRandom(0, step, [0, 1], 2))
            apart = [objective.generate(objective.generator, x1[i:i + 1],
                                        SampleRandom(0, step, [i], 2)) for i in range(2)]
        torch.testing.assert_close(both, torch.cat(apart), rtol=0, atol=1e-6)
        assert not torch.allclose(both[0], both[1])
        depths.add(len(objective.generator.calls) // 3)
    assert depths > {1}  # some steps rolled the student out


def test_objectives_check_their_settings_with_the_config_rules() -> None:
    """Built in code, the objectives refuse what a config may not hold, naming its key."""
    with pytest.raises(ValueError, match="loss.t_sampling"):
        TimeSampler("sometimes")
    with pytest.raises(ValueError, match="loss.t_min/t_max"):
        TimeSampler(t_min=0.5, t_max=0.4)
    with pytest.raises(ValueError, match="loss.weighting"):
        Weighting("max-snr")
    with pytest.raises(ValueError, match="distill.student_sampler"):
        affine_distillation("euler")
    with pytest.raises(ValueError, match="distill.beta"):
        affine_distillation(alpha=1.0, beta=0.5)


def test_a_bad_student_sampler_fails_at_config_load() -> None:
    with pytest.raises(ValueError, match=r"config: distill\.student_sampler must be one of"):
        load_config("distill-tiny", ["distill.student_sampler=euler"])


def test_few_step_student_stops_at_every_grid_point_but_zero() -> None:
    objective = affine_distillation("stochastic", 4)
    x1 = objective.task(Clips(1).clips).source
    depths = set()
    for step in range(40):
        objective.generator.calls = []
        with torch.no_grad():
            objective.generate(objective.generator, x1, SampleRandom(0, step, [0], 1))
        depths.add(len(objective.generator.calls))
    assert depths == {1, 2, 3, 4}


@pytest.mark.parametrize("alpha, beta", [(0.9, 0.95), (0.8, 0.6)])
def test_real_data_term_and_scaled_targets_follow_their_formula(alpha: float, beta: float) -> None:
    """The losses of both phases computed by hand, replaying the step's draws in order:

    L_F = alpha lam(t) ||F(X_t) - (beta/alpha) x0_gen||^2
          + (1 - alpha) lam(t*) ||F(X_t*) - (1-beta)/(1-alpha) x0||^2,
    L_G = lam(t) (||T(X_t) - (beta/alpha) x0_gen||^2 - ||F(X_t) - (beta/alpha) x0_gen||^2),

    with X_t* drawn from the real clip x0, Brownian draws (1-t) x0 + t X_1 + sqrt(eps t (1-t)) xi
    and min-SNR weights lam(t) = min((1-t)/t, 5) / 5."""
    objective = affine_distillation(alpha=alpha, beta=beta)
    eps = objective.bridge.eps
    x0 = Clips(2).clips

    def replay(step: int):
        rng = SampleRandom(0, step, [0, 1], 2)
        x1 = torch.cat([objective.task(x0[i:i + 1], generator=g).source
                        for i, g in enumerate(rng.generators)])
        return rng, x1, 0.8 * x1 + 0.1 * x1 + 1.0  # the generator's call at t = 1

    def draw(clean, x1, t, xi):
        t = t.view(-1, 1, 1, 1, 1)
        return (1 - t) * clean + t * x1 + (eps * t * (1 - t)).sqrt() * xi

    def lam(t):
        return ((1 - t) / t).clamp_max(5.0) / 5.0

    def mse(a, b):
        return (a - b).pow(2).flatten(1).mean(1)

    def net(gain, shift, x_t, x1, t):
        return gain * x_t + shift * x1 + t.view(-1, 1, 1, 1, 1)

    out = objective.loss("fake", objective.trainables, x0, SampleRandom(0, 3, [0, 1], 2))
    rng, x1, x0_gen = replay(3)
    t, xi = objective.times(rng), rng.randn_like(x0)
    t_real, xi_real = objective.times(rng), rng.randn_like(x0)
    gen_term = lam(t) * mse(net(0.5, 0.3, draw(x0_gen, x1, t, xi), x1, t), beta / alpha * x0_gen)
    real = lam(t_real) * mse(net(0.5, 0.3, draw(x0, x1, t_real, xi_real), x1, t_real),
                             (1 - beta) / (1 - alpha) * x0)
    want = alpha * gen_term + (1 - alpha) * real
    torch.testing.assert_close(out.extra["real"], real, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.per_sample, want, rtol=1e-5, atol=1e-7)
    assert out.loss.item() == pytest.approx(float(want.mean()), rel=1e-5)

    out = objective.loss("generator", objective.trainables, x0, SampleRandom(0, 4, [0, 1], 2))
    rng, x1, x0_gen = replay(4)
    t = objective.times(rng)
    x_t, target = draw(x0_gen, x1, t, rng.randn_like(x0)), beta / alpha * x0_gen
    want = lam(t) * (mse(net(0.7, 0.2, x_t, x1, t), target)
                     - mse(net(0.5, 0.3, x_t, x1, t), target))
    torch.testing.assert_close(out.per_sample, want, rtol=1e-5, atol=1e-7)


def short_distillation(tmp_path: Path, name: str, steps: int, **train: object):
    """An objective from the saved teacher whose fake model and generator have drifted away
    from it (as after some training, so that every loss is well above zero), and the config
    of a ``steps``-step run alternating their updates, without warm-up."""
    objective = distillation_objective(distill_cfg(tmp_path, "distill.fake_per_generator=1",
                                                   "optim.lr=1e-3"))
    torch.manual_seed(2)
    with torch.no_grad():
        for p in (*objective.fake.out.parameters(), *objective.generator.out.parameters()):
            p.add_(0.2 * torch.randn_like(p))
    cfg = tiny_cfg(tmp_path / name, steps, **train)
    cfg.optim.warmup_steps = 0
    return objective, cfg


def test_gradient_checkpointing_gives_the_same_distillation_steps(tmp_path: Path) -> None:
    """With checkpointing the generator step recomputes the fake model's and the frozen
    teacher's blocks in its backward; losses and weights must be those of a run without."""
    runs = {}
    for on in (False, True):
        objective, cfg = short_distillation(tmp_path, f"ckpt-{on}", 6, gradient_checkpointing=on)
        teacher_calls: list[int] = []
        objective.teacher.mid[0].register_forward_pre_hook(lambda *_: teacher_calls.append(1))
        result = fit(objective, Clips(4), cfg)
        # The run ends with a generator step: it left no gradient on the networks it ran
        # but does not update (one there would be added to the next fake update).
        assert all(p.grad is None for p in (*objective.fake.parameters(),
                                            *objective.teacher.parameters()))
        weights = {f"{n}.{k}": v.clone() for n, m in objective.trainables.items()
                   for k, v in m.state_dict().items()}
        runs[on] = result, len(teacher_calls), weights
    (plain, plain_calls, plain_w), (ckpt, ckpt_calls, ckpt_w) = runs[False], runs[True]
    assert ckpt.phases == plain.phases == ["fake", "generator"] * 3
    np.testing.assert_allclose(ckpt.losses, plain.losses, rtol=1e-6, atol=1e-9)
    assert plain_w.keys() == ckpt_w.keys()
    for key in plain_w:
        torch.testing.assert_close(ckpt_w[key], plain_w[key], rtol=1e-6, atol=1e-7)
    assert (plain_calls, ckpt_calls) == (3, 6)  # the teacher is recomputed in the backward


def test_sharded_distillation_with_checkpointing_matches_unsharded(tmp_path: Path) -> None:
    """FSDP2 on a one-process group runs the hooks of a sharded run: gathering a module's
    weights with the ``requires_grad`` they have at that moment, keeping the root's after a
    forward. With checkpointing on, the steps (and the exported generator) must be those of
    an unsharded run; three steps reach the fake update after the first generator update."""
    import torch.distributed as dist

    from tcvbm.models import load_pretrained

    losses = {}
    for fsdp in (False, True):
        objective, cfg = short_distillation(tmp_path, f"fsdp-{fsdp}", 3, fsdp=fsdp,
                                            gradient_checkpointing=True)
        if fsdp:
            dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0,
                                    world_size=1)
        try:
            losses[fsdp] = fit(objective, Clips(4), cfg).losses
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-6, atol=1e-9)
    sharded = load_pretrained(tmp_path / "fsdp-True" / "model").state_dict()
    for key, value in load_pretrained(tmp_path / "fsdp-False" / "model").state_dict().items():
        torch.testing.assert_close(sharded[key], value, rtol=1e-5, atol=1e-6)


@pytest.fixture
def fresh_accelerate():
    """A function that resets accelerate's per-process state, reset again after the test.

    accelerate keeps one state per process, mixed precision included, and refuses an
    ``Accelerator`` with another precision; a test that switches precision resets it."""
    from accelerate.state import AcceleratorState

    def reset() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)

    yield reset
    reset()


def test_bf16_distillation_steps_are_finite_close_to_fp32_and_train_the_generator(
        tmp_path: Path, fresh_accelerate) -> None:
    """Four steps under bf16 autocast (the networks really compute in bf16) against the same
    steps in fp32: finite losses within 3%, and the generator moved the way fp32 moves it."""
    runs = {}
    for precision in ("no", "bf16"):
        fresh_accelerate()
        objective, cfg = short_distillation(tmp_path, precision, 4, mixed_precision=precision)
        start = {k: v.clone() for k, v in objective.generator.state_dict().items()}
        dtypes: list[torch.dtype] = []
        objective.teacher.out.register_forward_hook(lambda m, args, y: dtypes.append(y.dtype))
        result = fit(objective, Clips(4), cfg)
        moved = torch.cat([(v - start[k]).flatten()
                           for k, v in objective.generator.state_dict().items()])
        runs[precision] = np.array(result.losses), moved, set(dtypes)
    (fp32, fp32_moved, fp32_types), (bf16, bf16_moved, bf16_types) = runs["no"], runs["bf16"]
    assert (fp32_types, bf16_types) == ({torch.float32}, {torch.bfloat16})
    assert np.isfinite(bf16).all()
    np.testing.assert_allclose(bf16, fp32, rtol=0.03)
    assert bf16_moved.abs().max() > 0
    assert float(torch.cosine_similarity(bf16_moved, fp32_moved, dim=0)) > 0.9
