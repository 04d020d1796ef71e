"""Windows, tiles, scene cuts and the commands, with fake models whose answer is known.

``SourceModel`` returns the source clip as its x0 prediction, so every sampler returns the
task's own lift (linear blending for interpolation): any difference between windowed and
single-window runs, or between tiled and whole frames, is the pipeline's doing.
"""

from __future__ import annotations

import re
import threading
import warnings
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import pytest
import torch
from torch import nn

from tcvbm.bridges import Bridge
from tcvbm.data.streams import (
    RepairCounter as _Warnings,
    cfr_indices,
    prefetched,
    read_repaired as _iter_frames,
)
from tcvbm.pipeline import interpolate, upscale
from tcvbm.runs import InferenceBundle
from tcvbm.scenes import SceneCutDetector
from tcvbm.tasks import get_task
from tcvbm.windows import TemporalBlender, feather, restore_stream, stage_count, tile_starts, tiled

from conftest import _make_clip as make_clip


class SourceModel(nn.Module):
    """x0 prediction = the source clip; deterministic and local in time and space."""

    config = SimpleNamespace(noise_channels=0)
    multiple = 8

    def forward(self, x_t, t, cond=None, context=None, noise=None):
        return cond


def source_bundle(num_frames: int = 9, task: str = "interp", **task_kwargs) -> InferenceBundle:
    task_kwargs = task_kwargs or ({"factor": 2} if task == "interp" else {})
    return InferenceBundle(SourceModel(), Bridge(num_frames), get_task(task, **task_kwargs),
                           num_frames, (32, 32), "stochastic", 1, "bridge")


