"""Export the EMA weights of one training checkpoint as a model folder, to score a run part-way.

    python tools/export_checkpoint.py RUN_DIR/checkpoints/checkpoint-600 -o OUT_DIR

A run's ``RUN_DIR/model`` holds the EMA weights of its latest checkpoint or its end; each
kept checkpoint holds the EMA of its own step, so a quality-against-steps curve needs no
second training run. The network's architecture and the bundle's task, bridge, size and
sampler are read from the run's ``model/`` (the checkpoint holds only weights); the EMA's
weights are loaded with ``weights_only=True`` and must match that network's parameters in
number and shape. Sharded (FSDP) checkpoints are not supported.
Any ``tcvbm`` command takes OUT_DIR as ``--model``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tcvbm.runs import load_bundle, save_bundle


def ema_weights(checkpoint: Path) -> list[torch.Tensor]:
    """The EMA's parameters, from the one accelerate custom state that holds them."""
    for path in sorted(checkpoint.glob("custom_checkpoint_*.pkl")):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "shadow_params" in state:
            return list(state["shadow_params"])
    raise SystemExit(f"{checkpoint}: no EMA state (custom_checkpoint_*.pkl with "
                     "shadow_params); is it a checkpoint of a run that was not sharded?")


def export(checkpoint: Path, out: Path) -> Path:
    weights = ema_weights(checkpoint)
    run_dir = checkpoint.parent.parent
    bundle = load_bundle(run_dir)  # raises, naming the folder, when the run saved no model
    params = list(bundle.model.parameters())
    if len(weights) != len(params) or any(w.shape != p.shape for w, p in zip(weights, params)):
        raise SystemExit(f"{checkpoint}: its EMA weights ({len(weights)} tensors) do not fit "
                         f"the network of {run_dir}/model ({len(params)} parameters)")
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)
    return save_bundle(out, bundle.model, bundle.bridge, bundle.task, bundle.num_frames,
                       bundle.size, bundle.sampler, bundle.steps, bundle.kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="RUN_DIR/checkpoints/checkpoint-N")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    if not args.checkpoint.is_dir():
        raise SystemExit(f"{args.checkpoint}: not a checkpoint folder")
    print(f"wrote {export(args.checkpoint, args.output)}")


if __name__ == "__main__":
    main()
