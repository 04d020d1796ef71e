"""A bundle's model as window and pair functions: what the inference commands sample.

The commands of :mod:`tcvbm.pipeline` and the scoring of :mod:`tcvbm.evaluate` see a trained
model only through functions of tensors: a ``WindowFn`` (:mod:`tcvbm.windows`) maps one
window's observation to the clip the model makes of it, a ``PairFn`` (:mod:`tcvbm.retime`)
makes the frames at any times between two inputs. Both prepare their source with the task's
own ``prepare`` (the function used in training) and run the bundle's sampler, seeded, so one
input gives one output; both run in spatial tiles (:func:`tcvbm.windows.tiled`), padded to the
model's size multiple, so a frame of any size fits the model and its memory stays bounded.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor

from tcvbm import samplers
from tcvbm.retime import PairFn
from tcvbm.windows import DEFAULT_MULTIPLE, DEFAULT_TILE, DEFAULT_TILE_OVERLAP, WindowFn, tiled
from tcvbm.workers import call_generator

__all__ = ["model_window_fn", "window_inputs", "tiling", "build_window_fn", "build_pair_fn",
           "resolve_bundle", "model_label"]


def model_window_fn(bundle, steps: int | None = None, sampler: str | None = None,
                    device: str = "cpu", precision: str = "fp32", seed: int = 0,
                    compile: bool = False) -> WindowFn:
    """A ``WindowFn`` that prepares observations with the bundle's task (the source and, for
    a task that has one, the context the model reads with it) and samples the model.

    ``steps``/``sampler`` default to the bundle's own (the values it was trained or
    distilled for). Sampling is seeded so the same input gives the same output: a call with
    a ``key`` (a window's or pair's number, then its tile's) draws from its own stream of
    ``seed`` and ``key``, so calls may run on several threads at once; calls without one
    share one stream of ``seed``, in the order they are made.

    The function's optional ``times`` (interpolation only) places the clip's frames at any
    positions between the observation's keyframes, in keyframe units
    (:meth:`tcvbm.tasks.FrameInterpolation.prepare_at`), with the bridge on those frames'
    times (:meth:`~tcvbm.tasks.FrameInterpolation.bridge_times`); without it, the bundle's
    training layout of ``num_frames`` frames and its own bridge. Windows and pairs
    (:func:`build_pair_fn`) are one sampler.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
    steps = int(steps or bundle.steps or 1)
    sample = samplers.get_sampler(sampler or bundle.sampler or "stochastic")
    dev = torch.device(device)
    model = bundle.model.to(dev).eval()
    if compile:
        model.forward = torch.compile(model.forward)
    timesteps = samplers.get_timesteps(steps, device=dev)
    shared = torch.Generator(dev).manual_seed(seed)

    def fn(obs: Tensor, times: Sequence[float] | None = None,
           key: tuple[int, ...] | None = None) -> Tensor:
        generator = shared if key is None else call_generator(dev, seed, key)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            if times is None:
                x1, context = bundle.task.prepare(obs.to(dev), bundle.num_frames)
                bridge = bundle.bridge
            else:
                x1, context = bundle.task.prepare_at(obs.to(dev), times)
                bridge = bundle.bridge.with_num_frames(len(times)).with_times(
                    bundle.task.bridge_times(times))
            x0 = sample(bundle.model_fn(x1, generator=generator, context=context), x1,
                        bridge, timesteps, generator=generator)
        return x0.float().clamp(-1, 1).cpu()

    return fn


def window_inputs(bundle) -> tuple[int, int]:
    """(input frames per window, frame-rate factor of one pass) for the bundle's task.

    An interpolation model sees the keyframes of its clip; any other model sees as many
    input frames as it makes, at the same rate.
    """
    task = bundle.task
    if task.name == "interp":
        keyframes = task.num_keyframes(bundle.num_frames)
        if (keyframes - 1) * task.factor + 1 > bundle.num_frames or keyframes < 2:
            raise ValueError(f"model: {bundle.num_frames} frames cannot hold two keyframes at "
                             f"factor {task.factor}")
        return keyframes, task.factor
    return bundle.num_frames, 1


def resolve_bundle(model):
    """A loaded bundle from a name/path, or an ``InferenceBundle`` itself (passed through)."""
    from tcvbm.runs import load_bundle

    if model is None:
        raise ValueError("model: none given; name a shipped model (default-interp, "
                         "default-vsr), a run directory or a saved model directory")
    return model if hasattr(model, "model_fn") else load_bundle(model)


def model_label(model) -> str:
    """How a model is named in summaries and tables."""
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__


def tiling(bundle, scale: int, tile: int | None = None,
           batch: int = 1) -> Callable[[WindowFn], WindowFn]:
    """Wraps a window function in tiles of at most ``tile`` px (default 512), padded to the
    model's size multiple, ``batch`` tiles per call."""
    multiple = int(getattr(bundle.model, "multiple", DEFAULT_MULTIPLE))
    tile = tile or DEFAULT_TILE
    return partial(tiled, tile=tile, overlap=min(DEFAULT_TILE_OVERLAP, tile // 4),
                   multiple=multiple, scale=scale, max_batch=batch)


def build_window_fn(bundle, scale: int, steps: int | None, sampler: str | None, device: str,
                    precision: str, tile: int | None, batch: int, seed: int,
                    compile: bool) -> WindowFn:
    """The bundle's sampler wrapped in tiles, padded to the model's size multiple."""
    fn = model_window_fn(bundle, steps, sampler, device, precision, seed, compile)
    return tiling(bundle, scale, tile, batch)(fn)


def build_pair_fn(bundle, steps: int | None = None, sampler: str | None = None,
                  device: str = "cpu", precision: str = "fp32", tile: int | None = None,
                  batch: int = 1, seed: int = 0, compile: bool = False) -> PairFn:
    """A :class:`tcvbm.retime.Retimer`'s ``pair_fn`` from an interpolation bundle.

    For two inputs and the times ``taus`` in (0, 1) between them, the model samples a clip
    of the pair's two keyframes with frames at ``[0, *taus, 1]`` (keyframe units: each
    frame's context carries its ``1 - tau``, the bridge correlates them by their real
    gaps), through the tiles and the sampler of :func:`build_window_fn`; the in-between
    frames come back, (len(taus), C, H, W).
    """
    fn = model_window_fn(bundle, steps, sampler, device, precision, seed, compile)
    tiles = tiling(bundle, 1, tile, batch)

    def pair(left: Tensor, right: Tensor, taus: list[float],
             key: tuple[int, ...] | None = None) -> Tensor:
        clip = tiles(partial(fn, times=[0.0, *taus, 1.0]))(torch.stack([left, right], 1)[None],
                                                           key=key)
        return clip[0, :, 1:-1].transpose(0, 1)

    return pair
