"""Time-correlated bridges between a clean clip ``X_0`` (t = 0) and its source ``X_1`` (t = 1).

Every feature column of a clip (one pixel position across its ``N`` frames) follows the
linear SDE ``dx = (A x + b) dt + sqrt(eps) dW`` where ``A`` is a symmetric ``N x N`` drift
matrix acting on the frame axis only, built from the frames' times (:mod:`tcvbm.priors`;
uniform times unless given). ``A`` is diagonalised once (float64): in its
eigenbasis every mode is an independent scalar OU bridge, so marginals and posterior steps
reduce to per-mode weights that are turned back into ``N x N`` frame-mixing matrices and
applied with one batched matmul over the frame axis. ``A = 0`` (the "brownian" prior,
plain bridge matching) is the exact limit of the same code: the weights below are written
through ``phi(x) = (1 - exp(-2x)) / (2x)``, which is smooth at ``x = 0`` where it equals 1.

All formulas follow ``docs/math.md``: with ``a = |lam| t``, ``c = |lam| (1 - t)``

    w_start = exp(-a) (1 - t) phi(c) / phi(|lam|)
    w_end   = exp(-c) t       phi(a) / phi(|lam|)
    var     = eps t (1 - t) phi(a) phi(c) / phi(|lam|)

which are the stable rewriting of ``sinh(lam (1 - t)) / sinh(lam)`` etc. (no overflow for
large ``|lam|``, no 0/0 at ``lam = 0``). The posterior ``q(X_s | X_0, X_t)`` of the bridge is
the same bridge run over ``[0, t]``: the same weights with ``lam -> lam t``, ``t -> s / t`` and
``eps -> eps t``. One formula, one place.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tcvbm.priors import PRIORS, Times, frame_times, prior_matrix

__all__ = ["Bridge", "PRIORS", "prior_matrix"]

CENTERS = ("source", "zero")
_SERIES_BELOW = 1e-4  # phi switches to its Taylor series below this argument


def _phi(x: Tensor) -> Tensor:
    """``(1 - exp(-2x)) / (2x)`` for ``x >= 0``, equal to 1 at 0 and smooth there."""
    small = x < _SERIES_BELOW
    safe = torch.where(small, torch.ones_like(x), x)
    exact = -torch.expm1(-2.0 * safe) / (2.0 * safe)
    series = 1.0 - x + (2.0 / 3.0) * x * x
    return torch.where(small, series, exact)


def _mode_weights(abs_lam: Tensor, tau: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-mode bridge weights on ``[0, 1]`` at relative time ``tau``.

    abs_lam: (B, N) absolute eigenvalues (already scaled by the interval length);
    tau: (B, 1); eps: (B, 1) noise scale for the interval. Returns ``w_start``, ``w_end``,
    ``var``, each (B, N): ``X_tau ~ w_start X_start + w_end X_end + sqrt(var) xi`` per mode.
    """
    a = abs_lam * tau
    c = abs_lam * (1.0 - tau)
    phi_lam = _phi(abs_lam)
    w_start = torch.exp(-a) * (1.0 - tau) * _phi(c) / phi_lam
    w_end = torch.exp(-c) * tau * _phi(a) / phi_lam
    var = eps * tau * (1.0 - tau) * _phi(a) * _phi(c) / phi_lam
    return w_start, w_end, var.clamp_min(0.0)


def _frame_mix(x: Tensor, m: Tensor) -> Tensor:
    """Apply per-sample frame-mixing matrices ``m`` (B, N, N) to clips ``x`` (B, C, N, H, W)."""
    b, c, n, h, w = x.shape
    out = torch.matmul(m.unsqueeze(1), x.reshape(b, c, n, h * w))
    return out.reshape(b, c, n, h, w)


