"""Continuing a run: what a checkpoint carries besides tensors, and which checkpoint to load.

`resume_run` picks the checkpoint `train.resume` names, refuses one trained with a recipe that
differs in ways that change training, falls back past corrupt ones (with `auto`), and tidies the
run folder so nothing logged after the checkpoint appears twice.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gankit.config.recipe import (
    RecipeBase,
    dump_recipe,
    recipe_dict,
    training_changes,
    validate_recipe,
)
from gankit.core.errors import GankitError, warn
from gankit.outputs import files
from gankit.outputs.tracking import TENSORBOARD_DIR
from gankit.training.checkpoint import (
    CHECKPOINTS_DIR,
    CheckpointError,
    PickledCheckpointError,
    list_checkpoints,
    read_recipe,
    verify,
)
from gankit.training.optim import apply_hyperparameters

if TYPE_CHECKING:
    from accelerate import Accelerator

    from gankit.outputs.files import MetricsLog
    from gankit.training.checkpoint import CheckpointManager
    from gankit.training.parts import Parts
    from gankit.training.value_schedules import ValueSchedules


class ResumableRun(Protocol):
    """What resuming reads and changes of a run (the Trainer is one)."""

    recipe: RecipeBase
    accelerator: Accelerator
    run_dir: Path
    total_steps: int
    parts: Parts
    checkpoints: CheckpointManager
    metrics: MetricsLog


class Stateful(Protocol):
    """What a checkpoint saves and restores through."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RunState:
    """What a checkpoint carries besides weights, optimizers, RNGs and learning-rate schedules:
    the iteration's state, the position in the data, the fixed sample noise, the W&B run, and
    (for the record: they follow from the step) the scheduled values."""

    FORMAT = 2  # 1: the iteration's counters were positions in one tensor

    def __init__(
        self,
        iteration: Stateful,
        inputs: Stateful,
        outputs: Stateful,
        processes: int,
        value_schedules: ValueSchedules,
    ) -> None:
        self.iteration, self.inputs, self.outputs = iteration, inputs, outputs
        self.processes, self.value_schedules = processes, value_schedules

    def state_dict(self) -> dict[str, Any]:
        iteration = self.iteration.state_dict()
        return {
            "format": self.FORMAT,
            "iteration": iteration,
            **self.inputs.state_dict(),  # epoch, batch_in_epoch
            **self.outputs.state_dict(),  # fixed_noise, wandb_run_id
            "processes": self.processes,
            "scheduled_values": self.value_schedules.values(iteration["step"]),
        }

    @staticmethod
    def step_of(state: dict[str, Any]) -> int:
        """The step a saved state was written at (KeyError or TypeError if it has none)."""
        return state["iteration"]["step"] if "format" in state else state["step"]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "format" not in state:  # written before the iteration kept its losses by name
            state = {**state, "iteration": _iteration_state_v1(state)}
        self.iteration.load_state_dict(state["iteration"])
        self.inputs.load_state_dict(state)
        self.outputs.load_state_dict(state)
        if state.get("processes", self.processes) != self.processes:
            warn(
                f"this checkpoint was written by {state['processes']} processes and is resumed "
                f"by {self.processes}: the data order within the current epoch changes "
                "(weights and optimizers continue as they were)"
            )


def _iteration_state_v1(state: dict[str, Any]) -> dict[str, Any]:
    """The iteration's state from a checkpoint of format 1, as `Iteration.state_dict` gives it."""
    names = ("d_loss_real", "d_loss_fake", "g_loss", "d_penalty")
    d_updates, g_updates, penalty_updates = state["loss_counts"]
    return {
        "step": state["step"],
        "loss_sums": dict(zip(names, state["loss_sums"], strict=True)),
        "updates": {
            "discriminator": d_updates,
            "generator": g_updates,
            "regularize": penalty_updates,
        },
        "schedule": state["schedule"],
        "ema": state.get("ema"),
    }


class RecipeMismatch(CheckpointError):
    """A checkpoint is intact but was trained with a recipe that differs in training keys."""


def check_recipe(recipe: RecipeBase, folder: Path) -> None:
    """Refuse a checkpoint trained with a recipe that differs in keys that change training.
    Call after `verify`: the recipe file is read only from a checkpoint known to be intact."""
    saved_values = read_recipe(folder)
    if recipe.train.allow_recipe_changes or saved_values is None:
        return
    with contextlib.suppress(GankitError):  # fill in keys added since, with their defaults
        saved_values = recipe_dict(validate_recipe(saved_values))
    changes = training_changes(saved_values, recipe_dict(recipe))
    if changes:
        raise RecipeMismatch(
            f"the recipe differs from the one {folder} was trained with, in keys that change "
            f"training: {', '.join(changes)}. Restore them, start over with train.resume=never, "
            "or resume anyway with train.allow_recipe_changes=true."
        )


