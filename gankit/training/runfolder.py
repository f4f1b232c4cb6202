"""The run folder: gankit's own, written by one run at a time.

A folder becomes a run folder when gankit marks it (`.gankit-run`). gankit refuses to write into
a non-empty folder without that mark, so it never deletes or overwrites a file it did not write.
While a run trains, its main process holds an OS lock on `.gankit-lock` (`flock`): the OS
releases it when the process ends, however it ends, so a killed run leaves nothing stale, and a
second run on the same folder is refused with the holder's pid, host and start time. Under the
lock, temporary folders left by a writer that died are removed.

gankit never follows a link out of a run folder: a folder in which any name gankit writes or
deletes (`OWN_PATHS`) is a symbolic link, or a FIFO, device or socket, is refused before
anything is written, and again under the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import socket
import stat
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from gankit._version import __version__
from gankit.core.atomic import remove_leftovers
from gankit.core.bounded import BoundedReadError, parse_json, read_json_object, strict_int
from gankit.core.errors import GankitError, cut, warn
from gankit.outputs import files
from gankit.outputs.tracking import TENSORBOARD_DIR
from gankit.training.checkpoint import ABANDONED_DIR, CHECKPOINTS_DIR, RECIPE_FILE

MARK_FILE = ".gankit-run"
LOCK_FILE = ".gankit-lock"
RUN_INFO_FILE = "run_info.json"
_ABANDONED = f"{CHECKPOINTS_DIR}/{ABANDONED_DIR}"
# Every name gankit writes or deletes in a run folder (glob patterns, relative to it); none may
# be a link, a FIFO, a device or a socket.
OWN_PATHS = (
    MARK_FILE,
    LOCK_FILE,
    RUN_INFO_FILE,
    RECIPE_FILE,
    files.METRICS_FILE,
    files.GIF_FILE,
    files.LOSS_PLOT_FILE,
    files.SAMPLES_DIR,
    f"{files.SAMPLES_DIR}/step_*.png",
    CHECKPOINTS_DIR,
    f"{CHECKPOINTS_DIR}/step_*",
    _ABANDONED,
    f"{_ABANDONED}/branch_*",
    f"{_ABANDONED}/branch_*/step_*",
    "export",
    "export/*",
    "export/best/*",
    TENSORBOARD_DIR,
    "wandb",
)
LOCK_BYTES = 4096  # a lock record is about 80 bytes
# Folders where gankit writes through temporary names (`.<name>.tmp...`, `.<name>.old-...`).
STAGING_PARENTS = ("checkpoints", "export")
_STAGING = re.compile(r"^\.([^/]+)\.(?:tmp|old)(?:-[^/]*)?$")

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]


class RunFolderError(GankitError):
    """The run folder cannot be used: not gankit's, not a folder, or in use by another run."""


def _earlier_run(run_dir: Path) -> bool:
    """Whether an unmarked folder was written by a gankit from before the mark existed."""
    with contextlib.suppress(BoundedReadError):
        versions = read_json_object(run_dir / RUN_INFO_FILE, what="run info").get("versions")
        if isinstance(versions, dict) and "gankit" in versions:
            return True
    checkpoints = run_dir / CHECKPOINTS_DIR
    if checkpoints.is_symlink() or not checkpoints.is_dir():
        return False
    for folder in checkpoints.glob("step_*"):
        if folder.is_symlink():
            continue
        with contextlib.suppress(BoundedReadError):
            if "gankit_version" in read_json_object(folder / "manifest.json", what="manifest"):
                return True
    return False


