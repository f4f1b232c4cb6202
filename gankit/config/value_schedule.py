"""Recipe values that follow a schedule over the images seen in training.

A schedulable value (a learning rate, Adam's beta2, a regularizer's weight, the EMA half-life,
a fixed augmentation probability, or any component parameter declared with `Scheduled`) is
either a number or a mapping:

    weight: {start: 0.05, end: 0.005, shape: cosine}              # over the whole run
    lr: {start: 2.0e-4, end: 5.0e-5, kimg: 5000, rampup_kimg: 10}  # ramp up, decay, then hold

After `rampup_kimg` thousand images rising linearly from 0 to `start`, the value moves from
`start` to `end` along `shape` over the next `kimg` thousand images (by default, the rest of the
run), then stays at `end`. It is a function of the images seen alone, so a resumed run, any
process count and a CUDA graph see the same values at the same iteration.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from gankit.config.params import refuse_booleans
from gankit.core.sizes import MAX_KIMG

# the tags of the two forms, in validation errors' locations (recipe errors leave them out)
NUMBER, SCHEDULE = "<number>", "<schedule>"


@refuse_booleans
class ValueSchedule(BaseModel):
    """A value over training: a linear ramp-up from 0, then `start` to `end` along `shape`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    start: float = Field(description="the value after the ramp-up")
    end: float = Field(description="the value at the end of the decay, and after it")
    shape: Literal["cosine", "linear"] = Field("cosine", description="how it moves between them")
    kimg: float | None = Field(
        None,
        gt=0,
        le=MAX_KIMG,
        description="thousands of images from start to end (after the ramp-up); default: the "
        "rest of the run",
    )
    rampup_kimg: float = Field(
        0.0, ge=0, le=MAX_KIMG, description="thousands of images rising linearly from 0 to start"
    )

    def at(self, images: float, run_images: float) -> float:
        """The value after `images` images of a run of `run_images` images."""
        rampup = self.rampup_kimg * 1000
        if images < rampup:
            return self.start * images / rampup
        length = self.kimg * 1000 if self.kimg is not None else run_images - rampup
        progress = min(1.0, max(0.0, images - rampup) / max(length, 1.0))
        if self.shape == "linear":
            return self.start + (self.end - self.start) * progress
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))


_WORDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
_HOLDS = {
    "gt": lambda value, bound: value > bound,
    "ge": lambda value, bound: value >= bound,
    "lt": lambda value, bound: value < bound,
    "le": lambda value, bound: value <= bound,
}


def _bounded(bounds: dict[str, float]) -> AfterValidator:
    """Both ends of a schedule within the bounds of the value it schedules; a value that must
    be positive may decay to 0 at the end (and the ramp-up starts at 0: a warm-up)."""

    def check(schedule: ValueSchedule) -> ValueSchedule:
        for end in ("start", "end"):
            value = getattr(schedule, end)
            for kind, bound in bounds.items():
                if end == "end" and value == 0 and kind == "gt" and bound == 0:
                    continue
                if not _HOLDS[kind](value, bound):
                    raise ValueError(f"{end} = {value} must be {_WORDS[kind]} {bound}")
        return schedule

    return AfterValidator(check)


def Scheduled(
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """The type of a schedulable parameter: a number within the bounds, or a `ValueSchedule`
    whose start and end are within them. A component declaring one receives the value at the
    start of training, keeps it as an attribute of the same name and reads it at every call:
    the trainer replaces it with a 0-d tensor on the device and fills that tensor in place
    each iteration (no host sync, so CUDA graphs see it)."""
    given = {"gt": gt, "ge": ge, "lt": lt, "le": le}
    bounds = {kind: bound for kind, bound in given.items() if bound is not None}
    return Annotated[
        Annotated[float, Field(**bounds), Tag(NUMBER)]
        | Annotated[ValueSchedule, _bounded(bounds), Tag(SCHEDULE)],
        Discriminator(_kind),
    ]


def _kind(value: Any) -> str:
    """Which of the two a recipe value is meant as (so an error names one, not both)."""
    return SCHEDULE if isinstance(value, dict | ValueSchedule) else NUMBER


def initial(value: float | ValueSchedule) -> float:
    """A schedulable value at the start of training."""
    return value.at(0, 1) if isinstance(value, ValueSchedule) else value
