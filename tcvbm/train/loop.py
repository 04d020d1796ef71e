"""The one training loop, shared by bridge matching and distillation.

An objective (see :mod:`tcvbm.train.objectives`) names its trainable networks and, for each
step, the one it updates. This loop gives each network an AdamW optimizer with warm-up and
cosine decay, runs the step's micro-batches under accelerate (DDP across processes,
or FSDP through :mod:`tcvbm.train.sharding`; bf16 or fp32, gradient accumulation and
clipping), keeps an EMA of the exported
network, skips non-finite steps, logs, evaluates, and checkpoints atomically so a run can
be resumed exactly: model, EMA, optimizers, schedulers, RNG states and the data position.

The data position: for a map-style dataset the global batch of step ``s`` is a pure function
of (seed, s) (:class:`StepBatches`), so a resumed run simply starts at the restored step;
a clip dataset that shards and shuffles itself (an ``IterableDataset``, such as
:class:`tcvbm.data.VideoFolder`) has its (epoch, batches taken) saved per process with
each checkpoint. Per-sample randomness is seeded by (seed, step, slot in the global batch)
either way (:class:`tcvbm.train.objectives.SampleRandom`).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from tcvbm.bridges import Bridge
from tcvbm.config import Config, save_config
from tcvbm.data.datasets import worker_options
from tcvbm.runs import (InferenceBundle, checkpoint_step, checkpoints_dir, latest_checkpoint,
                        list_checkpoints, model_dir, replace_dir, save_bundle)
from tcvbm.samplers import get_sampler, get_timesteps
from tcvbm.tasks import Task
from tcvbm.train import sharding
from tcvbm.train.objectives import LossOutput, SampleRandom, frozen

__all__ = ["fit", "FitResult", "StepBatches", "TrainingDiverged", "TrainerState",
           "evaluate_clips", "resolve_resume"]

METRICS_FILE = "metrics.jsonl"


class Objective(Protocol):
    kind: str
    export: str
    bridge: Bridge
    task: Task
    sampler: str
    steps: int
    lrs: dict[str, float]

    @property
    def trainables(self) -> dict[str, nn.Module]: ...
    def phase(self, step: int) -> str: ...
    def updates(self, phase: str, max_steps: int) -> int: ...
    def to(self, device: torch.device | str) -> "Objective": ...
    def enable_gradient_checkpointing(self) -> None: ...
    def frozen_in(self, phase: str) -> tuple[str, ...]: ...
    def loss(self, phase: str, nets: dict[str, nn.Module], x0: Tensor,
             rng: SampleRandom) -> LossOutput: ...


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row; the last good checkpoint is left in place."""


@dataclass
class TrainerState:
    """Counters saved with every checkpoint (registered with accelerate)."""

    step: int = 0
    bad_in_row: int = 0
    bad_total: int = 0

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


@dataclass
class FitResult:
    run_dir: Path
    step: int
    resumed_from: int | None
    losses: list[float] = field(default_factory=list)  # global mean loss of every step run here
    phases: list[str] = field(default_factory=list)


class StepBatches:
    """Batch sampler whose batches are a pure function of the step.

    Samples are consumed from an endless stream of epochs, each a permutation of the
    dataset seeded by (seed, epoch). Step ``s`` takes stream positions
    ``[s G, (s + 1) G)`` with ``G = batch * world * accum``; micro-batch ``m`` of process
    ``r`` takes the ``batch`` positions starting at ``s G + (m world + r) batch``. The slot
    of a sample (its position within the step) also seeds its randomness, so splitting the
    same global batch differently gives the same samples and the same draws.
    """

    def __init__(self, num_items: int, batch: int, world: int, rank: int, accum: int,
                 seed: int, start_step: int, max_steps: int) -> None:
        if num_items < 1:
            raise ValueError("dataset: it holds no clips")
        self.num_items, self.batch, self.world, self.rank = num_items, batch, world, rank
        self.accum, self.seed = accum, seed
        self.start_step, self.max_steps = start_step, max_steps
        self.group = batch * world * accum
        self._perms: dict[int, Tensor] = {}

    def index(self, position: int) -> int:
        epoch, k = divmod(position, self.num_items)
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(
                self.num_items, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))}
        return int(self._perms[epoch][k])

    def epoch(self, step: int) -> int:
        return step * self.group // self.num_items

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.accum):
                base = step * self.group
                first = base + (micro * self.world + self.rank) * self.batch
                yield [self.index(p) for p in range(first, first + self.batch)]

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.accum


