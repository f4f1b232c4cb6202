"""Bad recipe input, as people and accidents produce it: every case ends in one `gankit: error:`
message (exit code 2) that says what, where and what to do, never a traceback, a blow-up in
memory or time, or a recipe accepted that cannot train."""

from __future__ import annotations

import errno
import os
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gankit.cli import main
from gankit.config.recipe import load_recipe, read_recipe_file, recipe_model, validate_recipe
from gankit.config.recipe_file import MAX_BYTES, MAX_DEPTH, MAX_TEXT, MAX_VALUES, parse_yaml
from gankit.config.registry import LOSSES
from gankit.core.errors import SHOWN_CHARS, RecipeError

from conftest import REFERENCE_RECIPE

REF = str(REFERENCE_RECIPE)


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `gankit validate ARGS` in-process; assert a clean error and return its message."""
    code = main(["validate", "-q", *args])
    out, err = capsys.readouterr()
    report = f"stdout:\n{out}\nstderr:\n{err}"
    assert code == 2, report
    assert err.startswith("gankit: error: "), report
    assert "Traceback" not in out + err, report
    return err


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """As `cli_error`, for a message that is a single line."""
    err = cli_error(capsys, *args)
    assert err.count("\n") == 1, err
    return err


def reference_text(**replace: Any) -> str:
    """The reference recipe as YAML, with some keys (`train__steps` for train.steps) set to
    YAML text written as is."""
    raw = yaml.safe_load(REFERENCE_RECIPE.read_text())
    marks = {}
    for number, (dotted, text) in enumerate(replace.items()):
        *sections, key = dotted.split("__")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        marks[f"gankit_mark_{number}"] = text
        node[key] = f"gankit_mark_{number}"
    out = yaml.safe_dump(raw, sort_keys=False)
    for mark, text in marks.items():
        out = out.replace(mark, text)
    return out


def laughs(levels: int, width: int = 10) -> str:
    """A YAML list of anchors that expands to width**levels values: [&l0 [lol, ...], &l1 [*l0,
    ...], ...]."""
    lists = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
    lists += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]" for n in range(1, levels)]
    return "[" + ", ".join(lists) + "]"


# ---- not UTF-8 text ---------------------------------------------------------------------

BINARY = {
    "latin-1": "name: café\n".encode("latin-1"),
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
    "random": random.Random(0).randbytes(4096),
    "utf-16": "name: x\n".encode("utf-16"),
}


@pytest.mark.parametrize("kind", list(BINARY))
def test_a_file_that_is_not_utf8_text_is_refused(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(BINARY[kind])
    err = one_line_error(capsys, str(path))
    assert f"recipe file '{path}' is not a UTF-8 text recipe" in err
    assert "as UTF-8" in err  # what to do


def test_a_latin1_file_names_the_byte_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: x\n# caf\xe9\n")
    err = one_line_error(capsys, str(path))
    assert "byte 0xe9 at line 2 is not UTF-8" in err
    assert "save it as UTF-8" in err


# ---- a folder ---------------------------------------------------------------------------


def test_a_folder_is_refused_as_a_folder_and_a_recipe_in_it_suggested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "recipes.yaml"
    folder.mkdir()
    err = one_line_error(capsys, str(folder))
    assert f"recipe '{folder}' is a folder, not a file; give a recipe YAML file" in err
    assert "not found" not in err
    (folder / "mine.yaml").write_text(REFERENCE_RECIPE.read_text())
    err = one_line_error(capsys, str(folder))
    assert f"such as {folder / 'mine.yaml'}" in err


# ---- files that cannot be read ----------------------------------------------------------


def test_a_named_pipe_is_refused_without_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # reading it would block until a writer came
    err = one_line_error(capsys, str(fifo))
    assert f"recipe '{fifo}' is a named pipe (FIFO), not a regular file; give a YAML file" in err


def test_a_symlink_loop_is_a_read_error_not_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    err = one_line_error(capsys, str(loop))
    assert f"cannot read recipe file '{loop}': {os.strerror(errno.ELOOP)}" in err
    assert "check that it is a readable file" in err


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_an_error_while_reading_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # A regular file whose read fails (EIO: address 0 of this process is not mapped).
    err = one_line_error(capsys, "/proc/self/mem")
    assert f"cannot read recipe file '/proc/self/mem': {os.strerror(errno.EIO)}" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_a_file_without_read_permission_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(REFERENCE_RECIPE.read_text())
    path.chmod(0)
    err = one_line_error(capsys, str(path))
    assert f"cannot read recipe file '{path}': {os.strerror(errno.EACCES)}" in err


# ---- size -------------------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_before_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = REFERENCE_RECIPE.read_text()
    path = tmp_path / "huge.yaml"
    path.write_text(text + "#" * (MAX_BYTES + 1 - len(text.encode()) - 1) + "\n")
    assert path.stat().st_size == MAX_BYTES + 1
    err = one_line_error(capsys, str(path))
    assert f"recipe file '{path}' is {MAX_BYTES + 1:,} bytes" in err
    assert f"recipes are at most {MAX_BYTES:,} bytes (1 MiB)" in err


# ---- nesting ----------------------------------------------------------------------------


def test_deep_flow_nesting_is_refused_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\ntrain:\n  steps: " + "[" * 100_000 + "\n")
    err = one_line_error(capsys, str(path))
    assert f"recipe '{path}' nests deeper than {MAX_DEPTH} levels at line 3, column" in err
    assert "unclosed brackets" in err


def test_deep_block_nesting_is_refused_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("".join(" " * n + f"k{n}:\n" for n in range(200)))
    err = one_line_error(capsys, str(path))
    assert f"nests deeper than {MAX_DEPTH} levels at line {MAX_DEPTH}, column {MAX_DEPTH}" in err


def test_deep_override_values_and_keys_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_error(capsys, REF, "wandb.tags=" + "[" * 5000)
    assert f"nests deeper than {MAX_DEPTH} levels at line 1, column" in err
    assert err.startswith("gankit: error: override 'wandb.tags=[[[[")
    deep_key = ".".join(["train"] * (MAX_DEPTH + 5))
    err = one_line_error(capsys, REF, f"{deep_key}=1")
    assert f"nests deeper than {MAX_DEPTH} levels at train.train.train" in err


def test_a_self_referencing_alias_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(reference_text(wandb__tags="&me [*me]"))
    err = one_line_error(capsys, str(path))
    assert f"nests deeper than {MAX_DEPTH} levels at wandb.tags[0][0]" in err


# ---- alias bombs ------------------------------------------------------------------------


def test_an_alias_bomb_in_a_typed_field_is_refused_quickly_and_cheaply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 10**6 values in a few hundred bytes; validated, it made a message of the whole expansion.
    path = tmp_path / "laughs.yaml"
    path.write_text(reference_text(train__steps=laughs(6)))
    assert path.stat().st_size < 2000
    tracemalloc.start()
    try:
        err = one_line_error(capsys, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"recipe '{path}' holds more than {MAX_VALUES:,} values (at train.steps[" in err
    assert "counting a YAML alias (*name) again each time it is used" in err
    assert len(err) < 1000
    # the expansion was never built: memory shows it (a time limit would be flaky on a busy
    # machine; an expansion of 10**6 values would also take far longer than the test's budget)
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_an_alias_bomb_in_an_override_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_error(capsys, REF, "wandb.tags=" + laughs(6))
    assert f"holds more than {MAX_VALUES:,} values (at wandb.tags[" in err
    assert err.startswith("gankit: error: override 'wandb.tags=[&l0")


def test_aliases_of_a_long_string_are_bounded_in_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Valid as a list of strings, but it would resolve (and be written out) as megabytes.
    long = "x" * 20_000
    tags = "[" + ", ".join(["*tag"] * (MAX_TEXT // len(long) + 1)) + "]"
    path = tmp_path / "tags.yaml"
    path.write_text(f"tag: &tag {long}\n" + reference_text(wandb__tags=tags))
    err = one_line_error(capsys, str(path))
    assert f"holds more than {MAX_TEXT:,} characters of text (at wandb.tags[" in err


def test_merges_of_merges_copy_each_key_once(tmp_path: Path) -> None:
    # Ten merges of ten merges of ...: copied naively, m6 would hold a million copies of 'a'.
    lines = ["m0: &m0 {a: 1}"]
    lines += [f"m{n}: &m{n} {{<<: [{', '.join([f'*m{n - 1}'] * 10)}]}}" for n in range(1, 7)]
    path = tmp_path / "merges.yaml"
    path.write_text("\n".join(lines) + "\n" + reference_text())
    tracemalloc.start()
    try:
        raw = read_recipe_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert raw["m6"] == {"a": 1}
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_merges_are_bounded_before_they_are_copied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = 2_000
    merges = MAX_VALUES // keys + 1
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(keys)) + "}"]
    lines += [f"m{n}: {{<<: *m0}}" for n in range(1, merges + 1)]
    path = tmp_path / "merges.yaml"
    path.write_text("\n".join(lines) + "\n" + reference_text())
    tracemalloc.start()
    try:
        err = one_line_error(capsys, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (
        f"recipe '{path}' merges more than {MAX_VALUES:,} keys with '<<' at line {merges + 1}"
        in err
    )
    assert "merge fewer or smaller mappings" in err
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the mapping's own keys win; then earlier merged mappings win over later ones
        (
            "a: &a {x: 1, y: 1}\nb: &b {<<: *a, x: 2}\nc: {<<: [*b, *a], z: 0}",
            {"x": 2, "y": 1, "z": 0},
        ),
        ("a: &a {lr: 1}\nb: &b {lr: 2}\nc: {<<: [*a, *b]}", {"lr": 1}),
        ("a: &a {lr: 1}\nb: &b {lr: 2}\nc: {<<: [*b, *a]}", {"lr": 2}),
        ("a: &a {lr: 1, eps: 3}\nc: {<<: *a, lr: 5}", {"lr": 5, "eps": 3}),
    ],
)
def test_merge_keys_resolve_as_yaml_defines_them(text: str, expected: dict) -> None:
    """The same mapping whatever PyYAML's own merging does (6.0.4 deduplicates merged keys by
    string identity, so its winner depends on string interning)."""
    assert parse_yaml(text, "test")["c"] == expected


def test_a_recipe_within_the_bounds_that_uses_aliases_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "shared.yaml"
    path.write_text(reference_text(optim="{generator: &adam {lr: 1.0e-4}, discriminator: *adam}"))
    recipe = load_recipe(path)
    assert recipe.optim.discriminator.lr == recipe.optim.generator.lr == 1e-4
    optim = "{generator: {<<: [*base, *more], lr: 3.0e-4}, discriminator: {<<: *base}}"
    path.write_text(
        "base: &base {lr: 1.0e-4, betas: [0.5, 0.99]}\nmore: &more {eps: 1.0e-7}\n"
        + reference_text(optim=optim)
    )
    raw = read_recipe_file(path)
    del raw["base"], raw["more"]
    recipe = validate_recipe(raw)
    assert (recipe.optim.generator.lr, recipe.optim.generator.eps) == (3e-4, 1e-7)
    assert recipe.optim.generator.betas == recipe.optim.discriminator.betas == (0.5, 0.99)
    assert recipe.optim.discriminator.lr == 1e-4


def test_a_key_given_twice_is_an_error_naming_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "twice.yaml"
    lines = reference_text().splitlines()
    at = lines.index("train:")
    path.write_text("\n".join([*lines, "train:", "  steps: 5"]) + "\n")
    err = one_line_error(capsys, str(path))
    assert err == (
        f"gankit: error: recipe '{path}': key 'train' at line {len(lines) + 1} is given twice "
        f"(first at line {at + 1}); keep one of them\n"
    )
    nested = "optim:\n  generator:\n    lr: 1.0e-4\n    betas: [0.5, 0.99]\n    lr: 2.0e-4\n"
    path.write_text(reference_text().replace("optim:\n", "unused:\n") + nested)
    start = len(reference_text().splitlines())
    err = one_line_error(capsys, str(path))
    assert f"key 'lr' at line {start + 5} is given twice (first at line {start + 3})" in err
    err = one_line_error(capsys, REF, "optim.generator={lr: 1, lr: 2}")
    assert "override 'optim.generator={lr: 1, lr: 2}': key 'lr' at line 1 is given twice" in err


def test_keys_merged_in_may_be_overridden_at_any_depth(tmp_path: Path) -> None:
    # `tuned` overrides a merged `lr`; merging `tuned` again must not read that as a duplicate
    path = tmp_path / "merged.yaml"
    path.write_text(
        "base: &base {lr: 1.0e-4, betas: [0.5, 0.99]}\n"
        "tuned: &tuned {<<: *base, lr: 3.0e-4}\n"
        + reference_text(optim="{generator: {<<: *tuned, eps: 1.0e-7}, discriminator: *tuned}")
    )
    raw = read_recipe_file(path)
    assert raw["optim"]["generator"] == {"lr": 3e-4, "betas": [0.5, 0.99], "eps": 1e-7}
    assert raw["optim"]["discriminator"] == {"lr": 3e-4, "betas": [0.5, 0.99]}


# ---- echoed values are cut --------------------------------------------------------------


def assert_cut(err: str, long: str) -> None:
    assert long[: SHOWN_CHARS + 1] not in err, err
    assert long[: SHOWN_CHARS // 2] in err and "…" in err, err


def test_a_long_wrong_value_is_echoed_cut(capsys: pytest.CaptureFixture[str]) -> None:
    long = "y" * 5000
    err = cli_error(capsys, REF, f"train.steps={long}")
    assert "train.steps: Input should be a valid integer" in err
    assert_cut(err, long)
    assert len(err) < 600


def test_a_long_unknown_component_name_is_echoed_cut(capsys: pytest.CaptureFixture[str]) -> None:
    long = "dcgan" * 1000
    err = cli_error(capsys, REF, f"generator.name={long}")
    assert "unknown generator 'dcgan" in err and "at generator.name" in err
    assert_cut(err, long)
    listed = "[" + ",".join(["dcgan"] * 1000) + "]"
    err = cli_error(capsys, REF, f"generator.name={listed}")
    assert "unknown generator ['dcgan', 'dcgan'" in err
    assert len(err) < 800


def test_a_long_unknown_key_and_a_bad_override_are_echoed_cut(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long = "q" * 5000
    err = cli_error(capsys, REF, f"train.{long}=1")
    assert "unknown key train.qqq" in err
    assert "q" * (SHOWN_CHARS + 1) not in err
    err = one_line_error(capsys, REF, f"{long}..x=1")
    assert err.startswith("gankit: error: override 'qqq")
    assert "is not of the form key=value" in err
    assert "q" * (SHOWN_CHARS + 1) not in err
    err = one_line_error(capsys, REF, f"train.steps.x={long}")
    assert "override 'train.steps.x=qqq" in err and "train.steps is a value" in err
    assert "q" * (SHOWN_CHARS + 1) not in err


def test_booleans_for_numbers_are_echoed_cut(capsys: pytest.CaptureFixture[str]) -> None:
    betas = "[" + ", ".join(["true"] * 1000) + "]"
    err = cli_error(capsys, REF, f"optim.generator.betas={betas}")
    assert "optim.generator.betas: Tuple should have at most 2 items" in err
    assert "(got [True, True" in err
    assert len(err) < 600


# ---- scalars Python cannot convert, control characters -------------------------------------


def test_an_integer_too_long_to_convert_is_a_yaml_error_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "digits.yaml"
    path.write_text(reference_text(train__steps="1" * 5000))
    line = path.read_text().splitlines().index("  steps: " + "1" * 5000) + 1
    err = one_line_error(capsys, str(path))
    assert f"recipe '{path}' is not valid YAML at line {line}, column 10" in err
    assert "this integer cannot be read" in err and "quote it" in err
    err = one_line_error(capsys, REF, "train.steps=" + "9" * 5000)
    assert "this integer cannot be read" in err


def test_an_impossible_date_is_a_yaml_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_error(capsys, REF, "name=2024-13-45")
    assert "override 'name=2024-13-45': cannot parse '2024-13-45' as a value" in err
    assert "this date cannot be read (month must be in 1..12)" in err


def test_a_control_character_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bell.yaml"
    path.write_text("# a recipe\nname: ding\x07\n")
    err = one_line_error(capsys, str(path))
    assert f"recipe '{path}' is not valid YAML at line 2: the control character #x0007" in err


# ---- inf and nan ------------------------------------------------------------------------

NON_FINITE = [
    ("generator.bn_eps", ".inf"),
    ("discriminator.bn_momentum", ".nan"),
    ("optim.discriminator.eps", ".inf"),
    ("optim.generator.lr", ".nan"),
    ("optim.generator.weight_decay", "inf"),  # the string 'inf', which pydantic reads as a float
    ("ema.decay", ".nan"),
    ("train.steps", "-.inf"),
]


@pytest.mark.parametrize(("key", "value"), NON_FINITE)
def test_inf_and_nan_are_refused_by_key(
    key: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = cli_error(capsys, REF, f"{key}={value}")
    assert f"{key} must be a finite number" in err
    assert ".inf and .nan are not allowed" in err
    assert f"[set by override '{key}={value}']" in err


def test_nan_inside_a_tuple_and_in_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = cli_error(capsys, REF, "optim.generator.betas=[0.5, .nan]")
    assert "optim.generator.betas.1 must be a finite number" in err
    path = tmp_path / "inf.yaml"
    path.write_text(reference_text(generator__bn_eps=".inf"))
    err = cli_error(capsys, str(path))
    assert "generator.bn_eps must be a finite number, not inf" in err


@pytest.fixture
def probe_loss() -> Any:
    """A loss registered as a plugin would register it, with a float of its own and one in a
    nested model whose config allows inf."""

    class Inner(BaseModel):
        scale: float = 1.0

    class ProbeParams(BaseModel):
        model_config = ConfigDict(extra="forbid")
        margin: float = Field(1.0, gt=0)
        inner: Inner = Inner()

    @LOSSES.register("finite_probe", params=ProbeParams)
    class ProbeLoss:
        """A loss that only tests use."""

    yield ProbeLoss
    LOSSES.unregister("finite_probe")


def test_a_plugin_components_floats_are_refused_when_not_finite(
    probe_loss: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    err = cli_error(capsys, REF, "loss={name: finite_probe, margin: .inf}")
    assert "loss.margin must be a finite number" in err
    err = cli_error(capsys, REF, "loss={name: finite_probe, inner: {scale: .nan}}")
    assert "loss: inner.scale must be a finite number" in err
    recipe = load_recipe(REFERENCE_RECIPE, ["loss={name: finite_probe, inner: {scale: 2.0}}"])
    assert recipe.loss.inner.scale == 2.0


# ---- output_dir -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["''", "'  '"])
def test_an_empty_output_dir_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(capsys, REF, f"output_dir={value}")
    assert "output_dir: the path is empty; give a folder, or leave output_dir out" in err


def test_an_override_without_a_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_error(capsys, REF, "output_dir=")
    assert "override 'output_dir=' gives no value after '='; give one" in err
    assert "output_dir=null unsets the key" in err


def test_an_empty_output_dir_in_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty_dir.yaml"
    path.write_text(reference_text(output_dir='""'))
    err = cli_error(capsys, str(path))
    assert "output_dir: the path is empty" in err


def test_a_nul_character_is_refused_in_any_value_or_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nul.yaml"
    path.write_text(reference_text(output_dir='"runs/a\\0b"'))
    err = one_line_error(capsys, str(path))
    assert f"recipe '{path}': the value at output_dir contains a NUL character" in err
    path.write_text(reference_text(data__root='"da\\0ta"'))
    err = one_line_error(capsys, str(path))
    assert "the value at data.root contains a NUL character" in err
    path.write_text(reference_text(train='{"st\\0eps": 1}'))
    err = one_line_error(capsys, str(path))
    assert "the key 'st\\x00eps' in train contains a NUL character" in err


def test_the_recipe_model_itself_refuses_a_nul_in_output_dir() -> None:
    raw = yaml.safe_load(REFERENCE_RECIPE.read_text()) | {"output_dir": "runs/a\0b"}
    with pytest.raises(ValidationError, match="the path contains a NUL character"):
        recipe_model().model_validate(raw)


def test_errors_are_recipe_errors_for_the_python_api(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(RecipeError, match="is not a UTF-8 text recipe"):
        load_recipe(path)
