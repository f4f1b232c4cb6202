"""Update schedules: which optimisation phases run in each training iteration.

The trainer asks `schedule.phases(step)` and runs what it gets, in order; it never hard-codes
"D then G". Every phase of one iteration sees the same real batch and the same noise, as in the
reference recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field

from gankit.config.registry import SCHEDULES


@dataclass(frozen=True)
class Phase:
    """One optimiser update of one network: on its adversarial loss, or on a regularizer (the
    `regularizer`-th of the recipe's), with the iteration's `batch`-th batch of real images and
    noise (see `batches_per_step`)."""

    network: Literal["discriminator", "generator"]
    kind: Literal["loss", "regularize"] = "loss"
    batch: int = 0
    regularizer: int = 0


D_STEP = Phase("discriminator")
G_STEP = Phase("generator")
D_REGULARIZE = Phase("discriminator", "regularize")


class Schedule(Protocol):
    """What the trainer needs from a schedule; `state_dict` lets stateful ones resume.

    A schedule may set `batches_per_step` (default 1): how many fresh batches (and noise) the
    trainer draws per iteration for its phases to use.
    """

    def phases(self, step: int) -> tuple[Phase, ...]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FixedSchedule:
    """A schedule whose phases are the same every iteration, so it has no state to save."""

    _phases: tuple[Phase, ...]

    def phases(self, step: int) -> tuple[Phase, ...]:
        return self._phases

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@SCHEDULES.register("alternating")
class AlternatingSchedule(FixedSchedule):
    """`d_steps` D updates, then `g_steps` G updates, every iteration (reference: 1 and 2)."""

    def __init__(
        self,
        d_steps: Annotated[int, Field(ge=1, description="discriminator updates per iteration")] = 1,
        g_steps: Annotated[
            int, Field(ge=1, description="generator updates per iteration, after D's")
        ] = 1,
    ) -> None:
        self._phases = (D_STEP,) * d_steps + (G_STEP,) * g_steps


@SCHEDULES.register("n_critic")
class NCriticSchedule(FixedSchedule):
    """`n_critic` D updates, each on a fresh batch and fresh noise, then one G update (WGAN)."""

    def __init__(
        self,
        n_critic: Annotated[
            int, Field(ge=1, description="critic updates per generator update")
        ] = 5,
    ) -> None:
        self.batches_per_step = n_critic
        self._phases = (
            *(Phase("discriminator", batch=index) for index in range(n_critic)),
            Phase("generator", batch=n_critic - 1),
        )
