"""How big a model is before it exists, and whether it fits the device it is meant for.

`meta_state` builds a model on PyTorch's meta device (shapes and dtypes, no memory), so a
config that asks for a huge network is caught before anything is allocated:

    state = meta_state(lambda: GENERATORS.build(spec, image_shape=(1, 28, 28)))
    if state is not None:
        check_fits(parameter_bytes(state), "cpu", "the generator of recipe 'mnist_dcgan'")

Training holds the parameters, their gradients and Adam's two moments: about
`4 * parameter_bytes(state)`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

import torch
from torch import nn

from gankit.core.errors import GankitError

TensorSpec = tuple[tuple[int, ...], torch.dtype]
GIB = 2**30


def meta_state(build: Callable[[], nn.Module]) -> dict[str, TensorSpec] | None:
    """The names, shapes and dtypes of the state_dict that `build()` would make, from a build on
    the meta device; None when the model cannot be built there.

    A tensor shared under several names appears once, under the first name in sorted order (the
    one safetensors keeps). A GankitError from `build` (an invalid config) propagates.
    """
    try:
        with torch.device("meta"):
            model = build()
        tensors = model.state_dict(keep_vars=True)
    except GankitError:
        raise
    except Exception:
        return None
    first_name: dict[int, str] = {}
    for name in sorted(tensors):
        first_name.setdefault(id(tensors[name]), name)
    return {
        name: (tuple(tensors[name].shape), tensors[name].dtype)
        for name in sorted(first_name.values())
    }


def parameter_bytes(state: Mapping[str, TensorSpec]) -> int:
    """Bytes the tensors of `state` (as `meta_state` gives it) take in memory."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in state.values())


def available_bytes(device: str | torch.device) -> int | None:
    """Memory the device offers: a CPU's physical memory, a CUDA GPU's free memory; None when
    unknown (other devices, or no CUDA)."""
    device = torch.device(device)
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return free
    return None


def gib(nbytes: int) -> str:
    """Bytes as GiB for a message: "30.5 GiB", or three digits below 0.1 GiB."""
    value = nbytes / GIB
    return f"{value:,.1f} GiB" if value >= 0.1 else f"{value:.3g} GiB"


def check_fits(
    nbytes: int,
    device: str | torch.device,
    what: str,
    *,
    hint: str = "make it smaller (e.g. a smaller width) or use a device with more memory",
) -> None:
    """Refuse (GankitError) `what`, which needs `nbytes`, when the device has less memory.

    `what` names the thing and where it comes from, e.g. "the generator exported in 'g'";
    `hint` says what to do instead.
    """
    available = available_bytes(device)
    if available is None or nbytes <= available:
        return
    device = torch.device(device)
    where = "physical memory" if device.type == "cpu" else f"free memory on {device}"
    raise GankitError(
        f"{what} needs about {gib(nbytes)}, more than the {gib(available)} of {where}; {hint}"
    )


def check_training_fits(
    builds: Mapping[str, Callable[[], nn.Module]], device: str | torch.device, recipe: str
) -> None:
    """Refuse networks whose training state does not fit the device: their weights, gradients
    and Adam's two moments (4x the weights), estimated from meta builds before anything is
    allocated. `builds` maps a section name ("generator") to a function that builds it."""
    sizes = {}
    for section, build in builds.items():
        state = meta_state(build)
        if state is not None:
            sizes[section] = 4 * parameter_bytes(state)
    if sizes:
        parts = ", ".join(f"{section} {gib(nbytes)}" for section, nbytes in sizes.items())
        check_fits(
            sum(sizes.values()),
            device,
            f"training recipe '{recipe}' (weights, gradients and Adam's moments: {parts})",
            hint="make the networks smaller (e.g. generator.width, discriminator.width) or "
            "train on a device with more memory",
        )
