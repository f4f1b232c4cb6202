"""Folders that appear complete or not at all, so a crash never leaves a half-written one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_tree(folder: Path) -> None:
    """Flush every file below `folder`, and the folder itself, to disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk, where the OS allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def publish_folder(staging: Path, path: Path) -> None:
    """Replace `path` by the complete folder `staging` (same parent) with renames."""
    fsync_tree(staging)
    retired = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        path.rename(retired)
    staging.rename(path)
    fsync_dir(path.parent)
    shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`.

    If the block raises, `path` is untouched and the temporary folder is removed. Files written
    inside must be closed before the block ends.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield staging
        publish_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