def _collate(items: list) -> Tensor:
    clips = [item["video"] if isinstance(item, dict) else item for item in items]
    return torch.stack(clips)


class _Slots:
    """Where a process's samples sit in the step's global batch (they seed its randomness)."""

    def __init__(self, batch: int, world: int, rank: int, accum: int) -> None:
        self.batch, self.world, self.rank = batch, world, rank
        self.group = batch * world * accum

    def slots(self, micro: int) -> list[int]:
        first = (micro * self.world + self.rank) * self.batch
        return list(range(first, first + self.batch))


class _IndexStream(_Slots):
    """Micro-batches of a map-style dataset, a pure function of the step (:class:`StepBatches`)."""

    def __init__(self, dataset: Dataset, cfg: Config, world: int, rank: int, start_step: int) -> None:
        tc = cfg.train
        super().__init__(tc.batch_size, world, rank, tc.grad_accum)
        self.batches = StepBatches(len(dataset), tc.batch_size, world, rank, tc.grad_accum,  # type: ignore[arg-type]
                                   cfg.seed, start_step, tc.max_steps)
        self._it = iter(DataLoader(dataset, batch_sampler=self.batches, collate_fn=_collate,
                                   **worker_options(cfg.data.num_workers)))

    def next(self) -> Tensor:
        return next(self._it)

    def epoch(self, step: int) -> int:
        return self.batches.epoch(step)

    def state(self) -> dict[str, int]:
        return {}


class _ShardStream(_Slots):
    """Micro-batches of a clip dataset that shards and shuffles itself (an IterableDataset).

    Each process reads its own share of the videos (``set_shard``); epochs follow each
    other (``set_epoch``). The position (epoch, batches taken in it) is saved per process
    with every checkpoint; resuming re-opens that epoch and skips the batches taken.
    A step's global batch is every process's next ``batch_size`` clips of its own share, so
    unlike :class:`StepBatches` it depends on the process count: an epoch holds the same
    clips (up to the incomplete batches each process drops), but a step does not.
    """

    def __init__(self, dataset: Dataset, cfg: Config, world: int, rank: int,
                 state: dict[str, int] | None) -> None:
        tc = cfg.train
        super().__init__(tc.batch_size, world, rank, tc.grad_accum)
        self.dataset, self.workers = dataset, cfg.data.num_workers
        dataset.set_shard(rank, world)  # type: ignore[attr-defined]
        self.current = int((state or {}).get("epoch", 0))
        self.taken = int((state or {}).get("batches", 0))
        self._open(skip=self.taken)

    def _open(self, skip: int) -> None:
        self.dataset.set_epoch(self.current)  # type: ignore[attr-defined]
        self._it = iter(DataLoader(self.dataset, batch_size=self.batch, drop_last=True,
                                   collate_fn=_collate, **worker_options(self.workers)))
        for _ in range(skip):
            next(self._it)

    def next(self) -> Tensor:
        try:
            batch = next(self._it)
        except StopIteration:
            if self.taken == 0:
                raise ValueError(
                    f"data: this process's share of the dataset ({len(self.dataset)} clips) is "  # type: ignore[arg-type]
                    f"smaller than train.batch_size={self.batch}; raise "
                    "data.options.clips_per_video or lower the batch size") from None
            self.current, self.taken = self.current + 1, 0
            self._open(skip=0)
            return self.next()
        self.taken += 1
        return batch

    def epoch(self, step: int) -> int:
        return self.current

    def state(self) -> dict[str, int]:
        return {"epoch": self.current, "batches": self.taken}


def _data_stream(dataset: Dataset, cfg: Config, world: int, rank: int, start_step: int,
                 state: dict[str, int] | None) -> _IndexStream | _ShardStream:
    if isinstance(dataset, IterableDataset):
        return _ShardStream(dataset, cfg, world, rank, state)
    return _IndexStream(dataset, cfg, world, rank, start_step)


