"""Samplers: pure functions from a source clip ``x1`` to a clean clip ``x0``.

Every sampler has one signature, ``sampler(model_fn, x1, bridge, timesteps, generator=None,
callback=None) -> x0``: ``model_fn(x_t, t)`` returns an x0 prediction for a (B,) time
tensor, ``timesteps`` decreases from 1 to 0. Sampling starts at ``t = 1`` where the bridge
marginal is exactly ``x1`` and walks the grid with a bridge step; the last step (``s = 0``)
returns the model's prediction, so every sampler returns ``x0`` for an oracle model at any
number of steps, and a 1-step sampler returns the model's mean. The math of each step lives
in :mod:`tcvbm.bridges`.

Because ``X_1`` carries no noise, a sampler draws a sample only if it injects noise itself:
``stochastic`` does at every step, ``deterministic`` once at its first step and
``posterior-mean`` never (it returns a mean estimate, whatever the seed). Each sampler's
step rule is one entry of :data:`STEPS`, which a distilled few-step student's rollout in
training uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from tcvbm.bridges import Bridge

__all__ = ["SAMPLERS", "STEPS", "Step", "get_sampler", "get_timesteps", "sample_stochastic",
           "sample_deterministic", "sample_posterior_mean"]

ModelFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[dict[str, Any]], None]
SCHEDULES = {"uniform": 1.0, "quadratic": 2.0, "cubic": 3.0}


class Sampler(Protocol):
    def __call__(self, model_fn: ModelFn, x1: Tensor, bridge: Bridge, timesteps: Tensor,
                 generator: torch.Generator | None = None,
                 callback: Callback | None = None) -> Tensor: ...


def get_timesteps(num_steps: int, schedule: str = "uniform",
                  device: torch.device | str | None = None) -> Tensor:
    """A grid ``1 = t_0 > t_1 > ... > t_K = 0`` of ``num_steps + 1`` float64 times.

    ``uniform`` spaces the times evenly; ``quadratic`` and ``cubic`` use
    ``t_i = (1 - i/K)^p``, denser near ``t = 0`` where the fine detail is decided.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= 1000:
        raise ValueError(f"num_steps: expected an integer in [1, 1000], got {num_steps!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {sorted(SCHEDULES)}, got {schedule!r}")
    u = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64, device=device)
    return u ** SCHEDULES[schedule]


def _check_timesteps(timesteps: Tensor) -> Tensor:
    timesteps = torch.as_tensor(timesteps, dtype=torch.float64)
    if (timesteps.dim() != 1 or timesteps.numel() < 2 or float(timesteps[0]) != 1.0
            or float(timesteps[-1]) != 0.0 or bool((timesteps[1:] >= timesteps[:-1]).any())):
        raise ValueError("timesteps: expected a 1-D grid decreasing strictly from 1.0 to 0.0, "
                         f"got {timesteps.tolist()}")
    return timesteps


class StepFn(Protocol):
    def __call__(self, bridge: Bridge, x0_hat: Tensor, x_t: Tensor, x1: Tensor, t: float,
                 s: float, noise: Tensor | None) -> Tensor: ...


@dataclass(frozen=True)
class Step:
    """How a sampler moves ``x_t`` at time ``t`` to ``x_s`` given the model's ``x0_hat``.

    A step never draws: ``noisy(t)`` says whether the move from ``t`` takes a standard
    normal ``noise`` tensor shaped like ``x0_hat`` (otherwise it takes None), and the caller
    draws it from its own randomness: a sampler from its ``generator``, a distilled student's
    rollout (:mod:`tcvbm.train.objectives`) from its per-sample streams. Both walk the grid
    with these very steps, so a student moves exactly as the sampler of its name.
    """

    noisy: Callable[[float], bool]
    move: StepFn

    def __call__(self, bridge: Bridge, x0_hat: Tensor, x_t: Tensor, x1: Tensor, t: float,
                 s: float, noise: Tensor | None) -> Tensor:
        if (noise is not None) != self.noisy(t):
            want = "a standard normal tensor" if self.noisy(t) else "None"
            raise ValueError(f"noise: the step from t = {t} takes {want} as its noise")
        return self.move(bridge, x0_hat, x_t, x1, t, s, noise)


def _posterior_move(bridge: Bridge, x0_hat: Tensor, x_t: Tensor, x1: Tensor, t: float, s: float,
                    noise: Tensor | None) -> Tensor:
    """``X_s ~ q(X_s | X_0 = x0_hat, X_t)`` with the given noise; its mean for None."""
    return bridge.posterior_step(x0_hat, x_t, x1, t, s, noise=False if noise is None else noise)


