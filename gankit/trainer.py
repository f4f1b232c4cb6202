"""The training loop on Accelerate: one process or many, CPU or GPU, fp32, bf16 or fp16.

Outputs, tracking, checkpoints and export live in their own modules; this file builds the parts,
runs the schedule's phases each iteration, and calls those modules at the right steps.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import AutocastKwargs, DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from gankit import fastpath, parallel, runfolder, toy, tracking
from gankit.checkpoint import CheckpointManager, check_resume_folder
from gankit.data import image_shape
from gankit.data import num_classes as dataset_classes
from gankit.divergence import check_losses, check_weights
from gankit.ema import EMA
from gankit.errors import GankitError
from gankit.export import save_model
from gankit.graphs import IterationGraphs
from gankit.models.base import Generator, check_conditioning, grid_labels, sample_noise
from gankit.optim import keep_implementation, lr_schedules, make_adam, make_capturable
from gankit.recipe import RecipeBase, dump_recipe, recipe_dict
from gankit.registry import DATASETS, DISCRIMINATORS, GENERATORS, LOSSES, REGULARIZERS, SCHEDULES
from gankit.reporting import Reporter, interactive
from gankit.resume import Progress, resume_run
from gankit.sizes import check_training_fits
from gankit.steps import Inputs, IterationSteps
from gankit.stopping import StopRequest

LOSS_NAMES = ("d_loss_real", "d_loss_fake", "g_loss", "d_penalty")


class Trainer(IterationSteps):
    """Builds a recipe's components and trains them; `fit()` runs (or resumes) to `train.steps`."""

    def __init__(self, recipe: RecipeBase) -> None:
        recipe, self.precision_from = parallel.resolve_precision(recipe)
        self.recipe = recipe
        self.run_dir = recipe.run_dir
        runfolder.check_run_folder(self.run_dir)  # before any work: fit() checks again, locked
        if recipe.train.resume not in ("auto", "never"):
            check_resume_folder(recipe.train.resume, self.run_dir)
        self.wandb_mode = tracking.wandb_mode(recipe.wandb)
        # Accelerate keeps one global state per process; a second run in the same process (a
        # notebook, a sweep) may change the precision, so start that state afresh. The process
        # group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.batch_norm = parallel.check_device(recipe)
        pinned = parallel.uses_cuda()  # batches from pinned memory, copied without a wait
        self.accelerator = Accelerator(
            mixed_precision=recipe.mixed_precision,
            log_with="wandb" if self.wandb_mode != "disabled" else None,
            project_dir=str(self.run_dir),
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True,
                data_seed=recipe.train.seed,
                non_blocking=pinned,
            ),
            kwargs_handlers=[
                parallel.ddp_kwargs(self.batch_norm),
                # autocast's cast cache would hold tensors freed between graph replays
                *([AutocastKwargs(cache_enabled=False)] if recipe.perf.cuda_graph else []),
            ],
        )
        graphs = parallel.use_cuda_graph(recipe, self.accelerator)
        self.batch_size = parallel.per_process_batch(recipe, self.accelerator.num_processes)
        seed = recipe.train.seed
        set_seed(seed)  # identical initial weights on every process
        dataset = DATASETS.build(recipe.data)
        if recipe.data.subset is not None:
            dataset = Subset(dataset, range(min(recipe.data.subset, len(dataset))))
        self.image_shape = image_shape(dataset)
        builds = {
            "generator": lambda: GENERATORS.build(recipe.generator, image_shape=self.image_shape),
            "discriminator": lambda: DISCRIMINATORS.build(
                recipe.discriminator, image_shape=self.image_shape
            ),
        }
        check_training_fits(builds, self.accelerator.device, recipe.name)
        generator, discriminator = builds["generator"](), builds["discriminator"]()
        if not isinstance(generator, Generator):
            raise GankitError(
                f"generator '{recipe.generator.name}' must subclass gankit.Generator "
                "(it provides z_dim, noise and sample)"
            )
        self.num_classes = check_conditioning(generator, discriminator, dataset_classes(dataset))
        self.evaluator: Any = None
        toy_data = toy.toy_source(dataset)
        if recipe.eval.every and toy_data is not None:
            self.evaluator = toy.ToyEvaluator(toy_data, recipe.eval.n, seed, self.accelerator)
        elif recipe.eval.every:  # torchmetrics is imported only when evaluation is on
            from gankit.evaluation import TrainingEvaluator

            self.evaluator = TrainingEvaluator(recipe, self.image_shape, self.accelerator)
        self.loss = LOSSES.build(recipe.loss)
        self.schedule = SCHEDULES.build(recipe.schedule)
        self.regularizer = REGULARIZERS.build(recipe.regularizer)
        self.batches_per_step = getattr(self.schedule, "batches_per_step", 1)
        if self.batch_norm == "sync" and self.accelerator.num_processes > 1:
            generator, discriminator = parallel.use_sync_batch_norm(generator, discriminator)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size * recipe.train.grad_accumulation,
            shuffle=True,
            drop_last=True,
            num_workers=recipe.data.num_workers,
            persistent_workers=recipe.data.num_workers > 0,  # not restarted every epoch
            pin_memory=pinned,
        )
        if len(loader) == 0:
            raise GankitError(
                f"a batch of {loader.batch_size} images per process (data.batch_size x "
                f"train.grad_accumulation) is more than the dataset's {len(dataset)}; lower it"
            )
        perf = recipe.perf
        fastpath.apply(perf, generator, discriminator)
        g_optimizer = make_adam(generator.parameters(), recipe.optim.generator, perf.fused_adam)
        d_optimizer = make_adam(
            discriminator.parameters(), recipe.optim.discriminator, perf.fused_adam
        )
        self.G, self.D, self.g_optimizer, self.d_optimizer, self.loader = self.accelerator.prepare(
            generator, discriminator, g_optimizer, d_optimizer, loader
        )
        for optimizer in (g_optimizer, d_optimizer):
            if graphs:
                make_capturable(optimizer, self.accelerator.device)
            keep_implementation(optimizer)
        # Stepped once per iteration by us (Accelerate would step a prepared one per process).
        self.lr_schedules = lr_schedules(
            {g_optimizer: recipe.optim.generator, d_optimizer: recipe.optim.discriminator},
            recipe.train.steps,
        )
        self.device_batches = (
            fastpath.DeviceBatches(
                dataset, loader.batch_size, seed, self.accelerator, labels=bool(self.num_classes)
            )
            if perf.data_on_device
            else None
        )
        self.g_module: Generator = self.accelerator.unwrap_model(self.G)
        self.d_module: torch.nn.Module = self.accelerator.unwrap_model(self.D)
        self.ema = (
            EMA(self.g_module, recipe.ema.decay, recipe.ema.warmup) if recipe.ema.decay else None
        )
        device = self.accelerator.device
        # Same fixed noise on every process, drawn apart from the training noise.
        self.fixed_noise = sample_noise(
            generator.noise,
            recipe.train.n_samples,
            generator.z_dim,
            generator=torch.Generator().manual_seed(seed),
        ).to(device)
        # Conditional models: each grid row shows one class.
        self.fixed_labels = (
            grid_labels(recipe.train.n_samples, self.num_classes).to(device)
            if self.num_classes
            else None
        )
        self.noise_rng = torch.Generator(device)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.wandb_run_id: str | None = None
        self._sums = torch.zeros(len(LOSS_NAMES), device=device)  # device-side, read at log steps
        self._counts = [0, 0, 0]  # D, G and penalty updates since the last log
        self._first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self._device_step = torch.zeros((), dtype=torch.long, device=device)  # = self.step
        self._skipped = 0
        self._skipped_fp16 = [0, 0]  # D and G steps the fp16 loss scaler skipped (overflow)
        self.reporter = Reporter(self.accelerator, self.run_dir)
        if toy_data is not None:  # 2-D samples are drawn over the real points
            self.reporter.reference = toy_data.tensors[0][:2000]
        self.metrics = self.reporter.metrics
        self.checkpoints = CheckpointManager(
            self.accelerator,
            self.run_dir,
            recipe.train.keep_checkpoints,
            writer=parallel.writer_token(self.accelerator),
        )
        self.accelerator.register_for_checkpointing(Progress(self), *self.lr_schedules)
        self.stop_vote = parallel.StopVote() if self.accelerator.num_processes > 1 else None
        self.graphs = IterationGraphs(self.run_phases) if graphs else None

    def resume(self) -> None:
        """Load the checkpoint `train.resume` names (auto: the newest usable one), if any."""
        resume_run(self)

    @property
    def sampling_generator(self) -> Generator:
        """The generator that samples, exports and metrics use: the EMA one if there is one."""
        return self.ema.module if self.ema is not None else self.g_module

    # ---- the loop ------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Real images and their labels (None unless the models are class-conditional)
        forever: each epoch's order is fixed by the seed and the epoch, and a resumed run skips
        the batches its epoch already used."""
        while True:
            if self.device_batches is not None:
                epoch = self.device_batches.epoch(self.epoch, start=self.batch_in_epoch)
            else:
                self.loader.set_epoch(self.epoch)
                loader = self.loader
                if self.batch_in_epoch:
                    loader = self.accelerator.skip_first_batches(self.loader, self.batch_in_epoch)
                epoch = (self._split_batch(batch) for batch in loader)
            for batch in epoch:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _split_batch(
        self, batch: torch.Tensor | list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not isinstance(batch, list | tuple):
            return batch, None
        return batch[0], batch[1].long() if self.num_classes else None

    def next_inputs(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]]) -> Inputs:
        """The real images (and labels), noise (and labels to generate) of the coming
        iteration: all the schedule's batches."""
        drawn = [next(batches) for _ in range(self.batches_per_step)]
        images, labels = zip(*drawn, strict=True)
        real = images[0] if len(images) == 1 else torch.cat(images)
        real_labels = None if labels[0] is None else torch.cat(labels)
        z, fake_labels = self.next_latents(real.shape[0])
        return Inputs(real, z, real_labels, fake_labels)

    def next_noise(self, n: int) -> torch.Tensor:
        """This process's `n` rows of the coming step's global noise (see `next_latents`)."""
        return self.next_latents(n)[0]

    def next_latents(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's `n` rows of the coming step's global noise, and of the labels to
        generate (None for unconditional models).

        Both depend only on the seed and the step, so a resumed run, or one on another number
        of processes, draws the same noise for the same images.
        """
        self.noise_rng.manual_seed(parallel.noise_seed(self.recipe.train.seed, self.step))
        rows = n * self.accelerator.num_processes
        mine = parallel.noise_slice(self.accelerator, n)
        z = self.g_module.sample_noise(rows, generator=self.noise_rng)[mine]
        labels = self.g_module.sample_labels(rows, generator=self.noise_rng)
        return z, None if labels is None else labels[mine]

    def fit(self) -> int:
        """Train (or resume) to `train.steps`; returns the exit code: 0, or 130 after Ctrl-C.
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
            self.recipe.wandb,
            self.wandb_mode,
            recipe_dict(self.recipe),
            self.run_dir,
            run_id=self.wandb_run_id,
        )
        self.wandb_run_id = tracking.run_id(self.accelerator)
        self._describe()
        if self.step == 0:
            self.save_samples()
        progress = tqdm(
            total=train.steps,
            initial=self.step,
            disable=not (main and train.progress and interactive()),
            unit="it",
        )
        window_start, window_steps = time.perf_counter(), 0
        batches = self.batches()
        with StopRequest() as stop:
            while self.step < train.steps:
                self.train_step(*self.next_inputs(batches))
                window_steps += 1
                progress.update(1)
                last = self.step == train.steps
                if self.step % train.log_every == 0 or last:
                    record = self.log_metrics(window_steps / (time.perf_counter() - window_start))
                    progress.set_postfix(
                        d_loss=f"{record['d_loss']:.3f}", g_loss=f"{record['g_loss']:.3f}"
                    )
                    window_start, window_steps = time.perf_counter(), 0
                if self.step % train.sample_every == 0 or last:
                    self.save_samples()
                if self.evaluator and (self.step % self.recipe.eval.every == 0 or last):
                    self.evaluate()
                if self.step % train.checkpoint_every == 0 or last:
                    self.save_checkpoint()
                if self._stop_requested(stop):
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

    def _stop_requested(self, stop: StopRequest) -> bool:
        if self.accelerator.num_processes == 1:
            return stop.signal_name is not None
        return self.stop_vote.cast(stop.signal_name is not None)

    def check_finite(self) -> None:
        """Stop with a clear error if a loss went non-finite since the start (one host sync)."""
        check_losses(self._first_bad_step, self._sums, LOSS_NAMES, self.run_dir)

    def save_checkpoint(self) -> None:
        """Check that training is still finite, then write a checkpoint (every process)."""
        self.check_finite()
        check_weights((self.g_module, self.d_module), self.step, self.run_dir)
        # Counters are saved by the main process only: make every process's the same first.
        self._sums.copy_(self.accelerator.reduce(self._sums, reduction="mean"))
        self._share_batch_norm_statistics()
        self.checkpoints.save(self.step, dump_recipe(self.recipe))

    def log_metrics(self, steps_per_second: float) -> dict[str, Any]:
        """Average the losses since the last call across processes, then print and log them."""
        self.check_finite()
        d_updates, g_updates, penalty_updates = self._counts
        counts = torch.tensor(
            [d_updates, d_updates, g_updates, penalty_updates], device=self._sums.device
        )
        means = self._sums / counts  # NaN where no update of that kind ran (nothing to report)
        values = self.accelerator.reduce(means, reduction="mean").tolist()
        self._sums.zero_()
        self._counts = [0, 0, 0]
        record: dict[str, Any] = dict(zip(LOSS_NAMES, values, strict=True))
        record["d_loss"] = record["d_loss_real"] + record["d_loss_fake"]
        if not self.regularizer.every:
            del record["d_penalty"]
        images = (
            self.batch_size * self.recipe.train.grad_accumulation * self.accelerator.num_processes
        )
        record["images_per_sec"] = round(steps_per_second * images, 2)
        if self._skipped:
            record["skipped_updates"] = self._skipped
        if any(self._skipped_fp16):
            record["fp16_skipped_d_steps"], record["fp16_skipped_g_steps"] = self._skipped_fp16
        self.reporter.record(
            self.step,
            record,
            f"step {self.step}/{self.recipe.train.steps}  d_loss {record['d_loss']:.4f} "
            f"(real {record['d_loss_real']:.4f}, fake {record['d_loss_fake']:.4f})  "
            f"g_loss {record['g_loss']:.4f}  {record['images_per_sec']:.1f} img/s",
        )
        return record

    def evaluate(self) -> dict[str, Any]:
        """Measure sample quality (every process makes its share), then log it."""
        results = self.evaluator(self.sampling_generator)
        self.reporter.record(
            self.step,
            {f"eval/{k}": v for k, v in results.items() if isinstance(v, int | float)},
            f"step {self.step}  {self.evaluator.describe(results)}",
        )
        return results

    def save_samples(self) -> None:
        """Write the grid of the fixed noise's samples (eval mode) and log it."""
        self.reporter.samples(
            self.sampling_generator, self.fixed_noise, self.step, labels=self.fixed_labels
        )

    def _share_batch_norm_statistics(self) -> None:
        # D's statistics also move in G's updates, where D runs outside DDP: align them.
        if self.batch_norm == "broadcast":
            parallel.broadcast_buffers(self.accelerator, self.g_module, self.d_module)

    def finish(self) -> None:
        """Export the networks and write the GIF and loss plot; close the trackers."""
        self._share_batch_norm_statistics()
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            info = {"step": self.step, "recipe": self.recipe.name, "dataset": self.recipe.data.name}
            save_model(
                self.sampling_generator,
                self.run_dir / "export" / "generator",
                ema=self.ema is not None,
                **info,
            )
            if self.recipe.train.export_discriminator:
                save_model(self.d_module, self.run_dir / "export" / "discriminator", **info)
        self.reporter.close()
        self.accelerator.end_training()

    def _describe(self) -> None:
        info = parallel.run_info(
            self.accelerator, self.recipe, self.batch_size, self.batch_norm, self.precision_from
        )
        self.accelerator.print(f"gankit: {self.recipe.name} -> {self.run_dir}")
        parallel.announce(self.accelerator, info, self.g_module, self.d_module, self.wandb_mode)
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
