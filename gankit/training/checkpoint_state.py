"""What a checkpoint holds, file by file, and how gankit writes and reads each one: no pickle.

Format 2, written by gankit itself (`state_files`: tensors as safetensors, the rest as JSON):

    generator.safetensors, discriminator.safetensors   the networks' weights (state_dict names)
    optimizer_generator.*, optimizer_discriminator.*   both optimizers' state_dicts
    lr_schedules.*                                     the learning-rate schedules' (a list)
    grad_scaler.*                                      the fp16 loss scaler's, or null
    run_state.*                                        resume.RunState: counters, loss sums,
                                                       schedule, EMA, regularizers, augmentation,
                                                       data position, fixed noise, W&B run id
    rng_<rank>.*                                       each process's RNG states (Python, NumPy,
                                                       torch, CUDA) and Accelerate's step

(`*`: a `.json` and a `.safetensors` file), plus recipe.yaml and manifest.json (checkpoint.py).
The main process writes everything but the RNG states, which every process writes for itself.
Reading decodes and checks every file before anything is applied to the run.

Format 1 is what `accelerator.save_state` wrote: weights as safetensors, everything else as
pickles, which can run code when loaded. `load_pickled` reads it with Accelerate, and is called
only when the recipe says it trusts the checkpoint (`train.trust_pickled_checkpoint`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import nn

from gankit.core.bounded import strict_int
from gankit.core.errors import cut, shown
from gankit.training.state_files import (
    StateFileError,
    file_names,
    load_state,
    read_tensors,
    save_state,
)

FORMAT = 2
PICKLED_FORMAT = 1  # accelerator.save_state's layout; manifests of it carry no format
ROLES = ("generator", "discriminator")
WEIGHTS = {role: f"{role}.safetensors" for role in ROLES}
OPTIMIZERS = {role: f"optimizer_{role}" for role in ROLES}
LR_SCHEDULES, GRAD_SCALER, RUN_STATE = "lr_schedules", "grad_scaler", "run_state"
MAX_PROCESSES = 1_000_000
RNG_FILE = re.compile(r"^rng_(0|[1-9][0-9]{0,5})\.(json|safetensors)$")
PICKLE_SUFFIXES = (".pkl", ".bin", ".pt", ".pth", ".pickle")


def rng_name(rank: int) -> str:
    """The state name of process `rank`'s RNG states."""
    return f"rng_{rank}"


def required_files() -> set[str]:
    """The files (besides recipe.yaml and the manifest) every checkpoint of this format has."""
    states = (*OPTIMIZERS.values(), LR_SCHEDULES, GRAD_SCALER, RUN_STATE, rng_name(0))
    return {*WEIGHTS.values(), *(file for name in states for file in file_names(name))}


def format_allows(name: str) -> bool:
    """Whether a checkpoint of this format may hold a file named `name` (the manifest aside)."""
    return name in required_files() or RNG_FILE.match(name) is not None


class Resumable(Protocol):
    """What the run state a checkpoint carries offers (resume.RunState)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def step_of(self, state: dict[str, Any]) -> int: ...


@dataclass
class Checkpointed:
    """The objects a checkpoint saves and restores: the prepared networks and optimizers (by
    role), the learning-rate schedules and the run state."""

    accelerator: Accelerator
    networks: dict[str, nn.Module]
    optimizers: dict[str, Any]
    lr_schedules: list[Any]
    run_state: Resumable

    def register_pickled(self) -> None:
        """Register the objects format 1 kept as custom_checkpoint_N.pkl (in this order) with
        Accelerate, so that `load_pickled` finds them."""
        self.accelerator.register_for_checkpointing(self.run_state, *self.lr_schedules)


def write(folder: Path, contents: Checkpointed) -> None:
    """Write this process's part of a checkpoint into `folder`: the main process writes
    everything but the RNG states, every process its own RNG states."""
    accelerator = contents.accelerator
    if accelerator.is_main_process:
        for role, network in contents.networks.items():
            state = accelerator.unwrap_model(network).state_dict()
            tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
            save_file(tensors, str(folder / WEIGHTS[role]), metadata={"format": "pt"})
        for role, optimizer in contents.optimizers.items():
            save_state(folder, OPTIMIZERS[role], optimizer.state_dict())
        save_state(folder, LR_SCHEDULES, [s.state_dict() for s in contents.lr_schedules])
        scaler = accelerator.scaler
        save_state(folder, GRAD_SCALER, None if scaler is None else scaler.state_dict())
        save_state(folder, RUN_STATE, contents.run_state.state_dict())
    save_state(folder, rng_name(accelerator.process_index), rng_states(accelerator))


def rng_states(accelerator: Accelerator) -> dict[str, Any]:
    """This process's RNG states, as Accelerate saved them: Python's, NumPy's, torch's CPU and
    CUDA generators; and Accelerate's step counter."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "accelerate_step": accelerator.step,
    }


