"""Quality metrics on clips ``(B, C, N, H, W)`` in [-1, 1], one value per clip.

PSNR comes from ``torchmetrics.functional``; SSIM and MS-SSIM are torchmetrics' definitions
(reflected borders, the same window, constants and scale weights; a test holds them to it)
computed with a separable window, one frame at a time, which a 1080p evaluation needs.
Every metric is frame by frame, averaged over the frames scored. Temporal consistency is the
flow-warped error between consecutive output frames, measured with the ground truth's own
motion so that a method cannot look consistent by estimating lazy flow. Learned metrics
only ever run with real weights: the shift-tolerant LPIPS network ships its trained AlexNet
inside the ``stlpips-pytorch`` wheel (loaded here without that package's code, which needs
torchvision); standard LPIPS, FID and FVD need local weight files and report why they were
skipped when those are absent.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio

from tcvbm.flow import backward_warp, dis_flow

__all__ = ["psnr", "ssim", "ms_ssim", "sample_spread", "temporal_warp_error", "MetricUnavailable",
           "PerceptualNet", "load_stlpips", "load_lpips", "perceptual_distance",
           "load_torchscript_features", "frechet_distance", "PSNR_MAX", "MS_SSIM_MIN_SIZE"]

PSNR_MAX = 100.0          # dB for identical frames: finite, so tables and JSON stay valid
_RANGE = (-1.0, 1.0)
# the fifth scale (1/16) must hold the window's full positions: 11 px or more a side there
MS_SSIM_MIN_SIZE = 176
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5
_SSIM_MIN_SIZE = _SSIM_WINDOW // 2 + 1  # the window's half reaches past the border into the
                                        # frame's reflection, which must fit in the frame


class MetricUnavailable(RuntimeError):
    """A metric cannot run honestly here (weights absent, frames too small); says why."""


def _select_frames(x: Tensor, frames: Tensor | None) -> Tensor:
    """(B, C, N, H, W) -> (B, n, C, H, W) with only the selected frames (a (N,) bool mask)."""
    if x.dim() != 5:
        raise ValueError(f"clip: expected (B, C, N, H, W), got {tuple(x.shape)}")
    x = x.transpose(1, 2).float()
    return x if frames is None else x[:, frames.to(x.device)]


def _score_per_frame(fn: Callable[[Tensor, Tensor], Tensor], pred: Tensor, target: Tensor,
                     frames: Tensor | None) -> Tensor:
    """(B,) mean over the selected frames of ``fn``, which scores (B*n, C, H, W) frame pairs."""
    if pred.shape != target.shape:
        raise ValueError(f"pred/target: shapes differ, {tuple(pred.shape)} vs "
                         f"{tuple(target.shape)}")
    p, t = _select_frames(pred, frames), _select_frames(target, frames)
    b, n = p.shape[:2]
    if n == 0:
        raise ValueError("frames: no frame selected to score")
    return fn(p.flatten(0, 1), t.flatten(0, 1)).view(b, n).mean(dim=1)


def _unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] intensities, clipped.

    SSIM's luminance term ``(2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)`` is not invariant
    to a shift of the values: on zero-centred data it compares means near 0 and collapses for
    any mid-grey difference, so SSIM is defined, and computed here, on intensities in [0, 1].
    In float64: the windowed variances are differences of nearly equal sums, which float32
    leaves off by enough to score two identical flat frames 0.99997.
    """
    return ((x.double() + 1) / 2).clamp(0.0, 1.0)


FramePairFn = Callable[[Tensor, Tensor], Tensor]


def _one_frame_at_a_time(fn: FramePairFn) -> FramePairFn:
    """``fn`` on (B*n, C, H, W) frame pairs, one pair per call: SSIM's windowed statistics of
    a frame are a dozen float64 copies of it, a quarter of a GB at 1080p, which a whole clip's
    frames at once multiply into tens of GB."""
    return lambda p, t: torch.cat([fn(p[i:i + 1], t[i:i + 1]) for i in range(p.shape[0])])


def psnr(pred: Tensor, target: Tensor, frames: Tensor | None = None) -> Tensor:
    """(B,) mean per-frame PSNR in dB, at most ``PSNR_MAX`` (reached by identical frames)."""
    def fn(p: Tensor, t: Tensor) -> Tensor:
        value = peak_signal_noise_ratio(p, t, data_range=_RANGE, reduction="none",
                                        dim=(1, 2, 3))
        return value.nan_to_num(posinf=PSNR_MAX).clamp(max=PSNR_MAX)
    return _score_per_frame(fn, pred, target, frames)


