"""Any output rate on the same models: ``--fps R``, ``--factor F`` and ``--dedup``.

The fake models return their source: the blend bundle's in-between frames are linear blends
(a frame at the wrong time or ``tau`` shows as a wrong value), the flow bundle's are DIS flow
interpolation (the flow baseline, which repairs real motion). Outputs at input times are the
inputs themselves, so with ``--lossless`` they come back bit for bit.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
from torch import nn

import tcvbm.flow
from tcvbm.bridges import Bridge
from tcvbm.cli import main
from tcvbm.data import VideoReader
from tcvbm.data.visual import from_uint8
from tcvbm.data.writer import write_video
from tcvbm.model_fns import build_pair_fn, build_window_fn
from tcvbm.pipeline import interpolate
from tcvbm.runs import InferenceBundle
from tcvbm.tasks import get_task

from test_pipeline import SourceModel, decode, make_video, moving_frames, source_bundle

pytestmark = pytest.mark.usefixtures("one_thread")


def blend_at(frames: torch.Tensor, at: float) -> torch.Tensor:
    """uint8 frames mixed linearly at input position ``at`` (float HWC)."""
    i = min(math.floor(at), len(frames) - 2)
    tau = at - i
    return (1 - tau) * frames[i].float() + tau * frames[i + 1].float()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * math.log10(255 ** 2 / mse)


# ------------------------------------------------------------------ the task's layout

def test_prepare_at_places_frames_at_any_time() -> None:
    keys = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 3, 1, 1)
    task = get_task("interp", factor=2)
    source, context = task.prepare_at(keys, [0, 0.3, 1, 1.75, 2, 2])
    assert context is None
    torch.testing.assert_close(source.flatten(), torch.tensor([0, 0.3, 1, 2.5, 3, 3]))
    assert task.layout(6) == [0, 0.5, 1, 1.5, 2, 2]       # the training layout, held tail
    assert torch.equal(task.prepare(keys, 6)[0], task.prepare_at(keys, task.layout(6))[0])
    assert task.bridge_times([0, 0.25, 1]) == [0, 0.5, 2]  # keyframes 2 apart at x2
    for bad in ([0, 2.5], [1, 0.5], [-0.1, 1], [0, float("nan")]):
        with pytest.raises(ValueError, match="^times"):
            task.prepare_at(keys, bad)


def test_flow_context_at_any_time_and_one_warp_per_set_of_times(monkeypatch) -> None:
    """Pairs whose frames share their ``tau``s are warped in one call (the training layout
    is one call, as fast as before); each frame's candidates are the warp at its own
    ``tau``, and its weight channel is ``1 - tau``."""
    task = get_task("interp", factor=2, mode="flow", context=True)
    obs = from_uint8(moving_frames(4, 32, 48)).unsqueeze(0)            # (1, 3, 4, 32, 48)
    calls = []
    warp = tcvbm.flow.warp_candidates
    monkeypatch.setattr(tcvbm.flow, "warp_candidates",
                        lambda a, b, times: calls.append((len(a), list(times)))
                        or warp(a, b, times))
    task.prepare(obs, 7)
    assert calls == [(3, [0.5])]
    calls.clear()
    times = [0, 0.25, 0.75, 1, 1.25, 1.75, 2, 2.375, 3]
    source, context = task.prepare_at(obs, times)
    assert calls == [(2, [0.25, 0.75]), (1, [0.375])]
    tau = torch.tensor([t - math.floor(t) if t < 3 else 0.0 for t in times])
    assert torch.equal(context[0, 6, :, 0, 0], (1 - tau).float())
    keys = (obs + 1) / 2
    direct = warp(keys[:, :, 2], keys[:, :, 3], [0.375])
    torch.testing.assert_close(context[:, 0:3, 7], direct.left[:, 0] * 2 - 1)
    torch.testing.assert_close(context[:, 3:6, 7], direct.right[:, 0] * 2 - 1)
    mixed = 0.625 * direct.left[:, 0] + 0.375 * direct.right[:, 0]
    torch.testing.assert_close(source[:, :, 7], mixed * 2 - 1)
    whole = [0, 3, 6, 8]
    assert torch.equal(source[:, :, whole], obs[:, :, [0, 1, 2, 3]])


# ----------------------------------------------------------- one sampler, two layouts

def test_the_pair_path_is_the_window_path_between_two_frames() -> None:
    """The x2 flow bundle: a pair at tau 0.5 gives the window's in-between frame."""
    bundle = source_bundle(9, mode="flow")
    frames = from_uint8(moving_frames(5, 40, 56))                       # (3, 5, 40, 56)
    windowed = build_window_fn(bundle, 1, None, None, "cpu", "fp32", 32, 1, 0, False)(
        frames.unsqueeze(0))[0]
    pair = build_pair_fn(bundle, tile=32)
    for i in range(4):
        made = pair(frames[:, i], frames[:, i + 1], [0.5])
        assert made.shape == (1, 3, 40, 56)
        torch.testing.assert_close(made[0], windowed[:, 2 * i + 1], atol=1e-6, rtol=0)


