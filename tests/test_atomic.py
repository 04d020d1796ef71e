"""Atomic writes: the target is replaced whole on success and untouched on any failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcvbm.atomic import AtomicPath, replace_dir


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_success_replaces_the_file_through_a_hidden_name_with_its_suffix(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "picture.png"
    with AtomicPath(target) as staged:
        assert staged.parent == target.parent and staged.name.startswith(".")
        assert staged.suffix == ".png"  # encoders choose the format by it
        assert not target.exists()
        staged.write_bytes(b"first")
    with AtomicPath(target) as staged:
        staged.write_bytes(b"second")
        assert target.read_bytes() == b"first"  # the old file stays until the body is done
    assert target.read_bytes() == b"second" and names(target.parent) == ["picture.png"]


def test_staging_names_are_unique_and_suffix_can_be_given(tmp_path: Path) -> None:
    one, two = AtomicPath(tmp_path / "clip"), AtomicPath(tmp_path / "clip", suffix=".mp4")
    assert one.staged != two.staged
    assert one.staged.name.endswith(".partial") and two.staged.name.endswith(".partial.mp4")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_leaves_the_old_file_and_nothing_else(tmp_path: Path, error: type) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old")
    with pytest.raises(error):
        with AtomicPath(target) as staged:
            staged.write_text("half")
            raise error()
    assert target.read_text() == "old" and names(tmp_path) == ["config.yaml"]


def test_a_body_that_writes_nothing_is_an_error_naming_the_file(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_text("old")
    with pytest.raises(FileNotFoundError, match="index.json: nothing was written"):
        with AtomicPath(target):
            pass
    assert target.read_text() == "old" and names(tmp_path) == ["index.json"]


def test_streaming_writer_commits_or_discards(tmp_path: Path) -> None:
    target = tmp_path / "video.mp4"
    kept = AtomicPath(target)
    kept.staged.write_bytes(b"frames")
    assert kept.commit() == target and target.read_bytes() == b"frames"
    dropped = AtomicPath(target)
    dropped.staged.write_bytes(b"half")
    dropped.discard()
    assert target.read_bytes() == b"frames" and names(tmp_path) == ["video.mp4"]


def test_a_folder_is_swapped_whole(tmp_path: Path) -> None:
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.bin").write_text("old")
    with AtomicPath(final, directory=True) as staged:
        assert staged.is_dir() and not any(staged.iterdir())
        (staged / "weights.bin").write_text("new")
        assert names(final) == ["old.bin"]
    assert names(final) == ["weights.bin"] and names(tmp_path) == ["model"]


def test_a_failed_folder_leaves_the_old_one(tmp_path: Path) -> None:
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.bin").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with AtomicPath(final, directory=True) as staged:
            (staged / "weights.bin").write_text("half")
            raise KeyboardInterrupt
    assert names(final) == ["old.bin"] and names(tmp_path) == ["model"]


def test_replace_dir_moves_into_an_absent_or_existing_place(tmp_path: Path) -> None:
    for content in ("first", "second"):
        staged = tmp_path / ".tmp-checkpoint"
        staged.mkdir()
        (staged / "state.json").write_text(content)
        replace_dir(staged, tmp_path / "checkpoint-5")
        assert (tmp_path / "checkpoint-5" / "state.json").read_text() == content
        assert names(tmp_path) == ["checkpoint-5"]  # no staging folder, no .old left
