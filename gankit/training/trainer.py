"""The training loop on Accelerate: one process or many, CPU or GPU, fp32, bf16 or fp16.

Outputs, tracking, checkpoints and export live in their own modules; this file builds the parts,
runs the schedule's phases each iteration, and calls those modules at the right steps.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import AutocastKwargs, DataLoaderConfiguration, ProjectConfiguration
from tqdm.auto import tqdm

from gankit.components.models.base import grid_labels, sample_noise
from gankit.config.recipe import RecipeBase, dump_recipe, recipe_dict
from gankit.config.sections import LoaderFields
from gankit.outputs import tracking
from gankit.outputs.card import recipe_summary
from gankit.outputs.export import save_model
from gankit.outputs.reporting import Reporter, interactive, loss_line
from gankit.training import finetune, parallel, runfolder
from gankit.training.checkpoint import CheckpointManager, check_resume_folder
from gankit.training.checkpoint_state import Checkpointed
from gankit.training.divergence import check_weights
from gankit.training.inputs import InputStream
from gankit.training.iteration import Inputs, Iteration
from gankit.training.overfit import OverfitWatch
from gankit.training.parts import build_parts
from gankit.training.resume import RunState, resume_run
from gankit.training.run_length import WallClock, total_steps
from gankit.training.stopping import StopRequest


class Trainer:
    """Builds a recipe's parts and trains them; `fit()` runs (or resumes) to the run's length
    (`train.steps`, or `train.kimg` in images)."""

    def __init__(self, recipe: RecipeBase) -> None:
        recipe, self.precision_from = parallel.resolve_precision(recipe)
        self.recipe = recipe
        self.run_dir = recipe.run_dir
        runfolder.check_run_folder(self.run_dir)  # before any work: fit() checks again, locked
        if recipe.train.resume not in ("auto", "never"):
            check_resume_folder(recipe.train.resume, self.run_dir)
        self.wandb_mode = tracking.wandb_mode(recipe.wandb, recipe.tracking.log_with)
        # Accelerate keeps one global state per process; a second run in the same process (a
        # notebook, a sweep) may change the precision, so start that state afresh. The process
        # group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.batch_norm = parallel.check_device(recipe)
        self.accelerator = Accelerator(
            mixed_precision=recipe.mixed_precision,
            log_with=tracking.trackers(recipe, self.wandb_mode) or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.run_dir),
                logging_dir=str(self.run_dir / tracking.TENSORBOARD_DIR),
            ),
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True,
                data_seed=recipe.train.seed,
                non_blocking=parallel.uses_cuda(),  # pinned batches, copied without a wait
            ),
            kwargs_handlers=[
                parallel.ddp_kwargs(self.batch_norm),
                # autocast's cast cache would hold tensors freed between graph replays
                *([AutocastKwargs(cache_enabled=False)] if recipe.perf.cuda_graph else []),
            ],
        )
        graphs = parallel.use_cuda_graph(recipe, self.accelerator)
        self.total_steps = total_steps(recipe, self.accelerator.num_processes)
        self.parts = parts = build_parts(
            recipe, self.accelerator, self.batch_norm, graphs, self.total_steps
        )
        self.overfit = OverfitWatch(len(parts.dataset), enabled=self.accelerator.is_main_process)
        self.iteration = Iteration(
            parts,
            self.accelerator,
            grad_accumulation=recipe.train.grad_accumulation,
            on_nan=recipe.train.on_nan,
            fp16=recipe.mixed_precision == "fp16",
            graphs=graphs,
            seed=recipe.train.seed,
        )
        device = self.accelerator.device
        generator = parts.generator
        # Same fixed noise on every process, drawn apart from the training noise; for
        # conditional models each grid row shows one class.
        n_samples = recipe.train.n_samples
        self.fixed_noise = sample_noise(
            generator.noise,
            n_samples,
            generator.z_dim,
            generator=torch.Generator().manual_seed(recipe.train.seed),
        ).to(device)
        self.fixed_labels = (
            grid_labels(n_samples, parts.num_classes).to(device) if parts.num_classes else None
        )
        self.inputs = InputStream(
            parts, self.accelerator, recipe.train.seed, self.iteration.batches_per_step
        )
        self.wandb_run_id: str | None = None
        self.reporter = Reporter(self.accelerator, self.run_dir, parts.reference_points)
        self.metrics = self.reporter.metrics
        self.checkpoints = CheckpointManager(
            self.accelerator,
            self.run_dir,
            recipe.train.keep_checkpoints,
            writer=parallel.writer_token(self.accelerator),
            contents=Checkpointed(
                self.accelerator,
                networks={"generator": parts.g_wrapped, "discriminator": parts.d_wrapped},
                optimizers={"generator": parts.g_optimizer, "discriminator": parts.d_optimizer},
                lr_schedules=parts.lr_schedules,
                run_state=RunState(self),
            ),
        )
        self.stop_vote = parallel.StopVote() if self.accelerator.num_processes > 1 else None

    def resume(self) -> None:
        """Load the checkpoint `train.resume` names (auto: the newest usable one), if any;
        a run that starts afresh takes its weights from `train.init_from`, if set."""
        if resume_run(self) or self.recipe.train.init_from is None:
            return
        loaded = finetune.initialise(self.parts, self.recipe.train.init_from)
        self.accelerator.print(f"gankit: initialised {', '.join(loaded)}")

    @property
    def step(self) -> int:
        """Iterations done."""
        return self.iteration.step

    def train_step(
        self,
        real: torch.Tensor,
        z: torch.Tensor,
        real_labels: torch.Tensor | None = None,
        fake_labels: torch.Tensor | None = None,
    ) -> None:
        """One iteration on these tensors (see `Iteration.run`)."""
        self.iteration.run(Inputs(real, z, real_labels, fake_labels))

    def fit(self) -> int:
        """Train (or resume) to the run's length, or until the wall-clock budget is spent;
        returns the exit code: 0, or 130 after Ctrl-C.
        The run folder is locked meanwhile: a second run on it is refused."""
        lock = runfolder.open_shared(self.accelerator, self.run_dir)
        try:
            return self._fit()
        finally:
            if lock is not None:
                lock.release()

    def _fit(self) -> int:
        train = self.recipe.train
        main = self.accelerator.is_main_process
        self.resume()
        tracking.start_tracking(
            self.accelerator,
            self.recipe,
            self.wandb_mode,
            self.run_dir,
            run_id=self.wandb_run_id,
            step=self.step,
        )
        self.wandb_run_id = tracking.run_id(self.accelerator)
        self._describe()
        if self.step == 0:
            self.save_samples()
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (main and train.progress and interactive()),
            unit="it",
        )
        window_start, window_steps = time.perf_counter(), 0
        batches = self.inputs.batches()
        clock = WallClock(train.max_minutes)
        with StopRequest() as stop:
            while self.step < self.total_steps:
                self.iteration.run(self.inputs.next(batches, self.step))
                window_steps += 1
                progress.update(1)
                signalled, spent = self._stops(stop, clock)
                last = self.step == self.total_steps or spent
                if self.step % train.log_every == 0 or last:
                    record = self.log_metrics(window_steps / (time.perf_counter() - window_start))
                    progress.set_postfix(
                        d_loss=f"{record['d_loss']:.3f}", g_loss=f"{record['g_loss']:.3f}"
                    )
                    window_start, window_steps = time.perf_counter(), 0
                if self.step % train.sample_every == 0 or last:
                    self.save_samples()
                if self.parts.evaluator and (self.step % self.recipe.eval.every == 0 or last):
                    self.evaluate()
                if self.step % train.checkpoint_every == 0 or last:
                    self.save_checkpoint()
                if spent:
                    self.accelerator.print(
                        f"gankit: the wall-clock budget of train.max_minutes={train.max_minutes} "
                        f"is spent at step {self.step} of {self.total_steps}"
                    )
                    break
                if signalled:
                    progress.close()
                    if self.step % train.checkpoint_every and not last:
                        self.save_checkpoint()
                    self._close_vote()
                    again = "the same command" + (
                        "" if train.resume == "auto" else " with train.resume=auto"
                    )
                    self.accelerator.print(
                        f"gankit: {stop.signal_name or 'a stop signal'} at step {self.step}: "
                        f"checkpoint written to {self.run_dir}; run {again} to resume"
                    )
                    self.accelerator.end_training()
                    return stop.exit_code
        progress.close()
        self._close_vote()
        self.finish()
        return 0

    def _close_vote(self) -> None:
        if self.stop_vote is not None:
            self.stop_vote.close()

    def _stops(self, stop: StopRequest, clock: WallClock) -> tuple[bool, bool]:
        """Whether to stop for a signal, and whether the wall-clock budget is spent: with
        several processes, as they all agreed (one step late, without a device sync)."""
        signalled, spent = stop.signal_name is not None, clock.spent()
        if self.accelerator.num_processes == 1:
            return signalled, spent
        return self.stop_vote.cast(signalled, spent)

    def save_checkpoint(self) -> None:
        """Check that training is still finite, then write a checkpoint (every process)."""
        self.iteration.check_finite(str(self.run_dir))
        check_weights((self.parts.generator, self.parts.discriminator), self.step, self.run_dir)
        self.iteration.share_loss_sums()  # the main process saves them for everyone
        self._share_batch_norm_statistics()
        self.checkpoints.save(self.step, dump_recipe(self.recipe))

    def log_metrics(self, steps_per_second: float) -> dict[str, Any]:
        """Average the losses since the last call across processes, then print and log them."""
        self.iteration.check_finite(str(self.run_dir))
        record: dict[str, Any] = self.iteration.read_losses()
        record.update(self.iteration.augment_values())
        record.update(
            (f"schedule/{name}", value)
            for name, value in self.parts.value_schedules.values(self.step - 1).items()
        )
        images = self.parts.batch_size * self.recipe.train.grad_accumulation
        images *= self.accelerator.num_processes
        record["images_per_sec"] = round(steps_per_second * images, 2)
        record["lr_generator"] = self.parts.g_optimizer.param_groups[0]["lr"]
        record["lr_discriminator"] = self.parts.d_optimizer.param_groups[0]["lr"]
        if self.iteration.skipped_updates:
            record["skipped_updates"] = self.iteration.skipped_updates
        fp16 = self.iteration.fp16_skipped
        if any(fp16.values()):
            record["fp16_skipped_d_steps"] = fp16["discriminator"]
            record["fp16_skipped_g_steps"] = fp16["generator"]
        self.reporter.record(
            self.step,
            record,
            f"step {self.step}/{self.total_steps}  "
            f"{loss_line(record, self.iteration.losses)}  "
            f"{record['images_per_sec']:.1f} img/s",
        )
        self.overfit.observe(self.step, record)
        return record

    def evaluate(self) -> dict[str, Any]:
        """Measure sample quality (every process makes its share), then log it."""
        evaluator = self.parts.evaluator
        results = evaluator(self.parts.sampling_generator)
        self.reporter.record(
            self.step,
            {f"eval/{k}": v for k, v in results.items() if isinstance(v, int | float)},
            f"step {self.step}  {evaluator.describe(results)}",
        )
        return results

    def save_samples(self) -> None:
        """Write the grid of the fixed noise's samples (eval mode) and log it."""
        self.reporter.samples(
            self.parts.sampling_generator, self.fixed_noise, self.step, labels=self.fixed_labels
        )

    def _share_batch_norm_statistics(self) -> None:
        # D's statistics also move in G's updates, where D runs outside DDP: align them.
        if self.batch_norm == "broadcast":
            parallel.broadcast_buffers(
                self.accelerator, self.parts.generator, self.parts.discriminator
            )

    def finish(self) -> None:
        """Export the networks and write the GIF and loss plot; close the trackers."""
        self._share_batch_norm_statistics()
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            info = {
                "step": self.step,
                "recipe": self.recipe.name,
                "dataset": self.recipe.data.name,
                "data": {  # what the data was, for `gankit eval`'s reference
                    key: value
                    for key, value in self.recipe.data.model_dump(mode="json").items()
                    if key != "name" and key not in LoaderFields.model_fields
                },
            }
            summary = recipe_summary(recipe_dict(self.recipe))
            card = {"recipe": summary, "metrics": self._last_eval()}
            export = self.run_dir / "export"
            ema = self.parts.ema is not None
            generator = self.parts.sampling_generator
            save_model(generator, export / "generator", ema=ema, card=card, **info)
            if self.recipe.train.export_discriminator:
                save_model(self.parts.discriminator, export / "discriminator", card=card, **info)
            if self.recipe.wandb.log_model:
                self.reporter.tracking.export(
                    export / "generator", f"{self.recipe.name}-generator", {**info, "ema": ema}
                )
        self.reporter.close()
        self.accelerator.end_training()

    def _last_eval(self) -> dict[str, Any]:
        """The run's latest evaluation results, as metrics.jsonl holds them."""
        for record in reversed(self.metrics.read()):
            found = {k.removeprefix("eval/"): v for k, v in record.items() if k.startswith("eval/")}
            if found:
                return found
        return {}

    def _describe(self) -> None:
        info = parallel.run_info(
            self.accelerator,
            self.recipe,
            self.parts.batch_size,
            self.batch_norm,
            self.precision_from,
        )
        self.accelerator.print(f"gankit: {self.recipe.name} -> {self.run_dir}")
        parallel.announce(
            self.accelerator, info, self.parts.generator, self.parts.discriminator, self.wandb_mode
        )
        if self.accelerator.is_main_process:
            (self.run_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


def train(recipe: RecipeBase) -> int:
    """Train a validated recipe; returns the exit code (0 when done or stopped by SIGTERM)."""
    trainer = Trainer(recipe)
    try:
        return trainer.fit()
    finally:
        # The trainer sits in reference cycles (checkpoint hooks) with DDP's wrappers, which
        # hold the process group; free them now, not during interpreter shutdown, where gloo's
        # worker threads abort the process when their last tensors go.
        del trainer
        gc.collect()
