"""Samplers share one signature and recover x0 with an oracle model at any step count."""

from __future__ import annotations

import pytest
import torch

from tcvbm.bridges import Bridge
from tcvbm.samplers import SAMPLERS, get_sampler, get_timesteps


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 50])
@pytest.mark.parametrize("prior", ["ar1", "brownian"])
def test_oracle_model_recovers_x0(name: str, steps: int, prior: str) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 5, 8, 8, generator=g) * 2 - 1
    x1 = torch.rand(2, 3, 5, 8, 8, generator=g) * 2 - 1
    calls = []

    def oracle(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        assert t.shape == (2,) and xt.shape == x0.shape
        return x0

    out = get_sampler(name)(oracle, x1, Bridge(5, prior=prior), get_timesteps(steps), generator=g)
    assert len(calls) == steps and torch.all(calls[0] == 1.0)
    assert torch.allclose(out, x0, atol=1e-5)


def test_first_call_sees_the_source_and_callback_gets_the_trajectory() -> None:
    x0, x1 = torch.randn(2, 1, 2, 3, 4, 4)
    seen, traj = [], []
    oracle = lambda xt, t: seen.append(xt.clone()) or x0  # noqa: E731
    SAMPLERS["stochastic"](oracle, x1, Bridge(3), get_timesteps(4, "quadratic"),
                           callback=lambda info: traj.append(info))
    assert torch.equal(seen[0], x1)
    assert [round(i["t"], 6) for i in traj] == [1.0, 0.5625, 0.25, 0.0625]
    assert traj[-1]["s"] == 0.0 and torch.allclose(traj[-1]["x"], x0, atol=1e-6)


def test_stochastic_sampler_is_seeded_and_noisy_in_between() -> None:
    x0, x1 = torch.randn(2, 1, 2, 4, 4, 4)
    bridge = Bridge(4)
    # A model that is only right at the end shows the intermediate noise in the output.
    model = lambda xt, t: xt  # noqa: E731
    run = lambda seed: SAMPLERS["stochastic"](  # noqa: E731
        model, x1, bridge, get_timesteps(5), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    det = lambda: SAMPLERS["deterministic"](model, x1, bridge, get_timesteps(5))  # noqa: E731
    assert torch.equal(det(), det())


def test_timesteps() -> None:
    assert torch.allclose(get_timesteps(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0],
                                                         dtype=torch.float64))
    quad = get_timesteps(10, "quadratic")
    assert quad[0] == 1 and quad[-1] == 0 and (quad[:-1] - quad[1:] > 0).all()
    # denser near 0: the last gap is smaller than the first
    assert quad[-2] - quad[-1] < quad[0] - quad[1]
    assert get_timesteps(1000).numel() == 1001
    for bad in [0, 1001, 2.5]:
        with pytest.raises(ValueError, match="^num_steps"):
            get_timesteps(bad)
    with pytest.raises(ValueError, match="^schedule"):
        get_timesteps(3, "cosine")
    with pytest.raises(ValueError, match="^sampler"):
        get_sampler("euler")
    x = torch.zeros(1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="^timesteps"):
        SAMPLERS["stochastic"](lambda xt, t: xt, x, Bridge(2), torch.tensor([1.0, 0.5]))
