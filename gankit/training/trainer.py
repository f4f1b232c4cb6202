"""The training loop on Accelerate: one process or many, CPU or GPU, fp32, bf16 or fp16.

Outputs, tracking, checkpoints and export live in their own modules; this file builds the parts,
runs the schedule's phases each iteration, and calls those modules at the right steps.
"""

from __future__ import annotations

import gc
import json
import time

import torch
from tqdm.auto import tqdm

from gankit.config.recipe import RecipeBase, dump_recipe
from gankit.outputs import tracking
from gankit.outputs.reporting import interactive
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
from gankit.training.run_outputs import RunOutputs
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
        self.batch_norm = parallel.check_device(recipe)
        self.accelerator = parallel.make_accelerator(recipe, self.wandb_mode, self.batch_norm)
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
        self.inputs = InputStream(
            parts, self.accelerator, recipe.train.seed, self.iteration.batches_per_step
        )
        self.outputs = RunOutputs(recipe, self.accelerator, parts, self.iteration, self.total_steps)
        self.metrics = self.outputs.reporter.metrics
        self.run_state = RunState(  # what a checkpoint holds besides tensors
            self.iteration,
            self.inputs,
            self.outputs,
            self.accelerator.num_processes,
            parts.value_schedules,
        )
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
                run_state=self.run_state,
            ),
            kept=lambda: self.outputs.best_step,
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

    @property
    def fixed_noise(self) -> torch.Tensor:
        """The noise of the sample grids (the same on every process, and after a resume)."""
        return self.outputs.fixed_noise

    @property
    def fixed_labels(self) -> torch.Tensor | None:
        return self.outputs.fixed_labels

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
            run_id=self.outputs.wandb_run_id,
            step=self.step,
        )
        self.outputs.wandb_run_id = tracking.run_id(self.accelerator)
        self._describe()
        outputs = self.outputs
        if self.step == 0:
            outputs.save_samples(0)
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
                    speed = window_steps / (time.perf_counter() - window_start)
                    record = outputs.log_metrics(self.step, speed)
                    self.overfit.observe(self.step, record)
                    progress.set_postfix(
                        d_loss=f"{record['d_loss']:.3f}", g_loss=f"{record['g_loss']:.3f}"
                    )
                    window_start, window_steps = time.perf_counter(), 0
                if self.step % train.sample_every == 0 or last:
                    outputs.save_samples(self.step)
                if self.parts.evaluator and (self.step % self.recipe.eval.every == 0 or last):
                    outputs.evaluate(self.step)
                best = self.outputs.improved_step == self.step  # eval.keep_best: a checkpoint
                if self.step % train.checkpoint_every == 0 or last or best:
                    self.save_checkpoint()
                if spent:
                    self.accelerator.print(
                        f"gankit: the wall-clock budget of train.max_minutes={train.max_minutes} "
                        f"is spent at step {self.step} of {self.total_steps}"
                    )
                    break
                if signalled:
                    progress.close()
                    return self._stop_for_signal(stop, last)
        progress.close()
        self._close_vote()
        self.finish()
        return 0

    def _stop_for_signal(self, stop: StopRequest, last: bool) -> int:
        """Checkpoint (if this step has none yet), say how to resume, close; the exit code."""
        train = self.recipe.train
        if self.step % train.checkpoint_every and not last:
            self.save_checkpoint()
        self._close_vote()
        again = "the same command" + ("" if train.resume == "auto" else " with train.resume=auto")
        self.accelerator.print(
            f"gankit: {stop.signal_name or 'a stop signal'} at step {self.step}: "
            f"checkpoint written to {self.run_dir}; run {again} to resume"
        )
        self.accelerator.end_training()
        return stop.exit_code

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
        self.outputs.export(self.step)
        self.outputs.reporter.close()
        self.accelerator.end_training()

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
