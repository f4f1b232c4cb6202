"""Resumable checkpoints: written whole or not at all, verified before they are trusted.

A checkpoint is `runs/<name>/checkpoints/step_NNNNNNN/`: what `accelerator.save_state` writes (both
networks, both optimizers, the grad scaler, every process's RNG states, registered objects such
as the trainer's counters), the resolved recipe, and `manifest.json` listing every file with its
size and SHA-256. Each is written under a temporary name and renamed when complete, so a crash
mid-write leaves the previous one intact and the partial one ignored. Checkpoints hold pickles:
load only your own. Exports (`export.py`) are the safe format to share.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import SafetensorError

from gankit._version import __version__
from gankit.config.recipe_file import read_recipe_file
from gankit.core.atomic import publish_folder
from gankit.core.errors import GankitError, RecipeError

CHECKPOINTS_DIR = "checkpoints"
ABANDONED_DIR = "abandoned"  # inside CHECKPOINTS_DIR: later checkpoints set aside on resume
MANIFEST_FILE = "manifest.json"
RECIPE_FILE = "recipe.yaml"
_NAME = re.compile(r"^step_(\d+)$")
FULL_DISK_BYTES = 16 << 20  # a write that failed with less free than this: the disk is full


class CheckpointError(GankitError):
    """A checkpoint is missing, incomplete or corrupt, or does not fit the recipe."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return run_dir / CHECKPOINTS_DIR / f"step_{step:07d}"


