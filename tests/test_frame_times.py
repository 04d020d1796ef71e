"""Priors on actual frame times: closed forms against dense references, the uniform case."""

from __future__ import annotations

import pytest
import torch

from tcvbm.bridges import Bridge, prior_matrix

IRREGULAR = [0.0, 0.3, 1.0, 1.25, 2.0]


def _index_matrix(n: int, prior: str, **p: float) -> torch.Tensor:
    """The index-based matrices as built before frame times existed, operation for operation
    (``C_ij = rho^|i-j|`` inverted in closed form, the unit path-graph Laplacian)."""
    if prior == "brownian":
        return torch.zeros(n, n, dtype=torch.float64)
    if prior == "ar1":
        rho = p["rho"]
        diag = torch.full((n,), 1.0 + rho * rho, dtype=torch.float64)
        diag[0] = diag[-1] = 1.0
        ones = torch.ones(n - 1, dtype=torch.float64)
        c_inv = (torch.diag(diag) - rho * (torch.diag(ones, 1) + torch.diag(ones, -1))) / (
            1.0 - rho * rho)
        if n == 1:
            c_inv = torch.ones(1, 1, dtype=torch.float64)
        return -(p["strength"] / 2.0) * c_inv
    off = torch.ones(n - 1, dtype=torch.float64)
    degree = torch.zeros(n, dtype=torch.float64)
    degree[1:] += 1.0
    degree[:-1] += 1.0
    laplacian = torch.diag(degree) - torch.diag(off, 1) - torch.diag(off, -1)
    return -p["strength"] * (laplacian + p["delta"] * torch.eye(n, dtype=torch.float64))


def _exp_kernel(times: list[float], rho: float) -> torch.Tensor:
    t = torch.tensor(times, dtype=torch.float64)
    return rho ** (t[:, None] - t[None, :]).abs()


@pytest.mark.parametrize("prior,params", [
    ("ar1", {"rho": 0.9, "strength": 8.0}), ("ar1", {"rho": 0.37, "strength": 3.3}),
    ("ar1", {"rho": 0.6, "strength": 2.0}), ("ar1", {"rho": 0.0, "strength": 1.0}),
    ("laplacian", {"strength": 1.0, "delta": 0.1}),
    ("laplacian", {"strength": 2.7, "delta": 0.0}), ("brownian", {}),
])
def test_uniform_times_reproduce_the_index_matrices_bit_for_bit(prior: str, params) -> None:
    for n in [1, 2, 3, 8, 17]:
        ref = _index_matrix(n, prior, **params)
        for times in [None, list(range(n)), torch.arange(n) + 5.0]:
            assert torch.equal(prior_matrix(n, prior, times=times, **params), ref)
        assert torch.equal(Bridge(n, prior=prior, **params).A, ref)


@pytest.mark.parametrize("times", [IRREGULAR, [0.0, 0.5, 0.75, 2.0, 2.3, 3.5, 4.0, 6.0]])
def test_ar1_covariance_is_rho_to_the_time_gap(times: list[float]) -> None:
    """Inverting A back gives the exponential kernel rho^|t_i - t_j| (an OU process sampled at
    the times); on this well-conditioned case also A against a dense inverse of C."""
    rho, strength = 0.6, 2.0
    a = prior_matrix(len(times), "ar1", times=times, rho=rho, strength=strength)
    kernel = _exp_kernel(times, rho)
    assert torch.allclose(-(strength / 2.0) * torch.linalg.inv(a), kernel, atol=1e-12)
    assert torch.allclose(a, -(strength / 2.0) * torch.linalg.inv(kernel), atol=1e-12)
    assert torch.equal(a, a.T) and torch.linalg.eigvalsh(a).max() < 0


