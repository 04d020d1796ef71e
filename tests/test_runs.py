"""Inference bundles: the generator noise drawn from the randomness passed in, atomic saves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tcvbm.bridges import Bridge
from tcvbm.models import create
from tcvbm.runs import draw_model_noise, load_bundle, save_bundle
from tcvbm.tasks import get_task
from tcvbm.train.objectives import SampleRandom

from test_train import TINY_MODEL


def noisy_model(k: int) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(noise_channels=k))


def test_model_noise_follows_the_generator_or_each_samples_stream() -> None:
    like = torch.zeros(2, 3, 5, 4, 6, dtype=torch.float64)
    z = draw_model_noise(noisy_model(2), like, torch.Generator().manual_seed(4))
    want = torch.randn(2, 2, 5, 4, 6, generator=torch.Generator().manual_seed(4),
                       dtype=torch.float64)
    assert torch.equal(z, want)
    pair = draw_model_noise(noisy_model(2), like, SampleRandom(1, 7, [0, 1], 2))
    alone = [draw_model_noise(noisy_model(2), like[i:i + 1], SampleRandom(1, 7, [i], 2))
             for i in range(2)]
    assert pair.shape == (2, 2, 5, 4, 6) and pair.dtype == torch.float64
    assert torch.equal(pair, torch.cat(alone)) and not torch.equal(pair[0], pair[1])
    assert draw_model_noise(noisy_model(0), like, torch.Generator()) is None


def save(model, where: Path) -> Path:
    return save_bundle(where, model, Bridge(5), get_task("interp", factor=2), 5, [8, 8],
                       "stochastic", 2, kind="generator")


def test_a_bundle_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    torch.manual_seed(0)
    first, second = create("unet-tiny", **TINY_MODEL), create("unet-tiny", **TINY_MODEL)
    where = tmp_path / "run" / "model"
    save(first, where)
    save(second, where)  # over an existing bundle
    assert [p.name for p in where.parent.iterdir()] == ["model"]
    loaded = load_bundle(where).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in second.state_dict().items())

    def fail(path) -> None:
        (Path(path) / "half-written").write_text("")
        raise OSError("disk full")

    second.save_pretrained = fail
    with pytest.raises(OSError, match="disk full"):
        save(second, where)
    assert [p.name for p in where.parent.iterdir()] == ["model"]
    assert not (where / "half-written").exists()
    assert load_bundle(where).steps == 2


REFERENCE = Path(__file__).parent / "data" / "shipped-model-outputs.pt"
LEGACY = Path(__file__).parent / "data" / "legacy-student"  # the first default's student


def test_bundles_saved_before_the_context_load_and_compute_what_they_did() -> None:
    """Bundles saved before context channels and fusion existed (``LEGACY``, once shipped as
    default-interp-student, written by diffusers; the reference also holds the first
    default-interp's outputs) load with both off and give the outputs recorded
    (``REFERENCE``) before either existed, on a fixed input."""
    reference = torch.load(REFERENCE, weights_only=True)
    for name, folder in (("default-interp-student", LEGACY),):
        want = reference[name]
        bundle = load_bundle(folder)
        assert bundle.model.config.context_channels == 0 and not bundle.model.config.fusion
        assert bundle.task.context_channels == 0
        g = torch.Generator().manual_seed(0)
        x_t, cond = (torch.rand(1, 3, 3, 16, 16, generator=g) * 2 - 1 for _ in range(2))
        k = bundle.model.config.noise_channels
        z = torch.randn(1, k, 3, 16, 16, generator=g) if k else None
        with torch.no_grad():
            out = bundle.model(x_t, torch.tensor([0.7]), cond=cond, noise=z)
        torch.testing.assert_close(out, want, atol=1e-6, rtol=0)


def test_a_bundle_keeps_its_task_context_and_its_model_fn_passes_it(tmp_path: Path) -> None:
    task = get_task("interp", factor=2, mode="flow", context=True)
    torch.manual_seed(0)
    model = create("unet-tiny", **TINY_MODEL, context_channels=task.context_channels,
                   fusion=True)
    save_bundle(tmp_path / "model", model, Bridge(5), task, 5, [16, 16], "posterior-mean", 1)
    bundle = load_bundle(tmp_path / "model")
    assert bundle.task == task and bundle.model.config.fusion
    x0 = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x1, context = task.prepare(task.degrade(x0), 5)
    with torch.no_grad():
        out = bundle.model_fn(x1, torch.Generator(), context)(x1, torch.ones(1))
    torch.testing.assert_close(out, x1, atol=1e-6, rtol=0)
