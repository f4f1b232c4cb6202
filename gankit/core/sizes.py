"""How big things are before they exist, the upper bounds of every size a user sets, and
whether something fits the memory that is available now.

`meta_state` builds a model on PyTorch's meta device (shapes and dtypes, no memory), so a
config that asks for a huge network is caught before anything is allocated:

    state = meta_state(lambda: GENERATORS.build(spec, image_shape=(1, 28, 28)))
    if state is not None:
        check_fits(parameter_bytes(state), "cpu", "the generator of recipe 'mnist_dcgan'")

Training holds the parameters, their gradients and Adam's two moments: about
`4 * parameter_bytes(state)`.

The `MAX_*` bounds are fixed sanity caps (recipes carry them as pydantic `le=`, the command line
as argparse types); what depends on the machine (memory, cores) is checked against it when the
thing is about to be made: `check_fits` against `available_bytes`, `max_workers` against the
cores this process may use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gankit.core.errors import GankitError

TensorSpec = tuple[tuple[int, ...], torch.dtype]
GIB = 2**30

# Fixed upper bounds of what a user sets (recipes, components, the command line, cards).
MAX_WIDTH = 8192  # a network's channels or units per layer (the reference uses 64)
MAX_DEPTH = 64  # layers a network stacks
MAX_LATENT = 65_536  # a latent vector's or an embedding's size
MAX_CLASSES = 100_000  # classes a model is conditioned on or a classifier predicts
MAX_IMAGE_SIDE = 2048  # pixels of an image's height or width
MAX_CHANNELS = 4  # channels of an image (greyscale, RGB, RGBA)
MAX_BATCH = 65_536  # images in one batch (training or evaluation)
MAX_GRID_IMAGES = 4096  # images in one sample grid (train.n_samples, gankit sample --n)
MAX_EVAL_SAMPLES = 1_000_000  # generated samples in one evaluation (FID's custom is 50,000)
MAX_POINTS = 100_000_000  # points of a toy dataset
MAX_WALK_FRAMES = 10_000  # frames of one latent walk (--points x --steps)
MAX_SEED = 2**32 - 1  # a seed given on the command line (as train.seed in recipes)
MAX_STEPS = 10**10  # iterations of one run
MAX_KIMG = 10**10  # thousands of images of one run
MAX_MINUTES = 10**7  # a run's wall-clock budget (19 years)
MAX_EMA_KIMG = 1_000_000  # thousands of images in an EMA's half-life (StyleGAN uses 10 to 20)
MIN_FPS, MAX_FPS = 0.1, 240.0  # frames per second of an animation (GIFs: 10 s a frame at most)
WORKERS_PER_CORE = 4  # DataLoader workers per CPU core this process may use


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_workers() -> int:
    """The most DataLoader worker processes worth starting here: WORKERS_PER_CORE per core."""
    return WORKERS_PER_CORE * usable_cores()


def check_workers(count: int) -> int:
    """`count` worker processes, or a ValueError naming this machine's cores and the bound."""
    cores, most = usable_cores(), max_workers()
    if count > most:
        raise ValueError(
            f"{count} worker processes are more than this machine can use: at most {most} "
            f"({WORKERS_PER_CORE} x its {cores} CPU cores); lower it (0 reads in the main process)"
        )
    return count


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


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in `value` (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple | list):
        return sum(tensor_bytes(item) for item in value)
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    return 0


def forward_peak_bytes(module: nn.Module, run: Callable[[], Any]) -> int:
    """About the most memory one forward pass of `module` holds beyond its weights: the largest
    input plus output of any of its layers while `run()` calls it (without gradients). Run it
    on one item and multiply: the activations of a batch grow with its size."""
    peak = 0

    def measure(_layer: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal peak
        peak = max(peak, tensor_bytes(inputs) + tensor_bytes(output))

    hooks = [layer.register_forward_hook(measure) for layer in module.modules()]
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return peak


MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


def meminfo_available(meminfo: Path = MEMINFO) -> int | None:
    """Linux's estimate of the memory new allocations can get without swapping (MemAvailable in
    /proc/meminfo: free memory plus what caches give back); None where there is no such file."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            try:
                return int(value.split()[0]) * 1024  # the file counts kB
            except (IndexError, ValueError):
                return None
    return None


def cgroup_room(root: Path = CGROUP) -> int | None:
    """What a cgroup v2 memory limit (a container's) leaves: memory.max - memory.current; None
    without a limit."""
    try:
        limit = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text().strip())
        return None if limit == "max" else max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def available_bytes(device: str | torch.device) -> int | None:
    """Memory a new allocation on `device` can get now: on a CPU, what the OS has available
    (MemAvailable, within a container's limit; not the physical total, much of which other
    processes hold); on a CUDA GPU, its free memory plus what PyTorch's cache holds unused.
    None when unknown (other devices, no CUDA, an OS that does not say)."""
    device = torch.device(device)
    if device.type == "cpu":
        known = [room for room in (meminfo_available(), cgroup_room()) if room is not None]
        if not known:
            try:
                known = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")]
            except (AttributeError, ValueError, OSError):
                return None
        return min(known)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return free + max(0, cached)
    return None


def memory_size(nbytes: float) -> str:
    """Bytes for a message, in the binary unit that keeps the number under 1000: "1.2 TiB",
    "21.3 GiB", "512.0 MiB", "980 B"."""
    value, unit = float(nbytes), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1000:
            break
        value, unit = value / 1024, larger
    return f"{value:,.0f} B" if unit == "B" else f"{value:,.1f} {unit}"


def memory_place(device: str | torch.device) -> str:
    """Where `available_bytes` measured, for a message: "is available", "is free on cuda:0"."""
    device = torch.device(device)
    return "is available" if device.type == "cpu" else f"is free on {device}"


def check_fits(
    nbytes: int,
    device: str | torch.device,
    what: str,
    *,
    hint: str = "make it smaller (e.g. a smaller width) or use a device with more memory",
) -> None:
    """Refuse (GankitError) `what`, which needs `nbytes`, when the device has less memory
    available now (see `available_bytes`).

    `what` names the thing and what set its size, e.g. "--n 100000 (the sample grid)";
    `hint` says what to do instead.
    """
    available = available_bytes(device)
    if available is None or nbytes <= available:
        return
    raise GankitError(
        f"{what} needs about {memory_size(nbytes)}; {memory_size(available)} of memory "
        f"{memory_place(device)}; {hint}"
    )


def check_training_fits(
    builds: Mapping[str, Callable[[], nn.Module]],
    device: str | torch.device,
    recipe: str,
    settings: Sequence[str] = (),
) -> None:
    """Refuse networks whose training state does not fit the device: their weights, gradients
    and Adam's two moments (4x the weights), estimated from meta builds before anything is
    allocated. `builds` maps a section name ("generator") to a function that builds it;
    `settings` are the recipe's size settings to name in the advice ("generator.width=4096")."""
    sizes = {}
    for section, build in builds.items():
        state = meta_state(build)
        if state is not None:
            sizes[section] = 4 * parameter_bytes(state)
    if sizes:
        parts = ", ".join(f"{section} {memory_size(nbytes)}" for section, nbytes in sizes.items())
        lower = (
            f"lower {' or '.join(settings)}"
            if settings
            else "make the networks smaller (e.g. generator.width, discriminator.width)"
        )
        check_fits(
            sum(sizes.values()),
            device,
            f"training recipe '{recipe}' (weights, gradients and Adam's moments: {parts})",
            hint=f"{lower}, or train on a device with more memory",
        )