def moving_frames(n: int, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    """uint8 (n, h, w, 3): a smooth pattern drifting right, a plausible shot."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 6, generator=g), size=(h, w + n),
                                           mode="bicubic", align_corners=False)[0]
    frames = torch.stack([base[:, :, i:i + w] for i in range(n)])
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def make_video(path: Path, frames: torch.Tensor, fps: int = 10, audio: bool = False) -> Path:
    """Encode uint8 frames nearly losslessly (and optionally a tone of the same duration)."""
    odd = frames.shape[1] % 2 or frames.shape[2] % 2
    return make_clip(path, fps=fps, frames=frames.numpy(), options={"crf": "10"},
                     pix_fmt="yuv444p" if odd else "yuv420p", audio="aac" if audio else None)


def decode(path: Path) -> tuple[torch.Tensor, float, bool]:
    from tcvbm.data import VideoReader

    with av.open(str(path)) as container:
        has_audio = bool(container.streams.audio)
    reader = VideoReader(str(path), backend="pyav")
    return reader.read(range(len(reader))), reader.fps, has_audio


# ------------------------------------------------------------------------ pure pieces

def test_feather_and_tile_starts():
    w = feather(10, 3)
    assert w.min() > 0 and w.max() == 1 and torch.allclose(w, w.flip(0))
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(100, 40, 10)
    assert starts[0] == 0 and starts[-1] == 60
    assert all(b - a <= 30 for a, b in zip(starts, starts[1:]))


def blend_fn(num_frames: int, factor: int = 2):
    task = get_task("interp", factor=factor)
    return lambda obs, key=None: task.lift(obs, num_frames)


def run_blender(keys_frames: list[torch.Tensor], **kwargs) -> list[torch.Tensor]:
    blender = TemporalBlender(**kwargs)
    out = []
    for frame in keys_frames:
        out += blender.push(frame)
    return out + blender.finish()


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("length", [1, 2, 3, 7, 12])
def test_blender_counts_and_keyframes(factor, length):
    keys = [torch.rand(3, 4, 5) * 2 - 1 for _ in range(length)]
    out = run_blender(keys, window_fn=blend_fn(2 * factor + 1, factor), keys=3, overlap=1,
                      factor=factor, keep_inputs=True)
    assert len(out) == length * factor
    for i, key in enumerate(keys):
        assert torch.equal(out[i * factor], key)
    assert all(torch.equal(f, keys[-1]) for f in out[(length - 1) * factor:])


@pytest.mark.parametrize("overlap,batch", [(1, 1), (2, 1), (3, 3)])
def test_windowed_equals_single_window(overlap, batch):
    keys = [torch.rand(3, 6, 7) * 2 - 1 for _ in range(11)]
    single = run_blender(keys, window_fn=blend_fn(21), keys=11, overlap=1, factor=2,
                         keep_inputs=True)
    windowed = run_blender(keys, window_fn=blend_fn(9), keys=5, overlap=overlap, factor=2,
                           keep_inputs=True, batch=batch)
    assert len(single) == len(windowed) == 22
    for a, b in zip(single, windowed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_blender_memory_is_bounded_by_the_window():
    blender = TemporalBlender(blend_fn(9), keys=5, overlap=2, factor=2, keep_inputs=True)
    held = 0
    for _ in range(200):
        blender.push(torch.zeros(3, 2, 2))
        held = max(held, len(blender.inputs) + len(blender.sums))
    assert held <= 3 * 9


def test_blender_rejects_windows_that_share_no_keyframe():
    with pytest.raises(ValueError, match="overlap"):
        TemporalBlender(blend_fn(9), keys=5, overlap=0, factor=2)


def test_tiles_match_whole_frame_for_a_local_model():
    x = torch.rand(2, 3, 5, 70, 90) * 2 - 1
    fn = blend_fn(9)
    whole = fn(x)
    torch.testing.assert_close(tiled(fn, tile=32, overlap=8, multiple=8)(x), whole)
    up = lambda obs, key=None: obs.repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731
    torch.testing.assert_close(tiled(up, tile=24, overlap=6, scale=2)(x), up(x))


def test_tile_seams_are_bounded():
    calls = []

    def offset_fn(obs, key=None):  # every tile disagrees with its neighbours by a constant
        calls.append(1)
        return obs + 0.1 * len(calls)

    x = torch.zeros(1, 3, 1, 64, 64)
    out = tiled(offset_fn, tile=32, overlap=16, multiple=1, max_batch=1)(x)[0, 0, 0]
    spread = 0.1 * (len(calls) - 1)
    jump = max(out.diff(dim=0).abs().max(), out.diff(dim=1).abs().max())
    assert len(calls) >= 4
    assert jump <= 1.5 * spread / 16     # a hard seam would jump by 0.1 or more


def test_cfr_indices():
    assert cfr_indices([0.0, 0.1, 0.2, 0.3], 10) == [0, 1, 2, 3]
    held = cfr_indices([0.0, 0.1, 0.4, 0.5], 10)      # frame 1 held for 0.3 s
    assert held == [0, 1, 1, 1, 2, 3]
    burst = cfr_indices([0.0, 0.05, 0.1, 0.2], 10)    # an extra frame in a burst is dropped
    assert burst == [0, 2, 3]
    assert cfr_indices([], 10) == []
    rounded = [round(i * 1001 / 30000, 3) for i in range(100)]   # 29.97 fps, 1 ms time base
    assert cfr_indices(rounded, 30000 / 1001) == list(range(100))


def test_stage_count():
    assert stage_count(2, 2) == 1 and stage_count(8, 2) == 3 and stage_count(4, 4) == 1
    with pytest.raises(ValueError, match="factor"):
        stage_count(2, 4)


def test_scene_detector():
    a, b = moving_frames(2, seed=0)
    other = moving_frames(1, seed=5)[0].flip(0).flip(1) // 2 + 100
    det = SceneCutDetector()
    assert not det.is_cut(a, b)
    assert det.is_cut(b, other)
    assert not SceneCutDetector(enabled=False).is_cut(b, other)


def test_scene_cuts_found_in_a_real_clip():
    path = Path(__file__).resolve().parents[1] / "data/samples/bikes.mp4"
    if not path.is_file():
        pytest.skip("sample clips not fetched (tools/fetch_sample_clips.py)")
    from tcvbm.data import VideoReader

    frames = VideoReader(str(path), backend="pyav").read(range(180, 192))
    det = SceneCutDetector()
    cuts = [180 + i for i in range(len(frames) - 1) if det.is_cut(frames[i], frames[i + 1])]
    assert cuts == [186]                              # a hard cut between frames 186 and 187


def test_scene_cut_is_never_interpolated_across():
    shot1, shot2 = moving_frames(4, seed=0), moving_frames(4, seed=3).flip(2) // 3
    frames = torch.cat([shot1, shot2])
    blender = TemporalBlender(blend_fn(9), keys=5, overlap=2, factor=2, keep_inputs=True)
    out = list(restore_stream(iter(frames), blender, SceneCutDetector()))
    assert len(out) == 16
    assert torch.equal(out[7], shot1[-1])            # the frame is repeated up to the cut
    assert torch.equal(out[8], shot2[0])
    blended = ((shot1[-1].float() + shot2[0].float()) / 2)
    assert (out[7].float() - blended).abs().mean() > 10


def test_damaged_frames_are_repaired_with_warnings():
    class Reader:
        def read(self, indices):
            if 3 in indices:
                raise RuntimeError("corrupt packet")
            return torch.full((len(indices), 2, 2, 3), indices[0], dtype=torch.uint8)

    warn = _Warnings()
    with pytest.warns(UserWarning, match="frame 3"):
        frames = list(_iter_frames(Reader(), list(range(6)), warn, chunk=4))
    assert len(frames) == 6 and warn.count == 1
    assert int(frames[3][0, 0, 0]) == 2              # the previous good frame


# ----------------------------------------------------------------------- the commands

@pytest.mark.parametrize("factor", [2, 4, 8])
def test_interpolate_counts_fps_duration_audio(tmp_path, factor):
    src = make_video(tmp_path / "in.mp4", moving_frames(5), fps=10, audio=factor == 2)
    out = tmp_path / f"out{factor}.mp4"
    summary = interpolate(src, out, factor=factor, model=source_bundle(), progress=False)
    frames, fps, has_audio = decode(out)
    assert summary.frames_in == 5 and summary.frames_out == 5 * factor == len(frames)
    assert fps == pytest.approx(10 * factor)
    assert len(frames) / fps == pytest.approx(5 / 10)
    assert has_audio == (factor == 2)
    inputs, _, _ = decode(src)
    for i in range(5):    # keyframes kept (exactly before encoding: see the blender tests)
        assert float((frames[i * factor].float() - inputs[i].float()).abs().mean()) < 6


def test_interpolate_windowed_equals_single_window(tmp_path):
    src = make_video(tmp_path / "in.mp4", moving_frames(11), fps=10)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    interpolate(src, a, model=source_bundle(9), overlap=2, progress=False)
    interpolate(src, b, model=source_bundle(21), progress=False)
    fa, _, _ = decode(a)
    fb, _, _ = decode(b)
    assert fa.shape == fb.shape
    assert (fa.float() - fb.float()).abs().mean() < 0.5


class CountingSource(SourceModel):
    """The source model, counting the frames it is run on (windows run on several threads
    at once: the count is locked)."""

    def __init__(self):
        super().__init__()
        self.frames = 0
        self.lock = threading.Lock()

    def forward(self, x_t, t, cond=None, context=None, noise=None):
        with self.lock:
            self.frames += x_t.shape[0] * x_t.shape[2]
        return cond


def test_interpolation_windows_share_one_keyframe_by_default(tmp_path):
    """17 inputs through 5-keyframe windows: 4 windows when they share one keyframe, 5 when
    they share half (the upscaling default), and the same pictures either way."""
    src = make_video(tmp_path / "in.mp4", moving_frames(17), fps=10)
    counts, videos = {}, {}
    for overlap in (None, 2):
        model = CountingSource()
        bundle = InferenceBundle(model, Bridge(9), get_task("interp", factor=2), 9, (32, 32),
                                 "stochastic", 1, "bridge")
        videos[overlap] = tmp_path / f"out{overlap}.mp4"
        interpolate(src, videos[overlap], model=bundle, overlap=overlap, progress=False)
        counts[overlap] = model.frames // 9
    assert counts == {None: 4, 2: 5}
    assert (decode(videos[None])[0].float() - decode(videos[2])[0].float()).abs().mean() < 0.5


def test_prefetched_keeps_order_raises_where_it_failed_and_stops_early():
    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise OSError("decoder died")

    got = []
    with pytest.raises(OSError, match="decoder died"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]
    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()                      # the consumer stops: so does the producer
    assert len(made) <= 3 + 2 + 2
    with pytest.raises(ValueError, match="depth"):
        next(prefetched([1], depth=0))


def test_interpolate_with_a_tiny_real_model_and_tiles(tmp_path):
    from tcvbm.models import create

    torch.manual_seed(0)
    bundle = InferenceBundle(create("unet-tiny"), Bridge(9), get_task("interp", factor=2), 9,
                             (32, 32), "stochastic", 2, "bridge")
    src = make_video(tmp_path / "in.mp4", moving_frames(3, 40, 56), fps=8)
    summary = interpolate(src, tmp_path / "out.mp4", model=bundle, tile=32, progress=False)
    assert summary.frames_out == 6 and summary.steps == 2
    assert decode(tmp_path / "out.mp4")[0].shape == (6, 40, 56, 3)


def test_odd_sizes_and_single_frame(tmp_path):
    src = make_video(tmp_path / "odd.mp4", moving_frames(4, 18, 26)[:, :17, :25].contiguous(),
                     fps=10)
    out = tmp_path / "odd_out.mp4"
    interpolate(src, out, model=source_bundle(), progress=False)
    assert len(decode(out)[0]) == 8
    one = make_video(tmp_path / "one.mp4", moving_frames(1), fps=10)
    with pytest.warns(UserWarning, match="single frame"):
        summary = interpolate(one, tmp_path / "one_out.mp4", factor=4, model=source_bundle(),
                              progress=False)
    assert summary.frames_out == 4


@pytest.mark.parametrize("content,match", [
    (None, "does not exist"), (b"", "cannot read"), (b"not a video at all" * 100, "cannot read"),
])
def test_bad_inputs_raise_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        interpolate(path, tmp_path / "out.mp4", model=source_bundle(), progress=False)
    assert not (tmp_path / "out.mp4").exists()


def test_tiny_frames_are_refused(tmp_path):
    src = make_video(tmp_path / "tiny.mp4", moving_frames(3, 4, 6), fps=10)
    with pytest.raises(ValueError, match="at least"):
        interpolate(src, tmp_path / "out.mp4", model=source_bundle(), progress=False)


def test_failure_leaves_nothing_half_written(tmp_path):
    class Broken(SourceModel):
        calls = 0

        def forward(self, x_t, t, cond=None, context=None, noise=None):
            Broken.calls += 1
            if Broken.calls > 1:
                raise RuntimeError("out of memory")
            return cond

    bundle = source_bundle()
    bundle.model = Broken()
    src = make_video(tmp_path / "in.mp4", moving_frames(12), fps=10)
    with pytest.raises(RuntimeError):
        interpolate(src, tmp_path / "out.mp4", model=bundle, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


def test_damaged_stretch_is_repaired_from_the_previous_good_frame(tmp_path):
    """Frames 14-16 zeroed in the file (keyframes every 10 frames): the frames that cannot be
    decoded, no more than their group of pictures, are each replaced by the last good frame
    and counted as warnings; every other input frame comes through as itself."""
    frames = moving_frames(30, 32, 48)
    src = make_clip(tmp_path / "in.mp4", fps=10, frames=frames.numpy(), options={"crf": "10"},
                    gop=10)
    with av.open(str(src)) as container:
        packets = sorted((p.pts, p.pos, p.size, p.is_keyframe)
                         for p in container.demux(container.streams.video[0]) if p.size)
    damaged = range(14, 17)
    data = bytearray(src.read_bytes())
    for _, pos, size, _ in packets[damaged.start:damaged.stop]:
        data[pos:pos + size] = bytes(size)
    src.write_bytes(bytes(data))
    keys = [j for j, packet in enumerate(packets) if packet[3]]
    gop = range(max(k for k in keys if k <= damaged[0]),
                min((k for k in keys if k > damaged[-1]), default=len(packets)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = interpolate(src, tmp_path / "out.mp4", model=source_bundle(), progress=False)
    repaired = re.compile(r"frame (\d+): unreadable; repeated the previous frame")
    lost = [int(m[1]) for w in caught if (m := repaired.fullmatch(str(w.message)))]
    assert (summary.frames_in, summary.frames_out, summary.warnings) == (30, 60, len(lost))
    assert set(damaged) <= set(lost) <= set(gop)
    assert lost == list(range(lost[0], lost[-1] + 1))
    kept = decode(tmp_path / "out.mp4")[0][::2].float()  # the input frames of the output
    nearest = [int((frames.float() - f).abs().mean(dim=(1, 2, 3)).argmin()) for f in kept]
    assert nearest == [lost[0] - 1 if j in lost else j for j in range(30)]


def test_upscale_with_a_source_model(tmp_path):
    bundle = source_bundle(3, "vsr", scale=2)
    src = make_video(tmp_path / "in.mp4", moving_frames(5, 16, 24), fps=10)
    summary = upscale(src, tmp_path / "up.mp4", model=bundle, progress=False)
    frames, fps, _ = decode(tmp_path / "up.mp4")
    assert summary.frames_out == 5 and frames.shape == (5, 32, 48, 3) and fps == 10


def test_image_to_video_chains_windows(tmp_path):
    from PIL import Image

    from tcvbm.pipeline import image_to_video

    image = tmp_path / "still.png"
    Image.fromarray(moving_frames(1, 24, 32)[0].numpy()).save(image)
    out = tmp_path / "clip.mp4"
    summary = image_to_video(image, out, frames=10, fps=5, model=source_bundle(4, "i2v"),
                             progress=False)
    frames, fps, _ = decode(out)
    assert summary.frames_out == 10 == len(frames) and fps == 5
    assert float((frames.float() - frames[0].float()).abs().mean()) < 2   # the static source
    with pytest.raises(ValueError, match="interp"):
        image_to_video(image, out, model=source_bundle(9))


def test_sample_files_runs_the_bundles_task_on_a_folder(tmp_path):
    from tcvbm.pipeline import sample_files

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b"):
        make_video(inputs / f"{name}.mp4", moving_frames(3), fps=10)
    written = sample_files(source_bundle(), inputs, tmp_path / "out")
    assert [p.name for p in written] == ["a.mp4", "b.mp4"]
    assert all(len(decode(p)[0]) == 6 for p in written)


def test_variable_frame_rate_is_resampled_by_timestamp(tmp_path):
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as out:       # frame 2 is shown for 0.4 s, the rest 0.1 s
        video = out.add_stream("libx264", rate=10)
        video.height, video.width, video.pix_fmt = 32, 48, "yuv420p"
        video.codec_context.time_base = Fraction(1, 10)
        for pts, array in zip([0, 1, 2, 6, 7, 8], moving_frames(6).numpy()):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 10)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    with pytest.warns(UserWarning, match="variable frame rate"):
        summary = interpolate(path, tmp_path / "out.mp4", model=source_bundle(), progress=False)
    frames, fps, _ = decode(tmp_path / "out.mp4")
    assert summary.frames_in == 9 and len(frames) == 18 and fps == pytest.approx(20)


@pytest.mark.parametrize("command", ["interpolate", "upscale"])
def test_no_model_is_a_clear_error_not_a_type_error(tmp_path: Path, command: str) -> None:
    clip = make_video(tmp_path / "in.mp4", moving_frames(3))
    with pytest.raises(ValueError, match="model: none given"):
        {"interpolate": interpolate, "upscale": upscale}[command](clip, tmp_path / "out.mp4",
                                                                  model=None)
