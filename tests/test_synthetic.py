"""Synthetic motion over still photos: sampling, exact in-between frames, motion bounds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader

import tcvbm.data.clips as clips_module
from tcvbm.data import SyntheticMotion
from tcvbm.data.synthetic import load_photo


def _photo(seed: int, w: int, h: int) -> Image.Image:
    """Blurred colour noise over a gradient: texture everywhere, so motion shows."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    noise = np.asarray(noise.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    ramp = np.linspace(0, 80, w, dtype=np.float32)[None, :, None]
    return Image.fromarray(np.clip(noise * 0.7 + ramp, 0, 255).astype(np.uint8))


@pytest.fixture
def stills(tmp_path):
    folder = tmp_path / "stills"
    (folder / "more").mkdir(parents=True)
    _photo(0, 160, 120).save(folder / "a.png")
    _photo(1, 120, 150).save(folder / "b.jpg", quality=95)
    _photo(2, 200, 200).save(folder / "more" / "c.png")
    _photo(3, 96, 80).save(folder / "more" / "d.png")
    return folder


def make(stills, **opts) -> SyntheticMotion:
    opts = {"num_frames": 5, "size": (24, 32), "clips_per_epoch": 6, "seed": 0, **opts}
    return SyntheticMotion(stills, **opts)


def test_clips_shape_range_dtype(stills):
    ds = make(stills, layers=(2, 3))
    assert len(ds.photos) == 4 and len(ds) == 6
    clip = ds[0]
    assert clip.shape == (3, 5, 24, 32) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1 and clip.std() > 0.05
    pixels = (clip + 1) * 127.5                      # 8-bit values, like decoded video
    assert torch.allclose(pixels, pixels.round(), atol=1e-4)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 5, 24, 32)


def test_deterministic_and_epochs_differ(stills):
    a, b = make(stills), make(stills)
    assert torch.equal(a[3], b[3])
    assert torch.equal(torch.stack(list(a)), torch.stack([b[i] for i in range(6)]))
    b.set_epoch(1)
    assert not torch.equal(a[3], b[3])
    assert torch.equal(b[3], torch.stack(list(b))[3])
    assert not torch.equal(a[3], make(stills, seed=1)[3])
    assert not torch.equal(a[3], a[4])


def test_shards_are_disjoint_and_cover_the_epoch(stills, monkeypatch):
    ds = make(stills, clips_per_epoch=7, size=(16, 16), num_frames=2, layers=(0, 1))
    everything = [ds[i] for i in range(7)]
    seen, lengths = [], []
    for rank in range(2):
        ds.set_shard(rank, 2)
        lengths.append(len(ds))
        for wid in range(2):
            worker = SimpleNamespace(id=wid, num_workers=2)
            monkeypatch.setattr(clips_module, "get_worker_info", lambda: worker)
            ds.set_epoch(0)
            clips = list(ds)
            seen += [next(i for i, c in enumerate(everything) if torch.equal(c, clip))
                     for clip in clips]
    assert sorted(seen) == list(range(7))
    assert lengths == [4, 3]


@pytest.mark.parametrize("times", ["uniform", "random"])
def test_in_between_frame_is_a_direct_render(stills, times):
    ds = make(stills, num_frames=3, times=times, max_motion=6, layers=(2, 2))
    for i in range(3):
        plan, clip = ds.plan(i), ds[i]
        middle = ds.render(plan, [plan.times[1]])
        assert torch.equal(middle[:, 0], clip[:, 1])
        keys = ds.render(plan, [0.0, 2.0])
        assert torch.equal(keys, clip[:, [0, 2]])
        halfway = ds.render(plan, [0.0, 0.5, 1.0])[:, 1]
        assert torch.equal(halfway, ds.render(plan, [0.5])[:, 0])
        assert not torch.equal(halfway, clip[:, 0])
    with pytest.raises(ValueError, match="within"):
        ds.render(plan, [2.5])


def test_zero_motion_gives_still_frames(stills):
    ds = make(stills, max_motion=0.0, photometric=0.0, layers=(1, 3))
    for i in range(3):
        clip = ds[i]
        assert all(torch.equal(clip[:, k], clip[:, 0]) for k in range(1, 5))
    drifting = make(stills, max_motion=0.0, photometric=0.05)[0]
    assert not torch.equal(drifting[:, 4], drifting[:, 0])


def _forward(m, qx, qy, t):
    """The motion as its docstring states it: layer point q -> frame point at time t."""
    (cx, cy), (dx, dy) = m.centre, m.offset(t)
    s, c, n = math.exp(m.zoom * t), math.cos(m.spin * t), math.sin(m.spin * t)
    rx, ry = qx - cx, qy - cy
    return cx + dx + s * (c * rx - n * ry), cy + dy + s * (n * rx + c * ry)


