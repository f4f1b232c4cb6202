"""Opt-in speed switches (the recipe's `perf:` section); each keeps the training the same.

- `data_on_device`: the whole dataset lives on the device and batches are gathered by index,
  in exactly the order the DataLoader path would draw (same seed, epoch and sharding).
- `fused_adam`: Adam's fused kernels (one launch for all parameters).
- `channels_last`: NHWC memory layout for convolutions.
- `tf32`: TensorFloat-32 matrix maths on Ampere and newer GPUs (no effect on a CPU).
- `compile`: `torch.compile` of both networks, in place (state-dict keys unchanged).
- `cuda_graph`: the whole iteration replayed from CUDA graphs (see `gankit/graphs.py`); the
  optimizers become capturable, with their step counts and learning rates on the device.

Which kernels an optimizer uses (fused, foreach, capturable) follows the recipe's `perf`
section, also when a checkpoint written with other settings is loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset


def apply(perf: Any, *networks: torch.nn.Module) -> None:
    """Set the process-wide math flags and prepare each network in place."""
    if perf.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    for network in networks:
        if perf.channels_last:
            network.to(memory_format=torch.channels_last)
        if perf.compile:
            network.compile()


IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable")


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Let `optimizer.step()` be captured in a CUDA graph: its step counts live on the device,
    and its learning rate is a device tensor that schedules fill in place between replays."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        lr = float(group["lr"])
        group.setdefault("initial_lr", lr)  # schedules scale a float base, without a sync
        group["lr"] = torch.tensor(lr, device=device)


def keep_implementation(optimizer: torch.optim.Optimizer) -> None:
    """Make loading a state dict keep this optimizer's kernels (fused, foreach, capturable)
    and the kind of its learning rate (float or device tensor): a checkpoint restores the
    hyperparameters, while `perf` may differ between the run that wrote it and this one."""

    def keep(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        groups = []
        for current, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
            saved = dict(saved)
            for key in IMPLEMENTATION_KEYS:
                if key in current:
                    saved[key] = current[key]
            lr = float(saved["lr"])
            if isinstance(current["lr"], torch.Tensor):
                saved["lr"] = torch.tensor(lr, device=current["lr"].device)
                saved.setdefault("initial_lr", lr)
            else:
                saved["lr"] = lr
            groups.append(saved)
        return {**state, "param_groups": groups}

    optimizer.register_load_state_dict_pre_hook(keep)


def all_items(dataset: Dataset, field: int = 0) -> torch.Tensor:
    """Field `field` (0: images, 1: labels) of every item as one tensor (fast for
    TensorDatasets and their subsets)."""
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        return dataset.dataset.tensors[field][torch.as_tensor(list(dataset.indices))]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[field]
    return torch.stack([torch.as_tensor(dataset[index][field]) for index in range(len(dataset))])


class DeviceBatches:
    """Batches gathered from a device-resident copy of the dataset, one epoch at a time.

    The order reproduces Accelerate's seedable sampler and batch sharding: a permutation seeded
    with `seed + epoch`, cut into batches of `batch_size`, process r taking batches r, r + W, ...
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, seed: int, accelerator: Any, labels: bool = False
    ) -> None:
        self.images = all_items(dataset).to(accelerator.device)
        self.labels = all_items(dataset, 1).long().to(accelerator.device) if labels else None
        self.batch_size, self.seed = batch_size, seed
        self.process, self.processes = accelerator.process_index, accelerator.num_processes
        self.per_process = len(self.images) // batch_size // self.processes

    def epoch(
        self, epoch: int, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """This process's batches of `epoch`, from its `start`-th: images, and labels when
        asked for (else None)."""
        order = torch.randperm(
            len(self.images), generator=torch.Generator().manual_seed(self.seed + epoch)
        ).to(self.images.device)
        for index in range(start, self.per_process):
            first = (index * self.processes + self.process) * self.batch_size
            rows = order[first : first + self.batch_size]
            labels = None if self.labels is None else self.labels.index_select(0, rows)
            yield self.images.index_select(0, rows), labels