def _kind(mode: int) -> str | None:
    """What a file of `mode` is, when it is something gankit must not follow or open."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def _matches(folder: Path, pattern: str) -> list[str]:
    """Names in `folder` that match a glob `pattern` (the name itself when it is plain)."""
    if not any(char in pattern for char in "*?["):
        return [pattern]
    try:
        return sorted(fnmatch.filter(os.listdir(folder), pattern))
    except OSError:
        return []


def foreign_entries(run_dir: Path) -> list[tuple[str, str]]:
    """The names of `OWN_PATHS` in `run_dir` that are links, FIFOs, devices or sockets, as
    (path relative to `run_dir`, what it is). Never follows a link: only real folders are
    looked into."""
    found: dict[str, str] = {}
    for pattern in OWN_PATHS:
        level = [(run_dir, "")]
        parts = pattern.split("/")
        for depth, part in enumerate(parts):
            deeper = []
            for folder, relative in level:
                for name in _matches(folder, part):
                    path, shown_as = folder / name, f"{relative}{name}"
                    try:
                        mode = os.lstat(path).st_mode
                    except OSError:
                        continue
                    kind = _kind(mode)
                    if kind is not None:
                        if stat.S_ISLNK(mode):
                            with contextlib.suppress(OSError):
                                kind += f" to {cut(os.readlink(path), 160)}"
                        found[shown_as] = kind
                    elif depth < len(parts) - 1 and stat.S_ISDIR(mode):
                        deeper.append((path, f"{shown_as}/"))
            level = deeper
    return sorted(found.items())


def refuse_foreign_entries(run_dir: Path) -> None:
    """Raise RunFolderError naming each link (or FIFO, device, socket) where gankit writes in
    `run_dir`; nothing has been written or deleted when it does."""
    found = foreign_entries(run_dir)
    if not found:
        return
    listed = "; ".join(f"{name} is {kind}" for name, kind in found[:6])
    if len(found) > 6:
        listed += f"; and {len(found) - 6} more"
    raise RunFolderError(
        f"output_dir '{run_dir}' holds names gankit writes or deletes that are not its own files "
        f"or folders ({listed}); gankit never follows a link out of a run folder, so nothing "
        "was written or deleted. Replace each with a real folder or file (move the linked "
        "contents in), remove it, or choose another output_dir"
    )


def check_run_folder(run_dir: Path) -> None:
    """Refuse a run folder gankit may not write into: a file, a non-empty folder that is not a
    gankit run, or a run whose own names include links (`refuse_foreign_entries`). Reads
    only; the mark counts by its presence (it is never read)."""
    where = f"output_dir '{run_dir}'"
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(
            f"{where} is a file, not a folder; choose a folder path, e.g. output_dir=runs/<name>"
        )
    if not run_dir.is_dir():
        return
    if os.path.lexists(run_dir / MARK_FILE) or _earlier_run(run_dir):
        refuse_foreign_entries(run_dir)
        return
    try:
        entries = sorted(path.name for path in run_dir.iterdir())
    except OSError as error:
        raise RunFolderError(f"{where} cannot be read ({error.strerror})") from None
    if entries:
        shown = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise RunFolderError(
            f"{where} already holds files gankit did not write ({shown}); gankit writes only "
            "into a new or empty folder or one of its own runs, so that none of your files is "
            "replaced. Choose another output_dir (e.g. output_dir=runs/<name>-2)"
        )


def _holder(data: bytes) -> dict | None:
    """The lock record in `data`, as a gankit run writes it; None when it is not one."""
    try:
        record = parse_json(data, where="lock file")
    except BoundedReadError:
        return None
    if (
        isinstance(record, dict)
        and strict_int(record.get("pid"))
        and isinstance(record.get("host"), str)
        and isinstance(record.get("since"), int | float)
    ):
        return record
    return None


def _describe_holder(record: dict | None) -> str:
    if record is None:
        return "holder unknown"
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["since"]))
    except (OverflowError, OSError, ValueError):
        since = "an unknown time"
    return f"pid {record['pid']} on {cut(record['host'], 60)}, since {since}"


def _read_start(descriptor: int) -> bytes:
    """The first bytes of the lock file, as many as a lock record can have and one more."""
    os.lseek(descriptor, 0, os.SEEK_SET)
    return os.read(descriptor, LOCK_BYTES + 1)


def _open_lock(path: Path) -> tuple[int, bool]:
    """A read-write descriptor of the lock file, never through a link, and whether this call
    created the file. A link, FIFO, device, socket or a file with other hard links is refused
    (unopened where `lstat` shows it)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    refused = (
        f"{path} is {{}}, not the lock file gankit writes; gankit never follows a link out of "
        "a run folder or writes into a file it did not create, so nothing was written. Remove "
        "it (it holds no state: gankit makes a new one) or choose another output_dir"
    )
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
        pass
    kind = _kind(os.lstat(path).st_mode)
    if kind is not None:
        raise RunFolderError(refused.format(kind))
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:  # became a link since the lstat
            raise RunFolderError(refused.format("a symbolic link")) from None
        raise
    info = os.fstat(descriptor)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_nlink > 1:
        problem = f"a file with {info.st_nlink} hard links (its contents are shared elsewhere)"
    if problem is not None:
        os.close(descriptor)
        raise RunFolderError(refused.format(problem))
    return descriptor, False


