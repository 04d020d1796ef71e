"""Score a model at several step counts and the classical baselines on the same clips.

Clips are cut deterministically (:func:`pick_clips`: evenly spaced windows of the model's
frame count, resized to cover the model's size and centre-cropped), degraded with the task,
restored by each method, and scored on the frames the method had to make (the in-between
frames of interpolation, every frame after the first for image-to-video, all frames for
super-resolution) by :func:`score_clip`. ``tcvbm eval`` (:func:`run_eval`) writes
``metrics.json`` (per clip, per video and means), ``metrics.md`` (the model, its own source
and the baselines together; :mod:`tcvbm.eval_report` formats it) and two plots; a training
run's periodic evaluation (:class:`TrainingEval`) runs the same harness on its held-out
clips, its model beside the source.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from tcvbm import metrics
from tcvbm.atomic import AtomicPath
from tcvbm.baselines import BASELINES, task_lift
from tcvbm.data import Entry
from tcvbm.data.video import VIDEO_EXTENSIONS
from tcvbm.data.visual import uint8_levels
from tcvbm.eval_report import (
    COLUMNS,
    markdown_table,
    mean_of_videos,
    per_video,
    per_video_metrics,
    per_video_table,
    plots,
)
from tcvbm.model_fns import model_label, model_window_fn, resolve_bundle, tiling
from tcvbm.runs import InferenceBundle
from tcvbm.tasks import Task, get_task

__all__ = ["run_eval", "pick_clips", "ClipPlan", "load_eval_clips", "score_clip",
           "score_methods", "evaluate_bundle", "TrainingEval", "Method"]

Clips = list[tuple[str, Tensor]]  # (name, clip (3, N, H, W) in [-1, 1]) pairs


@dataclass
class Method:
    """Something that restores an observation: a model at ``steps`` or a baseline.

    ``others``: the same model under other seeds; with them each clip's row also carries the
    ``spread`` of the samples (:func:`tcvbm.metrics.sample_spread`), since one sample's
    fidelity says nothing of whether a stochastic model makes more than one output."""

    name: str
    run: Callable[[Tensor], Tensor]
    steps: int | None = None
    results: list[dict] = field(default_factory=list)
    others: Sequence[Callable[[Tensor], Tensor]] = ()


def _source_method(task: Task, num_frames: int) -> Method:
    """The task's own lift of the observation, what a model of ``task`` starts from: a model
    that learnt nothing scores exactly this row."""
    return Method("source", lambda obs: task_lift(task, obs, num_frames))


def _video_files(data: str | os.PathLike) -> list[Path]:
    root = Path(data)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ValueError(f"data: {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not files:
        raise ValueError(f"data: no video files under {root}")
    return files


def _spread(n: int, count: int | None) -> Sequence[int]:
    """``count`` indices spread evenly over ``range(n)``, first and last included (all of
    them when ``count`` is None or at least ``n``)."""
    if count is None or count >= n:
        return range(n)
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})


@dataclass(frozen=True)
class ClipPlan:
    """Which clips to cut: ``(video, first frame)`` windows, chosen from lengths alone."""

    windows: tuple[tuple[Entry, int], ...]
    num_frames: int
    stride: int
    size: tuple[int, int] | None   # None: each video at its own size

    def read(self) -> Clips:
        """Decode the windows, each video opened once: resized to cover ``size``, centred."""
        from tcvbm.data import from_uint8

        clips = []
        for video, windows in itertools.groupby(self.windows, key=lambda w: w[0]):
            with video.open() as reader:
                for _, start in windows:
                    frames = reader.read_clip(start, self.num_frames, self.stride, size=self.size)
                    clips.append((f"{Path(video.key).stem}@{start}", from_uint8(frames)))
        return clips


def pick_clips(videos: Sequence[Entry], num_frames: int, size: tuple[int, int] | None,
               stride: int = 1, per_video: int | None = None,
               total: int | None = None) -> ClipPlan:
    """The evaluation clips of ``videos``, the same every time.

    ``per_video`` windows are spread evenly over each video, the first and the last window
    included (every window when None); then ``total`` of them are spread the same way over
    the whole list (all when None), so a few clips still cover the whole set. Videos too
    short for one clip are skipped, with their names in the error if none is left.
    """
    span = (num_frames - 1) * stride + 1
    usable = [v for v in videos if v.length >= span]
    if not usable:
        raise ValueError(f"data: no video is long enough for a {span}-frame clip "
                         f"(skipped {[Path(v.key).name for v in videos]})")
    starts = [_spread(v.length - span + 1, per_video) for v in usable]
    ends = list(itertools.accumulate(len(s) for s in starts))  # window i is in video bisect(i)
    windows = []
    for i in _spread(ends[-1], total):
        v = bisect.bisect_right(ends, i)
        windows.append((usable[v], starts[v][i - (ends[v - 1] if v else 0)]))
    return ClipPlan(tuple(windows), num_frames, stride, size)


def load_eval_clips(data: str | os.PathLike, num_frames: int, size: tuple[int, int] | None,
                    clips_per_video: int = 4, stride: int = 1) -> Clips:
    """Deterministic ``(name, clip (3, N, H, W) in [-1, 1])`` pairs from a file or folder.

    ``clips_per_video`` windows spread evenly over each video (:func:`pick_clips`), named
    ``<video>@<first frame>``.
    """
    from tcvbm.data import VideoReader

    videos = []
    for path in _video_files(data):
        with VideoReader(path) as reader:
            videos.append(Entry(str(path), len(reader)))
    return pick_clips(videos, num_frames, size, stride, per_video=clips_per_video).read()


def _scored_frames(task: Task, num_frames: int) -> Tensor:
    """(N,) bool: the frames a method has to make, those the source does not carry exactly
    (all of them in super-resolution); every frame when the source carries them all."""
    made = ~task.known_frames(num_frames)
    return made if bool(made.any()) else torch.ones(num_frames, dtype=torch.bool)


def score_clip(pred: Tensor, target: Tensor, scored: Tensor,
               perceptual: dict[str, metrics.PerceptualNet], notes: dict[str, str],
               temporal: bool = True) -> dict:
    """All per-clip metrics of one (C, N, H, W) output against its ground truth.

    A metric that cannot run here is left out, its reason kept in ``notes``; ``temporal``
    adds the flow-warped error of consecutive frames (which costs an optical flow per pair).
    """
    p, t = pred.unsqueeze(0), target.unsqueeze(0)
    row: dict[str, float] = {"psnr": float(metrics.psnr(p, t, scored))}
    for name, fn in (("ssim", metrics.ssim), ("ms_ssim", metrics.ms_ssim)):
        try:
            row[name] = float(fn(p, t, scored))
        except metrics.MetricUnavailable as err:
            notes.setdefault(name, str(err))
    for name, net in perceptual.items():
        row[name] = float(metrics.perceptual_distance(net, p, t, scored))
    if temporal and pred.shape[1] >= 2:
        out, ref = metrics.temporal_warp_error(p, t)
        row["warp_error"], row["warp_error_gt"] = float(out), float(ref)
    return row


def score_methods(methods: Sequence[Method], clips: Clips, task: Task, num_frames: int,
                  perceptual: dict[str, metrics.PerceptualNet], notes: dict[str, str],
                  temporal: bool = True, keep_outputs: bool = False) -> dict[str, list[Tensor]]:
    """The harness: every method restores every clip's observation, scored by :func:`score_clip`.

    Each clip is degraded with ``task``; a method's output (its first ``num_frames`` frames,
    rounded to the 8-bit levels a command writes, :func:`tcvbm.data.visual.uint8_levels`)
    is scored on :func:`_scored_frames` and timed, one row per clip
    appended to ``method.results``. Returns the outputs per method name when
    ``keep_outputs`` (for videos and distribution metrics), else empty lists.
    """
    scored = _scored_frames(task, num_frames)
    outputs: dict[str, list[Tensor]] = {m.name: [] for m in methods}
    for name, clip in clips:
        obs = task.degrade(clip.unsqueeze(0))
        for method in methods:
            started = time.perf_counter()
            pred = uint8_levels(method.run(obs)[0, :, :num_frames])
            seconds = time.perf_counter() - started
            row = {"clip": name, **score_clip(pred, clip, scored, perceptual, notes, temporal),
                   "seconds_per_frame": seconds / int(scored.sum())}
            if method.others:
                samples = [pred] + [uint8_levels(run(obs)[0, :, :num_frames])
                                    for run in method.others]
                row["spread"] = float(metrics.sample_spread(torch.stack(samples)[:, None], scored))
            method.results.append(row)
            if keep_outputs:
                outputs[method.name].append(pred)
    return outputs


def _write_text(path: Path, text: str) -> None:
    with AtomicPath(path) as staged:
        staged.write_text(text)


TRAINING_METRICS = ("psnr", "ssim")  # what a training run logs of score_clip's figures


def evaluate_bundle(bundle: InferenceBundle, clips: Clips, out_dir: Path, fps: float,
                    seed: int = 0, device: torch.device | str = "cpu",
                    precision: str = "fp32") -> dict[str, float]:
    """Sample ``clips``' sources with the bundle; write videos, a grid and metrics.

    The model (its own steps and sampler, seeded) and the source itself, the no-model
    baseline, are scored by :func:`score_methods` on the frames the source does not carry;
    the means over clips of :data:`TRAINING_METRICS` are returned as ``psnr``, ``ssim``,
    ``psnr_source``, ``ssim_source`` and written to ``out_dir/metrics.json``. Each clip is
    also written as ``sample-<i>.mp4`` (source | sample | target side by side), and all of
    them as the rows of ``grid.png``.
    """
    from tcvbm.data import save_grid_png, to_uint8, write_video

    task, n = bundle.task, bundle.num_frames
    model = Method("model", model_window_fn(bundle, device=str(device), precision=precision,
                                            seed=seed))
    source = _source_method(task, n)
    outputs = score_methods([model, source], clips, task, n, perceptual={}, notes={},
                            temporal=False, keep_outputs=True)
    figures = {}
    for method, suffix in ((model, ""), (source, "_source")):
        means = _means(method.results)
        figures.update({f"{k}{suffix}": means[k] for k in TRAINING_METRICS if k in means})
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (_, target) in enumerate(clips):
        side = torch.cat([outputs["source"][i], outputs["model"][i], target], dim=-1)
        write_video(to_uint8(side), out_dir / f"sample-{i}.mp4", fps=fps)
        rows.append(side)
    save_grid_png(torch.stack(rows), out_dir / "grid.png")
    _write_text(out_dir / "metrics.json", json.dumps(figures, indent=2) + "\n")
    return figures


class TrainingEval:
    """A training run's periodic evaluation: :func:`evaluate_bundle` on fixed held-out clips.

    The clips of ``plan`` are decoded at the first evaluation (the loop evaluates on its main
    process only); results go to ``out_dir/step-<step>``. ``every``: steps between evaluations
    (0: only the one after the last step). ``precision`` is the training's ("fp32" or "bf16").
    """

    def __init__(self, plan: ClipPlan, out_dir: Path, every: int, fps: float, seed: int,
                 precision: str) -> None:
        self.plan, self.out_dir, self.every = plan, out_dir, every
        self.fps, self.seed, self.precision = fps, seed, precision
        self._clips: Clips | None = None

    def __call__(self, bundle: InferenceBundle, step: int,
                 device: torch.device) -> dict[str, float]:
        if self._clips is None:
            self._clips = self.plan.read()
        return evaluate_bundle(bundle, self._clips, self.out_dir / f"step-{step}", self.fps,
                               self.seed, device, self.precision)


def _perceptual_nets(lpips_weights, alexnet_weights, notes: dict[str, str]) -> dict:
    nets = {}
    for name, load in (("stlpips", metrics.load_stlpips),
                       ("lpips", lambda: metrics.load_lpips(lpips_weights, alexnet_weights))):
        try:
            nets[name] = load()
        except metrics.MetricUnavailable as err:
            notes[name] = str(err)
    return nets


def _distribution_metrics(methods: list[Method], outputs: dict[str, list[Tensor]],
                          targets: list[Tensor], scored: Tensor, fid_weights, fvd_weights,
                          notes: dict[str, str]) -> None:
    """FID on the scored frames and FVD on whole clips, only with real local networks."""
    def frames_uint8(clips: list[Tensor]) -> Tensor:
        x = torch.stack(clips)[:, :, scored].transpose(1, 2).flatten(0, 1)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    for name, path in (("fid", fid_weights), ("fvd", fvd_weights)):
        try:
            net = metrics.load_torchscript_features(path, name)
            with torch.inference_mode():
                if name == "fid":
                    feats = lambda clips: net(frames_uint8(clips), return_features=True)  # noqa: E731
                else:
                    feats = lambda clips: net(torch.stack(clips), rescale=False, resize=True,  # noqa: E731
                                              return_features=True)
                real = feats(targets)
                for method in methods:
                    value = metrics.frechet_distance(feats(outputs[method.name]), real)
                    method.results.append({"clip": "__all__", name: value})
        except metrics.MetricUnavailable as err:
            notes[name] = str(err)
        except (RuntimeError, TypeError) as err:
            notes[name] = f"{name}: the network at {path} does not follow the expected calling " \
                          f"convention ({err}); skipped"


def _means(rows: list[dict]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r if k != "clip"})
    out = {}
    for k in keys:
        values = [r[k] for r in rows if k in r]
        out[k] = sum(values) / len(values)
    return out


def _tiled_when_large(bundle, task: Task,
                      fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``fn`` on frames of at most :data:`tcvbm.windows.DEFAULT_TILE` px, and on the
    pipeline's overlapping tiles beyond (:func:`tcvbm.model_fns.tiling`): what the commands
    run at that size, in bounded memory (a 1080p window whole needs tens of GB). Smaller
    frames stay whole, unpadded, so the scores of earlier evaluations stay comparable."""
    from tcvbm.windows import DEFAULT_TILE

    tiles = tiling(bundle, getattr(task, "scale", 1))(fn)
    return lambda obs: tiles(obs) if max(obs.shape[-2:]) > DEFAULT_TILE else fn(obs)


