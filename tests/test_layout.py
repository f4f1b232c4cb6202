"""The layout shows the architecture: every module lives in a layer package, `lint-imports`
(pyproject.toml) checks that layers import only downwards, and CONTRIBUTING's map names every
module."""

from __future__ import annotations

import re

import tomllib

from conftest import ROOT

TOP_LEVEL = {"__init__", "__main__", "_version"}


def layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return contract["layers"]


def modules() -> set[str]:
    """Every module file of the package, as a path relative to `gankit/`."""
    return {str(path.relative_to(ROOT / "gankit")) for path in (ROOT / "gankit").rglob("*.py")}


def test_every_module_lives_in_a_layer_the_import_contract_orders() -> None:
    packages = {name.removeprefix("gankit.") for name in layers()}
    stray = {
        module
        for module in modules()
        if module.split("/")[0] not in packages and module.removesuffix(".py") not in TOP_LEVEL
    }
    assert stray == set(), "put these modules in a layer package (or add a layer to pyproject)"
    gankit = ROOT / "gankit"
    on_disk = {path.name for path in gankit.iterdir() if (path / "__init__.py").is_file()}
    assert on_disk == packages, "pyproject's layers contract and gankit/'s packages differ"


def test_contributing_maps_every_module() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    block = text[text.index("## Layout") :].split("```")[1]
    mapped = set()
    package = ""
    for line in block.splitlines():
        if match := re.match(r"  (\w+)/\s", line):
            package = match.group(1)
        elif match := re.match(r"    ([\w/]+\.py)\s", line):
            mapped.add(f"{package}/{match.group(1)}")
        elif match := re.match(r"  (\w+\.py)\s", line):
            mapped.add(match.group(1))
    documented = {m for m in modules() if not m.endswith("__init__.py") and m != "_version.py"}
    assert documented - mapped == set(), "describe these modules in CONTRIBUTING.md's Layout"
    assert mapped - documented == set(), "CONTRIBUTING.md's Layout names modules that are gone"