class RunLock:
    """The run folder's exclusive lock, held by the main process while it trains."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise RunFolderError naming the run that holds it. The lock file
        is opened without following links and is written only when gankit created it or it
        holds a lock record (or nothing)."""
        path = self.run_dir / LOCK_FILE
        descriptor, created = _open_lock(path)
        try:
            self._lock(descriptor, path)
            if not created:
                data = _read_start(descriptor)
                if data.strip() and _holder(data) is None:
                    raise RunFolderError(
                        f"{path} holds data that is not a gankit lock record; gankit does not "
                        "write over a file it did not create, so nothing was written. Move it "
                        "away (gankit makes a new one) or choose another output_dir"
                    )
            record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            os.ftruncate(descriptor, 0)
            os.lseek(descriptor, 0, os.SEEK_SET)
            os.write(descriptor, json.dumps(record).encode())
        except BaseException:
            os.close(descriptor)
            raise
        self.descriptor = descriptor

    def _lock(self, descriptor: int, path: Path) -> None:
        if fcntl is None:
            warn(f"no file locks on this system: a second run on {self.run_dir} is not detected")
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(_holder(_read_start(descriptor)))
            raise RunFolderError(
                f"output_dir '{self.run_dir}' is in use by another gankit run ({holder}); "
                "wait for it to finish or stop it, or choose another output_dir"
            ) from None
        except OSError as error:  # a filesystem without locks (some network mounts)
            warn(
                f"cannot lock {path} ({error.strerror}): this filesystem has no file locks, "
                "so a second run on this folder would not be detected"
            )

    def release(self) -> None:
        """Give the lock back (the OS does so too when the process ends)."""
        if self.descriptor is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.descriptor, 0)
            os.close(self.descriptor)  # closing the file releases the flock
            self.descriptor = None


def remove_staging_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temporary folders and files of writes that were cut short. Call under the
    lock: no live writer owns them then. A folder retired by a writer killed between its two
    renames is put back where it belongs (see `atomic.remove_leftovers`)."""
    removed = []
    # output_dir itself may be a link the user chose; the folders inside it are gankit's
    for parent in (run_dir.resolve(), *(run_dir / name for name in STAGING_PARENTS)):
        if parent.is_symlink() or not parent.is_dir():
            continue
        names = {match.group(1) for match in map(_STAGING.match, os.listdir(parent)) if match}
        for name in sorted(names):
            removed += remove_leftovers(parent, name)
        for path in parent.iterdir():  # what remains: earlier gankit versions' names
            if not _STAGING.match(path.name):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _write_mark(path: Path) -> None:
    """Mark the folder as gankit's, unless it is already (the mark is a new file, never written
    through a link or over a file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, 0o666)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps({"gankit_version": __version__, "created": time.time()}) + "\n")


def open_run_folder(run_dir: Path) -> RunLock:
    """Check, create, lock and mark the run folder; tidy what a dead writer left. Returns the
    held lock. Main process only."""
    check_run_folder(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(
            f"cannot create output_dir '{run_dir}' ({error.strerror}); choose a folder you can "
            "write to"
        ) from None
    lock = RunLock(run_dir)
    try:
        lock.acquire()
        refuse_foreign_entries(run_dir)  # again: links made while the lock was not held
        _write_mark(run_dir / MARK_FILE)
        remove_staging_leftovers(run_dir)
    except OSError as error:
        lock.release()
        if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise RunFolderError(
                f"output_dir '{run_dir}' is not writable ({error.strerror}); choose a folder you "
                "can write to, or fix its permissions"
            ) from None
        raise
    except BaseException:
        lock.release()
        raise
    return lock


def open_shared(accelerator: Accelerator, run_dir: Path) -> RunLock | None:
    """`open_run_folder` on the main process; every process raises its error, if any. Returns
    the lock on the main process, None elsewhere."""
    lock, problem = None, [None]
    if accelerator.is_main_process:
        try:
            lock = open_run_folder(run_dir)
        except GankitError as error:
            problem = [str(error)]
    if accelerator.num_processes > 1:
        broadcast_object_list(problem)
    if problem[0] is not None:
        raise RunFolderError(problem[0])
    return lock
