"""The training loop on Accelerate: one process or many, CPU or GPU, fp32, bf16 or fp16.

Outputs, tracking and export live in their own modules; this file only builds the parts, runs
the schedule's phases each iteration, and calls those modules at the right steps.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gankit import outputs, tracking
from gankit.data import image_shape
from gankit.errors import GankitError
from gankit.export import save_model
from gankit.models.base import Generator, sample_noise
from gankit.recipe import AdamParams, RecipeBase, dump_recipe, recipe_dict
from gankit.registry import DATASETS, DISCRIMINATORS, GENERATORS, LOSSES, SCHEDULES

LOSS_NAMES = ("d_loss_real", "d_loss_fake", "g_loss")


def make_adam(parameters: Any, params: AdamParams) -> torch.optim.Adam:
    """Adam from a recipe's optimizer section."""
    return torch.optim.Adam(
        parameters,
        lr=params.lr,
        betas=params.betas,
        eps=params.eps,
        weight_decay=params.weight_decay,
    )


class Trainer:
    """Builds a recipe's components and trains them; `fit()` runs to `train.steps`."""

    def __init__(self, recipe: RecipeBase) -> None:
        self.recipe = recipe
        self.run_dir = recipe.run_dir
        if recipe.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise GankitError(
                "mixed_precision: fp16 needs a CUDA GPU (on CPU autocast ignores fp16); "
                "use bf16 or no on this machine"
            )
        self.wandb_mode = tracking.wandb_mode(recipe.wandb)
        # Accelerate keeps one global state per process; a second run in the same process (a
        # notebook, a sweep) may change the precision, so start that state afresh. The process
        # group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            mixed_precision=recipe.mixed_precision,
            log_with="wandb" if self.wandb_mode != "disabled" else None,
            project_dir=str(self.run_dir),
            dataloader_config=DataLoaderConfiguration(
                use_seedable_sampler=True, data_seed=recipe.train.seed
            ),
        )
        seed = recipe.train.seed
        set_seed(seed)  # identical initial weights on every process
        dataset = DATASETS.build(recipe.data)
        self.image_shape = image_shape(dataset)
        generator = GENERATORS.build(recipe.generator, image_shape=self.image_shape)
        discriminator = DISCRIMINATORS.build(recipe.discriminator, image_shape=self.image_shape)
        if not isinstance(generator, Generator):
            raise GankitError(
                f"generator '{recipe.generator.name}' must subclass gankit.Generator "
                "(it provides z_dim, noise and sample)"
            )
        self.loss = LOSSES.build(recipe.loss)
        self.schedule = SCHEDULES.build(recipe.schedule)
        loader = DataLoader(
            dataset,
            batch_size=recipe.data.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=recipe.data.num_workers,
        )
        if len(loader) == 0:
            raise GankitError(
                f"data.batch_size {recipe.data.batch_size} is larger than the dataset "
                f"({len(dataset)} images); lower it"
            )
        g_optimizer = make_adam(generator.parameters(), recipe.optim.generator)
        d_optimizer = make_adam(discriminator.parameters(), recipe.optim.discriminator)
        self.G, self.D, self.g_optimizer, self.d_optimizer, self.loader = self.accelerator.prepare(
            generator, discriminator, g_optimizer, d_optimizer, loader
        )
        self.g_module: Generator = self.accelerator.unwrap_model(self.G)
        self.d_module: torch.nn.Module = self.accelerator.unwrap_model(self.D)
        # Same fixed noise on every process, drawn apart from the training RNG.
        fixed = torch.Generator().manual_seed(seed)
        self.fixed_noise = sample_noise(
            generator.noise, recipe.train.n_samples, generator.z_dim, generator=fixed
        ).to(self.accelerator.device)
        set_seed(seed, device_specific=True)  # each process draws its own training noise
        self.step = 0
        self.metrics = outputs.MetricsLog(self.run_dir / outputs.METRICS_FILE)
        device = self.accelerator.device
        self._d_sums = torch.zeros(2, device=device)
        self._g_sum = torch.zeros((), device=device)
        self._d_count = self._g_count = 0

    # ---- one iteration -------------------------------------------------------------------
    def train_step(self, real: torch.Tensor, z: torch.Tensor) -> None:
        """Run the schedule's phases for one iteration on device tensors (no host sync)."""
        for phase in self.schedule.phases(self.step):
            if phase.network == "discriminator":
                self._discriminator_step(real, z)
            else:
                self._generator_step(z)
        self.step += 1

    def _discriminator_step(self, real: torch.Tensor, z: torch.Tensor) -> None:
        with self.accelerator.autocast():
            with torch.no_grad():
                fake = self.G(z)
            real_logits, fake_logits = self.D(real), self.D(fake)
        loss_real, loss_fake = self.loss.discriminator(real_logits, fake_logits)
        self.d_optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss_real + loss_fake)
        self.d_optimizer.step()
        self._d_sums += torch.stack((loss_real.detach(), loss_fake.detach()))
        self._d_count += 1

    def _generator_step(self, z: torch.Tensor) -> None:
        # D is frozen and called unwrapped: its weights get no gradient and DDP syncs nothing.
        self.d_module.requires_grad_(False)
        with self.accelerator.autocast():
            fake_logits = self.d_module(self.G(z))
        loss = self.loss.generator(fake_logits)
        self.g_optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.g_optimizer.step()
        self.d_module.requires_grad_(True)
        self._g_sum += loss.detach()
        self._g_count += 1

    # ---- the loop ------------------------------------------------------------------------
    def batches(self) -> Iterator[torch.Tensor]:
        """Real images forever, reshuffled each epoch (order fixed by the seed and epoch)."""
        epoch = 0
        while True:
            self.loader.set_epoch(epoch)
            for batch in self.loader:
                yield batch[0] if isinstance(batch, list | tuple) else batch
            epoch += 1

    def fit(self) -> Path:
        """Train to `train.steps`, writing samples, metrics, the GIF, the loss plot and exports."""
        train = self.recipe.train
        main = self.accelerator.is_main_process
        if main:
            self._start_run_dir()
        tracking.start_tracking(
            self.accelerator,
            self.recipe.wandb,
            self.wandb_mode,
            recipe_dict(self.recipe),
            self.run_dir,
        )
        self._describe()
        self.save_samples()
        progress = tqdm(
            total=train.steps, initial=self.step, disable=not (main and train.progress), unit="it"
        )
        window_start, window_steps = time.perf_counter(), 0
        batches = self.batches()
        while self.step < train.steps:
            real = next(batches)
            z = self.g_module.sample_noise(real.shape[0])
            self.train_step(real, z)
            window_steps += 1
            progress.update(1)
            if self.step % train.log_every == 0 or self.step == train.steps:
                record = self.log_metrics(window_steps / (time.perf_counter() - window_start))
                progress.set_postfix(
                    d_loss=f"{record['d_loss']:.3f}", g_loss=f"{record['g_loss']:.3f}"
                )
                window_start, window_steps = time.perf_counter(), 0
            if self.step % train.sample_every == 0 or self.step == train.steps:
                self.save_samples()
        progress.close()
        self.finish()
        return self.run_dir

    def log_metrics(self, steps_per_second: float) -> dict[str, Any]:
        """Average the losses since the last call across processes, then print and log them."""
        sums = torch.cat(
            (self._d_sums / max(self._d_count, 1), (self._g_sum / max(self._g_count, 1))[None])
        )
        values = self.accelerator.reduce(sums, reduction="mean").tolist()
        self._d_sums.zero_()
        self._g_sum.zero_()
        self._d_count = self._g_count = 0
        record: dict[str, Any] = {"step": self.step, **dict(zip(LOSS_NAMES, values, strict=True))}
        record["d_loss"] = record["d_loss_real"] + record["d_loss_fake"]
        images = self.recipe.data.batch_size * self.accelerator.num_processes
        record["images_per_sec"] = round(steps_per_second * images, 2)
        if self.accelerator.is_main_process:
            self.metrics.write(record)
            tqdm.write(
                f"step {self.step}/{self.recipe.train.steps}  d_loss {record['d_loss']:.4f} "
                f"(real {record['d_loss_real']:.4f}, fake {record['d_loss_fake']:.4f})  "
                f"g_loss {record['g_loss']:.4f}  {record['images_per_sec']:.1f} img/s"
            )
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.step)
        return record

    @torch.no_grad()
    def save_samples(self) -> None:
        """Write the grid of the fixed noise's samples (eval mode) and log it."""
        if not self.accelerator.is_main_process:
            return
        was_training = self.g_module.training
        self.g_module.eval()
        with self.accelerator.autocast():
            images = self.g_module(self.fixed_noise)
        self.g_module.train(was_training)
        grid = outputs.image_grid(images)
        outputs.save_image(grid, outputs.sample_path(self.run_dir, self.step))
        tracking.log_image(self.accelerator, "samples", grid, self.step)

    def finish(self) -> None:
        """Export the networks and write the GIF and loss plot; close the trackers."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            info = {"step": self.step, "recipe": self.recipe.name}
            save_model(self.g_module, self.run_dir / "export" / "generator", **info)
            if self.recipe.train.export_discriminator:
                save_model(self.d_module, self.run_dir / "export" / "discriminator", **info)
            outputs.write_gif(self.run_dir)
            outputs.plot_losses(self.metrics.read(), self.run_dir / outputs.LOSS_PLOT_FILE)
            tqdm.write(f"done: outputs in {self.run_dir}")
        self.accelerator.end_training()

    def _start_run_dir(self) -> None:
        if self.metrics.path.exists() or (self.run_dir / outputs.SAMPLES_DIR).exists():
            tqdm.write(
                f"gankit: {self.run_dir} holds an earlier run; its samples and metrics are replaced"
            )
            self.metrics.path.unlink(missing_ok=True)
            shutil.rmtree(self.run_dir / outputs.SAMPLES_DIR, ignore_errors=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "recipe.yaml").write_text(dump_recipe(self.recipe))

    def _describe(self) -> None:
        count = (
            sum(p.numel() for p in self.g_module.parameters()),
            sum(p.numel() for p in self.d_module.parameters()),
        )
        self.accelerator.print(
            f"gankit: {self.recipe.name} -> {self.run_dir} | {self.accelerator.num_processes} "
            f"process(es) on {self.accelerator.device} | precision {self.recipe.mixed_precision}"
            f" | G {count[0]:,} params, D {count[1]:,} params | W&B {self.wandb_mode}"
        )


def train(recipe: RecipeBase) -> Path:
    """Train a validated recipe; returns the run folder."""
    return Trainer(recipe).fit()
