"""Exports: a folder with `config.json` (what to build) and `model.safetensors` (the weights).

Loading never unpickles and needs no training code: the config names a registered component
and its parameters, the registry rebuilds it, and safetensors fills in the weights (strict).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors_into
from safetensors.torch import save_model as save_safetensors_from
from torch import nn

from gankit._version import __version__
from gankit.atomic import atomic_folder
from gankit.errors import ExportError, GankitError
from gankit.models.base import Generator
from gankit.registry import REGISTRIES

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_model(model: nn.Module, path: str | Path, *, ema: bool = False, **info: Any) -> Path:
    """Export a model built through a registry to the folder `path`, atomically.

    `info` adds fields to config.json (for example the training step). Returns the folder.
    """
    spec = getattr(model, "gankit_spec", None)
    if spec is None:
        raise ExportError(
            f"{type(model).__name__} was not built through a gankit registry, so its export "
            "could not be rebuilt; build it with e.g. GENERATORS.build({'name': ...}, ...)"
        )
    config = {
        "format_version": FORMAT_VERSION,
        "gankit_version": __version__,
        **spec,
        "ema": ema,
        **info,
    }
    with atomic_folder(path) as staging:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_safetensors_from(
            model,
            str(staging / WEIGHTS_FILE),
            metadata={"kind": spec["kind"], "name": spec["name"]},
        )
    return Path(path)


def read_config(path: str | Path) -> dict[str, Any]:
    """The config.json of an export, checked for the fields loading needs."""
    folder = Path(path)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ExportError(
            f"no export at '{folder}': {config_file} not found. An export folder holds "
            f"{CONFIG_FILE} and {WEIGHTS_FILE} (e.g. runs/<name>/export/generator)."
        )
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(
            f"{config_file} is not valid JSON ({error}); re-export the model"
        ) from None
    missing = [key for key in ("format_version", "kind", "name", "params") if key not in config]
    if missing:
        raise ExportError(f"{config_file} lacks {', '.join(missing)}; re-export the model")
    kinds = {"format_version": int, "kind": str, "name": str, "params": dict, "runtime": dict}
    wrong = [
        key for key, kind in kinds.items() if key in config and not isinstance(config[key], kind)
    ]
    if wrong:
        raise ExportError(
            f"{config_file}: {', '.join(wrong)} have the wrong type; re-export the model"
        )
    if config["format_version"] > FORMAT_VERSION:
        raise ExportError(
            f"{config_file} has format version {config['format_version']}, newer than this gankit "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade gankit"
        )
    return config


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported model (any kind) in eval mode, with its weights loaded strictly."""
    folder = Path(path)
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ExportError(f"device {str(device)!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExportError("device cuda was asked for, but no CUDA GPU is available; use cpu")
    config = read_config(folder)
    registry = next((r for r in REGISTRIES.values() if r.kind == config["kind"]), None)
    if registry is None:
        raise ExportError(f"{folder / CONFIG_FILE}: unknown kind {config['kind']!r}")
    try:
        model = registry.build(
            {"name": config["name"], **config["params"]}, **config.get("runtime", {})
        )
    except GankitError as error:
        raise ExportError(f"cannot rebuild the model exported in '{folder}': {error}") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ExportError(f"{weights} not found; the export is incomplete, re-export the model")
    try:
        load_safetensors_into(model, str(weights), strict=True, device=str(device))
    except (SafetensorError, RuntimeError, OSError) as error:
        reason = " ".join(str(error).split())[:500]
        raise ExportError(
            f"{weights} is corrupt, truncated or does not match {CONFIG_FILE} ({reason}); "
            "re-export the model"
        ) from None
    return model.to(device).eval()


def load_generator(path: str | Path, *, device: str | torch.device = "cpu") -> Generator:
    """Load an exported generator: `G = load_generator(path); images = G.sample(16)`."""
    model = load_model(path, device=device)
    if not isinstance(model, Generator):
        raise ExportError(
            f"'{path}' holds a {type(model).__name__}, not a generator; "
            "point at the export's generator folder"
        )
    return model
