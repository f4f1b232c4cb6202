"""Resumable checkpoints: written whole or not at all, verified before they are trusted.

A checkpoint is `runs/<name>/checkpoints/step_NNNNNNN/`: what `checkpoint_state` writes (both
networks, both optimizers, the learning-rate schedules, the grad scaler, the run's state, every
process's RNG states), all of it safetensors and JSON that gankit reads through bounded readers,
with no pickle; the resolved recipe; and `manifest.json`, which gives the format version, the
step and every file's size and SHA-256. Each is written under a temporary name and renamed when
complete, so a crash mid-write leaves the previous one intact and the partial one ignored.

Before anything in a checkpoint is read, `verify` checks it against its manifest: nothing
unlisted, nothing listed missing, nothing the format requires left out of the list, every size
and hash, a step that matches the folder's name. Checkpoints of earlier gankit versions
(format 1, written by `accelerator.save_state`) hold pickles, which can run code when loaded:
they are refused unless the recipe sets `train.trust_pickled_checkpoint`. Nothing here deletes
or moves anything through a symbolic link.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import SafetensorError

from gankit.core.atomic import publish_folder
from gankit.core.errors import GankitError, cut, warn
from gankit.training import checkpoint_state
from gankit.training.checkpoint_state import PICKLED_FORMAT, Checkpointed
from gankit.training.manifest import (
    MANIFEST_FILE,
    RECIPE_FILE,
    STEP_NAME,
    CheckpointError,
    PickledCheckpointError,
    read_recipe,
    refuse_link,
    verify,
    write_manifest,
)
from gankit.training.state_files import StateFileError

__all__ = [
    "ABANDONED_DIR",
    "CHECKPOINTS_DIR",
    "MANIFEST_FILE",
    "CheckpointError",
    "CheckpointManager",
    "PickledCheckpointError",
    "check_resume_folder",
    "checkpoint_path",
    "list_checkpoints",
    "read_recipe",
    "verify",
    "write_manifest",
]

CHECKPOINTS_DIR = "checkpoints"
ABANDONED_DIR = "abandoned"  # inside CHECKPOINTS_DIR: later checkpoints set aside on resume
FULL_DISK_BYTES = 16 << 20  # a write that failed with less free than this: the disk is full


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return run_dir / CHECKPOINTS_DIR / f"step_{step:07d}"


def _inside(run_dir: Path, path: Path) -> Path:
    """`path`, checked to be below `run_dir` with no symbolic link on the way (run_dir itself
    may be one: it is where the user put the run)."""
    try:
        relative = path.relative_to(run_dir)
    except ValueError:
        raise CheckpointError(f"{path} is not inside the run folder {run_dir}") from None
    current = run_dir
    for part in relative.parts:
        current = refuse_link(current / part)
    if not path.resolve().is_relative_to(run_dir.resolve()):
        raise CheckpointError(f"{path} leads outside the run folder {run_dir}")
    return path


def _new_branch(parent: Path) -> Path:
    """A new, numbered folder under `parent` for one set of set-aside checkpoints."""
    parent.mkdir(parents=True, exist_ok=True)
    refuse_link(parent)
    numbers = [int(p.name[7:]) for p in parent.glob("branch_*") if p.name[7:].isdigit()]
    branch = parent / f"branch_{max(numbers, default=0) + 1:03d}"
    branch.mkdir()
    return branch


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's published checkpoints, newest first (temporary folders are not listed).
    A CheckpointError if `checkpoints/` or a `step_*` in it is a symbolic link."""
    folder = refuse_link(run_dir / CHECKPOINTS_DIR)
    if not folder.is_dir():
        return []
    found = [refuse_link(path) for path in folder.iterdir() if STEP_NAME.match(path.name)]
    found = [path for path in found if path.is_dir()]
    return sorted(found, key=lambda path: int(STEP_NAME.match(path.name).group(1)), reverse=True)


def check_resume_folder(resume: str, run_dir: Path) -> Path:
    """The checkpoint folder `train.resume` names, or a CheckpointError if there is none."""
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"train.resume: checkpoint folder '{path}' not found; use auto, never or a "
            f"folder such as {checkpoint_path(run_dir, 1000)}"
        )
    return path


def _one_line(error: BaseException, limit: int = 200) -> str:
    return cut(" ".join(str(error).split()), limit)


