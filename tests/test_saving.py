"""Saved models (tcvbm.models.saving): the diffusers-style folder, written and read without
diffusers, the shipped weights read unchanged, clear errors for damaged or mismatched files."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tcvbm.models import DiTVideo, UNetVideo, create, load_pretrained
from tcvbm.models.saving import CONFIG_NAME, WEIGHTS_NAME
from tcvbm.runs import SHIPPED, WEIGHTS_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"unet": ("unet-tiny", {"base_channels": 8, "groups": 4, "head_dim": 8}),
        "dit": ("dit-tiny", {"hidden_size": 32, "depth": 2, "num_heads": 2})}


def tiny(arch: str, **overrides) -> UNetVideo | DiTVideo:
    """A tiny backbone with every parameter moved off its (often zero) initialisation."""
    name, options = TINY[arch]
    torch.manual_seed(0)
    model = create(name, **{**options, **overrides})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def named(path: Path) -> str:
    """A pattern matching ``path`` literally, for ``pytest.raises(match=...)``."""
    return re.escape(str(path))


def outputs(model: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, 3, 16, 24, generator=g) * 2 - 1
    k = model.config.noise_channels
    z = torch.randn(1, k, 3, 16, 24, generator=g) if k else None
    with torch.no_grad():
        return model(x, torch.tensor([0.3]), cond=x, noise=z)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_a_saved_model_loads_with_its_config_and_computes_what_it_did(arch: str,
                                                                     tmp_path: Path) -> None:
    model = tiny(arch)
    model.add_noise_channels(2)  # a config entry changed after construction is saved too
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert saved.pop("_class_name") == type(model).__name__
    assert saved == json.loads(json.dumps(dict(model.config)))
    for loaded in (type(model).from_pretrained(tmp_path), load_pretrained(tmp_path)):
        assert type(loaded) is type(model) and not loaded.training
        assert loaded.config == model.config and loaded.config.noise_channels == 2
        assert torch.equal(outputs(loaded), outputs(model))


def test_the_config_is_read_only_and_rebuilds_the_model() -> None:
    model = tiny("unet")
    config = model.config
    assert config.base_channels == config["base_channels"] == 8
    assert config.channel_mult == (1, 2, 2)
    assert getattr(config, "no_such_option", None) is None
    with pytest.raises(AttributeError, match="read-only"):
        config.base_channels = 16
    with pytest.raises(TypeError):
        config["base_channels"] = 16  # type: ignore[index]
    assert pickle.loads(pickle.dumps(config)) == config
    rebuilt = UNetVideo.from_config(config)
    assert rebuilt.config == config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    twin = copy.deepcopy(model)
    twin.add_noise_channels(1)
    assert twin.config.noise_channels == 1 and model.config.noise_channels == 0
    with pytest.raises(ValueError, match="widht"):
        UNetVideo.from_config({**config, "widht": 3})


LEGACY = Path(__file__).parent / "data" / "legacy-student"


@pytest.mark.parametrize("folder", [WEIGHTS_DIR / name for name in SHIPPED] + [LEGACY],
                         ids=[*SHIPPED, "legacy-student"])
def test_the_shipped_weights_load_unchanged(folder: Path) -> None:
    """Every config key saved is the model's, tensors load exactly. The legacy student (once
    shipped) was written by diffusers (``_diffusers_version`` in its config) and predates
    ``context_channels`` and ``fusion``, which take their defaults; the shipped folders are
    of this format."""
    saved = json.loads((folder / CONFIG_NAME).read_text())
    model = load_pretrained(folder)
    assert type(model).__name__ == saved["_class_name"] and not model.training
    assert {k: model.config[k] for k in saved if not k.startswith("_")} == \
        {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()
         if not k.startswith("_")}
    if "_diffusers_version" in saved:
        assert "fusion" not in saved
        assert model.config.context_channels == 0 and not model.config.fusion
    else:
        assert model.config.context_channels == saved["context_channels"]
        assert model.config.fusion == saved["fusion"]
    file = load_file(folder / WEIGHTS_NAME)
    state = model.state_dict()
    assert state.keys() == file.keys() and all(torch.equal(state[k], file[k]) for k in file)


def test_inference_imports_neither_diffusers_nor_training_libraries() -> None:
    """Importing diffusers costs more than a second (it imports torch._dynamo); accelerate
    and OmegaConf are for training and configs."""
    script = ("import sys\n"
              "import tcvbm.cli, tcvbm.models, tcvbm.pipeline, tcvbm.runs\n"
              "tcvbm.runs.load_bundle('default-interp')\n"
              "print(sorted(m for m in ('diffusers', 'accelerate', 'omegaconf') "
              "if m in sys.modules))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    tiny("unet").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("damage", [b"", b"not a safetensors file", "truncated"])
def test_a_damaged_weights_file_is_named(saved: Path, damage: bytes | str) -> None:
    weights = saved / WEIGHTS_NAME
    content = weights.read_bytes()
    weights.write_bytes(content[: len(content) // 2] if damage == "truncated" else damage)
    with pytest.raises(ValueError, match=f"{named(weights)}: cannot read the model weights"):
        load_pretrained(saved)


def test_a_missing_weights_file_is_named(saved: Path) -> None:
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(ValueError, match=f"{named(saved / WEIGHTS_NAME)}: cannot read"):
        load_pretrained(saved)


def test_weights_of_another_shape_are_named_with_the_file_and_the_tensor(saved: Path,
                                                                         tmp_path: Path) -> None:
    other = tiny("unet")
    other.add_noise_channels(1)  # one more input channel: conv_in.weight alone differs
    other.save_pretrained(tmp_path / "other")
    os.replace(tmp_path / "other" / WEIGHTS_NAME, saved / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=rf"{named(saved / WEIGHTS_NAME)}: 1 tensor\(s\) shaped "
                                         r"unlike the config beside them: conv_in.weight "
                                         r"\(8, 7, 3, 3\) \(config: \(8, 6, 3, 3\)\)$"):
        load_pretrained(saved)


def test_missing_and_unexpected_tensors_are_named(saved: Path) -> None:
    weights = saved / WEIGHTS_NAME
    state = load_file(weights)
    state["extra.weight"] = state.pop("conv_in.bias")
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"missing \['conv_in.bias'\], unexpected "
                                         r"\['extra.weight'\]"):
        load_pretrained(saved)


def test_a_config_that_does_not_fit_the_class_is_named(saved: Path) -> None:
    config = saved / CONFIG_NAME
    values = json.loads(config.read_text())
    with pytest.raises(ValueError, match=f"{named(config)}: holds a 'UNetVideo', not a DiTVideo"):
        DiTVideo.from_pretrained(saved)
    config.write_text(json.dumps({**values, "widht": 3}))
    with pytest.raises(ValueError, match=rf"{named(config)}: unknown UNetVideo option\(s\) "
                                         r"\['widht'\]"):
        load_pretrained(saved)
    config.write_text("{")
    with pytest.raises(ValueError, match=f"{named(config)}: not a saved model directory"):
        load_pretrained(saved)
