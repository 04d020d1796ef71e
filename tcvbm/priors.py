"""Drift matrices ``A`` of the bridge priors, built on the frames' actual times.

The frames of a clip sit at times ``t_1 < ... < t_N`` in units of the nominal frame interval;
``None`` means ``0, 1, ..., N - 1``. The times, not the indices, define the prior because the
project produces frames at arbitrary positions between two inputs (any output rate) and reads
variable-frame-rate video by its timestamps: the correlation between two frames must follow
the time between them. The index-based priors are the uniform-time case of this one
construction (equal, to the bit, to the matrices built from indices), so one model serves
every factor and frame rate.

Both non-trivial priors are Gauss-Markov chains along the sorted times, so their precision
matrices are tridiagonal and written in closed form (``docs/math.md``, "Frame times"): no
(possibly ill-conditioned) matrix is ever inverted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["PRIORS", "frame_times", "prior_matrix"]

PRIORS: dict[str, dict[str, float]] = {
    # rho: correlation of two frames one time unit apart; strength: kappa (mean reversion).
    "ar1": {"rho": 0.9, "strength": 8.0},
    # strength: kappa; delta: the diagonal shift that keeps A negative definite.
    "laplacian": {"strength": 1.0, "delta": 0.1},
    # A = 0: independent frames, ordinary bridge matching.
    "brownian": {},
}

Times = Sequence[float] | Tensor


def frame_times(times: Times | None, num_frames: int) -> Tensor:
    """The frame times as a float64 (N,) tensor on the CPU; ``None`` gives ``0, 1, ..., N - 1``.

    Rejects anything that is not one finite, strictly increasing time per frame: repeated or
    unordered times would make the chain's gaps zero or negative, where the prior is undefined.
    """
    if times is None:
        return torch.arange(num_frames, dtype=torch.float64)
    try:
        t = torch.as_tensor(times, dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"times: expected a 1-D sequence of numbers, got {times!r}") from err
    if t.dim() != 1 or t.numel() != num_frames:
        raise ValueError(f"times: expected one time per frame, shape ({num_frames},), "
                         f"got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"times: every entry must be finite, got {t.tolist()}")
    if not bool((t.diff() > 0).all()):
        raise ValueError(f"times: must be strictly increasing, got {t.tolist()}")
    return t


def _ar1_precision(gaps: Tensor, rho: float) -> Tensor:
    """Inverse of ``C_ij = rho^|t_i - t_j|``: the precision of a unit-variance Gauss-Markov chain.

    With ``r_k = rho^(t_{k+1} - t_k)`` the chain is ``x_{k+1} = r_k x_k + sqrt(1 - r_k^2) e_k``;
    its precision has ``-r_k / (1 - r_k^2)`` beside the diagonal and, on the diagonal,
    ``1 / (1 - m) + o / (1 - o)`` with ``m``, ``o`` the ``r^2`` of a frame's two edges (0 for a
    missing one). ``m`` is an edge the frame has, so an end frame gets ``1 / (1 - r^2)``; the
    diagonal is evaluated as ``(1 + o (1 - m) / (1 - o)) / (1 - m)``, which for equal gaps is
    ``(1 + rho^2) / (1 - rho^2)`` operation for operation (``(1 - m) / (1 - o)`` is exactly 1).
    """
    r = torch.pow(rho, gaps)
    r2 = r * r
    none = torch.zeros(1, dtype=torch.float64)
    left, right = torch.cat([none, r2]), torch.cat([r2, none])
    m = torch.cat([right[:1], left[1:]])  # the left edge, or the first frame's right edge
    o = torch.cat([none, right[1:]])  # the right edge of every frame but the first
    diag = (1.0 + o * ((1.0 - m) / (1.0 - o))) / (1.0 - m)
    off = -r / (1.0 - r2)
    return torch.diag(diag) + torch.diag(off, 1) + torch.diag(off, -1)


def _chain_laplacian(gaps: Tensor) -> Tensor:
    """Graph Laplacian of the frame chain with edge weights ``1 / gap``.

    This is the precision of Brownian motion sampled at the times (its increments have the
    variance of their gap); equal unit gaps give the path-graph Laplacian.
    """
    weight = 1.0 / gaps
    degree = torch.zeros(gaps.numel() + 1, dtype=torch.float64)
    degree[1:] += weight
    degree[:-1] += weight
    return torch.diag(degree) - torch.diag(weight, 1) - torch.diag(weight, -1)


def _nonnegative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
    return value


def prior_matrix(num_frames: int, prior: str, times: Times | None = None,
                 **params: float) -> Tensor:
    """The drift matrix ``A`` (float64, symmetric, negative semi-definite) of a named prior.

    ``times``: one increasing time per frame (see :func:`frame_times`); ``None`` is uniform.
    """
    if prior not in PRIORS:
        raise ValueError(f"prior: unknown prior {prior!r}; expected one of {sorted(PRIORS)}")
    unknown = set(params) - set(PRIORS[prior])
    if unknown:
        raise ValueError(
            f"prior_params: {sorted(unknown)} not accepted by prior {prior!r}; "
            f"it takes {sorted(PRIORS[prior]) or 'no parameters'}"
        )
    p = {**PRIORS[prior], **params}
    gaps = frame_times(times, num_frames).diff()
    if prior == "brownian":
        return torch.zeros(num_frames, num_frames, dtype=torch.float64)
    strength = _nonnegative("strength", p["strength"])
    if prior == "ar1":
        rho = float(p["rho"])
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho: must lie in [0, 1), got {rho}")
        a = -(strength / 2.0) * _ar1_precision(gaps, rho)
    else:
        delta = _nonnegative("delta", p["delta"])
        laplacian = _chain_laplacian(gaps)
        a = -strength * (laplacian + delta * torch.eye(num_frames, dtype=torch.float64))
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"times: gaps down to {gaps.min().item():.3g} are too small for the "
                         f"{prior} prior in float64 (its drift matrix is not finite)")
    return a
