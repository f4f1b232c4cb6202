"""Stopping a diverged run early, before it overwrites a good checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from gankit.errors import GankitError


class DivergenceError(GankitError):
    """A loss or weight became NaN or infinite."""


def check_losses(
    first_bad_step: torch.Tensor, sums: torch.Tensor, names: Sequence[str], run_dir: Path
) -> None:
    """Raise if a loss went non-finite (`first_bad_step` >= 0); one host sync."""
    bad_step = int(first_bad_step)
    if bad_step >= 0:
        values = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, sums.tolist(), strict=True))
        raise DivergenceError(
            f"training diverged: a loss became NaN or infinite at step {bad_step} (sums since "
            f"the last log: {values}). Checkpoints up to then are kept in {run_dir}; lower the "
            "learning rates, or set train.on_nan=skip to skip such updates."
        )


def check_weights(modules: Sequence[torch.nn.Module], step: int, run_dir: Path) -> None:
    """Raise if any weight is NaN or infinite; one host sync."""
    weights = [p for module in modules for p in module.parameters()]
    if not bool(torch.stack([torch.isfinite(p).all() for p in weights]).all()):
        raise DivergenceError(
            f"training diverged: a weight is NaN or infinite at step {step}; the last good "
            f"checkpoint in {run_dir} is kept"
        )
