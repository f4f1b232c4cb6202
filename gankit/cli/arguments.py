"""The argparse pieces every command shares: one-line usage errors, bounded number types, and
OS errors as one line with what to do."""

from __future__ import annotations

import argparse
import errno
import math
from collections.abc import Callable
from typing import Any

from gankit.core.errors import cut, shown
from gankit.core.sizes import (
    MAX_FPS,
    MAX_SEED,
    MIN_FPS,
)

EXPORT_HELP = "export folder (e.g. runs/mnist_dcgan/export/generator) or Hub repo id (user/repo)"

OS_ERROR_ADVICE = {
    errno.ENOSPC: "free disk space, then run the same command: training resumes from the newest "
    "intact checkpoint",
    errno.EDQUOT: "free space within your quota, then run the same command",
    errno.EACCES: "fix the permissions, or choose another folder (e.g. output_dir=...)",
    errno.EPERM: "fix the permissions, or choose another folder (e.g. output_dir=...)",
    errno.EROFS: "the filesystem is read-only; choose another folder (e.g. output_dir=...)",
}


def describe_os_error(error: OSError) -> str:
    """An OSError as one line: what failed, on which file, and what to do."""
    what = error.strerror or str(error)
    where = f": {error.filename}" if error.filename else ""
    advice = OS_ERROR_ADVICE.get(error.errno or 0, "check the path and try again")
    return f"{what}{where}; {advice}"


def positive(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (and at most `maximum`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{cut(text)} is too small; it must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{cut(text)} is too large; it must be <= {maximum:,}")
        return value

    return parse


SEED = positive(0, MAX_SEED)  # the argparse type of every --seed


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number above 0")
    return value


def frame_rate(text: str) -> float:
    """An argparse type: frames per second, a finite number from MIN_FPS to MAX_FPS."""
    value = positive_float(text)
    if not MIN_FPS <= value <= MAX_FPS:
        raise argparse.ArgumentTypeError(
            f"{text}: give frames per second from {MIN_FPS:g} to {MAX_FPS:g}"
        )
    return value


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (with where to read the usage), exit 2."""

    def error(self, message: str) -> Any:
        """Print `message` as one line and exit with status 2 (argparse's usage error)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def truncation(text: str) -> float:
    """An argparse type: a truncation psi in (0, 1]."""
    from gankit.components.models.base import check_truncation

    try:
        return check_truncation(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            str(error) if "truncation" in str(error) else f"{text!r} is not a number"
        ) from None
