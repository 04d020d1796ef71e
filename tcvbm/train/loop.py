"""The one training loop, shared by bridge matching and distillation.

An objective (see :mod:`tcvbm.train.objectives`) names its trainable networks and, for each
step, the one it updates. :func:`fit` gives each network an AdamW optimizer with warm-up and
cosine decay, runs the step's micro-batches under accelerate (DDP across processes, or FSDP
through :mod:`tcvbm.train.sharding`; bf16 or fp32, gradient accumulation and clipping),
keeps an EMA of the exported network, skips non-finite steps, logs
(:mod:`tcvbm.train.logs`), evaluates, and checkpoints atomically so a run can be resumed
exactly: model, EMA, optimizers, schedulers, RNG states and the data position
(:mod:`tcvbm.train.streams`). Per-sample randomness is seeded by (seed, step, slot in the
global batch) (:class:`tcvbm.train.objectives.SampleRandom`).

The loop takes built objects, never a config: :mod:`tcvbm.train.run` makes them from one.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from tcvbm.atomic import replace_dir
from tcvbm.bridges import Bridge
from tcvbm.runs import (
    InferenceBundle,
    checkpoints_dir,
    latest_checkpoint,
    list_checkpoints,
    model_dir,
    save_bundle,
)
from tcvbm.tasks import Task
from tcvbm.train import sharding
from tcvbm.train.logs import LogSettings, LogWindow, MetricsFile, Throughput, progress_postfix
from tcvbm.train.objectives import LossOutput, SampleRandom, frozen
from tcvbm.train.streams import Batches, DataStream, data_stream, read_data_state, write_data_state

__all__ = ["fit", "FitResult", "TrainingDiverged", "TrainerState", "Objective", "Evaluation",
           "Optimization", "EMASettings", "AcceleratorOptions", "CheckpointPolicy"]


class Objective(Protocol):
    bundle_kind: str  # what the saved model is: one of tcvbm.runs.KINDS
    exported_network: str  # the trainable network saved as the model, with its EMA
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


class Evaluation(Protocol):
    """The periodic evaluation (:class:`tcvbm.evaluate.TrainingEval`): the figures of the
    exported network, with its EMA weights, at a step (the loop logs them as ``eval/<key>``)."""

    every: int  # steps between evaluations; 0: only the one after the last step

    def __call__(self, bundle: InferenceBundle, step: int,
                 device: torch.device) -> dict[str, float]: ...


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


@dataclass(frozen=True)
class Optimization:
    """AdamW per network with linear warm-up, then cosine decay to 0 over the network's
    updates; gradient clipping; how many non-finite losses in a row stop the run."""

    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max global gradient norm; 0: no clipping
    max_bad_steps: int = 5

    def optimizer(self, network: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(network.parameters(), lr=lr, betas=self.betas,
                                 weight_decay=self.weight_decay, eps=self.eps)

    def schedule(self, optimizer: torch.optim.Optimizer, updates: int) -> LambdaLR:
        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=self.warmup_steps,
                                               num_training_steps=max(1, updates))

    @property
    def max_norm(self) -> float:
        return self.grad_clip if self.grad_clip > 0 else float("inf")


@dataclass(frozen=True)
class EMASettings:
    """The EMA of the exported network; with ``warmup`` its decay is ``1 - (1 + step)^-power``,
    capped at ``decay``."""

    decay: float = 0.999
    warmup: bool = True
    power: float = 0.6667

    def average(self, network: nn.Module) -> EMAModel:
        return EMAModel(network.parameters(), decay=self.decay, min_decay=0.0,
                        use_ema_warmup=self.warmup, power=self.power)


@dataclass(frozen=True)
class AcceleratorOptions:
    """How the networks run: ``mixed_precision`` "no" or "bf16"; sharded with FSDP2
    (``fsdp``, several processes only); with gradient checkpointing."""

    mixed_precision: str = "no"
    fsdp: bool = False
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class CheckpointPolicy:
    """A checkpoint every ``every`` steps and after the last, the newest ``keep`` kept;
    ``resume_from``: the checkpoint the run continues from (None: it starts afresh)."""

    every: int = 500
    keep: int = 2
    resume_from: Path | None = None


class _ExportedEMA:
    """The exported network with its EMA weights, as the bundle that is saved and evaluated."""

    def __init__(self, objective: Objective, network: nn.Module, network_cls: type,
                 ema: EMAModel, num_frames: int, size: tuple[int, int], fsdp: bool,
                 main: bool, device: torch.device) -> None:
        self.objective, self.network, self.network_cls = objective, network, network_cls
        self.ema = ema
        self.num_frames, self.size = num_frames, size
        self.fsdp, self.main, self.device = fsdp, main, device

    def bundle(self, module: nn.Module) -> InferenceBundle:
        o = self.objective
        return InferenceBundle(module, o.bridge, o.task, self.num_frames, self.size, o.sampler,
                               o.steps, o.bundle_kind)

    @contextlib.contextmanager
    def _swapped(self) -> Iterator[None]:
        """The EMA weights loaded into the network for the block, its own weights after."""
        params = list(self.network.parameters())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    @contextlib.contextmanager
    def weights(self) -> Iterator[nn.Module | None]:
        """The network with EMA weights on the main process (None elsewhere).

        Collective: every process enters it. Sharded, the full EMA weights are gathered
        into a plain copy; otherwise the EMA is swapped into the network itself.
        """
        if not self.fsdp:
            with self._swapped():
                yield self.network if self.main else None
            return
        with self._swapped():
            full = sharding.full_state_dict(self.network)
        copy = None
        if self.main:
            copy = self.network_cls.from_config(self.network.config)
            copy.load_state_dict(full)
            copy.to(self.device)
        yield copy

    def save(self, run_dir: Path) -> None:
        with self.weights() as module:
            if module is not None:
                b = self.bundle(module)
                save_bundle(model_dir(run_dir), b.model, b.bridge, b.task, b.num_frames, b.size,
                            b.sampler, b.steps, b.kind)

    def evaluate(self, evaluation: Evaluation, step: int) -> dict[str, float] | None:
        """``evaluation``'s figures on the main process (None elsewhere); collective."""
        with self.weights() as module:
            if module is None:
                return None
            was_training = module.training
            figures = evaluation(self.bundle(module), step, self.device)
            module.train(was_training)
            return figures


