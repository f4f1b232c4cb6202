"""Stopping a diverged run early, before it overwrites a good checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from gankit.core.errors import GankitError


class DivergenceError(GankitError):
    """A loss or weight became NaN or infinite."""


def check_weights(modules: Sequence[torch.nn.Module], step: int, run_dir: Path) -> None:
    """Raise if any weight is NaN or infinite; one host sync."""
    weights = [p for module in modules for p in module.parameters()]
    if not bool(torch.stack([torch.isfinite(p).all() for p in weights]).all()):
        raise DivergenceError(
            f"training diverged: a weight is NaN or infinite at step {step}; the last good "
            f"checkpoint in {run_dir} is kept"
        )
