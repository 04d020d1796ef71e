"""Output formats: the container follows the name, ``codec`` chooses h264/h265/ffv1, and PNG
image sequences (``DIR/`` or ``frames_%06d.png``) are written atomically.

A name or codec that does not fit is refused before a model is loaded or a frame read: the
tests give a model path that does not exist, so any other order would fail on the model.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tcvbm.cli import main
from tcvbm.data.encoding import _has_encoder
from tcvbm.data.outputs import resolve_output
from tcvbm.data.streams import write_counted
from tcvbm.data.writer import write_video
from tcvbm.pipeline import interpolate, sample_files

from conftest import decode_all
from test_pipeline import SourceModel, moving_frames, source_bundle
from test_writer_quality import gradient, noise, psnr

pytestmark = pytest.mark.usefixtures("one_thread")

needs_x265 = pytest.mark.skipif(not _has_encoder("libx265"),
                                reason="this FFmpeg build has no libx265 encoder")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Six keyframes at 10 fps, written losslessly: an interpolation gives 12 at 20 fps."""
    return Path(write_video(moving_frames(6, h=32, w=48), tmp_path / "in.mkv", fps=10,
                            lossless=True))


def stream_info(path: Path) -> tuple[int, float, str, str]:
    """(decoded frames, fps, codec, the container's brand or format name)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        brand = container.metadata.get("major_brand", container.format.name)
        return (len(decode_all(path)), float(stream.average_rate), stream.codec_context.name,
                brand.strip())


def read_pngs(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


# ------------------------------------------------------------------------------ videos

@pytest.mark.parametrize("suffix,brand", [(".mp4", "isom"), (".mkv", "matroska,webm"),
                                          (".mov", "qt"), (".avi", "avi")])
def test_the_container_follows_the_name(tmp_path: Path, source: Path, suffix, brand) -> None:
    out = tmp_path / f"out{suffix}"
    summary = interpolate(source, out, model=source_bundle(), progress=False)
    assert summary.frames_out == 12
    assert stream_info(out) == (12, 20.0, "h264", brand)


@needs_x265
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_h265_writes_hevc_at_its_crf(tmp_path: Path, suffix) -> None:
    # grain on a drifting pattern: detail that a high crf visibly drops
    keys = moving_frames(6, h=64, w=96).numpy() // 2 + noise(6, 64, 96)[..., :1] // 8
    source = write_video(keys, tmp_path / "in.mkv", fps=10, lossless=True)
    sizes, scores = [], []
    for crf in (10, 40):
        out = tmp_path / f"crf{crf}{suffix}"
        interpolate(source, out, model=source_bundle(), codec="h265", crf=crf, progress=False)
        frames, fps, codec, _ = stream_info(out)
        assert (frames, fps, codec) == (12, 20.0, "hevc")
        sizes.append(out.stat().st_size)
        scores.append(psnr(decode_all(out)[0::2], keys))
    assert sizes[0] > 2 * sizes[1] and scores[0] > scores[1] + 6     # crf reaches x265
    if suffix != ".mkv":                            # the tag Apple's players need
        with av.open(str(out)) as container:
            assert container.streams.video[0].codec_context.codec_tag == "hvc1"


@needs_x265
def test_h265_on_narrow_frames_runs_without_cutree_and_refuses_tiny_ones(tmp_path: Path) -> None:
    # x265 names its settings inside the stream: cuTree overran its buffers on narrow frames
    for width, setting in ((48, b"no-cutree"), (64, b" cutree")):
        path = write_video(gradient(3, 32, width), tmp_path / f"w{width}.mkv", fps=10,
                           codec="h265")
        assert setting in Path(path).read_bytes()
    with pytest.raises(ValueError, match=r"h265: cannot write .*tiny\.mkv.* at least 16x16"):
        write_video(gradient(3, 12, 40), tmp_path / "tiny.mkv", fps=10, codec="h265")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w48.mkv", "w64.mkv"]


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
@pytest.mark.parametrize("content", [noise, gradient])
def test_ffv1_is_rgb_exact_at_odd_sizes(tmp_path: Path, suffix, content) -> None:
    frames = content(5, 17, 33)
    path = write_video(frames, tmp_path / f"out{suffix}", fps=10, codec="ffv1")
    with av.open(path) as container:
        assert container.streams.video[0].codec_context.name == "ffv1"
    assert np.array_equal(decode_all(path), frames)


def test_sample_writes_ffv1_into_mkv(tmp_path: Path, source: Path) -> None:
    written = sample_files(source_bundle(), source, tmp_path / "out", codec="ffv1")
    assert [p.name for p in written] == ["in.mkv"]
    assert np.array_equal(decode_all(written[0])[0::2], decode_all(source))


@pytest.mark.parametrize("name,options,match", [
    ("out.mp4", dict(codec="ffv1"), r"\.mp4 cannot hold ffv1; use \.mkv or \.avi"),
    ("out.mov", dict(codec="ffv1"), r"\.mov cannot hold ffv1; use \.mkv or \.avi"),
    ("out.avi", dict(codec="h265"), r"\.avi cannot hold h265; use \.mp4 or \.mkv or \.mov"),
    ("out.mkv", dict(codec="h265", lossless=True), r"lossless: RGB-exact output is H\.264"),
    ("out.mkv", dict(codec="vp9"), r"codec: expected one of h264, h265, ffv1, got 'vp9'"),
    ("out.webm", {}, r"out\.webm.*expected a video \(\.mp4, \.mkv, \.mov, \.avi\) or PNG"),
    ("out", {}, r"'.*out': expected a video"),
    ("frames/", dict(codec="h264"), r"codec: output .*frames/.* is a sequence of PNG frames"),
    ("f_%06d.jpg", {}, r"f_%06d\.jpg.*image sequences are PNG"),
    ("f_%d_%d.png", {}, r"one integer conversion"),
])
def test_a_mismatch_is_refused_before_reading_or_loading(tmp_path: Path, source: Path, name,
                                                         options, match) -> None:
    missing_model = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match=match):      # the input is not even opened
        interpolate(tmp_path / "no-such-input.mp4", f"{tmp_path}/{name}", model=missing_model,
                    progress=False, **options)
    with pytest.raises(ValueError, match=match):      # nor the model loaded
        interpolate(source, f"{tmp_path}/{name}", model=missing_model, progress=False,
                    **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


@pytest.mark.parametrize("argv,message", [
    (["-o", "{tmp}/out.mp4", "--codec", "ffv1"], "cannot hold ffv1"),
    (["-o", "{tmp}/out.webm"], "expected a video"),
    (["-o", "{tmp}/out.mkv", "--codec", "ffv1", "--crf", "20"], "crf: sets the quality of h264"),
    (["-o", "{tmp}/frames/", "--crf", "20"], "PNG frames are lossless"),
    (["-o", "{tmp}/frames/", "--codec", "h265"], "is a sequence of PNG frames"),
    (["-o", "{tmp}/frames/", "--preview", "{tmp}/p.png"], "preview: drawn from a video"),
])
def test_the_command_line_refuses_a_mismatch_in_one_line(tmp_path: Path, source: Path, capsys,
                                                         argv, message) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["interpolate", str(source), *argv, "--model", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tcvbm interpolate: error: ") and message in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


# --------------------------------------------------------------------- image sequences

def test_png_frames_in_a_folder_equal_the_lossless_video(tmp_path: Path, source: Path) -> None:
    exact = tmp_path / "exact.mkv"
    interpolate(source, exact, model=source_bundle(), lossless=True, progress=False)
    summary = interpolate(source, f"{tmp_path}/frames/", model=source_bundle(), progress=False)
    files = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in files] == [f"{i:06d}.png" for i in range(12)]
    assert summary.frames_out == 12
    made, truth = read_pngs(files), decode_all(exact)
    assert np.array_equal(made[0], truth[0]) and np.array_equal(made[-1], truth[-1])
    assert np.array_equal(made, truth)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exact.mkv", "frames", "in.mkv"]


def test_a_pattern_joins_an_existing_folder_and_keeps_its_files(tmp_path: Path,
                                                                source: Path) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "notes.txt").write_text("mine")
    (shots / "other_0000.png").write_bytes(b"not ours")
    interpolate(source, shots / "f_%04d.png", model=source_bundle(), progress=False)
    names = sorted(p.name for p in shots.iterdir())
    assert names == sorted(["notes.txt", "other_0000.png", *(f"f_{i:04d}.png" for i in range(12))])
    assert (shots / "notes.txt").read_text() == "mine"
    assert np.array_equal(read_pngs([shots / "f_0000.png"])[0], decode_all(source)[0])
    # the same pattern again would write over those frames: refused, nothing touched
    before = {p.name: p.stat().st_mtime_ns for p in shots.iterdir()}
    with pytest.raises(ValueError, match=r"already holds 12 frame file\(s\) named like f_%04d"):
        interpolate(source, shots / "f_%04d.png", model=tmp_path / "none", progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in shots.iterdir()} == before


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [False, True])
def test_an_error_midway_leaves_no_frames_behind(tmp_path: Path, error, existing) -> None:
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    staged = []

    def frames_then_error():
        frames = noise(5, 16, 16)
        yield from frames[:3]
        staged.extend(tmp_path.rglob(".*.partial/*.png"))   # written, not yet in place
        raise error("stopped")

    with pytest.raises(error, match="stopped"):
        write_counted(frames_then_error(), f"{out}/", fps=10, audio_from=None)
    assert len(staged) == 3
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == (["out", "out/keep.txt"] if existing else [])


def test_a_failing_model_leaves_no_frames_behind(tmp_path: Path, source: Path) -> None:
    class Broken(SourceModel):
        def forward(self, x_t, t, cond=None, context=None, noise=None):
            raise RuntimeError("out of memory")

    bundle = source_bundle()
    bundle.model = Broken()
    with pytest.raises(RuntimeError, match="out of memory"):
        interpolate(source, tmp_path / "frames" / "f_%06d.png", model=bundle, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_audio_cannot_go_into_frames_and_says_so_once(tmp_path: Path, make_clip) -> None:
    src = make_clip(tmp_path / "in.mp4", n=6, fps=10, audio="aac")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        interpolate(src, f"{tmp_path}/frames/", model=source_bundle(), progress=False)
    audio = [w for w in caught if "audio is not written" in str(w.message)]
    assert len(audio) == 1 and "in.mp4" in str(audio[0].message)
    assert len(os.listdir(tmp_path / "frames")) == 12


def test_what_an_output_name_means(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    assert resolve_output(tmp_path / "existing").pattern == tmp_path / "existing" / "%06d.png"
    assert resolve_output(f"{tmp_path}/new/").pattern == tmp_path / "new" / "%06d.png"
    assert resolve_output("a/f_%d.PNG").pattern == Path("a/f_%d.PNG")
    video = resolve_output("a/clip.MOV", codec="h265")
    assert video.pattern is None and video.encoding.codec == "h265"
    assert not (tmp_path / "new").exists()          # checking writes nothing
