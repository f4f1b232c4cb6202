"""gankit never follows a link out of a run folder: links (and FIFOs, devices, sockets) where
gankit writes are refused before anything is written or deleted, and the lock file is never
opened through a link nor written over when gankit did not write it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import one_error_line, snapshot, train

from gankit.core.atomic import remove_leftovers
from gankit.training.runfolder import (
    LOCK_FILE,
    MARK_FILE,
    RunFolderError,
    RunLock,
    check_run_folder,
    foreign_entries,
    open_run_folder,
)


def marked_folder(path: Path) -> Path:
    """A run folder as gankit leaves it: marked, the lock released."""
    open_run_folder(path).release()
    return path


def outside(tmp_path: Path) -> Path:
    """A folder of the user's, outside the run folder, with files gankit must never touch."""
    folder = tmp_path / "elsewhere"
    (folder / "branch_001" / "step_0000002").mkdir(parents=True)
    (folder / "branch_001" / "step_0000002" / "weights.bin").write_bytes(b"my weights")
    (folder / "step_0000000.png").write_bytes(b"my picture")
    (folder / "step_0000002.png").write_bytes(b"my other picture")
    (folder / "notes.txt").write_text("my notes")
    return folder


@pytest.mark.parametrize(
    ("link", "target", "extra"),
    [
        (LOCK_FILE, "notes.txt", ()),
        ("checkpoints/abandoned", ".", ("train.resume=never",)),
        ("samples", ".", ()),
    ],
    ids=["lock", "abandoned", "samples"],
)
def test_a_link_in_the_run_folder_is_refused_and_what_it_points_at_survives(
    tmp_path: Path,
    mnist_root: Path,
    capsys: pytest.CaptureFixture[str],
    link: str,
    target: str,
    extra: tuple[str, ...],
) -> None:
    mine = outside(tmp_path)
    run_dir = marked_folder(tmp_path / "run")
    (run_dir / link).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / link).unlink(missing_ok=True)
    (run_dir / link).symlink_to((mine / target).resolve())
    before = snapshot(mine)

    code, stderr = train(capsys, run_dir, "train.steps=2", "train.checkpoint_every=2", *extra)

    assert code == 2, stderr
    line = one_error_line(stderr)
    assert f"{link} is a symbolic link to {(mine / target).resolve()}" in line
    assert "nothing was written or deleted" in line
    assert snapshot(mine) == before
    assert (mine / "notes.txt").read_text() == "my notes"
    assert not (run_dir / "samples").is_dir() or (run_dir / "samples").is_symlink()


def test_every_name_gankit_writes_is_checked_and_each_link_is_named(tmp_path: Path) -> None:
    mine = outside(tmp_path)
    run_dir = marked_folder(tmp_path / "run")
    links = [
        MARK_FILE,
        "metrics.jsonl",
        "recipe.yaml",
        "run_info.json",
        "samples.gif",
        "losses.png",
        "wandb",
        "tensorboard",
        "export/generator",
        "checkpoints/step_0000004",
        "checkpoints/abandoned/branch_002",
        "checkpoints/abandoned/branch_001/step_0000002",
        "samples/step_0000000.png",
    ]
    for name in links:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).unlink(missing_ok=True)
        (run_dir / name).symlink_to(mine / "notes.txt")
    os.mkfifo(run_dir / "samples" / "step_0000002.png")
    (run_dir / "samples" / "my_drawing.png").symlink_to(mine / "notes.txt")  # not gankit's name

    found = dict(foreign_entries(run_dir))
    assert set(found) == {*links, "samples/step_0000002.png"}
    assert found["samples/step_0000002.png"] == "a FIFO"
    assert found["wandb"] == f"a symbolic link to {mine / 'notes.txt'}"
    with pytest.raises(RunFolderError, match=r"and 8 more\); gankit never follows a link"):
        check_run_folder(run_dir)
    with pytest.raises(RunFolderError, match=r"\.gankit-run is a symbolic link to .*and 8 more"):
        open_run_folder(run_dir)
    assert (mine / "notes.txt").read_text() == "my notes"


def test_a_folder_whose_run_info_is_a_link_is_not_taken_for_a_run(tmp_path: Path) -> None:
    earlier = marked_folder(tmp_path / "earlier")
    (earlier / "run_info.json").write_text('{"versions": {"gankit": "0.1"}}')
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "run_info.json").symlink_to(earlier / "run_info.json")
    with pytest.raises(RunFolderError, match="already holds files gankit did not write"):
        check_run_folder(folder)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "foreign", "fifo"])
def test_the_lock_file_is_never_followed_nor_written_over(tmp_path: Path, kind: str) -> None:
    mine = outside(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock_path = run_dir / LOCK_FILE
    if kind == "symlink":
        lock_path.symlink_to(mine / "notes.txt")
        expected = "is a symbolic link"
    elif kind == "hardlink":
        os.link(mine / "notes.txt", lock_path)
        expected = "2 hard links"
    elif kind == "foreign":
        lock_path.write_text("my notes")
        expected = "holds data that is not a gankit lock record"
    else:
        os.mkfifo(lock_path)
        expected = "is a FIFO"
    with pytest.raises(RunFolderError, match=expected):
        RunLock(run_dir).acquire()
    assert (mine / "notes.txt").read_text() == "my notes"
    if kind == "foreign":
        assert lock_path.read_text() == "my notes"


def test_a_lock_record_left_by_a_run_is_taken_over_and_released(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text('{"pid": 1, "host": "a", "since": 0}')
    lock = RunLock(run_dir)
    lock.acquire()
    assert f'"pid": {os.getpid()}' in (run_dir / LOCK_FILE).read_text()
    with pytest.raises(RunFolderError, match=rf"in use by another gankit run \(pid {os.getpid()}"):
        RunLock(run_dir).acquire()
    lock.release()
    assert (run_dir / LOCK_FILE).read_text() == ""


def test_leftovers_are_not_removed_through_a_linked_folder(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its process id is free now
    mine = tmp_path / "elsewhere"
    leftover = mine / f".step_0000002.tmp-{dead.pid}-abcd"
    leftover.mkdir(parents=True)
    (leftover / "part.bin").write_bytes(b"mine")
    linked = tmp_path / "checkpoints"
    linked.symlink_to(mine)
    real = tmp_path / "real"
    real.mkdir()
    (real / leftover.name).symlink_to(leftover)

    assert remove_leftovers(linked, "step_0000002") == []
    assert remove_leftovers(real, "step_0000002") == []
    assert (leftover / "part.bin").read_bytes() == b"mine"
    own = real / f".step_0000003.tmp-{dead.pid}-abcd"
    own.mkdir()
    assert remove_leftovers(real, "step_0000003") == [own]
