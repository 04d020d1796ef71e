"""Bridge math against independent references: SDE simulation, closed forms, limits."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tcvbm.bridges import Bridge, prior_matrix

PRIORS = ["ar1", "laplacian", "brownian"]
CENTERS = ["source", "zero"]
# Frames at non-uniform times (gaps 0.25 to 2): the exactness checks run on them as well.
IRREGULAR = [0.0, 0.3, 1.0, 1.25, 2.0]
VFR = [0.0, 0.5, 0.75, 2.0, 2.3, 3.5, 4.0, 6.0]
# (num_frames, times): uniform clips of every size, and the irregular ones.
FRAMES = [(1, None), (2, None), (8, None), (16, None), (5, IRREGULAR), (8, VFR)]


def euler_maruyama_conditioned(bridge: Bridge, x0: torch.Tensor, x1: torch.Tensor,
                               times: list[float], steps: int):
    """The law of the Euler-Maruyama scheme of the prior SDE started at x0, conditioned on
    X_1 = x1 by Gaussian conditioning. The scheme is linear-Gaussian, so its law is carried
    exactly by propagating mean and covariance through the steps: no sampling noise, only the
    O(dt) error of the discretisation. x0, x1: (N,) float64."""
    a = bridge.A
    n = x0.numel()
    b = -a @ x1 if bridge.center == "source" else torch.zeros_like(x1)
    dt = 1.0 / steps
    step = torch.eye(n, dtype=torch.float64) + a * dt
    mean, cov = x0.clone(), torch.zeros(n, n, dtype=torch.float64)
    marks = {round(t * steps): t for t in times}
    held = {}  # time -> (mean_t, cov_t, cross-covariance of X_t with the current state)
    for k in range(1, steps + 1):
        mean = step @ mean + b * dt
        cov = step @ cov @ step.T + bridge.eps * dt * torch.eye(n, dtype=torch.float64)
        held = {t: (m, c, cross @ step.T) for t, (m, c, cross) in held.items()}
        if k in marks:
            held[marks[k]] = (mean.clone(), cov.clone(), cov.clone())
    out = []
    for t in times:
        m_t, c_t, cross = held[t]
        gain = cross @ torch.linalg.inv(cov)
        out.append((m_t + gain @ (x1 - mean), c_t - gain @ cross.T))
    return out


def simulate_paths(bridge: Bridge, x0: torch.Tensor, paths: int, steps: int, t: float, seed: int):
    """Sampled Euler-Maruyama paths of the prior from x0: (X_t, X_1) pairs, (paths, N) each."""
    g = torch.Generator().manual_seed(seed)
    dt = 1.0 / steps
    x = x0.expand(paths, -1).clone()
    kept = None
    for k in range(1, steps + 1):
        x = x + (x @ bridge.A.T) * dt + (bridge.eps * dt) ** 0.5 * torch.randn(
            x.shape, generator=g, dtype=torch.float64)
        if k == round(t * steps):
            kept = x.clone()
    return kept, x


@pytest.mark.parametrize("prior,center,frames", list(itertools.product(PRIORS, CENTERS, FRAMES)))
def test_marginal_matches_conditioned_sde(prior: str, center: str,
                                          frames: tuple[int, list[float] | None]) -> None:
    n, frame_times = frames
    bridge = Bridge(n, prior=prior, center=center, eps=0.5, times=frame_times)
    g = torch.Generator().manual_seed(n)
    x0 = torch.randn(n, generator=g, dtype=torch.float64)
    x1 = torch.randn(n, generator=g, dtype=torch.float64)
    times = [0.3, 0.7]
    sims = euler_maruyama_conditioned(bridge, x0, x1, times, steps=4000)
    clip0 = x0.view(1, 1, n, 1, 1).expand(2, 1, n, 1, 1)
    clip1 = x1.view(1, 1, n, 1, 1).expand(2, 1, n, 1, 1)
    mean, cov = bridge.marginal(clip0, clip1, torch.tensor(times, dtype=torch.float64))
    for i, (sim_mean, sim_cov) in enumerate(sims):
        scale = cov[i].diagonal().max().item()
        assert (mean[i].flatten() - sim_mean).abs().max() < 0.02
        assert (cov[i] - sim_cov).abs().max() < 0.02 * scale


@pytest.mark.parametrize("prior,frame_times", list(itertools.product(PRIORS, [None, IRREGULAR])))
def test_marginal_matches_sampled_sde_paths(prior: str, frame_times: list[float] | None) -> None:
    """Monte Carlo over sampled paths (zero centre): conditioning the empirical joint law of
    (X_t, X_1) gives the closed-form marginal. x1 is the prior's mean at t = 1 (exp(A) x0),
    where the regression on the sampled X_1 is best determined. The scheme is accurate while
    |lam| dt is small, so stiff priors (close frames) get more steps."""
    n = 4 if frame_times is None else len(frame_times)
    bridge = Bridge(n, prior=prior, center="zero", eps=0.5, times=frame_times)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(n, generator=g, dtype=torch.float64)
    x1 = torch.linalg.matrix_exp(bridge.A) @ x0
    steps = max(400, 6 * math.ceil(torch.linalg.eigvalsh(bridge.A).abs().max().item()))
    xt, end = simulate_paths(bridge, x0, paths=20000, steps=steps, t=0.5, seed=4)
    joint = torch.cat([xt, end], dim=1)
    mu, c = joint.mean(0), torch.cov(joint.T)
    gain = c[:n, n:] @ torch.linalg.inv(c[n:, n:])
    sim_mean, sim_cov = mu[:n] + gain @ (x1 - mu[n:]), c[:n, :n] - gain @ c[:n, n:].T
    mean, cov = bridge.marginal(x0.view(1, 1, n, 1, 1), x1.view(1, 1, n, 1, 1), 0.5)
    scale = cov[0].diagonal().max().item()
    assert (mean.flatten() - sim_mean).abs().max() < 0.05 * scale ** 0.5
    assert (cov[0] - sim_cov).abs().max() < 0.1 * scale


def _brownian_reference(x0, x1, t, eps):
    tt = t.view(-1, 1, 1, 1, 1)
    return (1 - tt) * x0 + tt * x1, eps * t * (1 - t)


@pytest.mark.parametrize("center", CENTERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_brownian_is_the_linear_bridge(center: str, dtype: torch.dtype) -> None:
    bridge = Bridge(8, prior="brownian", center=center, eps=0.3)
    x0, x1 = torch.randn(2, 4, 3, 8, 5, 6, dtype=dtype)
    t = torch.tensor([0.1, 0.4, 0.6, 0.95], dtype=dtype)
    mean, cov = bridge.marginal(x0, x1, t)
    ref_mean, ref_var = _brownian_reference(x0, x1, t, 0.3)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    assert torch.allclose(mean, ref_mean, atol=tol)
    assert torch.allclose(cov, torch.diag_embed(ref_var[:, None].expand(-1, 8)), atol=tol)
    noise = torch.randn_like(x0)
    xt = bridge.sample(x0, x1, t, noise=noise)
    assert torch.allclose(xt, ref_mean + ref_var.sqrt().view(-1, 1, 1, 1, 1) * noise, atol=tol * 10)


@pytest.mark.parametrize("prior,frame_times",
                         list(itertools.product(["ar1", "laplacian"], [None, VFR[:6]])))
def test_weak_prior_tends_to_brownian(prior: str, frame_times: list[float] | None) -> None:
    """A -> 0 is the same code path: a vanishing strength converges to the Brownian bridge,
    on any frame times (the Brownian bridge itself does not see them)."""
    x0, x1 = torch.randn(2, 2, 3, 6, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.25, 0.8], dtype=torch.float64)
    ref_mean, ref_cov = Bridge(6, prior="brownian", times=frame_times).marginal(x0, x1, t)
    linear_mean, linear_var = _brownian_reference(x0, x1, t, 0.25)
    assert torch.allclose(ref_mean, linear_mean, atol=1e-14)
    assert torch.allclose(ref_cov, torch.diag_embed(linear_var[:, None].expand(-1, 6)), atol=1e-14)
    for strength, tol in [(1e-3, 1e-3), (1e-7, 1e-7), (0.0, 1e-15)]:
        bridge = Bridge(6, prior=prior, strength=strength, times=frame_times)
        mean, cov = bridge.marginal(x0, x1, t)
        assert (mean - ref_mean).abs().max() < tol
        assert (cov - ref_cov).abs().max() < tol


def test_matches_sinh_closed_form_per_mode() -> None:
    bridge = Bridge(5, prior="ar1", rho=0.7, strength=3.0, center="zero", eps=0.4)
    lam, u = torch.linalg.eigh(bridge.A)
    t = 0.35
    w0 = torch.sinh(lam * (1 - t)) / torch.sinh(lam)
    w1 = torch.sinh(lam * t) / torch.sinh(lam)
    var = 0.4 * torch.sinh(lam * t) * torch.sinh(lam * (1 - t)) / (lam * torch.sinh(lam))
    x0, x1 = torch.randn(2, 1, 1, 5, 1, 1, dtype=torch.float64)
    mean, cov = bridge.marginal(x0, x1, torch.tensor([t], dtype=torch.float64))
    ref = u @ (w0 * (u.T @ x0.flatten()) + w1 * (u.T @ x1.flatten()))
    assert torch.allclose(mean.flatten(), ref, atol=1e-12)
    assert torch.allclose(cov[0], u @ torch.diag(var) @ u.T, atol=1e-12)


def test_source_centre_reverts_to_source() -> None:
    """With b = -A X_1 the mean is X_1 + U diag(w0) U^T (X_0 - X_1)."""
    bridge = Bridge(4, prior="laplacian", strength=2.0)
    x0, x1 = torch.randn(2, 1, 2, 4, 3, 3, dtype=torch.float64)
    mean, _ = bridge.marginal(x0, x1, torch.tensor([0.5], dtype=torch.float64))
    lam, u = torch.linalg.eigh(bridge.A)
    w0 = torch.sinh(lam * 0.5) / torch.sinh(lam)
    mix = u @ torch.diag(w0) @ u.T
    ref = x1 + torch.einsum("nm,bcmhw->bcnhw", mix, x0 - x1)
    assert torch.allclose(mean, ref, atol=1e-12)


def test_prior_matrices() -> None:
    a = prior_matrix(5, "ar1", rho=0.6, strength=2.0)
    c = 0.6 ** (torch.arange(5)[:, None] - torch.arange(5)[None, :]).abs().double()
    assert torch.allclose(a, -torch.linalg.inv(c), atol=1e-12)
    lap = prior_matrix(4, "laplacian", strength=1.0, delta=0.0)
    assert torch.equal(-lap, torch.tensor([[1, -1, 0, 0], [-1, 2, -1, 0], [0, -1, 2, -1],
                                           [0, 0, -1, 1]], dtype=torch.float64))
    for prior in PRIORS:
        for n in [1, 2, 16]:
            m = prior_matrix(n, prior)
            assert m.shape == (n, n) and torch.equal(m, m.T)
            assert torch.linalg.eigvalsh(m).max() <= 1e-12


def test_defaults_and_config_round_trip() -> None:
    for prior in PRIORS:
        for center in CENTERS:
            bridge = Bridge(num_frames=3, prior=prior, center=center)
            assert bridge.A.dtype == torch.float64 and bridge.A.shape == (3, 3)
            assert isinstance(bridge.eps, float) and bridge.center == center
            again = Bridge.from_config(bridge.to_config())
            assert torch.equal(again.A, bridge.A) and again.eps == bridge.eps
    assert Bridge(4).prior == "ar1" and Bridge(4).center == "source"


def test_no_overflow_for_strong_priors_in_low_precision() -> None:
    bridge = Bridge(16, prior="ar1", rho=0.99, strength=500.0)
    assert bridge._abs_lam.max() > 1000  # far beyond where sinh overflows float32
    for dtype in [torch.float32, torch.bfloat16]:
        x0, x1 = torch.randn(2, 2, 3, 16, 8, 8).to(dtype)
        t = torch.tensor([1e-4, 0.5]).to(dtype)
        xt = bridge.sample(x0, x1, t)
        mean, cov = bridge.marginal(x0, x1, t)
        assert xt.dtype == dtype and mean.dtype == dtype
        assert torch.isfinite(xt.float()).all() and torch.isfinite(cov.float()).all()
        xs = bridge.posterior_step(x0, xt, x1, t, t / 2)
        assert torch.isfinite(xs.float()).all()


def test_bf16_agrees_with_float32() -> None:
    bridge = Bridge(8)
    x0, x1 = torch.rand(2, 2, 3, 8, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0.3, 0.8])
    ref = bridge.sample(x0, x1, t, noise=noise)
    low = bridge.sample(x0.bfloat16(), x1.bfloat16(), t, noise=noise.bfloat16())
    assert (low.float() - ref).abs().max() < 0.05


def test_sample_is_differentiable() -> None:
    bridge = Bridge(4, prior="ar1")
    x0 = torch.randn(2, 3, 4, 5, 5, requires_grad=True)
    x1 = torch.randn(2, 3, 4, 5, 5, requires_grad=True)
    bridge.sample(x0, x1, torch.tensor([0.2, 0.9])).square().sum().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
    assert x1.grad is not None and x1.grad.abs().sum() > 0


def test_single_frame_is_a_scalar_ou_bridge() -> None:
    bridge = Bridge(1, prior="ar1", strength=4.0, eps=0.5)
    assert bridge.A.item() == pytest.approx(-2.0)
    lam, t = torch.tensor(-2.0, dtype=torch.float64), 0.4
    x0, x1 = torch.randn(2, 3, 1, 1, 4, 4, dtype=torch.float64)
    mean, cov = bridge.marginal(x0, x1, torch.tensor([t] * 3, dtype=torch.float64))
    w0 = torch.sinh(lam * (1 - t)) / torch.sinh(lam)
    assert torch.allclose(mean, x1 + w0 * (x0 - x1), atol=1e-12)
    var = 0.5 * torch.sinh(lam * t) * torch.sinh(lam * (1 - t)) / (lam * torch.sinh(lam))
    assert torch.allclose(cov, var.expand(3, 1, 1), atol=1e-12)


def test_posterior_endpoints() -> None:
    bridge = Bridge(6)
    x0, xt, x1 = torch.randn(3, 2, 3, 6, 4, 4)
    out = bridge.posterior_step(x0, xt, x1, torch.tensor([0.5, 1.0]), torch.zeros(2))
    assert torch.allclose(out, x0, atol=1e-6)
    # From t = 1 (where X_t = X_1) the posterior is the bridge marginal at s.
    mean = bridge.posterior_step(x0, x1, x1, 1.0, 0.4, noise=False)
    ref, _ = bridge.marginal(x0, x1, 0.4)
    assert torch.allclose(mean, ref, atol=1e-6)


@pytest.mark.parametrize("prior,center,frame_times",
                         list(itertools.product(PRIORS, CENTERS, [None, IRREGULAR])))
def test_composed_posterior_steps_reproduce_marginals(prior: str, center: str,
                                                      frame_times: list[float] | None) -> None:
    """Ancestral steps from t = 1 with the true X_0 must follow the bridge marginals."""
    n, paths = 6 if frame_times is None else len(frame_times), 40000
    bridge = Bridge(n, prior=prior, center=center, eps=0.5, times=frame_times)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 1, n, 1, 1, generator=g, dtype=torch.float64).expand(paths, -1, -1, -1, -1)
    x1 = torch.randn(1, 1, n, 1, 1, generator=g, dtype=torch.float64).expand(paths, -1, -1, -1, -1)
    grid = [1.0, 0.8, 0.55, 0.3, 0.1]
    x = x1
    for t, s in zip(grid[:-1], grid[1:]):
        x = bridge.posterior_step(x0, x, x1, t, s, generator=g)
        mean, cov = bridge.marginal(x0[:1], x1[:1], s)
        emp = x.flatten(1)
        scale = cov[0].diagonal().max()
        assert (emp.mean(0) - mean.flatten()).abs().max() < 0.03 * scale.sqrt() + 1e-3
        assert (torch.cov(emp.T) - cov[0]).abs().max() < 0.05 * scale


@pytest.mark.parametrize("frame_times", [None, IRREGULAR])
def test_deterministic_step_preserves_marginals(frame_times: list[float] | None) -> None:
    """The DDIM-style step maps the marginal law at t onto the marginal law at s."""
    n, paths = 5, 40000
    bridge = Bridge(n, prior="ar1", eps=0.5, times=frame_times)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, 1, n, 1, 1, generator=g, dtype=torch.float64).expand(paths, -1, -1, -1, -1)
    x1 = torch.randn(1, 1, n, 1, 1, generator=g, dtype=torch.float64).expand(paths, -1, -1, -1, -1)
    xt = bridge.sample(x0, x1, 0.7, generator=g)
    xs = bridge.deterministic_step(x0, xt, x1, 0.7, 0.3)
    mean, cov = bridge.marginal(x0[:1], x1[:1], 0.3)
    emp = xs.flatten(1)
    assert (emp.mean(0) - mean.flatten()).abs().max() < 0.01
    assert (torch.cov(emp.T) - cov[0]).abs().max() < 0.05 * cov[0].diagonal().max()


def test_tensors_stay_on_their_device_and_dtype() -> None:
    bridge = Bridge(3)
    x0, x1 = torch.randn(2, 1, 1, 3, 2, 2, dtype=torch.float64)
    xt = bridge.sample(x0, x1, torch.tensor([0.5]))
    assert xt.dtype == torch.float64 and xt.device == x0.device


def test_bad_arguments_name_the_argument() -> None:
    bridge = Bridge(4)
    x = torch.zeros(2, 3, 4, 5, 5)
    cases = [
        (lambda: bridge.marginal(x, x, torch.tensor([0.0, 0.5])), "t"),
        (lambda: bridge.sample(x, x, torch.tensor([0.5, 1.0])), "t"),
        (lambda: bridge.sample(x, x, torch.tensor([0.5, 1.5])), "t"),
        (lambda: bridge.sample(x, x, torch.tensor([0.5])), "t"),
        (lambda: bridge.sample(torch.zeros(2, 3, 5, 5, 5), torch.zeros(2, 3, 5, 5, 5), 0.5), "x0"),
        (lambda: bridge.sample(x, torch.zeros(2, 3, 4, 5, 6), 0.5), "x1"),
        (lambda: bridge.sample(torch.zeros(3, 4, 5, 5), x, 0.5), "x0"),
        (lambda: bridge.posterior_step(x, x, x, 0.5, 0.5), "s"),
        (lambda: bridge.posterior_step(x, x, x, 0.5, 0.7), "s"),
        (lambda: bridge.posterior_step(x, x, x, 0.5, -0.1), "s"),
        (lambda: bridge.sample(x, x, 0.5, noise=torch.zeros(3)), "noise"),
        (lambda: Bridge(4, prior="cosine"), "prior"),
        (lambda: Bridge(4, prior="ar1", rho=1.0), "rho"),
        (lambda: Bridge(4, prior="ar1", sigma=1.0), "prior_params"),
        (lambda: Bridge(4, prior="brownian", strength=1.0), "prior_params"),
        (lambda: Bridge(0), "num_frames"),
        (lambda: Bridge(4, eps=0.0), "eps"),
        (lambda: Bridge(4, center="grey"), "center"),
        (lambda: Bridge(4, times=[0.0, 1.0, 0.5, 2.0]), "times"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            fn()
