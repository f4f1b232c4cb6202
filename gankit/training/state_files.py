"""Nested training state as two files gankit writes and reads itself, with no pickle.

`save_state(folder, name, state)` writes `<name>.safetensors` (every tensor) and `<name>.json`
(everything else, with each tensor replaced by a reference), and `load_state(folder, name)`
gives back an equal state: dicts (keys of any of these types, as an optimizer's parameter
indices are ints), lists, tuples, ints, floats (NaN and infinities too), bools, None, strings
and tensors, with their dtypes and shapes. Tensors come back on the CPU.

In the JSON a value is a JSON null, bool, int, float, string or list, or an object with one
key that says what it is: `{"dict": {...}}` (string keys), `{"pairs": [[key, value], ...]}`
(other keys), `{"tuple": [...]}`, `{"tensor": "<name in the safetensors file>"}` or
`{"float": "nan" | "inf" | "-inf"}`. Both files are read through the bounded reader
(`core.bounded`): a regular file, never through a link, within size, nesting and number bounds;
anything else, or a reference that does not resolve, is a StateFileError that names the file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save_file

from gankit.core.bounded import (
    BoundedReadError,
    open_regular,
    parse_json,
    read_json_object,
    strict_int,
)
from gankit.core.errors import GankitError, cut
from gankit.core.sizes import available_bytes

FORMAT = 1
JSON_SUFFIX, TENSORS_SUFFIX = ".json", ".safetensors"
MAX_JSON_BYTES = 16 << 20  # an optimizer's per-parameter entries for thousands of tensors
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class StateFileError(GankitError):
    """A state file is missing, malformed or does not describe a state gankit wrote."""


def file_names(name: str) -> tuple[str, str]:
    """The two files `save_state` writes for `name`: JSON, then tensors."""
    return name + JSON_SUFFIX, name + TENSORS_SUFFIX


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        # a copy of its own: safetensors refuses tensors that share memory or have gaps
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {"tensor": key}
    if isinstance(value, list):
        return [_encode(item, tensors, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return {"tuple": [_encode(item, tensors, f"{where}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {"dict": {k: _encode(v, tensors, f"{where}[{k!r}]") for k, v in value.items()}}
        return {
            "pairs": [
                [_encode(k, tensors, f"{where} key"), _encode(v, tensors, f"{where}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    raise StateFileError(
        f"{where} is a {type(value).__name__}, which a state file cannot hold (dicts, lists, "
        "tuples, numbers, bools, None, strings and tensors only)"
    )


def save_state(folder: str | Path, name: str, state: Any) -> tuple[Path, Path]:
    """Write `state` as `<name>.json` and `<name>.safetensors` in `folder`; returns both paths.
    Refuses (StateFileError) a value of another type, or one the reader would refuse."""
    folder = Path(folder)
    json_path, tensors_path = (folder / file for file in file_names(name))
    tensors: dict[str, torch.Tensor] = {}
    document = {"format": FORMAT, "state": _encode(state, tensors, name)}
    text = json.dumps(document, allow_nan=False, separators=(",", ":")) + "\n"
    try:  # never write what load_state would refuse
        parse_json(text, where=f"the state {name}")
    except BoundedReadError as error:
        raise StateFileError(f"cannot write {json_path}: {error}") from None
    if len(text.encode()) > MAX_JSON_BYTES:
        raise StateFileError(f"cannot write {json_path}: over {MAX_JSON_BYTES:,} bytes")
    save_file(tensors, str(tensors_path), metadata={"format": "pt"})
    json_path.write_text(text, encoding="utf-8")
    return json_path, tensors_path


class _Decoder:
    """Rebuilds a state from its JSON and tensors; each tensor is referenced exactly once."""

    def __init__(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        self.tensors, self.where, self.used = tensors, where, set()

    def fail(self, what: str) -> StateFileError:
        return StateFileError(f"{self.where} {what}; it is not a state file gankit wrote")

    def value(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if not (isinstance(node, dict) and len(node) == 1):
            raise self.fail(f"holds {cut(repr(node), 60)} where a value belongs")
        ((tag, body),) = node.items()
        if tag == "dict" and isinstance(body, dict):
            return {key: self.value(item) for key, item in body.items()}
        if tag == "pairs" and isinstance(body, list):
            return self.pairs(body)
        if tag == "tuple" and isinstance(body, list):
            return tuple(self.value(item) for item in body)
        if tag == "tensor" and isinstance(body, str):
            return self.tensor(body)
        if tag == "float" and body in _NON_FINITE:
            return _NON_FINITE[body]
        raise self.fail(f"holds {cut(repr(node), 60)}, which is no value it writes")

    def pairs(self, body: list) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for pair in body:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise self.fail("holds a dict entry that is not a [key, value] pair")
            key = self.value(pair[0])
            try:
                hash(key)
            except TypeError:
                raise self.fail(f"holds a dict key that is a {type(key).__name__}") from None
            if key in result:
                raise self.fail(f"holds the dict key {cut(repr(key), 40)} twice")
            result[key] = self.value(pair[1])
        return result

    def tensor(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise self.fail(f"refers to a tensor {cut(key, 40)!r} its .safetensors file lacks")
        if key in self.used:
            raise self.fail(f"refers to the tensor {cut(key, 40)!r} twice")
        self.used.add(key)
        return self.tensors[key]


def read_tensors(path: Path, *, what: str = "the tensors") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, read through the bounded reader (a regular file, not
    a link, no larger than the machine's memory) onto the CPU."""
    try:
        descriptor = open_regular(path, what=what)
    except BoundedReadError as error:
        raise StateFileError(str(error)) from None
    with os.fdopen(descriptor, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        limit = available_bytes("cpu")
        if limit is not None and size > limit:
            raise StateFileError(
                f"{path} is {size:,} bytes, more than this machine's memory; it is not a file "
                "gankit wrote here"
            )
        data = handle.read()
    try:
        return tensors_from_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise StateFileError(
            f"{path} is not a readable safetensors file ({cut(' '.join(str(error).split()), 120)})"
        ) from None


def load_state(folder: str | Path, name: str) -> Any:
    """The state `save_state(folder, name, ...)` wrote, tensors on the CPU; a StateFileError
    that names the file if either file is missing, malformed or does not match the other."""
    folder = Path(folder)
    json_path, tensors_path = (folder / file for file in file_names(name))
    try:
        document = read_json_object(json_path, what="state file", max_bytes=MAX_JSON_BYTES)
    except BoundedReadError as error:
        raise StateFileError(str(error)) from None
    if set(document) != {"format", "state"} or not (
        strict_int(document["format"]) and document["format"] == FORMAT
    ):
        raise StateFileError(
            f"{json_path} is not a state file of format {FORMAT} (fields format and state)"
        )
    tensors = read_tensors(tensors_path, what="state file")
    decoder = _Decoder(tensors, str(json_path))
    state = decoder.value(document["state"])
    unused = sorted(tensors.keys() - decoder.used)
    if unused:
        raise StateFileError(
            f"{tensors_path} holds tensors {', '.join(unused[:3])} that {json_path.name} does "
            "not refer to; it is not a state file gankit wrote"
        )
    return state
