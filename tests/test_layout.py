"""The import direction is checked by `lint-imports` (pyproject.toml); these keep its
contracts complete as modules are added."""

from __future__ import annotations

import tomllib

from conftest import ROOT


def contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["name"]: contract for contract in config["contracts"]}


def test_every_library_module_is_kept_from_importing_the_shell() -> None:
    modules = {
        f"gankit.{path.stem}"
        for path in (ROOT / "gankit").glob("*.py")
        if path.stem not in ("__init__", "__main__", "cli")
    } | {
        f"gankit.{path.name}"
        for path in (ROOT / "gankit").iterdir()
        if (path / "__init__.py").is_file()
    }
    listed = set(contracts()["The library never imports its command-line shell"]["source_modules"])
    assert modules - listed == set(), "add these modules to the contract in pyproject.toml"
    assert listed - modules == set(), "these modules no longer exist"