def set_rng_states(state: dict[str, Any], accelerator: Accelerator) -> None:
    """Restore what `rng_states` gave (a malformed state raises TypeError or ValueError)."""
    numpy_state = state["numpy"]
    keys = numpy_state["keys"]
    if (
        keys.dtype != torch.int64
        or keys.dim() != 1
        or not bool(((keys >= 0) & (keys < 2**32)).all())
    ):
        raise ValueError("NumPy's generator keys are not 32-bit unsigned integers")
    random.setstate(state["python"])
    np.random.set_state(
        (
            numpy_state["kind"],
            keys.numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda)[: torch.cuda.device_count()])
    step = state["accelerate_step"]
    if not (isinstance(step, int) and not isinstance(step, bool)):
        raise TypeError("Accelerate's step is not an int")
    accelerator.step = step


@dataclass
class _Read:
    """A checkpoint's files, decoded and checked, not yet applied."""

    weights: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, Any]
    lr_schedules: list[Any]
    grad_scaler: Any
    run_state: dict[str, Any]
    rng: dict[str, Any] | None


def _bad(folder: Path, name: str, what: str) -> StateFileError:
    return StateFileError(
        f"{folder / name} {what}; it is not what gankit wrote there, or it was written for "
        "another run: resume with the recipe and gankit version that wrote it, or from an "
        "earlier checkpoint"
    )


def _read(folder: Path, contents: Checkpointed, step: int, listed: set[str]) -> _Read:
    """Decode every file of a verified checkpoint and check how they fit together."""
    weights = {role: read_tensors(folder / WEIGHTS[role], what="checkpoint file") for role in ROLES}
    optimizers = {role: load_state(folder, OPTIMIZERS[role]) for role in ROLES}
    for role, state in optimizers.items():
        if not (isinstance(state, dict) and {"state", "param_groups"} <= state.keys()):
            raise _bad(folder, file_names(OPTIMIZERS[role])[0], "is not an optimizer's state")
    schedules = load_state(folder, LR_SCHEDULES)
    name = file_names(LR_SCHEDULES)[0]
    if not isinstance(schedules, list):
        raise _bad(folder, name, "is not a list of learning-rate schedules")
    if len(schedules) != len(contents.lr_schedules):
        raise _bad(
            folder,
            name,
            f"holds {len(schedules)} learning-rate schedules where this run has "
            f"{len(contents.lr_schedules)} (adding or removing a schedule is not resumable)",
        )
    run_state = load_state(folder, RUN_STATE)
    name = file_names(RUN_STATE)[0]
    try:
        saved_step, processes = contents.run_state.step_of(run_state), run_state["processes"]
    except (KeyError, TypeError, AttributeError):
        raise _bad(folder, name, "is not a run state") from None
    if not strict_int(saved_step) or saved_step != step:
        raise _bad(folder, name, f"is at step {shown(saved_step)}, its manifest at {step}")
    if not (strict_int(processes) and 1 <= processes <= MAX_PROCESSES):
        raise _bad(folder, name, f"names {shown(processes)} processes")
    for rank in range(processes):
        missing = [f for f in file_names(rng_name(rank)) if f not in listed]
        if missing:
            raise _bad(
                folder, missing[0], f"is missing; {name} says {processes} processes wrote it"
            )
    rank = contents.accelerator.process_index
    rng = load_state(folder, rng_name(rank)) if file_names(rng_name(rank))[0] in listed else None
    return _Read(weights, optimizers, schedules, load_state(folder, GRAD_SCALER), run_state, rng)


def read(folder: Path, contents: Checkpointed, step: int, listed: set[str]) -> None:
    """Restore `contents` from the verified checkpoint `folder` of `step` (`listed`: the files
    its manifest lists). Every file is decoded and checked first; a file that is malformed or
    does not fit this run is a StateFileError that names it."""
    loaded = _read(folder, contents, step, listed)
    accelerator = contents.accelerator

    def apply(name: str, load: Any, *args: Any) -> None:
        try:
            load(*args)
        except Exception as error:  # a structure torch or gankit refuses: name the file
            reason = cut(" ".join(str(error).split()), 240)
            raise _bad(folder, name, f"does not fit ({type(error).__name__}: {reason})") from None

    for role in ROLES:
        network = accelerator.unwrap_model(contents.networks[role])
        apply(WEIGHTS[role], network.load_state_dict, loaded.weights[role])
        optimizer = contents.optimizers[role]
        apply(file_names(OPTIMIZERS[role])[0], optimizer.load_state_dict, loaded.optimizers[role])
    for schedule, state in zip(contents.lr_schedules, loaded.lr_schedules, strict=True):
        apply(file_names(LR_SCHEDULES)[0], schedule.load_state_dict, state)
    if accelerator.scaler is not None and loaded.grad_scaler is not None:
        apply(file_names(GRAD_SCALER)[0], accelerator.scaler.load_state_dict, loaded.grad_scaler)
    apply(file_names(RUN_STATE)[0], contents.run_state.load_state_dict, loaded.run_state)
    if loaded.rng is not None:  # a process the checkpoint's run did not have keeps its own
        rng_file = file_names(rng_name(accelerator.process_index))[0]
        apply(rng_file, set_rng_states, loaded.rng, accelerator)


def pickles_in(names: set[str]) -> list[str]:
    """The files among `names` that hold pickles (format 1's .pkl, .bin and .pt files)."""
    return sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))


def load_pickled(folder: Path, contents: Checkpointed) -> None:
    """Load a checkpoint of format 1 with `accelerator.load_state`, which unpickles its files:
    only for checkpoints the user trusts (`train.trust_pickled_checkpoint`)."""
    contents.accelerator.load_state(str(folder))
