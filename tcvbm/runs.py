"""Run directories and inference bundles: the one place that knows their layout.

A run directory holds::

    RUN_DIR/config.yaml                     the resolved config of the run
    RUN_DIR/checkpoints/checkpoint-<step>/  accelerate state (written to a tmp dir, then renamed)
    RUN_DIR/model/                          latest EMA weights (save_pretrained) + tcvbm.json
    RUN_DIR/metrics.jsonl                   one JSON line per logged step (loss, lr, ...)
    RUN_DIR/eval/step-<step>/               sample videos, a grid picture, metrics.json

``tcvbm.json`` describes how to run the weights next to it: the kind of model (a bridge
model run by a sampler for any number of steps, or a distilled generator with its own
step count), the task, the bridge, the clip shape and the default sampler. Everything that
runs a trained model (pipeline, evaluation, the command line) goes through
:func:`load_bundle`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from tcvbm.atomic import AtomicPath
from tcvbm.bridges import Bridge
from tcvbm.tasks import Task, task_from_config

if TYPE_CHECKING:
    from tcvbm.train.objectives import SampleRandom

__all__ = ["InferenceBundle", "save_bundle", "load_bundle", "draw_model_noise", "BUNDLE_FILE",
           "KINDS", "SHIPPED", "WEIGHTS_DIR", "bundle_dir", "model_dir", "checkpoints_dir",
           "list_checkpoints", "latest_checkpoint", "checkpoint_step"]

BUNDLE_FILE = "tcvbm.json"
KINDS = ("bridge", "generator")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = ("default-interp", "default-vsr")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

ModelFn = Callable[[Tensor, Tensor], Tensor]


def model_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "model"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_step(path: str | Path) -> int:
    """The step a ``checkpoint-<step>`` directory was saved at."""
    match = _CHECKPOINT.match(Path(path).name)
    if match is None:
        raise ValueError(f"checkpoint: {str(path)!r} is not a checkpoint-<step> directory")
    return int(match.group(1))


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (tmp directories of a crash are ignored)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def draw_model_noise(model: nn.Module, like: Tensor,
                     random: torch.Generator | SampleRandom) -> Tensor | None:
    """Fresh noise ``z`` for a generator's extra input channels (None for a plain model).

    The one place such noise is drawn, always from the randomness passed in and never from
    torch's global generator, so every output can be reproduced from its seed: inference
    passes the sampler's ``torch.Generator``, training a
    :class:`~tcvbm.train.objectives.SampleRandom`, which draws each sample's ``z`` from that
    sample's own stream. ``like`` is the model's ``x_t`` (B, C, N, H, W); ``z`` is
    (B, noise_channels, N, H, W) on its device and in its dtype.
    """
    k = int(getattr(model.config, "noise_channels", 0) or 0)
    if k == 0:
        return None
    per_sample = (k, *like.shape[2:])
    if isinstance(random, torch.Generator):
        z = torch.randn((like.shape[0], *per_sample), generator=random, device=random.device,
                        dtype=like.dtype)
    else:
        z = random.randn(*per_sample)
    return z.to(device=like.device, dtype=like.dtype)


@dataclass
class InferenceBundle:
    """A trained model with everything needed to run it on a source clip."""

    model: nn.Module
    bridge: Bridge
    task: Task
    num_frames: int
    size: tuple[int, int]
    sampler: str
    steps: int
    kind: str

    def model_fn(self, x1: Tensor, generator: torch.Generator,
                 context: Tensor | None = None) -> ModelFn:
        """``model_fn(x_t, t) -> x0_hat`` for the samplers, bound to the source ``x1`` and
        the ``context`` that the bundle's task prepared with it
        (:meth:`tcvbm.tasks.Task.prepare`; None for a task without one).

        A distilled generator gets a fresh noise ``z`` from ``generator`` at every call,
        exactly as it was trained; pass the sampler the same ``generator`` and one seed
        fixes the whole sample.
        """
        model = self.model

        def fn(x_t: Tensor, t: Tensor) -> Tensor:
            return model(x_t, t, cond=x1, context=context,
                         noise=draw_model_noise(model, x_t, generator))

        return fn

    def to(self, device: torch.device | str) -> "InferenceBundle":
        self.model.to(device)
        return self


def save_bundle(dir: str | Path, model: nn.Module, bridge: Bridge, task: Task, num_frames: int,
                size: tuple[int, int] | list[int], sampler: str, steps: int,
                kind: str = "bridge") -> Path:
    """Write ``model`` (save_pretrained) and its ``tcvbm.json`` to ``dir``, atomically."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    meta = {"kind": kind, "task": task.to_config(), "bridge": bridge.to_config(),
            "num_frames": int(num_frames), "size": [int(s) for s in size],
            "sampler": sampler, "steps": int(steps)}
    with AtomicPath(dir, directory=True) as staged:
        model.save_pretrained(staged)
        (staged / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(dir)


def bundle_dir(path: str | Path) -> Path:
    """Resolve a run directory, a model directory or a shipped name to the model directory."""
    name = str(path)
    if name in SHIPPED and not Path(name).exists():
        shipped = WEIGHTS_DIR / name
        if not (shipped / BUNDLE_FILE).is_file():
            raise ValueError(
                f"model: the shipped model {name!r} is not installed (expected {shipped}); "
                "train one with `tcvbm train` and pass its run directory instead")
        return shipped
    path = Path(path)
    if (path / BUNDLE_FILE).is_file():
        return path
    if (model_dir(path) / BUNDLE_FILE).is_file():
        return model_dir(path)
    if not path.exists():
        raise ValueError(f"model: {name!r} does not exist (expected a run directory, a model "
                         f"directory or one of {SHIPPED})")
    raise ValueError(f"model: {name!r} holds no {BUNDLE_FILE} (nor model/{BUNDLE_FILE}); "
                     "is it a run directory that has not saved a model yet?")


def load_bundle(path: str | Path, device: torch.device | str | None = None) -> InferenceBundle:
    """Load a run directory, a model directory or a shipped default name for inference."""
    from tcvbm.models import load_pretrained

    where = bundle_dir(path)
    try:
        meta = json.loads((where / BUNDLE_FILE).read_text())
        kind = meta["kind"]
        bridge = Bridge.from_config(meta["bridge"])
        task = task_from_config(meta["task"])
        num_frames, size = int(meta["num_frames"]), tuple(int(s) for s in meta["size"])
        sampler, steps = str(meta["sampler"]), int(meta["steps"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"model: {where / BUNDLE_FILE} is malformed: {err!r}") from None
    if kind not in KINDS:
        raise ValueError(f"model: {where / BUNDLE_FILE} has unknown kind {kind!r}")
    model = load_pretrained(where).eval()
    if device is not None:
        model.to(device)
    return InferenceBundle(model, bridge, task, num_frames, size, sampler, steps, kind)  # type: ignore[arg-type]
