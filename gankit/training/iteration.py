"""One training iteration, read top to bottom: the schedule's phases as optimizer updates.

`Iteration.run` asks the schedule which phases run this step and runs their device work,
`run_phases`, either directly or replayed from a CUDA graph (`perf.cuda_graph`). Everything
`run_phases` touches stays on the device: the loss sums (by name), the step count and the first
step with a non-finite loss are device tensors updated in place, so a replay updates them too.
No host sync unless `train.on_nan: skip`. The host keeps the update counts and steps the
learning-rate schedules. `state_dict` / `load_state_dict` carry all of it across a resume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from accelerate import Accelerator

from gankit.components.models.base import forward
from gankit.components.schedules import D_REGULARIZE, Phase
from gankit.training.divergence import DivergenceError
from gankit.training.graphs import IterationGraphs
from gankit.training.parts import Parts

# What each kind of update logs, and the update kinds in the order they are counted.
LOSSES = {
    "discriminator": ("d_loss_real", "d_loss_fake"),
    "generator": ("g_loss",),
    "regularize": ("d_penalty",),
}


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


def update_kind(phase: Phase) -> str:
    """Which of `LOSSES`' update kinds a phase is."""
    if phase.network == "generator":
        return "generator"
    return "regularize" if phase.kind == "regularize" else "discriminator"


