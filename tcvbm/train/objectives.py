"""Training objectives: bridge matching and inverse bridge-matching distillation.

Both are written for the one loop in :mod:`tcvbm.train.loop`. An objective names the
networks it trains (``trainables``), says which one a given step updates (``phase``), and
turns a batch of clean clips into a scalar loss for that phase (``loss``). The loop owns
everything else: optimizers, EMA, precision, checkpoints, and keeping the trainables an
objective names in ``frozen_in(phase)`` :func:`frozen` through the step's forward *and*
backward passes.

Randomness comes from :class:`SampleRandom`: every sample of a step draws its time, noise
and degradation from its own generator, seeded by (run seed, step, slot in the global
batch). A sample's randomness therefore does not depend on how the global batch is split
over processes or micro-batches, and a resumed run repeats the draws of an uninterrupted one.
With map-style data one process and several compute the same losses; a streaming dataset
(every process reads its own videos) fills a step's global batch with other clips when the
process count changes (see :class:`tcvbm.train.streams._ShardStream`).

The math (bridge marginals, posterior steps) lives in :mod:`tcvbm.bridges`; the losses
follow ``docs/training.md`` and the distillation notes it points to.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from tcvbm.bridges import Bridge
from tcvbm.config import check_distillation, check_time_sampling, check_weighting
from tcvbm.runs import draw_model_noise
from tcvbm.samplers import STEPS, get_timesteps
from tcvbm.tasks import Task

__all__ = ["SampleRandom", "TimeSampler", "Weighting", "LossOutput", "BridgeMatching",
           "InverseDistillation", "Distance", "per_sample_mse", "per_sample_log_mse",
           "bridge_state", "bridge_matching_loss", "fake_loss", "generator_loss", "frozen"]

_MIX = 0x9E3779B97F4A7C15  # 64-bit golden-ratio constant: spreads nearby seeds apart


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (a splitmix-style hash; deterministic across processes)."""
    h = 0
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * _MIX & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class SampleRandom:
    """Per-sample random streams for one micro-batch.

    ``slots`` are the samples' positions in the step's global batch (``group`` of them in
    all); ``shared`` is one generator common to the whole step on every process, for choices
    that must be the same for all samples (such as a few-step student's grid point).
    """

    def __init__(self, seed: int, step: int, slots: Sequence[int], group: int,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.slots = list(slots)
        self.group = group
        self.generators = [torch.Generator(self.device).manual_seed(_mix_seed(seed, step, s))
                           for s in self.slots]
        self.shared = torch.Generator(self.device).manual_seed(_mix_seed(seed, step, -1))

    def rand(self) -> Tensor:
        """(B,) uniforms in [0, 1)."""
        return torch.cat([torch.rand(1, generator=g, device=self.device) for g in self.generators])

    def randn(self, *shape: int) -> Tensor:
        """(B, *shape) standard normals, each sample from its own stream."""
        return torch.stack([torch.randn(shape, generator=g, device=self.device)
                            for g in self.generators])

    def randn_like(self, x: Tensor) -> Tensor:
        return self.randn(*x.shape[1:]).to(x.dtype)

    def randint_shared(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.shared, device=self.device))


