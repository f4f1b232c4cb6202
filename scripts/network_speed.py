"""Parameter counts and training speed of recipes' networks, at one or more image sizes.

    OMP_NUM_THREADS=1 python scripts/network_speed.py RECIPE [RECIPE ...] [--sizes 32,64]
        [--iters N] [--warmup N] [--json FILE] [-- key=value ...]

Each recipe is built as `gankit train` builds it (with `data.size` set to each size) and its
whole training iteration is timed: D and G updates, regularizers at their intervals, EMA,
augmentation. `--iters` should be a multiple of the longest regularizer interval (16 for lazy
R1), so that the figure averages whole cycles. Besides wall-clock images per second it reports
images per second of the process's CPU time: with `OMP_NUM_THREADS=1` and `data.num_workers=0`
that is the speed on one core even on a busy machine, which is what sets equal-compute budgets
(`train.kimg`) when networks are compared.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from gankit.config.recipe import load_recipe
from gankit.training.trainer import Trainer


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure(recipe: str, size: int, overrides: list[str], iters: int, warmup: int, scratch: Path):
    """One recipe at one size: parameter counts and images per second of the whole iteration."""
    trainer = Trainer(
        load_recipe(
            recipe,
            [
                *overrides,
                f"data.size={size}",
                f"output_dir={scratch / f'{Path(recipe).stem}-{size}'}",
                "train.progress=false",
                "train.steps=1000000000",
            ],
        )
    )
    batches = trainer.inputs.batches()

    def step() -> None:
        trainer.iteration.run(trainer.inputs.next(batches, trainer.step))

    for _ in range(warmup):
        step()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(iters):
        step()
    seconds = (time.perf_counter() - start) / iters
    cpu_seconds = (time.process_time() - cpu_start) / iters
    batch = trainer.parts.batch_size * trainer.recipe.train.grad_accumulation
    return {
        "recipe": Path(recipe).stem,
        "size": size,
        "g_params": parameters(trainer.parts.generator),
        "d_params": parameters(trainer.parts.discriminator),
        "batch": batch,
        "ms_per_iter": round(seconds * 1000, 1),
        "images_per_sec": round(batch / seconds, 1),
        "cpu_ms_per_iter": round(cpu_seconds * 1000, 1),
        "images_per_cpu_sec": round(batch / cpu_seconds, 1),
        "threads": torch.get_num_threads(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--sizes", default="32,64")
    parser.add_argument("--iters", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--json", type=Path)
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in args.recipes:
            for size in (int(s) for s in args.sizes.split(",")):
                row = measure(recipe, size, overrides, args.iters, args.warmup, Path(scratch))
                rows.append(row)
                print(
                    f"{row['recipe']:<20} {size:>3}px  G {row['g_params'] / 1e6:6.2f}M  "
                    f"D {row['d_params'] / 1e6:6.2f}M  batch {row['batch']:>3}  "
                    f"{row['ms_per_iter']:8.1f} ms/iter  {row['images_per_sec']:7.1f} img/s  "
                    f"{row['images_per_cpu_sec']:7.1f} img/CPU-s",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
