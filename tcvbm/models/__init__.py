"""Spatio-temporal x0-predicting backbones (UNet and DiT) on clips ``(B, C, N, H, W)``.

    from tcvbm.models import create
    model = create("dit-small")                      # or "unet-tiny", a YAML path, a saved dir
    x0_hat = model(x_t, t, cond=x1, noise=z)         # output shaped like x_t
"""

from .attention import Attention, dot_product_attention, select_kernel
from .dit import DiTVideo
from .layers import VideoBackbone
from .registry import available_models, create, from_yaml, load_pretrained
from .unet import UNetVideo

__all__ = [
    "Attention",
    "DiTVideo",
    "UNetVideo",
    "VideoBackbone",
    "available_models",
    "create",
    "dot_product_attention",
    "from_yaml",
    "load_pretrained",
    "select_kernel",
]