@dataclass(frozen=True)
class TimeSampler:
    """Draws training times t in [t_min, t_max], and t = 1 exactly with ``t_one_prob``.

    ``uniform``: t ~ U. ``logit-normal``: logit(t) ~ N(mean, std), which spends more steps
    at mid times. ``stratified``: one uniform per slot of the global batch, so a batch
    covers [t_min, t_max] evenly (lower variance of the batch loss). ``t_one_prob``: the
    probability that a sample's time is replaced by 1, where ``X_t`` is the source itself
    and a 1-step sampler calls the model; each sample decides with one more uniform of its
    own stream, drawn only when the probability is not 0.
    """

    scheme: str = "uniform"
    t_min: float = 1e-3
    t_max: float = 0.999
    logit_mean: float = 0.0
    logit_std: float = 1.0
    t_one_prob: float = 0.0

    def __post_init__(self) -> None:
        check_time_sampling(self.scheme, self.t_min, self.t_max, self.t_one_prob)

    def __call__(self, rng: SampleRandom) -> Tensor:
        if self.scheme == "logit-normal":
            u = torch.sigmoid(self.logit_mean + self.logit_std * rng.randn())
        elif self.scheme == "stratified":
            slots = torch.tensor(rng.slots, device=rng.device, dtype=torch.float32)
            u = (slots + rng.rand()) / rng.group
        else:
            u = rng.rand()
        t = self.t_min + (self.t_max - self.t_min) * u
        if self.t_one_prob:
            t = torch.where(rng.rand() < self.t_one_prob, torch.ones_like(t), t)
        return t


@dataclass(frozen=True)
class Weighting:
    """lambda(t), the per-time loss weight (the same in every loss of a run).

    ``none``: 1. ``min-snr``: min(snr, gamma) / gamma with the Brownian-bridge signal to
    noise ratio snr = (1 - t) / t, which down-weights the easy times near t = 0 relative
    to an eps-prediction loss. ``sigmoid``: sigmoid(bias - logit t), a smooth version.
    """

    kind: str = "none"
    snr_gamma: float = 5.0
    sigmoid_bias: float = 0.0

    def __post_init__(self) -> None:
        check_weighting(self.kind)

    def __call__(self, t: Tensor) -> Tensor:
        t = t.float()
        if self.kind == "min-snr":
            return ((1 - t) / t).clamp_max(self.snr_gamma) / self.snr_gamma
        if self.kind == "sigmoid":
            return torch.sigmoid(self.sigmoid_bias - torch.logit(t))
        return torch.ones_like(t)


@dataclass
class LossOutput:
    """A phase's loss: the scalar to back-propagate and per-sample values for the logs."""

    loss: Tensor
    per_sample: Tensor  # (B,) detached, float32
    t: Tensor  # (B,) the times the per-sample losses belong to
    extra: dict[str, Tensor] = field(default_factory=dict)  # (B,) detached extra terms


Distance = Callable[[Tensor, Tensor], Tensor]   # (pred, target) -> (B,) per-sample loss


