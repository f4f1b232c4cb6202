"""The trackers (W&B, TensorBoard) through Accelerate: W&B's mode, the run's name and config,
scalars grouped by kind, images, the export as an artifact.

`wandb` is imported only by Accelerate's tracker, and only when W&B is among the chosen trackers
(`tracking.log_with`) and its mode is not `disabled`; otherwise W&B's settings, key and
environment are not looked at.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gankit.config.recipe import RecipeBase, WandbSection, dump_recipe, recipe_dict
from gankit.core.errors import GankitError, shown

if TYPE_CHECKING:  # `gankit validate` checks the trackers without importing Accelerate
    from accelerate import Accelerator


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC")).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


# The WANDB_MODE values gankit takes; wandb itself fails deep in its setup on an empty one.
WANDB_ENV_MODES = ("online", "offline", "disabled", "dryrun")


def wandb_mode(section: WandbSection, log_with: Sequence[str] = ("wandb",)) -> str:
    """`online`, `offline` or `disabled`: `disabled` when W&B is not among the chosen trackers
    (`log_with`), without a look at the environment; else the recipe's choice, else WANDB_MODE,
    else online.

    Online without an API key would fail (or wait for a prompt), so it falls back to offline
    with a message; `wandb sync` uploads an offline run later.
    """
    if "wandb" not in log_with:
        return "disabled"
    env = os.environ.get("WANDB_MODE")
    if env is not None and env not in WANDB_ENV_MODES and section.mode != "disabled":
        what = "set but empty" if not env.strip() else f"set to {shown(env)}"
        raise GankitError(
            f"WANDB_MODE is {what}: set it to online, offline or disabled, or unset it "
            "(`unset WANDB_MODE`); W&B reads it even where the recipe sets wandb.mode"
        )
    mode = section.mode or env or "online"
    if mode == "dryrun":
        mode = "offline"
    if mode == "online" and not _has_api_key():
        print(
            "gankit: no W&B API key found (WANDB_API_KEY or `wandb login`); logging offline. "
            "Upload later with `wandb sync`, or set wandb.mode: disabled.",
            file=sys.stderr,
        )
        mode = "offline"
    return mode


TENSORBOARD_DIR = "tensorboard"  # in the run folder; the event files are in <project>/ inside
# Each tracker's package, and how to install it.
TRACKER_PACKAGES = {
    "wandb": ("wandb", "pip install wandb (a dependency of gankit: reinstall gankit)"),
    "tensorboard": ("tensorboard", 'pip install "gankit[tensorboard]"'),
}


def check_tracker_packages(log_with: Sequence[str], wandb_mode: str | None = None) -> None:
    """Raise a GankitError naming what to install when a chosen tracker's package is missing
    (W&B only when it will run: not with `wandb_mode` disabled)."""
    for name in log_with:
        package, install = TRACKER_PACKAGES[name]
        if name == "wandb" and wandb_mode == "disabled":
            continue
        try:
            missing = importlib.util.find_spec(package) is None
        except ValueError:  # in sys.modules without a spec (None: blocked)
            missing = True
        if missing:
            raise GankitError(
                f"tracking.log_with names {name}, but the {package} package is not installed; "
                f"install it with {install}, or remove {name} from tracking.log_with"
            )


def trackers(recipe: RecipeBase, mode: str) -> list[str]:
    """The Accelerate trackers of `tracking.log_with` that will run: W&B unless its mode is
    disabled; each one's package installed (else a clear error, before training)."""
    check_tracker_packages(recipe.tracking.log_with, mode)
    return [n for n in recipe.tracking.log_with if n != "wandb" or mode != "disabled"]