def _accumulate(accelerator: Accelerator, objective: Objective, phase: str,
                nets: dict[str, nn.Module], stream: DataStream, perf: Throughput, seed: int,
                step: int, accum: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
    """Forward and backward passes of the step's micro-batches (gradients synced at the last).

    Returns the per-sample losses and times gathered from every process, or None as soon as
    one is not finite: every process sees the same gathered values, so all stop together.
    """
    losses, times = [], []
    # Networks the step runs with autograd but does not update stay frozen until its
    # backward passes are done: checkpointed blocks are recomputed there.
    with frozen(*(nets[n] for n in objective.frozen_in(phase))):
        for micro in range(accum):
            x0 = perf.next_batch(stream).to(device, non_blocking=True)
            rng = SampleRandom(seed, step, stream.slots(micro), stream.group, device)
            sync = micro == accum - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(nets[phase]):
                with accelerator.autocast():
                    out = objective.loss(phase, nets, x0, rng)
                per = accelerator.gather(out.per_sample.float().contiguous())
                if not bool(torch.isfinite(per).all()):
                    return None
                accelerator.backward(out.loss / accum)
            losses.append(per)
            times.append(accelerator.gather(out.t.float().contiguous()))
    return torch.cat(losses), torch.cat(times)


def _checkpoint(accelerator: Accelerator, run_dir: Path, step: int, keep: int,
                stream: DataStream, sharded: tuple | None) -> None:
    """Write ``checkpoints/checkpoint-<step>``, then drop all but the newest ``keep``.

    Every process writes its part (accelerate's state and RNG, its shards, its data position)
    into one staging folder whose name all of them know, ``.tmp-checkpoint-<step>``; the main
    process swaps it in whole once all are done (:func:`tcvbm.atomic.replace_dir`).
    """
    root = checkpoints_dir(run_dir)
    staged = root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process and staged.exists():
        shutil.rmtree(staged)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staged))
    if sharded is not None:
        sharding.save(staged, *sharded)
    write_data_state(staged, accelerator.process_index, stream)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(staged, root / f"checkpoint-{step}")
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def fit(objective: Objective, data: Dataset, run_dir: Path, *, max_steps: int, seed: int,
        num_frames: int, size: tuple[int, int], batches: Batches,
        optimization: Optimization = Optimization(), ema: EMASettings = EMASettings(),
        options: AcceleratorOptions = AcceleratorOptions(),
        checkpoints: CheckpointPolicy = CheckpointPolicy(),
        logging: LogSettings = LogSettings(), evaluation: Evaluation | None = None,
        write_config: Callable[[Path], None] | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train ``objective`` on ``data`` for ``max_steps`` steps in ``run_dir``; say where it ended.

    A run continues from ``checkpoints.resume_from`` exactly as if it had not stopped.
    ``num_frames`` and ``size`` are the clip shape the exported model (``run_dir/model``) is
    for. ``write_config(run_dir)`` runs once on the main process before training (it saves the
    run's config); ``on_step(step, logs)`` after every step on the main process (tests use it
    to interrupt a run).
    """
    accelerator = Accelerator(
        mixed_precision=options.mixed_precision,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(run_dir),
                                            logging_dir=str(run_dir / "logs")),
    )
    main, device = accelerator.is_main_process, accelerator.device
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if write_config is not None:
            write_config(run_dir)
    accelerator.init_trackers("tensorboard")

    # The networks, each with its optimizer and schedule, and the EMA of the exported one.
    names = list(objective.trainables)
    if options.gradient_checkpointing:
        objective.enable_gradient_checkpointing()
    # The exported network's class, taken before sharding renames it.
    export_cls = type(objective.trainables[objective.exported_network])
    objective.to(device)
    modules = [objective.trainables[n] for n in names]
    if options.fsdp:
        for m in modules:
            sharding.shard(m)
    optimizers = {n: optimization.optimizer(m, objective.lrs[n]) for n, m in zip(names, modules)}
    schedules = {n: optimization.schedule(optimizers[n], objective.updates(n, max_steps))
                 for n in names}
    # What computes a step's gradients: the network wrapped by accelerate (DDP reduces them
    # across processes), or the sharded network itself (accelerate would wrap it in DDP).
    prepared = dict(zip(names, modules))
    if not options.fsdp:
        handed = accelerator.prepare(*modules, *optimizers.values())
        prepared = dict(zip(names, handed[: len(names)]))
        optimizers = dict(zip(names, handed[len(names):]))
    networks = {n: accelerator.unwrap_model(prepared[n]) for n in names}
    averaged = ema.average(networks[objective.exported_network])
    state = TrainerState()
    # accelerate saves these with its own state; sharding.save writes the sharded EMA.
    for obj in (*schedules.values(), *(() if options.fsdp else (averaged,)), state):
        accelerator.register_for_checkpointing(obj)
    sharded = (networks, optimizers, averaged) if options.fsdp else None
    metrics_file = MetricsFile(run_dir)

    resume_from, resumed = checkpoints.resume_from, None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        if sharded is not None:
            sharding.load(resume_from, *sharded)
        averaged.to(device)
        resumed = state.step
        accelerator.print(f"Resuming from {resume_from} (step {state.step} of {max_steps})")
        if main:
            metrics_file.truncate(state.step)

    rank = accelerator.process_index
    stream = data_stream(data, batches, seed, accelerator.num_processes, rank, state.step,
                         max_steps, read_data_state(resume_from, rank))
    exported = _ExportedEMA(objective, networks[objective.exported_network], export_cls,
                            averaged, num_frames, size, options.fsdp, main, device)
    result = FitResult(run_dir, state.step, resumed)
    window, perf = LogWindow(names, logging.t_buckets), Throughput()
    bar = tqdm(total=max_steps, initial=state.step, disable=not (main and logging.progress),
               desc="train", dynamic_ncols=True)

    for network in networks.values():
        network.train()
    done = state.step >= max_steps
    while not done:
        # One step: the phase's network is updated from its micro-batches' gradients.
        started = time.perf_counter()
        phase = objective.phase(state.step)
        nets = {n: (prepared[n] if n == phase else networks[n]) for n in names}
        step_losses = _accumulate(accelerator, objective, phase, nets, stream, perf, seed,
                                  state.step, batches.accum, device)
        if step_losses is not None:
            state.bad_in_row = 0
            grad_norm = accelerator.clip_grad_norm_(nets[phase].parameters(), optimization.max_norm)
            optimizers[phase].step()
            schedules[phase].step()
            if phase == objective.exported_network:
                averaged.step(networks[phase].parameters())
            result.losses.append(window.add(phase, *step_losses, sharding.as_float(grad_norm)))
        else:
            state.bad_in_row += 1
            state.bad_total += 1
            result.losses.append(float("nan"))
            accelerator.print(f"step {state.step}: non-finite loss, step skipped "
                              f"({state.bad_in_row} in a row, {state.bad_total} in all)")
        optimizers[phase].zero_grad(set_to_none=True)
        result.phases.append(phase)
        if state.bad_in_row >= optimization.max_bad_steps:
            last = latest_checkpoint(run_dir)
            accelerator.end_training()
            raise TrainingDiverged(
                f"training stopped at step {state.step}: {state.bad_in_row} non-finite losses in "
                f"a row (train.max_bad_steps={optimization.max_bad_steps}); the last good "
                f"checkpoint is {last or 'none (no checkpoint was written yet)'}; "
                "lower optim.lr or enable optim.grad_clip, then resume")
        state.step += 1
        perf.add_step(started, stream.group)
        bar.update(1)
        done = state.step >= max_steps

        # Then what is due: the log line, a checkpoint with the exported model, an evaluation.
        logs: dict[str, float] = {}
        if done or state.step % logging.every == 0:
            logs = window.pop()
            logs.update({f"lr/{n}": schedules[n].get_last_lr()[0] for n in names})
            logs.update(perf.pop())
            logs["skipped_steps"] = float(state.bad_total)
            logs["epoch"] = float(stream.epoch(state.step))
            stats = getattr(data, "stats", None)
            if callable(stats):
                logs["data/skipped_files"] = float(stats().get("skipped", 0))
            accelerator.log(logs, step=state.step)
            if main:
                metrics_file.append(state.step, logs)
                bar.set_postfix(progress_postfix(logs))
        if done or state.step % checkpoints.every == 0:
            _checkpoint(accelerator, run_dir, state.step, checkpoints.keep, stream, sharded)
            exported.save(run_dir)
            accelerator.wait_for_everyone()
        if evaluation is not None and (
                done or (evaluation.every and state.step % evaluation.every == 0)):
            figures = exported.evaluate(evaluation, state.step)
            if figures is not None:
                record = {f"eval/{k}": v for k, v in figures.items()}
                accelerator.log(record, step=state.step)
                metrics_file.append(state.step, record)
                bar.write(f"step {state.step}: "
                          + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
            accelerator.wait_for_everyone()
        if on_step is not None and main:
            on_step(state.step, logs)

    bar.close()
    accelerator.end_training()
    result.step = state.step
    return result
