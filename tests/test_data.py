"""Video data: exact reading, dataset layouts and sampling, bad input, writing."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import tcvbm.data as data
from tcvbm.data import (
    ClipDataset,
    Entry,
    SkippedVideoWarning,
    SyntheticMotion,
    VideoFolder,
    VideoReader,
    VideoReadError,
    build_dataset,
    encoding,
    from_uint8,
    index_cache,
    to_uint8,
    worker_options,
    write_video,
)
from tcvbm.data.video import decord
from tcvbm.data.visual import frame_grid

from conftest import decode_all, synthetic_frames

BACKENDS = ["pyav", "auto"] + (["decord"] if decord is not None else [])


@functools.lru_cache(maxsize=8)
def reference_frames(path: Path) -> np.ndarray:
    """Sequential decode of a sample clip, once per session (the big one takes a second)."""
    return decode_all(path)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


# -- reading ---------------------------------------------------------------------
def test_sample_clips_manifest(sample_clips):
    manifest = json.loads((next(iter(sample_clips.values())).parent / "manifest.json").read_text())
    sizes = {k: (v["width"], v["height"], v["frames"]) for k, v in manifest.items()}
    assert sizes == {"bikes": (640, 272, 250), "bigbuckbunny": (1280, 720, 132),
                     "carphone": (176, 144, 120)}
    assert manifest["bigbuckbunny"]["audio"] and not manifest["bikes"]["audio"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_clips_frame_exact(sample_clips, backend):
    rng = np.random.default_rng(0)
    for name, path in sample_clips.items():
        ref = reference_frames(path)
        with VideoReader(path, backend=backend) as r:
            assert len(r) == len(ref) and r.size == ref.shape[1:3] and r.fps > 0
            assert len(r.timestamps) == len(r) and np.all(np.diff(r.timestamps) > 0)
            for _ in range(3):
                idx = rng.integers(0, len(ref), 6).tolist()
                got = r.read(idx)
                assert got.dtype == torch.uint8 and got.shape == (6, *ref.shape[1:])
                assert np.array_equal(got.numpy(), ref[idx]), (name, backend, idx)
            tail = list(range(len(ref) - 5, len(ref)))[::-1]
            assert np.array_equal(r.read(tail).numpy(), ref[tail])
            clip = r.read_clip(3, 4, stride=3)
            assert np.array_equal(clip.numpy(), ref[3:13:3])


def test_auto_backend_prefers_decord_when_exact(sample_clips):
    expected = "decord" if decord is not None else "pyav"
    assert VideoReader(sample_clips["bikes"]).backend == expected


@pytest.mark.parametrize(
    "suffix,codec,pix_fmt,opts",
    [
        (".mp4", "libx264", "yuv420p", {"bf": "3"}),  # B-frames: decode order != display order
        (".avi", "mpeg4", "yuv420p", None),
        (".mkv", "libx264", "yuv444p", None),
        (".mov", "png", "gray", None),
        (".mov", "png", "rgba", None),
    ],
)
def test_generated_formats_exact_rgb(tmp_path, make_clip, suffix, codec, pix_fmt, opts):
    path = make_clip(tmp_path / f"c{suffix}", n=30, h=40, w=56, codec=codec, pix_fmt=pix_fmt,
                     gop=7, options=opts)
    ref = decode_all(path)
    for backend in ("pyav", "auto"):
        r = VideoReader(path, backend=backend)
        idx = [29, 0, 13, 14, 6, 21, 21]
        got = r.read(idx).numpy()
        assert got.shape == (7, 40, 56, 3)
        assert np.array_equal(got, ref[idx]), (backend, r.backend)
    if pix_fmt == "gray":
        assert np.array_equal(got[..., 0], got[..., 1]) and np.array_equal(got[..., 1], got[..., 2])


def test_paletted_gif_is_rgb(tmp_path):
    frames = synthetic_frames(5, 32, 48)
    images = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE) for f in frames]
    images[0].save(tmp_path / "p.gif", save_all=True, append_images=images[1:], duration=100)
    r = VideoReader(tmp_path / "p.gif")
    assert len(r) == 5 and r.backend == "pyav"
    assert np.array_equal(r.read([0])[0].numpy(), np.asarray(images[0].convert("RGB")))


def test_variable_frame_rate_timestamps(tmp_path):
    path = tmp_path / "vfr.mkv"
    frames = synthetic_frames(12, 32, 48)
    times_ms = np.cumsum([0] + [40 if i % 3 else 100 for i in range(1, 12)])
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for array, t in zip(frames, times_ms):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = int(t), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    ref = decode_all(path)
    for backend in ("pyav", "auto"):
        r = VideoReader(path, backend=backend)
        np.testing.assert_allclose(r.timestamps, times_ms / 1000, atol=1e-3)
        assert np.array_equal(r.read([11, 4, 5]).numpy(), ref[[11, 4, 5]])


def test_read_clip_resize_and_crop(sample_clips):
    r = VideoReader(sample_clips["carphone"], backend="pyav")  # 144 x 176
    full = r.read_clip(10, 4, stride=2)
    small = r.read_clip(10, 4, stride=2, size=(72, 88))  # same aspect: plain half-size
    ref = torch.nn.functional.interpolate(full.permute(0, 3, 1, 2).float(), size=(72, 88),
                                          mode="area")
    assert small.shape == (4, 72, 88, 3)
    assert (small.permute(0, 3, 1, 2).float() - ref).abs().mean() < 3
    square = r.read_clip(10, 4, stride=2, size=64)  # centre crop of a covering resize
    assert square.shape == (4, 64, 64, 3)
    box = r.read_clip(10, 4, stride=2, crop=(20, 30, 50, 60))
    assert torch.equal(box, full[:, 20:70, 30:90])
    with pytest.raises(ValueError, match="crop"):
        r.read_clip(0, 2, crop=(100, 0, 100, 10))
    with pytest.raises(ValueError, match="outside"):
        r.read_clip(len(r) - 2, 4)


def test_read_errors_name_file_and_reason(tmp_path, make_clip):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("aac", rate=44100, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    cases = {
        tmp_path / "missing.mp4": "no such file",
        tmp_path / "empty.mp4": "empty",
        tmp_path / "text.mp4": "not a readable media file",
        audio_only: "no video stream",
    }
    for path, reason in cases.items():
        with pytest.raises(VideoReadError, match=reason) as info:
            VideoReader(path)
        assert isinstance(info.value, ValueError) and str(path) in str(info.value)
    with pytest.raises(ValueError, match="backend"):
        VideoReader(make_clip(tmp_path / "ok.mp4", n=4), backend="opencv")


def test_reader_survives_pickling_and_reopens(tmp_path, make_clip):
    import pickle

    path = make_clip(tmp_path / "a.mp4", n=10)
    r = VideoReader(path, backend="pyav")
    first = r.read([3])
    r.close()
    clone = pickle.loads(pickle.dumps(r))
    assert torch.equal(clone.read([3]), first) and torch.equal(r.read([3]), first)


# -- datasets --------------------------------------------------------------------
def _dataset_opts(tmp_path) -> dict:
    return {"cache_dir": tmp_path / "cache"}


def _save_frames(folder: Path, frames: np.ndarray, pattern: str, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / pattern.format(i + start))


def test_video_folder_items(tmp_path, make_clip):
    for i in range(3):
        make_clip(tmp_path / "videos" / f"sub{i % 2}" / f"v{i}.mp4", n=20 + 5 * i, h=40, w=64,
                  seed=i)
    ds = VideoFolder(tmp_path / "videos", num_frames=8, size=32, stride=2, clips_per_video=2,
                     **_dataset_opts(tmp_path))
    assert len(ds) == 6 and ds.stats()["usable"] == 3
    clip = ds[0]
    assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    items = list(ds)
    assert len(items) == 6 and all(x.shape == (3, 8, 32, 32) for x in items)
    ds_u8 = VideoFolder(tmp_path / "videos", 8, 32, stride=2, clips_per_video=2, output="uint8",
                        **_dataset_opts(tmp_path))
    frames = list(ds_u8)
    assert frames[0].dtype == torch.uint8 and frames[0].shape == (8, 32, 32, 3)
    assert all(torch.equal(from_uint8(f), x) for f, x in zip(frames, items))


def test_sampling_is_seeded_and_changes_with_epoch(tmp_path, make_clip):
    for i in range(2):
        make_clip(tmp_path / "v" / f"v{i}.mp4", n=40, h=48, w=64, seed=i)
    opts = dict(clips_per_video=3, hflip=True, seed=7, **_dataset_opts(tmp_path))
    a, b = VideoFolder(tmp_path / "v", 4, 32, **opts), VideoFolder(tmp_path / "v", 4, 32, **opts)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    a.set_epoch(3)
    b.set_epoch(3)
    epoch3 = list(a)
    assert all(torch.equal(x, y) for x, y in zip(epoch3, b))
    a.set_epoch(0)
    assert not all(torch.equal(x, y) for x, y in zip(epoch3, a))
    other = VideoFolder(tmp_path / "v", 4, 32, **{**opts, "seed": 8})
    assert not all(torch.equal(x, y) for x, y in zip(list(b), other))


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.numpy().tobytes()).hexdigest()


def test_two_workers_disjoint_and_complete(tmp_path, make_clip):
    for i in range(5):
        make_clip(tmp_path / "v" / f"v{i}.mp4", n=24, h=32, w=48, seed=i)
    # One backend throughout: resized pixels are backend-specific, and a worker forked
    # from a process that used decord reads with PyAV (decord is not fork-safe).
    opts = dict(clips_per_video=2, hflip=True, seed=1, backend="pyav", **_dataset_opts(tmp_path))
    ds = VideoFolder(tmp_path / "v", 4, 24, **opts)
    ds.set_epoch(2)
    expected = sorted(_digest(ds[i]) for i in range(len(ds)))
    loader = DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="spawn")
    got = sorted(_digest(x) for batch in loader for x in batch)
    assert len(got) == len(ds) == 10
    assert got == expected  # no duplicates, no misses, same clips as without workers


def test_set_shard_splits_ranks(tmp_path, make_clip):
    for i in range(3):
        make_clip(tmp_path / "v" / f"v{i}.mp4", n=12, h=32, w=48, seed=i)
    ds = VideoFolder(tmp_path / "v", 4, 24, **_dataset_opts(tmp_path))
    everything = sorted(_digest(x) for x in ds)
    shares = []
    for rank in range(2):
        ds.set_shard(rank, 2)
        ds.set_epoch(0)
        shares.append([_digest(x) for x in ds])
        assert len(shares[-1]) == len(ds)
    assert sorted(shares[0] + shares[1]) == everything


def test_target_fps_sets_stride(tmp_path, make_clip):
    frames = np.zeros((20, 32, 32, 3), np.uint8)
    frames[:] = (np.arange(20) * 12)[:, None, None, None]
    make_clip(tmp_path / "v" / "ramp.mp4", fps=24, frames=frames, codec="libx264",
              options={"crf": "0"})
    ds = VideoFolder(tmp_path / "v", 4, 32, fps=12, random_offset=False, **_dataset_opts(tmp_path))
    level = to_uint8(ds[0]).float().mean(dim=(1, 2, 3))
    assert torch.allclose(level.diff(), torch.full((3,), 24.0), atol=2)


def test_index_is_cached(tmp_path, make_clip, monkeypatch):
    make_clip(tmp_path / "v" / "a.mp4", n=10)
    VideoFolder(tmp_path / "v", 4, 32, **_dataset_opts(tmp_path))
    assert (tmp_path / "cache" / "index.json").is_file()

    def no_probe(path):
        raise AssertionError(f"{path} probed again")

    monkeypatch.setattr(index_cache, "_probe_video", no_probe)
    assert len(VideoFolder(tmp_path / "v", 4, 32, **_dataset_opts(tmp_path))) == 1
    make_clip(tmp_path / "v" / "b.mp4", n=10)  # new file: probed
    with pytest.raises(AssertionError, match="b.mp4"):
        VideoFolder(tmp_path / "v", 4, 32, **_dataset_opts(tmp_path))


def test_layouts_detected_and_read(tmp_path, make_clip):
    frames = synthetic_frames(8, 36, 44)
    # UCF-101
    ucf = tmp_path / "ucf"
    for cls in ("Jump", "Run"):
        for g in (1, 8):
            make_clip(ucf / cls / f"v_{cls}_g0{g}_c01.avi", n=12, h=36, w=44, codec="mpeg4", seed=g)
    (ucf / "ucfTrainTestlist").mkdir()
    (ucf / "ucfTrainTestlist" / "trainlist01.txt").write_text(
        "Jump/v_Jump_g08_c01.avi 1\nRun/v_Run_g08_c01.avi 2\n")
    (ucf / "ucfTrainTestlist" / "testlist01.txt").write_text("Jump/v_Jump_g01_c01.avi\n")
    # Vimeo-90K septuplets
    vimeo = tmp_path / "vimeo"
    for name in ("00001/0001", "00001/0002"):
        _save_frames(vimeo / "sequences" / name, frames[:7], "im{}.png", start=1)
    (vimeo / "sep_trainlist.txt").write_text("00001/0001\n")
    (vimeo / "sep_testlist.txt").write_text("00001/0002\n")
    # REDS
    reds = tmp_path / "reds"
    for seq in ("000", "001"):
        _save_frames(reds / "train_sharp" / seq, frames, "{:08d}.png")
    # DAVIS
    davis = tmp_path / "davis"
    for seq in ("bear", "car"):
        _save_frames(davis / "JPEGImages" / "480p" / seq, frames, "{:05d}.jpg")
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    (davis / "ImageSets" / "2017" / "train.txt").write_text("bear\n")
    (davis / "ImageSets" / "2017" / "val.txt").write_text("car\n")
    # images
    images = tmp_path / "images"
    _save_frames(images, frames[:3], "img{}.png")
    Image.fromarray(frames[3][..., 0]).save(images / "gray.png")
    # videos with split folders
    videos = tmp_path / "videos"
    make_clip(videos / "train" / "a.mp4", n=10, seed=1)
    make_clip(videos / "val" / "b.mp4", n=10, seed=2)

    cases = [
        (ucf, "ucf101", "train", 4, 2),
        (ucf, "ucf101", "test", 4, 1),
        (vimeo, "vimeo90k", "train", 7, 1),
        (vimeo, "vimeo90k", "test", 3, 1),
        (reds, "reds", "train", 8, 2),
        (davis, "davis", "train", 5, 1),
        (davis, "davis", "val", 5, 1),
        (images, "images", "train", 1, 4),
        (videos, "videos", "val", 4, 1),
    ]
    for root, layout, split, n, count in cases:
        assert data.detect_layout(root) == layout
        ds = build_dataset(root, n, (16, 24), split=split, cache_dir=tmp_path / "cache" / layout)
        assert (isinstance(ds, data.LAYOUTS[layout])
                and ds.stats()["usable"] == count), (layout, split)
        items = list(ds)
        assert len(items) == count and all(x.shape == (3, n, 16, 24) for x in items), layout
        assert all(-1 <= x.min() and x.max() <= 1 for x in items)
    with pytest.raises(ValueError, match="num_frames must be 1"):
        build_dataset(images, 4, 16)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no videos or images .* 1 files \(1 \.txt\)"):
        build_dataset(tmp_path / "junk", 4, 16)


def test_synthetic_layout_is_synthetic_motion_over_the_stills(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        photo = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(photo).save(tmp_path / f"{i}.png")
    opts = dict(clips_per_epoch=3, max_motion=2.0, times="random", seed=4)
    ds = build_dataset(tmp_path, 3, (16, 16), layout="synthetic", **opts)
    assert isinstance(ds, SyntheticMotion) and len(ds) == 3 and len(ds.photos) == 2
    alone = SyntheticMotion(tmp_path, 3, (16, 16), **opts)
    assert all(torch.equal(a, b) for a, b in zip(ds, alone))
    assert data.detect_layout(tmp_path) == "images"  # synthetic motion only when asked for
    with pytest.raises(ValueError, match="takes no stride"):
        build_dataset(tmp_path, 3, 16, layout="synthetic", stride=2, **opts)
    with pytest.raises(ValueError, match="needs the option clips_per_epoch"):
        build_dataset(tmp_path, 3, 16, layout="synthetic", max_motion=2.0)


def test_short_videos_skip_loop_pad(tmp_path):
    levels = np.array([0, 60, 120, 180, 240], np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (5, 8, 8, 3)).copy()
    _save_frames(tmp_path / "short", frames, "{:03d}.png")
    _save_frames(tmp_path / "long", np.repeat(frames, 4, axis=0), "{:03d}.png")
    files = sorted(str(p) for p in (tmp_path / "short").iterdir())
    long_files = sorted(str(p) for p in (tmp_path / "long").iterdir())
    entries = [Entry(str(tmp_path / "short"), 5, 25.0, tuple(files)),
               Entry(str(tmp_path / "long"), 20, 25.0, tuple(long_files))]
    opts = dict(random_offset=False, cache_dir=tmp_path / "cache")
    skip = ClipDataset(entries, 8, 8, **opts)
    assert skip.stats()["usable"] == 1 and skip.stats()["too_short"] == 1
    expect = {"loop": [0, 60, 120, 180, 240, 0, 60, 120],
              "pad": [0, 60, 120, 180, 240, 240, 240, 240]}
    for mode, want in expect.items():
        ds = ClipDataset(entries[:1], 8, 8, short=mode, **opts)
        got = to_uint8(ds[0])[:, 0, 0, 0].tolist()
        assert got == want, mode
    with pytest.raises(ValueError, match="no usable video.*1 shorter than a 8-frame clip"):
        ClipDataset(entries[:1], 8, 8, **opts)


def _damage_middle(src: Path, dst: Path) -> Path:
    blob = bytearray(src.read_bytes())
    start, size = len(blob) // 3, len(blob) // 4
    noise = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    blob[start : start + size] = noise.tobytes()
    dst.write_bytes(bytes(blob))
    return dst


def test_damaged_files_skipped_with_one_warning(tmp_path, make_clip):
    root = tmp_path / "v"
    for i in range(3):
        make_clip(root / f"good{i}.mp4", n=30, h=32, w=48, seed=i)
    good = (root / "good0.mp4").read_bytes()
    (root / "zero.mp4").write_bytes(b"")
    (root / "notvideo.mkv").write_bytes(os.urandom(4000))
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    _damage_middle(make_clip(tmp_path / "src.mp4", n=30, h=32, w=48, seed=9), root / "middle.mp4")
    bad = {"zero.mp4", "notvideo.mkv", "truncated.mp4", "middle.mp4"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolder(root, 30, 16, clips_per_video=2, **_dataset_opts(tmp_path))
        clips = [x for epoch in range(2) for x in (ds.set_epoch(epoch), list(ds))[1]]
        loader = DataLoader(ds, batch_size=2, **worker_options(2))
        loader_clips = [x for batch in loader for x in batch]
    assert len(ds) == 8 and len(clips) == 16 and len(loader_clips) == 8  # epochs never cut short
    skipped = [str(w.message) for w in caught if issubclass(w.category, SkippedVideoWarning)]
    for name in bad:
        assert sum(name in m for m in skipped) == 1, (name, skipped)
    stats = ds.stats()
    assert stats["skipped"] == 4 and {Path(p).name for p in stats["skipped_files"]} == bad
    # A new run knows the damaged file from the marker and skips it up front.
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        again = VideoFolder(root, 30, 16, **_dataset_opts(tmp_path))
    assert again.stats()["usable"] == 3 and again.stats()["skipped"] == 4


def test_no_usable_video_error_says_what_was_found(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"")
    (tmp_path / "v" / "b.txt").write_text("notes")
    with (pytest.warns(SkippedVideoWarning),
          pytest.raises(ValueError, match=r"no usable video.*2 files.*1 unreadable")):
        VideoFolder(tmp_path / "v", 4, 16, **_dataset_opts(tmp_path))


def test_short_side_keeps_the_video_scale(tmp_path, make_clip):
    """short_side = the frame height: crops are windows of the native frames, unscaled."""
    path = make_clip(tmp_path / "v" / "a.mp4", n=12, h=48, w=64)
    with VideoReader(path, backend="pyav") as reader:
        native = reader.read_resized(range(12), (48, 64))
    opts = dict(clips_per_video=4, output="uint8", backend="pyav", **_dataset_opts(tmp_path))

    def is_native_window(clip: torch.Tensor) -> bool:
        return any(torch.equal(clip, native[s:s + 4, y:y + 32, x:x + 32])
                   for s in range(9) for y in range(17) for x in range(33))

    kept = list(VideoFolder(tmp_path / "v", 4, 32, short_side=48, **opts))
    assert len(kept) == 4 and all(is_native_window(c) for c in kept)
    covered = list(VideoFolder(tmp_path / "v", 4, 32, **opts))  # scaled to cover 32 px
    assert not any(is_native_window(c) for c in covered)
    ranged = list(VideoFolder(tmp_path / "v", 4, 32, short_side=[32, 48], cache_frames=True,
                              **opts))
    assert [c.shape for c in ranged] == [(4, 32, 32, 3)] * 4
    uncached = VideoFolder(tmp_path / "v", 4, 32, short_side=[32, 48], **opts)
    assert all(torch.equal(a, b) for a, b in zip(ranged, uncached))
    for bad in (24, [40, 36], [16, 48]):
        with pytest.raises(ValueError, match="short_side"):
            VideoFolder(tmp_path / "v", 4, 32, short_side=bad, **opts)


def test_frame_cache_gives_same_clips(tmp_path, make_clip):
    make_clip(tmp_path / "v" / "a.mp4", n=20, h=32, w=48)
    opts = dict(clips_per_video=3, **_dataset_opts(tmp_path))
    plain = list(VideoFolder(tmp_path / "v", 4, 24, backend="pyav", **opts))
    cached = list(VideoFolder(tmp_path / "v", 4, 24, backend="pyav", cache_frames=True, **opts))
    assert all(torch.equal(a, b) for a, b in zip(plain, cached))


# -- writing ---------------------------------------------------------------------
def test_write_read_round_trip(tmp_path):
    frames = synthetic_frames(20, 48, 64)
    path = write_video(torch.from_numpy(frames), tmp_path / "out" / "a.mp4", fps=29.97)
    r = VideoReader(path)
    assert len(r) == 20 and r.size == (48, 64) and abs(r.fps - 29.97) < 0.01
    # 4:2:0 chroma alone caps these saturated test frames at 33.4 dB
    assert psnr(r.read(range(20)).numpy(), frames) > 31
    with av.open(path) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        keys = [p.pts for p in c.demux(stream) if p.size and p.is_keyframe]
    assert len(keys) >= 20 // data.DEFAULT_GOP  # short keyframe interval


def test_write_streaming_odd_size_and_mpeg4_fallback(tmp_path, monkeypatch):
    frames = synthetic_frames(9, 33, 47)
    path = write_video((torch.from_numpy(f) for f in frames), tmp_path / "odd.mp4", fps=10)
    r = VideoReader(path)
    assert r.size == (34, 48) and len(r) == 9  # padded to even with replicated edges
    assert psnr(r.read(range(9)).numpy()[:, :33, :47], frames) > 30
    monkeypatch.setattr(encoding, "_has_encoder", lambda name: name == "mpeg4")
    with pytest.warns(RuntimeWarning, match="mpeg4"):
        path = write_video(frames[:, :32, :46], tmp_path / "fallback.mp4", fps=10)
    with av.open(path) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
    assert psnr(VideoReader(path).read(range(9)).numpy(), frames[:, :32, :46]) > 27


@pytest.mark.parametrize("audio_codec,suffix", [("aac", ".mp4"), ("pcm_s16le", ".mov")])
def test_audio_is_copied(tmp_path, make_clip, audio_codec, suffix):
    src = make_clip(tmp_path / f"src{suffix}", n=25, fps=25, audio=audio_codec)
    frames = VideoReader(src).read(range(25))
    out = write_video(frames, tmp_path / "out.mp4", fps=25, audio_from=src)
    with av.open(out) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        audio = c.streams.audio[0]
        assert audio.codec_context.name == "aac"  # pcm re-encoded: mp4 cannot hold it
        seconds = sum(f.samples for f in c.decode(audio)) / audio.rate
    assert 0.8 < seconds <= 1.1


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"previous content")

    def broken():
        yield synthetic_frames(3, 32, 32)
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        write_video(broken(), target, fps=8)
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]
    with pytest.raises(ValueError, match="uint8"):
        write_video(torch.zeros(3, 2, 8, 8), tmp_path / "float.mp4", fps=8)
    with pytest.raises(ValueError, match="fps"):
        write_video(synthetic_frames(2, 8, 8), tmp_path / "x.mp4", fps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


# -- pixels and pictures -----------------------------------------------------------
def test_uint8_conversions_and_pictures(tmp_path):
    pixels = torch.from_numpy(synthetic_frames(4, 16, 20))
    clip = from_uint8(pixels)
    assert clip.shape == (3, 4, 16, 20) and clip.min() >= -1 and clip.max() <= 1
    assert torch.equal(to_uint8(clip), pixels)
    assert torch.equal(to_uint8(clip[None])[0], pixels)
    grid = data.save_grid_png([clip, clip[:, :2]], tmp_path / "g.png", pad=2)
    assert Image.open(grid).size == (4 * 22 + 2, 2 * 18 + 2)
    gif = data.save_gif(torch.stack([clip, clip]), tmp_path / "a.gif", fps=10)
    assert Image.open(gif).n_frames == 4
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(2, 4, 8, 8))


def test_frame_grid_places_every_frame_between_white_gaps():
    frames = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1, 1, 1) * 10 + 1
    frames = np.broadcast_to(frames, (2, 3, 4, 5, 3))
    grid = frame_grid(frames, pad=2, margin=1)
    assert grid.shape == (1 + 2 * 6 - 2 + 1, 1 + 3 * 7 - 2 + 1, 3)
    for r in range(2):
        for c in range(3):
            y, x = 1 + r * 6, 1 + c * 7
            assert (grid[y : y + 4, x : x + 5] == frames[r, c]).all()
    covered = np.zeros(grid.shape[:2], bool)
    for r in range(2):
        for c in range(3):
            covered[1 + r * 6 : 5 + r * 6, 1 + c * 7 : 6 + c * 7] = True
    assert (grid[~covered] == 255).all()
    with pytest.raises(ValueError, match="rows, cols"):
        frame_grid(frames[0])


def test_pictures_are_frame_grids_written_atomically(tmp_path):
    clips = torch.from_numpy(synthetic_frames(6, 8, 10)).reshape(2, 3, 8, 10, 3)
    png = data.save_grid_png(clips, tmp_path / "g.png", pad=3)
    assert (np.asarray(Image.open(png).convert("RGB")) == frame_grid(clips.numpy(), 3, 3)).all()
    gif = Image.open(data.save_gif(clips, tmp_path / "a.gif", pad=1))
    gif.seek(2)
    assert gif.size == frame_grid(clips.numpy()[None, :, 2], 1).shape[1::-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "g.png"]
