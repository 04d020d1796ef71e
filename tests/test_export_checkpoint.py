"""tools/export_checkpoint.py: a checkpoint's EMA weights as a model folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tcvbm.runs import load_bundle
from tcvbm.train.run import fit_objective

from test_train import Clips, bridge_matching, tiny_cfg

EXPORT = Path(__file__).resolve().parents[1] / "tools" / "export_checkpoint.py"
pytestmark = pytest.mark.usefixtures("one_thread")


def export(checkpoint: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXPORT), str(checkpoint), "-o", str(out)],
                          capture_output=True, text=True)


def weights(model_dir: Path) -> list[torch.Tensor]:
    return [p.detach().clone() for p in load_bundle(model_dir).model.parameters()]


def test_last_checkpoint_exports_the_saved_model_and_an_earlier_one_differs(
        tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit_objective(bridge_matching(), Clips(4), tiny_cfg(run, 8, checkpoint_every=4,
                                                        keep_checkpoints=2))
    done = export(run / "checkpoints" / "checkpoint-8", tmp_path / "at-8")
    assert done.returncode == 0, done.stderr
    saved, at_8 = weights(run / "model"), weights(tmp_path / "at-8")
    assert all(torch.equal(a, b) for a, b in zip(saved, at_8))
    assert export(run / "checkpoints" / "checkpoint-4", tmp_path / "at-4").returncode == 0
    at_4 = weights(tmp_path / "at-4")
    assert not all(torch.equal(a, b) for a, b in zip(saved, at_4))
    meta = load_bundle(tmp_path / "at-4")
    assert (meta.kind, meta.num_frames) == (load_bundle(run).kind, load_bundle(run).num_frames)


def test_a_folder_without_ema_state_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    done = export(tmp_path / "run" / "checkpoints" / "checkpoint-1", tmp_path / "out")
    assert done.returncode != 0 and "no EMA state" in done.stderr
