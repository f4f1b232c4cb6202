"""Time gankit's training iteration against a plain-PyTorch loop of the same networks.

    python scripts/bench.py RECIPE [--device cpu|cuda] [--modes eager,compile,graph]
        [--iters N] [--rounds N] [--json FILE] [--markdown FILE] [key=value ...]

All loops run in this process on the same device, alternating in rounds of timed blocks (after
a warm-up, synchronised with the device at both ends of a block); the figures are medians over
the rounds. The plain loop is what one would write by hand: the same networks (built from the
recipe), Adam, the recipe's loss function, the alternating schedule's D and G updates with the
same noise, batches from a DataLoader; a recipe with what it leaves out (a regularizer, EMA,
mixed precision, ...) is refused, since the two would not do the same work. gankit runs in each
of `--modes`: `eager` (the recipe as it is), `compile` (perf.compile) and `graph`
(perf.cuda_graph with the dataset on the device and fused Adam; GPU only). On a GPU every loop
uses TF32. It prints ms per iteration, images/s and the ratio gankit / plain (1.05 = 5%
overhead; the top-level `ratio` in `--json` is the eager one), then the same for an eager run
with logging, sample grids and checkpoints every `--outputs-every` steps, so their cost is
visible. `--markdown FILE` writes the README table. A fast mode that fails is reported in
its row (and the exit code is 1); the other loops are still measured."""

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

from gankit.components.losses import Logits, named_parts
from gankit.config.recipe import load_recipe
from gankit.config.registry import DATASETS, DISCRIMINATORS, GENERATORS, LOSSES
from gankit.core.errors import GankitError
from gankit.training.iteration import Inputs
from gankit.training.optim import make_adam
from gankit.training.parallel import resolve_precision
from gankit.training.trainer import Trainer


class BenchError(GankitError):
    """A recipe or option the benchmark cannot compare fairly."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainLoop:
    """The hand-written baseline: no framework, same networks, optimizers and schedule (for
    recipes that `check_comparable` accepts)."""

    def __init__(self, recipe, device: torch.device) -> None:
        torch.manual_seed(recipe.train.seed)
        dataset = DATASETS.build(recipe.data)
        if recipe.data.subset:
            dataset = torch.utils.data.Subset(dataset, range(recipe.data.subset))
        shape = tuple(dataset[0][0].shape)
        self.G = GENERATORS.build(recipe.generator, image_shape=shape).to(device)
        self.D = DISCRIMINATORS.build(recipe.discriminator, image_shape=shape).to(device)
        self.g_opt = make_adam(self.G.parameters(), recipe.optim.generator)  # torch's Adam
        self.d_opt = make_adam(self.D.parameters(), recipe.optim.discriminator)
        self.loader = DataLoader(  # as one would write it: pinned batches, copied without a wait
            dataset,
            recipe.data.batch_size,
            shuffle=True,
            drop_last=True,
            pin_memory=device.type == "cuda",
        )
        self.loss = named_parts(LOSSES.build(recipe.loss))
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
            d_loss = sum(self.loss.discriminator(Logits(self.D(real), self.D(fake))).values())
            self.d_opt.zero_grad()
            d_loss.backward()
            self.d_opt.step()
        for _ in range(self.g_steps):
            g_loss = sum(self.loss.generator(Logits(None, self.D(self.G(z)))).values())
            self.g_opt.zero_grad()
            g_loss.backward()
            self.g_opt.step()


def check_comparable(recipe) -> None:
    """Refuse a recipe that asks for what the plain loop leaves out (it would time less work)."""
    optimizers = {"generator": recipe.optim.generator, "discriminator": recipe.optim.discriminator}
    precision = resolve_precision(recipe)[0].mixed_precision  # the recipe's, else the launcher's
    missing = [
        f"the {recipe.schedule.name} schedule (only alternating)"
        if recipe.schedule.name != "alternating"
        else "",
        *(f"the {section.name} regularizer" for section in recipe.all_regularizers()),
        f"the {recipe.augment.name} augmentation" if recipe.augment.name != "none" else "",
        f"the {recipe.loss.name} loss (it compares real and fake logits in G's update)"
        if getattr(named_parts(LOSSES.build(recipe.loss)), "generator_uses_real", False)
        else "",
        "an EMA of G (ema.decay or ema.half_life_kimg)" if recipe.ema.on else "",
        f"mixed precision ({precision})" if precision != "no" else "",
        "gradient accumulation" if recipe.train.grad_accumulation > 1 else "",
        "class-conditional models" if getattr(recipe.generator, "num_classes", 0) else "",
        *(
            f"a learning-rate schedule (optim.{name})"
            for name, opt in optimizers.items()
            if opt.lr_schedule != "constant"
            or opt.warmup_steps
            or not isinstance(opt.lr, float)
            or not isinstance(opt.betas[1], float)
        ),
    ]
    missing = [item for item in missing if item]
    if missing:
        raise BenchError(
            f"the plain loop does not implement {'; '.join(missing)}, so it would not be the "
            "same training: benchmark the recipe without them (with overrides such as "
            "regularizer.name=none ema.decay=0)"
        )


# The gankit variants: the eager default, and the fast paths added on top of it.
MODES: dict[str, list[str]] = {
    "eager": [],
    "compile": ["perf.compile=true"],
    "graph": ["perf.cuda_graph=true", "perf.data_on_device=true", "perf.fused_adam=true"],
}


def time_block(step, device: torch.device, count: int) -> float:
    """Seconds per iteration over `count` iterations run back to back, as in training (the
    host may run ahead of the device), synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / count


