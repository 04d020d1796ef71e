"""A regular (non-editable) install: the wheel carries the package, the shipped configs and
weights and nothing else, and it creates models and trains without the checkout.

How the checkout is kept out of the installed copy's way:

* the wheel is built from a copy of the checkout, so the build's ``build/`` and ``*.egg-info``
  folders never land in the working tree (and parallel runs do not share them); offline:
  ``--no-build-isolation`` uses the installed setuptools instead of downloading one;
* it is installed with ``pip install --no-deps --target``: the dependencies are the ones of
  the running environment;
* the child interpreter runs with ``-S`` from a folder outside the checkout, with the target
  folder and the environment's site-packages on ``PYTHONPATH``: ``-S`` skips the ``.pth``
  files of site-packages, so an editable install's import hook (which maps ``tcvbm`` and
  ``tcvbm.configs`` into the checkout) is never installed: with the hook, a module missing
  from the wheel would quietly be imported from the checkout. The current folder has no
  ``configs/`` either. The child reports where ``tcvbm`` and its configs came from.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT

# Not copied: what a fresh checkout lacks (.gitignore), and data/, where datasets may be large.
NOT_COPIED_TOP = {".git", ".venv", "build", "dist", "runs", "outputs", "data"}
NOT_COPIED = {"__pycache__", ".pytest_cache"}

CHILD = """
import json, sys
import tcvbm
from tcvbm.cli import main
from tcvbm.config import CONFIG_DIR
from tcvbm.models import available_models, create

data, out = sys.argv[1:3]
model = create("unet-tiny")
status = main(["train", "interp-tiny", f"data.root={data}", f"output_dir={out}",
               "train.max_steps=1", "train.batch_size=1", "train.progress=false",
               "data.num_frames=5", "data.size=[16,16]", "data.options={clips_per_video: 1}",
               "eval.num_clips=0"])
print(json.dumps({"tcvbm": tcvbm.__file__, "configs": str(CONFIG_DIR), "status": status,
                  "models": available_models(),
                  "parameters": sum(p.numel() for p in model.parameters())}))
"""


def _ignore(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == REPO_ROOT
    return {n for n in names if n in NOT_COPIED or n.endswith(".egg-info")
            or (top and n in NOT_COPIED_TOP)}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the checkout (returned beside that copy)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "checkout"
    shutil.copytree(REPO_ROOT, source, ignore=_ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "--no-index", "-q", "-w", str(tmp / "wheel"), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (tmp / "wheel").glob("tcvbm-*.whl")
    return built


def test_wheel_holds_the_package_configs_and_weights_only(wheel: Path) -> None:
    source = wheel.parent.parent / "checkout"
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if not n.split("/")[0].endswith(".dist-info")}
    # the package folder as it is (modules and weights) and the top-level configs/ inside it
    expected = {f"tcvbm/{f}" for f in _files(source / "tcvbm")}
    expected |= {f"tcvbm/configs/{f}" for f in _files(source / "configs")}
    assert "tcvbm/configs/models/unet-tiny.yaml" in expected
    assert any(f.endswith(".safetensors") for f in expected)
    assert shipped == expected, (f"missing: {sorted(expected - shipped)}, "
                                 f"not expected: {sorted(shipped - expected)}")


def test_installed_wheel_creates_a_model_and_trains_without_the_checkout(
        wheel: Path, tmp_path: Path, make_clip) -> None:
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
           "--target", str(target), str(wheel)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for i in range(2):
        make_clip(tmp_path / "data" / f"clip{i}.mp4", n=12, h=24, w=24, seed=i)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    deps = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *deps]),
           "TCVBM_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-S", "-c", CHILD, str(tmp_path / "data"),
                           str(tmp_path / "run")], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(report["tcvbm"]).is_relative_to(target), report
    assert Path(report["configs"]) == target / "tcvbm" / "configs", report
    shipped_models = sorted(p.stem for p in (REPO_ROOT / "configs" / "models").glob("*.yaml"))
    assert report["models"] == shipped_models, report
    assert report["parameters"] > 0 and report["status"] == 0, proc.stderr
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-1").is_dir()
