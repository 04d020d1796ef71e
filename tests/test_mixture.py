"""Mixtures of clip sources: proportions, determinism, sharding, items, config and errors."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import tcvbm.data.clips as clips_module
from tcvbm.config import SourceSection, load_config
from tcvbm.data import Mixture, build_dataset, build_mixture, worker_options
from tcvbm.train.run import build_train_set

SIZE = (8, 12)


def _write_frames(folder: Path, count: int, low: int, high: int, seed: int) -> None:
    """Noise frames with values in [low, high): each source has its own brightness."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(low, high, (16, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:08d}.png")


@pytest.fixture
def roots(tmp_path) -> SimpleNamespace:
    """A dark and a bright REDS tree of frame sequences, and a folder of stills."""
    for seq in range(4):
        _write_frames(tmp_path / "dark" / "train_sharp" / f"{seq:03d}", 12, 0, 100, seq)
    for seq in range(2):
        _write_frames(tmp_path / "bright" / "train_sharp" / f"{seq:03d}", 12, 156, 256, 10 + seq)
    _write_frames(tmp_path / "stills", 2, 0, 256, 20)
    return SimpleNamespace(dark=tmp_path / "dark", bright=tmp_path / "bright",
                           stills=tmp_path / "stills", cache=tmp_path / "cache")


def _sources(roots, dark_weight: float = 1.0, bright_weight: float = 3.0,
             clips: int = 4) -> list[SourceSection]:
    cache = {"cache_dir": str(roots.cache), "short_side": 16}  # crops of unscaled frames
    return [SourceSection(str(roots.dark), "reds", dark_weight,
                          {"clips_per_video": clips, **cache}),
            SourceSection(str(roots.bright), "reds", bright_weight,
                          {"clips_per_video": clips, "hflip": True, **cache})]


def _build(sources, seed: int = 0) -> Mixture:
    return build_mixture(sources, 2, SIZE, seed=seed)


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.numpy().tobytes()).hexdigest()


def _epoch(ds, epoch: int, rank: int = 0, world: int = 1, worker=None,
           monkeypatch=None) -> list[torch.Tensor]:
    """One epoch of ``ds`` as shard ``rank`` of ``world`` read by DataLoader worker ``worker``
    (an (id, count) pair; None: the main process)."""
    if worker is not None:
        info = SimpleNamespace(id=worker[0], num_workers=worker[1])
        monkeypatch.setattr(clips_module, "get_worker_info", lambda: info)
    ds.set_shard(rank, world)
    ds.set_epoch(epoch)
    return list(ds)


def test_proportions_follow_the_weights(roots):
    """Bright is 1/3 of the clips the sources hold, but 3/4 of the weight."""
    ds = _build(_sources(roots, 1.0, 3.0, clips=40))
    assert len(ds) == 240
    for epoch in range(2):
        items = _epoch(ds, epoch)
        assert len(items) == 240
        bright = sum(float(x.mean()) > 0 for x in items) / len(items)
        assert abs(bright - 0.75) < 0.1, (epoch, bright)


def test_deterministic_per_seed_and_epoch(roots):
    a, b = _build(_sources(roots)), _build(_sources(roots))
    first = _epoch(a, 0)
    assert all(torch.equal(x, y) for x, y in zip(first, _epoch(b, 0)))
    later = _epoch(a, 1)
    assert not all(torch.equal(x, y) for x, y in zip(first, later))
    assert all(torch.equal(x, y) for x, y in zip(first, _epoch(a, 0)))
    other = _build(_sources(roots), seed=1)
    assert not all(torch.equal(x, y) for x, y in zip(first, _epoch(other, 0)))


def _source_streams(sources, epoch: int, length: int, rank: int = 0, world: int = 1,
                    worker=None, monkeypatch=None) -> list[list[str]]:
    """What each source yields alone in a shard, pass after pass, as the mixture reads it:
    pass ``p`` of epoch ``e`` is the source's epoch ``e * length + p``."""
    streams = []
    for spec in sources:
        alone = build_dataset(spec.root, 2, SIZE, layout=spec.layout, **spec.options)
        passes = [_epoch(alone, epoch * length + p, rank, world, worker, monkeypatch)
                  for p in range(4)]
        streams.append([_digest(x) for one in passes for x in one])
    return streams


def _assert_items_follow_their_sources(items: list[torch.Tensor], streams: list[list[str]]):
    """Every item is its source's next clip: taken in order, nothing foreign."""
    taken = [0] * len(streams)
    for x in items:
        d = _digest(x)
        k = next((k for k, s in enumerate(streams) if taken[k] < len(s) and s[taken[k]] == d),
                 None)
        assert k is not None, "an item that is not its source's next clip"
        taken[k] += 1
    return taken