def _task(task: str, bundle, factor: int | None, scale: int | None) -> Task:
    """The task clips are degraded with: the model's own, or for an interpolation model
    scored at another ``factor``, the same task at that factor (scored pair by pair,
    :func:`run_eval`)."""
    if bundle is not None:
        if bundle.task.name != task:
            raise ValueError(f"task: the model is a {bundle.task.name!r} model, not {task!r}")
        if task == "interp" and factor and factor != bundle.task.factor:
            return replace(bundle.task, factor=int(factor), train_factors=())
        return bundle.task
    kwargs = {"factor": factor or 2} if task == "interp" else {"scale": scale or 4} \
        if task == "vsr" else {}
    return get_task(task, **kwargs)


def run_eval(task: str, data: str | os.PathLike, model=None,
             steps: Sequence[int] | None = None, baselines: bool = True,
             output_dir: str | os.PathLike = "eval", *, sampler: str | None = None,
             device: str = "cpu", precision: str = "fp32", factor: int | None = None,
             scale: int | None = None, num_frames: int | None = None,
             size: int | Sequence[int] | str | None = None, clips_per_video: int = 4,
             seed: int = 0, samples: int = 1, lpips_weights: str | None = None,
             alexnet_weights: str | None = None, fid_weights: str | None = None,
             fvd_weights: str | None = None) -> dict:
    """Evaluate ``model`` at each of ``steps`` (and the baselines) on clips from ``data``.

    ``task`` is "interp", "i2v" or "vsr"; without a model only baselines run, on clips of
    ``num_frames`` (default 9) at ``size`` (default 256; ``"native"``: each video at its own
    size, what ``tcvbm interpolate`` runs on). A model comes with a ``source``
    row, the task's lift it starts from, scored like a baseline even without ``baselines``.
    ``factor``: an interpolation model at another factor than its own (x3, x4: the frames
    between every ``factor``-th frame, the held-out frames of a higher-rate clip) is scored
    on windows of one pair and the frames between it, made at their times by the pair path
    of ``tcvbm interpolate`` (``--factor 3``, ``--fps``); the baselines run on the same
    windows. ``samples`` > 1: the model also samples every clip with seeds ``seed + 1`` ..
    ``seed + samples - 1`` and each row gets the ``spread`` of the samples (image-to-video's
    diversity, beside the first sample's fidelity).
    Returns the JSON written to ``output_dir/metrics.json`` (with ``per_video`` and
    ``mean_of_videos`` figures); ``output_dir/metrics.md`` holds the table of means over
    windows and the per-video tables, and the ``quality_vs_*.png`` plots the trade-offs.
    Metrics that cannot run honestly here (missing weights, frames too small) are listed
    under ``"skipped"`` with the reason.
    """
    if task not in ("interp", "i2v", "vsr"):
        raise ValueError(f"task: expected 'interp', 'i2v' or 'vsr', got {task!r}")
    if model is None and not baselines:
        raise ValueError("model: give a model, or baselines=True to score baselines only")
    if samples < 1:
        raise ValueError(f"samples: expected at least 1, got {samples}")
    bundle = resolve_bundle(model) if model is not None else None
    the_task = _task(task, bundle, factor, scale)
    retimed = bundle is not None and the_task != bundle.task
    # at another factor, one pair of inputs and the frames between, as --factor runs it
    n = the_task.factor + 1 if retimed else bundle.num_frames if bundle else (num_frames or 9)
    if size == "native":
        hw = None
    else:
        hw = tuple(bundle.size) if bundle and size is None else \
            ((size, size) if isinstance(size, int) else tuple(size or (256, 256)))
    clips = load_eval_clips(data, n, hw, clips_per_video)
    scored = _scored_frames(the_task, n)

    methods: list[Method] = []
    if bundle is not None:
        for k in (steps or [bundle.steps]):
            fns = []
            for sample_seed in range(seed, seed + samples):
                fn = model_window_fn(bundle, int(k), sampler, device, precision, sample_seed)
                if retimed:
                    fn = partial(fn, times=the_task.layout(n))
                fns.append(_tiled_when_large(bundle, the_task, fn))
            methods.append(Method(f"{Path(model_label(model)).name}@{k}", fns[0], int(k),
                                  others=fns[1:]))
        methods.append(_source_method(the_task, n))
    if baselines:
        for name, base in BASELINES[task].items():
            methods.append(Method(name, lambda obs, base=base: base(the_task, obs, n)))

    notes: dict[str, str] = {}
    perceptual = _perceptual_nets(lpips_weights, alexnet_weights, notes)
    outputs = score_methods(methods, clips, the_task, n, perceptual, notes,
                            keep_outputs=bool(fid_weights or fvd_weights))
    if fid_weights or fvd_weights:
        _distribution_metrics(methods, outputs, [c for _, c in clips], scored, fid_weights,
                              fvd_weights, notes)
    else:
        notes["fid"] = "fid: no Inception weights given (fid_weights); skipped"
        notes["fvd"] = "fvd: no I3D weights given (fvd_weights); skipped"

    summary = [{"method": m.name, "steps": m.steps,
                "mean": _means(m.results),
                "per_clip": [r for r in m.results if r["clip"] != "__all__"]} for m in methods]
    by_video = {metric: per_video(summary, metric) for metric in per_video_metrics(summary)}
    result = {"task": the_task.to_config(), "model": model_label(model) if model else None,
              "num_frames": n, "size": list(hw) if hw else "native",
              "clips": [name for name, _ in clips],
              "scored_frames": int(scored.sum()), "device": device, "precision": precision,
              "methods": summary, "per_video": by_video,
              "mean_of_videos": {k: mean_of_videos(v) for k, v in by_video.items()},
              "skipped": notes}
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    where = f"{hw[0]}x{hw[1]}" if hw else "each video's own size"
    title = f"{task} on {Path(data).name}: {len(clips)} clips of {n} frames at {where}"
    formats = {key: fmt for key, _, fmt in COLUMNS}
    table = markdown_table(summary, title) + "".join(
        "\n" + per_video_table(summary, metric, formats[metric]) for metric in by_video)
    if notes:
        table += "\nSkipped:\n" + "".join(f"- {v}\n" for v in notes.values())
    _write_text(out_dir / "metrics.md", table)
    result["plots"] = [str(p) for p in plots(summary, out_dir)]
    result["table"] = table
    return result
