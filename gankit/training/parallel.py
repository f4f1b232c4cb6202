"""What changes with several processes: batch split, BatchNorm statistics, noise, run facts.

The recipe does not change with the launch command; these helpers turn it into per-process
settings so that training does not depend on the number of processes where it need not.
"""

from __future__ import annotations

import os
import platform
import secrets
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import (
    AutocastKwargs,
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    parse_flag_from_env,
)

from gankit._version import __version__
from gankit.config.recipe import RecipeBase, recipe_dict, validate_recipe
from gankit.core.errors import GankitError, warn
from gankit.outputs import tracking

PRECISIONS = ("no", "bf16", "fp16")


def resolve_precision(recipe: RecipeBase) -> tuple[RecipeBase, str]:
    """The recipe with `mixed_precision` set to what this run uses, and where that came from.

    Unset in the recipe, Accelerate decides (`accelerate launch --mixed_precision`, `accelerate
    config`, ACCELERATE_MIXED_PRECISION), as in any Accelerate script. Set in the recipe, it
    wins over the launcher's default (`no`) but not over a launcher that asks for another
    precision: that is an error naming both.
    """
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower() or None
    if launcher is not None and launcher not in PRECISIONS:
        raise GankitError(
            f"the launcher asks for mixed precision {launcher!r} (ACCELERATE_MIXED_PRECISION), "
            f"which gankit does not train in; use one of {', '.join(PRECISIONS)}"
        )
    chosen = recipe.mixed_precision
    if chosen is None:
        chosen, source = launcher or "no", "launcher" if launcher else "default"
    elif launcher not in (None, "no", chosen):
        raise GankitError(
            f"the recipe sets mixed_precision: {chosen} but the launcher asks for {launcher} "
            "(accelerate launch --mixed_precision, accelerate config or "
            "ACCELERATE_MIXED_PRECISION); remove one of the two, or make them agree"
        )
    else:
        source = "recipe"
    if chosen == recipe.mixed_precision:
        return recipe, source
    resolved = validate_recipe(
        {**recipe_dict(recipe), "mixed_precision": chosen},
        source=f"the recipe with the launcher's mixed precision ({chosen})",
    )
    return resolved, source


def writer_token(accelerator: Accelerator) -> str:
    """A name for this run's temporary files, the same on every process."""
    token = [f"{os.getpid()}-{secrets.token_hex(4)}"]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(token)
    return token[0]


def per_process_batch(recipe: RecipeBase, processes: int) -> int:
    """The batch each process draws per micro-batch, from `data.batch_size` and `global_batch`."""
    batch = recipe.data.batch_size
    if not recipe.data.global_batch:
        return batch
    if batch % processes:
        raise GankitError(
            f"data.batch_size {batch} is the global batch (data.global_batch: true) but does "
            f"not split evenly over {processes} processes; use a multiple of {processes}"
        )
    return batch // processes


def uses_cuda() -> bool:
    """Whether Accelerate will put this process on a CUDA GPU (decided before it starts)."""
    return torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")


def check_device(recipe: RecipeBase) -> str:
    """Check the recipe's precision against the device and return the BatchNorm mode to use:
    `train.batch_norm`, except that sync needs CUDA (NCCL) and falls back to broadcast."""
    if recipe.mixed_precision == "fp16" and not uses_cuda():
        raise GankitError(
            "mixed_precision: fp16 needs a CUDA GPU, but this runs on the CPU (where autocast "
            "ignores fp16); use bf16 or no"
        )
    mode = recipe.train.batch_norm
    if mode == "sync" and not uses_cuda():
        warn(
            "train.batch_norm: sync needs CUDA GPUs, but this runs on the CPU; with several "
            "processes, BatchNorm statistics are broadcast from process 0 instead"
        )
        return "broadcast"
    return mode


def use_cuda_graph(recipe: RecipeBase, accelerator: Accelerator) -> bool:
    """Whether iterations replay from CUDA graphs: `perf.cuda_graph` in a single CUDA process.
    Elsewhere they run eagerly, which trains the same, and the main process says so."""
    if not recipe.perf.cuda_graph:
        return False
    where = None
    if accelerator.device.type != "cuda":
        where = f"this runs on {accelerator.device.type}"
    elif accelerator.num_processes > 1:
        where = f"this launch has {accelerator.num_processes} processes"
    if where is None:
        return True
    if accelerator.is_main_process:
        warn(
            f"perf.cuda_graph needs one process on a CUDA GPU, but {where}: iterations run "
            "without the graph (the same training, at eager speed)"
        )
    return False


def ddp_kwargs(mode: str) -> DistributedDataParallelKwargs:
    """DDP settings: buffers (BatchNorm statistics) broadcast from process 0 only in that mode."""
    return DistributedDataParallelKwargs(broadcast_buffers=mode == "broadcast")