def ssim(pred: Tensor, target: Tensor, frames: Tensor | None = None) -> Tensor:
    """(B,) mean per-frame SSIM (Gaussian 11-px window, sigma 1.5).

    Near a frame's border the window sees the frame's reflection, as torchmetrics pads it;
    frames smaller than the window are scored that way throughout, so only frames too small
    to hold the reflection (5 px or less) have no SSIM.
    """
    if min(pred.shape[-2:]) < _SSIM_MIN_SIZE:
        raise MetricUnavailable(f"ssim: frames of {tuple(pred.shape[-2:])} px are too small "
                                f"for the {_SSIM_WINDOW}-px window's reflection padding "
                                f"(at least {_SSIM_MIN_SIZE} px a side)")
    return _score_per_frame(_one_frame_at_a_time(
        lambda p, t: _ssim_maps(_unit(p), _unit(t))[0].flatten(1).mean(1)), pred, target, frames)


def ms_ssim(pred: Tensor, target: Tensor, frames: Tensor | None = None) -> Tensor:
    """(B,) mean per-frame MS-SSIM with the standard five scales and weights."""
    if min(pred.shape[-2:]) < MS_SSIM_MIN_SIZE:
        raise MetricUnavailable(f"ms_ssim: frames of {tuple(pred.shape[-2:])} px are smaller "
                                f"than the {MS_SSIM_MIN_SIZE} px its five scales need")

    def fn(p: Tensor, t: Tensor) -> Tensor:
        p, t = _unit(p), _unit(t)
        half = _SSIM_WINDOW // 2  # contrast-structure over the window's full positions
        terms = []
        for _ in _MS_SSIM_WEIGHTS:
            sim, cs = _ssim_maps(p, t)
            terms.append(cs[..., half:-half, half:-half].flatten(1).mean(1))
            p, t = F.avg_pool2d(p, 2), F.avg_pool2d(t, 2)
        terms[-1] = sim.flatten(1).mean(1)
        weights = torch.tensor(_MS_SSIM_WEIGHTS, dtype=p.dtype).view(-1, 1)
        return (torch.stack(terms) ** weights).prod(dim=0)
    return _score_per_frame(_one_frame_at_a_time(fn), pred, target, frames)


def _gaussian_blur(x: Tensor) -> Tensor:
    """The SSIM window over (B, C, H, W), the frame reflected at its borders, as two 1-D
    passes of shifted sums. Equal to torchmetrics' 2-D grouped convolution, which on a CPU
    in float64 unfolds 121 copies of the frame (tens of GB and minutes for a 1080p frame)."""
    half = _SSIM_WINDOW // 2
    offsets = torch.arange(-half, half + 1, dtype=x.dtype)
    taps = torch.exp(-((offsets / _SSIM_SIGMA) ** 2) / 2)
    taps = (taps / taps.sum()).tolist()
    x = F.pad(x, (half, half, half, half), mode="reflect")
    h, w = x.shape[-2] - 2 * half, x.shape[-1] - 2 * half
    rows = sum(tap * x[..., :, k:k + w] for k, tap in enumerate(taps))
    return sum(tap * rows[..., k:k + h, :] for k, tap in enumerate(taps))


