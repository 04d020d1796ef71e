"""Build backbones by name, from a YAML file, or from a saved directory.

The named configurations are the YAML files in ``models/`` of the shipped configs (the
repository's ``configs/models/``, installed as part of ``tcvbm.configs``: see
:func:`tcvbm.config.shipped_config_dir`). A YAML config holds ``arch`` (``unet`` or ``dit``)
and the constructor arguments of that architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .dit import DiTVideo
from .layers import VideoBackbone
from .saving import CONFIG_NAME, check_init_args, read_config
from .unet import UNetVideo

ARCHITECTURES: dict[str, type[VideoBackbone]] = {"unet": UNetVideo, "dit": DiTVideo}
_CLASSES: dict[str, type[VideoBackbone]] = {cls.__name__: cls for cls in ARCHITECTURES.values()}


def model_config_dir() -> Path:
    """The folder of the shipped model configs.

    :mod:`tcvbm.config` is imported here, not with this module: it brings OmegaConf, which
    loading saved weights (every inference command) does not need.
    """
    from ..config import CONFIG_DIR

    return CONFIG_DIR / "models"


def available_models() -> list[str]:
    """Names accepted by :func:`create` (the stems of the shipped YAML configs)."""
    return sorted(p.stem for p in model_config_dir().glob("*.yaml"))


def from_yaml(path: str | Path, **overrides: Any) -> VideoBackbone:
    """A freshly initialised backbone from a YAML config, with keyword ``overrides`` applied."""
    import yaml  # here: loading saved weights needs no YAML

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read model config: {err}") from err
    if not isinstance(spec, dict) or spec.get("arch") not in ARCHITECTURES:
        raise ValueError(f"{path}: a model config is a mapping with 'arch' in "
                         f"{sorted(ARCHITECTURES)}")
    spec = dict(spec)
    cls = ARCHITECTURES[spec.pop("arch")]
    check_init_args(cls, spec, str(path))
    check_init_args(cls, overrides, "overrides")
    return cls(**{**spec, **overrides})


def load_pretrained(path: str | Path) -> VideoBackbone:
    """Load a directory written by ``save_pretrained``; the class is read from its config."""
    config = Path(path) / CONFIG_NAME
    class_name = read_config(config).get("_class_name")
    if class_name not in _CLASSES:
        raise ValueError(f"{config}: unknown model class {class_name!r}; known: {sorted(_CLASSES)}")
    return _CLASSES[class_name].from_pretrained(path)


def create(name_or_path: str | Path, **overrides: Any) -> VideoBackbone:
    """A backbone from a config name (see :func:`available_models`), a YAML path or a saved dir.

    ``overrides`` replace config entries (for example ``conditional=False``); they are refused
    for saved directories, whose weights fix the architecture.
    """
    names = available_models()
    if str(name_or_path) in names:
        return from_yaml(model_config_dir() / f"{name_or_path}.yaml", **overrides)
    path = Path(name_or_path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        if overrides:
            raise ValueError(f"{path}: overrides {sorted(overrides)} cannot be applied to saved "
                             "weights")
        return load_pretrained(path)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return from_yaml(path, **overrides)
    raise ValueError(
        f"name_or_path {str(name_or_path)!r} is neither a model name {names}, "
        "a YAML config file, nor a directory saved with save_pretrained"
    )
