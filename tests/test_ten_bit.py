"""10-bit video in, 10-bit video out, with the input's colour tags; 8-bit stays 8-bit.

The clips are made here with PyAV: FFV1 (lossless) in Matroska, 4:2:0 10-bit YUV tagged
BT.2020 primaries and matrix, PQ (SMPTE 2084) transfer, limited range. The commands run with
``SourceModel`` (the interpolation task's linear blend), so the frames they make are known:
a still clip comes back as it went in.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tcvbm.data import VideoReader, write_video
from tcvbm.data.colour import Colour
from tcvbm.data.encoding import _has_encoder, video_encoding
from tcvbm.data.writer import VideoWriter
from tcvbm.pipeline import interpolate, upscale

from test_pipeline import source_bundle

pytestmark = pytest.mark.usefixtures("one_thread")

# BT.2020 primaries, PQ transfer, BT.2020 (non-constant luminance) matrix, limited range.
HDR = {"color_primaries": 9, "color_trc": 16, "colorspace": 9, "color_range": 1}
# BT.709 everything, limited range: a common 8-bit HD tagging.
SDR = {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1}
TEN_BIT_LEVEL = 65535 / 1023   # one 10-bit code value on the 16-bit scale frames are read on

needs_ten_bit_x264 = pytest.mark.skipif(
    "yuv420p10le" not in {f.name for f in av.codec.Codec("libx264", "w").video_formats or ()}
    if _has_encoder("libx264") else True, reason="this FFmpeg build's x264 writes 8 bits only")
needs_x265 = pytest.mark.skipif(not _has_encoder("libx265"),
                                reason="this FFmpeg build has no libx265 encoder")


def encode(path: Path, pictures: list[np.ndarray], picture_format: str, pix_fmt: str,
           tags: dict[str, int], fps: int = 10) -> Path:
    """Write ``pictures`` (arrays in ``picture_format``) losslessly as FFV1 ``pix_fmt``, tagged
    ``tags`` (frames and stream alike, so FFmpeg converts them with the tagged matrix)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.height, stream.width = pictures[0].shape[:2]
        if picture_format.startswith("yuv"):
            stream.height = pictures[0].shape[0] * 2 // 3
        stream.pix_fmt = pix_fmt
        for name, value in tags.items():
            setattr(stream.codec_context, name, value)
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format=picture_format)
            for name, value in tags.items():
                setattr(frame, name, value)
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def gradient_rgb(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """uint16 (n, h, w, 3): gentle colour ramps drifting right, a shot with no cut.

    Linear in x and y, so 4:2:0 (chroma at half resolution) loses almost nothing of them and
    a lossy output's colours can be compared with the input's.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = [np.stack([18000 + 64 * (xx + 2 * t), 30000 + 100 * yy,
                        24000 + 40 * (xx + yy) + 150 * t], axis=-1) for t in range(n)]
    return np.round(np.stack(frames)).astype(np.uint16)


def ten_bit_clip(path: Path, n: int = 6) -> Path:
    """A moving 10-bit 4:2:0 clip tagged :data:`HDR`."""
    return encode(path, list(gradient_rgb(n)), "rgb48le", "yuv420p10le", HDR)


def still_ten_bit_clip(path: Path, n: int = 8, h: int = 48, w: int = 64) -> Path:
    """``n`` equal 10-bit 4:2:0 pictures whose samples are mostly not multiples of 4, so any
    8-bit step on the way shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    luma = 401 + (3 * xx + 5 * yy) % 201
    cb = np.full((h // 2, w // 2), 403)
    cr = np.full((h // 2, w // 2), 611)
    planes = np.concatenate([luma.ravel(), cb.ravel(), cr.ravel()]).astype(np.uint16)
    return encode(path, [planes.reshape(-1, w)] * n, "yuv420p10le", "yuv420p10le", HDR)


def stream_colour(path: Path) -> tuple[str, dict[str, int]]:
    """(pixel format, colour tags) of the first video stream, as a reader sees them."""
    with av.open(str(path)) as container:
        cc = container.streams.video[0].codec_context
        return cc.pix_fmt, {name: int(getattr(cc, name)) for name in HDR}


def read_deep(path: Path) -> torch.Tensor:
    """Every frame at its depth: uint16 RGB for a source deeper than 8 bits."""
    with VideoReader(str(path), backend="pyav", keep_depth=True) as reader:
        return reader.read(range(len(reader)))


def in_levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of 16-bit frames in 10-bit code values."""
    return (a.double() - b.double()).abs() / TEN_BIT_LEVEL


# ------------------------------------------------------------------------------ reading

def test_a_ten_bit_video_is_read_at_its_depth_with_its_colour(tmp_path: Path) -> None:
    source = ten_bit_clip(tmp_path / "in.mkv")
    with VideoReader(str(source), backend="pyav", keep_depth=True) as reader:
        assert reader.colour == Colour(10, 9, 16, 9, 1)
        frames = reader.read([0, 1])
        assert reader.dtype == frames.dtype == torch.uint16
    # the RGB written, to a 4:2:0 round trip (reading at 8 bits was 4.7 levels off on average)
    error = in_levels(frames, torch.from_numpy(gradient_rgb(2)))
    assert error.mean() < 1 and error.max() < 3
    with VideoReader(str(source), backend="pyav") as reader:   # datasets read 8 bits
        assert reader.read([0]).dtype == torch.uint8


# -------------------------------------------------------------------------- the commands

@pytest.mark.parametrize("name,codec", [
    pytest.param("out.mkv", None, marks=needs_ten_bit_x264),
    pytest.param("out.mp4", None, marks=needs_ten_bit_x264),
    pytest.param("out.mp4", "h265", marks=needs_x265),
])
def test_ten_bit_input_gives_ten_bit_output_with_its_colour(tmp_path: Path, name, codec) -> None:
    source = ten_bit_clip(tmp_path / "in.mkv")
    out = tmp_path / name
    summary = interpolate(source, out, model=source_bundle(), codec=codec, progress=False)
    assert (summary.frames_out, summary.scene_cuts) == (12, 0)
    assert stream_colour(out) == ("yuv420p10le", HDR)
    # the kept keyframes come back in their colours: converted with the tagged matrix both ways
    # (1.3 levels off on average at crf 18; 7.8 when written with FFmpeg's default matrix)
    error = in_levels(read_deep(out)[0::2], read_deep(source))
    assert error.mean() < 2.5 and error.max() < 12


@needs_ten_bit_x264
def test_upscaling_keeps_the_depth_and_colour_too(tmp_path: Path) -> None:
    source = ten_bit_clip(tmp_path / "in.mkv", n=3)
    out = tmp_path / "up.mp4"
    upscale(source, out, model=source_bundle(3, "vsr", scale=2), progress=False)
    assert stream_colour(out) == ("yuv420p10le", HDR)
    assert read_deep(out).shape == (3, 96, 128, 3)


def test_scene_cuts_are_found_in_ten_bit_video(tmp_path: Path) -> None:
    frames = gradient_rgb(8)
    frames[4:] = 65535 - frames[4:]      # a second shot: the colours inverted
    source = encode(tmp_path / "in.mkv", list(frames), "rgb48le", "yuv420p10le", HDR)
    summary = interpolate(source, tmp_path / "out.mkv", model=source_bundle(), codec="ffv1",
                          progress=False)
    assert (summary.frames_out, summary.scene_cuts) == (16, 1)


@needs_ten_bit_x264
def test_eight_bit_input_stays_eight_bit_with_its_colour(tmp_path: Path) -> None:
    source = encode(tmp_path / "in.mkv", list((gradient_rgb(6) >> 8).astype(np.uint8)), "rgb24",
                    "yuv420p", SDR)
    out = tmp_path / "out.mp4"
    interpolate(source, out, model=source_bundle(), progress=False)
    assert stream_colour(out) == ("yuv420p", SDR)
    assert read_deep(out).dtype == torch.uint8


@pytest.mark.parametrize("output", ["out.mkv", "frames/"])
def test_a_still_ten_bit_clip_comes_back_within_a_code_value(tmp_path: Path, output) -> None:
    source = still_ten_bit_clip(tmp_path / "in.mkv")
    before = read_deep(source)
    eight_bit = VideoReader(str(source), backend="pyav").read([0]).double() * (65535 / 255)
    assert in_levels(eight_bit, before[:1]).max() >= 1   # so 8 bits on the way would show
    out = tmp_path / output
    interpolate(source, f"{out}/" if output.endswith("/") else out, model=source_bundle(),
                lossless=True, progress=False)
    if output.endswith("/"):     # 16-bit PNGs, read like the video
        pngs = sorted(out.glob("*.png"))
        first, pix_fmt = pngs[0], "rgb48be"
        after = torch.stack([read_deep(png)[0] for png in pngs])
    else:                        # FFV1, RGB at the input's depth
        first, pix_fmt = out, "gbrp10le"
        after = read_deep(out)
    # the input's primaries and transfer; RGB has no YUV matrix: full-range RGB, tagged so
    rgb = {"color_primaries": 9, "color_trc": 16, "colorspace": 0, "color_range": 2}
    assert stream_colour(first) == (pix_fmt, rgb)
    assert after.shape == (16, *before.shape[1:])
    assert in_levels(after, before[:1]).max() < 1


def test_a_lossless_ten_bit_round_trip_is_exact(tmp_path: Path) -> None:
    """10-bit RGB written losslessly reads back bit for bit; other 16-bit samples are rounded
    to the nearest 10-bit level (FFmpeg alone would drop the low bits, up to a whole level)."""
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 1024, size=(3, 16, 24, 3), dtype=np.uint16)
    widened = (levels << 6) | (levels >> 4)     # how FFmpeg reads 10-bit samples into 16 bits
    path = write_video(widened, tmp_path / "exact.mkv", fps=10, lossless=True,
                       colour=Colour(depth=10))
    assert np.array_equal(read_deep(path).numpy(), widened)
    samples = rng.integers(0, 65536, size=(3, 16, 24, 3), dtype=np.uint16)
    path = write_video(samples, tmp_path / "rounded.mkv", fps=10, lossless=True,
                       colour=Colour(depth=10))
    assert in_levels(read_deep(path), torch.from_numpy(samples)).max() <= 0.5 + 1e-3


# ------------------------------------------------------------------- choices and refusals

def test_the_encoding_follows_the_depth() -> None:
    assert video_encoding("a.mkv", "ffv1", depth=10).pix_fmt == "gbrp10le"
    assert video_encoding("a.mkv", "ffv1", depth=16).pix_fmt == "gbrp16le"
    assert video_encoding("a.mkv", "ffv1").pix_fmt == "bgr0"
    lossless = video_encoding("a.mkv", lossless=True, depth=10)
    assert (lossless.encoder, lossless.pix_fmt, lossless.exact) == ("ffv1", "gbrp10le", True)
    if _has_encoder("libx264rgb"):   # 8-bit lossless output is RGB H.264, as before
        assert video_encoding("a.mp4", lossless=True).encoder == "libx264rgb"


def test_lossless_ten_bit_where_the_container_cannot_hold_it_is_refused(tmp_path) -> None:
    source = still_ten_bit_clip(tmp_path / "in.mkv", n=2)
    # refused before the model loads: the model named does not exist
    with pytest.raises(ValueError, match=r"\.mp4 cannot hold lossless 10-bit video .*\.mkv"):
        interpolate(source, tmp_path / "out.mp4", model=tmp_path / "no-model",
                    lossless=True, progress=False)
    assert not (tmp_path / "out.mp4").exists()


@needs_ten_bit_x264
def test_a_depth_the_codec_cannot_hold_is_written_at_its_deepest_with_a_warning(
        tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match="writes at most 10 bits: the 12-bit input"):
        writer = VideoWriter(tmp_path / "out.mp4", 10, colour=Colour(depth=12))
    with writer:
        writer.write(np.full((2, 16, 16, 3), 40000, np.uint16))
    assert stream_colour(tmp_path / "out.mp4")[0] == "yuv420p10le"


def test_frames_of_the_wrong_depth_are_refused(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        writer = VideoWriter(tmp_path / "out.mkv", 10, codec="ffv1", colour=Colour(depth=10))
    with pytest.raises(ValueError, match="frames must be uint16 .*opened for uint16 frames"):
        writer.write(np.zeros((1, 16, 16, 3), np.uint8))
    writer.abort()