def _read_data_state(checkpoint: Path | None, rank: int) -> dict[str, int] | None:
    """This process's data position saved with ``checkpoint`` (None when there is none)."""
    if checkpoint is None:
        return None
    path = checkpoint / f"data_state_{rank}.json"
    if not path.is_file():
        warnings.warn(f"{path} is missing (was the run resumed with more processes?); "
                      "this process starts a fresh epoch", stacklevel=2)
        return None
    return json.loads(path.read_text())


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: a given path, or the run's latest (None if it has none)."""
    if resume is not None and resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise ValueError(f"resume: checkpoint {resume!r} does not exist")
        checkpoint_step(path)
        return path
    return latest_checkpoint(run_dir)


def _first_clips(dataset: Dataset | None, count: int) -> Tensor | None:
    """``count`` evaluation clips spread evenly over the held-out set (the same every time)."""
    if dataset is None or count == 0 or len(dataset) == 0:  # type: ignore[arg-type]
        return None
    n = len(dataset)  # type: ignore[arg-type]
    picks = sorted({int(i * n / count) for i in range(min(count, n))})
    return _collate([dataset[i] for i in picks])


def _psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB for clips in [-1, 1] (peak-to-peak 2)."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(4.0 / mse)


def _ssim(a: Tensor, b: Tensor) -> float:
    """Mean SSIM over frames for clips (B, C, N, H, W) in [-1, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    frames = lambda x: ((x.float() + 1) / 2).transpose(1, 2).flatten(0, 1)  # noqa: E731
    return float(ssim(frames(a), frames(b), data_range=1.0))


@torch.no_grad()
def evaluate_clips(bundle: InferenceBundle, clips: Tensor, out_dir: Path, fps: float,
                   seed: int = 0) -> dict[str, float]:
    """Sample ``clips``' sources with the bundle; write videos, a grid and metrics.

    PSNR/SSIM are measured on the frames the source does not carry (the in-between frames
    of interpolation; all frames otherwise), for the sample and for the source itself as
    the no-model baseline.
    """
    from tcvbm.data import save_grid_png, to_uint8, write_video

    device = next(bundle.model.parameters()).device
    x0 = clips.to(device)
    task_out = bundle.task(x0)
    x1, known = task_out.source, task_out.mask[0, 0, :, 0, 0]
    gen = torch.Generator(device).manual_seed(seed)
    sampler = get_sampler(bundle.sampler)
    sample = sampler(bundle.model_fn(x1, generator=gen), x1, bundle.bridge,
                     get_timesteps(bundle.steps, device=device), generator=gen)
    sample = sample.float().clamp(-1, 1)
    scored = ~known if bool((~known).any()) else torch.ones_like(known)
    metrics = {
        "psnr": _psnr(sample[:, :, scored], x0[:, :, scored]),
        "ssim": _ssim(sample[:, :, scored], x0[:, :, scored]),
        "psnr_source": _psnr(x1[:, :, scored], x0[:, :, scored]),
        "ssim_source": _ssim(x1[:, :, scored], x0[:, :, scored]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(x0.shape[0]):
        side = torch.cat([x1[i], sample[i], x0[i]], dim=-1).cpu()  # source | sample | target
        write_video(to_uint8(side), out_dir / f"sample-{i}.mp4", fps=fps)
        rows.append(side)
    save_grid_png(torch.stack(rows), out_dir / "grid.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


class _TBuckets:
    """Running loss sums per equal-width t bucket, for the logs."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sums = torch.zeros(count, dtype=torch.float64)
        self.nums = torch.zeros(count, dtype=torch.float64)

    def add(self, t: Tensor, loss: Tensor) -> None:
        idx = (t.double().cpu() * self.count).long().clamp(0, self.count - 1)
        self.sums.index_add_(0, idx, loss.double().cpu())
        self.nums.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))

    def pop(self, prefix: str) -> dict[str, float]:
        out = {}
        for k in range(self.count):
            if self.nums[k] > 0:
                lo, hi = k / self.count, (k + 1) / self.count
                out[f"{prefix}/t{lo:.2f}-{hi:.2f}"] = float(self.sums[k] / self.nums[k])
        self.sums.zero_()
        self.nums.zero_()
        return out


