"""Entry points of ``tcvbm train`` and ``tcvbm distill``: config in, objects out, then the loop.

This is the edge where a :class:`~tcvbm.config.Config` becomes a bridge, a task, models,
datasets and the loop's settings (:func:`fit_objective`); nothing below it sees the config.
The periodic evaluation is built here too, from :mod:`tcvbm.evaluate`: evaluation sits above
the loop (it runs a model through the pipeline and scores it), so the loop only calls what
it is given (:class:`tcvbm.train.loop.Evaluation`) and never imports it.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Callable

from accelerate.utils import set_seed
from torch.utils.data import Dataset

from tcvbm.bridges import Bridge
from tcvbm.config import Config, save_config
from tcvbm.data import ClipDataset, build_dataset, build_mixture
from tcvbm.evaluate import TrainingEval, pick_clips
from tcvbm.runs import checkpoint_step, latest_checkpoint, load_bundle
from tcvbm.tasks import Task, get_task
from tcvbm.train.logs import LogSettings
from tcvbm.train.loop import (
    AcceleratorOptions,
    CheckpointPolicy,
    EMASettings,
    FitResult,
    Objective,
    Optimization,
    fit,
)
from tcvbm.train.objectives import (
    BridgeMatching,
    Distance,
    InverseDistillation,
    TimeSampler,
    Weighting,
    per_sample_log_mse,
    per_sample_mse,
)
from tcvbm.train.streams import Batches

__all__ = ["train", "distill", "fit_objective", "build_bridge", "build_task", "build_train_set",
           "training_eval", "resolve_resume", "time_sampler", "weighting", "distance"]


def build_bridge(cfg: Config) -> Bridge:
    b = cfg.bridge
    return Bridge(cfg.data.num_frames, prior=b.prior, eps=b.eps, center=b.center, **b.params)


def build_task(cfg: Config) -> Task:
    return get_task(cfg.task.name, **cfg.task.params)


def time_sampler(cfg: Config) -> TimeSampler:
    loss = cfg.loss
    return TimeSampler(loss.t_sampling, loss.t_min, loss.t_max, loss.logit_mean, loss.logit_std,
                       loss.t_one_prob)


def distance(cfg: Config) -> Distance:
    """The per-sample distance of the bridge-matching loss (``loss.distance``)."""
    if cfg.loss.distance == "log-mse":
        return functools.partial(per_sample_log_mse, floor=cfg.loss.log_floor)
    return per_sample_mse


def weighting(cfg: Config) -> Weighting:
    return Weighting(cfg.loss.weighting, cfg.loss.snr_gamma, cfg.loss.sigmoid_bias)


def _dataset(cfg: Config, root: str, split: str) -> ClipDataset:
    """The clips of ``root`` (its ``split`` subfolder when it has one, see
    :func:`tcvbm.data.build_dataset`) in the run's layout, clip shape and options."""
    d = cfg.data
    return build_dataset(root, d.num_frames, tuple(d.size), layout=d.layout, split=split,
                         stride=d.stride, **{"seed": cfg.seed, **d.options})


def build_train_set(cfg: Config) -> Dataset:
    """The training clips: ``data.sources`` mixed by weight, else ``data.root`` (its
    ``data.split`` subfolder when it has one)."""
    d = cfg.data
    if d.sources:
        return build_mixture(d.sources, d.num_frames, tuple(d.size), split=d.split,
                             stride=d.stride, seed=cfg.seed)
    return _dataset(cfg, d.root, d.split)


def training_eval(cfg: Config) -> TrainingEval | None:
    """The periodic evaluation ``cfg.eval`` asks for (None when ``eval.num_clips`` is 0).

    Its ``eval.num_clips`` clips are spread evenly over every window of the held-out videos
    (``eval.root``, or ``data.root``'s ``eval.split`` subfolder; a folder without splits
    serves both) and cut as ``tcvbm eval`` cuts them (:func:`tcvbm.evaluate.pick_clips`) at
    the run's clip shape and ``data.stride``, so the numbers compare like with like across
    steps and with ``tcvbm eval`` on the same clips.
    """
    e, d = cfg.eval, cfg.data
    if e.num_clips == 0:
        return None
    held_out = _dataset(cfg, e.root or d.root, e.split)
    plan = pick_clips(held_out.usable, d.num_frames, (d.size[0], d.size[1]), d.stride,
                      total=e.num_clips)
    precision = "bf16" if cfg.train.mixed_precision == "bf16" else "fp32"
    return TrainingEval(plan, Path(cfg.output_dir) / "eval", e.every, e.fps, cfg.seed, precision)


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: a given path, or the run's latest (None if it has none)."""
    if resume is not None and resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise ValueError(f"resume: checkpoint {resume!r} does not exist")
        checkpoint_step(path)
        return path
    return latest_checkpoint(run_dir)


