"""One training iteration, read top to bottom: the schedule's phases as optimizer updates.

`Iteration.run` asks the schedule which phases run this step and runs their device work,
`run_phases`, either directly or replayed from a CUDA graph (`perf.cuda_graph`). Everything
`run_phases` touches stays on the device: the loss sums (by name), the step count and the first
step with a non-finite loss are device tensors updated in place, so a replay updates them too.
No host sync unless `train.on_nan: skip`. The host keeps the update counts and steps the
learning-rate schedules. `state_dict` / `load_state_dict` carry all of it across a resume.

Every image D sees, real or fake, in every update and penalty, passes through the recipe's
augmentation (`judge`), with randomness that is a function of the seed, the step and the image's
place in the global batch (`Randomness`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from accelerate import Accelerator

from gankit.components.augment import Randomness
from gankit.components.losses import Logits
from gankit.components.models.base import forward
from gankit.components.schedules import Phase
from gankit.config.protocols import LossProtocol, RegularizerProtocol
from gankit.core.errors import GankitError
from gankit.training.divergence import DivergenceError
from gankit.training.graphs import IterationGraphs
from gankit.training.parts import Parts


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
        seed: int = 0,
    ) -> None:
        self.parts, self.accelerator = parts, accelerator
        self.grad_accumulation, self.on_nan, self.fp16 = grad_accumulation, on_nan, fp16
        self.batches_per_step = parts.schedule.batches_per_step
        # (log name, the network it trains, regularizer)
        self.regularizers = [
            (name, regularizer.network, regularizer)
            for name, regularizer in parts.regularizers.items()
        ]
        device = accelerator.device
        self.step = 0
        self.device_step = torch.zeros((), dtype=torch.long, device=device)  # = step
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        # what each kind of update logs: the loss's parts, each regularizer's penalty
        d_names, g_names = loss_names(parts.loss, parts.num_classes, device)
        self.losses = {
            "discriminator": d_names,
            "generator": g_names,
            **{name: (name,) for name, _, _ in self.regularizers},
        }
        self.loss_sums = {
            name: torch.zeros((), device=device) for names in self.losses.values() for name in names
        }
        self.updates = dict.fromkeys(self.losses, 0)  # since the last `read_losses`
        self.randomness = Randomness(
            seed, self.device_step, lambda count: accelerator.process_index * count
        )
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
        self.parts.value_schedules.apply(self.step)
        ema = self.parts.ema
        if ema is not None:
            ema.set_step(self.step)
        if self.graphs is not None:
            self.graphs.run(inputs, phases)
            ran: Sequence[Phase] = phases  # graphs refuse on_nan: skip, so every update ran
        else:
            ran = self.run_phases(inputs, phases)
        for phase in ran:
            self.updates[self.kind(phase)] += 1
        for schedule in self.parts.lr_schedules:
            schedule.step()
        self.step += 1

    def phases(self, step: int) -> tuple[Phase, ...]:
        """The schedule's phases, then each regularizer's update on its own interval."""
        regularize = tuple(
            Phase(network, "regularize", regularizer=index)
            for index, (_, network, regularizer) in enumerate(self.regularizers)
            if regularizer.every and (step + 1) % regularizer.every == 0
        )
        return (*self.parts.schedule.phases(step), *regularize)

    def kind(self, phase: Phase) -> str:
        """Which kind of update a phase is: "discriminator", "generator" or a regularizer's name
        (the keys of `losses`)."""
        if phase.kind == "regularize":
            return self.regularizers[phase.regularizer][0]
        return phase.network

    def run_phases(self, inputs: Inputs, phases: Sequence[Phase]) -> list[Phase]:
        """The device work of one iteration: each phase's update, the loss sums, the EMA and the
        device's step count. Returns the phases whose update ran (all, unless skipped)."""
        p = self.parts
        batches = [  # per batch of the iteration, its micro-batches
            group.chunk(self.grad_accumulation) for group in inputs.chunk(self.batches_per_step)
        ]
        self.randomness.start()
        ran = []
        for phase in phases:
            micro_batches = batches[phase.batch]
            if phase.kind == "regularize":
                name, network, regularizer = self.regularizers[phase.regularizer]
                if network == "generator":
                    penalty = functools.partial(self.g_penalty, name, regularizer)
                    parts = self.update(p.g_wrapped, p.g_optimizer, penalty, micro_batches)
                else:
                    penalty = functools.partial(self.d_penalty, name, regularizer)
                    parts = self.update(p.d_wrapped, p.d_optimizer, penalty, micro_batches)
            elif phase.network == "generator":
                with frozen(p.discriminator):  # D collects no gradient in G's update
                    parts = self.update(p.g_wrapped, p.g_optimizer, self.g_loss, micro_batches)
            else:
                parts = self.update(p.d_wrapped, p.d_optimizer, self.d_loss, micro_batches)
            if parts is not None:
                self._check_names(phase, parts)
                for name, value in parts.items():
                    self.loss_sums[name] += value
                ran.append(phase)
        if p.ema is not None:
            p.ema.update(p.generator)
        self.device_step += 1
        return ran

    def _check_names(self, phase: Phase, parts: dict[str, torch.Tensor]) -> None:
        """A loss returns the parts it declared (the device sums are made for those names)."""
        expected = self.losses[self.kind(phase)]
        if set(parts) != set(expected):
            raise GankitError(
                f"loss '{type(self.parts.loss).__name__}' returned the {phase.network} parts "
                f"{sorted(parts)}, but its `parts` declare {list(expected)}; return the "
                "declared names (or drop `parts` to have them read from a first call)"
            )

    # ---- the losses of each kind of update -----------------------------------------------
    def judge(self, discriminator: torch.nn.Module, images: torch.Tensor, labels: Any) -> Any:
        """D's logits on `images` after the recipe's augmentation."""
        augment = self.parts.augment
        if augment is not None:
            images = augment(images, self.randomness.for_batch(images.shape[0]))
        return forward(discriminator, images, labels)

    def d_loss(self, batch: Inputs) -> dict[str, torch.Tensor]:
        """D's loss on real images and on fakes of the batch's noise (G not trained)."""
        p = self.parts
        with self.accelerator.autocast():
            with torch.no_grad():
                fake = forward(p.g_wrapped, batch.z, batch.fake_labels)
            real_logits = self.judge(p.d_wrapped, batch.real, batch.real_labels)
            fake_logits = self.judge(p.d_wrapped, fake, batch.fake_labels)
        self.observe(real_logits)
        return p.loss.discriminator(
            Logits(real_logits, fake_logits, batch.real_labels, batch.fake_labels)
        )

    def g_loss(self, batch: Inputs) -> dict[str, torch.Tensor]:
        """G's loss on D's verdict of its fakes (and of the real images, for a loss that compares
        them). D runs unwrapped: frozen, so DDP syncs nothing for it."""
        p = self.parts
        real_logits = None
        with self.accelerator.autocast():
            fake = forward(p.g_wrapped, batch.z, batch.fake_labels)
            fake_logits = self.judge(p.discriminator, fake, batch.fake_labels)
            if p.loss.generator_uses_real:
                with torch.no_grad():
                    real_logits = self.judge(p.discriminator, batch.real, batch.real_labels)
        return p.loss.generator(
            Logits(real_logits, fake_logits, batch.real_labels, batch.fake_labels)
        )

    def d_penalty(
        self, name: str, regularizer: RegularizerProtocol, batch: Inputs
    ) -> dict[str, torch.Tensor]:
        """A regularizer's penalty on D, scaled by its interval so that a lazy penalty keeps its
        average strength. Conditional: fakes of the real images' classes."""
        p = self.parts
        labels = batch.real_labels
        with self.accelerator.autocast(), torch.no_grad():
            fake = forward(p.g_wrapped, batch.z, labels)
        penalty = regularizer.penalty(
            lambda images: self.judge(p.d_wrapped, images, labels), batch.real, fake
        )
        return {name: penalty * regularizer.every}

    def g_penalty(
        self, name: str, regularizer: RegularizerProtocol, batch: Inputs
    ) -> dict[str, torch.Tensor]:
        """A regularizer's penalty on G, scaled by its interval."""
        p = self.parts

        def generate(z: torch.Tensor, return_latents: bool = False) -> Any:
            """Images of noise `z`; `return_latents`: (images, the latents the path length is
            measured in: the generator's own, else z)."""
            labels = None if batch.fake_labels is None else batch.fake_labels[: z.shape[0]]
            own = return_latents and p.generator.path_length_latents
            with self.accelerator.autocast():
                result = forward(
                    p.g_wrapped, z, labels, **({"return_latents": True} if own else {})
                )
            return result if own or not return_latents else (result, z)

        return {name: regularizer.penalty(generate, batch.z) * regularizer.every}

    def observe(self, real_logits: torch.Tensor) -> None:
        """Tell an adaptive augmentation D's verdict on the augmented reals (summed over
        processes, so p stays the same on all of them)."""
        augment = self.parts.augment
        if augment is None or augment.observe is None:
            return
        observe = augment.observe
        signs = torch.sign(real_logits.detach().float())
        stats = torch.stack([signs.sum(), torch.full_like(signs.sum(), signs.numel())])
        if self.accelerator.num_processes > 1:
            stats = self.accelerator.reduce(stats, reduction="sum")
        observe(stats[0], stats[1])

    def update(
        self,
        model: torch.nn.Module,
        optimizer: Any,
        loss_parts: Callable[[Inputs], dict[str, torch.Tensor]],
        micro_batches: list[Inputs],
    ) -> dict[str, torch.Tensor] | None:
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
                loss = sum(parts.values()) / count
                if not self.watch(loss):
                    optimizer.zero_grad(set_to_none=True)
                    return None
                self.accelerator.backward(loss)
            detached = {name: part.detach() / count for name, part in parts.items()}
            totals = (
                detached
                if totals is None
                else {name: totals[name] + value for name, value in detached.items()}
            )
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
        update that did not run), and each network's total, `d_loss` and `g_loss`; then start
        the sums afresh."""
        names = list(self.loss_sums)
        counts = [self.updates[kind] for kind, losses in self.losses.items() for _ in losses]
        sums = torch.stack([self.loss_sums[name] for name in names])
        means = sums / torch.tensor(counts, device=sums.device)
        values = self.accelerator.reduce(means, reduction="mean").tolist()
        for total in self.loss_sums.values():
            total.zero_()
        self.updates = dict.fromkeys(self.losses, 0)
        means = dict(zip(names, values, strict=True))
        for network in ("discriminator", "generator"):
            means[f"{network[0]}_loss"] = sum(means[name] for name in self.losses[network])
        return means

    def augment_values(self) -> dict[str, float]:
        """What the augmentation logs (ADA: its probability `augment_p`), read now."""
        augment = self.parts.augment
        if augment is None or augment.values is None:
            return {}
        return {name: float(value) for name, value in augment.values().items()}

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
            "regularizers": {
                name: _cpu(regularizer.state_dict())
                for name, _, regularizer in self.regularizers
                if isinstance(regularizer, torch.nn.Module)
            },
            "augment": _cpu(self.parts.augment.state_dict())
            if isinstance(self.parts.augment, torch.nn.Module)
            else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s values. Device state is updated in place: a CUDA
        graph holds those tensors."""
        self.step = state["step"]
        self.device_step.fill_(self.step)
        sums, updates = self._named_penalties(state["loss_sums"], state["updates"])
        for name, total in self.loss_sums.items():
            total.copy_(sums.get(name, torch.zeros(())))  # a part the recipe did not have: 0
        self.updates = {kind: updates.get(kind, 0) for kind in self.losses}
        self.skipped_updates = state.get("skipped_updates", 0)
        self.fp16_skipped = dict(state.get("fp16_skipped", self.fp16_skipped))
        self.parts.schedule.load_state_dict(state["schedule"])
        ema = self.parts.ema
        if ema is not None:  # a checkpoint from before the average was on starts it from G
            ema.load_state_dict(state.get("ema") or self.parts.generator.state_dict())
        saved = state.get("regularizers", {})
        for name, _, regularizer in self.regularizers:
            if isinstance(regularizer, torch.nn.Module) and name in saved:
                regularizer.load_state_dict(saved[name])
        augment = self.parts.augment
        if isinstance(augment, torch.nn.Module) and state.get("augment") is not None:
            augment.load_state_dict(state["augment"])

    def _named_penalties(
        self, sums: dict[str, Any], updates: dict[str, int]
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """Sums and counts as named now: checkpoints from before regularizers were named by
        their network and kind kept one D regularizer's as `d_penalty` and `regularize`."""
        if "regularize" not in updates:
            return sums, updates
        sums, updates = dict(sums), dict(updates)
        total, count = sums.pop("d_penalty", None), updates.pop("regularize")
        on_d = [name for name, network, _ in self.regularizers if network == "discriminator"]
        if len(on_d) == 1 and total is not None:
            sums[on_d[0]], updates[on_d[0]] = total, count
        return sums, updates


def loss_names(
    loss: LossProtocol, num_classes: int, device: torch.device
) -> tuple[tuple[str, ...], ...]:
    """The names of a loss's parts for D and for G: as it declares them, else read from a call
    on small logits."""
    declared = loss.parts
    if declared is not None:
        return tuple(declared["discriminator"]), tuple(declared["generator"])
    logits = torch.zeros(2, 1, device=device)
    labels = torch.zeros(2, dtype=torch.long, device=device) if num_classes else None
    real = logits if loss.generator_uses_real else None
    return (
        tuple(loss.discriminator(Logits(logits, logits, labels, labels))),
        tuple(loss.generator(Logits(real, logits, labels, labels))),
    )


def _cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {name: value.detach().cpu() for name, value in state.items()}


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
