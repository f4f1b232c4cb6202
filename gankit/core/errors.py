"""Errors meant for people: each says what was wrong, where, and what to do."""

from __future__ import annotations

import difflib
import reprlib
import sys
from collections.abc import Iterable
from typing import Any

SHOWN_CHARS = 80  # the most of a user's value that a message echoes
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 30, SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


class GankitError(Exception):
    """Base of every error gankit raises on purpose; the CLI prints these without a traceback."""


class RegistryError(GankitError):
    """A component name is unknown or registered twice."""


class PluginError(GankitError):
    """A third-party package registered through `gankit.plugins` failed to load."""


class RecipeError(GankitError):
    """A recipe file or override is unreadable or does not validate."""


class DatasetError(GankitError):
    """A dataset's files are missing or unreadable."""


class ExportError(GankitError):
    """An exported model folder is missing, malformed or does not match its config."""


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text`, or its first `limit` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A user's value as a message echoes it: its repr, cut to `limit` characters (computed
    without building the full repr of a large value)."""
    if isinstance(value, str):
        return cut(repr(value[: limit + 1]), limit)
    return cut(_REPR.repr(value), limit)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def warn(message: str) -> None:
    """A warning on stderr that does not stop the run."""
    print(f"gankit: warning: {message}", file=sys.stderr, flush=True)
