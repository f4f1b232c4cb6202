"""What each iteration trains on: real batches in an order fixed by the seed and the epoch, and
noise (and labels to generate) fixed by the seed and the step, so a resumed run, or one on
another number of processes, sees the same."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator

from gankit.training import parallel
from gankit.training.iteration import Inputs
from gankit.training.parts import Parts

Batch = tuple[torch.Tensor, torch.Tensor | None]


class InputStream:
    """Draws the `Inputs` of each iteration; `state_dict` is the position in the data."""

    def __init__(self, parts: Parts, accelerator: Accelerator, seed: int, batches_per_step: int):
        self.parts, self.accelerator = parts, accelerator
        self.seed, self.batches_per_step = seed, batches_per_step
        self.epoch = self.batch_in_epoch = 0
        self.noise_rng = torch.Generator(accelerator.device)

    def batches(self) -> Iterator[Batch]:
        """Real images and their labels (None unless the models are class-conditional)
        forever: each epoch's order is fixed by the seed and the epoch, and a resumed run skips
        the batches its epoch already used."""
        while True:
            if self.parts.device_loader is not None:
                epoch = self.parts.device_loader.epoch(self.epoch, start=self.batch_in_epoch)
            else:
                # Starting an epoch draws from torch's global generator (a worker seed); it
                # would draw at other points of a resumed run than of a straight one, and shift
                # what penalties draw from it (the gradient penalty's mix, path length's noise).
                with torch.random.fork_rng(devices=[]):
                    loader = self.parts.loader
                    loader.set_epoch(self.epoch)
                    if self.batch_in_epoch:
                        loader = self.accelerator.skip_first_batches(loader, self.batch_in_epoch)
                    iterator = iter(loader)
                    first = next(iterator, None)
                batches = iterator if first is None else itertools.chain([first], iterator)
                epoch = (self._split(batch) for batch in batches)
            for batch in epoch:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _split(self, batch: torch.Tensor | list[torch.Tensor]) -> Batch:
        if not isinstance(batch, list | tuple):
            return batch, None
        return batch[0], batch[1].long() if self.parts.num_classes else None

    def next(self, batches: Iterator[Batch], step: int) -> Inputs:
        """The real images (and labels), noise (and labels to generate) of iteration `step`:
        all the schedule's batches."""
        drawn = [next(batches) for _ in range(self.batches_per_step)]
        images, labels = zip(*drawn, strict=True)
        real = images[0] if len(images) == 1 else torch.cat(images)
        real_labels = None if labels[0] is None else torch.cat(labels)
        z, fake_labels = self.latents(real.shape[0], step)
        return Inputs(real, z, real_labels, fake_labels)

    def latents(self, n: int, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's `n` rows of step `step`'s global noise, and of the labels to generate
        (None for unconditional models). Both depend only on the seed and the step."""
        self.noise_rng.manual_seed(parallel.noise_seed(self.seed, step))
        rows = n * self.accelerator.num_processes
        mine = parallel.noise_slice(self.accelerator, n)
        generator = self.parts.generator
        z = generator.sample_noise(rows, generator=self.noise_rng)[mine]
        labels = generator.sample_labels(rows, generator=self.noise_rng)
        return z, None if labels is None else labels[mine]

    def state_dict(self) -> dict[str, Any]:
        """The position in the data: the epoch and the batches it has used."""
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
