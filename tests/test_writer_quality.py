"""Output quality of the writer: ``crf``, ``lossless`` (RGB-exact) and a reproducible encode.

Lossless means every decoded frame is the RGB that was written, bit for bit, at any size; a
lower ``crf`` means a larger, closer output; and the same frames encode to the same pixels
whatever the number of CPUs the encoder may use.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tcvbm import metrics
from tcvbm.cli import main
from tcvbm.data import VideoReader, encoding, from_uint8, to_uint8
from tcvbm.data.writer import write_video
from tcvbm.pipeline import interpolate

from conftest import decode_all
from test_pipeline import moving_frames, source_bundle

pytestmark = pytest.mark.usefixtures("one_thread")


def noise(n: int, h: int, w: int) -> np.ndarray:
    """Random uint8 frames: nothing for an encoder to predict, every value in use."""
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def gradient(n: int, h: int, w: int) -> np.ndarray:
    """Smooth colour ramps drifting a pixel per frame: where rounding to YUV shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(xx * 7 + t) % 256, (yy * 13 + 2 * t) % 256,
                               (xx * 3 + yy * 5 + 3 * t) % 256], axis=-1)
                     for t in range(n)]).astype(np.uint8)


def psnr(made: np.ndarray, truth: np.ndarray) -> float:
    return float(metrics.psnr(from_uint8(made)[None], from_uint8(truth)[None]))


@pytest.mark.parametrize("content", [noise, gradient])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_lossless_round_trip_is_bit_exact_at_odd_sizes(tmp_path: Path, content, suffix) -> None:
    frames = content(5, 17, 33)
    path = write_video(frames, tmp_path / f"out{suffix}", fps=10, lossless=True)
    assert np.array_equal(decode_all(path), frames)
    with VideoReader(path) as reader:    # and through the project's own reader
        assert torch.equal(reader.read(range(len(reader))), torch.from_numpy(frames))


def test_lossless_without_x264_falls_back_to_ffv1(tmp_path: Path, monkeypatch) -> None:
    real = encoding._has_encoder
    monkeypatch.setattr(encoding, "_has_encoder", lambda name: name != "libx264rgb"
                        and real(name))
    frames = gradient(4, 17, 33)
    path = write_video(frames, tmp_path / "out.mkv", fps=10, lossless=True)
    with av.open(path) as container:
        assert container.streams.video[0].codec_context.name == "ffv1"
    assert np.array_equal(decode_all(path), frames)


def test_lossless_into_a_container_that_cannot_hold_it_names_a_fix(tmp_path: Path) -> None:
    target = tmp_path / "out.webm"
    with pytest.raises(ValueError, match=r"out\.webm.*\.mp4, \.mkv, \.mov, \.avi \(got \.webm\)"):
        write_video(noise(2, 16, 16), target, fps=10, lossless=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_lossless_output_keeps_the_audio(tmp_path: Path, make_clip, suffix) -> None:
    src = make_clip(tmp_path / "in.mp4", n=10, fps=10, audio="aac")
    frames = gradient(10, 48, 64)
    out = write_video(frames, tmp_path / f"out{suffix}", fps=10, audio_from=src, lossless=True)
    with av.open(out) as container:
        assert container.streams.audio and container.streams.audio[0].codec_context.name == "aac"
    assert np.array_equal(decode_all(out), frames)


def test_a_lower_crf_gives_a_larger_closer_file(tmp_path: Path) -> None:
    grain = noise(6, 48, 64)[..., :1] // 16      # grey, so 4:2:0 does not blur it away
    frames = np.minimum(moving_frames(6, h=48, w=64).numpy(), 240) + grain
    sizes, scores = [], []
    for crf in (10, 30):
        path = write_video(frames, tmp_path / f"crf{crf}.mp4", fps=10, crf=crf)
        sizes.append(os.path.getsize(path))
        scores.append(psnr(decode_all(path), frames))
    assert sizes[0] > 2 * sizes[1] and scores[0] > scores[1] + 3


@pytest.mark.parametrize("crf", [-1, 52, 18.0, True, "18"])
def test_crf_off_the_x264_scale_is_refused(tmp_path: Path, crf) -> None:
    with pytest.raises(ValueError, match=r"crf: expected an integer from 0 .* to 51"):
        write_video(noise(2, 16, 16), tmp_path / "out.mp4", fps=10, crf=crf)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a CPU affinity to change, and at least two CPUs")
def test_the_same_frames_decode_the_same_on_one_cpu_and_on_all(tmp_path: Path) -> None:
    # Three encodes of the same frames, the second on one CPU. 128 rows are the fewest in
    # which x264 would cut two slices per frame; grainy frames like these came out different
    # from run to run through x264's AVX-512 macroblock-tree code.
    frames = gradient(12, 128, 160) // 2 + noise(12, 128, 160) // 2
    everything = os.sched_getaffinity(0)
    decoded = []
    try:
        for i, cpus in enumerate([everything, {min(everything)}, everything]):
            os.sched_setaffinity(0, cpus)
            decoded.append(decode_all(write_video(frames, tmp_path / f"{i}.mp4", fps=10)))
    finally:
        os.sched_setaffinity(0, everything)
    assert all(np.array_equal(d, decoded[0]) for d in decoded[1:])


def test_every_uint8_value_comes_back_from_the_model_range() -> None:
    # Keyframes go to [-1, 1] floats and back before they are written.
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(2, 16, 16, 3)
    assert torch.equal(to_uint8(from_uint8(pixels)), pixels)


def test_interpolate_lossless_keeps_keyframes_bit_for_bit(tmp_path: Path) -> None:
    keys = moving_frames(6, h=35, w=49).numpy()
    src = write_video(keys, tmp_path / "in.mkv", fps=10, lossless=True)
    out = tmp_path / "out.mkv"
    interpolate(src, out, model=source_bundle(), lossless=True, progress=False)
    made = decode_all(out)
    assert made.shape == (12, 35, 49, 3)
    assert np.array_equal(made[0::2], keys)
    lossy = tmp_path / "lossy.mp4"
    interpolate(src, lossy, model=source_bundle(), crf=30, progress=False)
    assert not np.array_equal(decode_all(lossy)[0::2, :35, :49], keys)


def test_interpolate_crf_reaches_the_writer(tmp_path: Path) -> None:
    keys = moving_frames(6, h=48, w=64)
    src = write_video(keys, tmp_path / "in.mkv", fps=10, lossless=True)
    exact = tmp_path / "exact.mkv"
    interpolate(src, exact, model=source_bundle(), lossless=True, progress=False)
    truth = decode_all(exact)
    sizes, scores = [], []
    for crf in (5, 35):
        out = tmp_path / f"crf{crf}.mp4"
        interpolate(src, out, model=source_bundle(), crf=crf, progress=False)
        sizes.append(os.path.getsize(out))
        scores.append(psnr(decode_all(out), truth))
    assert sizes[0] > sizes[1] and scores[0] > scores[1] + 3


def test_cli_interpolate_lossless_with_the_shipped_model(tmp_path: Path) -> None:
    keys = moving_frames(3, h=48, w=64).numpy()
    src = write_video(keys, tmp_path / "in.mkv", fps=12, lossless=True)
    out = tmp_path / "out.mkv"
    assert main(["interpolate", str(src), "-o", str(out), "--lossless"]) == 0
    made = decode_all(out)
    assert made.shape == (6, 48, 64, 3)
    assert np.array_equal(made[0::2], keys)
