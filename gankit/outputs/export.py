"""Exports: a folder with `config.json` (what to build) and `model.safetensors` (the weights).

Loading never unpickles and needs no training code: the config names a registered component
and its parameters, the registry rebuilds it, and safetensors fills in the weights (strict).
Before anything is allocated, the weights are checked against the SHA-256 recorded at export
and the model the config describes (built on the meta device) against the file's header; after
loading, the weights are checked to be finite.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_safetensors_into
from safetensors.torch import save_model as save_safetensors_from
from torch import nn

from gankit._version import __version__
from gankit.components.models.base import Generator
from gankit.config.registry import Registry
from gankit.core.atomic import atomic_folder, remove_leftovers
from gankit.core.bounded import BoundedReadError, read_json_object
from gankit.core.errors import ExportError, GankitError
from gankit.core.sizes import TensorSpec, check_fits, meta_state, parameter_bytes
from gankit.outputs.card import CARD_FILE, SAMPLES_FILE, model_card, write_samples
from gankit.outputs.exportconfig import (
    CONFIG_FILE,
    EXPORT_KINDS,
    FORMAT_VERSION,
    PLUGIN_KEY,
    SHA256_KEY,
    WEIGHTS_FILE,
    check_component,
    read_config,
    registry_of,
)
from gankit.outputs.hub import resolve_export

EXPORT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, SAMPLES_FILE})
SHOWN = 4  # differing or non-finite tensors named in a message

_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class ExportWriteError(ExportError, OSError):
    """Writing an export failed in the OS (disk full, permission denied, ...); the folder
    that was at the path, if any, is intact. Also an OSError, with the original errno."""


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_replaceable(folder: Path) -> None:
    """Refuse (ExportError) to export to `folder` when something there is not a gankit export:
    replacing it would delete it."""
    choose = "choose another folder for the export (gankit replaces an export folder whole)"
    if folder.is_symlink():
        raise ExportError(f"'{folder}' is a symbolic link, not an export folder; {choose}")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ExportError(f"'{folder}' is a file, not an export folder; {choose}")
    try:
        names = sorted(entry.name for entry in folder.iterdir())
    except OSError as error:
        raise ExportError(f"cannot read '{folder}' ({error.strerror or error}); {choose}") from None
    foreign = [name for name in names if name not in EXPORT_FILES]
    if foreign:
        shown = ", ".join(foreign[:SHOWN]) + (", ..." if len(foreign) > SHOWN else "")
        raise ExportError(
            f"'{folder}' holds files that are not part of a gankit export ({shown}), which "
            f"exporting there would delete; {choose}, or move those files away"
        )
    if not names:
        return
    try:
        config = read_json_object(folder / CONFIG_FILE, what="export config")
    except BoundedReadError:
        config = None
    if config is None or "format_version" not in config:
        raise ExportError(
            f"'{folder}' is not a gankit export ({folder / CONFIG_FILE} is missing or has no "
            f"format_version), so gankit will not replace it; {choose}"
        )


def _write_failure(folder: Path, error: Exception, existed: bool) -> ExportWriteError:
    code = getattr(error, "errno", None)  # safetensors gives its OS error in the text only
    if code is None and (found := re.search(r"os error (\d+)", str(error))):
        code = int(found.group(1))
    reason = getattr(error, "strerror", None) or (
        os.strerror(code) if code else " ".join(str(error).split())[:300]
    )
    if code in (errno.ENOSPC, errno.EDQUOT):
        todo = "free disk space there and export again"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        todo = f"export to a folder you may write to, or fix the permissions of '{folder.parent}'"
    else:
        todo = "fix the cause and export again"
    kept = (
        f"the previous export at '{folder}' is intact"
        if existed
        else f"nothing was written at '{folder}'"
    )
    failure = ExportWriteError(
        f"could not write the export to '{folder}': {reason}; {kept}; {todo}"
    )
    failure.errno = code
    return failure


def save_model(
    model: nn.Module,
    path: str | Path,
    *,
    ema: bool = False,
    card: Mapping[str, Any] | None = None,
    **info: Any,
) -> Path:
    """Export a model built through a registry to the folder `path`, atomically.

    The folder holds config.json, model.safetensors, a model card (README.md, see
    `outputs/card.py`; `card` may add `recipe` and `metrics` to it) and, for a generator,
    samples.png. `info` adds fields to config.json (for example the training step). Returns the
    folder. An existing folder at `path` is replaced only when it is a gankit export
    (ExportError otherwise); a failed write (ExportWriteError) leaves it intact.
    """
    spec = getattr(model, "gankit_spec", None)
    if spec is None:
        raise ExportError(
            f"{type(model).__name__} was not built through a gankit registry, so its export "
            "could not be rebuilt; build it with e.g. GENERATORS.build({'name': ...}, ...)"
        )
    if spec["kind"] not in EXPORT_KINDS:
        raise ExportError(
            f"a {spec['kind']} is not exported; gankit exports a {' or a '.join(EXPORT_KINDS)}"
        )
    folder = Path(path)
    check_replaceable(folder)
    config = {
        "format_version": FORMAT_VERSION,
        "gankit_version": __version__,
        **spec,
        "ema": ema,
        **info,
    }
    source = registry_of(spec["kind"]).plugin(spec["name"])
    if source is not None:
        config[PLUGIN_KEY] = source
    existed = folder.exists()
    try:
        remove_leftovers(folder.parent, folder.name)
        existed = folder.exists()  # a previous export cut short may have been put back
        with atomic_folder(folder) as staging:
            save_safetensors_from(
                model,
                str(staging / WEIGHTS_FILE),
                metadata={"kind": spec["kind"], "name": spec["name"]},
            )
            config[SHA256_KEY] = file_sha256(staging / WEIGHTS_FILE)
            (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
            pictured = write_samples(model, staging / SAMPLES_FILE)
            text = model_card(config, samples=pictured, **(card or {}))
            (staging / CARD_FILE).write_text(text, encoding="utf-8")
    except (OSError, SafetensorError) as error:
        raise _write_failure(folder, error, existed) from None
    return folder


def _corrupt(weights: Path, error: Exception) -> ExportError:
    reason = " ".join(str(error).split())[:500]
    return ExportError(
        f"{weights} is corrupt, truncated or does not match {CONFIG_FILE} ({reason}); "
        "re-export the model"
    )


def _check_checksum(weights: Path, config: dict[str, Any]) -> None:
    expected = config[SHA256_KEY]  # read_config made sure it is there
    try:
        actual = file_sha256(weights)
    except OSError as error:
        raise ExportError(
            f"cannot read {weights} ({error.strerror or error}); check its permissions"
        ) from None
    if actual != expected.lower():
        raise ExportError(
            f"{weights} has been altered or corrupted since export (corrupt, truncated or "
            f"replaced): its SHA-256 is {actual[:16]}..., {CONFIG_FILE} records "
            f"{expected[:16]}...; restore the file from a good copy or re-export the model"
        )


def _header(weights: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Names, shapes and dtypes of a safetensors file, read from its header only."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {
                key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype())
                for key in handle.keys()  # noqa: SIM118 (a safe_open handle has no __iter__)
            }
    except (SafetensorError, OSError, ValueError) as error:
        raise _corrupt(weights, error) from None


def _family(code: str) -> str:
    """A safetensors dtype's kind: loading converts floats to floats (e.g. an F16 file into an
    F32 model) and integers to integers, so only a change of kind is a mismatch."""
    return "float" if code.startswith(("F", "BF")) else "int" if code[:1] in ("I", "U") else code


def _differences(expected: dict[str, TensorSpec], found: dict[str, tuple]) -> list[str]:
    differing = []
    for name in sorted(expected.keys() | found.keys()):
        if name not in found:
            differing.append(f"{name} (in the config's model, not in the file)")
        elif name not in expected:
            differing.append(f"{name} (in the file, not in the config's model)")
        else:
            shape, dtype = expected[name]
            file_shape, file_dtype = found[name]
            want_dtype = _SAFETENSORS_DTYPES.get(dtype, file_dtype)
            if shape != file_shape or _family(want_dtype) != _family(file_dtype):
                differing.append(
                    f"{name}: config {list(shape)} {want_dtype}, file {list(file_shape)} "
                    f"{file_dtype}"
                )
    return differing


def _check_sizes(
    registry: Registry, config: dict[str, Any], folder: Path, device: torch.device
) -> None:
    """Compare the model the config describes with the weights file, and check it fits, before
    building it for real."""
    try:
        expected = meta_state(
            lambda: registry.build(
                {"name": config["name"], **config["params"]}, **config.get("runtime", {})
            )
        )
    except GankitError:  # the real build below reports it
        return
    if expected is None:
        return
    weights = folder / WEIGHTS_FILE
    differing = _differences(expected, _header(weights))
    if differing:
        shown = "; ".join(differing[:SHOWN])
        more = f" (and {len(differing) - SHOWN} more)" if len(differing) > SHOWN else ""
        raise ExportError(
            f"{weights} does not match {folder / CONFIG_FILE}: {len(differing)} tensors differ "
            f"between the {config['kind']} the config describes and the file: {shown}{more}. "
            f"Was {CONFIG_FILE} edited? Restore the {CONFIG_FILE} exported with these weights, "
            "or re-export the model"
        )
    nbytes = parameter_bytes(expected)
    what = f"the {config['kind']} exported in '{folder}'"
    hint = f"check the sizes in {folder / CONFIG_FILE} or load it on a machine with more memory"
    for place in {torch.device("cpu"), device}:
        check_fits(nbytes, place, what, hint=hint)


def _check_finite(model: nn.Module, weights: Path) -> None:
    bad = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() or tensor.is_complex():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f"{name} ({count} of {tensor.numel()})")
    if bad:
        shown = ", ".join(bad[:SHOWN]) + (
            f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        )
        raise ExportError(
            f"{weights} holds NaN or infinite values in {len(bad)} tensors: {shown}; the "
            "training diverged before this export. Export an earlier checkpoint or retrain "
            "(e.g. with a lower learning rate); to load it anyway from Python, pass "
            "allow_nonfinite=True"
        )


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    allow_nonfinite: bool = False,
    revision: str | None = None,
) -> nn.Module:
    """Rebuild an exported model (any kind) in eval mode, with its weights loaded strictly.

    `path` is an export folder or a Hugging Face Hub repo id ('user/repo', at `revision`),
    downloaded into the Hub cache (offline: taken from it). Refused (ExportError): weights that
    differ from the checksum recorded at export, a config whose model does not match the weights
    file or does not fit in memory, and weights holding NaN or inf unless `allow_nonfinite`.
    """
    folder = resolve_export(path, revision=revision)
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ExportError(f"device {str(device)!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExportError("device cuda was asked for, but no CUDA GPU is available; use cpu")
    config = read_config(folder)
    registry = registry_of(config["kind"])
    check_component(registry, config, folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ExportError(f"{weights} not found; the export is incomplete, re-export the model")
    _check_checksum(weights, config)
    _check_sizes(registry, config, folder, device)
    try:
        model = registry.build(
            {"name": config["name"], **config["params"]}, **config.get("runtime", {})
        )
    except GankitError as error:
        raise ExportError(f"cannot rebuild the model exported in '{folder}': {error}") from None
    try:
        load_safetensors_into(model, str(weights), strict=True, device=str(device))
    except (SafetensorError, RuntimeError, OSError) as error:
        raise _corrupt(weights, error) from None
    if not allow_nonfinite:
        _check_finite(model, weights)
    return model.to(device).eval()


def load_generator(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    allow_nonfinite: bool = False,
    revision: str | None = None,
) -> Generator:
    """Load an exported generator: `G = load_generator(path); images = G.sample(16)`.

    `path`: an export folder or a Hub repo id ('user/repo'). Refuses what `load_model` refuses
    (NaN/inf weights unless `allow_nonfinite`)."""
    model = load_model(path, device=device, allow_nonfinite=allow_nonfinite, revision=revision)
    if not isinstance(model, Generator):
        raise ExportError(
            f"'{path}' holds a {type(model).__name__}, not a generator; "
            "point at the export's generator folder"
        )
    return model
