"""Inverse bridge-matching distillation on CPU with tiny UNets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from test_train import FRAMES, SIZE, TINY_MODEL, Clips, bridge_matching, tiny_cfg
from tcvbm.bridges import Bridge
from tcvbm.config import load_config
from tcvbm.models import create
from tcvbm.runs import load_bundle, save_bundle
from tcvbm.samplers import get_sampler, get_timesteps
from tcvbm.tasks import get_task
from tcvbm.train.loop import fit
from tcvbm.train.objectives import (InverseDistillation, SampleRandom, TimeSampler, Weighting,
                                    generator_loss)
from tcvbm.train.run import distill, distillation_objective


pytestmark = pytest.mark.usefixtures("one_thread")


def teacher_dir(tmp_path: Path) -> Path:
    """A saved bridge model whose output is not simply its source (non-zero last layer)."""
    torch.manual_seed(0)
    model = create("unet-tiny", **TINY_MODEL)
    with torch.no_grad():
        for p in model.out.parameters():
            p.normal_(0.0, 0.05)
    save_bundle(tmp_path / "teacher" / "model", model, Bridge(FRAMES), get_task("interp", factor=2),
                FRAMES, [SIZE, SIZE], "stochastic", 4)
    return tmp_path / "teacher"


def distill_cfg(tmp_path: Path, *overrides: str):
    return load_config("distill-tiny", [f"teacher={teacher_dir(tmp_path)}",
                                        f"output_dir={tmp_path / 'student'}", *overrides])


@pytest.mark.parametrize("steps", [1, 3])
def test_generator_starts_exactly_at_teacher_t1_prediction(tmp_path: Path, steps: int) -> None:
    objective = distillation_objective(distill_cfg(tmp_path, f"distill.student_steps={steps}"))
    assert objective.generator.config.noise_channels == 4
    x0 = Clips(2).clips
    x1 = objective.task(x0).source
    rng = SampleRandom(0, 0, [0, 1], 2)
    rng.randint_shared = lambda high: 0  # type: ignore[method-assign]  # the t = 1 grid point
    with torch.no_grad():
        student = objective.generate(objective.generator, x1, rng)
        teacher = objective.teacher(x1, torch.ones(2), cond=x1)
        fake = objective.fake(x1, torch.ones(2), cond=x1)
    assert not torch.equal(teacher, x1)
    assert torch.equal(student, teacher)
    assert torch.equal(fake, teacher)


class Tap(nn.Module):
    """Records the input a frozen network is called with, to read its gradient."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x_t, t, cond=None):
        x_t.retain_grad()
        self.seen = x_t
        return self.inner(x_t, t, cond=cond)


def test_generator_gradient_passes_through_frozen_teacher_and_fake(tmp_path: Path) -> None:
    objective = distillation_objective(distill_cfg(tmp_path))
    with torch.no_grad():  # make the fake differ from the teacher, as it does after training
        for p in objective.fake.out.parameters():
            p.add_(0.05 * torch.randn_like(p))
    teacher, fake = Tap(objective.teacher), Tap(objective.fake)
    objective.teacher = teacher
    x0 = Clips(2).clips
    out = objective.loss("generator", {"generator": objective.generator, "fake": fake}, x0,
                         SampleRandom(0, 5, [0, 1], 2))
    out.loss.backward()
    assert teacher.seen.grad is not None and teacher.seen.grad.abs().sum() > 0
    assert fake.seen.grad is not None and fake.seen.grad.abs().sum() > 0
    assert all(p.grad is None for p in objective.teacher.parameters())
    assert all(p.grad is None and p.requires_grad for p in objective.fake.parameters())
    assert sum(float(p.grad.abs().sum()) for p in objective.generator.parameters()
               if p.grad is not None) > 0


def test_generator_loss_is_zero_when_fake_equals_teacher() -> None:
    torch.manual_seed(0)
    net = create("unet-tiny", **TINY_MODEL).requires_grad_(False)
    x0 = Clips(2).clips.requires_grad_(True)
    x1 = get_task("interp")(x0.detach()).source
    per = generator_loss(net, net, Bridge(FRAMES), x0, x1, torch.full((2,), 0.5),
                         torch.randn_like(x0), torch.ones(2))
    assert torch.equal(per, torch.zeros(2))


def test_distillation_moves_generator_to_teacher_and_its_loss_goes_down(tmp_path: Path) -> None:
    """A problem with a known answer: the teacher has learnt one clip (a point mass), so
    the teacher's output distribution is that clip. A generator that starts elsewhere (at
    its source, untrained) must move to it, and the generator loss (about
    E||T - F||^2 once the fake model tracks the generator) must come down."""
    data = Clips(1)
    teach = bridge_matching()
    fit(teach, data, tiny_cfg(tmp_path / "teacher", 60))
    teacher = teach.model.eval()
    torch.manual_seed(1)
    generator = create("unet-tiny", **TINY_MODEL)
    generator.add_noise_channels(2)
    objective = InverseDistillation(teacher, copy.deepcopy(teacher), generator, teach.bridge,
                                    teach.task, TimeSampler(), Weighting(), lr=3e-3, fake_lr=1e-2)
    x1 = teach.task(data.clips).source

    def distance() -> float:
        with torch.no_grad():
            return float((generator(x1, torch.ones(1), cond=x1) - data.clips).pow(2).mean())

    before = distance()
    result = fit(objective, data, tiny_cfg(tmp_path / "student", 120))
    gen = [loss for loss, phase in zip(result.losses, result.phases) if phase == "generator"]
    assert len(gen) == 20 and result.phases[:6] == ["fake"] * 5 + ["generator"]
    assert distance() < 0.85 * before, (before, distance())
    assert np.mean(gen[-3:]) < 0.75 * max(gen), gen


def test_distill_entry_point_saves_a_runnable_generator(tmp_path: Path, make_clip) -> None:
    for i in range(2):
        make_clip(tmp_path / "videos" / f"clip{i}.mp4", n=12, h=16, w=16, seed=i)
    cfg = distill_cfg(tmp_path, f"data.root={tmp_path / 'videos'}", "train.max_steps=6",
                      "train.progress=false", "eval.num_clips=1", "distill.student_steps=2",
                      "distill.alpha=0.9", "distill.beta=0.9")
    result = distill(cfg)
    assert result.phases == ["fake"] * 5 + ["generator"] and np.isfinite(result.losses).all()
    meta = json.loads((tmp_path / "student" / "model" / "tcvbm.json").read_text())
    assert (meta["kind"], meta["steps"], meta["num_frames"]) == ("generator", 2, FRAMES)
    bundle = load_bundle(tmp_path / "student")
    assert bundle.model.config.noise_channels == 4
    x1 = bundle.task(Clips(1).clips).source
    gen = torch.Generator().manual_seed(0)
    out = get_sampler(bundle.sampler)(bundle.model_fn(x1, gen), x1, bundle.bridge,
                                      get_timesteps(bundle.steps), generator=gen)
    assert out.shape == x1.shape and torch.isfinite(out).all()
    assert (tmp_path / "student" / "eval" / "step-6" / "grid.png").is_file()
