"""Folders that appear complete or not at all, so a crash never leaves a half-written one.

A folder `name` is written as `.<name>.tmp-<pid>-<random>` beside it and renamed into place; the
folder it replaces is first renamed to `.<name>.old-<pid>-<random>`, then deleted. The pid says
which process owns such a folder, so `remove_leftovers` can clear the ones of writers that died
(on this host) without touching those of writers still at work.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

_owned: set[str] = set()  # real paths of this process's staging and retired folders in use
_owned_lock = threading.Lock()


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


def current_umask() -> int:
    """This process's umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give `folder` and everything below it the modes a plain mkdir or open gives: folders
    0o777 & ~umask, files 0o666 & ~umask (some writers, such as safetensors, make 0o600 files)."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def _owning(path: Path) -> Iterator[None]:
    key = os.path.realpath(path)
    with _owned_lock:
        _owned.add(key)
    try:
        yield
    finally:
        with _owned_lock:
            _owned.discard(key)


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def publish_folder(staging: Path, path: Path) -> None:
    """Replace `path` by the complete folder `staging` (same parent) with renames. If the second
    rename fails, the folder that was at `path` is put back."""
    fsync_tree(staging)
    retired = _sibling(path, "old")
    with _owning(retired):
        had_previous = path.exists() or path.is_symlink()
        if had_previous:
            path.rename(retired)
        try:
            staging.rename(path)
        except OSError:
            if had_previous:
                retired.rename(path)
            raise
        fsync_dir(path.parent)
        _remove(retired)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a new, empty folder beside `path`; on success it replaces `path`, with the modes
    the umask gives (see `apply_umask`).

    If the block raises, `path` is untouched and the temporary folder is removed. Files written
    inside must be closed before the block ends.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(path, "tmp")
    with _owning(staging):  # owned before it exists, so no other thread removes it
        staging.mkdir()
        try:
            yield staging
            apply_umask(staging)
            publish_folder(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _writer_gone(path: Path, pid: int) -> bool:
    if pid == os.getpid():
        with _owned_lock:
            return os.path.realpath(path) not in _owned
    if os.name == "nt":  # os.kill would end the process there
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    except (OverflowError, ValueError):  # not a process id at all
        return True
    return False


def remove_leftovers(parent: str | Path, name: str) -> list[Path]:
    """Remove the staging (`.<name>.tmp-<pid>-*`) and retired (`.<name>.old-<pid>*`) folders
    of `name` in `parent` whose writer is gone: a dead process, or this one when it is not
    using them. Returns the folders removed.

    Process ids are checked on this host, so writers on other machines sharing the folder must
    not write `name` at the same time. When `name` itself is missing (a writer killed between
    its two renames), the newest retired folder, a complete earlier version, is renamed back
    instead of being removed.

    Links are never followed: `parent` being a link, or an entry that is one, is left alone.
    """
    parent = Path(parent)
    if parent.is_symlink() or not parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(name)}\.(tmp|old)-(\d+)(?:-[0-9A-Za-z_]+)?")
    abandoned: list[tuple[str, Path]] = []
    for entry in parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        if _writer_gone(entry, int(match.group(2))):
            abandoned.append((match.group(1), entry))
    target = parent / name
    retired = [entry for kind, entry in abandoned if kind == "old"]
    if retired and not (target.exists() or target.is_symlink()):
        newest = max(retired, key=lambda entry: entry.lstat().st_mtime)
        newest.rename(target)
        abandoned.remove(("old", newest))
    removed = []
    for _kind, entry in sorted(abandoned):
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file name beside `path` (`.<name>.tmp-<pid>-<random>`); when the block
    ends without an error, the file written there is flushed and renamed onto `path`, so
    readers see the old file or the new one, never half of one. On an error `path` is
    untouched and the temporary file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(path, "tmp")
    try:
        yield staging
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(staging, 0o666 & ~current_umask())
        os.replace(staging, path)
        fsync_dir(path.parent)
    finally:
        staging.unlink(missing_ok=True)
