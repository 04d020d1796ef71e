"""``flat_gate``: a residual model leaves the source's flat areas exactly as they are."""

from __future__ import annotations

import json

import pytest
import torch

from tcvbm.models import create, load_pretrained
from tcvbm.models.layers import local_range

from test_train import TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = {"unet": ("unet-tiny", TINY_MODEL), "dit": ("dit-tiny", {"depth": 1})}


def perturbed(arch: str, **params) -> torch.nn.Module:
    """A model whose zero-initialised output layer is not zero any more: it changes its input."""
    torch.manual_seed(0)
    name, base = ARCHS[arch]
    model = create(name, **base, **params).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def half_flat_clip() -> torch.Tensor:
    """(1, 3, 3, 16, 16): black on the left half, a random texture on the right half."""
    clip = torch.full((1, 3, 3, 16, 16), -1.0)
    clip[..., 8:] = torch.rand((1, 3, 3, 16, 8), generator=torch.Generator().manual_seed(2)) * 2 - 1
    return clip


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_flat_areas_come_back_exactly_and_textured_ones_are_changed(arch: str) -> None:
    source = half_flat_clip()
    x_t = source + 0.1 * torch.randn(source.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        gated = perturbed(arch, flat_gate=0.02)(x_t, 1.0, cond=source)
        plain = perturbed(arch)(x_t, 1.0, cond=source)
    # a 5x5 neighbourhood of a pixel two columns or more from the texture is all black
    assert torch.equal(gated[..., :6], source[..., :6])
    assert (plain[..., :6] - source[..., :6]).abs().max() > 1e-3
    torch.testing.assert_close(gated[..., 10:], plain[..., 10:])


def test_local_range_is_the_largest_spread_of_a_neighbourhood_over_channels() -> None:
    clip = torch.zeros(1, 2, 1, 9, 9)
    clip[0, 1, 0, 4, 4] = 0.5
    r = local_range(clip)
    assert r.shape == (1, 1, 1, 9, 9)
    assert torch.equal(r[0, 0, 0, 2:7, 2:7], torch.full((5, 5), 0.5))
    assert r[0, 0, 0, 1].abs().sum() == 0 and r[0, 0, 0, :, 1].abs().sum() == 0


def test_the_gate_is_saved_and_an_old_model_loads_without_it(tmp_path) -> None:
    model = perturbed("unet", flat_gate=0.02)
    model.save_pretrained(tmp_path / "gated")
    assert load_pretrained(tmp_path / "gated").config.flat_gate == 0.02
    perturbed("unet").save_pretrained(tmp_path / "old")
    config = tmp_path / "old" / "config.json"
    saved = json.loads(config.read_text())
    del saved["flat_gate"]  # as saved before the gate existed
    config.write_text(json.dumps(saved))
    assert load_pretrained(tmp_path / "old").config.flat_gate == 0.0


@pytest.mark.parametrize("params", [dict(flat_gate=-0.1), dict(flat_gate=0.02, conditional=False),
                                    dict(flat_gate=0.02, predict_residual=False)])
def test_a_gate_without_a_source_residual_to_scale_is_refused(params: dict) -> None:
    with pytest.raises(ValueError, match="flat_gate"):
        create("unet-tiny", **TINY_MODEL, **params)
