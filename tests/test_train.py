"""The training loop and bridge matching on CPU with a tiny UNet and tiny clips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset

from tcvbm.bridges import Bridge
from tcvbm.config import Config, load_config
from tcvbm.data import VideoFolder
from tcvbm.models import create, load_pretrained
from tcvbm.runs import load_bundle
from tcvbm.tasks import get_task
from tcvbm.train.loop import TrainingDiverged
from tcvbm.train.objectives import BridgeMatching, TimeSampler, Weighting
from tcvbm.train.run import fit_objective

# A 68k-parameter UNet: two levels, 8 base channels (about 0.05 s a step on one core).
TINY_MODEL = dict(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[1],
                  temporal_attention_levels=[1], head_dim=8, groups=4)
FRAMES, SIZE = 5, 8


pytestmark = pytest.mark.usefixtures("one_thread")


class Clips(torch.utils.data.Dataset):
    """Fixed random clips in [-1, 1] (a map-style dataset)."""

    def __init__(self, count: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.clips = torch.rand(count, 3, FRAMES, SIZE, SIZE, generator=g) * 2 - 1

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.clips[i]


def tiny_cfg(out: Path, steps: int, lr: float = 5e-3, **train: object) -> Config:
    cfg = Config()
    cfg.output_dir = str(out)
    cfg.data.num_frames, cfg.data.size = FRAMES, [SIZE, SIZE]
    cfg.optim.lr, cfg.optim.warmup_steps = lr, 5
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.log_every = steps, 4, 1
    cfg.train.checkpoint_every, cfg.train.progress = 1000, False
    cfg.eval.num_clips = 0
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


def bridge_matching(prior: str = "ar1", seed: int = 0) -> BridgeMatching:
    torch.manual_seed(seed)
    return BridgeMatching(create("unet-tiny", **TINY_MODEL), Bridge(FRAMES, prior=prior),
                          get_task("interp", factor=2), TimeSampler(), Weighting(), lr=5e-3)


@pytest.mark.parametrize("prior", ["ar1", "brownian"])
def test_tiny_model_overfits_one_clip(tmp_path: Path, prior: str) -> None:
    result = fit_objective(bridge_matching(prior), Clips(1), tiny_cfg(tmp_path, 80))
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < first / 10, (first, last)


def test_resumed_run_follows_uninterrupted_trajectory(tmp_path: Path, capsys) -> None:
    data = Clips(6)
    full = fit_objective(bridge_matching(), data,
                         tiny_cfg(tmp_path / "full", 12, checkpoint_every=4))

    class Interrupt(Exception):
        pass

    def stop_at_6(step: int, logs: dict) -> None:
        if step == 6:
            raise Interrupt

    cut = tiny_cfg(tmp_path / "cut", 12, checkpoint_every=4)
    with pytest.raises(Interrupt):
        fit_objective(bridge_matching(), data, cut, on_step=stop_at_6)
    resumed = fit_objective(bridge_matching(seed=2), data, cut)  # fresh weights: state from disk
    assert resumed.resumed_from == 4
    assert "Resuming from" in capsys.readouterr().out
    np.testing.assert_allclose(resumed.losses, full.losses[4:], rtol=1e-5, atol=1e-7)
    metrics = (tmp_path / "cut" / "metrics.jsonl").read_text()
    logged = [json.loads(line) for line in metrics.splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 13))
    ema_full = load_pretrained(tmp_path / "full" / "model").state_dict()
    ema_cut = load_pretrained(tmp_path / "cut" / "model").state_dict()
    for key, value in ema_full.items():
        torch.testing.assert_close(ema_cut[key], value, rtol=1e-5, atol=1e-6)


class SlowClips(Clips):
    """Clips that take ``delay`` seconds each to load, like a loader that cannot keep up."""

    def __init__(self, count: int, delay: float) -> None:
        super().__init__(count)
        self.delay = delay

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(self.delay)
        return super().__getitem__(i)


def test_logs_clips_per_second_and_time_waiting_for_data(tmp_path: Path) -> None:
    delay, batch = 0.05, 4
    fit_objective(bridge_matching(), SlowClips(4, delay), tiny_cfg(tmp_path, 4, log_every=2))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4]
    for r in logged:
        step_s, wait = r["perf/step_s"], r["perf/data_wait"]
        assert r["perf/clips_per_s"] == pytest.approx(batch / step_s)
        assert 0 < wait <= 1
        assert wait * step_s >= batch * delay  # the sleeps alone are this much waiting per step


def test_non_finite_losses_are_skipped_then_stop(tmp_path: Path) -> None:
    objective = bridge_matching()
    objective.weighting = lambda t: torch.full_like(t, float("nan"))  # type: ignore[assignment]
    with pytest.raises(TrainingDiverged, match=r"3 non-finite losses in a row.*max_bad_steps=3"):
        fit_objective(objective, Clips(2), tiny_cfg(tmp_path, 10, max_bad_steps=3))


def test_train_entry_point_on_video_files(tmp_path: Path, make_clip, capsys) -> None:
    from tcvbm.train.run import train

    for i in range(2):
        make_clip(tmp_path / "videos" / f"clip{i}.mp4", n=12, h=24, w=24, seed=i)
    overrides = [f"data.root={tmp_path / 'videos'}", f"output_dir={tmp_path / 'run'}",
                 "train.max_steps=3", "data.num_frames=5", "data.size=[16,16]",
                 "data.options={clips_per_video: 4}", "model.params=" + json.dumps(TINY_MODEL),
                 "train.checkpoint_every=2", "train.progress=false", "eval.num_clips=1",
                 "eval.steps=2"]
    result = train(load_config("interp-tiny", overrides))
    run = tmp_path / "run"
    assert result.step == 3 and (run / "config.yaml").is_file()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2", "checkpoint-3"]
    for name in ("grid.png", "sample-0.mp4", "metrics.json"):
        assert (run / "eval" / "step-3" / name).is_file()
    bundle = load_bundle(run)
    assert (bundle.kind, bundle.num_frames, bundle.size, bundle.steps) == ("bridge", 5, (16, 16), 2)
    assert bundle.task.to_config() == {"name": "interp", "factor": 2, "mode": "blend"}

    again = train(load_config("interp-tiny", overrides[:2] + ["train.max_steps=4"] + overrides[3:]))
    assert again.resumed_from == 3 and again.step == 4
    assert "Resuming from" in capsys.readouterr().out


def test_training_eval_scores_like_tcvbm_eval(tmp_path: Path, make_clip) -> None:
    """The evaluation logged by a run is the mean over its held-out clips of
    ``tcvbm.metrics.psnr`` (capped per-frame PSNR) of the exported model's samples and of the
    source, as the 8-bit frames a command writes, on clips spread over all windows of the
    held-out videos."""
    from tcvbm.data.visual import uint8_levels
    from tcvbm.metrics import psnr
    from tcvbm.model_fns import model_window_fn
    from tcvbm.train.run import train, training_eval

    for i in range(2):
        make_clip(tmp_path / "videos" / f"clip{i}.mp4", n=12, h=24, w=24, seed=i)
    cfg = load_config("interp-tiny", [
        f"data.root={tmp_path / 'videos'}", f"output_dir={tmp_path / 'run'}", "train.max_steps=2",
        "data.num_frames=5", "data.size=[16,16]", "model.params=" + json.dumps(TINY_MODEL),
        "train.progress=false", "eval.num_clips=3", "eval.steps=2"])
    train(cfg)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    figures = {k: v for r in map(json.loads, lines) if "eval/psnr" in r for k, v in r.items()}
    assert set(figures) == {"step", "eval/psnr", "eval/ssim", "eval/psnr_source",
                            "eval/ssim_source"}

    clips = training_eval(cfg).plan.read()  # type: ignore[union-attr]
    assert [name for name, _ in clips] == ["clip0@0", "clip1@0", "clip1@3"]  # of 8 windows
    bundle = load_bundle(tmp_path / "run")  # the EMA weights the final evaluation sampled with
    sample = model_window_fn(bundle, seed=cfg.seed)
    task, scored = bundle.task, ~bundle.task.known_frames(FRAMES)
    target = torch.stack([clip for _, clip in clips])
    observed = [task.degrade(clip[None]) for _, clip in clips]
    made = uint8_levels(torch.cat([sample(obs) for obs in observed]))  # the frames written
    source = uint8_levels(torch.cat([task.lift(obs, FRAMES) for obs in observed]))
    assert figures["eval/psnr"] == pytest.approx(float(psnr(made, target, scored).mean()), abs=1e-4)
    assert figures["eval/psnr_source"] == pytest.approx(float(psnr(source, target, scored).mean()),
                                                        abs=1e-4)


TWO_PROCESS_SCRIPT = """
import sys
import torch
sys.path.insert(0, {tests!r})
import test_train as t
from tcvbm.train.run import fit_objective
torch.set_num_threads(1)
cfg = t.tiny_cfg({out!r}, {steps}, batch_size=2, fsdp={fsdp})
fit_objective(t.bridge_matching(), {data}, cfg)
"""


def run_two_processes(tmp_path: Path, out: Path, steps: int, fsdp: bool = False,
                      data: str = "t.Clips(8)") -> None:
    """Train ``out`` for ``steps`` steps with 2 CPU processes (global batch 4).

    ``data``: the training set, a Python expression over this module imported as ``t``.
    """
    script = tmp_path / "two.py"
    script.write_text(textwrap.dedent(TWO_PROCESS_SCRIPT.format(
        tests=str(Path(__file__).parent), out=str(out), steps=steps, fsdp=fsdp, data=data)))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517",
                           str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


def assert_same_run(one: Path, two: Path, losses: list[float]) -> None:
    """``two`` logged the same losses as ``losses`` and exported the same model as ``one``."""
    logged = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["loss/model"] for r in logged if "loss/model" in r], losses,
                               rtol=1e-4, atol=1e-6)
    a = load_pretrained(one / "model").state_dict()
    b = load_pretrained(two / "model").state_dict()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=1e-4, atol=1e-5)


needs_torchrun = pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not available")


@needs_torchrun
def test_two_processes_match_one_at_same_global_batch(tmp_path: Path) -> None:
    one = fit_objective(bridge_matching(), Clips(8), tiny_cfg(tmp_path / "one", 5, batch_size=4))
    run_two_processes(tmp_path, tmp_path / "two", 5, fsdp=False)
    assert_same_run(tmp_path / "one", tmp_path / "two", one.losses)


def video_folder(root: str | Path) -> VideoFolder:
    """The videos under ``root`` as training clips: shuffled, two random crops a video."""
    return VideoFolder(root, FRAMES, SIZE, clips_per_video=2,
                       cache_dir=Path(root).parent / "cache")


class ShardsInterleaved(IterableDataset):
    """The clips ``world`` processes train on, each reading its own shard of ``dataset``, as
    one stream in global-batch order.

    At every step process ``r`` takes the next ``batch`` clips of its shard and puts them in
    slots ``[r batch, (r + 1) batch)`` of the global batch; a shard's clips that do not fill
    a batch are dropped and the next epoch starts. Every shard must hold the same number of
    batches, or the processes would leave an epoch at different steps.
    """

    def __init__(self, dataset: VideoFolder, world: int, batch: int) -> None:
        self.dataset, self.world, self.batch, self.epoch = dataset, world, batch, 0

    def set_shard(self, rank: int, world_size: int) -> None:
        if (rank, world_size) != (0, 1):
            raise ValueError("ShardsInterleaved stands for all the processes: read it in one")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[torch.Tensor]:
        shards = []
        for rank in range(self.world):
            self.dataset.set_shard(rank, self.world)
            self.dataset.set_epoch(self.epoch)
            clips = list(self.dataset)
            shards.append(clips[: len(clips) // self.batch * self.batch])
        if len({len(clips) for clips in shards}) != 1:
            raise ValueError(f"shards of {[len(c) for c in shards]} clips: not the same batches")
        for first in range(0, len(shards[0]), self.batch):
            for clips in shards:
                yield from clips[first: first + self.batch]


@needs_torchrun
def test_two_processes_reading_their_own_videos_match_one(tmp_path: Path, make_clip) -> None:
    """A VideoFolder shards itself: each of 2 processes streams its own videos (shuffled, two
    clips a video, over three epochs), and the run stops after step 3 and resumes from the
    data positions the processes saved. Losses and exported EMA model equal 1 process's on
    the clips in the order the 2 processes fill the global batch. (1 process over the folder
    itself trains on other clips at each step: the global batch depends on the process count.)
    """
    root = tmp_path / "videos"
    for i in range(4):
        make_clip(root / f"v{i}.mp4", n=9, h=16, w=16, seed=i)
    interleaved = ShardsInterleaved(video_folder(root), world=2, batch=2)
    clip_bytes = lambda clips: sorted(clip.numpy().tobytes() for clip in clips)  # noqa: E731
    assert clip_bytes(interleaved) == clip_bytes(video_folder(root))  # an epoch: the same clips
    one = fit_objective(bridge_matching(), interleaved, tiny_cfg(tmp_path / "one", 5, batch_size=4))
    data = f"t.video_folder({str(root)!r})"
    run_two_processes(tmp_path, tmp_path / "two", 3, data=data)
    run_two_processes(tmp_path, tmp_path / "two", 5, data=data)
    assert_same_run(tmp_path / "one", tmp_path / "two", one.losses)
    saved = tmp_path / "two" / "checkpoints" / "checkpoint-5"
    states = [json.loads((saved / f"data_state_{r}.json").read_text()) for r in range(2)]
    assert states == [{"epoch": 2, "batches": 1}] * 2  # step 5 took the first batch of epoch 2


@needs_torchrun
def test_fsdp_matches_one_process_and_resumes(tmp_path: Path) -> None:
    """Sharded over 2 processes: the same losses and exported EMA model as 1 process, also
    when the run stops at step 3 and resumes from its sharded checkpoint."""
    one = fit_objective(bridge_matching(), Clips(8), tiny_cfg(tmp_path / "one", 5, batch_size=4))
    run_two_processes(tmp_path, tmp_path / "fsdp", 3, fsdp=True)
    assert (tmp_path / "fsdp" / "checkpoints" / "checkpoint-3" / "sharded").is_dir()
    run_two_processes(tmp_path, tmp_path / "fsdp", 5, fsdp=True)
    assert_same_run(tmp_path / "one", tmp_path / "fsdp", one.losses)


def test_fsdp_needs_several_processes(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="multi-process"):
        fit_objective(bridge_matching(), Clips(8), tiny_cfg(tmp_path, 2, fsdp=True))
