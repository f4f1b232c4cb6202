"""What the launcher did with this process: workers that die with their launcher, and a launch
that asked for several processes but started one.

torchrun (and `accelerate launch --multi_gpu`, which runs it) starts each worker in a session
of its own, so a signal to the launcher's process group (a SIGKILL from a job scheduler, a
terminal closing) does not reach the workers, which would train on as orphans. Each such worker
asks the kernel for SIGKILL when its launcher exits (Linux's PR_SET_PDEATHSIG), as if it had
been in the launcher's group.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

from gankit.core.errors import warn

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_launcher() -> bool:
    """Under torchrun's elastic agent, in a session apart from the launcher's: be killed when
    the launcher exits. Returns whether the death signal is set (Linux only)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return False
    launcher = os.getppid()
    try:
        if os.getsid(0) == os.getsid(launcher):
            return False  # a signal to the launcher's group or session reaches this process
    except OSError:  # the launcher is gone already
        os.kill(os.getpid(), signal.SIGKILL)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != launcher:  # it exited before the death signal was set
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def requested_processes(launcher_command: list[str]) -> int | None:
    """The process count an `accelerate launch` command line asked for (--num_processes N),
    or None for another command or none asked."""
    names = [Path(token).name for token in launcher_command[:3]]
    accelerate = any(name.startswith("accelerate") for name in names) and "launch" in names
    if not accelerate and not {"accelerate-launch", "accelerate.commands.launch"} & set(names):
        return None
    for index, token in enumerate(launcher_command):
        for option in ("--num_processes", "--num-processes"):
            value = None
            if token == option and index + 1 < len(launcher_command):
                value = launcher_command[index + 1]
            elif token.startswith(option + "="):
                value = token.split("=", 1)[1]
            if value is not None:
                return int(value) if value.isdigit() else None
    return None


def _parent_command() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:  # not Linux, or the launcher is gone
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def check_process_count() -> None:
    """Warn, in one line, when `accelerate launch` was asked for several processes but started
    this one alone (its single-process launcher, which `--cpu` selects, ignores the count)."""
    asked = requested_processes(_parent_command())
    started = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if asked is None or asked <= started:
        return
    warn(
        f"accelerate launch was asked for {asked} processes but started {started} (with --cpu "
        f"it starts one), so this run trains in {started}; for {asked} CPU processes run "
        f"`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {asked} ...` or "
        f"`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node {asked} ...`"
    )
