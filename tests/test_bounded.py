"""The one bounded reader of files read back (`gankit.core.bounded`): what it refuses and how it
says so. Real files, FIFOs and links."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from gankit.core import bounded
from gankit.core.bounded import (
    MAX_DEPTH,
    MAX_STRING,
    BoundedReadError,
    parse_json,
    read_bytes,
    read_json,
    read_json_object,
    read_text,
    strict_int,
)
from gankit.core.errors import GankitError


def write(tmp_path: Path, text: str | bytes, name: str = "file.json") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_a_well_formed_file_reads_as_json_would(tmp_path):
    value = {"a": [1, -2, 3.5, "x", None, True], "b": {"c": "é"}, "n": 10**39}
    path = write(tmp_path, json.dumps(value))
    assert read_json(path, what="test file") == value
    assert read_json_object(path, what="test file") == value
    assert read_text(path, what="test file") == json.dumps(value)
    assert issubclass(BoundedReadError, GankitError)


def test_nesting_past_the_bound_is_refused_before_parsing(tmp_path):
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, where="x") is not None
    deep = write(tmp_path, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(BoundedReadError, match=rf"^test file {deep} nests deeper than 64 levels"):
        read_json(deep, what="test file")
    # a recursion bomb far past Python's recursion limit is one error, not a RecursionError
    with pytest.raises(BoundedReadError, match="nests deeper"):
        parse_json('{"a":' * 100_000 + "1" + "}" * 100_000, where="x")
    # brackets inside strings do not count
    assert parse_json(json.dumps({"s": "[" * 500}), where="x") == {"s": "[" * 500}


@pytest.mark.parametrize("sign", ["", "-"])
def test_a_5001_digit_integer_is_refused(tmp_path, sign):
    path = write(tmp_path, '{"step": ' + sign + "9" * 5001 + "}")
    with pytest.raises(
        BoundedReadError,
        match=rf"^run info {path} holds an integer of 5001 digits; it is not a file gankit wrote$",
    ):
        read_json(path, what="run info")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_nan_and_infinity_are_refused(tmp_path, number):
    path = write(tmp_path, '{"loss": ' + number + "}")
    with pytest.raises(BoundedReadError, match=rf"^test file {path} holds .*not a file gankit"):
        read_json(path, what="test file")


def test_a_key_given_twice_is_refused(tmp_path):
    path = write(tmp_path, '{"outer": {"kind": "generator", "kind": "dataset"}}')
    with pytest.raises(BoundedReadError, match=r"holds the key 'kind' given twice"):
        read_json(path, what="test file")


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(BoundedReadError, match=rf"^test file {fifo} is not a regular file"):
        read_json(fifo, what="test file")
    with pytest.raises(BoundedReadError, match="is not a regular file"):
        read_bytes(tmp_path, what="test file")  # nor a folder
    assert time.monotonic() - start < 5  # opening a FIFO without a writer would block


def test_a_symbolic_link_is_refused_even_to_a_good_file(tmp_path):
    target = write(tmp_path, '{"a": 1}')
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(
        BoundedReadError, match=rf"^test file {link} is a symbolic link; gankit does not follow"
    ):
        read_json(link, what="test file")
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(BoundedReadError, match="is a symbolic link"):
        read_text(dangling, what="test file")


def test_a_file_larger_than_the_bound_is_refused(tmp_path):
    path = write(tmp_path, b"x" * 101)
    assert len(read_bytes(path, what="test file", max_bytes=101)) == 101
    with pytest.raises(BoundedReadError, match=rf"^test file {path} is larger than 100 bytes"):
        read_bytes(path, what="test file", max_bytes=100)
    big = write(tmp_path, b" " * (bounded.MAX_BYTES + 1), "big.json")
    with pytest.raises(BoundedReadError, match=r"is larger than 1,048,576 bytes"):
        read_json(big, what="test file")


def test_text_that_is_not_utf8_is_refused(tmp_path):
    path = write(tmp_path, b'{"name": "caf\xe9"}')
    with pytest.raises(BoundedReadError, match=rf"^test file {path} is not UTF-8 text \(byte 13\)"):
        read_text(path, what="test file")
    with pytest.raises(BoundedReadError, match=rf"^test file {path} is not UTF-8 text"):
        read_json(path, what="test file")


def test_long_strings_are_refused_also_inside_lists(tmp_path):
    long = "x" * (MAX_STRING + 1)
    for value in ({"a": long}, {"a": ["ok", [long]]}, [long], long):
        with pytest.raises(BoundedReadError, match=rf"holds a string of {MAX_STRING + 1:,} char"):
            parse_json(json.dumps(value), where="x")


def test_other_faults_are_one_error_each(tmp_path):
    with pytest.raises(BoundedReadError, match=r"^test file .*missing\.json does not exist$"):
        read_json(tmp_path / "missing.json", what="test file")
    with pytest.raises(BoundedReadError, match=r"is not valid JSON"):
        read_json(write(tmp_path, '{"a": 1,'), what="test file")
    with pytest.raises(BoundedReadError, match=r"is not a JSON object \(list\)"):
        read_json_object(write(tmp_path, "[1]"), what="test file")
    assert strict_int(3) and not strict_int(True) and not strict_int(3.0) and not strict_int("3")