def test_content_speed_is_bounded_by_max_motion(stills):
    """Every visible point of every layer moves at most max_motion pixels per frame."""
    h, w, top, dt = 24, 32, 5.0, 1e-4
    ds = make(stills, max_motion=top, num_frames=9, layers=(3, 3), size=(h, w))
    fastest = 0.0
    for i in range(6):
        for j, layer in enumerate(ds.plan(i).layers):
            m = layer.motion
            for t in np.linspace(0, 8, 33).tolist():
                if j == 0:  # the background, wherever the frame shows it
                    px, py = np.meshgrid(np.linspace(-w / 2, w / 2, 9),
                                         np.linspace(-h / 2, h / 2, 9))
                    qx, qy = m.to_layer(px, py, t)
                    back = _forward(m, qx, qy, t)
                    assert np.allclose(back[0], px) and np.allclose(back[1], py)
                else:       # a foreground, all over its mask
                    r, a = np.meshgrid(np.linspace(0, layer.radius, 6), np.linspace(0, 6.3, 24))
                    qx, qy = m.centre[0] + r * np.cos(a), m.centre[1] + r * np.sin(a)
                now, later = _forward(m, qx, qy, t), _forward(m, qx, qy, t + dt)
                speed = np.hypot(later[0] - now[0], later[1] - now[1]).max() / dt
                assert speed <= top * 1.001
                fastest = max(fastest, speed)
    assert fastest > 0.5 * top


def test_frames_move_by_at_most_max_motion(stills):
    """Block matching between consecutive frames finds no shift beyond max_motion."""
    top, reach, block = 3.0, 7, 8
    ds = make(stills, max_motion=top, num_frames=4, layers=(0, 0), size=(64, 64), photometric=0.0,
              clips_per_epoch=8)
    shifts = []
    for i in range(8):
        gray = ds[i].mean(0)                                          # (N, H, W)
        for k in range(3):
            now, before = gray[k + 1, reach:-reach, reach:-reach], gray[k]
            costs = torch.stack([
                F.avg_pool2d(((now - before[reach + dy : 64 - reach + dy,
                                            reach + dx : 64 - reach + dx]) ** 2)[None], block)[0]
                for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)])
            best = costs.flatten(1).argmin(0)
            dy, dx = best // (2 * reach + 1) - reach, best % (2 * reach + 1) - reach
            shifts.append(torch.hypot(dy.float(), dx.float()))
    shifts = torch.cat(shifts)
    assert shifts.max() <= top + 1
    assert shifts.max() >= 1


def test_background_region_covers_everything_the_frame_shows(stills):
    """Borders are real photo: the frame's corners stay inside the background's source."""
    h, w = 24, 32
    ds = make(stills, max_motion=12.0, num_frames=9, size=(h, w), clips_per_epoch=8)
    cx, cy = np.array([-w, w, -w, w]) / 2, np.array([-h, -h, h, h]) / 2
    for i in range(8):
        back = ds.plan(i).layers[0]
        source, (x0, y0, x1, y1) = ds._layer_source(back, 8.0)
        assert source.shape[1] == 3
        for t in np.linspace(0, 8, 65).tolist():
            qx, qy = back.motion.to_layer(cx, cy, t)
            assert x0 <= qx.min() and qx.max() <= x1 and y0 <= qy.min() and qy.max() <= y1


def test_random_times_are_monotone_between_keyframes(stills):
    ds = make(stills, num_frames=9, times="random", keyframe_every=4, return_times=True)
    clip, times = ds[0]
    assert clip.shape == (3, 9, 24, 32) and times.shape == (9,) and times.dtype == torch.float32
    assert times[[0, 4, 8]].tolist() == [0.0, 4.0, 8.0]
    assert bool((times.diff() > 0).all())
    assert not torch.equal(times, torch.arange(9.0))
    assert not torch.equal(times, ds[1][1])
    clips, batch_times = next(iter(DataLoader(ds, batch_size=2)))
    assert clips.shape == (2, 3, 9, 24, 32) and batch_times.shape == (2, 9)
    uniform = make(stills, num_frames=9, return_times=True)[0][1]
    assert torch.equal(uniform, torch.arange(9.0))


def test_photos_are_upright_and_reduced(tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: shown turned by 90 degrees
    _photo(4, 60, 30).save(path, exif=exif)
    assert load_photo(path, 100).shape == (3, 60, 30)
    assert load_photo(path, 15).shape == (3, 30, 15)


def test_bad_stills_are_named(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        SyntheticMotion(tmp_path, 3, 16, 4)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        SyntheticMotion(tmp_path, 3, 16, 4)
    with pytest.raises(ValueError, match="neither"):
        SyntheticMotion(tmp_path / "missing", 3, 16, 4)
    _photo(5, 40, 40).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="times"):
        SyntheticMotion([tmp_path / "ok.png"], 3, 16, 4, times="even")