class _Throughput:
    """Where the training steps of one log window spent their wall time.

    ``perf/clips_per_s`` is what training consumes (global clips over the steps' wall time,
    checkpoints and evaluations excluded); ``perf/data_wait`` is the share of that time spent
    waiting for the loader. Near 0 the loader keeps up; well above 0 it is the bottleneck and
    more ``data.num_workers`` (or cheaper clips) would speed training up.
    """

    def __init__(self) -> None:
        self.steps, self.clips, self.seconds, self.waiting = 0, 0, 0.0, 0.0

    def add_step(self, started: float, clips: int) -> None:
        self.seconds += time.perf_counter() - started
        self.steps, self.clips = self.steps + 1, self.clips + clips

    def next_batch(self, stream: _IndexStream | _ShardStream) -> Tensor:
        started = time.perf_counter()
        batch = stream.next()
        self.waiting += time.perf_counter() - started
        return batch

    def pop(self) -> dict[str, float]:
        """The window's figures (none before its first step); starts the next window."""
        if self.steps == 0:
            return {}
        out = {"perf/clips_per_s": self.clips / self.seconds, "perf/step_s": self.seconds / self.steps,
               "perf/data_wait": self.waiting / self.seconds}
        self.steps, self.clips, self.seconds, self.waiting = 0, 0, 0.0, 0.0
        return out


def _ema_swapped(ema: EMAModel, module: nn.Module) -> contextlib.AbstractContextManager:
    """Temporarily load the EMA weights into ``module`` (for saving and evaluation)."""

    @contextlib.contextmanager
    def swap() -> Iterator[None]:
        params = list(module.parameters())
        ema.store(params)
        ema.copy_to(params)
        try:
            yield
        finally:
            ema.restore(params)

    return swap()


