"""Run configuration: YAML files with inheritance, dotted overrides, one typed schema.

A config file may name its parent with ``base: other.yaml`` (a path relative to the file,
or the name of a file in ``configs/``); the parent is loaded first and the child's keys
are merged over it. Command-line overrides ``key=value`` (dotted keys, YAML values) are
merged last. Every layer is checked against the dataclass schema below as it is merged,
so an unknown key or a value of the wrong type is reported once, naming the key and the
file (or override) it came from.

The result is a plain :class:`Config` dataclass tree. It is turned into objects (bridge,
task, model, datasets) at the edge, in :mod:`tcvbm.train.run`; models and math never see it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from tcvbm.atomic import AtomicPath

__all__ = ["Config", "load_config", "parse_overrides", "config_to_yaml", "save_config",
           "resolve_config_path", "shipped_config_dir", "CONFIG_DIR", "check_time_sampling",
           "check_weighting", "check_distillation"]


def shipped_config_dir() -> Path:
    """The folder of the shipped configs, found by import as the package ``tcvbm.configs``.

    The files live once, in the repository's top-level ``configs/``, which pyproject.toml
    installs as ``tcvbm.configs``: an editable install maps that name to the checkout's
    folder and a wheel carries the folder inside the package, so asking the import system
    finds the right one in both cases, where a path relative to this file finds only one.
    """
    try:
        folder = resources.files("tcvbm.configs")
    except ModuleNotFoundError:
        raise RuntimeError(
            "tcvbm: the package 'tcvbm.configs' (the shipped configs, the repository's configs/) "
            "cannot be imported: tcvbm is not installed, or was installed from an older version; "
            "reinstall it (in a checkout: pip install -e .)"
        ) from None
    if not isinstance(folder, Path):  # a zip import: configs are read as files on disk
        raise RuntimeError(f"tcvbm: the shipped configs {folder} are not a folder on disk")
    return folder


CONFIG_DIR = shipped_config_dir()
T_SAMPLINGS = ("uniform", "logit-normal", "stratified")
WEIGHTINGS = ("none", "min-snr", "sigmoid")
DISTANCES = ("mse", "log-mse")
PRECISIONS = ("no", "bf16")


@dataclass
class SourceSection:
    """One source of a training mixture (an entry of ``data.sources``)."""

    root: str = ""
    layout: str = "auto"  # as data.layout, or synthetic: motion over the still images in root
    weight: float = 1.0  # the source's share of the clips is weight / (sum of the weights)
    # the source's own tcvbm.data.build_dataset options (data.options do not apply to it);
    # stride defaults to data.stride
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    """Where the clean clips come from and their shape."""

    # a folder of videos, or a UCF-101 / Vimeo-90K / REDS / DAVIS / image folder
    root: str = "data/samples"
    layout: str = "auto"
    num_frames: int = 9
    size: List[int] = field(default_factory=lambda: [64, 64])
    stride: int = 1
    split: str = "train"
    # extra keyword arguments for tcvbm.data.build_dataset (layout specific):
    # clips_per_video, fps, hflip, cache_frames, ...
    options: Dict[str, Any] = field(default_factory=dict)
    # training clips mixed from several sources by weight (tcvbm.data.build_mixture); empty:
    # training reads root. Either way root, layout and options give evaluation's videos.
    sources: List[SourceSection] = field(default_factory=list)
    num_workers: int = 0


@dataclass
class TaskSection:
    """The degradation that turns a clean clip into its source (tcvbm.tasks.get_task)."""

    name: str = "interp"  # interp | i2v | vsr | image-sr | image-blur | image-noise
    # e.g. {factor: 2, mode: blend|nearest|flow} for interp, {scale: 4} for vsr
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class BridgeSection:
    """The bridge prior (tcvbm.bridges.Bridge); ``params`` are the prior's own knobs."""

    prior: str = "ar1"  # ar1 | laplacian | brownian (plain bridge matching)
    eps: float = 0.25
    center: str = "source"  # source: the prior reverts to the source clip; zero: to grey
    params: Dict[str, Any] = field(default_factory=dict)  # ar1 defaults: {rho: 0.9, strength: 8.0}


