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
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from gankit._version import __version__
from gankit.atomic import publish_folder
from gankit.errors import GankitError

CHECKPOINTS_DIR = "checkpoints"
ABANDONED_DIR = "abandoned"  # inside CHECKPOINTS_DIR: later checkpoints set aside on resume
MANIFEST_FILE = "manifest.json"
RECIPE_FILE = "recipe.yaml"
_NAME = re.compile(r"^step_(\d+)$")


class CheckpointError(GankitError):
    """A checkpoint is missing, incomplete or corrupt, or does not fit the recipe."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return run_dir / CHECKPOINTS_DIR / f"step_{step:07d}"


def checkpoint_step(folder: Path) -> int:
    """The step a checkpoint folder was written at (from its manifest, else its name)."""
    manifest = folder / MANIFEST_FILE
    if manifest.is_file():
        return int(json.loads(manifest.read_text())["step"])
    match = _NAME.match(folder.name)
    if not match:
        raise CheckpointError(f"{folder} is not a checkpoint folder (expected step_NNNNNNN)")
    return int(match.group(1))


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


def verify(folder: Path) -> dict[str, Any]:
    """Check a checkpoint against its manifest; returns the manifest or raises CheckpointError."""
    manifest_file = folder / MANIFEST_FILE
    if not manifest_file.is_file():
        raise CheckpointError(f"{folder} has no {MANIFEST_FILE}: it was never completed")
    try:
        manifest = json.loads(manifest_file.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_file} is unreadable ({error})") from None
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
    """Saves, prunes and finds the checkpoints of one run; every process must call `save`."""

    def __init__(self, accelerator: Accelerator, run_dir: Path, keep: int) -> None:
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.keep = keep

    def save(self, step: int, recipe_text: str) -> Path:
        """Write the checkpoint of `step` atomically, then keep only the newest `keep`."""
        final = checkpoint_path(self.run_dir, step)
        staging = final.with_name(f".{final.name}.tmp")
        main = self.accelerator.is_main_process
        if main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(staging), safe_serialization=True)
        self.accelerator.wait_for_everyone()
        if main:
            (staging / RECIPE_FILE).write_text(recipe_text)
            write_manifest(staging, step)
            publish_folder(staging, final)
            for old in list_checkpoints(self.run_dir)[self.keep :]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def remove_partial(self) -> None:
        """Delete folders left by writes that were cut short (never published)."""
        folder = self.run_dir / CHECKPOINTS_DIR
        if folder.is_dir():
            for leftover in folder.glob(".step_*"):
                shutil.rmtree(leftover, ignore_errors=True)

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
        staging = home.with_name(f".{home.name}.tmp")
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
        checkpoints/abandoned/."""
        folder = self.run_dir / CHECKPOINTS_DIR
        if not keep_set_aside:
            shutil.rmtree(folder, ignore_errors=True)
            return
        for path in list_checkpoints(self.run_dir):
            shutil.rmtree(path, ignore_errors=True)

    def candidates(self, resume: str) -> list[Path]:
        """Checkpoints to try for `train.resume`, in order: `never` gives none."""
        if resume == "never":
            return []
        if resume == "auto":
            return list_checkpoints(self.run_dir)
        return [check_resume_folder(resume, self.run_dir)]

    def restore(self, folder: Path) -> int:
        """Verify a checkpoint and load it into the accelerator's objects; returns its step."""
        manifest = verify(folder)  # a CheckpointError here: corrupt, try an older one
        try:
            self.accelerator.load_state(str(folder))
        except Exception as error:  # intact files that do not fit: no older one would either
            reason = " ".join(str(error).split())[:300]
            raise GankitError(
                f"{folder} is intact but does not fit this run ({type(error).__name__}: "
                f"{reason}); resume with the recipe and gankit version that wrote it, or start "
                "over in another output_dir"
            ) from None
        return int(manifest["step"])
