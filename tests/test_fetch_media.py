"""tools/fetch_media.py and its list data/media_sources.json: the list keeps the dev set apart
from training and names no excluded package; a fetch (against packages built here, never a
registry) puts each file in its role's folder, refuses a wrong checksum and leaves nothing of
it, turns a frames folder into a lossless video the datasets read, and is a no-op when run
again."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcvbm.data import VideoFolder
from tcvbm.data.measure import sha256_file

from conftest import REPO_ROOT, decode_all

# imported by name (its dataclasses need a module registered in sys.modules)
sys.path.insert(0, str(REPO_ROOT / "tools"))
try:
    import fetch_media
finally:
    sys.path.pop(0)

SEQUENCE = np.random.default_rng(0).integers(0, 256, (3, 6, 10), dtype=np.uint8)


def test_the_committed_list_is_valid_and_keeps_dev_apart() -> None:
    text = (REPO_ROOT / "data" / "media_sources.json").read_text()
    assert not [word for word in ("opencv", "kivy", *fetch_media.EXCLUDED) if word in text.lower()]
    files = fetch_media.load_sources()
    assert all(f.licence.strip() and f.source.licence_source.strip() for f in files)
    assert {f.role for f in files} == {"train", "dev", "select"}
    assert all(f.role == "train" for f in files if f.kind == "still")
    roles: dict[str, set[str]] = {}
    for f in files:
        roles.setdefault(f.source.name, set()).add(f.role)
    assert all(len(seen) == 1 for seen in roles.values()), roles
    content = {role: {f.sha256 for f in files if f.role == role} for role in fetch_media.ROLES}
    assert not content["train"] & content["dev"]
    assert not content["train"] & content["select"]
    assert not content["dev"] & content["select"]


def test_the_list_agrees_with_the_sample_clips_split() -> None:
    """data/samples trains on some clips and holds one out: the held-out one may be dev here,
    a trained one may not."""
    samples = json.loads((REPO_ROOT / "data" / "sample_clips.json").read_text())["clips"]
    files = fetch_media.load_sources()
    dev = {f.sha256 for f in files if f.role == "dev"}
    assert not dev & {c["sha256"] for c in samples.values() if c["split"] == "train"}
    held_out = {c["sha256"] for c in samples.values() if c["split"] != "train"}
    assert held_out <= dev  # carphone is a dev clip here too


def _spec(**changes) -> dict:
    source = {"registry": "debian", "name": "pkg", "version": "1", "licence": "CC0-1.0",
              "licence_source": "usr/share/doc/pkg/copyright",
              "files": [{"member": "a.mp4", "role": "train", "kind": "video", "sha256": "a" * 64}]}
    return {"sources": [{**source, **changes}]}


@pytest.mark.parametrize("changes, problem", [
    ({"name": "opencv-doc"}, "'opencv' is excluded"),
    ({"files": [{"member": "kivy/a.mp4", "role": "dev", "kind": "video", "sha256": "a" * 64}]},
     "'kivy' is excluded"),
    ({"files": [{"member": "a.mp4", "role": "train", "kind": "video", "sha256": "a" * 64},
                {"member": "b.mp4", "role": "dev", "kind": "video", "sha256": "b" * 64}]},
     "in dev and train"),
    ({"files": [{"member": "a.mp4", "role": "select", "kind": "video", "sha256": "a" * 64},
                {"member": "b.mp4", "role": "dev", "kind": "video", "sha256": "b" * 64}]},
     "in dev and select"),
    ({"files": [{"member": "a.jpg", "role": "dev", "kind": "still", "sha256": "a" * 64}]},
     "role must be 'train'"),
    ({"files": [{"member": "seq", "role": "train", "kind": "frames", "sha256": "a" * 64}]},
     "need an 'fps'"),
    ({"licence": ""}, "missing \\['licence'\\]"),
    ({"registry": "conda"}, "registry in"),
])
def test_a_bad_list_is_refused(tmp_path: Path, changes: dict, problem: str) -> None:
    path = tmp_path / "sources.json"
    path.write_text(json.dumps(_spec(**changes)))
    with pytest.raises(ValueError, match=problem):
        fetch_media.load_sources(path)


@pytest.mark.parametrize("roles, problem", [
    (("train", "dev"), "the same content is also a train file"),
    (("select", "dev"), "the same content is also a dev file"),
])
def test_the_same_content_in_two_roles_is_refused(tmp_path: Path, roles: tuple[str, str],
                                                   problem: str) -> None:
    """One clip shipped by two packages may not be trained on (or selected on) and also be a
    held-out clip of another role."""
    sources = [_spec(name=f"pkg{i}", files=[{"member": f"{i}.mp4", "role": role,
                                               "kind": "video", "sha256": "c" * 64}])["sources"][0]
               for i, role in enumerate(roles)]
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"sources": sources}))
    with pytest.raises(ValueError, match=problem):
        fetch_media.load_sources(path)


def _never(*args, **kwargs):
    raise AssertionError(f"called with {args}")


def test_missing_apt_lists_ask_for_apt_get_update(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fetch_media, "APT_LISTS", tmp_path / "lists")
    monkeypatch.setattr(fetch_media.subprocess, "run", _never)  # apt-get must not be reached
    source = fetch_media.Source("debian", "pkg", "1", "CC0-1.0", "copyright")
    with pytest.raises(RuntimeError, match="run `apt-get update` once"):
        fetch_media.download_package(source, tmp_path)


@pytest.fixture
def packages(tmp_path: Path, make_clip) -> dict[str, Path]:
    """Packages built here: a .deb (a video, a folder of PGM frames), a wheel-like zip with a
    video and a file that is not one, and one with a still."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed: cannot build a .deb")
    tree = tmp_path / "deb"
    make_clip(tree / "usr/share/demo/clip.mp4", n=8, h=32, w=48)
    for i, frame in enumerate(SEQUENCE):
        path = tree / "usr/share/demo/seq" / f"image.{i:04d}.pgm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"P5\n10 6\n255\n" + frame.tobytes())
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        "Package: demo-deb\nVersion: 1.0-1\nArchitecture: all\nMaintainer: nobody <n@example.org>\n"
        "Description: test media\n")
    deb = tmp_path / "demo-deb_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    files = tmp_path / "zip"
    make_clip(files / "demo/clip.mp4", n=6, h=32, w=48, seed=1)
    (files / "demo/broken.mp4").write_bytes(b"not a video at all")
    Image.fromarray(np.full((12, 16, 3), 200, np.uint8)).save(files / "demo/still.png")
    archives = {"demo-deb": deb, "deb tree": tree, "zip tree": files}
    for name, members in (("demo-wheel", ["clip.mp4", "broken.mp4"]),
                          ("demo-stills", ["still.png"])):
        archives[name] = tmp_path / f"{name.replace('-', '_')}-2.0-py3-none-any.whl"
        with zipfile.ZipFile(archives[name], "w") as zf:
            for member in members:
                zf.write(files / "demo" / member, f"demo/{member}")
    return archives


