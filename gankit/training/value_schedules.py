"""The recipe's scheduled values, set before each iteration from the images seen so far.

Every value a recipe gives as a `ValueSchedule` (see `gankit.config.value_schedule`) becomes a
target here: the optimizers' learning rates and beta2 (after StyleGAN2's lazy-regularization
correction), the EMA half-life, and any parameter of the loss, the regularizers or the
augmentation. Values depend on the iteration alone (images seen = step x images per step), so a
resumed run, any process count and a CUDA graph (which reads device tensors filled in place)
see the same values at the same step. `values` is what the metrics log and checkpoints carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import BaseModel

from gankit.config.sections import AdamParams
from gankit.config.value_schedule import ValueSchedule, initial
from gankit.core.errors import GankitError


class ValueSchedules:
    """Named scheduled values and how each is applied."""

    def __init__(self, images_per_step: int, total_steps: int) -> None:
        self.images_per_step = images_per_step
        self.run_images = float(images_per_step * total_steps)
        self.targets: dict[str, tuple[ValueSchedule, Callable[[float], None]]] = {}

    def __bool__(self) -> bool:
        return bool(self.targets)

    def add(self, name: str, schedule: ValueSchedule, apply: Callable[[float], None]) -> None:
        self.targets[name] = (schedule, apply)
        apply(self.value(schedule, 0))

    def value(self, schedule: ValueSchedule, step: int) -> float:
        return schedule.at(step * self.images_per_step, self.run_images)

    def values(self, step: int) -> dict[str, float]:
        """Each scheduled value at iteration `step`, by its recipe key."""
        return {name: self.value(schedule, step) for name, (schedule, _) in self.targets.items()}

    def apply(self, step: int) -> None:
        """Set every scheduled value for iteration `step`."""
        for schedule, apply in self.targets.values():
            apply(self.value(schedule, step))

    def add_component(self, key: str, section: BaseModel, component: Any) -> None:
        """A component's scheduled parameters: each becomes a 0-d tensor attribute on the
        component's device (the parameter's own name), filled in place."""
        for name, schedule in scheduled_fields(section).items():
            self.add(f"{key}.{name}", schedule, _tensor_attribute(component, name))


def scheduled_fields(section: BaseModel) -> dict[str, ValueSchedule]:
    """A recipe section's parameters given as schedules, by name."""
    return {
        name: value
        for name in type(section).model_fields
        if isinstance(value := getattr(section, name), ValueSchedule)
    }


def at_start(section: Any) -> Any:
    """A recipe section with each scheduled parameter replaced by its value at the start of
    training: what its component is built from."""
    scheduled = scheduled_fields(section)
    if not scheduled:
        return section
    return section.model_copy(update={name: initial(value) for name, value in scheduled.items()})


def at_start_adam(params: AdamParams) -> AdamParams:
    """Adam's settings with a scheduled lr and beta2 at their values at the start."""
    beta1, beta2 = params.betas
    return params.model_copy(update={"lr": initial(params.lr), "betas": (beta1, initial(beta2))})


def _tensor_attribute(component: Any, name: str) -> Callable[[float], None]:
    current = getattr(component, name, None)
    if current is None:
        raise GankitError(
            f"'{type(component).__name__}' has no attribute '{name}' to schedule: a component "
            "keeps each scheduled parameter as an attribute of the same name"
        )
    if not isinstance(current, torch.Tensor):  # a number: its value at the start
        device = _device_of(component)
        current = torch.tensor(float(current), device=device)
        setattr(component, name, current)
    tensor = current

    def apply(value: float) -> None:
        tensor.fill_(value)

    return apply


def _device_of(component: Any) -> torch.device:
    if isinstance(component, torch.nn.Module):
        for tensor in (*component.parameters(), *component.buffers()):
            return tensor.device
    return torch.device("cpu")


def optimizer_targets(
    schedules: ValueSchedules,
    key: str,
    optimizer: torch.optim.Optimizer,
    lr: float | ValueSchedule,
    beta2: float | ValueSchedule,
    ratio: float,
) -> None:
    """A scheduled learning rate and beta2 of one optimizer, corrected as the fixed ones are
    (lr x ratio, beta2 ** ratio; see `optim.lazy_ratio`). A capturable optimizer's learning rate
    is a device tensor: it is filled in place; so are its betas, made tensors here."""
    # param_groups is read at each call: loading a checkpoint replaces the groups
    if isinstance(lr, ValueSchedule):

        def apply_lr(value: float) -> None:
            for group in optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(value * ratio)
                else:
                    group["lr"] = value * ratio

        schedules.add(f"{key}.lr", lr, apply_lr)
    if isinstance(beta2, ValueSchedule):

        def apply_beta2(value: float) -> None:
            for group in optimizer.param_groups:
                beta1, beta2_now = group["betas"]
                if group.get("capturable") and not isinstance(beta2_now, torch.Tensor):
                    # a CUDA graph bakes in float betas: both become device tensors (before
                    # the graph is captured, which happens after any resume)
                    device = group["params"][0].device
                    beta1 = torch.tensor(float(beta1), device=device)
                    beta2_now = torch.tensor(float(beta2_now), device=device)
                    group["betas"] = (beta1, beta2_now)
                if isinstance(beta2_now, torch.Tensor):
                    beta2_now.fill_(value**ratio)
                else:
                    group["betas"] = (beta1, value**ratio)

        schedules.add(f"{key}.betas[1]", beta2, apply_beta2)
