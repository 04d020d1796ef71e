"""Building blocks shared by the backbones, and the base class that fixes their contract.

:class:`VideoBackbone` owns everything that is the same for the UNet and the DiT: input
checks, stacking ``x_t``, the source clip, the task's context and the generator noise on
channels, the optional residual over the source or fusion of two candidates, widening the
first layer for noise channels, switching temporal layers off, gradient checkpointing, and
saving (:mod:`tcvbm.models.saving`). Subclasses only map stacked inputs and ``t`` to pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tcvbm.models.fusion import FUSION_OUTPUTS, fuse_candidates, made_frames
from tcvbm.models.saving import SaveableModel


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters, so a residual branch ending in it starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def local_range(clip: torch.Tensor, size: int = 5) -> torch.Tensor:
    """(B, 1, N, H, W): each pixel's largest max - min over a ``size`` x ``size``
    neighbourhood of its frame, over channels, of a clip ``(B, C, N, H, W)``."""
    pool = (1, size, size)
    pad = (0, size // 2, size // 2)
    hi = F.max_pool3d(clip.float(), pool, 1, pad)
    lo = -F.max_pool3d(-clip.float(), pool, 1, pad)
    return (hi - lo).amax(dim=1, keepdim=True)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32: bf16 statistics over large groups are too coarse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32, for the same reason as :class:`GroupNorm32`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class RMSNorm32(nn.Module):
    """RMS normalisation over the last dimension in float32 with a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type(x.dtype)


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features ``(B, dim)`` of ``t`` in [0, 1] (scaled by 1000 so that the
    fastest frequencies resolve the fine time differences a few-step sampler makes)."""
    half = dim // 2
    steps = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * steps / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    """``t`` -> sinusoidal features -> MLP -> a ``(B, dim)`` conditioning vector."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim))


class TemporalModule(nn.Module):
    """A layer that mixes information across frames.

    It must act as the identity when it is inactive: for a single frame (so an image model
    and a video model are one network with one set of weights) or when switched off with
    :meth:`VideoBackbone.set_temporal_enabled` (frames then pass through independently).
    """

    temporal_enabled: bool = True

    def temporal_active(self, num_frames: int) -> bool:
        return self.temporal_enabled and num_frames > 1


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the last two dims of ``x`` (bottom and right) up to a multiple.

    Replicate (not zero) padding keeps the border statistics close to the image's own, so the
    crop that follows sees little edge artefact; reflect would fail on tiny inputs. Any
    leading dims are allowed (frames ``(B, C, H, W)`` in the backbones, clips
    ``(B, C, N, H, W)`` in the tiler): they are flattened because replicate padding of two
    dims takes at most 4-D input.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x
    flat = F.pad(x.reshape(-1, h, w), (0, pw, 0, ph), mode="replicate")
    return flat.reshape(*x.shape[:-2], h + ph, w + pw)