def _write_list(tmp_path: Path, packages: dict[str, Path], deb_role: str = "train",
                **sha: str) -> Path:
    """A list of the test packages with their real checksums (``sha`` overrides some)."""
    def digest(tree: str, member: str) -> str:
        return sha.get(member) or sha256_file(packages[tree] / member)

    pixels = hashlib.sha256(SEQUENCE.tobytes()).hexdigest()
    listing = {"sources": [
        {"registry": "debian", "name": "demo-deb", "version": "1.0-1", "licence": "CC0-1.0",
         "licence_source": "usr/share/doc/demo-deb/copyright", "files": [
             {"member": "usr/share/demo/clip.mp4", "role": deb_role, "kind": "video",
              "sha256": digest("deb tree", "usr/share/demo/clip.mp4")},
             {"member": "usr/share/demo/seq", "role": deb_role, "kind": "frames", "fps": 25,
              "sha256": sha.get("usr/share/demo/seq") or pixels}]},
        {"registry": "pypi", "name": "demo-wheel", "version": "2.0", "licence": "CC-BY-4.0",
         "licence_source": "demo/README", "files": [
             {"member": "demo/clip.mp4", "role": "dev", "kind": "video", "name": "dev-clip.mp4",
              "sha256": digest("zip tree", "demo/clip.mp4")},
             {"member": "demo/broken.mp4", "role": "dev", "kind": "video",
              "sha256": digest("zip tree", "demo/broken.mp4")}]},
        {"registry": "pypi", "name": "demo-stills", "version": "2.0", "licence": "CC0-1.0",
         "licence_source": "demo/README", "files": [
             {"member": "demo/still.png", "role": "train", "kind": "still",
              "sha256": digest("zip tree", "demo/still.png")}]},
    ]}
    path = tmp_path / "sources.json"
    path.write_text(json.dumps(listing))
    return path


