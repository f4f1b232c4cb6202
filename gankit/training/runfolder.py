"""The run folder: gankit's own, written by one run at a time.

A folder becomes a run folder when gankit marks it (`.gankit-run`). gankit refuses to write into
a non-empty folder without that mark, so it never deletes or overwrites a file it did not write.
While a run trains, its main process holds an OS lock on `.gankit-lock` (`flock`): the OS
releases it when the process ends, however it ends, so a killed run leaves nothing stale, and a
second run on the same folder is refused with the holder's pid, host and start time. Under the
lock, temporary folders left by a writer that died are removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import IO

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from gankit._version import __version__
from gankit.core.atomic import remove_leftovers
from gankit.core.errors import GankitError, warn

MARK_FILE = ".gankit-run"
LOCK_FILE = ".gankit-lock"
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
    with contextlib.suppress(OSError, ValueError, AttributeError):
        info = json.loads((run_dir / "run_info.json").read_text())
        if "gankit" in info.get("versions", {}):
            return True
    for manifest in (run_dir / "checkpoints").glob("step_*/manifest.json"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if "gankit_version" in json.loads(manifest.read_text()):
                return True
    return False


def check_run_folder(run_dir: Path) -> None:
    """Refuse a run folder gankit may not write into: a file, or a non-empty folder that is
    not a gankit run. Reads only."""
    where = f"output_dir '{run_dir}'"
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(
            f"{where} is a file, not a folder; choose a folder path, e.g. output_dir=runs/<name>"
        )
    if not run_dir.is_dir() or (run_dir / MARK_FILE).is_file() or _earlier_run(run_dir):
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


def _describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["since"])))
        return f"pid {int(holder['pid'])} on {holder['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


class RunLock:
    """The run folder's exclusive lock, held by the main process while it trains."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise RunFolderError naming the run that holds it."""
        path = self.run_dir / LOCK_FILE
        handle = open(path, "a+")  # noqa: SIM115 - held open for the whole run
        if fcntl is None:
            warn(f"no file locks on this system: a second run on {self.run_dir} is not detected")
        else:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _describe_holder(handle.read(4096))
                handle.close()
                raise RunFolderError(
                    f"output_dir '{self.run_dir}' is in use by another gankit run ({holder}); "
                    "wait for it to finish or stop it, or choose another output_dir"
                ) from None
            except OSError as error:  # a filesystem without locks (some network mounts)
                warn(
                    f"cannot lock {path} ({error.strerror}): this filesystem has no file locks, "
                    "so a second run on this folder would not be detected"
                )
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        )
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        """Give the lock back (the OS does so too when the process ends)."""
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.truncate(0)
            self.handle.close()  # closing the file releases the flock
            self.handle = None


def remove_staging_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temporary folders and files of writes that were cut short. Call under the
    lock: no live writer owns them then. A folder retired by a writer killed between its two
    renames is put back where it belongs (see `atomic.remove_leftovers`)."""
    removed = []
    for parent in (run_dir, *(run_dir / name for name in STAGING_PARENTS)):
        if not parent.is_dir():
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
        mark = run_dir / MARK_FILE
        if not mark.is_file():
            mark.write_text(
                json.dumps({"gankit_version": __version__, "created": time.time()}) + "\n"
            )
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
