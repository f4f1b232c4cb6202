"""The `gankit` command as people run it: real subprocesses, exit codes, stderr, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gankit.components.data import MNIST_FILES
from gankit.config.listing import TABLE_END, TABLE_START, readme_table, with_table

from conftest import REFERENCE_RECIPE, ROOT, TINY

REF = str(REFERENCE_RECIPE)
# The tiny training overrides, minus the real MNIST folder (each test points at its own).
TINY_NO_ROOT = [item for item in TINY if not item.startswith("data.root=")]


def gankit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(cwd),
    }
    return subprocess.run(
        [sys.executable, "-m", "gankit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], *hints: str) -> None:
    """Exit code 2, one `gankit: error:` message carrying every hint, and no traceback."""
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, report
    assert result.stderr.startswith("gankit: error:"), report
    assert "Traceback" not in result.stderr + result.stdout, report
    for hint in hints:
        assert hint in result.stderr, f"missing {hint!r} in\n{report}"


def train_args(tmp_path: Path, *overrides: str) -> list[str]:
    """`train` on the reference recipe, kept tiny and inside tmp_path should it ever start."""
    empty = tmp_path / "no_data"
    empty.mkdir(exist_ok=True)
    return [
        "train",
        REF,
        *TINY_NO_ROOT,
        f"data.root={empty}",
        f"output_dir={tmp_path / 'run'}",
        *overrides,
    ]


def broken_yaml(tmp_path: Path) -> list[str]:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ngenerator:\n  name: dcgan28\n  z_dim: 100\n width: 64\n")
    return ["validate", str(path)]


CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    "unknown-component": (
        lambda tmp: train_args(tmp, "generator.name=dcgan_28"),
        [
            "unknown generator 'dcgan_28' at generator.name; did you mean 'dcgan28'?",
            "available: dcgan, dcgan28, mlp",
            "[set by override 'generator.name=dcgan_28']",
        ],
    ),
    "unknown-key": (
        lambda tmp: ["validate", REF, "train.stepz=5"],
        ["unknown key train.stepz; did you mean 'steps'?", "valid keys here: steps"],
    ),
    "wrong-type": (
        lambda tmp: ["validate", REF, "generator.z_dim=abc"],
        ["generator.z_dim:", "valid integer", "[set by override 'generator.z_dim=abc']"],
    ),
    "negative-lr": (
        lambda tmp: train_args(tmp, "optim.generator.lr=-1e-4"),
        ["optim.generator.lr:", "greater than 0", "[set by override 'optim.generator.lr=-1e-4']"],
    ),
    "missing-recipe-file": (
        lambda tmp: ["validate", str(tmp / "nope.yaml")],
        ["recipe file '", "nope.yaml' not found", "by name: cifar10_dcgan, "],
    ),
    "yaml-syntax-error": (
        broken_yaml,
        ["broken.yaml' is not valid YAML at line 5, column 2", "indentation"],
    ),
    "override-below-a-value": (
        lambda tmp: ["validate", REF, "train.steps.x=1"],
        ["override 'train.steps.x=1': train.steps is a value (60000), not a section"],
    ),
    "override-of-unknown-section": (
        lambda tmp: ["validate", REF, "trian.steps=5"],
        ["unknown key trian; did you mean 'train'?", "[set by override 'trian.steps=5']"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recipe_errors_are_one_clean_message(case: str, tmp_path: Path) -> None:
    make_args, hints = CASES[case]
    result = gankit(*make_args(tmp_path), cwd=tmp_path)
    assert_clean_error(result, *hints)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_missing_dataset_folder_is_one_clean_message(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "run"
    result = gankit(
        "train",
        REF,
        *TINY_NO_ROOT,
        f"data.root={empty}",
        "data.download=false",
        f"output_dir={run}",
        "train.steps=2",
        cwd=tmp_path,
    )
    raw = empty.resolve() / "MNIST" / "raw"
    assert_clean_error(result, f"MNIST files missing in {raw}", *MNIST_FILES, "data.download")
    assert not (run / "metrics.jsonl").exists()
    assert not list(tmp_path.rglob("metrics.jsonl"))
    assert not (run / "recipe.yaml").exists()
    assert not (run / "samples").exists()


def test_validate_schema_prints_json(tmp_path: Path) -> None:
    result = gankit("validate", "--schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    for section in ("data", "generator", "discriminator", "loss", "schedule", "optim", "train"):
        assert section in schema["properties"]


def test_list_shows_components_with_parameters_and_defaults(tmp_path: Path) -> None:
    result = gankit("list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in (
        "generators (generator.name):",
        "discriminators (discriminator.name):",
        "losses (loss.name):",
        "schedules (schedule.name):",
        "datasets (data.name):",
    ):
        assert heading in out
    lines = [line.strip() for line in out.splitlines()]
    for name in ("dcgan28", "non_saturating", "alternating", "mnist"):
        assert any(line.split()[:1] == [name] for line in lines), f"{name} not listed:\n{out}"
    for parameter in (
        "z_dim: int = 100",
        "width: int = 64",
        "noise: Literal['uniform', 'normal'] = 'uniform'",
        "d_steps: int = 1",
        "g_steps: int = 1",
        "root: str = 'data'",
        "download: bool = True",
    ):
        assert any(line.startswith(parameter) for line in lines), f"{parameter!r} missing:\n{out}"
    # every component's summary starts in one column, past the longest name
    rows = [re.match(r"  (\S+) +", line) for line in out.splitlines() if re.match(r"  \S", line)]
    assert len({row.end() for row in rows}) == 1, out
    assert all(row.end() > len(row.group(1)) + 2 for row in rows)
    # parameters are listed under their own component
    generators, rest = out.split("discriminators (discriminator.name):")
    assert "z_dim: int = 100" in generators and "z_dim" not in rest
    assert "d_steps: int = 1" in rest.split("datasets (data.name):")[0]


def test_readme_component_table_is_gankit_list_markdown(tmp_path: Path) -> None:
    result = gankit("list", "--markdown", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| section | name | parameters (default) |\n")
    assert "| `generator` | `dcgan28` | `bn_momentum` (0.1: torch momentum" in result.stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table(readme) == result.stdout, (
        "README's component table differs from `gankit list --markdown`; regenerate it with "
        "GANKIT_NO_PLUGINS=1 python -m gankit.config.listing README.md"
    )


def test_the_readme_table_is_rewritten_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{TABLE_START}| old |\n{TABLE_END}\nrest\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "gankit.config.listing", str(readme)],
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"# intro\n\n{TABLE_START}| section | name |")
    assert text.endswith(f"{TABLE_END}\nrest\n") and "| old |" not in text
    assert readme_table(text) == gankit("list", "--markdown", cwd=tmp_path).stdout
    assert with_table(text, "| new |\n") == f"# intro\n\n{TABLE_START}| new |\n{TABLE_END}\nrest\n"
    with pytest.raises(ValueError, match="no <!-- components:start"):
        readme_table("# no table here\n")


def test_version_and_python_dash_m(tmp_path: Path) -> None:
    import gankit as package

    version = gankit("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"gankit {package.__version__}"
    listed = subprocess.run(
        [sys.executable, "-m", "gankit", "list"], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and "generators (generator.name):" in listed.stdout
    missing = gankit("train", cwd=tmp_path)  # overrides are optional: only the recipe is named
    assert missing.returncode == 2
    assert missing.stderr == (
        "gankit train: error: the following arguments are required: recipe "
        "(see gankit train --help)\n"
    )


@pytest.mark.parametrize("seed", [str(2**32), str(2**64)])
def test_a_seed_out_of_range_names_its_flag(capsys, seed: str) -> None:
    """torch and numpy take seeds below 2**32 alike: a larger one is refused at the flag that
    gave it (the recipe's train.seed, a command's --seed), not where it overflows."""
    from gankit.cli import main

    assert main(["validate", "-q", REF, f"train.seed={seed}"]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 and problems[0].startswith("  - train.seed: Input should be ")
    for command in (["sample", "some/export", "--out", "x.png"], ["eval", "some/export"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--seed", seed])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"error: argument --seed: {seed} is too " in err and "4,294,967,295" in err