def fit_objective(objective: Objective, train_set: Dataset, cfg: Config,
                  on_step: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train a built ``objective`` on ``train_set`` as the rest of ``cfg`` says.

    Resumes from ``cfg.resume`` or, when that is unset, from the latest checkpoint in
    ``cfg.output_dir`` (and says so). ``on_step(step, logs)`` is called after every step on
    the main process (tests use it to interrupt a run).
    """
    run_dir = Path(cfg.output_dir)
    d, tc, oc = cfg.data, cfg.train, cfg.optim
    return fit(
        objective, train_set, run_dir, max_steps=tc.max_steps, seed=cfg.seed,
        num_frames=d.num_frames, size=(d.size[0], d.size[1]),
        batches=Batches(tc.batch_size, tc.grad_accum, d.num_workers),
        optimization=Optimization((oc.betas[0], oc.betas[1]), oc.weight_decay, oc.adam_eps,
                                  oc.warmup_steps, oc.grad_clip, tc.max_bad_steps),
        ema=EMASettings(tc.ema_decay, tc.ema_warmup, tc.ema_power),
        options=AcceleratorOptions(tc.mixed_precision, tc.fsdp, tc.gradient_checkpointing),
        checkpoints=CheckpointPolicy(tc.checkpoint_every, tc.keep_checkpoints,
                                     resolve_resume(run_dir, cfg.resume)),
        logging=LogSettings(tc.log_every, cfg.loss.t_buckets, tc.progress),
        evaluation=training_eval(cfg),
        write_config=lambda where: save_config(cfg, where / "config.yaml"),
        on_step=on_step)


def train(cfg: Config) -> FitResult:
    """Train a bridge model as ``cfg`` says (``tcvbm train CONFIG [key=value ...]``).

    Writes ``cfg.output_dir`` (see :mod:`tcvbm.runs`) and resumes from its latest checkpoint
    when it already has one.
    """
    from tcvbm.models import create

    set_seed(cfg.seed)
    model = create(cfg.model.name, **cfg.model.params)
    objective = BridgeMatching(model, build_bridge(cfg), build_task(cfg), time_sampler(cfg),
                               weighting(cfg), cfg.optim.lr, cfg.eval.sampler, cfg.eval.steps,
                               distance(cfg))
    return fit_objective(objective, build_train_set(cfg), cfg)


def distillation_objective(cfg: Config) -> InverseDistillation:
    """Teacher (frozen EMA weights of ``cfg.teacher``), fake model and generator from it.

    The bridge, the task and the clip shape are the teacher's: ``cfg.data.num_frames`` and
    ``cfg.data.size`` are set from it so the data matches what the teacher was trained on.
    """
    if cfg.loss.distance != "mse":
        raise ValueError(f"loss.distance: {cfg.loss.distance!r} is a bridge-matching loss "
                         "(tcvbm train); distillation's losses are differences of MSEs")
    if not cfg.teacher:
        raise ValueError("teacher: distillation needs teacher=RUN_DIR (a trained run or model "
                         "directory)")
    teacher = load_bundle(cfg.teacher)
    if teacher.kind != "bridge":
        raise ValueError(f"teacher: {cfg.teacher!r} is a distilled {teacher.kind}, not a "
                         "bridge model")
    cfg.data.num_frames = teacher.num_frames
    cfg.data.size = list(teacher.size)
    set_seed(cfg.seed)
    fake = copy.deepcopy(teacher.model).train()
    generator = copy.deepcopy(teacher.model).train()
    if cfg.distill.noise_channels:
        generator.add_noise_channels(cfg.distill.noise_channels)
    dc = cfg.distill
    return InverseDistillation(
        teacher.model, fake, generator, teacher.bridge, teacher.task, time_sampler(cfg),
        weighting(cfg), lr=cfg.optim.lr, fake_lr=dc.fake_lr or cfg.optim.lr,
        student_steps=dc.student_steps, student_sampler=dc.student_sampler,
        fake_per_generator=dc.fake_per_generator, alpha=dc.alpha, beta=dc.beta)


def distill(cfg: Config) -> FitResult:
    """Distill a trained bridge model into a few-step generator (``tcvbm distill``).

    The generator is saved in ``cfg.output_dir/model`` as kind "generator" with its own
    step count, so ``tcvbm sample`` and the pipeline run it like any model.
    """
    objective = distillation_objective(cfg)
    return fit_objective(objective, build_train_set(cfg), cfg)
