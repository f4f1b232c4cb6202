"""Opt-in speed switches (the recipe's `perf:` section); each keeps the training the same.

- `data_on_device`: the whole dataset lives on the device and batches are gathered by index,
  in exactly the order the DataLoader path would draw (same seed, epoch and sharding).
- `fused_adam`: Adam's fused kernels (one launch for all parameters).
- `channels_last`: NHWC memory layout for convolutions.
- `tf32`: TensorFloat-32 matrix maths on Ampere and newer GPUs (no effect on a CPU).
- `compile`: `torch.compile` of both networks, in place (state-dict keys unchanged).
- `cuda_graph`: the whole iteration replayed from CUDA graphs (see `graphs.py`); the optimizers
  become capturable (`optim.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from gankit.components.data import Mirrored


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


def all_items(dataset: Dataset, field: int = 0) -> torch.Tensor:
    """Field `field` (0: images, 1: labels) of every item as one tensor (fast for
    TensorDatasets and their subsets)."""
    if isinstance(dataset, Mirrored):
        items = all_items(dataset.dataset, field)
        return torch.cat([items, items.flip(-1) if field == 0 else items])
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        return dataset.dataset.tensors[field][torch.as_tensor(list(dataset.indices))]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[field]
    return torch.stack([torch.as_tensor(dataset[index][field]) for index in range(len(dataset))])


class DeviceLoader:
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
        )
        if self.images.device.type == "cuda":  # a pageable copy would wait for the GPU
            order = order.pin_memory()
        order = order.to(self.images.device, non_blocking=True)
        for index in range(start, self.per_process):
            first = (index * self.processes + self.process) * self.batch_size
            rows = order[first : first + self.batch_size]
            labels = None if self.labels is None else self.labels.index_select(0, rows)
            yield self.images.index_select(0, rows), labels