def default_run_name(run_dir: Path) -> str:
    """A W&B run name that tells runs apart: the run folder's name and the start time."""
    return f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_tracking(
    accelerator: Accelerator,
    recipe: RecipeBase,
    mode: str,
    run_dir: Path,
    *,
    run_id: str | None = None,
    step: int = 0,
) -> None:
    """Start the trackers (main process) and give them the resolved recipe. With `run_id`, W&B
    continues that run (a resumed training, which keeps its name); TensorBoard drops what an
    earlier attempt logged after `step`, where the run resumes."""
    if not accelerator.log_with:
        return
    section = recipe.wandb
    run_dir.mkdir(parents=True, exist_ok=True)
    wandb_kwargs: dict[str, Any] = {
        "dir": str(run_dir),
        "mode": mode,
        "entity": section.entity,
        "tags": section.tags or None,
        "group": section.group,
        "notes": section.notes,
        "config": recipe_dict(recipe),
    }
    if run_id:
        wandb_kwargs.update(id=run_id, resume="allow")
        if section.name:
            wandb_kwargs["name"] = section.name
    else:
        wandb_kwargs["name"] = section.name or default_run_name(run_dir)
    init_kwargs: dict[str, Any] = {"wandb": wandb_kwargs}
    if step:
        init_kwargs["tensorboard"] = {"purge_step": step + 1}
    # No `config=`: Accelerate would hand TensorBoard the nested recipe as hparams, which it
    # cannot take; W&B gets it above, TensorBoard as text.
    accelerator.init_trackers(section.project, init_kwargs=init_kwargs)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard" and not step:
            text = "\n".join("    " + line for line in dump_recipe(recipe).splitlines())
            tracker.writer.add_text("recipe", text, global_step=0)


def run_id(accelerator: Accelerator) -> str | None:
    """The id of the W&B run this process logs to, if any (saved so a resume continues it)."""
    run = _wandb_run(accelerator)
    return run.id if run is not None else None


def _wandb_run(accelerator: Accelerator) -> Any:
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            return getattr(tracker, "run", None)
    return None


# Metric records use plain names (metrics.jsonl); trackers group them by kind.
PERF_KEYS = ("images_per_sec",)
LOWER_IS_BETTER = {"frechet", "fid", "kid", "distance", "tv", "kl"}
HIGHER_IS_BETTER = {"score", "coverage", "covered", "precision", "recall", "density", "agreement"}


def tracker_key(name: str) -> str:
    """`d_loss` -> `train/d_loss`, `images_per_sec` -> `perf/images_per_sec`; names that carry
    a group (`eval/frechet_distance`) keep it."""
    if "/" in name:
        return name
    return f"perf/{name}" if name in PERF_KEYS else f"train/{name}"


def best_summary(key: str) -> str | None:
    """W&B's summary for an evaluation metric: its best value so far (`min` for distances,
    `max` for scores and coverages); None for other keys and for spreads (`..._std`)."""
    if not key.startswith("eval/"):
        return None
    words = key.removeprefix("eval/").lower().replace("/", "_").split("_")
    if words[-1] == "std":
        return None
    if LOWER_IS_BETTER.intersection(words):
        return "min"
    if HIGHER_IS_BETTER.intersection(words):
        return "max"
    return None


class Tracking:
    """Logs a run's records and images to the trackers of one Accelerator (main process)."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.defined: set[str] = set()

    def log(self, values: dict[str, Any], step: int) -> None:
        """Scalars, under their tracker keys; W&B keeps the best of each evaluation metric."""
        if not self.accelerator.trackers:
            return
        keyed = {tracker_key(k): v for k, v in values.items() if isinstance(v, int | float)}
        run = _wandb_run(self.accelerator)
        if run is not None:
            for key in keyed.keys() - self.defined:
                summary = best_summary(key)
                if summary:
                    run.define_metric(key, summary=summary)
                self.defined.add(key)
        self.accelerator.log(keyed, step=step)

    def image(self, key: str, image: np.ndarray, step: int) -> None:
        """One uint8 image (H x W grey, or H x W x 3) to the trackers that take images."""
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                hwc = image if image.ndim == 3 else image[..., None]
                tracker.writer.add_image(key, hwc, global_step=step, dataformats="HWC")
            elif hasattr(tracker, "log_images"):
                tracker.log_images({key: [image]}, step=step)

    def export(self, folder: Path, name: str, metadata: dict[str, Any]) -> None:
        """Log an export folder as a W&B model artifact (aliases `latest` and `step-N`)."""
        run = _wandb_run(self.accelerator)
        if run is None:
            return
        import wandb  # only reached when W&B runs, so wandb is imported already

        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_dir(str(folder))
        run.log_artifact(artifact, aliases=["latest", f"step-{metadata.get('step', 0)}"])

    def flush(self) -> None:
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.flush()
