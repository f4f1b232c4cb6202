"""Time gankit's training iteration against a plain-PyTorch loop of the same networks.

    python scripts/bench.py RECIPE [--device cpu|cuda] [--iters N] [--json FILE] [key=value ...]

Both run in this process on the same device, alternating in rounds, with warm-up, device
synchronisation and medians. The plain loop is what one would write by hand: the same networks
(built from the recipe), Adam, the recipe's loss function, the alternating schedule's D and G
updates with the same noise, batches from a DataLoader. It prints ms per iteration, images/s
and the ratio gankit / plain (1.05 = 5% overhead), then the same for a run with logging,
sample grids and checkpoints every `--outputs-every` steps, so their cost is visible.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from gankit.recipe import load_recipe
from gankit.registry import DATASETS, DISCRIMINATORS, GENERATORS, LOSSES
from gankit.trainer import Trainer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainLoop:
    """The hand-written baseline: no framework, same networks, optimizers and schedule."""

    def __init__(self, recipe, device: torch.device) -> None:
        torch.manual_seed(recipe.train.seed)
        dataset = DATASETS.build(recipe.data)
        if recipe.data.subset:
            dataset = torch.utils.data.Subset(dataset, range(recipe.data.subset))
        shape = tuple(dataset[0][0].shape)
        self.G = GENERATORS.build(recipe.generator, image_shape=shape).to(device)
        self.D = DISCRIMINATORS.build(recipe.discriminator, image_shape=shape).to(device)
        g, d = recipe.optim.generator, recipe.optim.discriminator
        self.g_opt = torch.optim.Adam(self.G.parameters(), lr=g.lr, betas=g.betas)
        self.d_opt = torch.optim.Adam(self.D.parameters(), lr=d.lr, betas=d.betas)
        self.loader = DataLoader(dataset, recipe.data.batch_size, shuffle=True, drop_last=True)
        if recipe.schedule.name != "alternating":
            raise SystemExit("bench.py's plain loop implements the alternating schedule only")
        self.loss = LOSSES.build(recipe.loss)
        self.d_steps, self.g_steps = recipe.schedule.d_steps, recipe.schedule.g_steps
        self.device, self.batches = device, iter(())

    def next_real(self) -> torch.Tensor:
        try:
            return next(self.batches)[0].to(self.device, non_blocking=True)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)[0].to(self.device, non_blocking=True)

    def step(self) -> None:
        real = self.next_real()
        z = self.G.sample_noise(real.shape[0])
        for _ in range(self.d_steps):
            with torch.no_grad():
                fake = self.G(z)
            d_loss = sum(self.loss.discriminator(self.D(real), self.D(fake)))
            self.d_opt.zero_grad()
            d_loss.backward()
            self.d_opt.step()
        for _ in range(self.g_steps):
            g_loss = self.loss.generator(self.D(self.G(z)))
            self.g_opt.zero_grad()
            g_loss.backward()
            self.g_opt.step()


def time_steps(step, device: torch.device, count: int) -> list[float]:
    times = []
    for _ in range(count):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def figures(seconds: list[float], batch: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"ms_per_iter": round(median * 1000, 3), "images_per_sec": round(batch / median, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=...")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the variants")
    parser.add_argument("--outputs-every", type=int, default=10)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_name == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    os.environ.setdefault("WANDB_MODE", "disabled")
    device = torch.device(device_name)

    scratch = Path(tempfile.mkdtemp(prefix="gankit-bench-"))
    steady = [f"output_dir={scratch / 'eager'}", "train.progress=false", "train.steps=1000000000"]
    recipe = load_recipe(args.recipe, [*args.overrides, *steady])
    trainer = Trainer(recipe)
    plain = PlainLoop(recipe, trainer.accelerator.device)
    batches = trainer.batches()

    def gankit_step() -> None:
        trainer.train_step(*trainer.next_inputs(batches))

    time_steps(gankit_step, device, args.warmup)
    time_steps(plain.step, device, args.warmup)
    timings: dict[str, list[float]] = {"gankit": [], "plain": []}
    for _ in range(args.rounds):  # alternate, so drift in the machine hits both alike
        timings["plain"] += time_steps(plain.step, device, args.iters)
        timings["gankit"] += time_steps(gankit_step, device, args.iters)

    every = args.outputs_every
    cadence = [
        f"train.log_every={every}",
        f"train.sample_every={every}",
        f"train.checkpoint_every={every}",
        "train.progress=false",
    ]
    steps = args.warmup + args.iters
    with_outputs = Trainer(
        load_recipe(
            args.recipe,
            [
                *args.overrides,
                *cadence,
                f"train.steps={steps}",
                f"output_dir={scratch / 'outputs'}",
            ],
        )
    )
    stamps: list[float] = []
    original = with_outputs.train_step

    def stamped(*inputs: torch.Tensor | None) -> None:
        stamps.append(time.perf_counter())
        original(*inputs)

    with_outputs.train_step = stamped
    with_outputs.fit()
    # step i's time: from its start to the next step's start (includes outputs written after it)
    timed = stamps[args.warmup :]
    intervals = [later - earlier for earlier, later in itertools.pairwise(timed)]

    batch = trainer.batch_size * recipe.train.grad_accumulation
    results = {
        "device": str(device)
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "recipe": args.recipe,
        "overrides": args.overrides,
        "iterations": args.iters * args.rounds,
        "plain": figures(timings["plain"], batch),
        "gankit": figures(timings["gankit"], batch),
        "gankit_with_outputs": {
            **figures(intervals, batch),
            "mean_ms_per_iter": round(statistics.mean(intervals) * 1000, 3),
            "outputs_every": every,
        },
    }
    results["ratio"] = round(results["gankit"]["ms_per_iter"] / results["plain"]["ms_per_iter"], 3)
    results["ratio_with_outputs"] = round(
        results["gankit_with_outputs"]["mean_ms_per_iter"] / results["plain"]["ms_per_iter"], 3
    )
    for name in ("plain", "gankit", "gankit_with_outputs"):
        row = results[name]
        print(
            f"{name:<20} {row['ms_per_iter']:>10.2f} ms/iter {row['images_per_sec']:>10.1f} img/s"
        )
    ratios = results["ratio"], results["ratio_with_outputs"]
    print(f"ratio gankit/plain {ratios[0]:.3f}; with outputs (mean) {ratios[1]:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