def test_the_pair_path_samples_the_bridge_on_the_frames_times(monkeypatch) -> None:
    seen = []
    with_times = Bridge.with_times
    monkeypatch.setattr(Bridge, "with_times",
                        lambda self, times: seen.append((self.num_frames, list(times)))
                        or with_times(self, times))
    frames = from_uint8(moving_frames(2))
    made = build_pair_fn(source_bundle(9))(frames[:, 0], frames[:, 1], [0.25, 0.5])
    assert made.shape == (2, 3, 32, 48)
    assert seen == [(4, [0.0, 0.5, 1.0, 2.0])]         # keyframes 2 apart, as in training


class FrameCounting(SourceModel):
    """The source model, recording the frame count of every clip it is run on."""

    def __init__(self) -> None:
        super().__init__()
        self.clips: list[int] = []

    def forward(self, x_t, t, cond=None, context=None, noise=None):
        self.clips.append(x_t.shape[2])
        return cond


@pytest.mark.parametrize("options,clips", [
    (dict(factor=2), {9}), (dict(factor=4), {9}),                  # windows, as before
    (dict(factor=3), {4}), (dict(factor=2, dedup=True), {3}),
    (dict(fps=13), {3, 4}),                                        # 1.3 outputs an input
])
def test_powers_of_the_models_factor_keep_the_windows(tmp_path, options, clips) -> None:
    model = FrameCounting()
    bundle = InferenceBundle(model, Bridge(9), get_task("interp", factor=2), 9, (32, 32),
                             "stochastic", 1, "bridge")
    src = make_video(tmp_path / "in.mp4", moving_frames(6), fps=10)
    interpolate(src, tmp_path / "out.mp4", model=bundle, progress=False, **options)
    assert set(model.clips) == clips


# ------------------------------------------------------------------- the command line

class Brightening(SourceModel):
    """Linear blending made 0.1 brighter (12.75 levels): an output that the model made
    cannot pass for an input it sits next to."""

    def forward(self, x_t, t, cond=None, context=None, noise=None):
        return cond + 0.1


BRIGHTER = 0.1 * 127.5


@pytest.fixture
def blend_model(monkeypatch):
    """``--model`` resolves to a bundle that blends linearly and brightens (Brightening)."""
    def bundle(model):
        made = source_bundle()
        made.model = Brightening()
        return made

    monkeypatch.setattr("tcvbm.pipeline.resolve_bundle", bundle)


