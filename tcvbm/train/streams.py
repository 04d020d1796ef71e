"""The training loop's data: micro-batches of clips and where a run is in its data.

For a map-style dataset the global batch of step ``s`` is a pure function of (seed, s)
(:class:`StepBatches`), so a resumed run simply starts at the restored step. A clip dataset
that shards and shuffles itself (an ``IterableDataset``, such as
:class:`tcvbm.data.VideoFolder`) has its (epoch, batches taken) saved per process with each
checkpoint (:func:`write_data_state`) and read back on resume (:func:`read_data_state`).
Either way each micro-batch knows the slots its samples take in the step's global batch,
which seed their randomness (:class:`tcvbm.train.objectives.SampleRandom`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from tcvbm.data import worker_options

__all__ = ["Batches", "StepBatches", "DataStream", "data_stream", "read_data_state",
           "write_data_state"]


@dataclass(frozen=True)
class Batches:
    """How a process cuts its data into micro-batches.

    ``size`` clips per process and micro-batch, ``accum`` micro-batches per step (so a step's
    global batch is ``size * processes * accum``), read by ``workers`` loader processes.
    """

    size: int
    accum: int = 1
    workers: int = 0


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
            seeded = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perms = {epoch: torch.randperm(self.num_items, generator=seeded)}
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

    def __init__(self, batches: Batches, world: int, rank: int) -> None:
        self.batch, self.world, self.rank = batches.size, world, rank
        self.group = batches.size * world * batches.accum

    def slots(self, micro: int) -> list[int]:
        first = (micro * self.world + self.rank) * self.batch
        return list(range(first, first + self.batch))


class _IndexStream(_Slots):
    """Micro-batches of a map-style dataset: a pure function of the step (:class:`StepBatches`)."""

    def __init__(self, dataset: Dataset, batches: Batches, seed: int, world: int, rank: int,
                 start_step: int, max_steps: int) -> None:
        super().__init__(batches, world, rank)
        count = len(dataset)  # type: ignore[arg-type]
        self.batches = StepBatches(count, batches.size, world, rank, batches.accum, seed,
                                   start_step, max_steps)
        self._it = iter(DataLoader(dataset, batch_sampler=self.batches, collate_fn=_collate,
                                   **worker_options(batches.workers)))

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

    def __init__(self, dataset: Dataset, batches: Batches, world: int, rank: int,
                 state: dict[str, int] | None) -> None:
        super().__init__(batches, world, rank)
        self.dataset, self.workers = dataset, batches.workers
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
                share = len(self.dataset)  # type: ignore[arg-type]
                raise ValueError(
                    f"data: this process's share of the dataset ({share} clips) is smaller "
                    f"than train.batch_size={self.batch}; raise data.options.clips_per_video "
                    "or lower the batch size") from None
            self.current, self.taken = self.current + 1, 0
            self._open(skip=0)
            return self.next()
        self.taken += 1
        return batch

    def epoch(self, step: int) -> int:
        return self.current

    def state(self) -> dict[str, int]:
        return {"epoch": self.current, "batches": self.taken}


DataStream = _IndexStream | _ShardStream


def data_stream(dataset: Dataset, batches: Batches, seed: int, world: int, rank: int,
                start_step: int, max_steps: int, state: dict[str, int] | None) -> DataStream:
    """This process's micro-batches from ``start_step`` on (``state``: its saved position)."""
    if isinstance(dataset, IterableDataset):
        return _ShardStream(dataset, batches, world, rank, state)
    return _IndexStream(dataset, batches, seed, world, rank, start_step, max_steps)


def _data_state_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / f"data_state_{rank}.json"


def write_data_state(checkpoint: Path, rank: int, stream: DataStream) -> None:
    """Save this process's data position into the checkpoint folder being written."""
    _data_state_file(checkpoint, rank).write_text(json.dumps(stream.state()))


def read_data_state(checkpoint: Path | None, rank: int) -> dict[str, int] | None:
    """This process's data position saved with ``checkpoint`` (None when there is none)."""
    if checkpoint is None:
        return None
    path = _data_state_file(checkpoint, rank)
    if not path.is_file():
        warnings.warn(f"{path} is missing (was the run resumed with more processes?); "
                      "this process starts a fresh epoch", stacklevel=2)
        return None
    return json.loads(path.read_text())
