"""Fully sharded data parallel training (``train.fsdp=true``): PyTorch's FSDP2 per block.

Each process then holds a 1/world shard of every trainable network, of its optimizer state
and of its EMA; a block's full weights exist only while it runs. The loop keeps its
single-process shape because the pieces that differ live here:

- :func:`shard` splits a backbone block by block (every entry of its top-level
  ``ModuleList``s), then the remaining root parameters;
- :func:`save` / :func:`load` write and read the shards of models, optimizers and EMA with
  ``torch.distributed.checkpoint`` (every process writes its own shards, so nothing has to
  fit on one process and a checkpoint can be resumed on the same number of processes);
- :func:`full_state_dict` gathers full weights (collectively) for the exported model.

accelerate still launches the processes, seeds them and saves RNG, scheduler and loop
state; it does not wrap sharded modules. This is torch's own ``fully_shard``, which runs on
CPU (gloo) as on GPU (NCCL), so the same code is tested on CPU; accelerate's FSDP plugin
refuses CPU processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from diffusers.training_utils import EMAModel
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

SHARDS_DIR = "sharded"
EMA_COUNTERS = "ema_counters.json"


def shard(module: nn.Module) -> None:
    """Shard ``module`` in place: each block of its top-level ``ModuleList``s, then the rest.

    Per-block units let FSDP gather one block's weights at a time (memory) and overlap that
    gather with the previous block's compute. Build optimizers *after* this call: the
    parameters are replaced by sharded ``DTensor`` parameters.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("train.fsdp=true needs a multi-process launch (accelerate launch or "
                           "torchrun); a single process has nothing to shard across")
    blocks = [block for child in module.children() if isinstance(child, nn.ModuleList)
              for block in child if any(True for _ in block.parameters())]
    for block in blocks:
        fully_shard(block)
    fully_shard(module)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU weights of a sharded ``module`` on rank 0, ``{}`` elsewhere.

    Collective: every process must call it.
    """
    return get_model_state_dict(module,
                                options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def as_float(value: torch.Tensor) -> float:
    """A scalar that may be a ``DTensor`` (e.g. a gradient norm over sharded gradients)."""
    return float(value.full_tensor() if isinstance(value, DTensor) else value)


def _state(modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
           ema: EMAModel) -> dict[str, object]:
    state: dict[str, object] = {}
    for name, module in modules.items():
        state[f"model.{name}"], state[f"optim.{name}"] = get_state_dict(module, optimizers[name])
    state["ema"] = {str(i): p for i, p in enumerate(ema.shadow_params)}
    return state


def save(directory: Path, modules: dict[str, nn.Module],
         optimizers: dict[str, torch.optim.Optimizer], ema: EMAModel) -> None:
    """Write every process's shards of models, optimizers and EMA under ``directory``."""
    dcp.save(_state(modules, optimizers, ema), checkpoint_id=str(directory / SHARDS_DIR))
    if dist.get_rank() == 0:
        counters = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
        (directory / EMA_COUNTERS).write_text(json.dumps(counters))


def load(directory: Path, modules: dict[str, nn.Module],
         optimizers: dict[str, torch.optim.Optimizer], ema: EMAModel) -> None:
    """Restore what :func:`save` wrote into the (already sharded) modules, optimizers and EMA."""
    shards = directory / SHARDS_DIR
    if not shards.is_dir():
        raise FileNotFoundError(f"{directory}: no {SHARDS_DIR}/ folder; this checkpoint was not "
                                "written with train.fsdp=true (resume it with train.fsdp=false)")
    state = _state(modules, optimizers, ema)
    dcp.load(state, checkpoint_id=str(shards))  # EMA shadows are filled in place
    for name, module in modules.items():
        set_state_dict(module, optimizers[name], model_state_dict=state[f"model.{name}"],
                       optim_state_dict=state[f"optim.{name}"])
    ema.load_state_dict(json.loads((directory / EMA_COUNTERS).read_text()))
