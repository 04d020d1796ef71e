"""The fusion head of frame interpolation: two warped candidates in, one frame out.

Practical interpolators beat flow averaging by letting a network correct what flow got
wrong in cheap ways, each of which a plain residual would have to synthesise pixel by
pixel: nudge each warped candidate by a small flow correction (RIFE's refinement, for edges
that flow misplaced by a pixel or two), choose per pixel between the two (occlusions, flow
failures on one side), fall back to the unwarped blend of the keyframes where flow failed
on both sides (fades, motion blur, periodic texture: on real clips blending beats flow by
a dB or more on some) and add what is left as a residual. The network predicts

* ``r``: ``C`` channels of residual;
* ``l``: one mask logit, ``m = sigmoid(logit(w) + l)`` where ``w`` is flow's own weight of
  ``A``, so ``l = 0`` is flow interpolation;
* ``dA``, ``dB``: two (x, y) corrections, in pixels, by which ``A`` and ``B`` are resampled;
* ``v``: the weight of the blend ``L`` (the keyframes mixed linearly, unwarped).

and, with ``F = B' + m (A' - B')``, ``x0 = F + v (L - F) + g r``, where the gate ``g =
min(|A - B| / RESIDUAL_GATE, 1)`` (``|A - B|`` averaged over channels) lets the residual and
the corrections act only where the two warped keyframes disagree (``A' = resample(A, g dA)``):
where they agree, nothing moved or flow followed it, the mix is right to within codec noise,
and a residual or a resampling can only add error. A learnt residual without the gate took
up to 10 dB from still windows of real video; corrections without it blurred the edges of
still frames, taking still windows of animation from exact (100 dB) to 78-87 dB, while
flow's own misplacements move the two candidates apart (each by its share of the error, in
opposite directions), which opens the gate. Zero
outputs give exactly the prior mix ``w A + (1 - w) B``: resampling adds ``sample(x + d) -
sample(x)``, two bilinear lookups on one grid, which cancel bit for bit at ``d = 0``. Frames
where ``w = 1`` (keyframes, which carry ``A = B = L`` = the frame) are never resampled, have
``L = F`` and gate the residual off, so they come back exactly whatever the network outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FUSION_CLAMP", "FUSION_OUTPUTS", "RESIDUAL_GATE", "fuse_candidates", "made_frames",
           "resample"]

FUSION_CLAMP = 1e-3   # w is clamped to [FUSION_CLAMP, 1 - FUSION_CLAMP] so its logit is finite
FUSION_OUTPUTS = 6    # beyond the residual: mask logit, two (x, y) corrections, blend weight
RESIDUAL_GATE = 0.02  # |A - B| (on [-1, 1]; 2.5 levels of 8 bits) from which r acts fully


def resample(x: Tensor, shift: Tensor) -> Tensor:
    """``x`` (B, C, N, H, W) moved by ``sample(x + shift) - sample(x)`` per frame.

    ``shift`` (B, 2, N, H, W) in pixels (x then y); bilinear, edges replicated, float32.
    The two lookups share one computation of the grid, so a zero shift returns ``x`` exactly.
    """
    b, c, n, h, w = x.shape
    frames = x.float().transpose(1, 2).reshape(b * n, c, h, w)
    move = shift.float().transpose(1, 2).reshape(b * n, 2, h, w).permute(0, 2, 3, 1)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                            torch.arange(w, device=x.device, dtype=torch.float32), indexing="ij")
    base = torch.stack([xs, ys], dim=-1)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=x.device)

    def lookup(pos: Tensor) -> Tensor:
        return F.grid_sample(frames, pos * scale - 1, mode="bilinear", padding_mode="border",
                             align_corners=True)

    moved = lookup(base + move) - lookup(base.expand_as(move))
    return x + moved.reshape(b, n, c, h, w).transpose(1, 2).to(x.dtype)


def made_frames(w: Tensor) -> Tensor:
    """(N,) True for the frames of ``w`` (B, 1, N, H, W) that some clip of the batch has to
    make (``w < 1`` somewhere); the others are keyframes or hold one."""
    return (w[:, 0] < 1).flatten(2).any(-1).any(0)


def fuse_candidates(out: Tensor, context: Tensor, channels: int) -> Tensor:
    """``x0`` from the network's ``out`` (``channels + FUSION_OUTPUTS`` per pixel) and the
    context's candidates: ``A`` = channels ``[0, C)``, ``B`` = ``[C, 2C)``, ``w`` = ``2C``,
    the blend ``L`` = the last ``C``.

    The mask is computed in float32: in bf16, ``1 - FUSION_CLAMP`` rounds to 1 and its
    logit to infinity.
    """
    c = channels
    a, b = context[:, :c], context[:, c:2 * c]
    w = context[:, 2 * c:2 * c + 1].float()
    gate = ((a - b).abs().mean(1, keepdim=True) / RESIDUAL_GATE).clamp(max=1).to(out.dtype)
    correct = (w < 1).to(out.dtype) * gate   # keyframes (w = 1) are never resampled
    a = resample(a, out[:, c + 1:c + 3] * correct)
    b = resample(b, out[:, c + 3:c + 5] * correct)
    prior = torch.logit(w.clamp(FUSION_CLAMP, 1 - FUSION_CLAMP))
    m = torch.sigmoid(prior + out[:, c:c + 1].float()).to(a.dtype)
    fused = b + m * (a - b)
    blend = context[:, -c:]
    return fused + out[:, c + 5:c + 6] * (blend - fused) + gate * out[:, :c]
