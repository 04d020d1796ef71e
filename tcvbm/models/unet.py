"""A spatio-temporal UNet: 2D residual blocks per frame, interleaved with temporal layers.

Spatial work (residual blocks, self-attention at low resolutions) runs on ``(B*N, C, H, W)``
so every frame is processed by the same image network, normalisation included. Between
them, temporal layers (a 1D convolution over frames and temporal self-attention with RoPE)
mix frames; their residual branches start at zero and are skipped for N = 1, so the video
model *is* the image model at initialisation and for single frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .attention import Attention, rope_angles
from .layers import (
    GroupNorm32,
    TemporalModule,
    TimestepEmbedding,
    VideoBackbone,
    pad_to_multiple,
    zero_module,
)
from .saving import register_to_config


class ResBlock(nn.Module):
    """Residual block with scale-shift (AdaGN) time conditioning: GN(h) * (1 + s) + b."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = GroupNorm32(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = GroupNorm32(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = rearrange(self.emb(F.silu(emb)), "b c -> b c 1 1").chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SpatialAttention(nn.Module):
    """Self-attention over the pixels of each frame (used at the low resolutions only)."""

    def __init__(self, ch: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(groups, ch)
        self.attn = Attention(ch, max(ch // head_dim, 1))
        zero_module(self.attn.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        return x + rearrange(self.attn(tokens), "b (h w) c -> b c h w", h=h, w=w)


def frame_conv(conv: nn.Conv3d, v: torch.Tensor) -> torch.Tensor:
    """``conv`` (a ``(k, 1, 1)`` Conv3d over frames) applied to ``v`` ``(B, C, N, H, W)`` as a
    ``(k, 1)`` Conv2d over ``(B, C, N, H*W)``: identical sums, a faster kernel."""
    b, c, n, h, w = v.shape
    out = F.conv2d(v.reshape(b, c, n, h * w), conv.weight.squeeze(-1), conv.bias,
                   padding=conv.padding[:2])
    return out.reshape(b, -1, n, h, w)


class TemporalMixer(TemporalModule):
    """Temporal 1D convolution (kernel 3 over frames), then optional temporal self-attention.

    The convolution's weights are a ``(3, 1, 1)`` Conv3d's (a Conv3d runs far faster on cuDNN
    than a Conv1d over a batch of ``B*H*W`` pixel sequences); it runs as a ``(3, 1)`` Conv2d
    over ``(B, C, N, H*W)`` (:func:`frame_conv`), the same sums, which a CPU computes faster
    than that Conv3d (PyTorch ran it through its slowest reference kernel there).
    """

    def __init__(self, ch: int, head_dim: int, groups: int, attention: bool) -> None:
        super().__init__()
        self.conv_norm = GroupNorm32(groups, ch)
        self.conv = zero_module(nn.Conv3d(ch, ch, (3, 1, 1), padding=(1, 0, 0)))
        self.attn_norm = GroupNorm32(groups, ch) if attention else None
        self.attn = Attention(ch, max(ch // head_dim, 1)) if attention else None
        if self.attn is not None:
            zero_module(self.attn.out)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        if not self.temporal_active(num_frames):
            return x
        h, w = x.shape[-2:]
        v = rearrange(x, "(b n) c h w -> b c n h w", n=num_frames)
        v = v + frame_conv(self.conv, F.silu(self.conv_norm(v)))
        if self.attn is not None:
            tokens = rearrange(self.attn_norm(v), "b c n h w -> (b h w) n c")
            angles = rope_angles((num_frames,), (self.attn.head_dim // 2,), device=x.device)
            v = v + rearrange(self.attn(tokens, angles), "(b h w) n c -> b c n h w", h=h, w=w)
        return rearrange(v, "b c n h w -> (b n) c h w")


class Unit(nn.Module):
    """One UNet stage step: residual block, optional spatial attention, optional temporal
    mixing, optional resampling. Each unit is one checkpointing boundary."""

    def __init__(
        self,
        res: ResBlock,
        spatial: SpatialAttention | None,
        temporal: TemporalMixer | None,
        resample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.res, self.spatial, self.temporal, self.resample = res, spatial, temporal, resample

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.res(x, emb)
        if self.spatial is not None:
            x = self.spatial(x)
        if self.temporal is not None:
            x = self.temporal(x, num_frames)
        if self.resample is not None:
            x = self.resample(x)
        return x


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNetVideo(VideoBackbone):
    """Spatio-temporal UNet predicting x0 on clips ``(B, C, N, H, W)``.

    Config keys beyond :class:`VideoBackbone`'s: ``base_channels`` and ``channel_mult`` (width
    per level; each level after the first halves the resolution), ``num_res_blocks`` per level,
    ``attention_levels`` (levels with spatial self-attention), ``temporal_attention_levels``
    (levels whose temporal mixers also attend; the temporal convolution is everywhere),
    ``head_dim``, ``groups`` (GroupNorm), ``dropout``. The middle block always has spatial
    and temporal attention. ``patch_size`` > 1 reads the input through a ``p x p`` patch
    convolution (stride ``p``) and writes the output through a pixel shuffle, so the whole
    network runs at ``1/p`` resolution: at ``p = 2`` a quarter of the pixels for every
    layer, the price of full-resolution frames on a CPU. H and W are padded to
    ``patch_size * 2 ** (len(channel_mult) - 1)`` inside.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        conditional: bool = True,
        noise_channels: int = 0,
        predict_residual: bool = True,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (2,),
        temporal_attention_levels: Sequence[int] = (1, 2),
        head_dim: int = 64,
        groups: int = 32,
        dropout: float = 0.0,
        patch_size: int = 1,
        context_channels: int = 0,
        fusion: bool = False,
        flat_gate: float = 0.0,
    ) -> None:
        super().__init__()
        self.check_flat_gate(flat_gate, conditional, predict_residual, fusion)
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        levels = len(channel_mult)
        for name, lv in (("attention_levels", attention_levels),
                         ("temporal_attention_levels", temporal_attention_levels)):
            if any(not 0 <= i < levels for i in lv):
                raise ValueError(f"{name} {list(lv)} must index channel_mult (0..{levels - 1})")
        widths = [base_channels * m for m in channel_mult]
        if any(c % groups for c in widths):
            raise ValueError(f"every level width {widths} must be divisible by groups={groups}")
        self.multiple = patch_size * 2 ** (levels - 1)
        emb_dim = 4 * base_channels
        self.time_embed = TimestepEmbedding(emb_dim)
        stacked = self.stacked_channels(in_channels, conditional, noise_channels,
                                        context_channels)
        predicted = self.predicted_channels(in_channels, out_channels, predict_residual,
                                            context_channels, fusion)
        self.conv_in = (nn.Conv2d(stacked, widths[0], 3, padding=1) if patch_size == 1
                        else nn.Conv2d(stacked, widths[0], patch_size, stride=patch_size))

        def unit(cin: int, cout: int, level: int, resample: nn.Module | None = None,
                 mid: bool = False) -> Unit:
            spatial = (SpatialAttention(cout, head_dim, groups)
                       if mid or level in attention_levels else None)
            t_attn = mid or level in temporal_attention_levels
            return Unit(ResBlock(cin, cout, emb_dim, groups, dropout), spatial,
                        TemporalMixer(cout, head_dim, groups, t_attn), resample)

        self.down = nn.ModuleList()
        skip_widths = [widths[0]]
        ch = widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(unit(ch, width, level))
                ch = width
                skip_widths.append(ch)
            if level < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_widths.append(ch)
        self.mid = nn.ModuleList([unit(ch, ch, levels - 1, mid=True), unit(ch, ch, levels - 1)])
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            for i in range(num_res_blocks + 1):
                last = i == num_res_blocks
                resample = Upsample(widths[level]) if last and level > 0 else None
                self.up.append(unit(ch + skip_widths.pop(), widths[level], level, resample))
                ch = widths[level]
        head = zero_module(nn.Conv2d(ch, predicted * patch_size**2, 3, padding=1))
        self.out = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(), head,
                                 nn.PixelShuffle(patch_size))

    def first_conv(self) -> nn.Conv2d:
        return self.conv_in

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, _, n, h, w = x.shape
        emb = repeat(self.time_embed(t), "b d -> (b n) d", n=n)
        hid = self.conv_in(pad_to_multiple(rearrange(x, "b c n h w -> (b n) c h w"), self.multiple))
        skips = [hid]
        for block in self.down:
            hid = self.checkpointed(block, hid, emb, n) if isinstance(block, Unit) else block(hid)
            skips.append(hid)
        for block in self.mid:
            hid = self.checkpointed(block, hid, emb, n)
        for block in self.up:
            hid = self.checkpointed(block, torch.cat([hid, skips.pop()], dim=1), emb, n)
        out = self.out(hid)[..., :h, :w]
        return rearrange(out, "(b n) c h w -> b c n h w", b=b)
