"""An export's config.json: read within bounds and checked before anything is built.

It names what to rebuild (a generator or a discriminator, nothing else), with which parameters,
the SHA-256 of the weights (without it nothing is loaded) and, for a component from another
package, that package, so a machine without it is told what to install.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Any

from gankit._version import __version__
from gankit.config.registry import REGISTRIES, Registry, RegistryError
from gankit.core.bounded import BoundedReadError, read_json_object, strict_int
from gankit.core.errors import ExportError, shown

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SHA256_KEY = "weights_sha256"
PLUGIN_KEY = "plugin"  # the package a component from outside gankit came from
EXPORT_KINDS = ("generator", "discriminator")  # what an export may hold
REEXPORT = "re-export the model with this gankit (gankit.save_model writes a complete config.json)"


def read_config(path: str | Path) -> dict[str, Any]:
    """The config.json of an export, read within the bounds of `core.bounded` and checked for
    the fields loading needs: a format version this gankit reads, a kind an export may hold
    (a generator or a discriminator), a name, params and the weights' SHA-256."""
    folder = Path(path)
    config_file = folder / CONFIG_FILE
    if not (config_file.exists() or config_file.is_symlink()):
        raise ExportError(
            f"no export at '{folder}': {config_file} not found. An export folder holds "
            f"{CONFIG_FILE} and {WEIGHTS_FILE} (e.g. runs/<name>/export/generator)."
        )
    try:
        config = read_json_object(_hub_blob(config_file), what="export config")
    except BoundedReadError as error:
        raise ExportError(f"{error}; {REEXPORT}") from None
    missing = [key for key in ("format_version", "kind", "name", "params") if key not in config]
    if missing:
        raise ExportError(f"{config_file} lacks {', '.join(missing)}; {REEXPORT}")
    version = config["format_version"]
    if not strict_int(version) or version < 1:
        raise ExportError(
            f"{config_file}: format_version is {shown(version)}, not a format version (a "
            f"whole number from 1); {REEXPORT}"
        )
    if version > FORMAT_VERSION:
        raise ExportError(
            f"{config_file} has format version {version}, newer than this gankit "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade gankit"
        )
    if config["kind"] not in EXPORT_KINDS:
        raise ExportError(
            f"{config_file}: kind {shown(config['kind'])} is not what an export holds; gankit "
            f"exports a {' or a '.join(EXPORT_KINDS)}, and loads nothing else"
        )
    kinds = {"name": str, "params": dict, "runtime": dict, PLUGIN_KEY: dict}
    wrong = [
        key for key, kind in kinds.items() if key in config and not isinstance(config[key], kind)
    ]
    if wrong:
        raise ExportError(f"{config_file}: {', '.join(wrong)} have the wrong type; {REEXPORT}")
    checksum = config.get(SHA256_KEY)
    if not isinstance(checksum, str) or len(checksum) != 64 or not _hex(checksum):
        found = "lacks" if checksum is None else "has no valid"
        raise ExportError(
            f"{config_file} {found} {SHA256_KEY} (the SHA-256 of {WEIGHTS_FILE}), so its weights "
            f"cannot be verified and gankit will not load them; {REEXPORT}"
        )
    return config


def _hub_blob(path: Path) -> Path:
    """The file a Hugging Face cache snapshot links to, when `path` is such a link: the one link
    gankit follows, and only into the blobs folder of the same cached repo."""
    snapshots = path.parent.parent
    if not path.is_symlink() or snapshots.name != "snapshots":
        return path
    target = Path(os.path.realpath(path))  # a loop of links stays a link, refused when read
    return target if target.parent == Path(os.path.realpath(snapshots.parent / "blobs")) else path


def _hex(text: str) -> bool:
    return all(char in string.hexdigits for char in text)


def registry_of(kind: str) -> Registry:
    """The registry of an export's kind (one of EXPORT_KINDS)."""
    return next(registry for registry in REGISTRIES.values() if registry.kind == kind)


# A distribution name as PEP 508 spells it, and a version; anything else is not echoed as advice.
_DISTRIBUTION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9.+!_-]{1,40}$")


def check_component(registry: Registry, config: dict[str, Any], folder: Path) -> None:
    """For a component this gankit does not know, name the package the export says it came
    from; without that record, the rebuild reports the unknown name."""
    source = config.get(PLUGIN_KEY)
    if not source:
        return
    try:
        registry.get(config["name"])
        return
    except RegistryError:
        pass
    distribution, version = source.get("distribution"), source.get("version")
    module = source.get("module")
    what = f"the {config['kind']} {shown(config['name'])} exported in '{folder}'"
    if isinstance(distribution, str) and _DISTRIBUTION.match(distribution):
        made = (
            f"; version {version} made this export"
            if isinstance(version, str) and _VERSION.match(version)
            else ""
        )
        raise ExportError(
            f"{what} comes from the package {distribution}, which is not installed here (or "
            f"no longer registers it): install it (pip install {distribution}{made}) and load "
            "again"
        )
    raise ExportError(
        f"{what} comes from the module {shown(module)}, which is not installed here (or no "
        "longer registers it): install the package that provides it and load again"
    )