def per_sample_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per sample, in float32 whatever the autocast precision."""
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def per_sample_log_mse(pred: Tensor, target: Tensor, floor: float = 1e-5) -> Tensor:
    """log(MSE + floor) per sample, what mean PSNR counts (PSNR = const - 10 log10 MSE).

    Under a plain MSE a clip that flow already gets nearly right adds almost nothing to the
    batch loss, so a model learns corrections for the hard clips and leaves a small bias on
    the easy ones, which costs them dB; here every clip's relative error counts alike.
    ``floor`` (an MSE of 1e-5 on [-1, 1] is 56 dB) keeps exact clips from dominating.
    """
    return torch.log(per_sample_mse(pred, target) + floor)


def bridge_state(bridge: Bridge, x0: Tensor, x1: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """X_t drawn from the bridge marginal, and X_1 itself where t = 1.

    At t = 1 the marginal is the noise-free source, the state every sampler starts from
    (:mod:`tcvbm.samplers`); :meth:`Bridge.sample` takes times inside (0, 1) only.
    """
    inside = t < 1
    if bool(inside.all()):
        return bridge.sample(x0, x1, t, noise=noise)
    x_t = x1.to(x0.dtype).clone()
    if bool(inside.any()):
        x_t[inside] = bridge.sample(x0[inside], x1[inside], t[inside], noise=noise[inside])
    return x_t


def bridge_matching_loss(model: nn.Module, bridge: Bridge, x0: Tensor, x1: Tensor, t: Tensor,
                         noise: Tensor, weight: Tensor, target: Tensor | None = None,
                         context: Tensor | None = None,
                         distance: Distance = per_sample_mse) -> Tensor:
    """lambda(t) || f(X_t, t, X_1) - target ||^2 per sample, with X_t from the bridge marginal.

    ``target`` defaults to ``x0``; the real-data distillation term regresses a scaled one.
    ``context`` is what the task prepared with ``x1`` (None for a task without one).
    ``distance`` replaces the squared error (:func:`per_sample_log_mse`).
    """
    x_t = bridge_state(bridge, x0, x1, t, noise)
    pred = model(x_t, t, cond=x1, context=context)
    return weight * distance(pred, x0 if target is None else target)


def fake_loss(fake: nn.Module, bridge: Bridge, x0_gen: Tensor, x1: Tensor, t: Tensor,
              noise: Tensor, weight: Tensor, target_scale: float = 1.0,
              context: Tensor | None = None) -> Tensor:
    """The fake model's bridge-matching loss on the generator's (detached) outputs."""
    x0_gen = x0_gen.detach()
    return bridge_matching_loss(fake, bridge, x0_gen, x1, t, noise, weight,
                                target=target_scale * x0_gen, context=context)


def generator_loss(teacher: nn.Module, fake: nn.Module, bridge: Bridge, x0_gen: Tensor,
                   x1: Tensor, t: Tensor, noise: Tensor, weight: Tensor,
                   target_scale: float = 1.0, context: Tensor | None = None) -> Tensor:
    """lambda(t) (||T(X_t) - x0||^2 - ||F(X_t) - x0||^2) per sample, nothing detached.

    ``teacher`` and ``fake`` are run with autograd on, so the gradient reaches ``x0_gen``
    both through the target and through ``X_t``; their parameters must be :func:`frozen`
    until the backward pass of this loss is done, not only while it is computed. The
    difference is taken in float32.
    """
    x_t = bridge_state(bridge, x0_gen, x1, t, noise)
    target = target_scale * x0_gen.float()
    real = per_sample_mse(teacher(x_t, t, cond=x1, context=context), target)
    fake_term = per_sample_mse(fake(x_t, t, cond=x1, context=context), target)
    return weight * (real - fake_term)


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters without gradients for a while; inputs still carry them (never no_grad).

    The scope must cover the backward pass too: activation checkpointing runs a network's
    blocks again during the backward, and a block recomputed with trainable parameters
    saves other tensors than its forward did. Torch then raises ``CheckpointError``; were
    it allowed, the backward would write gradients into a network the step does not
    update (and DDP or FSDP would reduce them across processes).
    """
    saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _sources(task: Task, x0: Tensor, rng: SampleRandom) -> tuple[Tensor, Tensor | None]:
    """Source clips and their contexts (None for a task without one), each sample degraded
    with its own stream."""
    parts = [task(x0[i:i + 1], generator=g) for i, g in enumerate(rng.generators)]
    contexts = [p.context for p in parts]
    context = None if contexts[0] is None else torch.cat(contexts)
    return torch.cat([p.source for p in parts]), context


