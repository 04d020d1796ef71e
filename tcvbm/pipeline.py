"""Any-length video in, video out: the inference commands.

A trained model sees clips of a fixed frame count ``N`` (and was trained at a fixed size);
real videos are longer and larger. The commands here read a stream of frames
(:mod:`tcvbm.data.streams`: damaged frames repaired), cut it into windows and tiles
(:mod:`tcvbm.windows`), run the model on each (:mod:`tcvbm.model_fns`: the window's source
built with the task's own ``prepare``, the function used in training, then the sampler), and
write the blended result with the input's audio. Interpolation to any other rate (``fps=``, a
factor such as 2.5 or 3, ``dedup=``) goes pair by pair instead (:mod:`tcvbm.retime`): the same
model, sampler and tiles make the frames at their exact times between two inputs. Frames
stream from the reader to the writer: memory is bounded by one batch of windows, never by the
length of the video. Decoding, the model and encoding run in three threads
(:func:`tcvbm.data.streams.prefetched`), a few frames apart, so the codecs' time hides
behind the model's; on a CPU several windows run at once (:mod:`tcvbm.workers`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
from torch import Tensor

from tcvbm.data.encoding import DEFAULT_CRF
from tcvbm.data.outputs import resolve_output
from tcvbm.data.streams import (
    RepairCounter,
    constant_rate_indices,
    open_video,
    prefetched,
    read_image,
    read_repaired,
    variable_rate,
    with_progress,
    write_counted,
)
from tcvbm.data.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from tcvbm.data.visual import from_uint8, to_uint8
from tcvbm.model_fns import (
    build_pair_fn,
    build_window_fn,
    model_label,
    resolve_bundle,
    window_inputs,
)
from tcvbm.retime import DuplicateDetector, PairFn, RetimePlan, Retimer, output_rate
from tcvbm.scenes import SceneCutDetector
from tcvbm.windows import TemporalBlender, WindowFn, power_count, restore_stream, stage_count
from tcvbm.workers import intra_op_threads, worker_count

if TYPE_CHECKING:
    from tcvbm.data.video import VideoReader
    from tcvbm.runs import InferenceBundle

__all__ = ["RunSummary", "interpolate", "image_to_video", "upscale", "sample_files"]


# ---------------------------------------------------------------------- what a run did

@dataclass
class RunSummary:
    """What one command did, printed as the closing line."""

    input: str
    output: str
    frames_in: int
    frames_out: int
    seconds: float
    model: str
    steps: int
    sampler: str
    warnings: int = 0
    scene_cuts: int = 0
    duplicates: int | None = None   # repeated input frames found (None: not looked for)

    def __str__(self) -> str:
        rate = self.frames_out / max(self.seconds, 1e-9)
        tail = f", {self.scene_cuts} scene cut(s)" if self.scene_cuts else ""
        tail += f", {self.duplicates} duplicate frame(s)" if self.duplicates is not None else ""
        tail += f", {self.warnings} warning(s)" if self.warnings else ""
        return (f"{self.input} -> {self.output}: {self.frames_in} frames in, {self.frames_out} "
                f"frames out in {self.seconds:.1f} s ({rate:.1f} frames/s), model {self.model}, "
                f"{self.steps} step(s) ({self.sampler}){tail}")


def _summary(input, output, frames_in: int, frames_out: int, started: float, model, bundle,
             steps: int | None, sampler: str | None, warnings: int, progress: bool,
             scene_cuts: int = 0, duplicates: int | None = None) -> RunSummary:
    """The closing line of a command (printed when the command shows progress)."""
    summary = RunSummary(str(input), str(output), frames_in, frames_out,
                         time.perf_counter() - started, model_label(model),
                         int(steps or bundle.steps or 1), sampler or bundle.sampler, warnings,
                         scene_cuts, duplicates)
    if progress:
        print(summary, file=sys.stderr)
    return summary


# -------------------------------------------------------------------------- the commands

@dataclass(frozen=True)
class _Sampling:
    """How a command runs its model (the inference flags a window or pair function takes)."""

    steps: int | None
    sampler: str | None
    device: str
    precision: str
    tile: int | None
    batch: int
    seed: int
    compile: bool
    workers: int

    def window_fn(self, bundle: InferenceBundle, scale: int) -> WindowFn:
        return build_window_fn(bundle, scale, self.steps, self.sampler, self.device,
                               self.precision, self.tile, self.batch, self.seed, self.compile)

    def pair_fn(self, bundle: InferenceBundle) -> PairFn:
        return build_pair_fn(bundle, self.steps, self.sampler, self.device, self.precision,
                             self.tile, self.batch, self.seed, self.compile)


@dataclass(frozen=True)
class _PassPlan:
    """How a video goes through a model: ``count`` passes of windows of ``inputs`` frames,
    each multiplying the frame rate by ``factor`` and the frame size by ``scale``."""

    inputs: int
    factor: int
    scale: int
    count: int


@dataclass
class _Streamed:
    """What a command makes of its input: the output frames (lazy) and what they count.

    ``cuts`` and ``duplicates`` count as the frames stream; read them when it is done.
    """

    frames: Iterable[Tensor]
    frames_in: int
    frames_out: int          # the outputs planned (the progress bar's total)
    fps: float
    cuts: SceneCutDetector
    duplicates: DuplicateDetector | None = None


_Body = Callable[["InferenceBundle", "VideoReader", RepairCounter], _Streamed]


def _window_passes(plan: Callable[[InferenceBundle], _PassPlan], sampling: _Sampling,
                   overlap: int | None, cuts: SceneCutDetector) -> _Body:
    """Windows of the model's own layout, ``plan(bundle)``'s passes over the stream.

    Variable-rate input is resampled by timestamp to a constant rate first
    (:func:`tcvbm.data.streams.constant_rate_indices`). Each pass has its own cut detector;
    the first pass's cuts (``cuts``) are the input's, later passes see them again in the
    frames the first one made.
    """
    def body(bundle: InferenceBundle, reader: VideoReader, warn: RepairCounter) -> _Streamed:
        passes = plan(bundle)
        keep = overlap
        if keep is None:   # kept keyframes join interpolating windows exactly: share one
            keep = 1 if passes.factor > 1 else passes.inputs // 2
        fn = sampling.window_fn(bundle, passes.scale)
        indices, fps = constant_rate_indices(reader, warn)
        gain = passes.factor ** passes.count
        stream: Iterable[Tensor] = prefetched(read_repaired(reader, indices, warn))
        for detector in [cuts, *(replace(cuts) for _ in range(passes.count - 1))]:
            blender = TemporalBlender(fn, passes.inputs, keep, passes.factor,
                                      keep_inputs=passes.factor > 1, batch=sampling.batch,
                                      workers=sampling.workers)
            stream = restore_stream(stream, blender, detector)
        return _Streamed(stream, len(indices), len(indices) * gain, fps * gain, cuts)

    return body


def _retimed(rate: Callable[[float], float], sampling: _Sampling, dedup: bool,
             cuts: SceneCutDetector) -> _Body:
    """Outputs at the exact times of ``rate(input fps)``, made pair by pair
    (:class:`tcvbm.retime.Retimer`), over the input's duration.

    Constant-rate input is planned at its exact times ``i / fps``; variable-rate input at
    its timestamps (every frame once, where it was shown), its output rate taken from its
    typical interval (:func:`tcvbm.data.streams.variable_rate`). ``dedup``: repeated
    frames are found (:class:`tcvbm.retime.DuplicateDetector`) and interpolated over.
    """
    def body(bundle: InferenceBundle, reader: VideoReader, warn: RepairCounter) -> _Streamed:
        pair_fn = sampling.pair_fn(bundle)
        typical = variable_rate(reader)
        if typical is None:
            fps_out = rate(reader.fps)
            plan = RetimePlan.constant(len(reader), reader.fps, fps_out)
        else:   # a damaged stream may step back: its times never do
            fps_out = rate(typical)
            times = np.maximum.accumulate(np.asarray(reader.timestamps, dtype=np.float64))
            plan = RetimePlan.for_input(times.tolist(), typical, fps_out)
        duplicates = DuplicateDetector() if dedup else None
        frames = prefetched(read_repaired(reader, range(len(reader)), warn))
        stream = restore_stream(frames, Retimer(pair_fn, plan, duplicates, sampling.workers),
                                cuts)
        return _Streamed(stream, len(reader), plan.count, fps_out, cuts, duplicates)

    return body


def _restore_video(input, output, model, task: str, kind: str, body: _Body, *,
                   workers: int, steps: int | None, sampler: str | None, progress: bool,
                   progress_label: str, codec: str | None, crf: int,
                   lossless: bool) -> RunSummary:
    """The one body of the video-to-video commands; ``body`` is what tells them apart.

    Checks ``output`` and opens ``input`` before loading the model, so a bad name or file
    fails fast; checks the model is a ``task`` model; streams ``body(bundle, reader,
    warn)``'s frames (windows, or pairs at any rate) into ``output``, a video at the new
    rate with the input's audio (``codec``, ``crf``, ``lossless``: the writer's) or PNG
    frames. With a frame-rate factor the input frames are kept exactly where an output
    falls on them (they are the keyframes), so a lossless output gives them back bit for
    bit. ``workers`` windows or pairs run at once, the CPUs shared among them
    (:func:`tcvbm.workers.intra_op_threads`).
    """
    started = time.perf_counter()
    warn = RepairCounter()
    resolve_output(output, codec, crf, lossless)   # before reading: refused names lose nothing
    with open_video(input) as reader:
        resolve_output(output, codec, crf, lossless, reader.colour)   # at the input's depth
        bundle = resolve_bundle(model)
        if bundle.task.name != task:
            raise ValueError(f"model: {model_label(model)} is a {bundle.task.name!r} model, "
                             f"not a {kind} model")
        run = body(bundle, reader, warn)
        if run.frames_in == 1 and run.frames_out > 1:
            warn(f"input: {input} has a single frame; it is repeated {run.frames_out} times")
        stream = run.frames
        if progress:
            stream = with_progress(stream, run.frames_out, progress_label)
        with intra_op_threads(workers):
            frames_out = write_counted(prefetched(stream), output, run.fps, audio_from=input,
                                       codec=codec, crf=crf, lossless=lossless,
                                       colour=reader.colour)
    duplicates = run.duplicates.duplicates if run.duplicates is not None else None
    return _summary(input, output, run.frames_in, frames_out, started, model, bundle, steps,
                    sampler, warn.count, progress, run.cuts.cuts, duplicates)


def interpolate(input: str | os.PathLike, output: str | os.PathLike,
                factor: float | None = None, model="default-interp", steps: int | None = None,
                sampler: str | None = None, device: str = "cpu", precision: str = "fp32", *,
                fps: float | None = None, dedup: bool = False, overlap: int | None = None,
                tile: int | None = None, batch: int = 1, scene_cuts: bool = True,
                scene_threshold: float = 1.0, seed: int = 0, compile: bool = False,
                progress: bool = True, codec: str | None = None, crf: int = DEFAULT_CRF,
                lossless: bool = False, workers: int | None = None) -> RunSummary:
    """Raise the frame rate of ``input`` by ``factor`` (default 2) or to ``fps``; writes
    ``output`` atomically.

    Same duration (within one output frame), audio copied, input frames kept exactly
    wherever an output falls on one, shots never blended across cuts. ``factor``: any
    number above 1 (2, 3, 2.5); ``fps``: any output rate (60, 60000/1001 as
    ``60000 / 1001``), instead of ``factor``. A factor that is a power of the model's own
    (x2, x4, x8 with an x2 model) runs windows of the model's layout, x4/x8 by repeated
    passes; any other rate, and ``dedup``, runs pair by pair at the outputs' exact times
    (:mod:`tcvbm.retime`), variable-rate input at its own timestamps. ``dedup=True``
    finds repeated frames (animation on twos, 24 fps padded to 30; within 0.5 8-bit levels
    on average and 8 in every 16x16 block of the last unique frame) and interpolates over
    them at the times the unique frames first appear, so motion does not stall; the
    summary counts them.
    ``overlap`` (windows only) counts input frames shared by neighbouring windows (default:
    one, the keyframe where they meet; it is kept exactly, so windows join without
    blending and every in-between frame costs one model call; more overlap averages
    windows).
    ``scene_threshold`` scales both thresholds of the cut detector
    (:meth:`tcvbm.scenes.SceneCutDetector.scaled`: below 1 finds more cuts, above 1 fewer);
    ``scene_cuts=False`` turns it off.
    ``output``: a video (``.mp4``, ``.mkv``, ``.mov``, ``.avi``) or PNG frames (``DIR/`` or
    a pattern such as ``frames_%06d.png``; :mod:`tcvbm.data.outputs`). ``codec``: h264
    (default), h265 or ffv1 (videos only); ``crf``: x264/x265 quality (0-51, lower is
    better); ``lossless``: RGB-exact output instead (``crf`` then does not apply).
    ``workers``: windows (or pairs) made at once, each on its own thread with its share of
    the CPUs (default: one per CPU, at most 4, on a CPU; one on a GPU); the output does not
    depend on it.
    """
    if factor is None and fps is None:
        factor = 2
    rate = partial(output_rate, factor=factor, fps=fps)
    rate(1.0)   # the rate's checks (one of factor/fps, factor > 1, fps > 0) before any work
    sampling = _Sampling(steps, sampler, device, precision, tile, batch, seed, compile,
                         worker_count(workers, device))
    cuts = SceneCutDetector.scaled(scene_threshold, enabled=scene_cuts)

    def body(bundle: InferenceBundle, reader: VideoReader, warn: RepairCounter) -> _Streamed:
        keyframes, model_factor = window_inputs(bundle)
        passes = None if fps is not None or dedup else power_count(factor, model_factor)
        if passes is not None:
            plan = _PassPlan(keyframes, model_factor, 1, passes)
            return _window_passes(lambda _: plan, sampling, overlap, cuts)(bundle, reader, warn)
        if overlap is not None:
            raise ValueError(f"overlap: shares input frames between windows of x{model_factor} "
                             f"passes; fps, dedup and other factors interpolate pair by pair")
        return _retimed(rate, sampling, dedup, cuts)(bundle, reader, warn)

    return _restore_video(input, output, model, "interp", "frame-interpolation", body,
                          workers=sampling.workers, steps=steps, sampler=sampler, progress=progress,
                          progress_label="interpolate", codec=codec, crf=crf,
                          lossless=lossless)


def upscale(input: str | os.PathLike, output: str | os.PathLike, scale: int | None = None,
            model="default-vsr", steps: int | None = None, sampler: str | None = None,
            device: str = "cpu", precision: str = "fp32", *, overlap: int | None = None,
            tile: int | None = None, batch: int = 1, seed: int = 0, compile: bool = False,
            progress: bool = True, codec: str | None = None, crf: int = DEFAULT_CRF,
            lossless: bool = False, workers: int | None = None) -> RunSummary:
    """Upscale every frame of ``input`` by ``scale`` (default: the model's) with a VSR model,
    by default the shipped x4 ``default-vsr`` (docs/models.md).

    Image super-resolution models are VSR models of one frame and run the same way.
    ``output``, ``codec``, ``crf``, ``lossless``, ``workers``: as for :func:`interpolate`.
    """

    def plan(bundle: InferenceBundle) -> _PassPlan:
        model_scale = bundle.task.scale
        stages = stage_count(scale or model_scale, model_scale, "scale")
        return _PassPlan(window_inputs(bundle)[0], 1, model_scale, stages)

    sampling = _Sampling(steps, sampler, device, precision, tile, batch, seed, compile,
                         worker_count(workers, device))
    body = _window_passes(plan, sampling, overlap, SceneCutDetector())
    return _restore_video(input, output, model, "vsr", "super-resolution", body,
                          workers=sampling.workers, steps=steps, sampler=sampler, progress=progress,
                          progress_label="upscale", codec=codec, crf=crf, lossless=lossless)


def image_to_video(image: str | os.PathLike, output: str | os.PathLike,
                   frames: int | None = None, fps: float = 8.0, model=None,
                   steps: int | None = None, sampler: str | None = None, device: str = "cpu",
                   precision: str = "fp32", *, tile: int | None = None, seed: int = 0,
                   compile: bool = False, progress: bool = True, codec: str | None = None,
                   crf: int = DEFAULT_CRF, lossless: bool = False) -> RunSummary:
    """Animate ``image`` into ``frames`` frames (default: the model's clip length).

    Longer videos chain windows: each new window starts from the last frame generated, so
    consecutive windows share one frame exactly instead of cutting.
    ``output``, ``codec``, ``crf``, ``lossless``: as for :func:`interpolate`.
    """
    if model is None:
        raise ValueError("model: image-to-video needs a trained i2v model (--model)")
    if fps <= 0:
        raise ValueError(f"fps: must be > 0, got {fps}")
    started = time.perf_counter()
    resolve_output(output, codec, crf, lossless)
    bundle = resolve_bundle(model)
    if bundle.task.name != "i2v":
        raise ValueError(f"model: {model_label(model)} is a {bundle.task.name!r} model, "
                         "not an image-to-video model")
    frames = frames or bundle.num_frames
    if frames < 1:
        raise ValueError(f"frames: must be >= 1, got {frames}")
    first = read_image(image)
    fn = build_window_fn(bundle, 1, steps, sampler, device, precision, tile, 1, seed,
                         compile)

    def generate() -> Iterator[Tensor]:
        current = from_uint8(first.unsqueeze(0))      # (C, 1, H, W)
        yield first
        made = 1
        while made < frames:
            clip = fn(current.unsqueeze(0))[0]          # (C, N, H, W)
            for i in range(1, min(clip.shape[1], frames - made + 1)):
                yield to_uint8(clip[:, i:i + 1].clamp(-1, 1))[0]
                made += 1
            current = clip[:, -1:]

    stream: Iterable[Tensor] = generate()
    if progress:
        stream = with_progress(stream, frames, "i2v")
    frames_out = write_counted(stream, output, fps, audio_from=None, codec=codec, crf=crf,
                               lossless=lossless)
    return _summary(image, output, 1, frames_out, started, model, bundle, steps, sampler, 0,
                    progress)


def sample_files(run_dir: str | os.PathLike, input: str | os.PathLike,
                 output_dir: str | os.PathLike, steps: int | None = None,
                 sampler: str | None = None, device: str = "cpu",
                 precision: str = "fp32", *, tile: int | None = None, seed: int = 0,
                 compile: bool = False, codec: str | None = None, crf: int = DEFAULT_CRF,
                 lossless: bool = False) -> list[Path]:
    """Run a trained model on a file or every video/image in a folder (``tcvbm sample``).

    The run's own task decides the command: interpolation at the model's factor,
    upscaling at its scale, image-to-video from images; outputs are videos named after
    inputs, ``.mp4`` (which holds the lossless encoding too), ``.mkv`` for ``codec="ffv1"``,
    which MP4 cannot hold. ``codec``, ``crf``, ``lossless``: as for :func:`interpolate`.
    """
    root = Path(input)
    if root.is_dir():
        files = sorted(p for p in root.iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    elif root.is_file():
        files = [root]
    else:
        raise ValueError(f"input: {root} does not exist")
    if not files:
        raise ValueError(f"input: no video or image files in {root}")
    out_dir = Path(output_dir)
    suffix = ".mkv" if codec == "ffv1" else ".mp4"
    resolve_output(out_dir / f"{files[0].stem}{suffix}", codec, crf, lossless)
    bundle = resolve_bundle(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = bundle.task.name
    common = dict(steps=steps, sampler=sampler, device=device, precision=precision, tile=tile,
                  seed=seed, compile=compile, codec=codec, crf=crf, lossless=lossless)
    written = []
    for path in files:
        target = out_dir / f"{path.stem}{suffix}"
        if name == "interp":
            interpolate(path, target, bundle.task.factor, model=bundle, **common)
        elif name == "vsr":
            upscale(path, target, bundle.task.scale, model=bundle, **common)
        elif name == "i2v":
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"input: {path} is not an image; i2v models start from one")
            image_to_video(path, target, model=bundle, **common)
        else:
            raise ValueError(f"model: task {name!r} has no sampling command")
        written.append(target)
    return written