def _from_source(t: float) -> bool:
    """Whether a step starts at ``t = 1``, where the state is the noise-free source ``X_1``."""
    return t == 1.0


def _deterministic_move(bridge: Bridge, x0_hat: Tensor, x_t: Tensor, x1: Tensor, t: float,
                        s: float, noise: Tensor | None) -> Tensor:
    """The noisy boot from ``t = 1`` (``X_1`` implies no noise to keep), then DBIM steps."""
    if _from_source(t):
        return _posterior_move(bridge, x0_hat, x_t, x1, t, s, noise)
    return bridge.deterministic_step(x0_hat, x_t, x1, t, s)


STEPS: dict[str, Step] = {
    "stochastic": Step(noisy=lambda t: True, move=_posterior_move),
    "deterministic": Step(noisy=_from_source, move=_deterministic_move),
    "posterior-mean": Step(noisy=lambda t: False, move=_posterior_move),
}


def _standard_normal(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Noise shaped like ``like`` in the precision the bridge mixes it in (at least float32)."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=dtype)


def _walk(step: Step, model_fn: ModelFn, x1: Tensor, bridge: Bridge, timesteps: Tensor,
          generator: torch.Generator | None, callback: Callback | None) -> Tensor:
    """Shared loop: predict x0 at each grid time, then ``step`` to the next time.

    A step's noise is drawn from ``generator`` after the model call, so a model that draws
    from the same generator (a distilled student's own noise) keeps its place in the stream.
    """
    timesteps = _check_timesteps(timesteps).tolist()
    batch = x1.shape[0]
    x = x1
    for i, (t, s) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        t_vec = torch.full((batch,), t, device=x1.device, dtype=torch.float32)
        x0_hat = model_fn(x, t_vec)
        noise = _standard_normal(x0_hat, generator) if step.noisy(t) else None
        x = step(bridge, x0_hat, x, x1, t, s, noise)
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": x, "x0_hat": x0_hat})
    return x


def sample_stochastic(model_fn: ModelFn, x1: Tensor, bridge: Bridge, timesteps: Tensor,
                      generator: torch.Generator | None = None,
                      callback: Callback | None = None) -> Tensor:
    """Ancestral posterior sampling (I2SB-like): ``X_s ~ q(X_s | X_0 = x0_hat, X_t)``."""
    return _walk(STEPS["stochastic"], model_fn, x1, bridge, timesteps, generator, callback)


def sample_posterior_mean(model_fn: ModelFn, x1: Tensor, bridge: Bridge, timesteps: Tensor,
                          generator: torch.Generator | None = None,
                          callback: Callback | None = None) -> Tensor:
    """The posterior step without its noise: an estimate of ``E[X_0 | X_1]``, not a sample.

    Started from the noise-free ``X_1`` it never injects noise, so its output is the same for
    every seed and every state it feeds the model is a bridge mean, an input without the noise
    the model saw in training. The mean is what a pixel-distance metric (PSNR) rewards, so this
    sampler suits interpolation and super-resolution scored that way; it is no sampler for
    tasks that must invent content (image-to-video).
    """
    return _walk(STEPS["posterior-mean"], model_fn, x1, bridge, timesteps, generator, callback)


def sample_deterministic(model_fn: ModelFn, x1: Tensor, bridge: Bridge, timesteps: Tensor,
                         generator: torch.Generator | None = None,
                         callback: Callback | None = None) -> Tensor:
    """DBIM-style (eta = 0): one seeded "booting" noise, then a marginal-preserving path.

    ``X_1`` implies no noise to keep, so the first step from ``t = 1`` is a posterior step
    with noise drawn from ``generator`` (torch's global one when None); from ``t = 1`` that is
    a draw of the bridge marginal at ``s`` given the prediction. Every later step keeps the
    noise implied by ``X_t`` and rescales it to ``s`` (:meth:`Bridge.deterministic_step`).
    All randomness is that one draw: different seeds give different samples, the same seed
    the same one.
    """
    return _walk(STEPS["deterministic"], model_fn, x1, bridge, timesteps, generator, callback)


SAMPLERS: dict[str, Sampler] = {
    "stochastic": sample_stochastic,
    "deterministic": sample_deterministic,
    "posterior-mean": sample_posterior_mean,
}


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]
