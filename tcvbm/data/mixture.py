"""Training clips drawn from several sources by weight: real videos mixed with synthetic motion.

Real video is scarce and synthetic motion is not real, so training wants both, in chosen
proportions. :class:`Mixture` interleaves the streams of its sources (any of the datasets
:func:`tcvbm.data.build_dataset` makes) with a seeded draw by weight, and is itself a clip
dataset with the interface of :class:`~tcvbm.data.clips.ClipDataset`, so the training loop
reads it like any other:

* ``len`` is the clips per epoch of this shard: an epoch holds as many clips as the sources
  hold together, split between ranks and DataLoader workers as SyntheticMotion splits its
  clips (rank ``r`` takes slots ``r::world_size``, worker ``w`` of it every ``w``-th of those);
* each source is sharded as it would be alone (``set_shard`` is passed on, and the source
  splits itself between workers), so a worker opens only its own videos, and no two shards
  read the same clip of a source epoch;
* what a shard yields is a pure function of (``seed``, epoch, rank, worker): the draw of
  each slot's source is seeded by them, and each source's stream is fixed by its own seed.

A source is read pass after pass: a small source with a large weight is read again within
an epoch. Pass ``p`` of epoch ``e`` is the source's own epoch ``e * clips_per_epoch + p``,
so no two passes of any epochs share a source epoch (a pass yields at least one clip, and
an epoch takes at most ``clips_per_epoch`` clips of a source): each is a fresh draw of the
source's offsets, crops and flips, not a replay. A source with nothing in a shard (fewer
videos than ranks times workers) leaves that shard's draw, whose other sources then fill
its slots; a shard where every source has nothing yields none of its slots, with a warning
(the epoch is then shorter than ``len``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from tcvbm.data.clips import ShardedEpochs
from tcvbm.data.layouts import STRIDELESS_LAYOUTS, build_dataset
from tcvbm.data.video import Size

__all__ = ["ClipSource", "SourceSpec", "Mixture", "build_mixture"]


class ClipSource(Protocol):
    """What a mixture needs of a source: the sharded, epoch-seeded clip stream interface."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Tensor]: ...

    def set_epoch(self, epoch: int) -> None: ...

    def set_shard(self, rank: int, world_size: int) -> None: ...


class SourceSpec(Protocol):
    """A source as a config names it (``data.sources`` entries have these fields)."""

    root: str
    layout: str
    weight: float
    options: Mapping[str, Any]


class _SourcePasses:
    """One source's clips in this shard, pass after pass, from the source epoch ``first``."""

    def __init__(self, source: ClipSource, first: int) -> None:
        self.source, self.epoch = source, first
        self.clips: Iterator[Tensor] | None = None

    def next(self) -> Tensor | None:
        """The next clip; None when a fresh pass yields nothing (the shard has none)."""
        if self.clips is not None:
            clip = next(self.clips, None)
            if clip is not None:
                return clip
        self.source.set_epoch(self.epoch)
        self.epoch += 1
        self.clips = iter(self.source)
        return next(self.clips, None)


class Mixture(ShardedEpochs):
    """Clips of ``sources`` interleaved by a seeded draw, source ``k`` with probability
    ``weights[k] / sum(weights)`` per clip.

    The sources are the mixture's own from then on: it sets their epoch and shard. Use it
    like :class:`~tcvbm.data.clips.ClipDataset`: ``set_epoch`` before each epoch,
    ``set_shard(rank, world_size)`` for several processes, a DataLoader without shuffle or
    sampler.
    """

    def __init__(self, sources: Sequence[ClipSource], weights: Sequence[float],
                 seed: int = 0) -> None:
        if not sources or len(weights) != len(sources):
            raise ValueError(f"a mixture needs one weight per source and at least one source, "
                             f"got {len(sources)} sources and {len(weights)} weights")
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"mixture weights must be positive numbers, got {list(weights)}")
        super().__init__()
        self.sources, self.weights, self.seed = list(sources), np.array(weights, float), seed
        self.set_shard(0, 1)
        self.clips_per_epoch = sum(len(s) for s in self.sources)

    def __len__(self) -> int:
        """Clips per epoch for this shard (all clips when not sharded)."""
        return len(range(self.rank, self.clips_per_epoch, self.world_size))

    def set_shard(self, rank: int, world_size: int) -> None:
        """Read only this process's share of every source (multi-process training)."""
        super().set_shard(rank, world_size)
        for source in self.sources:
            source.set_shard(rank, world_size)

    def __iter__(self) -> Iterator[Tensor]:
        """This shard's clips: its slots of the epoch, each from a source drawn by weight."""
        epoch, wid, workers = self._start_pass()
        slots = len(range(self.rank, self.clips_per_epoch, self.world_size)[wid::workers])
        # tag 5: draws apart from those of sources seeded alike (ClipDataset uses 1 to 3)
        rng = np.random.default_rng([self.seed, epoch, self.rank * workers + wid, 5])
        streams = [_SourcePasses(s, epoch * self.clips_per_epoch) for s in self.sources]
        weights = self.weights.copy()
        for taken in range(slots):
            clip = None
            while clip is None:
                if not weights.any():
                    warnings.warn(f"mixture: worker {wid} of rank {self.rank} has no clips in "
                                  f"any source (each has fewer videos or clips than the "
                                  f"{self.world_size * workers} shards); {slots - taken} clips "
                                  "of the epoch are left out", RuntimeWarning, stacklevel=2)
                    return
                k = int(rng.choice(len(weights), p=weights / weights.sum()))
                clip = streams[k].next()
                if clip is None:
                    weights[k] = 0.0
            yield clip

    def stats(self) -> dict:
        """Counts for logs: clips per epoch, unreadable files skipped, each source's stats."""
        per_source = [s.stats() if callable(getattr(s, "stats", None)) else {}
                      for s in self.sources]
        return {"clips_per_epoch": len(self),
                "skipped": sum(p.get("skipped", 0) for p in per_source),
                "sources": per_source}

    def __repr__(self) -> str:
        weights = ", ".join(f"{w:g}" for w in self.weights)
        return (f"Mixture(weights=[{weights}], sources={self.sources!r}, "
                f"clips_per_epoch={len(self)})")


def build_mixture(sources: Sequence[SourceSpec], num_frames: int, size: Size,
                  split: str = "train", stride: int = 1, seed: int = 0) -> Mixture:
    """The :class:`Mixture` of ``sources``, each built by :func:`tcvbm.data.build_dataset`.

    Every source gets the clip shape, ``split`` and ``seed`` (its ``options`` may set its
    own ``seed``) and, unless its layout has no frame stride (``synthetic``), ``stride`` as
    the default of its ``options.stride``. A source that cannot be built raises a
    ValueError naming its index and root.
    """
    built = []
    for k, spec in enumerate(sources):
        defaults: dict[str, Any] = {"seed": seed}
        if spec.layout not in STRIDELESS_LAYOUTS:
            defaults["stride"] = stride
        try:
            built.append(build_dataset(spec.root, num_frames, size, layout=spec.layout,
                                       split=split, **{**defaults, **spec.options}))
        except (ValueError, TypeError) as err:
            raise ValueError(f"mixture source {k} (root {spec.root!r}): {err}") from err
    return Mixture(built, [spec.weight for spec in sources], seed)
