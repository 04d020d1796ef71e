"""A video diffusion transformer: per-frame patches, adaLN-Zero blocks, 3D RoPE.

Tokens are the patches of every frame. Each block attends either factorised (within a frame,
then across frames at the same patch position) or over the full space-time volume. Positions
enter only through rotary embeddings computed on the actual (frames, rows, columns) grid, so
the model runs on frame counts and resolutions it was not trained on. adaLN-Zero gates start
at zero, so every block, and the temporal path in particular, is the identity at
initialisation; temporal attention is skipped for N = 1, so images and videos share weights.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import Attention, rope_angles
from .layers import (
    LayerNorm32,
    TemporalModule,
    TimestepEmbedding,
    VideoBackbone,
    pad_to_multiple,
    zero_module,
)
from .saving import register_to_config

AttentionMode = Literal["factorised", "full"]


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channel pairs per axis (frames, rows, columns): 3/8 of the pairs to each spatial axis,
    the rest to time (clips are short, so time needs fewer frequencies)."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
    pairs = head_dim // 2
    spatial = pairs * 3 // 8
    return pairs - 2 * spatial, spatial, spatial


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(TemporalModule):
    """adaLN-Zero block on tokens ``(B, N*L, D)`` (frame-major, L patches per frame).

    ``factorised``: spatial attention, temporal attention, MLP (three gated residuals).
    ``full``: one attention over all N*L tokens, then the MLP. With temporal mixing inactive,
    both modes attend within each frame only.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, mode: AttentionMode,
                 qk_norm: bool) -> None:
        super().__init__()
        self.mode = mode
        self.norm_attn = LayerNorm32(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm)
        self.norm_time = (LayerNorm32(dim, elementwise_affine=False, eps=1e-6)
                          if mode == "factorised" else None)
        self.attn_time = Attention(dim, num_heads, qk_norm) if mode == "factorised" else None
        self.norm_mlp = LayerNorm32(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.num_mods = 9 if mode == "factorised" else 6
        self.ada = zero_module(nn.Linear(dim, self.num_mods * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, num_frames: int,
                angles: dict[str, torch.Tensor]) -> torch.Tensor:
        mods = self.ada(F.silu(c)).chunk(self.num_mods, dim=-1)
        n = num_frames
        shift, scale, gate = mods[0:3]
        h = modulate(self.norm_attn(x), shift, scale)
        if self.mode == "full" and self.temporal_active(n):
            h = self.attn(h, angles["full"])
        else:
            h = rearrange(h, "b (n l) d -> (b n) l d", n=n)
            h = rearrange(self.attn(h, angles["space"]), "(b n) l d -> b (n l) d", n=n)
        x = x + gate[:, None] * h
        if self.mode == "factorised" and self.temporal_active(n):
            shift, scale, gate = mods[6:9]
            h = rearrange(modulate(self.norm_time(x), shift, scale), "b (n l) d -> (b l) n d", n=n)
            h = rearrange(self.attn_time(h, angles["time"]), "(b l) n d -> b (n l) d",
                          l=x.shape[1] // n)
            x = x + gate[:, None] * h
        shift, scale, gate = mods[3:6]
        return x + gate[:, None] * self.mlp(modulate(self.norm_mlp(x), shift, scale))


class DiTVideo(VideoBackbone):
    """Video DiT predicting x0 on clips ``(B, C, N, H, W)``.

    Config keys beyond :class:`VideoBackbone`'s: ``patch_size`` (H and W are padded to a
    multiple of it inside), ``hidden_size``, ``depth``, ``num_heads``, ``mlp_ratio``,
    ``attention`` (``"factorised"`` or ``"full"``), ``qk_norm``, ``rope_theta``.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        conditional: bool = True,
        noise_channels: int = 0,
        predict_residual: bool = True,
        patch_size: int = 2,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        attention: AttentionMode = "factorised",
        qk_norm: bool = True,
        rope_theta: float = 10000.0,
        context_channels: int = 0,
        fusion: bool = False,
        flat_gate: float = 0.0,
    ) -> None:
        super().__init__()
        self.check_flat_gate(flat_gate, conditional, predict_residual, fusion)
        if attention not in ("factorised", "full"):
            raise ValueError(f"attention must be 'factorised' or 'full', got {attention!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.pairs = rope_split(hidden_size // num_heads)
        stacked = self.stacked_channels(in_channels, conditional, noise_channels, context_channels)
        predicted = self.predicted_channels(in_channels, out_channels, predict_residual,
                                            context_channels, fusion)
        self.patch_embed = nn.Conv2d(stacked, hidden_size, patch_size, stride=patch_size)
        self.time_embed = TimestepEmbedding(hidden_size)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, attention, qk_norm) for _ in range(depth)
        )
        self.norm_out = LayerNorm32(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ada_out = zero_module(nn.Linear(hidden_size, 2 * hidden_size))
        self.proj_out = zero_module(nn.Linear(hidden_size, patch_size * patch_size * predicted))

    def first_conv(self) -> nn.Conv2d:
        return self.patch_embed

    def _angles(self, n: int, hp: int, wp: int, device: torch.device) -> dict[str, torch.Tensor]:
        theta = self.config.rope_theta
        grids = {"space": (1, hp, wp), "time": (n, 1, 1)}
        if self.config.attention == "full":
            grids = {"space": (1, hp, wp), "full": (n, hp, wp)}
        return {key: rope_angles(size, self.pairs, theta, device) for key, size in grids.items()}

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, _, n, h, w = x.shape
        p = self.config.patch_size
        frames = pad_to_multiple(rearrange(x, "b c n h w -> (b n) c h w"), p)
        hp, wp = frames.shape[-2] // p, frames.shape[-1] // p
        tokens = rearrange(self.patch_embed(frames), "(b n) d hp wp -> b (n hp wp) d", b=b)
        c = self.time_embed(t)
        angles = self._angles(n, hp, wp, x.device)
        for block in self.blocks:
            tokens = self.checkpointed(block, tokens, c, n, angles)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=-1)
        out = self.proj_out(modulate(self.norm_out(tokens), shift, scale))
        out = rearrange(out, "b (n hp wp) (p1 p2 c) -> b c n (hp p1) (wp p2)", n=n, hp=hp,
                        p1=p, p2=p)
        return out[..., :h, :w]
