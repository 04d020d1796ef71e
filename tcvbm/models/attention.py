"""Multi-head attention with one place that chooses the kernel, plus rotary position encoding.

Every attention layer in the backbones goes through :func:`dot_product_attention`, so the
kernel choice (PyTorch SDPA or xformers) is made once, consistently, and can be logged.
SDPA is the default because it is always available, works under ``torch.compile`` and picks
flash / memory-efficient kernels by itself on recent GPUs. xformers is used only when it is
importable, the tensors live on CUDA and a tiny probe call succeeds: a wheel built for
another torch imports fine but raises ``NotImplementedError`` on its first kernel call,
which is why importability alone is not trusted.

Rotary embeddings (RoPE) encode *relative* positions, so a model trained on one number of
frames or one resolution runs unchanged on others: angles are computed from the actual grid
on every call, never stored.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import RMSNorm32

logger = logging.getLogger(__name__)

Kernel = Literal["auto", "sdpa", "xformers"]

#: CUDA grids cap the batch dimension of the fused attention kernels at 2**16 - 1 (both
#: SDPA's efficient/flash backends and xformers); temporal attention on a 256 px clip easily
#: has more sequences than that (one per pixel), so larger batches are processed in chunks.
MAX_ATTENTION_BATCH = 65535

_probe_results: dict[tuple[str, torch.dtype], bool] = {}
_logged: set[tuple[str, torch.dtype, str]] = set()


def _xformers_ops():
    """The ``xformers.ops`` module, or None when it cannot be imported (absent or broken)."""
    try:
        import xformers.ops as xops
    except Exception:  # a broken build can fail with more than ImportError
        return None
    return xops


def xformers_usable(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether xformers' memory-efficient attention really runs on ``device`` in ``dtype``.

    Probed once per (device, dtype) with a tiny call and cached, because an installed
    xformers may have been built for a different torch and fail only when a kernel runs.
    """
    key = (str(device), dtype)
    if key not in _probe_results:
        xops = _xformers_ops()
        ok = False
        if xops is not None:
            try:
                q = torch.zeros(1, 4, 1, 32, device=device, dtype=dtype)
                xops.memory_efficient_attention(q, q, q)
                ok = True
            except Exception as err:  # NotImplementedError, RuntimeError, ...: all mean "no"
                logger.debug("xformers probe failed on %s/%s: %r", device, dtype, err)
        _probe_results[key] = ok
    return _probe_results[key]


def select_kernel(q: torch.Tensor, kernel: Kernel = "auto") -> str:
    """Name of the kernel :func:`dot_product_attention` uses for tensors like ``q``.

    ``"auto"`` prefers xformers when usable and falls back to SDPA silently; ``"sdpa"``
    forces SDPA; ``"xformers"`` raises ValueError when xformers cannot run here. While
    ``torch.compile`` traces, SDPA is always chosen: an xformers call would break the graph.
    """
    if kernel not in ("auto", "sdpa", "xformers"):
        raise ValueError(f"kernel must be 'auto', 'sdpa' or 'xformers', got {kernel!r}")
    if kernel == "sdpa" or torch.compiler.is_compiling():
        return "sdpa"
    usable = q.device.type == "cuda" and xformers_usable(q.device, q.dtype)
    if kernel == "xformers" and not usable:
        raise ValueError(f"kernel='xformers' requested but xformers cannot run on "
                         f"{q.device}/{q.dtype}")
    name = "xformers" if usable else "sdpa"
    key = (str(q.device), q.dtype, name)
    if key not in _logged:
        _logged.add(key)
        logger.debug("attention kernel on %s/%s: %s", q.device, q.dtype, name)
    return name


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: str) -> torch.Tensor:
    if kernel == "xformers":
        xops = _xformers_ops()
        q, k, v = (rearrange(x, "b h l d -> b l h d") for x in (q, k, v))
        return rearrange(xops.memory_efficient_attention(q, k, v), "b l h d -> b h l d")
    return F.scaled_dot_product_attention(q, k, v)


def dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Kernel = "auto"
) -> torch.Tensor:
    """Softmax attention on ``(B, heads, L, head_dim)`` tensors with the chosen kernel."""
    name = select_kernel(q, kernel)
    if q.shape[0] <= MAX_ATTENTION_BATCH:
        return _attend(q, k, v, name)
    chunks = zip(*(x.split(MAX_ATTENTION_BATCH) for x in (q, k, v)))
    return torch.cat([_attend(qc, kc, vc, name) for qc, kc, vc in chunks])


def rope_angles(
    sizes: tuple[int, ...],
    pairs_per_axis: tuple[int, ...],
    theta: float = 10000.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Rotation angles ``(prod(sizes), sum(pairs_per_axis))`` for a grid, row-major order.

    Axis ``a`` rotates its own ``pairs_per_axis[a]`` channel pairs by ``position * freq``.
    An axis of size 1 sits at position 0, i.e. no rotation: spatial attention inside one
    frame uses ``(1, h, w)`` and temporal attention ``(n, 1, 1)``, consistently with the
    full ``(n, h, w)`` grid, since RoPE only sees position differences.
    """
    if len(sizes) != len(pairs_per_axis):
        raise ValueError(f"sizes {sizes} and pairs_per_axis {pairs_per_axis} differ in length")
    per_axis = []
    for size, pairs in zip(sizes, pairs_per_axis):
        freqs = theta ** (-torch.arange(pairs, device=device, dtype=torch.float32) / max(pairs, 1))
        pos = torch.arange(size, device=device, dtype=torch.float32)
        per_axis.append(torch.outer(pos, freqs))
    grids = torch.meshgrid(*[torch.arange(s, device=device) for s in sizes], indexing="ij")
    return torch.cat([a[g.reshape(-1)] for a, g in zip(per_axis, grids)], dim=-1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x`` (..., L, head_dim) by ``angles`` (L, head_dim/2).

    Computed in float32 (bf16 angles lose the phase of distant positions), cast back after.
    """
    pairs = rearrange(x.float(), "... (p two) -> ... p two", two=2)
    cos, sin = angles.cos(), angles.sin()
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rearrange(rotated, "... p two -> ... (p two)").type_as(x)


class Attention(nn.Module):
    """Multi-head self-attention on ``(B, L, dim)`` tokens with optional RoPE and QK-norm.

    QK-norm (RMS-normalised queries and keys) bounds the attention logits, which keeps bf16
    training stable at large widths without tuning a learning-rate warmup for it.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm: nn.Module = RMSNorm32(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm32(self.head_dim) if qk_norm else nn.Identity()
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3,
                            h=self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if angles is not None:
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        out = dot_product_attention(q, k, v)
        return self.out(rearrange(out, "b h l d -> b l (h d)"))
