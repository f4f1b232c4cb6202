"""One bounded reader for every file gankit reads back: size, type, nesting, numbers, text.

Run folders and exports can come from someone else, so nothing in them is trusted to be small or
well formed. Every JSON file gankit reads (manifests, config.json, run_info.json, model cards'
metadata, metrics.jsonl, the lock file) goes through `read_json`/`parse_json`: a regular file
(never a FIFO or device, never through a symbolic link), at most `max_bytes` long, nested at most
`MAX_DEPTH` deep, integers of at most `MAX_INT_DIGITS` digits, no NaN or Infinity, no key given
twice. Any fault is one `BoundedReadError` that names the file and says what was wrong.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from gankit.core.errors import GankitError, cut

MAX_BYTES = 1 << 20  # 1 MiB: a manifest, a config.json or a card is a few KiB
MAX_DEPTH = 64
MAX_INT_DIGITS = 40  # 128-bit numbers and then some; a 5001-digit number is an attack
MAX_STRING = 1 << 16  # characters in one JSON string


class BoundedReadError(GankitError):
    """A file gankit reads back is missing, of the wrong type, too large or malformed."""


def open_regular(path: str | Path, *, what: str) -> int:
    """An O_RDONLY descriptor of `path`, which must be a regular file reached without following
    a symbolic link at its last component (a FIFO, device or socket is refused unopened)."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise BoundedReadError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise BoundedReadError(f"{what} {path} cannot be read ({error.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise BoundedReadError(
            f"{what} {path} is a symbolic link; gankit does not follow links in the files it "
            "reads back: replace it with the file itself"
        )
    if not stat.S_ISREG(info.st_mode):
        raise BoundedReadError(
            f"{what} {path} is not a regular file (a folder, FIFO, device or socket); "
            "replace it with the file gankit wrote"
        )
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise BoundedReadError(f"{what} {path} cannot be opened ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # swapped between lstat and open
        os.close(descriptor)
        raise BoundedReadError(f"{what} {path} is not a regular file")
    return descriptor


def read_bytes(path: str | Path, *, what: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (see `open_regular`)."""
    descriptor = open_regular(path, what=what)
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BoundedReadError(
            f"{what} {path} is larger than {max_bytes:,} bytes, far more than gankit writes "
            "there; it is not a file gankit wrote"
        )
    return data


def read_text(path: str | Path, *, what: str, max_bytes: int = MAX_BYTES) -> str:
    """A UTF-8 text file of at most `max_bytes` (see `read_bytes`)."""
    data = read_bytes(path, what=what, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BoundedReadError(
            f"{what} {path} is not UTF-8 text (byte {error.start}); it is not a file gankit wrote"
        ) from None


def _depth(text: str) -> int:
    """How deep the brackets of a JSON text nest (brackets inside strings not counted)."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class _Refused(ValueError):
    """A JSON value that parses but is out of bounds."""


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(digits.lstrip('-'))} digits")
    return int(digits)


def _parse_float(text: str) -> float:
    if len(text) > MAX_INT_DIGITS * 2:
        raise _Refused(f"a number written with {len(text)} characters")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"a number too large for a float ({cut(text, 20)})")
    return value


def _parse_constant(name: str) -> Any:
    raise _Refused(f"{name}, which is not a JSON number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key {cut(key, 40)!r} given twice")
        if len(key) > MAX_STRING:
            raise _Refused(f"a key of {len(key):,} characters")
        _check_strings(value, key)
        result[key] = value
    return result


def _check_strings(value: Any, key: str) -> None:
    """Refuse a string longer than MAX_STRING in `value` or the lists inside it (the objects
    inside were checked as they were made)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and len(item) > MAX_STRING:
            raise _Refused(f"a string of {len(item):,} characters under {cut(key, 40)!r}")
        if isinstance(item, list):
            pending.extend(item)


def parse_json(text: str | bytes, *, where: str) -> Any:
    """Parse JSON within the bounds of this module; `where` names it in the error."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BoundedReadError(f"{where} is not UTF-8 text (byte {error.start})") from None
    if _depth(text) > MAX_DEPTH:
        raise BoundedReadError(
            f"{where} nests deeper than {MAX_DEPTH} levels; it is not a file gankit wrote"
        )
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_pairs,
        )
        if not isinstance(value, dict):  # an object's strings were checked as it was made
            _check_strings(value, "the top level")
    except _Refused as error:
        raise BoundedReadError(f"{where} holds {error}; it is not a file gankit wrote") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise BoundedReadError(f"{where} is not valid JSON ({cut(str(error), 120)})") from None
    return value


def read_json(path: str | Path, *, what: str, max_bytes: int = MAX_BYTES) -> Any:
    """A JSON file gankit wrote, read within bounds (see the module's docstring)."""
    return parse_json(read_bytes(path, what=what, max_bytes=max_bytes), where=f"{what} {path}")


def read_json_object(path: str | Path, *, what: str, max_bytes: int = MAX_BYTES) -> dict:
    """`read_json` of a file whose top level must be an object."""
    value = read_json(path, what=what, max_bytes=max_bytes)
    if not isinstance(value, dict):
        raise BoundedReadError(f"{what} {path} is not a JSON object ({type(value).__name__})")
    return value


def strict_int(value: Any) -> bool:
    """True for an int that is not a bool (JSON's `true` is not a step or a version)."""
    return isinstance(value, int) and not isinstance(value, bool)
