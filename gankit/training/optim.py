"""The optimizers: Adam from a recipe's section, learning-rate schedules, and the settings that
decide which kernels Adam runs (fused, capturable for CUDA graphs), kept across checkpoints."""

from __future__ import annotations

import math
from typing import Any

import torch

from gankit.config.sections import AdamParams


def lazy_ratio(updates: int, intervals: list[int]) -> float:
    """StyleGAN2's `mb_ratio` for a network with `updates` loss updates per iteration and lazy
    regularizers every `intervals` iterations, each an update of its own: the share of its
    updates that are loss updates. Intervals of 1 are not lazy and do not count."""
    extra = sum(1 / every for every in intervals if every > 1)
    return updates / (updates + extra)


def lazy_corrected(params: AdamParams, ratio: float) -> AdamParams:
    """Adam's settings scaled for lazy regularization (StyleGAN2): lr times `ratio`, each beta
    raised to `ratio`, so that the extra updates leave the optimizer's pace per image as the
    recipe set it."""
    if ratio == 1:
        return params
    return params.model_copy(
        update={"lr": params.lr * ratio, "betas": tuple(beta**ratio for beta in params.betas)}
    )


def lr_schedule(
    optimizer: torch.optim.Optimizer, params: AdamParams, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant, linear or cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < params.warmup_steps:
            return (step + 1) / params.warmup_steps
        progress = min(
            1.0, (step - params.warmup_steps) / max(1, total_steps - params.warmup_steps)
        )
        if params.lr_schedule == "linear":
            return 1.0 - progress
        if params.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_schedules(
    optimizers: dict[torch.optim.Optimizer, AdamParams], total_steps: int
) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """A schedule for each optimizer whose section asks for one (a warm-up or a decay)."""
    return [
        lr_schedule(optimizer, params, total_steps)
        for optimizer, params in optimizers.items()
        if params.lr_schedule != "constant" or params.warmup_steps
    ]


def make_adam(
    parameters: Any,
    params: AdamParams,
    fused: bool = False,
    capturable_on: torch.device | None = None,
) -> torch.optim.Adam:
    """Adam from a recipe's optimizer section (`fused`: one kernel for all parameters).

    `capturable_on`: the device of a CUDA graph that will capture `step()`. The step counts then
    live on the device, and the learning rate is a device tensor that schedules fill in place
    between replays (from `initial_lr`, a float, so scaling it needs no host sync)."""
    lr: float | torch.Tensor = params.lr
    if capturable_on is not None:
        lr = torch.tensor(params.lr, device=capturable_on)
    group = {"params": list(parameters), "lr": lr, "initial_lr": params.lr}
    return torch.optim.Adam(
        [group],
        fused=fused or None,
        capturable=capturable_on is not None,
        betas=params.betas,
        eps=params.eps,
        weight_decay=params.weight_decay,
    )


def apply_hyperparameters(
    optimizer: torch.optim.Optimizer,
    params: AdamParams,
    schedule: torch.optim.lr_scheduler.LambdaLR | None,
) -> None:
    """Give an optimizer (and its schedule) loaded from a checkpoint the recipe's settings:
    betas, eps, weight decay and the learning rate, at the point of the schedule the run has
    reached. They differ from the checkpoint's only in a recipe changed on resume
    (`train.allow_recipe_changes`), which would otherwise be silently ignored."""
    groups = optimizer.param_groups
    if schedule is None:
        rates = [params.lr] * len(groups)
    else:
        schedule.base_lrs = [params.lr] * len(groups)
        rates = [
            base * factor(schedule.last_epoch)
            for base, factor in zip(schedule.base_lrs, schedule.lr_lambdas, strict=True)
        ]
        schedule._last_lr = rates  # what get_last_lr() reports
    for group, rate in zip(groups, rates, strict=True):
        if isinstance(group["betas"][0], torch.Tensor):  # in place: a CUDA graph reads them
            for beta, value in zip(group["betas"], params.betas, strict=True):
                beta.fill_(value)
        else:
            group["betas"] = tuple(params.betas)
        group["eps"] = params.eps
        group["weight_decay"] = params.weight_decay
        if "initial_lr" in group:
            group["initial_lr"] = params.lr
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(rate)  # in place: a CUDA graph reads this tensor
        else:
            group["lr"] = rate


IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable")


def keep_implementation(optimizer: torch.optim.Optimizer) -> None:
    """Make loading a state dict keep this optimizer's kernels (fused, foreach, capturable)
    and the kind of its learning rate (float or device tensor): `perf` may differ between the
    run that wrote the checkpoint and this one. (Hyperparameters: `apply_hyperparameters`.)"""

    def keep(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        # copies: a state dict shares its per-parameter dicts with the optimizer it came from
        per_parameter = {index: dict(values) for index, values in state["state"].items()}
        groups = []
        for current, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
            if not (current.get("capturable") or current.get("fused")):
                for index in saved["params"]:  # foreach Adam reads its step counts on the host
                    step = per_parameter.get(index, {}).get("step")
                    if isinstance(step, torch.Tensor):
                        per_parameter[index]["step"] = step.cpu()
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
        return {**state, "state": per_parameter, "param_groups": groups}

    optimizer.register_load_state_dict_pre_hook(keep)