@dataclass
class ModelSection:
    """The backbone: a registry name, a YAML file or a saved directory, plus overrides."""

    # unet-tiny|small|base, dit-tiny|small|base, a YAML file or a saved directory
    name: str = "unet-tiny"
    # constructor overrides, e.g. {conditional: false, base_channels: 16}
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LossSection:
    """How t is drawn and weighted in the bridge-matching (and fake) loss."""

    t_sampling: str = "uniform"  # one of T_SAMPLINGS
    t_min: float = 1e-3
    t_max: float = 0.999
    # probability of t = 1 exactly, where X_t is the source and a 1-step sampler calls the
    # model; needs weighting none (min-snr and sigmoid weigh t = 1 by 0)
    t_one_prob: float = 0.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    weighting: str = "none"  # one of WEIGHTINGS: lambda(t), shared by every loss of the run
    snr_gamma: float = 5.0  # min-snr: weight = min((1 - t) / t, gamma) / gamma
    sigmoid_bias: float = 0.0  # sigmoid: weight = sigmoid(bias - logit(t))
    t_buckets: int = 4  # the loss is also logged per equal-width t bucket
    # per-sample distance of the bridge-matching loss: mse, or log-mse = log(MSE + log_floor),
    # which counts every clip's relative error alike, as mean PSNR does (tcvbm train only)
    distance: str = "mse"
    log_floor: float = 1e-5


@dataclass
class OptimSection:
    """AdamW with linear warm-up and cosine decay to zero at train.max_steps."""

    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping


@dataclass
class TrainSection:
    """The loop: steps, batch, precision, EMA, checkpoints, failure handling, logging."""

    max_steps: int = 1000
    # per process and micro-batch: global batch = batch_size * processes * grad_accum
    batch_size: int = 4
    grad_accum: int = 1
    mixed_precision: str = "no"  # one of PRECISIONS
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay ramps as 1 - (1 + step)^-ema_power, capped at ema_decay
    ema_power: float = 0.6667
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    max_bad_steps: int = 5  # this many non-finite losses in a row stop the run
    log_every: int = 10
    gradient_checkpointing: bool = False
    # shard models, optimizers and EMA across processes (FSDP2; multi-process only)
    fsdp: bool = False
    progress: bool = True


@dataclass
class EvalSection:
    """Periodic evaluation on held-out clips: videos, a grid picture and metrics."""

    every: int = 500  # 0 disables periodic evaluation (the final one still runs if num_clips > 0)
    # held-out data; None: data.root (its `split` subfolder when there is one)
    root: Optional[str] = None
    split: str = "val"
    num_clips: int = 2
    steps: int = 4  # sampler steps, also stored in the exported model as its default
    sampler: str = "stochastic"  # stochastic | deterministic | posterior-mean
    fps: float = 8.0


@dataclass
class DistillSection:
    """Inverse bridge-matching distillation (see docs/training.md)."""

    student_steps: int = 1
    noise_channels: int = 4
    fake_per_generator: int = 5  # fake-model updates per generator update
    alpha: float = 1.0  # real-data term: alpha = beta = 1 is data free
    beta: float = 1.0
    fake_lr: Optional[float] = None  # None: optim.lr
    student_sampler: str = "stochastic"  # how a few-step student moves between grid points