def fit(objective: Objective, train_set: Dataset, cfg: Config, eval_set: Dataset | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train ``objective`` on ``train_set`` as ``cfg`` says; return where it ended.

    Resumes from ``cfg.resume`` or, when that is unset, from the latest checkpoint in
    ``cfg.output_dir`` (and says so). ``on_step(step, logs)`` is called after every step on
    the main process (tests use it to interrupt a run).
    """
    tc, oc = cfg.train, cfg.optim
    run_dir = Path(cfg.output_dir)
    resume_from = resolve_resume(run_dir, cfg.resume)
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
    )
    main = accelerator.is_main_process
    device = accelerator.device
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    accelerator.init_trackers("tensorboard")

    names = list(objective.trainables)
    modules = [objective.trainables[n] for n in names]
    if tc.gradient_checkpointing:
        objective.enable_gradient_checkpointing()
    export_cls = type(objective.trainables[objective.export])  # before sharding renames it
    objective.to(device)
    if tc.fsdp:
        for m in modules:
            sharding.shard(m)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=objective.lrs[n], betas=tuple(oc.betas),
                                    weight_decay=oc.weight_decay, eps=oc.adam_eps)
                  for n, m in zip(names, modules)]
    schedulers = [get_cosine_schedule_with_warmup(
        opt, num_warmup_steps=oc.warmup_steps,
        num_training_steps=max(1, objective.updates(n, tc.max_steps)))
        for n, opt in zip(names, optimizers)]
    # Sharded modules are not handed to accelerate: it would wrap them in DDP.
    prepared = (*modules, *optimizers) if tc.fsdp else accelerator.prepare(*modules, *optimizers)
    wrapped = dict(zip(names, prepared[: len(names)]))
    optim = dict(zip(names, prepared[len(names):]))
    sched = dict(zip(names, schedulers))
    plain = {n: accelerator.unwrap_model(wrapped[n]) for n in names}
    export = plain[objective.export]
    ema = EMAModel(export.parameters(), decay=tc.ema_decay, min_decay=0.0,
                   use_ema_warmup=tc.ema_warmup, power=tc.ema_power)
    state = TrainerState()
    for obj in (*schedulers, state) if tc.fsdp else (*schedulers, ema, state):
        accelerator.register_for_checkpointing(obj)

    resumed = None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        if tc.fsdp:
            sharding.load(resume_from, plain, optim, ema)
        ema.to(device)
        resumed = state.step
        accelerator.print(f"Resuming from {resume_from} (step {state.step} of {tc.max_steps})")
        if main:
            _truncate_metrics(run_dir / METRICS_FILE, state.step)

    stream = _data_stream(train_set, cfg, accelerator.num_processes, accelerator.process_index,
                          state.step, _read_data_state(resume_from, accelerator.process_index))
    eval_clips = _first_clips(eval_set, cfg.eval.num_clips) if main else None
    result = FitResult(run_dir, state.step, resumed)
    buckets = {n: _TBuckets(cfg.loss.t_buckets) for n in names}
    window: dict[str, list[float]] = {}
    perf = _Throughput()
    bar = tqdm(total=tc.max_steps, initial=state.step, disable=not (main and tc.progress),
               desc="train", dynamic_ncols=True)

    def bundle(module: nn.Module) -> InferenceBundle:
        return InferenceBundle(module, objective.bridge, objective.task, cfg.data.num_frames,
                               tuple(cfg.data.size), objective.sampler, objective.steps,  # type: ignore[arg-type]
                               objective.kind)

    @contextlib.contextmanager
    def ema_module() -> Iterator[nn.Module | None]:
        """The exported network with EMA weights on the main process (None elsewhere).

        Collective: every process enters it. Sharded, the full EMA weights are gathered
        into a plain copy; otherwise the EMA is swapped into the network itself.
        """
        with _ema_swapped(ema, export):
            if not tc.fsdp:
                yield export if main else None
                return
            full = sharding.full_state_dict(export)
        copy = None
        if main:
            copy = export_cls.from_config(export.config)
            copy.load_state_dict(full)
            copy.to(device)
        yield copy

    def export_model() -> None:
        with ema_module() as module:
            if module is not None:
                save_bundle(model_dir(run_dir), module, objective.bridge, objective.task,
                            cfg.data.num_frames, cfg.data.size, objective.sampler,
                            objective.steps, objective.kind)
        accelerator.wait_for_everyone()

    def checkpoint() -> None:
        root = checkpoints_dir(run_dir)
        final = root / f"checkpoint-{state.step}"
        tmp = root / f".tmp-checkpoint-{state.step}"
        if main and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        if tc.fsdp:
            sharding.save(tmp, plain, optim, ema)
        (tmp / f"data_state_{accelerator.process_index}.json").write_text(json.dumps(stream.state()))
        accelerator.wait_for_everyone()
        if main:
            replace_dir(tmp, final)
            for old in list_checkpoints(run_dir)[: -tc.keep_checkpoints]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        export_model()

    def evaluate() -> None:
        if eval_set is None or cfg.eval.num_clips <= 0:
            return
        with ema_module() as module:
            if module is not None and eval_clips is not None:
                was_training = module.training
                module.eval()
                with accelerator.autocast():
                    metrics = evaluate_clips(bundle(module), eval_clips, run_dir / "eval" / f"step-{state.step}",
                                             cfg.eval.fps, cfg.seed)
                module.train(was_training)
                accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.step)
                _append_metrics(run_dir / METRICS_FILE, {"step": state.step, **{f"eval/{k}": v for k, v in metrics.items()}})
                bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        accelerator.wait_for_everyone()

    for m in modules:
        m.train()
    last_saved = state.step if resumed is not None else -1
    while state.step < tc.max_steps:
        started = time.perf_counter()
        phase = objective.phase(state.step)
        net, opt = wrapped[phase], optim[phase]
        nets = {n: (wrapped[n] if n == phase else plain[n]) for n in names}
        per_all, t_all, finite = [], [], True
        # Networks the step runs with autograd but does not update stay frozen until its
        # backward passes are done: checkpointed blocks are recomputed there.
        with frozen(*(nets[n] for n in objective.frozen_in(phase))):
            for micro in range(tc.grad_accum):
                x0 = perf.next_batch(stream).to(device, non_blocking=True)
                rng = SampleRandom(cfg.seed, state.step, stream.slots(micro), stream.group, device)
                sync = micro == tc.grad_accum - 1
                with (contextlib.nullcontext() if sync else accelerator.no_sync(net)):
                    with accelerator.autocast():
                        out = objective.loss(phase, nets, x0, rng)
                    per = accelerator.gather(out.per_sample.float().contiguous())
                    if not bool(torch.isfinite(per).all()):
                        finite = False  # every process sees the same gathered values: all agree
                        break
                    accelerator.backward(out.loss / tc.grad_accum)
                per_all.append(per)
                t_all.append(accelerator.gather(out.t.float().contiguous()))
        logs: dict[str, float] = {}
        if finite:
            state.bad_in_row = 0
            max_norm = oc.grad_clip if oc.grad_clip > 0 else float("inf")
            grad_norm = accelerator.clip_grad_norm_(net.parameters(), max_norm)
            opt.step()
            sched[phase].step()
            if phase == objective.export:
                ema.step(export.parameters())
            per_cat, t_cat = torch.cat(per_all), torch.cat(t_all)
            buckets[phase].add(t_cat, per_cat)
            loss_value = float(per_cat.mean())
            window.setdefault(f"loss/{phase}", []).append(loss_value)
            window.setdefault(f"grad_norm/{phase}", []).append(sharding.as_float(grad_norm))
            result.losses.append(loss_value)
        else:
            state.bad_in_row += 1
            state.bad_total += 1
            result.losses.append(float("nan"))
            accelerator.print(f"step {state.step}: non-finite loss, step skipped "
                      f"({state.bad_in_row} in a row, {state.bad_total} in all)")
        opt.zero_grad(set_to_none=True)
        result.phases.append(phase)
        if state.bad_in_row >= tc.max_bad_steps:
            last = latest_checkpoint(run_dir)
            accelerator.end_training()
            raise TrainingDiverged(
                f"training stopped at step {state.step}: {state.bad_in_row} non-finite losses in "
                f"a row (train.max_bad_steps={tc.max_bad_steps}); the last good checkpoint is "
                f"{last if last is not None else 'none (no checkpoint was written yet)'}; "
                "lower optim.lr or enable optim.grad_clip, then resume")
        state.step += 1
        perf.add_step(started, stream.group)
        bar.update(1)

        if state.step % tc.log_every == 0 or state.step == tc.max_steps:
            logs = {k: sum(v) / len(v) for k, v in window.items()}
            window.clear()
            for n in names:
                logs.update(buckets[n].pop(f"loss_t/{n}"))
                logs[f"lr/{n}"] = sched[n].get_last_lr()[0]
            logs.update(perf.pop())
            logs["skipped_steps"] = float(state.bad_total)
            logs["epoch"] = float(stream.epoch(state.step))
            stats = getattr(train_set, "stats", None)
            if callable(stats):
                logs["data/skipped_files"] = float(stats().get("skipped", 0))
            accelerator.log(logs, step=state.step)
            if main:
                _append_metrics(run_dir / METRICS_FILE, {"step": state.step, **logs})
                shown = {k.split("/")[-1]: f"{v:.4g}" for k, v in logs.items() if k.startswith("loss/")}
                if "perf/clips_per_s" in logs:
                    shown["clips/s"] = f"{logs['perf/clips_per_s']:.3g}"
                    shown["data wait"] = f"{logs['perf/data_wait']:.0%}"
                bar.set_postfix(shown)
        if state.step % tc.checkpoint_every == 0 or state.step == tc.max_steps:
            checkpoint()
            last_saved = state.step
        if cfg.eval.every and state.step % cfg.eval.every == 0 and state.step != tc.max_steps:
            evaluate()
        if on_step is not None and main:
            on_step(state.step, logs)

    if last_saved != state.step:
        checkpoint()
    evaluate()
    bar.close()
    accelerator.end_training()
    result.step = state.step
    return result


def _append_metrics(path: Path, record: dict[str, float]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past ``step``: a resumed run rewrites them, so the file stays one run."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))