@pytest.mark.parametrize("gap", [0.1, 0.5, 1.0, 2.5])
def test_two_frames_a_gap_apart_have_correlation_rho_to_the_gap(gap: float) -> None:
    rho = 0.9
    cov = torch.linalg.inv(prior_matrix(2, "ar1", times=[3.0, 3.0 + gap], rho=rho, strength=2.0))
    assert (cov[0, 1] / cov[0, 0]).item() == pytest.approx(rho ** gap, rel=1e-12)
    # Scaling every gap by g is the uniform prior with rho^g.
    stretched = prior_matrix(6, "ar1", times=[gap * k for k in range(6)], rho=rho)
    assert torch.allclose(stretched, prior_matrix(6, "ar1", rho=rho ** gap), atol=1e-10)


def test_laplacian_is_the_precision_of_brownian_motion_at_the_times() -> None:
    """Brownian motion at times t_1 > 0 has covariance min(t_i, t_j); its precision is the chain
    Laplacian with weights 1 / gap plus 1 / t_1 on the first frame (the step from time 0)."""
    times = [0.5, 0.8, 1.5, 1.75, 2.5]
    strength, delta = 1.5, 0.2
    a = prior_matrix(5, "laplacian", times=times, strength=strength, delta=delta)
    laplacian = -a / strength - delta * torch.eye(5, dtype=torch.float64)
    t = torch.tensor(times, dtype=torch.float64)
    precision = torch.linalg.inv(torch.minimum(t[:, None], t[None, :]))
    precision[0, 0] -= 1.0 / times[0]
    assert torch.allclose(laplacian, precision, atol=1e-12)
    assert torch.allclose(laplacian.sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)


def test_brownian_ignores_times() -> None:
    assert torch.equal(prior_matrix(5, "brownian", times=IRREGULAR), torch.zeros(5, 5).double())


def test_with_times_keeps_the_prior_and_its_own_cache() -> None:
    base = Bridge(5, prior="laplacian", eps=0.4, center="zero", strength=2.0)
    timed = base.with_times(IRREGULAR)
    assert timed.times == tuple(IRREGULAR) and timed.num_frames == 5
    assert (timed.prior, timed.eps, timed.center) == ("laplacian", 0.4, "zero")
    assert timed.prior_params == base.prior_params
    assert torch.equal(timed.A, prior_matrix(5, "laplacian", times=IRREGULAR, strength=2.0,
                                             delta=0.1))
    assert not torch.allclose(timed.A, base.A)
    cpu = torch.device("cpu")
    assert not torch.allclose(timed._eig(cpu)[0], base._eig(cpu)[0])
    assert timed._on_device is not base._on_device
    back = timed.with_times(None)
    assert back.times is None and torch.equal(back.A, base.A)
    assert base.to_config() == back.to_config()
    assert "times=(0.0, 0.3" in repr(timed)


def test_times_are_not_part_of_a_config() -> None:
    """A saved bundle holds the prior; each window brings its own times."""
    timed = Bridge(5, times=IRREGULAR)
    with pytest.raises(ValueError, match=r"^times\b"):
        timed.to_config()
    with pytest.raises(ValueError, match=r"^times\b"):
        Bridge.from_config({**Bridge(5).to_config(), "times": IRREGULAR})
    assert "times" not in Bridge(5).to_config()
    # Another length cannot keep the times: it is the same prior on uniform times.
    single = timed.with_num_frames(1)
    assert single.times is None and torch.equal(single.A, Bridge(1).A)


@pytest.mark.parametrize("times", [
    [0.0, 1.0, 2.0],  # wrong length
    [[0.0, 1.0], [2.0, 3.0]],  # not 1-D
    [0.0, 1.0, 1.0, 2.0],  # repeated
    [0.0, 2.0, 1.0, 3.0],  # not increasing
    [0.0, 1.0, float("nan"), 3.0],
    [0.0, 1.0, 2.0, float("inf")],
    "0123",
])
def test_bad_times_are_rejected(times) -> None:
    for prior in ["ar1", "laplacian", "brownian"]:
        with pytest.raises(ValueError, match=r"^times\b"):
            prior_matrix(4, prior, times=times)
        with pytest.raises(ValueError, match=r"^times\b"):
            Bridge(4, prior=prior, times=times)


def test_frames_too_close_for_float64_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^times\b.*ar1"):
        prior_matrix(3, "ar1", times=[0.0, 1e-300, 1.0])