class Iteration:
    """Runs training iterations on a recipe's parts and keeps their running state.

    `grad_accumulation`: micro-batches per update; `on_nan`: "stop" (note the step, keep
    going, `check_finite` raises) or "skip" (skip the update; a host sync per update);
    `fp16`: count the optimizer steps the loss scaler skipped; `graphs`: replay from CUDA
    graphs.
    """

    def __init__(
        self,
        parts: Parts,
        accelerator: Accelerator,
        *,
        grad_accumulation: int = 1,
        on_nan: str = "stop",
        fp16: bool = False,
        graphs: bool = False,
    ) -> None:
        self.parts, self.accelerator = parts, accelerator
        self.grad_accumulation, self.on_nan, self.fp16 = grad_accumulation, on_nan, fp16
        self.batches_per_step: int = getattr(parts.schedule, "batches_per_step", 1)
        device = accelerator.device
        self.step = 0
        self.device_step = torch.zeros((), dtype=torch.long, device=device)  # = step
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.loss_sums = {
            name: torch.zeros((), device=device) for names in LOSSES.values() for name in names
        }
        self.updates = dict.fromkeys(LOSSES, 0)  # since the last `read_losses`
        self.skipped_updates = 0  # on_nan: skip
        self.fp16_skipped = dict.fromkeys(("discriminator", "generator"), 0)
        self.graphs = IterationGraphs(self.run_phases) if graphs else None

    def capture_graphs(self, *, capture: bool = True) -> IterationGraphs:
        """Run iterations through CUDA graphs from now on; `capture=False` runs the same
        static-buffer staging eagerly (how it is checked on a CPU)."""
        self.graphs = IterationGraphs(self.run_phases, capture=capture)
        return self.graphs

    # ---- the iteration -------------------------------------------------------------------
    def run(self, inputs: Inputs) -> None:
        """One iteration on `inputs`: every batch the schedule draws per step, each of
        `grad_accumulation` micro-batches."""
        phases = self.phases(self.step)
        ema = self.parts.ema
        if ema is not None:
            ema.set_step(self.step)
        if self.graphs is not None:
            self.graphs.run(inputs, phases)
            ran: Sequence[Phase] = phases  # graphs refuse on_nan: skip, so every update ran
        else:
            ran = self.run_phases(inputs, phases)
        for phase in ran:
            self.updates[update_kind(phase)] += 1
        for schedule in self.parts.lr_schedules:
            schedule.step()
        self.step += 1

    def phases(self, step: int) -> tuple[Phase, ...]:
        """The schedule's phases, then the regularizer's update on its own interval."""
        every = self.parts.regularizer.every
        regularize = (D_REGULARIZE,) if every and (step + 1) % every == 0 else ()
        return (*self.parts.schedule.phases(step), *regularize)

    def run_phases(self, inputs: Inputs, phases: Sequence[Phase]) -> list[Phase]:
        """The device work of one iteration: each phase's update, the loss sums, the EMA and the
        device's step count. Returns the phases whose update ran (all, unless skipped)."""
        p = self.parts
        batches = [  # per batch of the iteration, its micro-batches
            group.chunk(self.grad_accumulation) for group in inputs.chunk(self.batches_per_step)
        ]
        ran = []
        for phase in phases:
            kind = update_kind(phase)
            micro_batches = batches[phase.batch]
            if kind == "generator":
                with frozen(p.discriminator):  # D collects no gradient in G's update
                    parts = self.update(p.g_wrapped, p.g_optimizer, self.g_loss, micro_batches)
            elif kind == "regularize":
                parts = self.update(p.d_wrapped, p.d_optimizer, self.penalty, micro_batches)
            else:
                parts = self.update(p.d_wrapped, p.d_optimizer, self.d_loss, micro_batches)
            if parts is not None:
                for name, value in zip(LOSSES[kind], parts, strict=True):
                    self.loss_sums[name] += value
                ran.append(phase)
        if p.ema is not None:
            p.ema.update(p.generator)
        self.device_step += 1
        return ran

    # ---- the losses of each kind of update -----------------------------------------------
    def d_loss(self, batch: Inputs) -> tuple[torch.Tensor, ...]:
        """D's loss on real images and on fakes of the batch's noise (G not trained)."""
        p = self.parts
        with self.accelerator.autocast():
            with torch.no_grad():
                fake = forward(p.g_wrapped, batch.z, batch.fake_labels)
            real_logits = forward(p.d_wrapped, batch.real, batch.real_labels)
            fake_logits = forward(p.d_wrapped, fake, batch.fake_labels)
        return p.loss.discriminator(real_logits, fake_logits)

    def g_loss(self, batch: Inputs) -> tuple[torch.Tensor, ...]:
        """G's loss on D's verdict of its fakes. D runs unwrapped: frozen, so DDP syncs
        nothing for it."""
        p = self.parts
        with self.accelerator.autocast():
            fake = forward(p.g_wrapped, batch.z, batch.fake_labels)
            fake_logits = forward(p.discriminator, fake, batch.fake_labels)
        return (p.loss.generator(fake_logits),)

    def penalty(self, batch: Inputs) -> tuple[torch.Tensor, ...]:
        """The regularizer's penalty on D, scaled by its interval so that a lazy penalty keeps
        its average strength. Conditional: fakes of the real images' classes."""
        p = self.parts
        labels = batch.real_labels
        with self.accelerator.autocast(), torch.no_grad():
            fake = forward(p.g_wrapped, batch.z, labels)
        penalty = p.regularizer.penalty(
            lambda images: forward(p.d_wrapped, images, labels), batch.real, fake
        )
        return (penalty * p.regularizer.every,)

    def update(
        self,
        model: torch.nn.Module,
        optimizer: Any,
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
                if not self.watch(loss):
                    optimizer.zero_grad(set_to_none=True)
                    return None
                self.accelerator.backward(loss)
            detached = torch.stack([part.detach() for part in parts]) / count
            totals = detached if totals is None else totals + detached
        optimizer.step()
        if self.fp16 and optimizer.step_was_skipped:
            network = "discriminator" if optimizer is self.parts.d_optimizer else "generator"
            self.fp16_skipped[network] += 1
        return totals

    def watch(self, loss: torch.Tensor) -> bool:
        """Note the first step with a non-finite loss (on the device); with `on_nan: skip`,
        return False for such a loss (on every process) so the update is skipped."""
        bad = ~torch.isfinite(loss.detach())
        if self.on_nan == "skip":
            anywhere = self.accelerator.reduce(bad.float(), reduction="sum")
            if bool(anywhere > 0):
                self.skipped_updates += 1
                return False
            return True
        step = self.device_step + 1  # the device's count: the host's is not in a CUDA graph
        self.first_bad_step.copy_(
            torch.where(bad & (self.first_bad_step < 0), step, self.first_bad_step)
        )
        return True

    # ---- reading and carrying the state --------------------------------------------------
    def check_finite(self, where: str) -> None:
        """Raise DivergenceError if a loss went non-finite since the start (one host sync);
        `where` says where the last good checkpoints are."""
        bad_step = int(self.first_bad_step)
        if bad_step >= 0:
            sums = ", ".join(f"{n} {float(v):.4g}" for n, v in self.loss_sums.items())
            raise DivergenceError(
                f"training diverged: a loss became NaN or infinite at step {bad_step} (sums "
                f"since the last log: {sums}). Checkpoints up to then are kept in {where}; lower "
                "the learning rates, or set train.on_nan=skip to skip such updates."
            )

    def read_losses(self) -> dict[str, float]:
        """Each loss's mean since the last call, averaged over processes (NaN for a kind of
        update that did not run), then start the sums afresh."""
        names = list(self.loss_sums)
        counts = [self.updates[kind] for kind, losses in LOSSES.items() for _ in losses]
        sums = torch.stack([self.loss_sums[name] for name in names])
        means = sums / torch.tensor(counts, device=sums.device)
        values = self.accelerator.reduce(means, reduction="mean").tolist()
        for total in self.loss_sums.values():
            total.zero_()
        self.updates = dict.fromkeys(LOSSES, 0)
        return dict(zip(names, values, strict=True))

    def share_loss_sums(self) -> None:
        """Make every process's loss sums their mean (before the main process saves them)."""
        for total in self.loss_sums.values():
            total.copy_(self.accelerator.reduce(total, reduction="mean"))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint carries of the iteration (the networks and optimizers aside)."""
        ema = self.parts.ema
        return {
            "step": self.step,
            "loss_sums": {name: total.cpu() for name, total in self.loss_sums.items()},
            "updates": dict(self.updates),
            "skipped_updates": self.skipped_updates,
            "fp16_skipped": dict(self.fp16_skipped),
            "schedule": self.parts.schedule.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s values. Device state is updated in place: a CUDA
        graph holds those tensors."""
        self.step = state["step"]
        self.device_step.fill_(self.step)
        for name, total in self.loss_sums.items():
            total.copy_(state["loss_sums"][name])
        self.updates = dict(state["updates"])
        self.skipped_updates = state.get("skipped_updates", 0)
        self.fp16_skipped = dict(state.get("fp16_skipped", self.fp16_skipped))
        self.parts.schedule.load_state_dict(state["schedule"])
        ema = self.parts.ema
        if ema is not None:  # a checkpoint from before the average was on starts it from G
            ema.load_state_dict(state.get("ema") or self.parts.generator.state_dict())


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """`module`'s trainable parameters collect no gradient inside the block."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
