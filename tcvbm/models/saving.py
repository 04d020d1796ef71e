"""Saved models: a folder with ``config.json`` and ``diffusion_pytorch_model.safetensors``.

The layout is diffusers' (``config.json`` holds ``_class_name`` and the constructor's
arguments), so every model saved before reads unchanged, but diffusers is not imported:
importing it costs more than a second (its torch utilities import ``torch._dynamo``), more
than the rest of a short ``tcvbm interpolate``, for a few dozen lines of bookkeeping.

A class derives from :class:`SaveableModel` and decorates its ``__init__`` with
:func:`register_to_config`; its arguments then become ``model.config``, a read-only mapping
with attribute access that :meth:`SaveableModel.from_config` turns back into the model.
Weights are read with safetensors only (no pickle), checked key by key and shape by shape.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import safetensors.torch
from safetensors import SafetensorError
from torch import Tensor, nn

from tcvbm.atomic import AtomicPath

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "FrozenConfig", "SaveableModel", "check_init_args",
           "read_config", "register_to_config"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
Init = TypeVar("Init", bound=Callable[..., None])
Model = TypeVar("Model", bound="SaveableModel")


def _frozen(value: Any) -> Any:
    """``value`` with every list made a tuple, so a config cannot be changed in place."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


class FrozenConfig(Mapping[str, Any]):
    """A model's constructor arguments: read-only, by key or by attribute (``config.depth``)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", {k: _frozen(v) for k, v in values.items()})

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"the model config has no {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a model config is read-only: use model.register_to_config")

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return FrozenConfig, (dict(self._values),)

    def __repr__(self) -> str:
        return f"FrozenConfig({self._values!r})"


def check_init_args(cls: type, kwargs: Mapping[str, Any], source: str) -> None:
    """Refuse keys of ``kwargs`` that ``cls.__init__`` does not take, naming ``source``."""
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} option(s) {unknown}; "
                         f"valid: {sorted(allowed)}")


def register_to_config(init: Init) -> Init:
    """Decorate ``__init__`` so that its arguments, defaults filled in, become the config."""

    @functools.wraps(init)
    def wrapper(self: SaveableModel, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = inspect.signature(init).bind(self, *args, **kwargs)
        bound.apply_defaults()
        self.register_to_config(**{k: v for k, v in bound.arguments.items() if k != "self"})

    return wrapper  # type: ignore[return-value]


def read_config(path: Path) -> dict[str, Any]:
    """The mapping in a saved model's ``config.json``."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a saved model directory: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a model config is a JSON object, got {type(values).__name__}")
    return values


def _read_weights(path: Path, expected: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of ``path``, which must hold exactly the keys and shapes of ``expected``."""
    try:
        state = safetensors.torch.load_file(path)
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{path}: cannot read the model weights: {err}") from err
    missing, unexpected = sorted(expected.keys() - state), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: the weights do not match the config beside them: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]} "
                         f"({len(missing)} and {len(unexpected)} in all)")
    wrong = [f"{k} {tuple(state[k].shape)} (config: {tuple(v.shape)})"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: {len(wrong)} tensor(s) shaped unlike the config beside "
                         f"them: {', '.join(wrong[:5])}")
    return state


class SaveableModel(nn.Module):
    """A module with a recorded config that it saves and loads as a diffusers-style folder."""

    @property
    def config(self) -> FrozenConfig:
        return self._config

    def register_to_config(self, **values: Any) -> None:
        """Set config entries (a constructor's, or one a method changed, e.g. a width)."""
        self._config = FrozenConfig({**getattr(self, "_config", {}), **values})

    @classmethod
    def from_config(cls: type[Model], config: Mapping[str, Any],
                    source: str = "config") -> Model:
        """A freshly initialised model from a config; unknown keys are refused."""
        check_init_args(cls, config, source)
        return cls(**config)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and the weights into ``directory``, each file atomically.

        The weights go first, so a folder whose config exists has its weights.
        """
        directory = Path(directory)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        with AtomicPath(directory / WEIGHTS_NAME) as staged:
            safetensors.torch.save_file(state, staged, metadata={"format": "pt"})
        config = {"_class_name": type(self).__name__, **self.config}
        with AtomicPath(directory / CONFIG_NAME) as staged:
            staged.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls: type[Model], directory: str | Path) -> Model:
        """The model saved in ``directory``, in eval mode.

        Entries of the config that start with ``_`` (``_class_name``, diffusers'
        ``_diffusers_version``) describe the file; arguments it lacks take their defaults
        (older models predate them). The model is built, then the file's tensors are copied
        into its own parameters: tensors read from a file are views at arbitrary byte
        offsets, and unaligned storage sends CPU kernels down other SIMD paths, which
        changes outputs in the last bits.
        """
        path = Path(directory) / CONFIG_NAME
        values = read_config(path)
        if values.get("_class_name") != cls.__name__:
            raise ValueError(f"{path}: holds a {values.get('_class_name')!r}, not a "
                             f"{cls.__name__}")
        model = cls.from_config({k: v for k, v in values.items() if not k.startswith("_")},
                                str(path))
        model.load_state_dict(_read_weights(Path(directory) / WEIGHTS_NAME, model.state_dict()))
        return model.eval()