def figures(seconds: list[float], batch: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"ms_per_iter": round(median * 1000, 3), "images_per_sec": round(batch / median, 1)}


def gankit_step(trainer: Trainer):
    batches = trainer.inputs.batches()

    def step() -> None:
        trainer.iteration.run(trainer.inputs.next(batches, trainer.step))

    return step


def with_outputs_intervals(args, overrides: list[str], scratch: Path) -> list[float]:
    """Per-iteration times of a real `fit()` that logs, samples and checkpoints every
    `--outputs-every` steps (from one step's start to the next one's)."""
    every = args.outputs_every
    cadence = [f"train.{key}={every}" for key in ("log_every", "sample_every", "checkpoint_every")]
    steps = args.warmup + args.iters
    trainer = Trainer(
        load_recipe(
            args.recipe,
            [*overrides, *cadence, f"train.steps={steps}", f"output_dir={scratch / 'outputs'}"],
        )
    )
    stamps: list[float] = []
    original = trainer.iteration.run

    def stamped(inputs: Inputs) -> None:
        stamps.append(time.perf_counter())
        original(inputs)

    trainer.iteration.run = stamped
    trainer.fit()
    timed = stamps[args.warmup :]
    return [later - earlier for earlier, later in itertools.pairwise(timed)]


def markdown(results: dict) -> str:
    """The figures as a README table."""
    rows = [
        f"Device: {results['device']}; recipe `{results['recipe']}` "
        f"{' '.join(results['overrides'])}; batch {results['batch']}; TF32 "
        f"{'on' if results['tf32'] else 'off'}; median of {results['rounds']} rounds of "
        f"{results['iters']} iterations.",
        "",
        "| loop | ms / iteration | images / s | time vs plain PyTorch |",
        "| --- | --- | --- | --- |",
        f"| plain PyTorch | {results['plain']['ms_per_iter']:.2f} | "
        f"{results['plain']['images_per_sec']:.0f} | 1.00 |",
    ]
    for mode, row in results["modes"].items():
        if "error" in row:
            rows.append(f"| gankit, {mode} | failed: {row['error']} | | |")
            continue
        rows.append(
            f"| gankit, {mode} | {row['ms_per_iter']:.2f} | {row['images_per_sec']:.0f} | "
            f"{row['ratio']:.2f} |"
        )
    outputs = results["gankit_with_outputs"]
    rows.append(
        f"| gankit, eager, outputs every {outputs['outputs_every']} steps (mean) | "
        f"{outputs['mean_ms_per_iter']:.2f} | "
        f"{results['batch'] * 1000 / outputs['mean_ms_per_iter']:.0f} | "
        f"{results['ratio_with_outputs']:.2f} |"
    )
    return "\n".join(rows) + "\n"