@pytest.mark.parametrize("flags,fps_out,keys", [
    (["--fps", "60"], 60, 12), (["--factor", "2.5"], 60, 12),      # every other input
    (["--factor", "3"], 72, 23), (["--fps", "60000/1001"], Fraction(60000, 1001), 1),
])
def test_any_rate_from_the_command_line(tmp_path, blend_model, capsys, flags, fps_out,
                                        keys) -> None:
    """24 frames at 24 fps with audio: the outputs at input times (before the last input)
    are those inputs bit for bit, the others the model's (brightened blends) at their exact
    times, the outputs after the last input hold it; same duration within one output
    frame, audio kept."""
    frames = moving_frames(24)
    src = make_video(tmp_path / "in.mp4", frames, fps=24, audio=True)
    out = tmp_path / "out.mkv"
    assert main(["interpolate", str(src), "-o", str(out), "--lossless", *flags]) == 0
    made, fps, has_audio = decode(out)
    inputs = decode(src)[0]
    assert fps == pytest.approx(float(fps_out)) and has_audio
    assert len(made) == round(fps_out)                                 # one second
    assert abs(len(made) / fps - 1) <= 1 / fps
    kept = 0
    for k, frame in enumerate(made):
        at = Fraction(k) / Fraction(fps_out) * 24                  # the output's input position
        if at.denominator == 1 or at >= 23:
            assert torch.equal(frame, inputs[min(int(at), 23)])      # bit for bit
            kept += at < 23
        else:                   # the model's frame at the output's exact time
            expected = (blend_at(inputs, float(at)) + BRIGHTER).clamp(max=255)
            assert (frame.float() - expected).abs().max() <= 1
    assert kept == keys
    assert f"24 frames in, {len(made)} frames out" in capsys.readouterr().err


def test_the_python_api_is_the_command_line(tmp_path, blend_model) -> None:
    src = make_video(tmp_path / "in.mp4", moving_frames(10), fps=24)
    assert main(["interpolate", str(src), "-o", str(tmp_path / "cli.mkv"), "--fps", "60",
                 "--lossless"]) == 0
    summary = interpolate(src, tmp_path / "api.mkv", model="any", fps=60, lossless=True,
                          progress=False)
    assert summary.frames_out == 25 and summary.duplicates is None
    assert "duplicate" not in str(summary)
    assert torch.equal(decode(tmp_path / "cli.mkv")[0], decode(tmp_path / "api.mkv")[0])