@pytest.fixture
def downloads(monkeypatch, packages) -> list[str]:
    """Replace the registry download by a copy of the test package; returns the calls."""
    calls: list[str] = []

    def fake(source, dest: Path) -> Path:
        calls.append(source.name)
        return Path(shutil.copy(packages[source.name], dest))

    monkeypatch.setattr(fetch_media, "download_package", fake)
    return calls


def test_files_land_in_their_role_folders_and_a_second_run_is_a_no_op(
        tmp_path: Path, packages, downloads, monkeypatch) -> None:
    out, cache = tmp_path / "media", tmp_path / "cache"
    sources = _write_list(tmp_path, packages)
    manifest = fetch_media.fetch(out, cache=cache, sources=sources)
    assert downloads == ["demo-deb", "demo-wheel", "demo-stills"]
    placed = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert placed == ["dev/demo-wheel/dev-clip.mp4", "manifest.json",
                      "stills/demo-stills/still.png", "train/demo-deb/clip.mp4",
                      "train/demo-deb/seq.mkv"]
    records = {e["path"]: e for e in manifest["files"]}
    assert {path: (e["role"], e["codec"], e["frames"]) for path, e in records.items()} == {
        "dev/demo-wheel/dev-clip.mp4": ("dev", "h264", 6),
        "stills/demo-stills/still.png": ("train", "png", 1),
        "train/demo-deb/clip.mp4": ("train", "h264", 8),
        "train/demo-deb/seq.mkv": ("train", "ffv1", 3)}
    assert [(e["path"], "PyAV cannot decode it" in e["reason"]) for e in manifest["left_out"]] == [
        ("dev/demo-wheel/broken.mp4", True)]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    # the frames video decodes to the frames exactly, and the video-folder reader takes it
    assert np.array_equal(decode_all(out / "train/demo-deb/seq.mkv")[..., 0], SEQUENCE)
    train = VideoFolder(out, num_frames=2, size=4, split="train", cache_dir=tmp_path / "index")
    assert sorted(Path(e.key).name for e in train.usable) == ["clip.mp4", "seq.mkv"]

    monkeypatch.setattr(fetch_media, "download_package", _never)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert fetch_media.fetch(out, cache=cache, sources=sources) == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    (out / "manifest.json").unlink()  # files in place are then checked by their content
    assert fetch_media.fetch(out, cache=cache, sources=sources) == manifest
    media = [p for p in before if p.is_file() and p.name != "manifest.json"]
    assert {p: p.stat().st_mtime_ns for p in media} == {p: before[p] for p in media}

    shutil.rmtree(out)  # the packages stay in the cache: no download either
    assert fetch_media.fetch(out, cache=cache, sources=sources) == manifest


@pytest.mark.parametrize("member", ["usr/share/demo/clip.mp4", "usr/share/demo/seq"])
def test_a_checksum_mismatch_is_refused_and_leaves_nothing(
        tmp_path: Path, packages, downloads, member: str) -> None:
    out = tmp_path / "media"
    sources = _write_list(tmp_path, packages, **{member: "0" * 64})
    with pytest.raises(ValueError, match=f"{member}: (file|pixel) sha256 [0-9a-f]{{64}}, but "
                                         f".* lists 0{{64}}; nothing was written"):
        fetch_media.fetch(out, cache=tmp_path / "cache", sources=sources)
    target = "seq.mkv" if member.endswith("seq") else "clip.mp4"
    assert not (out / "train/demo-deb" / target).exists()
    assert not [p for p in out.rglob("*") if "partial" in p.name]


def test_a_source_moved_to_dev_leaves_the_train_folder(tmp_path: Path, packages, downloads) -> None:
    out, cache = tmp_path / "media", tmp_path / "cache"
    fetch_media.fetch(out, ["train", "stills"], cache=cache,
                      sources=_write_list(tmp_path, packages))
    assert (out / "train/demo-deb/clip.mp4").is_file()
    manifest = fetch_media.fetch(out, ["dev"], cache=cache,
                                 sources=_write_list(tmp_path, packages, deb_role="dev"))
    assert sorted(p.name for p in (out / "dev/demo-deb").iterdir()) == ["clip.mp4", "seq.mkv"]
    assert not (out / "train/demo-deb").exists() or not any((out / "train/demo-deb").iterdir())
    assert {e["path"] for e in manifest["files"]} >= {"dev/demo-deb/clip.mp4",
                                                      "stills/demo-stills/still.png"}
    assert not [e for e in manifest["files"] if e["path"].startswith("train/demo-deb/")]