def test_each_item_is_what_its_source_yields(roots):
    sources = [*_sources(roots, clips=2),
               SourceSection(str(roots.stills), "synthetic", 2.0,
                             {"clips_per_epoch": 5, "max_motion": 2.0})]
    ds = _build(sources)
    assert len(ds) == 8 + 4 + 5
    for epoch in (0, 1):
        taken = _assert_items_follow_their_sources(
            _epoch(ds, epoch), _source_streams(sources, epoch, len(ds)))
        assert sum(taken) == len(ds) and all(taken), taken


def test_shards_are_disjoint_and_cover_the_epoch(roots, monkeypatch):
    """2 ranks x 2 workers: each shard reads its sources' shares; together, one epoch."""
    sources = _sources(roots, clips=3)
    ds = _build(sources)
    total = len(ds)
    assert total == 18
    seen, lengths = [], []
    for rank in range(2):
        ds.set_shard(rank, 2)
        lengths.append(len(ds))
        counted = 0
        for wid in range(2):
            items = _epoch(ds, 1, rank, 2, (wid, 2), monkeypatch)
            streams = _source_streams(sources, 1, total, rank, 2, (wid, 2), monkeypatch)
            _assert_items_follow_their_sources(items, streams)
            counted += len(items)
            seen += [_digest(x) for x in items]
        assert counted == lengths[-1]
    assert lengths == [9, 9] and sum(lengths) == total
    assert len(seen) == total and len(set(seen)) == total  # no clip in two shards


def test_a_shard_without_clips_in_any_source_warns(roots, monkeypatch):
    ds = _build(_sources(roots)[1:])  # two videos, four shards
    with pytest.warns(RuntimeWarning, match="worker 1 of rank 1 has no clips in any source"):
        assert _epoch(ds, 0, 1, 2, (1, 2), monkeypatch) == []
    assert len(_epoch(ds, 0, 0, 2, (1, 2), monkeypatch)) == 2


def test_dataloader_workers_split_it(roots):
    ds = _build(_sources(roots, clips=2))
    ds.set_epoch(3)
    loader = DataLoader(ds, batch_size=2, **worker_options(2))
    got = [_digest(x) for batch in loader for x in batch]
    assert len(got) == len(ds) == 12 and len(set(got)) == 12


def test_a_missing_root_is_named(roots, tmp_path):
    missing = tmp_path / "nowhere"
    sources = [*_sources(roots), SourceSection(str(missing), "videos", 1.0, {})]
    with pytest.raises(ValueError, match=rf"mixture source 2 \(root '{re.escape(str(missing))}'\)"
                                         ".*not a folder"):
        _build(sources)
    stills = SourceSection(str(roots.stills), "synthetic", 1.0, {"max_motion": 2.0})
    with pytest.raises(ValueError, match="mixture source 0 .*clips_per_epoch"):
        _build([stills])


def test_a_config_with_sources_loads_and_builds(roots, tmp_path):
    config = tmp_path / "mix.yaml"
    config.write_text(f"""
data:
  num_frames: 2
  size: [8, 12]
  stride: 2
  sources:
    - {{root: {roots.dark}, layout: reds, weight: 1.0, options: {{clips_per_video: 2}}}}
    - {{root: {roots.stills}, weight: 0.5, layout: synthetic,
        options: {{clips_per_epoch: 3, max_motion: 2}}}}
""")
    cfg = load_config(config)
    d = cfg.data
    assert [s.layout for s in d.sources] == ["reds", "synthetic"]
    ds = build_train_set(cfg)  # what `tcvbm train` builds
    assert isinstance(ds, Mixture) and len(ds) == 4 * 2 + 3
    assert [s.stride for s in ds.sources[:1]] == [2]  # data.stride: the video sources' default
    assert next(iter(ds)).shape == (3, 2, *SIZE)
    for override, message in [
        ("data.sources=[{root: x, weight: 0}]", r"data.sources\[0\].weight"),
        ("data.sources=[{root: x, layout: vids}]", r"data.sources\[0\].layout"),
        ("data.sources=[{layout: videos}]", r"data.sources\[0\].root"),
        ("data.sources=[{root: x, options: {size: 4}}]", r"data.sources\[0\].options"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_config(config, [override])
    with pytest.raises(ValueError, match="data.stride must be 1 with data.layout synthetic"):
        load_config(config, ["data.layout=synthetic"])
    with pytest.raises(ValueError, match="eval.num_clips must be 0 with data.layout synthetic"):
        load_config(config, ["data.layout=synthetic", "data.stride=1"])
    assert load_config(config, ["data.layout=synthetic", "data.stride=1", "eval.num_clips=0"])
