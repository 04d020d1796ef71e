"""Config loading: inheritance, dotted overrides, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tcvbm.config import CONFIG_DIR, Config, config_to_yaml, load_config, save_config

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_required_configs_exist() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"base", "interp-tiny", "interp-small", "i2v-small", "vsr-small", "image-sr-small",
            "distill-tiny", "distill-small"} <= names


def test_public_overrides_and_lookup_by_name() -> None:
    cfg = load_config("interp-tiny", ["data.root=/some/dir", "train.max_steps=30",
                                      "output_dir=out/run", "teacher=runs/t"])
    assert (cfg.data.root, cfg.train.max_steps, cfg.output_dir, cfg.teacher) == \
        ("/some/dir", 30, "out/run", "runs/t")
    assert cfg.task.params == {"factor": 2}


def test_base_chain_merges_child_over_parent(tmp_path: Path) -> None:
    write(tmp_path / "parent.yaml", "train: {max_steps: 10, batch_size: 3}\nseed: 7\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\ntrain: {batch_size: 5}\n")
    cfg = load_config(child)
    assert (cfg.train.max_steps, cfg.train.batch_size, cfg.seed) == (10, 5, 7)
    again = load_config(write(tmp_path / "round.yaml", config_to_yaml(cfg)))
    assert again == cfg


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    write(tmp_path / "parent.yaml", "train: {max_steps: 10}\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\ntrain: {max_stpes: 5}\n")
    with pytest.raises(ValueError, match=r"child\.yaml: unknown key 'train\.max_stpes'"):
        load_config(child)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown key 'optimizer'"):
        load_config(write(tmp_path / "c.yaml", "optimizer: {lr: 1}\n"))


def test_wrong_type_names_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"c\.yaml: wrong type for key 'train\.batch_size'"):
        load_config(write(tmp_path / "c.yaml", "train: {batch_size: many}\n"))
    with pytest.raises(ValueError, match=r"override 'train\.max_steps=1\.5'.*'train\.max_steps'"):
        load_config("base", ["train.max_steps=1.5"])


@pytest.mark.parametrize("bad", ["train.max_steps", "=3", "train..max_steps=3",
                                 "train.max-steps=3"])
def test_bad_override_syntax(bad: str) -> None:
    with pytest.raises(ValueError, match="expected key=value"):
        load_config("base", [bad])


def test_unknown_override_key() -> None:
    with pytest.raises(ValueError,
                       match=r"command-line override 'trian\.max_steps=3': unknown key 'trian'"):
        load_config("base", ["trian.max_steps=3"])


def test_out_of_range_values_name_key() -> None:
    with pytest.raises(ValueError, match="train.mixed_precision"):
        load_config("base", ["train.mixed_precision=fp8"])
    with pytest.raises(ValueError, match="loss.t_sampling"):
        load_config("base", ["loss.t_sampling=sometimes"])
    with pytest.raises(ValueError, match="distill.beta"):
        load_config("base", ["distill.beta=0.5"])


def test_inheritance_loop_and_missing_files(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ValueError, match="loops"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(write(tmp_path / "broken.yaml", "train: [1, 2\n"))


def flatten(mapping: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted keys a YAML layer sets."""
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_base_restates_no_default() -> None:
    """The dataclasses are the one source of defaults: base.yaml sets only other values."""
    text = (CONFIG_DIR / "base.yaml").read_text()
    defaults = flatten(yaml.safe_load(config_to_yaml(Config())))
    sets = flatten(yaml.safe_load(text) or {})
    restated = {k: v for k, v in sets.items() if defaults.get(k) == v}
    assert not restated, f"configs/base.yaml restates defaults of tcvbm/config.py: {restated}"


def test_saved_config_loads_back_and_leaves_no_staging_file(tmp_path: Path) -> None:
    cfg = load_config("interp-tiny", ["train.max_steps=7"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    save_config(cfg, tmp_path / "run" / "config.yaml")  # over an existing one
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["config.yaml"]


def test_switching_the_prior_drops_the_other_priors_parameters(tmp_path: Path) -> None:
    """``bridge.prior=brownian`` on an ar1 config is plain BM (ar1's rho would be refused);
    the same prior, or a prior given with its parameters, keeps or sets them."""
    from tcvbm.train.run import build_bridge

    parent = write(tmp_path / "ar1.yaml", "bridge: {prior: ar1, params: {rho: 0.5}}\n")
    assert load_config(parent, ["bridge.prior=brownian"]).bridge.params == {}
    build_bridge(load_config(parent, ["bridge.prior=brownian"]))
    assert load_config(parent, ["bridge.prior=ar1"]).bridge.params == {"rho": 0.5}
    assert load_config(parent, ["bridge.eps=0.1"]).bridge.params == {"rho": 0.5}
    child = write(tmp_path / "child.yaml",
                  "base: ar1.yaml\nbridge: {prior: laplacian, params: {strength: 2.0}}\n")
    assert load_config(child).bridge.params == {"strength": 2.0}