def main() -> int:
    try:
        results = run(parse_args())
    except GankitError as error:  # a user's mistake: one clean line, as the CLI prints it
        print(f"bench.py: error: {error}", file=sys.stderr)
        return 2
    return 1 if any("error" in row for row in results["modes"].values()) else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=...")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--modes", help=f"comma-separated, of {', '.join(MODES)}; default: "
                        "eager on a CPU, all on a GPU")  # fmt: skip
    parser.add_argument("--iters", type=int, default=20, help="iterations per timed block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=3, help="timed blocks per variant")
    parser.add_argument("--outputs-every", type=int, default=10)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--markdown", help="write the figures as a table to this file")
    return parser.parse_args()


def run(args: argparse.Namespace) -> dict:
    """Build every loop, time them in alternating rounds, print and write the figures."""
    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_name == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    os.environ.setdefault("WANDB_MODE", "disabled")
    device = torch.device(device_name)
    modes = (args.modes or ("eager" if device.type == "cpu" else ",".join(MODES))).split(",")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or "eager" not in modes:
        raise BenchError(f"--modes takes eager plus any of {', '.join(MODES)}; got {args.modes}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda, but torch sees no CUDA GPU here; use --device cpu")
    if "graph" in modes and device.type != "cuda":
        raise BenchError("the graph mode needs --device cuda")
    # TF32 for every loop alike on a GPU (the plain loop included): the comparison is of loops
    tf32 = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    overrides = [*args.overrides, *(["perf.tf32=true"] if tf32 else [])]
    check_comparable(load_recipe(args.recipe, overrides))  # before anything is built

    with tempfile.TemporaryDirectory(prefix="gankit-bench-") as folder:  # runs' checkpoints
        results = measure(args, device, modes, overrides, Path(folder))
    report(results, args)
    return results


def failure(mode: str, error: Exception) -> str:
    """Say that a mode failed; returns the error, in one line, for its row."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]
    print(f"bench.py: the {mode} mode failed ({text})", file=sys.stderr)
    return text


def measure(
    args: argparse.Namespace,
    device: torch.device,
    modes: list[str],
    overrides: list[str],
    scratch: Path,
) -> dict:
    """The timings of every loop, as the figures `--json` writes."""
    steps: dict[str, object] = {}
    trainers: dict[str, Trainer] = {}
    failed: dict[str, str] = {}  # a fast path that fails is reported; the others still run
    for mode in modes:
        steady = [f"output_dir={scratch / mode}", "train.progress=false", "train.steps=1000000000"]
        try:
            trainers[mode] = Trainer(load_recipe(args.recipe, [*overrides, *MODES[mode], *steady]))
            steps[mode] = gankit_step(trainers[mode])
            time_block(steps[mode], device, args.warmup)
        except Exception as error:
            if mode == "eager":
                raise
            failed[mode] = failure(mode, error)
            steps.pop(mode, None)
            trainers.pop(mode, None)  # and its memory
    recipe = trainers["eager"].recipe
    plain = PlainLoop(recipe, trainers["eager"].accelerator.device)
    steps["plain"] = plain.step
    time_block(plain.step, device, args.warmup)
    timings: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):  # alternate, so drift in the machine hits all alike
        for name, step in list(steps.items()):
            try:
                timings[name].append(time_block(step, device, args.iters))
            except Exception as error:
                if name in ("eager", "plain"):
                    raise
                failed[name] = failure(name, error)
                del steps[name]
    intervals = with_outputs_intervals(args, overrides, scratch)

    batch = trainers["eager"].parts.batch_size * recipe.train.grad_accumulation
    plain_figures = figures(timings["plain"], batch)
    results = {
        "device": str(device)
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "recipe": args.recipe,
        "overrides": args.overrides,
        "batch": batch,
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "iters": args.iters,
        "rounds": args.rounds,
        "plain": plain_figures,
        "modes": {},
        "gankit_with_outputs": {
            **figures(intervals, batch),
            "mean_ms_per_iter": round(statistics.mean(intervals) * 1000, 3),
            "outputs_every": args.outputs_every,
        },
    }
    for mode in modes:
        if mode in failed:
            results["modes"][mode] = {"error": failed[mode]}
            continue
        row = figures(timings[mode], batch)
        row["ratio"] = round(row["ms_per_iter"] / plain_figures["ms_per_iter"], 3)
        row["speedup"] = round(plain_figures["ms_per_iter"] / row["ms_per_iter"], 3)
        results["modes"][mode] = row
    graphs = (
        trainers["graph"].iteration.graphs if "graph" in steps and "graph" in trainers else None
    )
    if graphs is not None:
        results["modes"]["graph"]["captured_graphs"] = len(graphs.graphs)
    results["gankit"] = {k: results["modes"]["eager"][k] for k in ("ms_per_iter", "images_per_sec")}
    results["ratio"] = results["modes"]["eager"]["ratio"]
    results["ratio_with_outputs"] = round(
        results["gankit_with_outputs"]["mean_ms_per_iter"] / plain_figures["ms_per_iter"], 3
    )
    return results


def report(results: dict, args: argparse.Namespace) -> None:
    """Print the figures; write them to `--json` and `--markdown`."""
    tf32 = "on" if results["tf32"] else "off"
    print(f"{results['device']}, batch {results['batch']}, TF32 {tf32}")
    for name, row in [("plain", results["plain"]), *results["modes"].items()]:
        if "error" in row:
            print(f"{name:<20} failed: {row['error']}")
            continue
        print(
            f"{name:<20} {row['ms_per_iter']:>10.2f} ms/iter {row['images_per_sec']:>10.1f} img/s"
            + (f"  x{row['ratio']:.3f} of plain" if name != "plain" else "")
        )
    ratios = results["ratio"], results["ratio_with_outputs"]
    print(f"ratio gankit/plain {ratios[0]:.3f}; with outputs (mean) {ratios[1]:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
