"""What a run writes besides its checkpoints: metric lines, sample grids of fixed noise,
evaluations, and at the end the export, the GIF and the loss plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from gankit.components.models.base import grid_labels, sample_noise
from gankit.config.recipe import RecipeBase, recipe_dict
from gankit.config.sections import LoaderFields
from gankit.core.atomic import atomic_file
from gankit.core.bounded import read_json_object
from gankit.core.errors import GankitError
from gankit.metrics.best import improves
from gankit.outputs.card import recipe_summary
from gankit.outputs.export import save_model
from gankit.outputs.reporting import Reporter, loss_line
from gankit.training.iteration import Iteration
from gankit.training.parts import Parts


class RunOutputs:
    """A run's outputs. `state_dict` is what a checkpoint carries of them: the fixed sample
    noise (so grids continue from the same noise) and the W&B run to continue logging into."""

    def __init__(
        self,
        recipe: RecipeBase,
        accelerator: Accelerator,
        parts: Parts,
        iteration: Iteration,
        total_steps: int,
    ) -> None:
        self.recipe, self.accelerator, self.parts = recipe, accelerator, parts
        self.iteration, self.total_steps = iteration, total_steps
        self.reporter = Reporter(accelerator, recipe.run_dir, parts.reference_points)
        # Same fixed noise on every process, drawn apart from the training noise; for
        # conditional models each grid row shows one class.
        n_samples, generator = recipe.train.n_samples, parts.generator
        self.fixed_noise = sample_noise(
            generator.noise,
            n_samples,
            generator.z_dim,
            generator=torch.Generator().manual_seed(recipe.train.seed),
        ).to(accelerator.device)
        self.fixed_labels = (
            grid_labels(n_samples, parts.num_classes).to(accelerator.device)
            if parts.num_classes
            else None
        )
        self.wandb_run_id: str | None = None
        self.best: dict[str, Any] | None = None  # eval.keep_best's best so far
        self.improved_step: int | None = None  # the last step this run made a new best

    def state_dict(self) -> dict[str, Any]:
        return {"fixed_noise": self.fixed_noise.cpu(), "wandb_run_id": self.wandb_run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint; the best so far is the one export/best/ holds, which may
        be newer than the checkpoint."""
        self.fixed_noise = state["fixed_noise"].to(self.accelerator.device)
        self.wandb_run_id = state["wandb_run_id"]
        self.best = read_best(self.best_folder / BEST_FILE, self.recipe.eval.keep_best)

    @property
    def best_step(self) -> int | None:
        """The step of `eval.keep_best`'s best evaluation so far (None: none)."""
        return self.best["step"] if self.best else None

    @property
    def best_folder(self) -> Path:
        """Where `eval.keep_best` keeps the best evaluation's export."""
        return self.recipe.run_dir / "export" / "best"

    def log_metrics(self, step: int, steps_per_second: float) -> dict[str, Any]:
        """Average the losses since the last call across processes, then print and log them
        with the augmentation's and the schedules' values."""
        iteration, parts = self.iteration, self.parts
        iteration.check_finite(str(self.recipe.run_dir))
        record: dict[str, Any] = iteration.read_losses()
        record.update(iteration.augment_values())
        record.update(
            (f"schedule/{name}", value)
            for name, value in parts.value_schedules.values(step - 1).items()
        )
        images = parts.batch_size * self.recipe.train.grad_accumulation
        record["images_per_sec"] = round(
            steps_per_second * images * self.accelerator.num_processes, 2
        )
        record["lr_generator"] = parts.g_optimizer.param_groups[0]["lr"]
        record["lr_discriminator"] = parts.d_optimizer.param_groups[0]["lr"]
        if iteration.skipped_updates:
            record["skipped_updates"] = iteration.skipped_updates
        fp16 = iteration.fp16_skipped
        if any(fp16.values()):
            record["fp16_skipped_d_steps"] = fp16["discriminator"]
            record["fp16_skipped_g_steps"] = fp16["generator"]
        self.reporter.record(
            step,
            record,
            f"step {step}/{self.total_steps}  {loss_line(record, iteration.losses)}  "
            f"{record['images_per_sec']:.1f} img/s",
        )
        return record

    def evaluate(self, step: int) -> dict[str, Any]:
        """Measure sample quality (every process makes its share), then log it."""
        evaluator = self.parts.evaluator
        results = evaluator(self.parts.sampling_generator)
        self.reporter.record(
            step,
            {f"eval/{k}": v for k, v in results.items() if isinstance(v, int | float)},
            f"step {step}  {evaluator.describe(results)}",
        )
        self.keep_best(step, results)
        return results

    def keep_best(self, step: int, results: dict[str, Any]) -> None:
        """Export the networks to export/best/ when `eval.keep_best`'s result beats the best so
        far, with best.json saying which evaluation it was (every process decides alike)."""
        metric = self.recipe.eval.keep_best
        value = results.get(metric) if metric else None
        if not isinstance(value, int | float) or not math.isfinite(value):
            return  # off, or not measured this time (too few samples for k-NN)
        if not improves(metric, value, self.best and self.best["value"]):
            return
        self.best = {"metric": metric, "value": value, "step": step}
        self.improved_step = step
        if not self.accelerator.is_main_process:
            return
        numbers = {k: v for k, v in results.items() if isinstance(v, int | float)}
        self.save_exports(self.best_folder, step, numbers)
        with atomic_file(self.best_folder / BEST_FILE) as staging:
            staging.write_text(json.dumps({**self.best, "results": numbers}, indent=2) + "\n")
        self.accelerator.print(f"gankit: best {metric} so far ({value:.4g}): {self.best_folder}")

    def save_samples(self, step: int) -> None:
        """Write the grid of the fixed noise's samples (eval mode) and log it."""
        self.reporter.samples(
            self.parts.sampling_generator, self.fixed_noise, step, labels=self.fixed_labels
        )

    def export(self, step: int) -> None:
        """Export the networks with their model cards (main process), and log the export."""
        if not self.accelerator.is_main_process:
            return
        info = self.save_exports(self.recipe.run_dir / "export", step, self.last_eval())
        if self.recipe.wandb.log_model:
            ema = self.parts.ema is not None
            self.reporter.tracking.export(
                self.recipe.run_dir / "export" / "generator",
                f"{self.recipe.name}-generator",
                {**info, "ema": ema},
            )

    def save_exports(self, export: Path, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write the generator (and the discriminator, when the recipe says so) into `export`,
        with `metrics` in their cards; returns what their config.json records of the run."""
        recipe = self.recipe
        info = {
            "step": step,
            "recipe": recipe.name,
            "dataset": recipe.data.name,
            "data": {  # what the data was, for `gankit eval`'s reference
                key: value
                for key, value in recipe.data.model_dump(mode="json").items()
                if key != "name" and key not in LoaderFields.model_fields
            },
        }
        if recipe.data.subset is not None:  # the first images of the set: what --nearest reads
            info["train_subset"] = recipe.data.subset
        card = {"recipe": recipe_summary(recipe_dict(recipe)), "metrics": metrics}
        ema = self.parts.ema is not None
        save_model(self.parts.sampling_generator, export / "generator", ema=ema, card=card, **info)
        if recipe.train.export_discriminator:
            save_model(self.parts.discriminator, export / "discriminator", card=card, **info)
        return info

    def last_eval(self) -> dict[str, Any]:
        """The run's latest evaluation results, as metrics.jsonl holds them."""
        for record in reversed(self.reporter.metrics.read()):
            found = {k.removeprefix("eval/"): v for k, v in record.items() if k.startswith("eval/")}
            if found:
                return found
        return {}


BEST_FILE = "best.json"


def read_best(path: Path, metric: str | None) -> dict[str, Any] | None:
    """The best evaluation so far that `path` (export/best/best.json) records for `metric`;
    None when there is none or it is of another metric."""
    if metric is None or not path.exists():
        return None
    record = read_json_object(path, what="the best evaluation's record")
    value = record.get("value")
    if record.get("metric") != metric:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise GankitError(
            f"{path}: 'value' is not a finite number; remove the file (the next evaluation "
            "then starts the best anew)"
        )
    return {"metric": metric, "value": value, "step": record.get("step")}