def _ssim_maps(p: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel SSIM and its contrast-structure term of [0, 1] frames (B, C, H, W)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_p, mu_t, pp, tt, pt = _gaussian_blur(torch.cat([p, t, p * p, t * t, p * t])).chunk(5)
    var_p = (pp - mu_p ** 2).clamp(min=0.0)
    var_t = (tt - mu_t ** 2).clamp(min=0.0)
    upper = 2 * (pt - mu_p * mu_t) + c2
    lower = var_p + var_t + c2
    sim = (2 * mu_p * mu_t + c1) * upper / ((mu_p ** 2 + mu_t ** 2 + c1) * lower)
    return sim, upper / lower


def sample_spread(samples: Tensor, frames: Tensor | None = None) -> Tensor:
    """(B,) diversity of ``K`` samples ``(K, B, C, N, H, W)`` of the same inputs: the
    per-pixel standard deviation across the samples, in [0, 1] intensity units, averaged
    over the selected frames' pixels and channels. 0 for a model that ignores its noise."""
    if samples.dim() != 6 or samples.shape[0] < 2:
        raise ValueError(f"samples: expected (K >= 2, B, C, N, H, W), got {tuple(samples.shape)}")
    spread = (samples.float() / 2).std(dim=0)  # [-1, 1] values: half their std in [0, 1]
    return _select_frames(spread, frames).mean(dim=(1, 2, 3, 4))


def _to_numpy01(clip: Tensor) -> np.ndarray:
    """(C, N, H, W) in [-1, 1] -> float32 (N, H, W, C) in [0, 1]."""
    return ((clip.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).cpu().numpy()


def temporal_warp_error(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """((B,) output error, (B,) ground-truth error): mean |warp(f_i) - f_{i+1}| in [0, 1] units.

    Frame ``i`` is warped onto frame ``i + 1`` with DIS flow computed on the ground truth,
    for the output and for the ground truth alike; the ground truth's own error (occlusions,
    lighting, flow mistakes) is the floor, and flicker or jitter in the output raises its
    error above that floor.
    """
    if pred.shape != target.shape or pred.shape[2] < 2:
        raise ValueError(f"pred/target: need equal shapes with >= 2 frames, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    out, ref = [], []
    for p_clip, t_clip in zip(pred, target):
        p, t = _to_numpy01(p_clip), _to_numpy01(t_clip)
        e_p = e_t = 0.0
        for i in range(p.shape[0] - 1):
            flow = dis_flow(t[i + 1], t[i])
            e_p += float(np.abs(backward_warp(p[i], flow) - p[i + 1]).mean())
            e_t += float(np.abs(backward_warp(t[i], flow) - t[i + 1]).mean())
        out.append(e_p / (p.shape[0] - 1))
        ref.append(e_t / (p.shape[0] - 1))
    return torch.tensor(out), torch.tensor(ref)


# ------------------------------------------------------------- learned perceptual metric

class _Blur(nn.Module):
    """Anti-aliased stride-2 downsampling: a fixed [1 2 1]^2 blur per channel (BlurPool)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        kernel = (a[:, None] * a[None, :]) / 16.0
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2,
                        groups=x.shape[1])


def _alexnet_layers(shift_tolerant: bool) -> tuple[list[nn.Module], list[int]]:
    """AlexNet's feature layers and the indices where the five compared stages end.

    The index layout is the one the published weight files use, so their state dicts load
    with ``strict=True`` (any mismatch is an error, never a silent random layer).
    """
    relu = lambda: nn.ReLU(inplace=False)  # noqa: E731
    if shift_tolerant:
        layers = [nn.Conv2d(3, 64, 11, stride=1, padding=2), _Blur(64), relu(),
                  nn.MaxPool2d(3, stride=1), _Blur(64), nn.Conv2d(64, 192, 5, padding=2), relu(),
                  nn.MaxPool2d(3, stride=1), _Blur(192), nn.Conv2d(192, 384, 3, padding=1),
                  relu(), nn.Conv2d(384, 256, 3, padding=1), relu(),
                  nn.Conv2d(256, 256, 3, padding=1), relu()]
        return layers, [3, 7, 11, 13, 15]
    layers = [nn.Conv2d(3, 64, 11, stride=4, padding=2), relu(), nn.MaxPool2d(3, stride=2),
              nn.Conv2d(64, 192, 5, padding=2), relu(), nn.MaxPool2d(3, stride=2),
              nn.Conv2d(192, 384, 3, padding=1), relu(), nn.Conv2d(384, 256, 3, padding=1),
              relu(), nn.Conv2d(256, 256, 3, padding=1), relu()]
    return layers, [2, 5, 8, 10, 12]


class _Trunk(nn.Module):
    def __init__(self, shift_tolerant: bool) -> None:
        super().__init__()
        layers, ends = _alexnet_layers(shift_tolerant)
        start = 0
        for k, end in enumerate(ends, start=1):
            self.add_module(f"slice{k}", nn.Sequential(OrderedDict(
                (str(i), layers[i]) for i in range(start, end))))
            start = end

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            feats.append(x)
        return feats


class _Lin(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(OrderedDict([("1", nn.Conv2d(channels, 1, 1, bias=False))]))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class PerceptualNet(nn.Module):
    """LPIPS (AlexNet trunk, learned per-channel weights): distance of deep features.

    ``shift_tolerant=True`` is ST-LPIPS (anti-aliased, stride-1 first layer), robust to the
    small misalignments that interpolated frames have. Build it with ``load_stlpips`` or
    ``load_lpips``: an instance without loaded weights is meaningless.
    """

    channels = (64, 192, 384, 256, 256)

    def __init__(self, shift_tolerant: bool) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = _Trunk(shift_tolerant)
        for k, c in enumerate(self.channels):
            self.add_module(f"lin{k}", _Lin(c))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """(B,) distances between image batches (B, 3, H, W) in [-1, 1]."""
        fa = self.net((a - self.shift) / self.scale)
        fb = self.net((b - self.shift) / self.scale)
        total = 0.0
        for k, (x, y) in enumerate(zip(fa, fb)):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{k}")((x - y) ** 2).mean(dim=(1, 2, 3))
        return total


def _load_state(net: PerceptualNet, state: dict[str, Tensor], source: str) -> PerceptualNet:
    """Load a published state dict strictly (the input scaling is a fixed constant)."""
    rename = {"scaling_layer.shift": "shift", "scaling_layer.scale": "scale"}
    merged = {k: v for k, v in net.state_dict().items() if k in ("shift", "scale")}
    merged.update({rename.get(k, k): v for k, v in state.items()})
    missing = sorted(set(net.state_dict()) - set(merged))
    unexpected = sorted(set(merged) - set(net.state_dict()))
    if missing or unexpected:
        raise MetricUnavailable(f"{source}: not an AlexNet LPIPS weight file (missing "
                                f"{missing[:3]}, unexpected {unexpected[:3]})")
    net.load_state_dict(merged, strict=True)
    return net.eval().requires_grad_(False)


def _stlpips_weights() -> Path | None:
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights/vST0.0/alex_shift_tolerant.pth"
    return path if path.is_file() else None


def load_stlpips() -> PerceptualNet:
    """ST-LPIPS (AlexNet) with the trained weights from the installed ``stlpips-pytorch``.

    Only the weight file is read (the package's own modules import torchvision, which is
    not installed); raises ``MetricUnavailable`` when the package is absent.
    """
    path = _stlpips_weights()
    if path is None:
        raise MetricUnavailable("stlpips: package 'stlpips-pytorch' (which ships the weights) "
                                "is not installed; pip install stlpips-pytorch")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return _load_state(PerceptualNet(shift_tolerant=True), state, f"stlpips ({path})")


def load_lpips(lpips_weights: str | Path | None,
               alexnet_weights: str | Path | None = None) -> PerceptualNet:
    """Standard LPIPS v0.1 (AlexNet) from local files, never downloaded.

    Either one file holding the whole LPIPS state dict (trunk ``net.slice*`` and linear
    layers ``lin*``, as ``torch.save(lpips.LPIPS(net="alex").state_dict())`` writes it), or
    the linear layers alone (``lpips/weights/v0.1/alex.pth``) plus ``alexnet_weights``, the
    ImageNet AlexNet state dict with keys ``features.<i>.*``.
    """
    for name, path in (("lpips weights", lpips_weights), ("alexnet weights", alexnet_weights)):
        if (path or name == "lpips weights") and not (path and Path(path).is_file()):
            raise MetricUnavailable(f"lpips: {name} not given or not found ({path}); standard "
                                    "LPIPS needs local weight files and is skipped")
    state = dict(torch.load(lpips_weights, map_location="cpu", weights_only=True))
    if alexnet_weights:
        trunk = torch.load(alexnet_weights, map_location="cpu", weights_only=True)
        where = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
        for key, value in trunk.items():
            parts = key.split(".")
            if parts[0] == "features" and int(parts[1]) in where:
                state[f"net.slice{where[int(parts[1])]}.{parts[1]}.{parts[2]}"] = value
    return _load_state(PerceptualNet(shift_tolerant=False), state, "lpips")


@torch.inference_mode()
def perceptual_distance(net: PerceptualNet, pred: Tensor, target: Tensor,
                        frames: Tensor | None = None, chunk: int = 8) -> Tensor:
    """(B,) mean per-frame perceptual distance (lower is better)."""
    def fn(p: Tensor, t: Tensor) -> Tensor:
        return torch.cat([net(a, b) for a, b in zip(p.split(chunk), t.split(chunk))])
    return _score_per_frame(fn, pred, target, frames)


# ----------------------------------------------------------------- distribution metrics

def load_torchscript_features(path: str | Path | None, name: str) -> torch.jit.ScriptModule:
    """A feature network for FID (Inception) or FVD (I3D) from a local TorchScript file."""
    if not path or not Path(path).is_file():
        raise MetricUnavailable(f"{name}: feature-network weights not given or not found "
                                f"({path}); {name} needs a local TorchScript file and is skipped")
    return torch.jit.load(str(path), map_location="cpu").eval()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (n, d).

    ``tr(sqrt(S_a S_b))`` is computed as the trace of the square root of the symmetric
    ``sqrt(S_a) S_b sqrt(S_a)``, which has the same eigenvalues and stays real.
    """
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise MetricUnavailable("frechet distance: needs at least two samples per set")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)

    def sqrtm(m: Tensor) -> Tensor:
        vals, vecs = torch.linalg.eigh(m)
        return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T

    root = sqrtm(cov_a)
    cross = torch.linalg.eigvalsh(root @ cov_b @ root).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross
    return float(value)
