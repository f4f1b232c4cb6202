"""Update schedules: which optimisation phases run in each training iteration.

The trainer asks `schedule.phases(step)` and runs what it gets, in order; it never hard-codes
"D then G". Every phase of one iteration sees the same real batch and the same noise, as in the
reference recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from gankit.registry import SCHEDULES


@dataclass(frozen=True)
class Phase:
    """One optimiser update of one network: on its adversarial loss, or on a regularizer."""

    network: Literal["discriminator", "generator"]
    kind: Literal["loss", "regularize"] = "loss"


D_STEP = Phase("discriminator")
G_STEP = Phase("generator")
D_REGULARIZE = Phase("discriminator", "regularize")


class Schedule(Protocol):
    """What the trainer needs from a schedule; `state_dict` lets stateful ones resume."""

    def phases(self, step: int) -> tuple[Phase, ...]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class AlternatingParams(BaseModel):
    """Parameters of the alternating schedule."""

    model_config = ConfigDict(extra="forbid")
    d_steps: int = Field(1, ge=1, description="discriminator updates per iteration")
    g_steps: int = Field(1, ge=1, description="generator updates per iteration, after D's")


@SCHEDULES.register("alternating", params=AlternatingParams)
class AlternatingSchedule:
    """`d_steps` D updates, then `g_steps` G updates, every iteration (reference: 1 and 2)."""

    def __init__(self, d_steps: int = 1, g_steps: int = 1) -> None:
        self._phases = (D_STEP,) * d_steps + (G_STEP,) * g_steps

    def phases(self, step: int) -> tuple[Phase, ...]:
        return self._phases

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