def _new_branch(parent: Path) -> Path:
    """A new, numbered folder under `parent` for one set of set-aside checkpoints."""
    parent.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[7:]) for p in parent.glob("branch_*") if p.name[7:].isdigit()]
    branch = parent / f"branch_{max(numbers, default=0) + 1:03d}"
    branch.mkdir()
    return branch


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's published checkpoints, newest first (temporary folders are not listed)."""
    folder = run_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and _NAME.match(path.name)]
    return sorted(found, key=lambda path: int(_NAME.match(path.name).group(1)), reverse=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, step: int) -> None:
    """Record every file's size and hash; written last, it marks the checkpoint complete."""
    files = {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    manifest = {"step": step, "gankit_version": __version__, "files": files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest, checked field by field: any fault is a CheckpointError."""
    manifest_file = folder / MANIFEST_FILE
    if not manifest_file.is_file():
        raise CheckpointError(f"{folder} has no {MANIFEST_FILE}: it was never completed")
    try:
        manifest = json.loads(manifest_file.read_bytes())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{manifest_file} is unreadable ({error})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    step = manifest.get("step") if isinstance(manifest, dict) else None
    well_formed = (
        isinstance(step, int)
        and not isinstance(step, bool)
        and step >= 0
        and isinstance(files, dict)
        and all(
            isinstance(entry, dict)
            and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str)
            and not Path(name).is_absolute()
            and ".." not in Path(name).parts
            for name, entry in files.items()
        )
    )
    if not well_formed:
        raise CheckpointError(f"{manifest_file} is malformed (a field is missing or mistyped)")
    return manifest


def verify(folder: Path) -> dict[str, Any]:
    """Check a checkpoint against its manifest before anything in it is read: every file
    listed, intact, and nothing unlisted. Returns the manifest or raises CheckpointError."""
    manifest = _read_manifest(folder)
    files = manifest["files"]
    present = {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != MANIFEST_FILE
    }
    unlisted = sorted(present - set(files))
    if unlisted:
        raise CheckpointError(f"{folder} holds {unlisted[0]}, which its manifest does not list")
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} is missing")
        if path.stat().st_size != expected["bytes"]:
            raise CheckpointError(
                f"{folder}: {name} is truncated or altered "
                f"({path.stat().st_size} bytes, expected {expected['bytes']})"
            )
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{folder}: {name} is corrupt (its SHA-256 does not match)")
    return manifest


def read_recipe(folder: Path) -> dict[str, Any] | None:
    """The recipe a verified checkpoint was trained with, as raw values (None if it has none).
    Read with the same bounds as any recipe file."""
    path = folder / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        return read_recipe_file(path)
    except RecipeError as error:
        raise CheckpointError(f"{path} is unreadable: {error}") from None


def check_resume_folder(resume: str, run_dir: Path) -> Path:
    """The checkpoint folder `train.resume` names, or a CheckpointError if there is none."""
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"train.resume: checkpoint folder '{path}' not found; use auto, never or a "
            f"folder such as {checkpoint_path(run_dir, 1000)}"
        )
    return path


class CheckpointManager:
    """Saves, prunes and finds the checkpoints of one run; every process must call `save`.

    `writer` names this run's temporary folders, so that two writers never share one.
    """

    def __init__(self, accelerator: Accelerator, run_dir: Path, keep: int, writer: str) -> None:
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.keep = keep
        self.writer = writer

    def staging_for(self, final: Path) -> Path:
        """The temporary name `final` is written under before it is published."""
        return final.with_name(f".{final.name}.tmp-{self.writer}")

    def save(self, step: int, recipe_text: str) -> Path:
        """Write the checkpoint of `step` atomically, then keep only the newest `keep`.

        If any process fails to write (a full disk, say), every process raises a
        CheckpointError that names the newest intact checkpoint; nothing published is touched.
        """
        final = checkpoint_path(self.run_dir, step)
        staging = self.staging_for(final)
        main = self.accelerator.is_main_process

        def publish() -> None:
            (staging / RECIPE_FILE).write_text(recipe_text)
            write_manifest(staging, step)
            publish_folder(staging, final)

        self._together(step, staging, lambda: staging.mkdir(parents=True) if main else None)
        self._together(
            step,
            staging,
            lambda: self.accelerator.save_state(str(staging), safe_serialization=True),
        )
        self._together(step, staging, publish if main else lambda: None)
        if main:
            for old in list_checkpoints(self.run_dir)[self.keep :]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _together(self, step: int, staging: Path, work: Callable[[], Any]) -> None:
        """Run one stage of a save on every process; if it failed anywhere, all raise."""
        error: BaseException | None = None
        try:
            work()
        except (OSError, RuntimeError, SafetensorError) as caught:  # how torch reports ENOSPC too
            error = caught
        failed = error is not None
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([float(failed)], device=self.accelerator.device)
            failed = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        if not failed:
            return
        if self.accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        reason = "another process failed to write its part"
        if isinstance(error, OSError) and error.strerror:
            reason = error.strerror + (f": {error.filename}" if error.filename else "")
        elif error is not None:
            reason = " ".join(str(error).split())[:200]
        with contextlib.suppress(OSError):  # torch says "unexpected pos" when the disk is full
            free = shutil.disk_usage(self.run_dir).free
            if free < FULL_DISK_BYTES and "No space left" not in reason:
                reason = f"No space left on device, {free // 1024} KiB free; {reason}"
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
        went. Main process only."""
        folder = self.run_dir / CHECKPOINTS_DIR
        home = checkpoint_path(self.run_dir, step)
        source, own = resumed.resolve(), folder.resolve()
        inside = source.parent == own
        foreign = not source.is_relative_to(own)
        staging = self.staging_for(home)
        if foreign:  # copied before anything moves: a crash meanwhile leaves the run as it was
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(resumed, staging)
        # steps from the names: a checkpoint `auto` fell back past may have a bad manifest
        leaving = [
            path
            for path in list_checkpoints(self.run_dir)
            if not inside
            or (int(_NAME.match(path.name).group(1)) >= step and path.resolve() != source)
        ]
        moved = []
        if leaving:
            branch = _new_branch(folder / ABANDONED_DIR)
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
        checkpoints/abandoned/. Only checkpoint folders go: other files stay where they are."""
        folders = list_checkpoints(self.run_dir)
        aside = self.run_dir / CHECKPOINTS_DIR / ABANDONED_DIR
        branches = [] if keep_set_aside else sorted(aside.glob("branch_*"))
        for branch in branches:
            folders += [path for path in branch.iterdir() if _NAME.match(path.name)]
        for path in folders:
            shutil.rmtree(path, ignore_errors=True)
        for empty in (*branches, aside, self.run_dir / CHECKPOINTS_DIR):
            with contextlib.suppress(OSError):  # not empty: it holds something else
                empty.rmdir()

    def candidates(self, resume: str) -> list[Path]:
        """Checkpoints to try for `train.resume`, in order: `never` gives none."""
        if resume == "never":
            return []
        if resume == "auto":
            return list_checkpoints(self.run_dir)
        return [check_resume_folder(resume, self.run_dir)]

    def load(self, folder: Path, manifest: dict[str, Any]) -> int:
        """Load a checkpoint that `verify` passed into the accelerator's objects; returns its
        step."""
        try:
            self.accelerator.load_state(str(folder))
        except Exception as error:  # intact files that do not fit: no older one would either
            reason = " ".join(str(error).split())[:300]
            raise GankitError(
                f"{folder} is intact but does not fit this run ({type(error).__name__}: "
                f"{reason}); resume with the recipe and gankit version that wrote it, or start "
                "over in another output_dir"
            ) from None
        return manifest["step"]