@dataclass
class Config:
    """A complete run description (the schema every YAML layer is checked against)."""

    output_dir: str = "runs/default"
    seed: int = 0
    # None or "latest": the latest checkpoint in output_dir if any; or a checkpoint path
    resume: Optional[str] = None
    teacher: Optional[str] = None  # distillation: the teacher run or model directory
    data: DataSection = field(default_factory=DataSection)
    task: TaskSection = field(default_factory=TaskSection)
    bridge: BridgeSection = field(default_factory=BridgeSection)
    model: ModelSection = field(default_factory=ModelSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    distill: DistillSection = field(default_factory=DistillSection)


def resolve_config_path(path: str | Path, relative_to: Path | None = None) -> Path:
    """Find a config file: as given, relative to the including file, or by name in configs/."""
    path = Path(path)
    candidates = [path]
    if relative_to is not None and not path.is_absolute():
        candidates.insert(0, relative_to / path)
    if not path.is_absolute():
        for stem in (path, path.with_suffix(".yaml")):
            candidates += [Path.cwd() / "configs" / stem, CONFIG_DIR / stem]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ValueError(f"config: file {str(path)!r} not found "
                     f"(looked in {[str(c) for c in candidates]})")


def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """The file and its ``base:`` ancestors, oldest first, as (label, mapping) pairs."""
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ValueError(f"{path}: 'base' inheritance loops: {chain}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    layers: list[tuple[str, dict]] = []
    if base is not None:
        if not isinstance(base, str):
            raise ValueError(f"{path}: 'base' must be a file name, got {base!r}")
        layers = _read_layers(resolve_config_path(base, path.parent), (*seen, path))
    return layers + [(str(path), data)]


def parse_overrides(overrides: list[str]) -> list[tuple[str, dict]]:
    """``key=value`` strings -> (label, nested mapping) layers; values are parsed as YAML."""
    layers = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part.isidentifier() for part in key.split(".")):
            raise ValueError(
                f"override {item!r}: expected key=value with a dotted key "
                "(for example train.max_steps=30)"
            )
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: value is not valid YAML: {err}") from err
        nested: Any = parsed
        for part in reversed(key.split(".")):
            nested = {part: nested}
        layers.append((f"command-line override {item!r}", nested))
    return layers


def _merge(schema: DictConfig, label: str, layer: dict) -> DictConfig:
    try:
        return OmegaConf.merge(schema, OmegaConf.create(layer))
    except ConfigKeyError as err:
        raise ValueError(f"{label}: unknown key '{err.full_key}'") from None
    except ValidationError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{label}: wrong type for key '{err.full_key}': {first}") from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        first_line = str(err).splitlines()[0]
        raise ValueError(f"{label}: invalid value for key '{key}': {first_line}") from None


def _drop_other_prior_params(schema: DictConfig, layer: dict) -> DictConfig:
    """A layer that switches ``bridge.prior`` starts from the new prior's defaults, plus the
    parameters it gives: those set so far were another prior's (ar1's rho, say), which the
    new one would refuse, and ``bridge.prior=brownian`` on any config must work."""
    bridge = layer.get("bridge")
    if isinstance(bridge, dict) and "prior" in bridge and bridge["prior"] != schema.bridge.prior:
        schema = schema.copy()
        schema.bridge.params = {}
    return schema


def need(ok: bool, key: str, msg: str) -> None:
    """The one form of a value error: it names the config key the value belongs to."""
    if not ok:
        raise ValueError(f"config: {key} {msg}")


# Rules the training objectives apply too, when they are built from code rather than from a
# config: each is written here once and called from both places.

def check_time_sampling(scheme: str, t_min: float, t_max: float, t_one_prob: float = 0.0) -> None:
    """``loss.t_sampling``, the range ``loss.t_min``/``loss.t_max`` of training times and
    ``loss.t_one_prob``, the share of times set to 1 exactly."""
    need(scheme in T_SAMPLINGS, "loss.t_sampling",
         f"must be one of {T_SAMPLINGS}, got {scheme!r}")
    need(0.0 < t_min < t_max < 1.0, "loss.t_min/t_max",
         f"must satisfy 0 < t_min < t_max < 1, got {t_min}, {t_max}")
    need(0.0 <= t_one_prob < 1.0, "loss.t_one_prob", f"must lie in [0, 1), got {t_one_prob}")


def check_weighting(kind: str) -> None:
    """``loss.weighting``, the per-time loss weight."""
    need(kind in WEIGHTINGS, "loss.weighting", f"must be one of {WEIGHTINGS}, got {kind!r}")


def check_distillation(student_sampler: str, alpha: float, beta: float) -> None:
    """``distill.student_sampler`` and the real-data term's ``distill.alpha``/``distill.beta``."""
    from tcvbm.samplers import SAMPLERS  # here, so that importing tcvbm.config needs no torch

    need(student_sampler in SAMPLERS, "distill.student_sampler",
         f"must be one of {sorted(SAMPLERS)}, got {student_sampler!r}")
    need(0.0 < alpha <= 1.0 and 0.0 < beta <= 1.0, "distill.alpha/beta",
         f"must lie in (0, 1], got {alpha}, {beta}")
    need(alpha < 1.0 or beta == 1.0, "distill.beta",
         f"must be 1 when distill.alpha is 1 (no real-data term), got {beta}")


def _check_data_sources(cfg: Config) -> None:
    """The synthetic layout's limits, and each ``data.sources`` entry (its root is checked
    when the mixture is built)."""
    from tcvbm.data.layouts import LAYOUTS  # here, so that importing tcvbm.config needs no torch

    d = cfg.data
    if d.layout == "synthetic":
        need(d.stride == 1, "data.stride", "must be 1 with data.layout synthetic (its clips "
             "move up to options.max_motion pixels per frame)")
        need(cfg.eval.num_clips == 0, "eval.num_clips", "must be 0 with data.layout synthetic "
             "(evaluation reads held-out videos in data.layout; train on synthetic motion "
             "through data.sources instead)")
    shared = {"num_frames", "size", "split"}
    for k, src in enumerate(d.sources):
        key = f"data.sources[{k}]"
        need(bool(src.root), f"{key}.root", "must name a folder")
        need(src.layout == "auto" or src.layout in LAYOUTS, f"{key}.layout",
             f"must be 'auto' or one of {sorted(LAYOUTS)}, got {src.layout!r}")
        need(math.isfinite(src.weight) and src.weight > 0, f"{key}.weight",
             f"must be a positive number, got {src.weight}")
        need(not shared & set(src.options), f"{key}.options",
             f"must not set {sorted(shared & set(src.options))}: every source takes "
             "data.num_frames, data.size and data.split")


def _check(cfg: Config) -> None:
    """Value checks a type system cannot express; each error names its key."""
    need(len(cfg.data.size) == 2 and all(s > 0 for s in cfg.data.size), "data.size",
         f"must be [height, width] with positive entries, got {cfg.data.size}")
    need(cfg.data.num_frames >= 1, "data.num_frames", "must be >= 1")
    need(cfg.data.num_workers >= 0, "data.num_workers", "must be >= 0")
    _check_data_sources(cfg)
    check_time_sampling(cfg.loss.t_sampling, cfg.loss.t_min, cfg.loss.t_max, cfg.loss.t_one_prob)
    check_weighting(cfg.loss.weighting)
    need(cfg.loss.t_one_prob == 0.0 or cfg.loss.weighting == "none", "loss.t_one_prob",
         f"needs loss.weighting none ({cfg.loss.weighting!r} weighs t = 1 by 0), got "
         f"{cfg.loss.t_one_prob}")
    need(cfg.loss.t_buckets >= 1, "loss.t_buckets", "must be >= 1")
    need(cfg.loss.distance in DISTANCES, "loss.distance",
         f"expected one of {DISTANCES}, got {cfg.loss.distance!r}")
    need(cfg.loss.log_floor > 0, "loss.log_floor", f"must be > 0, got {cfg.loss.log_floor}")
    need(cfg.optim.lr > 0 and math.isfinite(cfg.optim.lr), "optim.lr", "must be > 0")
    need(len(cfg.optim.betas) == 2, "optim.betas", "must be two numbers")
    need(cfg.optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    need(cfg.optim.grad_clip >= 0, "optim.grad_clip", "must be >= 0")
    need(cfg.train.max_steps >= 1, "train.max_steps", "must be >= 1")
    need(cfg.train.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(cfg.train.grad_accum >= 1, "train.grad_accum", "must be >= 1")
    need(cfg.train.mixed_precision in PRECISIONS, "train.mixed_precision",
         f"must be one of {PRECISIONS}")
    need(0.0 <= cfg.train.ema_decay < 1.0, "train.ema_decay", "must lie in [0, 1)")
    need(cfg.train.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    need(cfg.train.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
    need(cfg.train.max_bad_steps >= 1, "train.max_bad_steps", "must be >= 1")
    need(cfg.train.log_every >= 1, "train.log_every", "must be >= 1")
    need(cfg.eval.every >= 0, "eval.every", "must be >= 0 (0 disables)")
    need(cfg.eval.num_clips >= 0, "eval.num_clips", "must be >= 0")
    need(cfg.eval.steps >= 1, "eval.steps", "must be >= 1")
    need(cfg.distill.student_steps >= 1, "distill.student_steps", "must be >= 1")
    need(cfg.distill.noise_channels >= 0, "distill.noise_channels", "must be >= 0")
    need(cfg.distill.fake_per_generator >= 1, "distill.fake_per_generator", "must be >= 1")
    check_distillation(cfg.distill.student_sampler, cfg.distill.alpha, cfg.distill.beta)
    need(cfg.resume is None or cfg.resume != "", "resume", "must be 'latest' or a checkpoint path")


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (with its ``base`` chain), apply ``key=value`` overrides, validate.

    Raises ValueError naming the key and the file (or override) for an unknown key, a value
    of the wrong type, a malformed override, or a value out of range.
    """
    file = resolve_config_path(path)
    schema = OmegaConf.structured(Config)
    for label, layer in _read_layers(file) + parse_overrides(list(overrides or [])):
        schema = _merge(_drop_other_prior_params(schema, layer), label, layer)
    cfg = OmegaConf.to_object(schema)
    assert isinstance(cfg, Config)
    _check(cfg)
    return cfg


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what a run directory's ``config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config atomically: a resumed run reads it back whole or not at all."""
    with AtomicPath(path) as staged:
        staged.write_text(config_to_yaml(cfg))
