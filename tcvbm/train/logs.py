"""The training loop's log windows and its ``metrics.jsonl``.

Between two log lines the loop collects each network's losses and gradient norms, its loss
per equal-width t bucket (:class:`LogWindow`) and where the steps' wall time went
(:class:`Throughput`); every ``log_every`` steps their means become one line of
``RUN_DIR/metrics.jsonl`` (:class:`MetricsFile`), beside TensorBoard.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tcvbm.atomic import AtomicPath
from tcvbm.train.streams import DataStream

__all__ = ["METRICS_FILE", "LogSettings", "LogWindow", "Throughput", "MetricsFile",
           "progress_postfix"]

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class LogSettings:
    """How often the loop logs, into how many t buckets it splits the loss, whether it shows
    a progress bar."""

    every: int = 10
    t_buckets: int = 4
    progress: bool = True


class _TBuckets:
    """Running loss sums per equal-width t bucket."""

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


class LogWindow:
    """Per network: the mean loss and gradient norm of the window's steps and the loss per t
    bucket (``loss/<net>``, ``grad_norm/<net>``, ``loss_t/<net>/t0.00-0.25``, ...)."""

    def __init__(self, networks: list[str], t_buckets: int) -> None:
        self.networks = networks
        self.buckets = {n: _TBuckets(t_buckets) for n in networks}
        self.values: dict[str, list[float]] = {}

    def add(self, network: str, per_sample: Tensor, t: Tensor, grad_norm: float) -> float:
        """Record one finite step of ``network``; returns its mean loss."""
        self.buckets[network].add(t, per_sample)
        loss = float(per_sample.mean())
        self.values.setdefault(f"loss/{network}", []).append(loss)
        self.values.setdefault(f"grad_norm/{network}", []).append(grad_norm)
        return loss

    def pop(self) -> dict[str, float]:
        """The window's figures; starts the next window."""
        out = {k: sum(v) / len(v) for k, v in self.values.items()}
        self.values.clear()
        for n in self.networks:
            out.update(self.buckets[n].pop(f"loss_t/{n}"))
        return out


class Throughput:
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

    def next_batch(self, stream: DataStream) -> Tensor:
        started = time.perf_counter()
        batch = stream.next()
        self.waiting += time.perf_counter() - started
        return batch

    def pop(self) -> dict[str, float]:
        """The window's figures (none before its first step); starts the next window."""
        if self.steps == 0:
            return {}
        out = {"perf/clips_per_s": self.clips / self.seconds,
               "perf/step_s": self.seconds / self.steps,
               "perf/data_wait": self.waiting / self.seconds}
        self.steps, self.clips, self.seconds, self.waiting = 0, 0, 0.0, 0.0
        return out


def progress_postfix(logs: dict[str, float]) -> dict[str, str]:
    """What the progress bar shows of a log line: the losses, clips/s and the data wait."""
    shown = {k.split("/")[-1]: f"{v:.4g}" for k, v in logs.items() if k.startswith("loss/")}
    if "perf/clips_per_s" in logs:
        shown["clips/s"] = f"{logs['perf/clips_per_s']:.3g}"
        shown["data wait"] = f"{logs['perf/data_wait']:.0%}"
    return shown


class MetricsFile:
    """``RUN_DIR/metrics.jsonl``: one JSON line per logged step and per evaluation."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE

    def append(self, step: int, record: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **record}) + "\n")

    def truncate(self, step: int) -> None:
        """Drop lines past ``step``: a resumed run rewrites them, so the file stays one run."""
        if not self.path.is_file():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        with AtomicPath(self.path) as staged:
            staged.write_text("".join(line + "\n" for line in keep))