@pytest.mark.parametrize("options,match", [
    (dict(factor=2, fps=60), "exactly one"), (dict(factor=1), "factor"),
    (dict(factor=float("inf")), "factor"), (dict(fps=0), "fps"),
    (dict(fps=60, overlap=2), "overlap"), (dict(factor=3, overlap=2), "overlap"),
])
def test_bad_rates_are_refused_before_any_output(tmp_path, options, match) -> None:
    src = make_video(tmp_path / "in.mp4", moving_frames(4), fps=10)
    with pytest.raises(ValueError, match=match):
        interpolate(src, tmp_path / "out.mp4", model=source_bundle(), progress=False, **options)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("flags,message", [
    (["--factor", "2", "--fps", "60"], "not allowed with argument"),
    (["--factor", "1"], "expected a number above 1"),
    (["--fps", "-3"], "expected a frame rate above 0"),
])
def test_bad_rate_flags_are_one_usage_error(capsys, flags, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["interpolate", "in.mp4", "-o", "out.mp4", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_preview_needs_an_integer_factor(monkeypatch, capsys) -> None:
    calls = []
    monkeypatch.setattr("tcvbm.pipeline.interpolate", lambda *a, **kw: calls.append(kw))
    assert main(["interpolate", "in.mp4", "-o", "out.mp4", "--fps", "60", "--preview",
                 "p.png"]) == 2
    assert "preview" in capsys.readouterr().err and calls == []


def test_a_single_frame_is_held_at_any_rate(tmp_path) -> None:
    one = make_video(tmp_path / "one.mp4", moving_frames(1), fps=10)
    with pytest.warns(UserWarning, match="single frame"):
        summary = interpolate(one, tmp_path / "out.mp4", fps=25, model=source_bundle(),
                              progress=False)
    assert summary.frames_out == len(decode(tmp_path / "out.mp4")[0]) == 3   # 0.1 s at 25


# ------------------------------------------------------------------ variable frame rate

def test_variable_rate_input_is_retimed_on_its_timestamps(tmp_path) -> None:
    """Frame 2 is shown for 0.4 s: the windows repeat it, the retimer moves through it."""
    path = tmp_path / "vfr.mkv"
    frames = moving_frames(6)
    with av.open(str(path), "w") as out:
        video = out.add_stream("ffv1", rate=10)
        video.height, video.width, video.pix_fmt = 32, 48, "bgr0"
        video.codec_context.time_base = Fraction(1, 10)
        for pts, array in zip([0, 1, 2, 6, 7, 8], frames.numpy()):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="bgr0")
            frame.pts, frame.time_base = pts, Fraction(1, 10)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    summary = interpolate(path, tmp_path / "out.mkv", fps=20, model=source_bundle(),
                          lossless=True, progress=False)
    made, fps, _ = decode(tmp_path / "out.mkv")
    assert (summary.frames_in, summary.frames_out, len(made), fps) == (6, 18, 18, 20)
    shown = [0.0, 0.1, 0.2, 0.6, 0.7, 0.8]
    for k, frame in enumerate(made):
        t = min(k / 20, 0.8)
        if any(abs(t - s) < 1e-9 for s in shown):
            assert torch.equal(frame, frames[[abs(t - s) < 1e-9 for s in shown].index(True)])
        else:
            j = max(i for i, s in enumerate(shown) if s < t)
            tau = (t - shown[j]) / (shown[j + 1] - shown[j])
            expected = (1 - tau) * frames[j].float() + tau * frames[j + 1].float()
            assert (frame.float() - expected).abs().max() <= 1
    assert all(not torch.equal(made[k], made[k - 1]) for k in range(1, 17))
    with pytest.warns(UserWarning, match="variable frame rate"):
        windows = interpolate(path, tmp_path / "windows.mkv", model=source_bundle(),
                              lossless=True, progress=False)
    held = decode(tmp_path / "windows.mkv")[0]
    assert windows.frames_out == 18 and torch.equal(held[4], held[6])   # frame 2, repeated


# ---------------------------------------------------------------------- duplicates

@pytest.fixture
def on_twos(tmp_path, sample_clips) -> tuple[Path, torch.Tensor]:
    """13 real frames of bigbuckbunny (320x180) and a lossless copy "on twos": every other
    frame dropped, the kept ones shown twice, the last kept one once (so a later frame
    exists to move towards)."""
    with VideoReader(sample_clips["bigbuckbunny"], backend="pyav") as reader:
        real = reader.read(range(40, 53))
    real = nn.functional.interpolate(real.permute(0, 3, 1, 2).float(), scale_factor=0.25,
                                     mode="area")
    real = real.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    twos = real[[2 * (i // 2) for i in range(len(real))]]
    path = write_video(twos, tmp_path / "twos.mkv", fps=25, lossless=True)
    return Path(path), real


def test_a_clip_on_twos_comes_back_moving_on_every_frame(tmp_path, monkeypatch, capsys,
                                                         on_twos) -> None:
    path, real = on_twos
    monkeypatch.setattr("tcvbm.pipeline.resolve_bundle",
                        lambda model: source_bundle(mode="flow"))     # the flow baseline
    out = tmp_path / "back.mkv"
    assert main(["interpolate", str(path), "-o", str(out), "--dedup", "--fps", "25",
                 "--lossless"]) == 0
    assert re.search(r"13 frames in, 13 frames out .*, 6 duplicate frame\(s\)$",
                     capsys.readouterr().err.strip())
    made = decode(out)[0]
    assert made.shape == real.shape
    assert all(not torch.equal(made[k], made[k - 1]) for k in range(1, len(made)))
    assert all(torch.equal(made[k], real[k]) for k in range(0, 13, 2))     # the drawings
    dropped = range(1, 13, 2)
    rebuilt = sum(psnr(made[k], real[k]) for k in dropped) / len(dropped)
    repeated = sum(psnr(real[k - 1], real[k]) for k in dropped) / len(dropped)
    assert rebuilt > repeated + 3, (rebuilt, repeated)

    summary = interpolate(path, tmp_path / "x2.mkv", model="flow", dedup=True, lossless=True,
                          progress=False)                              # default factor 2
    doubled = decode(tmp_path / "x2.mkv")[0]
    assert (summary.frames_out, summary.duplicates) == (26, 6)
    assert all(torch.equal(doubled[2 * k], made[k]) for k in range(13))
    assert all(not torch.equal(doubled[k], doubled[k - 1]) for k in range(1, 25))
    plain = interpolate(path, tmp_path / "plain.mkv", model="flow", fps=25, lossless=True,
                        progress=False)
    stalled = decode(tmp_path / "plain.mkv")[0]
    assert plain.duplicates is None and torch.equal(stalled, decode(path)[0])   # no motion
