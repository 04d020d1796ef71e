"""Entry points of ``tcvbm train`` and ``tcvbm distill``: config in, objects out, then the loop.

This is the edge where a :class:`~tcvbm.config.Config` becomes a bridge, a task, models
and datasets; nothing below it sees the config object except the loop's own settings.
"""

from __future__ import annotations

import copy

from accelerate.utils import set_seed
from torch.utils.data import Dataset

from tcvbm.bridges import Bridge
from tcvbm.config import Config
from tcvbm.runs import load_bundle
from tcvbm.tasks import Task, get_task
from tcvbm.train.loop import FitResult, fit
from tcvbm.train.objectives import BridgeMatching, InverseDistillation, TimeSampler, Weighting

__all__ = ["train", "distill", "build_bridge", "build_task", "build_datasets",
           "time_sampler", "weighting"]


def build_bridge(cfg: Config) -> Bridge:
    b = cfg.bridge
    return Bridge(cfg.data.num_frames, prior=b.prior, eps=b.eps, center=b.center, **b.params)


def build_task(cfg: Config) -> Task:
    return get_task(cfg.task.name, **cfg.task.params)


def time_sampler(cfg: Config) -> TimeSampler:
    loss = cfg.loss
    return TimeSampler(loss.t_sampling, loss.t_min, loss.t_max, loss.logit_mean, loss.logit_std)


def weighting(cfg: Config) -> Weighting:
    return Weighting(cfg.loss.weighting, cfg.loss.snr_gamma, cfg.loss.sigmoid_bias)


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset | None]:
    """The training set and the held-out set used by periodic evaluation (None if off).

    The held-out clips are cut the same way every time (centre crop, evenly spread, no
    flips) so evaluations at different steps compare like with like. A plain folder without
    ``train``/``val`` subfolders serves every split (see :func:`tcvbm.data.build_dataset`).
    """
    from tcvbm.data import build_dataset

    d = cfg.data
    common = dict(num_frames=d.num_frames, size=tuple(d.size), layout=d.layout, stride=d.stride)
    options = {"seed": cfg.seed, **d.options}
    train_set = build_dataset(d.root, split=d.split, **common, **options)
    if cfg.eval.num_clips == 0:
        return train_set, None
    fixed = {**options, "crop": "center", "random_offset": False, "hflip": False}
    eval_set = build_dataset(cfg.eval.root or d.root, split=cfg.eval.split, **common, **fixed)
    return train_set, eval_set


def train(cfg: Config) -> FitResult:
    """Train a bridge model as ``cfg`` says (``tcvbm train CONFIG [key=value ...]``).

    Writes ``cfg.output_dir`` (see :mod:`tcvbm.runs`) and resumes from its latest checkpoint
    when it already has one.
    """
    from tcvbm.models import create

    set_seed(cfg.seed)
    model = create(cfg.model.name, **cfg.model.params)
    objective = BridgeMatching(model, build_bridge(cfg), build_task(cfg), time_sampler(cfg),
                               weighting(cfg), cfg.optim.lr, cfg.eval.sampler, cfg.eval.steps)
    train_set, eval_set = build_datasets(cfg)
    return fit(objective, train_set, cfg, eval_set)


def distillation_objective(cfg: Config) -> InverseDistillation:
    """Teacher (frozen EMA weights of ``cfg.teacher``), fake model and generator from it.

    The bridge, the task and the clip shape are the teacher's: ``cfg.data.num_frames`` and
    ``cfg.data.size`` are set from it so the data matches what the teacher was trained on.
    """
    if not cfg.teacher:
        raise ValueError("teacher: distillation needs teacher=RUN_DIR (a trained run or model directory)")
    teacher = load_bundle(cfg.teacher)
    if teacher.kind != "bridge":
        raise ValueError(f"teacher: {cfg.teacher!r} is a distilled {teacher.kind}, not a bridge model")
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
    train_set, eval_set = build_datasets(cfg)
    return fit(objective, train_set, cfg, eval_set)
