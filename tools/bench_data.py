#!/usr/bin/env python
"""Loader throughput: clips/s of 16 x 256 x 256 clips from the real sample videos.

Three tables:

1. readers: a random 16-frame clip resized to 256 px, opening a reader per clip
   (the naive loader) against keeping it open, decord against PyAV;
2. dataset: ``VideoFolder`` through a ``DataLoader`` at several worker counts,
   decord against PyAV, one clip per decoded stretch against several, and with the
   in-memory frame cache;
3. keyframe interval: 8 random frames of a 100-frame 256 px clip, and dataset
   clips/s, on copies re-encoded with a keyframe every 250 frames (x264's
   default) and every 8 (``tools/reencode_keyframes.py``).

Usage::

    python tools/fetch_sample_clips.py
    python tools/bench_data.py [--workers 0 1 2] [--seconds 4] [--json out.json]

Each cell runs for about ``--seconds`` (after a warm-up), so the whole run takes
roughly (cells x seconds); on 2 CPU cores the default is under 3 minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from tcvbm.data import VideoFolder, VideoReader, worker_options
from tcvbm.data.video import decord
from tcvbm.data.writer import VideoWriter

REPO_ROOT = Path(__file__).resolve().parent.parent
N, SIZE = 16, 256


def _rate(fn, seconds: float) -> float:
    """Calls of ``fn`` per second (each call returns how many clips it made)."""
    fn()  # warm-up: imports, first open, caches
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def bench_readers(videos: list[Path], seconds: float) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for backend in (["decord"] if decord is not None else []) + ["pyav"]:
        for keep_open in (False, True):
            readers = {p: VideoReader(p, backend=backend, threads=1) for p in videos}

            def one_clip() -> int:
                path = videos[rng.integers(len(videos))]
                reader = (readers[path] if keep_open
                          else VideoReader(path, backend=backend, threads=1))
                start = int(rng.integers(len(reader) - N + 1))
                reader.read_clip(start, N, size=SIZE)
                if not keep_open:
                    reader.close()
                return 1

            rows.append({"backend": backend,
                         "readers": "kept open" if keep_open else "opened per clip",
                         "clips/s": _rate(one_clip, seconds)})
    return rows


def _epoch_rate(ds: VideoFolder, seconds: float, loader: DataLoader | None = None) -> float:
    """Clips per second over whole epochs, each on the next epoch of ``ds``, read through
    ``loader`` or, without one, from ``ds`` itself (one clip an item).

    A function of its own so that the timed closure holds this call's dataset and loader, not
    the caller's variables, which the caller deletes to free each cell's workers.
    """
    epoch = [0]

    def one_epoch() -> int:
        ds.set_epoch(epoch[0])
        epoch[0] += 1
        if loader is None:
            return sum(1 for _ in ds)
        return sum(len(batch) for batch in loader)

    return _rate(one_epoch, seconds)


def bench_dataset(root: Path, workers: list[int], seconds: float, configs: list[dict],
                  cache: Path) -> list[dict]:
    rows = []
    for cfg in configs:
        for w in workers:
            ds = VideoFolder(root, N, SIZE, clips_per_video=cfg["clips_per_video"],
                             backend=cfg["backend"], cache_frames=cfg.get("cache_frames", False),
                             output=cfg.get("output", "float"), decode_threads=1, cache_dir=cache)
            # Workers as the trainer starts them (spawned, see tcvbm.train.loop.worker_options),
            # kept for the whole cell so their start-up is not timed.
            loader = DataLoader(ds, batch_size=4, persistent_workers=w > 0, **worker_options(w))
            rows.append({"backend": cfg["backend"], "clips_per_video": cfg["clips_per_video"],
                         "output": cfg.get("output", "float"),
                         "frame cache": cfg.get("cache_frames", False),
                         "workers": w, "clips/s": _epoch_rate(ds, seconds, loader)})
            # Free this cell's readers and workers before the next cell.
            del loader, ds
            gc.collect()
    return rows


def reencode_square(src: Path, dst: Path, gop: int, frames: int = 100) -> Path:
    """First ``frames`` frames of ``src``, centre-cropped to 256 x 256, keyframe every ``gop``."""
    reader = VideoReader(src, backend="pyav")
    clip = reader.read(range(min(frames, len(reader))), size=SIZE)
    with VideoWriter(dst, reader.fps, gop=gop) as writer:
        writer.write(clip)
    return dst


def bench_keyframes(videos: list[Path], tmp: Path, seconds: float, cache: Path) -> list[dict]:
    rows = []
    rng = np.random.default_rng(1)
    for gop in (250, 8):
        folder = tmp / f"gop{gop}"
        copies = [reencode_square(v, folder / v.name, gop) for v in videos]
        for backend in (["decord"] if decord is not None else []) + ["pyav"]:
            readers = [VideoReader(p, backend=backend, threads=1) for p in copies]

            def eight_frames() -> int:
                reader = readers[rng.integers(len(readers))]
                reader.read(sorted(rng.choice(len(reader), 8, replace=False).tolist()))
                return 1

            ms = 1000 / _rate(eight_frames, seconds / 2)
            ds = VideoFolder(folder, N, SIZE, backend=backend, decode_threads=1,
                             cache_dir=cache / f"gop{gop}")
            rows.append({"gop": gop, "backend": backend, "ms per 8 random frames": ms,
                         "dataset clips/s (0 workers)": _epoch_rate(ds, seconds / 2)})
    return rows


def _table(title: str, rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = [title, " | ".join(k.ljust(w) for k, w in zip(keys, widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "data" / "samples")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    videos = sorted(args.samples.glob("*.mp4"))
    if not videos:
        sys.exit(f"no sample clips in {args.samples}: run python tools/fetch_sample_clips.py first")
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, decord {'yes' if decord else 'no'}; "
          f"{len(videos)} sample videos; {N}x{SIZE}x{SIZE} clips")
    results = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "samples"
        root.mkdir()
        for v in videos:
            os.symlink(v.resolve(), root / v.name)
        backends = (["auto"] if decord is not None else []) + ["pyav"]
        configs = [{"backend": b, "clips_per_video": 1} for b in backends]
        configs += [{"backend": backends[0], "clips_per_video": 4},
                    {"backend": backends[0], "clips_per_video": 4, "output": "uint8"},
                    {"backend": backends[0], "clips_per_video": 4, "cache_frames": True,
                     "output": "uint8"}]
        results["readers"] = bench_readers(videos, args.seconds)
        print(_table("\n1. readers (one process)", results["readers"]), flush=True)
        results["dataset"] = bench_dataset(root, args.workers, args.seconds, configs, tmp / "cache")
        print(_table("\n2. VideoFolder + DataLoader (batch 4)", results["dataset"]), flush=True)
        results["keyframes"] = bench_keyframes(videos, tmp, args.seconds, tmp / "cache")
        print(_table("\n3. keyframe interval (100-frame 256x256 copies)", results["keyframes"]),
              flush=True)
        shutil.rmtree(tmp / "cache", ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