class VideoBackbone(SaveableModel):
    """Base class of the x0-predicting backbones on clips ``(B, C, N, H, W)``.

    Channel order of the first layer is ``[x_t, source clip (if conditional), context,
    noise]``: ``context_channels`` per-frame channels from the task
    (:meth:`tcvbm.tasks.Task.prepare`), then the noise, last so that
    :meth:`add_noise_channels` can append zero-initialised input channels.

    ``fusion`` makes the network output ``C + FUSION_OUTPUTS`` channels that
    :func:`tcvbm.models.fusion.fuse_candidates` turns into ``x0`` from two candidate clips
    of the context: a per-pixel choice between them, a small flow correction of each and a
    residual, as practical interpolators do where two warped keyframes disagree. The
    contract with the context: channels ``[0, C)`` hold ``A``, ``[C, 2C)`` ``B`` and channel
    ``2C`` flow's weight ``w`` of ``A``; later channels are free
    (:class:`tcvbm.tasks.FrameInterpolation` fills them with flows and a disagreement cue).

    ``flat_gate`` > 0 scales a conditional model's residual by where the source has detail:
    by ``clamp(r / flat_gate, 0, 1)``, ``r`` the source's largest range of values in a 5x5
    neighbourhood (over channels, in [-1, 1] units). An upscale is exact on flat areas (black
    frames, letterboxes, a clear sky), where any residual can only add error: a network
    returns them within a level or so, and a frame that should be exact loses tens of dB of
    PSNR for it. 0 (the default) leaves the residual whole.
    The output layer starts at zero, so an untrained fusion model returns the prior mix
    ``w A + (1 - w) B`` exactly. Keyframes (``w = 1``, ``A = B``) are known: the network is
    not run on them and they come back exactly.

    Subclasses register these config keys (:func:`tcvbm.models.saving.register_to_config`):
    ``in_channels``, ``out_channels``, ``conditional``, ``noise_channels``,
    ``predict_residual``, ``context_channels``, ``fusion``, ``flat_gate``, and implement
    :meth:`first_conv` and :meth:`predict`.
    """

    gradient_checkpointing: bool = False

    @staticmethod
    def stacked_channels(in_channels: int, conditional: bool, noise_channels: int,
                         context_channels: int = 0) -> int:
        """Number of channels the first layer sees."""
        if noise_channels < 0:
            raise ValueError(f"noise_channels must be >= 0, got {noise_channels}")
        if context_channels < 0:
            raise ValueError(f"context_channels must be >= 0, got {context_channels}")
        return in_channels * (2 if conditional else 1) + context_channels + noise_channels

    @staticmethod
    def predicted_channels(in_channels: int, out_channels: int, predict_residual: bool,
                           context_channels: int, fusion: bool) -> int:
        """Number of channels the network outputs: with fusion, the residual and the
        :data:`~tcvbm.models.fusion.FUSION_OUTPUTS` of the head."""
        if not fusion:
            return out_channels
        if out_channels != in_channels or not predict_residual:
            raise ValueError(f"fusion adds a residual to a mix of clips shaped like x_t: it needs "
                             f"out_channels == in_channels and predict_residual, got "
                             f"{out_channels}, {in_channels}, {predict_residual}")
        if context_channels < 3 * in_channels + 1:
            raise ValueError(f"fusion reads two candidates, a weight and a blend from the "
                             f"context: context_channels must be >= {3 * in_channels + 1}, got "
                             f"{context_channels}")
        return out_channels + FUSION_OUTPUTS

    @staticmethod
    def check_flat_gate(flat_gate: float, conditional: bool, predict_residual: bool,
                        fusion: bool) -> None:
        """``flat_gate`` reads the source clip and scales a plain residual (class docstring)."""
        if flat_gate < 0:
            raise ValueError(f"flat_gate must be >= 0 (0: off), got {flat_gate}")
        if flat_gate and (not conditional or not predict_residual or fusion):
            raise ValueError("flat_gate scales the residual over a source clip: it needs a "
                             "conditional model that predicts a residual, without fusion")

    def first_conv(self) -> nn.Conv2d:
        """The layer that reads the stacked input channels."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Map stacked inputs ``(B, C_in, N, H, W)`` and ``t`` ``(B,)`` to ``(B, out, N, H, W)``."""
        raise NotImplementedError

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | float,
        cond: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the clean clip x0 from ``x_t`` at time ``t``.

        Args:
            x_t: ``(B, C, N, H, W)`` in [-1, 1]; any N >= 1 and any H, W.
            t: ``(B,)`` times in [0, 1] (a scalar is broadcast over the batch).
            cond: the source clip ``x1``, shaped like ``x_t``; required when the config says
                ``conditional``, ignored otherwise.
            context: ``(B, context_channels, N, H, W)`` from the task that made ``cond``
                (:meth:`tcvbm.tasks.Task.prepare`), required by a model with context
                channels and refused by one without them.
            noise: ``(B, noise_channels, N, H, W)`` generator noise, required by a model with
                noise channels and refused by one without them. The model never draws it: the
                caller does, seeded (:func:`tcvbm.runs.draw_model_noise`), so that an output
                can be reproduced.

        Returns:
            x0 prediction shaped like ``x_t``; with ``predict_residual`` it is the source clip
            (or ``x_t`` for an unconditional model) plus the network output, with ``fusion``
            the fused candidates plus the residual (class docstring).
        """
        cfg = self.config
        if x_t.ndim != 5 or x_t.shape[1] != cfg.in_channels:
            raise ValueError(f"x_t must be (B, {cfg.in_channels}, N, H, W), got {tuple(x_t.shape)}")
        b, _, n, h, w = x_t.shape
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must be a scalar or shaped ({b},), got {tuple(t.shape)}")
        parts = [x_t]
        if cfg.conditional:
            if cond is None or cond.shape != x_t.shape:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond must be shaped like x_t {tuple(x_t.shape)} for a "
                                 f"conditional model, got {got}")
            parts.append(cond.to(x_t.dtype))
        if cfg.context_channels:
            if context is None or context.shape != (b, cfg.context_channels, n, h, w):
                got = None if context is None else tuple(context.shape)
                raise ValueError(
                    f"context: this {type(self).__name__} reads {cfg.context_channels} context "
                    f"channels and needs a context shaped {(b, cfg.context_channels, n, h, w)} "
                    f"from its task's prepare(), got {got}")
            context = context.to(x_t.dtype)
            parts.append(context)
        elif context is not None:
            raise ValueError(f"context: given to a {type(self).__name__} without context "
                             f"channels (its task makes one: set context_channels to "
                             f"{context.shape[1]})")
        if cfg.noise_channels:
            if noise is None:
                raise ValueError(
                    f"noise: this {type(self).__name__} has {cfg.noise_channels} noise channels "
                    f"and needs noise shaped {(b, cfg.noise_channels, n, h, w)}; draw it seeded "
                    "with tcvbm.runs.draw_model_noise"
                )
            if noise.shape != (b, cfg.noise_channels, n, h, w):
                raise ValueError(
                    f"noise must be {(b, cfg.noise_channels, n, h, w)}, got {tuple(noise.shape)}"
                )
            parts.append(noise.to(x_t.dtype))
        elif noise is not None:
            raise ValueError("noise given to a model without noise channels "
                             "(call add_noise_channels first)")
        if cfg.fusion:
            return self._fused(parts, t, context)
        out = self.predict(torch.cat(parts, dim=1), t)
        if cfg.flat_gate:
            out = out * (local_range(cond) / cfg.flat_gate).clamp(max=1.0).to(out.dtype)
        if cfg.predict_residual:
            out = out + (parts[1] if cfg.conditional else x_t)
        return out

    def _fused(self, parts: list[torch.Tensor], t: torch.Tensor,
               context: torch.Tensor) -> torch.Tensor:
        """The fusion head's ``x0``, the network and the head run only on the frames to make.

        Frames whose weight ``w`` is 1 everywhere (keyframes, and frames holding the last
        one) are known: their two candidates are the frame itself, which the head returns
        exactly whatever the network outputs, so neither runs on them; in a 5-frame x2
        window both run on 2 frames instead of 5, and the inputs are stacked for those
        only. Those frames are the same in every clip of a batch (they follow from the
        task's frame layout).
        """
        c = self.config.in_channels
        made = made_frames(context[:, 2 * c:2 * c + 1])
        x0 = context[:, c:2 * c].clone()
        if bool(made.any()):
            out = self.predict(torch.cat([p[:, :, made] for p in parts], dim=1), t)
            x0[:, :, made] = fuse_candidates(out.to(x0.dtype), context[:, :, made], c)
        return x0

    @torch.no_grad()
    def add_noise_channels(self, k: int) -> None:
        """Append ``k`` zero-initialised noise input channels to the first layer.

        Outputs are unchanged at this moment (the new weights are zero), which is what lets
        the distillation generator start exactly at the teacher. The config's
        ``noise_channels`` is updated so ``save_pretrained``/``from_pretrained`` round-trip.
        Parameters are replaced: build the optimizer after calling this.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        conv = self.first_conv()
        w = conv.weight
        extra = torch.zeros(w.shape[0], k, *w.shape[2:], device=w.device, dtype=w.dtype)
        conv.weight = nn.Parameter(torch.cat([w, extra], dim=1))
        conv.in_channels += k
        self.register_to_config(noise_channels=self.config.noise_channels + k)

    def set_temporal_enabled(self, enabled: bool) -> None:
        """Switch every temporal layer on or off; off, each frame is processed on its own."""
        for module in self.modules():
            if isinstance(module, TemporalModule):
                module.temporal_enabled = enabled

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them."""
        self.gradient_checkpointing = True

    def checkpointed(self, block: nn.Module, *args):
        """Run ``block(*args)``, under activation checkpointing when it is enabled and needed."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)