def _require_bridge_clip(name: str, x: Tensor, num_frames: int) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(f"{name}: expected a (B, C, N, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[2] != num_frames:
        raise ValueError(
            f"{name}: has {x.shape[2]} frames but the bridge was built for num_frames={num_frames}"
        )


class Bridge:
    """A time-correlated bridge prior on clips of ``num_frames`` frames.

    ``Bridge(num_frames)`` alone gives the project's default: the ar1 prior with rho 0.9 and
    strength 8, eps 0.25, centred on the source (``b = -A X_1``, the process reverts towards
    the source clip rather than towards grey). ``prior="brownian"`` is plain bridge matching.

    ``times`` places the frames at their actual times (one increasing float per frame, in
    units of the nominal frame interval; ``None`` is ``0, 1, ..., N - 1``), so two frames a
    gap ``g`` apart are correlated by ``rho^g``. Times belong to a window, not to a model:
    :meth:`with_times` gives the same prior on other times, and only a bridge on uniform
    times has a :meth:`to_config`.
    """

    def __init__(
        self,
        num_frames: int,
        prior: str = "ar1",
        eps: float = 0.25,
        center: str = "source",
        *,
        times: Times | None = None,
        **prior_params: float,
    ) -> None:
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
            raise ValueError(f"num_frames: expected a positive integer, got {num_frames!r}")
        eps = float(eps)
        if not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps: must be a finite number > 0, got {eps}")
        if center not in CENTERS:
            raise ValueError(f"center: expected one of {CENTERS}, got {center!r}")
        self.num_frames = num_frames
        self.prior = prior
        self.prior_params = {**PRIORS.get(prior, {}), **prior_params}
        self.times = None if times is None else tuple(frame_times(times, num_frames).tolist())
        self.A = prior_matrix(num_frames, prior, times=self.times, **prior_params)
        self.eps = eps
        self.center = center
        lam, u = torch.linalg.eigh(self.A)
        self._abs_lam = lam.abs()
        self._u = u
        self._on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ configuration
    def _prior_config(self) -> dict[str, Any]:
        """Everything that defines the bridge except the frame times."""
        return {"num_frames": self.num_frames, "prior": self.prior, "eps": self.eps,
                "center": self.center, **self.prior_params}

    def to_config(self) -> dict[str, Any]:
        """A JSON-serialisable description that :meth:`from_config` turns back into this bridge.

        A saved model's bridge is the prior, which each window then places on its own frame
        times, so times are never part of a config; rather than silently dropping them (a
        round trip that changes the bridge) a bridge on explicit times refuses.
        """
        if self.times is not None:
            raise ValueError("times: a bridge on explicit frame times has no config; save "
                             "bridge.with_times(None) and place each window with with_times")
        return self._prior_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Bridge":
        """Inverse of :meth:`to_config`; a config never carries frame times."""
        if "times" in config:
            raise ValueError("times: not part of a bridge config; frame times belong to each "
                             "window (Bridge.with_times)")
        return cls(**config)

    def with_num_frames(self, num_frames: int) -> "Bridge":
        """The same prior on clips of another length (for example a single image), on uniform
        times: explicit times do not carry over to another number of frames."""
        return Bridge(**{**self._prior_config(), "num_frames": num_frames})

    def with_times(self, times: Times | None) -> "Bridge":
        """The same prior with its ``num_frames`` frames at ``times`` (``None``: uniform)."""
        return Bridge(**self._prior_config(), times=times)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.prior_params.items())
        times = "" if self.times is None else f", times={self.times}"
        return (f"Bridge(num_frames={self.num_frames}, prior={self.prior!r}, eps={self.eps}, "
                f"center={self.center!r}{', ' + params if params else ''}{times})")

    # ------------------------------------------------------------------ internals
    def _eig(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Eigen-pairs on ``device`` in the highest precision it supports (cached)."""
        if device not in self._on_device:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._on_device[device] = (self._abs_lam.to(device, dtype), self._u.to(device, dtype))
        return self._on_device[device]

    def _times(self, name: str, t: Tensor | float, batch: int, device: torch.device,
               low_open: bool, high_open: bool) -> Tensor:
        """Validate a time argument and return it as a (B, 1) tensor in the math precision."""
        dtype = self._eig(device)[0].dtype
        t = torch.as_tensor(t, device=device).to(dtype)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.dim() != 1 or t.shape[0] != batch:
            raise ValueError(f"{name}: expected shape ({batch},), got {tuple(t.shape)}")
        lo_bad = (t <= 0) if low_open else (t < 0)
        hi_bad = (t >= 1) if high_open else (t > 1)
        if bool((lo_bad | hi_bad | ~torch.isfinite(t)).any()):
            interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
            raise ValueError(f"{name}: every entry must lie in {interval}, got {t.tolist()}")
        return t.unsqueeze(1)

    def _weights(self, t: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-mode weights for the bridge over ``[0, t]`` evaluated at relative time ``tau``."""
        abs_lam, _ = self._eig(t.device)
        return _mode_weights(abs_lam.unsqueeze(0) * t, tau, self.eps * t)

    def _to_frames(self, diag: Tensor, dtype: torch.dtype) -> Tensor:
        """``U diag(d) U^T`` for a batch of per-mode values ``diag`` (B, N)."""
        _, u = self._eig(diag.device)
        return torch.einsum("nk,bk,mk->bnm", u, diag, u).to(dtype)

    def _draw(self, noise: Tensor | bool | None, like: Tensor,
              generator: torch.Generator | None) -> Tensor | None:
        if noise is False:
            return None
        if noise is None or noise is True:
            return torch.randn(like.shape, generator=generator, device=like.device,
                               dtype=like.dtype)
        if not isinstance(noise, Tensor) or noise.shape != like.shape:
            raise ValueError(f"noise: expected a tensor shaped {tuple(like.shape)}, None or False")
        return noise.to(like.dtype)

    def _combine(self, start: Tensor, end: Tensor | None, x1: Tensor, w_start: Tensor,
                 w_end: Tensor, var: Tensor, noise: Tensor | bool | None,
                 generator: torch.Generator | None) -> Tensor:
        """``W_start start + W_end end + S xi`` in frame space, ``end=None`` meaning ``X_1``.

        With the source centre the modes are bridges of ``X - X_1`` (the process reverts to
        the source), so ``X_1`` is subtracted before mixing and added back after; the zero
        centre bridges ``X`` itself. For the marginal (``end`` is ``X_1``) the source-centred
        end term vanishes: one matmul fewer on the hot path.
        """
        work = torch.float32 if start.dtype in (torch.float16, torch.bfloat16) else start.dtype
        start, x1 = start.to(work), x1.to(work)
        end = x1 if end is None else end.to(work)
        if self.center == "source":
            out = x1 + _frame_mix(start - x1, self._to_frames(w_start, work))
            if end is not x1:
                out = out + _frame_mix(end - x1, self._to_frames(w_end, work))
        else:
            out = (_frame_mix(start, self._to_frames(w_start, work))
                   + _frame_mix(end, self._to_frames(w_end, work)))
        xi = self._draw(noise, out, generator)
        if xi is not None:
            out = out + _frame_mix(xi, self._to_frames(var.sqrt(), work))
        return out

    def _check_pair(self, names: tuple[str, ...], *clips: Tensor) -> None:
        for name, x in zip(names, clips):
            _require_bridge_clip(name, x, self.num_frames)
        for name, x in zip(names[1:], clips[1:]):
            if x.shape != clips[0].shape:
                raise ValueError(f"{name}: shape {tuple(x.shape)} differs from "
                                 f"{names[0]} shape {tuple(clips[0].shape)}")

    def _check_step(self, x0_hat: Tensor, xt: Tensor, x1: Tensor, t: Tensor | float,
                    s: Tensor | float) -> tuple[Tensor, Tensor]:
        """Validate the arguments of a step from ``t`` to ``s``; returns both as (B, 1)."""
        self._check_pair(("x0_hat", "xt", "x1"), x0_hat, xt, x1)
        batch, device = x0_hat.shape[0], x0_hat.device
        t = self._times("t", t, batch, device, low_open=True, high_open=False)
        s = self._times("s", s, batch, device, low_open=False, high_open=True)
        if bool((s >= t).any()):
            raise ValueError(f"s: must be smaller than t, got s={s.squeeze(1).tolist()} "
                             f"and t={t.squeeze(1).tolist()}")
        return t, s

    # ------------------------------------------------------------------ public API
    def marginal(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean (like ``x0``) and frame covariance (B, N, N) of ``q(X_t | X_0, X_1)``.

        The covariance is shared by every channel and pixel: the noise is independent
        across pixels and correlated only across frames.
        """
        self._check_pair(("x0", "x1"), x0, x1)
        t = self._times("t", t, x0.shape[0], x0.device, low_open=True, high_open=True)
        w0, w1, var = self._weights(torch.ones_like(t), t)
        mean = self._combine(x0, None, x1, w0, w1, var, False, None).to(x0.dtype)
        return mean, self._to_frames(var, x0.dtype)

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor | float,
               noise: Tensor | bool | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``X_t`` from the bridge marginal, differentiable in ``x0`` and ``x1``.

        ``noise`` is a standard normal tensor like ``x0`` (drawn when None); ``False`` gives
        the mean.
        """
        self._check_pair(("x0", "x1"), x0, x1)
        t = self._times("t", t, x0.shape[0], x0.device, low_open=True, high_open=True)
        w0, w1, var = self._weights(torch.ones_like(t), t)
        return self._combine(x0, None, x1, w0, w1, var, noise, generator).to(x0.dtype)

    def posterior_step(self, x0_hat: Tensor, xt: Tensor, x1: Tensor, t: Tensor | float,
                       s: Tensor | float, noise: Tensor | bool | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """A draw of ``X_s ~ q(X_s | X_0 = x0_hat, X_t = xt)`` for ``0 <= s < t <= 1``.

        At ``s = 0`` this returns ``x0_hat``; ``noise=False`` returns the posterior mean.
        """
        t, s = self._check_step(x0_hat, xt, x1, t, s)
        w0, wt, var = self._weights(t, s / t)
        return self._combine(x0_hat, xt, x1, w0, wt, var, noise, generator).to(x0_hat.dtype)

    def deterministic_step(self, x0_hat: Tensor, xt: Tensor, x1: Tensor, t: Tensor | float,
                           s: Tensor | float) -> Tensor:
        """A DDIM-style step: move ``xt`` to time ``s`` keeping the noise it implies.

        With ``m_t`` the bridge mean given ``x0_hat`` and ``S_t`` the symmetric square root of
        the marginal covariance, ``X_s = m_s + S_s S_t^{-1} (X_t - m_t)``. The implied noise
        keeps its frame correlation; at ``t = 1`` (no noise yet) the step is the mean, so a
        sampler that must return a sample starts with a noisy :meth:`posterior_step`.
        """
        t, s = self._check_step(x0_hat, xt, x1, t, s)
        one = torch.ones_like(t)
        w0_t, w1_t, var_t = self._weights(one, t)
        w0_s, w1_s, var_s = self._weights(one, s)
        ratio = torch.where(var_t > 0, (var_s / var_t.clamp_min(1e-300)).sqrt(),
                            torch.zeros_like(var_t))
        mean_t = self._combine(x0_hat, None, x1, w0_t, w1_t, var_t, False, None)
        mean_s = self._combine(x0_hat, None, x1, w0_s, w1_s, var_s, False, None)
        work = mean_t.dtype
        out = mean_s + _frame_mix(xt.to(work) - mean_t, self._to_frames(ratio, work))
        return out.to(x0_hat.dtype)