def use_sync_batch_norm(*modules: torch.nn.Module) -> list[torch.nn.Module]:
    """Swap every BatchNorm for SyncBatchNorm, in place where possible."""
    return [torch.nn.SyncBatchNorm.convert_sync_batchnorm(module) for module in modules]


def broadcast_buffers(accelerator: Accelerator, *modules: torch.nn.Module) -> None:
    """Copy process 0's buffers (BatchNorm statistics) to every process."""
    if accelerator.num_processes == 1:
        return
    for module in modules:
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


def noise_seed(seed: int, step: int) -> int:
    """The seed of one step's global noise: a resumed run draws the same."""
    return (seed * 1_000_000_007 + step) & 0x7FFF_FFFF_FFFF_FFFF


def noise_slice(accelerator: Accelerator, per_process: int) -> slice:
    """This process's rows of the global noise batch, in the order data batches are sharded."""
    start = accelerator.process_index * per_process
    return slice(start, start + per_process)


def run_info(
    accelerator: Accelerator, recipe: RecipeBase, per_process: int, mode: str, precision_from: str
) -> dict[str, Any]:
    """Facts about how a run was launched, written to run_info.json."""
    processes = accelerator.num_processes
    accumulation = recipe.train.grad_accumulation
    return {
        "processes": processes,
        "device": str(accelerator.device),
        "device_name": torch.cuda.get_device_name()
        if accelerator.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "mixed_precision": recipe.mixed_precision,
        "mixed_precision_from": precision_from,
        "batch_per_process": per_process,
        "grad_accumulation": accumulation,
        "batch_per_update": per_process * processes * accumulation,
        "batch_norm": mode,
        "versions": {
            "gankit": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def announce(
    accelerator: Accelerator,
    info: dict[str, Any],
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    wandb_mode: str,
) -> None:
    """Print one line per process (so a launch shows every rank) and the run's summary."""
    print(
        f"gankit: process {accelerator.process_index} of {info['processes']} on {info['device']}",
        flush=True,
    )
    g_count = sum(p.numel() for p in generator.parameters())
    d_count = sum(p.numel() for p in discriminator.parameters())
    accelerator.print(
        f"gankit: {info['processes']} process(es), batch {info['batch_per_process']} per process "
        f"({info['batch_per_update']} per update) | precision {info['mixed_precision']} "
        f"({info['mixed_precision_from']}) | "
        f"G {g_count:,} params, D {d_count:,} params | W&B {wandb_mode}"
    )


class StopVote:
    """Processes agree to stop (after SIGTERM reaches any of them) without stalling the device.

    Each step every process casts its vote in a non-blocking all-reduce on a CPU (gloo) group
    and reads the previous step's result, so all stop at the same step, one step after the
    signal, with no GPU synchronisation.
    """

    def __init__(self) -> None:
        self.group = torch.distributed.new_group(backend="gloo")
        self.pending: tuple[Any, torch.Tensor] | None = None

    def cast(self, *reasons: bool) -> tuple[bool, ...]:
        """Vote for this step, one flag per reason to stop (a signal, a spent budget); return,
        for each, whether any process voted for it on the previous step."""
        agreed = (False,) * len(reasons)
        if self.pending is not None:
            work, votes = self.pending
            work.wait()
            agreed = tuple(bool(vote > 0) for vote in votes.tolist())
        votes = torch.tensor([float(reason) for reason in reasons])
        work = torch.distributed.all_reduce(votes, group=self.group, async_op=True)
        self.pending = (work, votes)
        return agreed

    def close(self) -> None:
        """Wait for the last vote and free the group, so no collective or gloo thread is left
        for the interpreter's shutdown (where tearing one down can abort the process)."""
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None
        if self.group is not None:
            torch.distributed.destroy_process_group(self.group)
            self.group = None


def make_accelerator(recipe: RecipeBase, wandb_mode: str, batch_norm: str) -> Accelerator:
    """The run's Accelerator: precision, trackers, seeded data order, DDP settings. Accelerate
    keeps one global state per process; a second run in the same process (a notebook, a sweep)
    may change the precision, so that state starts afresh (the process group is kept)."""
    AcceleratorState._reset_state(reset_partial_state=False)
    run_dir = recipe.run_dir
    return Accelerator(
        mixed_precision=recipe.mixed_precision,
        log_with=tracking.trackers(recipe, wandb_mode) or None,
        project_config=ProjectConfiguration(
            project_dir=str(run_dir), logging_dir=str(run_dir / tracking.TENSORBOARD_DIR)
        ),
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True,
            data_seed=recipe.train.seed,
            non_blocking=uses_cuda(),  # pinned batches, copied without a wait
        ),
        kwargs_handlers=[
            ddp_kwargs(batch_norm),
            # autocast's cast cache would hold tensors freed between graph replays
            *([AutocastKwargs(cache_enabled=False)] if recipe.perf.cuda_graph else []),
        ],
    )