def apply_optimizer_settings(trainer: ResumableRun) -> None:
    """The recipe's optimizer settings, over those the checkpoint restored (see
    `apply_hyperparameters`)."""
    parts = trainer.parts
    schedules = {id(schedule.optimizer): schedule for schedule in parts.lr_schedules}
    for prepared, params in (
        (parts.g_optimizer, parts.optim["generator"]),
        (parts.d_optimizer, parts.optim["discriminator"]),
    ):
        optimizer = prepared.optimizer  # under Accelerate's wrapper
        apply_hyperparameters(optimizer, params, schedules.get(id(optimizer)))


def start_fresh(trainer: ResumableRun) -> None:
    """Clear an earlier run's samples, metrics and checkpoints from the run folder (with
    `auto`, checkpoints set aside in checkpoints/abandoned/ stay: `never` deletes them too).
    Only what gankit writes goes; anything else in the folder stays."""
    run_dir = trainer.run_dir
    never = trainer.recipe.train.resume == "never"
    leftovers = (  # a symbolic link among the checkpoints is refused here, before anything goes
        trainer.metrics.path,
        *files.sample_grids(run_dir),
        *list_checkpoints(run_dir),
        *(trainer.checkpoints.set_aside() if never else ()),
        run_dir / TENSORBOARD_DIR,
    )
    if any(path.exists() for path in leftovers):
        warn(f"{run_dir} holds an earlier run; its samples, metrics and checkpoints are replaced")
        trainer.checkpoints.clear(keep_set_aside=not never)
        trainer.metrics.path.unlink(missing_ok=True)
        shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
        files.remove_samples_after(run_dir, -1)
    run_dir.mkdir(parents=True, exist_ok=True)


def resume_run(trainer: ResumableRun) -> bool:
    """Load the checkpoint `train.resume` names (auto: the newest usable one), or start fresh;
    True when a checkpoint was loaded."""
    train, accelerator = trainer.recipe.train, trainer.accelerator
    main = accelerator.is_main_process
    candidates = trainer.checkpoints.candidates(train.resume)
    errors = []
    resumed = None
    for folder in candidates:
        failure = None
        try:  # nothing in a checkpoint is read before it is verified
            manifest = verify(folder)
            check_recipe(trainer.recipe, folder)
            step = trainer.checkpoints.load(
                folder, manifest, trust_pickled=train.trust_pickled_checkpoint
            )
        except (RecipeMismatch, PickledCheckpointError):
            raise
        except CheckpointError as error:
            failure = error
        if trainer.checkpoints.any_failed(failure is not None):  # every process moves on
            failure = failure or CheckpointError(f"another process could not load {folder}")
            if train.resume != "auto":
                raise failure
            warn(f"{failure}; falling back to the previous checkpoint")
            errors.append(str(failure))
            continue
        if step > trainer.total_steps:
            length = (
                f"train.steps={train.steps}"
                if train.kimg is None
                else f"train.kimg={train.kimg} ({trainer.total_steps} steps)"
            )
            raise GankitError(
                f"{folder} is at step {step}, past {length}: there is nothing "
                "to train and the run folder was left as it is. Raise it to train "
                "further, set train.resume to an earlier checkpoint to go back, or "
                "train.resume=never to start over"
            )
        apply_optimizer_settings(trainer)  # a recipe changed on resume applies from here
        accelerator.print(f"gankit: resumed from {folder} (step {step} of {trainer.total_steps})")
        resumed = folder, step
        break
    else:
        if errors:
            raise CheckpointError(
                f"no usable checkpoint in {trainer.run_dir / CHECKPOINTS_DIR} "
                f"({'; '.join(errors)}). Set train.resume=never to start over (this deletes them)."
            )
    accelerator.wait_for_everyone()  # every process has read its checkpoint: files may move
    if main and resumed is None:
        start_fresh(trainer)
    elif main:  # what was written after that checkpoint belongs to an abandoned branch
        folder, step = resumed
        trainer.metrics.truncate_after(step)
        files.remove_samples_after(trainer.run_dir, step)
        home, moved = trainer.checkpoints.branch_from(folder, step)
        if moved:
            warn(
                f"the checkpoints of the branch left behind ({', '.join(p.name for p in moved)}) "
                f"moved to {moved[0].parent}, where train.resume=auto does not look; delete that "
                "folder when it is not needed"
            )
        if home != folder:
            accelerator.print(f"gankit: {folder} is now {home}, the run's newest checkpoint")
    if main:
        (trainer.run_dir / "recipe.yaml").write_text(dump_recipe(trainer.recipe))
    return resumed is not None
