"""How long a run trains: iterations (`train.steps`), thousands of images (`train.kimg`), and a
wall-clock budget (`train.max_minutes`), so that runs of different networks can be compared at
equal images or equal time."""

from __future__ import annotations

import math
import time

from gankit.config.recipe import RecipeBase
from gankit.training import parallel


def images_per_step(recipe: RecipeBase, processes: int) -> int:
    """Real images one iteration trains on, over every process and accumulated micro-batch."""
    per_process = parallel.per_process_batch(recipe, processes)
    return per_process * processes * recipe.train.grad_accumulation


def total_steps(recipe: RecipeBase, processes: int) -> int:
    """The run's length in iterations: `train.steps`, or `train.kimg` thousand images rounded
    up to whole iterations."""
    train = recipe.train
    if train.steps is not None:
        return train.steps
    return max(1, math.ceil(train.kimg * 1000 / images_per_step(recipe, processes)))


class WallClock:
    """The run's wall-clock budget, counted from this run's start (a resumed run gets the
    budget again); `spent()` says whether it has run out."""

    def __init__(self, minutes: float | None) -> None:
        self.minutes = minutes
        self.deadline = None if minutes is None else time.monotonic() + minutes * 60

    def spent(self) -> bool:
        """Whether the budget has run out (never, without one)."""
        return self.deadline is not None and time.monotonic() >= self.deadline
