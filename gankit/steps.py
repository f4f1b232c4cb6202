"""One training iteration: the schedule's phases as optimizer updates on device tensors.

`IterationSteps` is the part of the Trainer that runs an iteration; it uses the attributes the
Trainer builds (networks, optimizers, loss, schedule, regularizer, EMA, loss accumulators).
Everything here stays on the device: no host sync unless `train.on_nan: skip`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from gankit.schedules import D_REGULARIZE, Phase


class Inputs(NamedTuple):
    """The tensors of an iteration (or of one of its batches or micro-batches): real images,
    noise and, for class-conditional models, the real images' labels and the labels to
    generate (None otherwise)."""

    real: torch.Tensor
    z: torch.Tensor
    real_labels: torch.Tensor | None = None
    fake_labels: torch.Tensor | None = None

    def chunk(self, parts: int) -> list[Inputs]:
        """Split every tensor into `parts` equal pieces along the batch."""
        pieces = [(None,) * parts if t is None else t.chunk(parts) for t in self]
        return [Inputs(*piece) for piece in zip(*pieces, strict=True)]


class IterationSteps:
    """The iteration of the Trainer: phases, micro-batches, updates and the NaN watch."""

    accelerator: Any
    recipe: Any
    step: int
    batches_per_step: int
    graphs: Any = None  # a graphs.IterationGraphs with perf.cuda_graph

    def train_step(
        self,
        real: torch.Tensor,
        z: torch.Tensor,
        real_labels: torch.Tensor | None = None,
        fake_labels: torch.Tensor | None = None,
    ) -> None:
        """Run the schedule's phases for one iteration on device tensors.

        `real` and `z` (and, for class-conditional models, `real_labels` and `fake_labels`)
        hold the schedule's `batches_per_step` batches, each of `train.grad_accumulation`
        micro-batches; a phase uses its batch (`Phase.batch`) and averages its loss over the
        micro-batches into one update. The device work is `run_phases` (replayed from a CUDA
        graph with `perf.cuda_graph`); the host keeps the counts. No host sync unless
        `train.on_nan: skip`.
        """
        inputs = Inputs(real, z, real_labels, fake_labels)
        phases = self.phases(self.step)
        if self.ema is not None:
            self.ema.set_step(self.step)
        if self.graphs is not None:
            self.graphs.run(inputs, phases)
            updated: Sequence[Phase] = phases  # graphs refuse on_nan: skip, so every update ran
        else:
            updated = self.run_phases(inputs, phases)
        for phase in updated:
            self._counts[_slots(phase)[1]] += 1
        for schedule in self.lr_schedules:
            schedule.step()
        self.step += 1

    def run_phases(self, inputs: Inputs, phases: Sequence[Phase]) -> list[Phase]:
        """The device work of one iteration: the phases' updates, the loss sums, the EMA and
        the device's step count. Returns the phases whose update ran (all, unless skipped)."""
        accumulation = self.recipe.train.grad_accumulation
        batches = [  # one entry per batch of the iteration, each split into micro-batches
            group.chunk(accumulation) for group in inputs.chunk(self.batches_per_step)
        ]
        ran = []
        for phase in phases:
            micro_batches = batches[phase.batch]
            if phase.network == "generator":
                trainable = [p for p in self.d_module.parameters() if p.requires_grad]
                for parameter in trainable:  # D collects no gradient in G's update
                    parameter.requires_grad_(False)
                try:
                    parts = self._update(
                        self.G, self.g_optimizer, self._generator_loss, micro_batches
                    )
                finally:
                    for parameter in trainable:
                        parameter.requires_grad_(True)
            elif phase.kind == "regularize":
                parts = self._update(self.D, self.d_optimizer, self._penalty_loss, micro_batches)
            else:
                parts = self._update(
                    self.D, self.d_optimizer, self._discriminator_loss, micro_batches
                )
            if parts is not None:
                first = _slots(phase)[0]
                self._sums[first : first + len(parts)] += parts
                ran.append(phase)
        if self.ema is not None:
            self.ema.update(self.g_module)
        self._device_step += 1
        return ran

    def phases(self, step: int) -> tuple[Phase, ...]:
        """The schedule's phases, then the regularizer's update on its own interval."""
        every = self.regularizer.every
        regularize = (D_REGULARIZE,) if every and (step + 1) % every == 0 else ()
        return (*self.schedule.phases(step), *regularize)

    def _penalty_loss(self, batch: Inputs) -> tuple[torch.Tensor, ...]:
        labels = batch.real_labels
        with self.accelerator.autocast(), torch.no_grad():
            # conditional: fakes of the real images' classes, so points between them are too
            fake = _call(self.G, batch.z, labels)

        def discriminator(images: torch.Tensor) -> torch.Tensor:
            return _call(self.D, images, labels)

        # scaled by the interval, so a lazy penalty keeps its average strength
        penalty = self.regularizer.penalty(discriminator, batch.real, fake)
        return (penalty * self.regularizer.every,)

    def _discriminator_loss(self, batch: Inputs) -> tuple[torch.Tensor, ...]:
        with self.accelerator.autocast():
            with torch.no_grad():
                fake = _call(self.G, batch.z, batch.fake_labels)
            real_logits = _call(self.D, batch.real, batch.real_labels)
            fake_logits = _call(self.D, fake, batch.fake_labels)
        return self.loss.discriminator(real_logits, fake_logits)

    def _generator_loss(self, batch: Inputs) -> tuple[torch.Tensor, ...]:
        # D is called unwrapped: its weights are frozen, so DDP has nothing to sync for it.
        with self.accelerator.autocast():
            fake = _call(self.G, batch.z, batch.fake_labels)
            fake_logits = _call(self.d_module, fake, batch.fake_labels)
        return (self.loss.generator(fake_logits),)

    def _update(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_parts: Callable[[Inputs], tuple[torch.Tensor, ...]],
        micro_batches: list[Inputs],
    ) -> torch.Tensor | None:
        """One optimizer step on the mean loss over the micro-batches; gradients are synced
        across processes on the last micro-batch only. Returns the mean loss parts, detached,
        or None when the update was skipped (`on_nan: skip`)."""
        count = len(micro_batches)
        optimizer.zero_grad(set_to_none=True)
        totals = None
        for index, batch in enumerate(micro_batches):
            # DDP decides in the forward whether the backward all-reduces: both go in no_sync
            last = index == count - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                parts = loss_parts(batch)
                loss = sum(parts) / count
                if not self._watch(loss):
                    optimizer.zero_grad(set_to_none=True)
                    return None
                self.accelerator.backward(loss)
            detached = torch.stack([part.detach() for part in parts]) / count
            totals = detached if totals is None else totals + detached
        optimizer.step()
        if self.recipe.mixed_precision == "fp16" and optimizer.step_was_skipped:
            self._skipped_fp16[0 if optimizer is self.d_optimizer else 1] += 1
        return totals

    def _watch(self, loss: torch.Tensor) -> bool:
        """Note the first step with a non-finite loss (on the device); with `on_nan: skip`,
        return False for such a loss (on every process) so the update is skipped."""
        bad = ~torch.isfinite(loss.detach())
        if self.recipe.train.on_nan == "skip":
            anywhere = self.accelerator.reduce(bad.float(), reduction="sum")
            if bool(anywhere > 0):
                self._skipped += 1
                return False
            return True
        step = self._device_step + 1  # the device's count: the host's is not in a CUDA graph
        self._first_bad_step.copy_(
            torch.where(bad & (self._first_bad_step < 0), step, self._first_bad_step)
        )
        return True


def _slots(phase: Phase) -> tuple[int, int]:
    """Where a phase's losses go: its first entry in the loss sums, and its update counter."""
    if phase.network == "generator":
        return 2, 1
    return (3, 2) if phase.kind == "regularize" else (0, 0)


def _call(network: Any, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """A network on `inputs`, with `labels` when the models are class-conditional."""
    return network(inputs) if labels is None else network(inputs, labels)
