"""Samplers share one signature, recover x0 with an oracle model at any step count, and
draw from the right law: checked on a Gaussian toy whose posterior is known in closed form."""

from __future__ import annotations

import pytest
import torch

from tcvbm.bridges import Bridge
from tcvbm.samplers import SAMPLERS, STEPS, get_sampler, get_timesteps


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 50])
@pytest.mark.parametrize("prior", ["ar1", "brownian"])
def test_oracle_model_recovers_x0(name: str, steps: int, prior: str) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 5, 8, 8, generator=g) * 2 - 1
    x1 = torch.rand(2, 3, 5, 8, 8, generator=g) * 2 - 1
    calls = []

    def oracle(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        assert t.shape == (2,) and xt.shape == x0.shape
        return x0

    out = get_sampler(name)(oracle, x1, Bridge(5, prior=prior), get_timesteps(steps), generator=g)
    assert len(calls) == steps and torch.all(calls[0] == 1.0)
    assert torch.allclose(out, x0, atol=1e-5)


def test_first_call_sees_the_source_and_callback_gets_the_trajectory() -> None:
    x0, x1 = torch.randn(2, 1, 2, 3, 4, 4)
    seen, traj = [], []
    oracle = lambda xt, t: seen.append(xt.clone()) or x0  # noqa: E731
    SAMPLERS["stochastic"](oracle, x1, Bridge(3), get_timesteps(4, "quadratic"),
                           callback=lambda info: traj.append(info))
    assert torch.equal(seen[0], x1)
    assert [round(i["t"], 6) for i in traj] == [1.0, 0.5625, 0.25, 0.0625]
    assert traj[-1]["s"] == 0.0 and torch.allclose(traj[-1]["x"], x0, atol=1e-6)


@pytest.mark.parametrize("name", ["stochastic", "deterministic"])
def test_sampling_samplers_are_seeded_and_noisy_in_between(name: str) -> None:
    x1 = torch.randn(2, 1, 4, 4, 4)
    bridge = Bridge(4)
    # A model that is only right at the end shows the intermediate noise in the output.
    model = lambda xt, t: xt  # noqa: E731
    run = lambda seed: SAMPLERS[name](  # noqa: E731
        model, x1, bridge, get_timesteps(5), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_posterior_mean_ignores_the_seed() -> None:
    x1 = torch.randn(2, 1, 4, 4, 4)
    model = lambda xt, t: 0.5 * xt  # noqa: E731
    run = lambda seed: SAMPLERS["posterior-mean"](  # noqa: E731
        model, x1, Bridge(4), get_timesteps(5), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(2))


def _reference_walk(name: str, model, x1: torch.Tensor, bridge: Bridge, timesteps: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """Each sampler written out with the bridge's own draws (``generator=``), step by step."""
    x = x1
    grid = timesteps.tolist()
    for t, s in zip(grid[:-1], grid[1:]):
        x0_hat = model(x, torch.full((x1.shape[0],), t))
        if name == "stochastic" or (name == "deterministic" and t == 1.0):
            x = bridge.posterior_step(x0_hat, x, x1, t, s, generator=generator)
        elif name == "deterministic":
            x = bridge.deterministic_step(x0_hat, x, x1, t, s)
        else:
            x = bridge.posterior_step(x0_hat, x, x1, t, s, noise=False)
    return x


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("seed", [0, 3])
def test_samplers_draw_as_the_bridge_steps_do_after_the_model(name: str, seed: int) -> None:
    """Bit for bit the samples of the bridge's own noisy steps, for a model that draws from
    the same generator (as a distilled student does): step noise comes after each call."""
    x1 = torch.rand(2, 3, 4, 6, 6, generator=torch.Generator().manual_seed(9)) * 2 - 1
    bridge = Bridge(4)

    def run(sample) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        model = lambda xt, t: 0.5 * xt + 0.1 * torch.randn(xt.shape, generator=g)  # noqa: E731
        return sample(model, x1, bridge, get_timesteps(4, "quadratic"), g)

    want = run(lambda *args: _reference_walk(name, *args))
    assert torch.equal(run(lambda m, x, b, ts, g: SAMPLERS[name](m, x, b, ts, generator=g)), want)


def test_a_step_takes_noise_exactly_when_it_needs_it() -> None:
    """A step never draws: it is handed its noise, and refuses noise it would not use."""
    bridge = Bridge(3)
    g = torch.Generator().manual_seed(0)
    x0_hat, x_t, x1, noise = torch.randn(4, 1, 1, 3, 2, 2, generator=g)
    with pytest.raises(ValueError, match="^noise"):
        STEPS["stochastic"](bridge, x0_hat, x_t, x1, 0.5, 0.25, None)
    with pytest.raises(ValueError, match="^noise"):
        STEPS["posterior-mean"](bridge, x0_hat, x_t, x1, 0.5, 0.25, noise)
    with pytest.raises(ValueError, match="^noise"):
        STEPS["deterministic"](bridge, x0_hat, x1, x1, 1.0, 0.5, None)  # the boot is noisy
    with pytest.raises(ValueError, match="^noise"):
        STEPS["deterministic"](bridge, x0_hat, x_t, x1, 0.5, 0.25, noise)
    assert torch.equal(STEPS["stochastic"](bridge, x0_hat, x_t, x1, 0.5, 0.25, noise),
                       bridge.posterior_step(x0_hat, x_t, x1, 0.5, 0.25, noise=noise))
    assert torch.equal(STEPS["deterministic"](bridge, x0_hat, x1, x1, 1.0, 0.5, noise),
                       bridge.posterior_step(x0_hat, x1, x1, 1.0, 0.5, noise=noise))


def test_timesteps() -> None:
    assert torch.allclose(get_timesteps(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0],
                                                         dtype=torch.float64))
    quad = get_timesteps(10, "quadratic")
    assert quad[0] == 1 and quad[-1] == 0 and (quad[:-1] - quad[1:] > 0).all()
    # denser near 0: the last gap is smaller than the first
    assert quad[-2] - quad[-1] < quad[0] - quad[1]
    assert get_timesteps(1000).numel() == 1001
    for bad in [0, 1001, 2.5]:
        with pytest.raises(ValueError, match="^num_steps"):
            get_timesteps(bad)
    with pytest.raises(ValueError, match="^schedule"):
        get_timesteps(3, "cosine")
    with pytest.raises(ValueError, match="^sampler"):
        get_sampler("euler")
    x = torch.zeros(1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="^timesteps"):
        SAMPLERS["stochastic"](lambda xt, t: xt, x, Bridge(2), torch.tensor([1.0, 0.5]))


# ---------------------------------------------------------------- a Gaussian toy, solved exactly
# Every pixel column of the clip is one sample: x0 ~ N(m, C0) on the frame axis (correlated
# frames), x1 a fixed source independent of x0, so the law a sampler must produce at t = 0 is
# N(m, C0) itself. The bridge marginal given x0 is N(x1 + W_t (x0 - x1), S_t) for the source
# centre and N(W_t x0 + ..., S_t) for the zero centre; either way X_t | x1 is Gaussian and the
# exact denoiser E[x0 | X_t, x1] is Gaussian conditioning on it.
FRAMES, SIDE = 4, 128  # 128 x 128 = 16384 samples per run
TOY_PRIORS = ["ar1", "brownian"]


def _start_weight(bridge: Bridge, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_t, S_t): the frame matrix multiplying x0 in the marginal mean and the marginal
    covariance, read off ``bridge.marginal`` on the unit clips (x1 = 0 removes the x1 term)."""
    eye = torch.eye(FRAMES, dtype=torch.float64).view(FRAMES, 1, FRAMES, 1, 1)
    mean, cov = bridge.marginal(eye, torch.zeros_like(eye), t)
    return mean[:, 0, :, 0, 0].T, cov[0]


def _column_clip(v: torch.Tensor) -> torch.Tensor:
    """A (1, 1, N, SIDE, SIDE) clip with the frame vector ``v`` at every pixel."""
    return v.view(1, 1, FRAMES, 1, 1).expand(1, 1, FRAMES, SIDE, SIDE).clone()


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical frame mean (N,) and covariance (N, N) over the pixels of a (1, 1, N, H, W) clip."""
    cols = x[0, 0].reshape(FRAMES, -1)
    return cols.mean(1), torch.cov(cols)


class GaussianToy:
    """The toy for one prior: its bridge, the x0 law N(m, C0), the source and the denoiser."""

    def __init__(self, prior: str) -> None:
        self.bridge = Bridge(FRAMES, prior=prior)
        lag = torch.arange(FRAMES)
        self.mean = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
        self.cov = 0.25 * 0.6 ** (lag[:, None] - lag[None, :]).abs().double()
        self.x1 = _column_clip(torch.tensor([-0.5, 0.2, 0.6, -0.1], dtype=torch.float64))
        self.mean_clip = _column_clip(self.mean)

    def denoiser(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[x0 | X_t, x1] = m + C0 W^T (W C0 W^T + S)^{-1} (X_t - E[X_t | x1])."""
        time = float(t[0])
        if time >= 1.0:  # X_1 = x1 says nothing about x0
            return self.mean_clip.clone()
        w, s = _start_weight(self.bridge, time)
        gain = self.cov @ w.T @ torch.linalg.inv(w @ self.cov @ w.T + s)
        expected, _ = self.bridge.marginal(self.mean_clip, self.x1, time)
        return self.mean_clip + torch.einsum("nm,bcmhw->bcnhw", gain, xt - expected)

    def errors(self, name: str, steps: int) -> tuple[float, float, float]:
        """(largest mean error, spread ratio sqrt(tr C / tr C0), relative covariance error)."""
        out = SAMPLERS[name](self.denoiser, self.x1, self.bridge, get_timesteps(steps),
                             generator=torch.Generator().manual_seed(0))
        mean, cov = _moments(out)
        spread = float((cov.trace() / self.cov.trace()).sqrt())
        shape = float((cov - self.cov).norm() / self.cov.norm())
        return float((mean - self.mean).abs().max()), spread, shape


@pytest.mark.parametrize("prior", TOY_PRIORS)
@pytest.mark.parametrize("name", ["stochastic", "deterministic"])
def test_samples_approach_the_posterior_as_steps_grow(name: str, prior: str) -> None:
    toy = GaussianToy(prior)
    assert toy.errors(name, 1)[1] < 1e-9  # one step returns the model's mean
    runs = [toy.errors(name, steps) for steps in (10, 50, 200)]
    spread_gap = [abs(1.0 - spread) for _, spread, _ in runs]
    shape_gap = [shape for _, _, shape in runs]
    assert spread_gap[0] > spread_gap[1] > spread_gap[2], runs
    assert shape_gap[0] > shape_gap[1] > shape_gap[2], runs
    assert spread_gap[2] < 0.04 and shape_gap[2] < 0.07, runs
    # the standard error of each mean is 0.5 / 128 ~ 0.004
    assert all(mean_err < 0.02 for mean_err, _, _ in runs), runs


@pytest.mark.parametrize("prior", TOY_PRIORS)
def test_posterior_mean_returns_the_mean(prior: str) -> None:
    toy = GaussianToy(prior)
    for steps in (1, 10, 200):
        out = SAMPLERS["posterior-mean"](toy.denoiser, toy.x1, toy.bridge, get_timesteps(steps),
                                         generator=torch.Generator().manual_seed(steps))
        assert torch.allclose(out, toy.mean_clip, atol=1e-9)  # spread 0 by design


@pytest.mark.parametrize("prior", TOY_PRIORS)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_intermediate_state_follows_the_bridge_marginal(name: str, prior: str) -> None:
    """With the true x0 as the model each state X_s must have the bridge marginal
    q(X_s | x0, x1) exactly, at any step count: the sampling samplers in law (Monte Carlo
    over the pixels), posterior-mean as its mean with no spread. The final output alone
    cannot show a wrong step before the last, since the last step returns the prediction."""
    toy = GaussianToy(prior)
    x0 = _column_clip(torch.tensor([0.8, -0.4, 0.0, 0.5], dtype=torch.float64))
    states = []
    SAMPLERS[name](lambda xt, t: x0, toy.x1, toy.bridge, get_timesteps(6, "quadratic"),
                   generator=torch.Generator().manual_seed(1),
                   callback=lambda info: states.append((info["s"], info["x"])))
    assert len(states) == 6
    for s, x in states[:-1]:
        mean, cov = toy.bridge.marginal(x0[:, :, :, :1, :1], toy.x1[:, :, :, :1, :1], s)
        emp_mean, emp_cov = _moments(x)
        if name == "posterior-mean":
            cov = torch.zeros_like(cov[0])
            assert torch.allclose(x, mean.expand_as(x), atol=1e-9)
        else:
            scale = float(cov[0].diagonal().max())
            cov = cov[0]
            # standard errors: sqrt(scale / 16384) for the mean, ~scale / 90 for the covariance
            assert (emp_mean - mean.flatten()).abs().max() < 0.04 * scale ** 0.5, (s, emp_mean)
        assert (emp_cov - cov).abs().max() < 0.05 * float(cov.diagonal().max()) + 1e-12, (s,)