class BridgeMatching:
    """Bridge matching: regress X_0 from X_t (and X_1 when the model is conditional)."""

    bundle_kind = "bridge"
    exported_network = "model"

    def __init__(self, model: nn.Module, bridge: Bridge, task: Task, times: TimeSampler,
                 weighting: Weighting, lr: float, sampler: str = "stochastic",
                 steps: int = 4, distance: Distance = per_sample_mse) -> None:
        self.model, self.bridge, self.task = model, bridge, task
        self.times, self.weighting, self.distance = times, weighting, distance
        self.lrs = {"model": lr}
        self.sampler, self.steps = sampler, steps
        self._layouts: dict[int, list[tuple[Task, Bridge, int]]] = {}  # per window length

    @property
    def trainables(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def phase(self, step: int) -> str:
        return "model"

    def to(self, device: torch.device | str) -> "BridgeMatching":
        """Networks that are not trained stay outside accelerate: none here."""
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the model's blocks in the backward pass instead of keeping them."""
        self.model.enable_gradient_checkpointing()

    def frozen_in(self, phase: str) -> tuple[str, ...]:
        """No other network runs in a step."""
        return ()

    def updates(self, phase: str, max_steps: int) -> int:
        """How many optimizer updates ``phase`` gets in a run of ``max_steps`` steps."""
        return max_steps

    def loss(self, phase: str, nets: Mapping[str, nn.Module], x0: Tensor,
             rng: SampleRandom) -> LossOutput:
        task, bridge, x0 = self._layout(x0, rng)
        x1, context = _sources(task, x0, rng)
        t = self.times(rng)
        per = bridge_matching_loss(nets["model"], bridge, x0, x1, t, rng.randn_like(x0),
                                   self.weighting(t), context=context, distance=self.distance)
        return LossOutput(per.mean(), per.detach(), t.detach())

    def _layout(self, x0: Tensor, rng: SampleRandom) -> tuple[Task, Bridge, Tensor]:
        """This step's layout of the window (:meth:`tcvbm.tasks.Task.training_layouts`, one
        for the whole step, drawn from the shared stream when there are several): its task,
        the bridge on its frames' times, and the frames of ``x0`` it uses."""
        n = x0.shape[2]
        if n not in self._layouts:
            self._layouts[n] = [
                (lay.task, self.bridge if lay.num_frames == n and lay.times is None else
                 self.bridge.with_num_frames(lay.num_frames).with_times(lay.times),
                 lay.num_frames) for lay in self.task.training_layouts(n)]
        layouts = self._layouts[n]
        task, bridge, used = layouts[rng.randint_shared(len(layouts)) if len(layouts) > 1 else 0]
        return task, bridge, x0[:, :, :used]


class InverseDistillation:
    """Inverse bridge-matching distillation of a frozen teacher into a 1-to-K step generator.

    Phases alternate ``fake_per_generator`` fake-model updates and one generator update.
    ``alpha, beta < 1`` add the real-data term: the fake model also regresses scaled clean
    clips, and the generator's targets are scaled by ``beta / alpha``. In a generator step
    the fake model runs with autograd through its input: the caller keeps it
    :func:`frozen` until that step's backward is done (the loop does, see :meth:`frozen_in`).
    Teacher, fake model and generator all read the context the task prepared with the
    step's sources, as the teacher was trained to.
    """

    bundle_kind = "generator"
    exported_network = "generator"

    def __init__(self, teacher: nn.Module, fake: nn.Module, generator: nn.Module, bridge: Bridge,
                 task: Task, times: TimeSampler, weighting: Weighting, lr: float, fake_lr: float,
                 student_steps: int = 1, student_sampler: str = "stochastic",
                 fake_per_generator: int = 5, alpha: float = 1.0, beta: float = 1.0) -> None:
        check_distillation(student_sampler, alpha, beta)
        self.teacher = teacher.eval().requires_grad_(False)
        self.fake, self.generator = fake, generator
        self.bridge, self.task, self.times, self.weighting = bridge, task, times, weighting
        self.lrs = {"fake": fake_lr, "generator": lr}
        self.sampler, self.steps = student_sampler, student_steps
        self.ratio, self.alpha, self.beta = fake_per_generator, alpha, beta
        self.grid = get_timesteps(student_steps)

    @property
    def trainables(self) -> dict[str, nn.Module]:
        return {"fake": self.fake, "generator": self.generator}

    def phase(self, step: int) -> str:
        return "generator" if step % (self.ratio + 1) == self.ratio else "fake"

    def to(self, device: torch.device | str) -> "InverseDistillation":
        """The frozen teacher is not handed to accelerate: move it here."""
        self.teacher.to(device)
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the fake model, the generator *and* the frozen teacher.

        In the generator step the teacher runs on ``X_t``, which depends on the generator's
        output, so autograd keeps the teacher's activations for the gradient with respect
        to its input just as it keeps the fake model's: frozen parameters save only the
        tensors needed for weight gradients. Checkpointing it saves that memory for the
        price of one more teacher forward per generator step. A call whose input needs no
        gradient (the student rollout, the generator in a fake step) keeps no activations,
        and the models skip checkpointing under ``torch.no_grad``.
        """
        for network in (self.teacher, self.fake, self.generator):
            network.enable_gradient_checkpointing()

    def frozen_in(self, phase: str) -> tuple[str, ...]:
        """The fake model in a generator step: it runs there with autograd through its input.

        The generator is not frozen in a fake step: it runs under ``torch.no_grad`` there,
        and freezing it would harm sharded training. FSDP2 keeps a root module's gathered
        parameters after a forward with the ``requires_grad`` they had when gathered; with
        no backward to release them, the next generator step would get no gradient for the
        generator's root parameters.
        """
        return ("fake",) if phase == "generator" else ()

    def updates(self, phase: str, max_steps: int) -> int:
        gen = max_steps // (self.ratio + 1)
        return gen if phase == "generator" else max_steps - gen

    def generate(self, generator: nn.Module, x1: Tensor, rng: SampleRandom,
                 context: Tensor | None = None) -> Tensor:
        """The student's x0 for this step, differentiable through its last call only.

        A K-step student is rolled from t = 1 down to a grid point chosen at random (the
        same for the whole step) without gradient; the last call is made with autograd as
        the caller has it. With K = 1 this is ``G(X_1, z)`` at t = 1; every call reads the
        task's ``context`` of ``x1``. The rollout takes the steps of the sampler it is named
        after (:data:`tcvbm.samplers.STEPS`) and draws, in the sampler's order, its noise
        ``z`` and any step noise from each sample's stream.
        """
        stop = rng.randint_shared(len(self.grid) - 1)
        step = STEPS[self.sampler]
        times = self.grid.tolist()
        x = x1
        for j in range(stop + 1):
            t_vec = torch.full((x1.shape[0],), times[j], device=x1.device)
            z = draw_model_noise(self.generator, x, rng)  # ``generator`` may be a DDP wrapper
            if j == stop:
                return generator(x, t_vec, cond=x1, context=context, noise=z)
            with torch.no_grad():
                x0_hat = generator(x, t_vec, cond=x1, context=context, noise=z)
                noise = rng.randn(*x0_hat.shape[1:]) if step.noisy(times[j]) else None
                x = step(self.bridge, x0_hat, x, x1, times[j], times[j + 1], noise)
        raise AssertionError("unreachable")

    def loss(self, phase: str, nets: Mapping[str, nn.Module], x0: Tensor,
             rng: SampleRandom) -> LossOutput:
        x1, context = _sources(self.task, x0, rng)
        scale = self.beta / self.alpha
        if phase == "fake":
            with torch.no_grad():
                x0_gen = self.generate(nets["generator"], x1, rng, context)
            t = self.times(rng)
            w = self.weighting(t)
            per = self.alpha * fake_loss(nets["fake"], self.bridge, x0_gen, x1, t,
                                         rng.randn_like(x0), w, scale, context)
            extra = {}
            if self.alpha < 1:
                t_real = self.times(rng)
                real = bridge_matching_loss(
                    nets["fake"], self.bridge, x0, x1, t_real, rng.randn_like(x0),
                    self.weighting(t_real), target=(1 - self.beta) / (1 - self.alpha) * x0,
                    context=context)
                per = per + (1 - self.alpha) * real
                extra["real"] = real.detach()
            return LossOutput(per.mean(), per.detach(), t.detach(), extra)
        x0_gen = self.generate(nets["generator"], x1, rng, context)
        t = self.times(rng)
        per = generator_loss(self.teacher, nets["fake"], self.bridge, x0_gen, x1, t,
                             rng.randn_like(x0), self.weighting(t), scale, context)
        return LossOutput(per.mean(), per.detach(), t.detach())