class CheckpointManager:
    """Saves, prunes and finds the checkpoints of one run; every process must call `save`.

    `contents`: what a checkpoint saves and restores. `writer` names this run's temporary
    folders, so that two writers never share one.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        run_dir: Path,
        keep: int,
        writer: str,
        contents: Checkpointed | None = None,
        kept: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.keep = keep
        self.writer = writer
        self.contents = contents
        self.kept = kept  # the step whose checkpoint pruning spares (eval.keep_best's)
        if contents is not None:
            contents.register_pickled()

    def staging_for(self, final: Path) -> Path:
        """The temporary name `final` is written under before it is published."""
        return final.with_name(f".{final.name}.tmp-{self.writer}")

    def save(self, step: int, recipe_text: str) -> Path:
        """Write the checkpoint of `step` atomically, then keep only the newest `keep` and the
        one of the step `kept()` names.

        If any process fails to write (a full disk, say), every process raises a
        CheckpointError that names the newest intact checkpoint; nothing published is touched.
        """
        final = checkpoint_path(self.run_dir, step)
        staging = self.staging_for(final)
        main = self.accelerator.is_main_process

        def prepare() -> None:
            _inside(self.run_dir, staging.parent)
            staging.mkdir(parents=True)

        def publish() -> None:
            (staging / RECIPE_FILE).write_text(recipe_text)
            write_manifest(staging, step)
            publish_folder(staging, final)

        self._together(step, staging, prepare if main else lambda: None)
        self._together(step, staging, lambda: checkpoint_state.write(staging, self.contents))
        self._together(step, staging, publish if main else lambda: None)
        refused = None
        if main:
            try:
                spared = self.kept()
                for old in list_checkpoints(self.run_dir)[self.keep :]:
                    if spared is None or old != checkpoint_path(self.run_dir, spared):
                        shutil.rmtree(_inside(self.run_dir, old), ignore_errors=True)
            except CheckpointError as error:
                refused = error
        if self.any_failed(refused is not None):
            raise refused or CheckpointError(
                "the main process could not prune the run's checkpoints; see its message"
            )
        return final

    def any_failed(self, failed: bool) -> bool:
        """Whether `failed` holds on any process (every process calls this together)."""
        if self.accelerator.num_processes == 1:
            return failed
        flag = torch.tensor([float(failed)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def _together(self, step: int, staging: Path, work: Callable[[], Any]) -> None:
        """Run one stage of a save on every process; if it failed anywhere, all raise."""
        error: BaseException | None = None
        try:
            work()
        except (OSError, RuntimeError, SafetensorError, GankitError) as caught:
            error = caught  # RuntimeError: how torch reports ENOSPC too
        if not self.any_failed(error is not None):
            return
        if self.accelerator.is_main_process and not staging.is_symlink():
            shutil.rmtree(staging, ignore_errors=True)
        reason = "another process failed to write its part"
        if isinstance(error, OSError) and error.strerror:
            reason = error.strerror + (f": {error.filename}" if error.filename else "")
        elif error is not None:
            reason = _one_line(error, 300 if isinstance(error, GankitError) else 200)
        with contextlib.suppress(OSError):  # torch says "unexpected pos" when the disk is full
            free = shutil.disk_usage(self.run_dir).free
            if free < FULL_DISK_BYTES and "No space left" not in reason:
                reason = f"No space left on device, {free // 1024} KiB free; {reason}"
        intact: list[Path] = []
        with contextlib.suppress(CheckpointError):
            intact = list_checkpoints(self.run_dir)
        kept = (
            f"the newest intact checkpoint is {intact[0]}; free space (or fix the folder's "
            "permissions) and run the same command to resume from it"
            if intact
            else "no checkpoint of this run was written before; free space (or fix the "
            "folder's permissions) and run again"
        )
        raise CheckpointError(
            f"could not write the checkpoint of step {step} ({reason}); nothing was published, "
            f"and {kept}"
        ) from None

    def branch_from(self, resumed: Path, step: int) -> tuple[Path, list[Path]]:
        """After resuming from `resumed` (at `step`), make it the run's newest checkpoint. The
        branch left behind moves, whole, into a new folder under checkpoints/abandoned/, where
        `auto` does not look: the run's checkpoints from `step` on, or all of them when
        `resumed` is not one of them (a set-aside one, which moves back, or another run's,
        which is copied in). Returns where the resumed checkpoint now is and where the others
        went. Main process only. Nothing moves through a symbolic link (CheckpointError)."""
        folder = _inside(self.run_dir, self.run_dir / CHECKPOINTS_DIR)
        home = checkpoint_path(self.run_dir, step)
        source, own = resumed.resolve(), folder.resolve()
        inside = source.parent == own
        foreign = not source.is_relative_to(own)
        if not foreign:  # a set-aside one: its branch folder must be the run's own
            _inside(self.run_dir, folder / source.relative_to(own))
        staging = self.staging_for(home)
        if foreign:  # copied before anything moves: a crash meanwhile leaves the run as it was
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(resumed, staging, symlinks=True)
        # steps from the names: a checkpoint `auto` fell back past may have a bad manifest
        leaving = [
            path
            for path in list_checkpoints(self.run_dir)
            if not inside
            or (int(STEP_NAME.match(path.name).group(1)) >= step and path.resolve() != source)
        ]
        moved = []
        if leaving:
            branch = _new_branch(_inside(self.run_dir, folder / ABANDONED_DIR))
            for path in reversed(leaving):
                os.replace(path, branch / path.name)
                moved.append(branch / path.name)
        if inside:
            return resumed, moved
        if foreign:
            publish_folder(staging, home)
        else:  # set aside earlier: back into place
            os.replace(resumed, home)
            with contextlib.suppress(OSError):  # its branch folder, if now empty
                resumed.parent.rmdir()
        return home, moved

    def clear(self, *, keep_set_aside: bool = False) -> None:
        """Remove the run's checkpoints (a fresh start); with `keep_set_aside`, not the ones in
        checkpoints/abandoned/. Only checkpoint folders go: other files stay where they are.
        Every path is checked before anything goes: a symbolic link on the way is refused."""
        folders = list_checkpoints(self.run_dir)
        aside = self.run_dir / CHECKPOINTS_DIR / ABANDONED_DIR
        branches = [] if keep_set_aside else self.set_aside()
        for branch in branches:
            folders += [path for path in branch.iterdir() if STEP_NAME.match(path.name)]
        for path in folders:
            _inside(self.run_dir, path)
        for path in folders:
            shutil.rmtree(path, ignore_errors=True)
        for empty in (*branches, aside, self.run_dir / CHECKPOINTS_DIR):
            with contextlib.suppress(OSError):  # not empty: it holds something else
                if not empty.is_symlink():
                    empty.rmdir()

    def set_aside(self) -> list[Path]:
        """The branch folders in checkpoints/abandoned/ (a CheckpointError if it, or one of
        them, is a symbolic link)."""
        aside = _inside(self.run_dir, self.run_dir / CHECKPOINTS_DIR / ABANDONED_DIR)
        return [_inside(self.run_dir, branch) for branch in sorted(aside.glob("branch_*"))]

    def candidates(self, resume: str) -> list[Path]:
        """Checkpoints to try for `train.resume`, in order: `never` gives none."""
        if resume == "never":
            return []
        if resume == "auto":
            return list_checkpoints(self.run_dir)
        return [check_resume_folder(resume, self.run_dir)]

    def load(self, folder: Path, manifest: dict[str, Any], *, trust_pickled: bool = False) -> int:
        """Load a checkpoint that `verify` passed into the run; returns its step. A file that is
        malformed or does not fit is a CheckpointError that names it. A checkpoint with pickles
        (format 1) is a PickledCheckpointError unless `trust_pickled`."""
        if manifest["format"] == PICKLED_FORMAT:
            self._load_pickled(folder, manifest, trust_pickled)
        else:
            try:
                checkpoint_state.read(
                    folder, self.contents, manifest["step"], set(manifest["files"])
                )
            except StateFileError as error:
                raise CheckpointError(str(error)) from None
        return manifest["step"]

    def _load_pickled(self, folder: Path, manifest: dict[str, Any], trusted: bool) -> None:
        pickles = checkpoint_state.pickles_in(set(manifest["files"]))
        held = (
            f" ({', '.join(pickles[:4])}{', ...' if len(pickles) > 4 else ''})" if pickles else ""
        )
        if not trusted:
            raise PickledCheckpointError(
                f"{folder} was written by an earlier gankit and holds pickles{held}, which can "
                "run code when they are loaded, so gankit does not load it. If you wrote it "
                "yourself and nobody else could change it, resume knowingly with "
                "train.trust_pickled_checkpoint=true (the checkpoints written after it hold no "
                "pickles); otherwise start over with train.resume=never"
            )
        warn(f"loading {folder}, which holds pickles{held}: train.trust_pickled_checkpoint is set")
        try:
            checkpoint_state.load_pickled(folder, self.contents)
        except Exception as error:  # Accelerate and unpickling raise anything
            raise CheckpointError(
                f"{folder} (format {PICKLED_FORMAT}, with pickles) is intact but does not fit "
                f"this run ({type(error).__name__}: {_one_line(error, 300)}); resume with the "
                "recipe and gankit version that wrote it, or start over in another output_dir"
            ) from None
