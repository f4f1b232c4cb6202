"""A checkpoint's manifest, and the check of a checkpoint against it before anything is read.

`manifest.json` gives the checkpoint's format, its step, the gankit version that wrote it and
every file's size and SHA-256. `verify` refuses (CheckpointError) a checkpoint whose folder or
files are symbolic links, that holds a file its manifest does not list or lacks one it lists,
whose manifest leaves out a file its format requires (so deleting entries cannot switch the
check off), whose step disagrees with the folder's name, or whose sizes or hashes differ. The
manifest is read through the bounded reader. A manifest without a format is one of an earlier
gankit (format 1, pickles): `verify` checks it the same way, and loading it is for
`checkpoint.CheckpointManager.load` to refuse unless the recipe trusts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from gankit._version import __version__
from gankit.config.recipe_file import read_recipe_file
from gankit.core.bounded import BoundedReadError, read_json_object, strict_int
from gankit.core.errors import GankitError, RecipeError, cut, shown
from gankit.training import checkpoint_state
from gankit.training.checkpoint_state import FORMAT, PICKLED_FORMAT

MANIFEST_FILE = "manifest.json"
RECIPE_FILE = "recipe.yaml"
STEP_NAME = re.compile(r"^step_(\d+)$")  # a checkpoint folder's name
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CheckpointError(GankitError):
    """A checkpoint is missing, incomplete or corrupt, or does not fit the recipe."""


class PickledCheckpointError(CheckpointError):
    """A checkpoint of an earlier gankit holds pickles, and the recipe does not trust it."""


def refuse_link(path: Path) -> Path:
    """`path`, or a CheckpointError if it is a symbolic link (gankit never reads, moves or
    deletes anything through a link in a run folder)."""
    if path.is_symlink():
        raise CheckpointError(
            f"{path} is a symbolic link; gankit does not follow links in a run folder, so that "
            "it never moves or deletes anything outside it. Replace the link with the folder "
            "itself, or remove it"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> set[str]:
    """The files below `folder` (the manifest aside), as posix paths relative to it; a
    CheckpointError for a symbolic link or anything that is not a regular file or folder."""
    found = set()
    for root, folders, names in os.walk(folder):  # does not descend into linked folders
        for name in (*folders, *names):
            path = Path(root, name)
            mode = os.lstat(path).st_mode
            refuse_link(path)
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise CheckpointError(f"{path} is not a regular file; it is not what gankit wrote")
            relative = path.relative_to(folder).as_posix()
            if relative != MANIFEST_FILE:
                found.add(relative)
    return found


def write_manifest(folder: Path, step: int) -> None:
    """Record the format, the step and every file's size and hash; written last, it marks the
    checkpoint complete."""
    files = {
        name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
        for name in sorted(_files(folder))
    }
    manifest = {"format": FORMAT, "step": step, "gankit_version": __version__, "files": files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest, checked field by field: any fault is a CheckpointError. Its `format` is
    filled in (a manifest without one is of format 1)."""
    manifest_file = folder / MANIFEST_FILE
    if not manifest_file.exists() and not manifest_file.is_symlink():
        raise CheckpointError(f"{folder} has no {MANIFEST_FILE}: it was never completed")
    try:
        manifest = read_json_object(manifest_file, what="checkpoint manifest")
    except BoundedReadError as error:
        raise CheckpointError(str(error)) from None
    files, step = manifest.get("files"), manifest.get("step")
    version = manifest.get("format", PICKLED_FORMAT)
    well_formed = (
        strict_int(step)
        and step >= 0
        and strict_int(version)
        and isinstance(files, dict)
        and all(
            isinstance(entry, dict)
            and strict_int(entry.get("bytes"))
            and entry["bytes"] >= 0
            and isinstance(entry.get("sha256"), str)
            and _SHA256.match(entry["sha256"])
            and name == Path(name).as_posix()
            and not Path(name).is_absolute()
            and ".." not in Path(name).parts
            and name != MANIFEST_FILE
            for name, entry in files.items()
        )
    )
    if not well_formed:
        raise CheckpointError(f"{manifest_file} is malformed (a field is missing or mistyped)")
    named = STEP_NAME.match(folder.name)
    if named and int(named.group(1)) != step:
        raise CheckpointError(
            f"{manifest_file} says step {step}, but the folder is named {folder.name}; "
            "it is not the manifest gankit wrote there"
        )
    if version not in (FORMAT, PICKLED_FORMAT):
        raise CheckpointError(
            f"{manifest_file} has format {shown(version)}; this gankit ({__version__}) reads "
            f"formats {PICKLED_FORMAT} and {FORMAT}: upgrade gankit to resume from it"
        )
    return {**manifest, "format": version}


def _check_format(folder: Path, manifest: dict[str, Any]) -> None:
    """A manifest of the current format lists exactly the files that format has."""
    listed = set(manifest["files"])
    foreign = sorted(name for name in listed if not checkpoint_state.format_allows(name))
    foreign = [name for name in foreign if name != RECIPE_FILE]
    if foreign:
        raise CheckpointError(
            f"{folder} holds {cut(foreign[0], 60)}, which a checkpoint of format {FORMAT} never "
            "holds; it is not what gankit wrote"
        )
    rng_pairs = {name.rsplit(".", 1)[0] for name in listed if checkpoint_state.RNG_FILE.match(name)}
    required = checkpoint_state.required_files() | {RECIPE_FILE}
    required |= {file for name in rng_pairs for file in checkpoint_state.file_names(name)}
    lacking = sorted(required - listed)
    if lacking:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} does not list {lacking[0]}, which every checkpoint of "
            f"format {FORMAT} has; it is not the manifest gankit wrote"
        )


def verify(folder: Path) -> dict[str, Any]:
    """Check a checkpoint against its manifest before anything in it is read: the folder and
    its files are no links, every file listed, intact, nothing unlisted, and (format 2) the
    list is the format's. Returns the manifest or raises CheckpointError."""
    refuse_link(folder)
    manifest = _read_manifest(folder)
    files = manifest["files"]
    present = _files(folder)
    unlisted = sorted(present - set(files))
    if unlisted:
        raise CheckpointError(
            f"{folder} holds {cut(unlisted[0], 60)}, which its manifest does not list"
        )
    if manifest["format"] == FORMAT:
        _check_format(folder, manifest)
    elif not checkpoint_state.pickles_in(set(files)):
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} gives no format and lists no pickled files, so it is "
            f"neither a checkpoint of format {FORMAT} nor one of an earlier gankit"
        )
    for name, expected in files.items():
        path = folder / name
        if name not in present:
            raise CheckpointError(f"{folder}: {cut(name, 60)} is missing")
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
