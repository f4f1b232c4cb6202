"""DCGAN, R3GAN and StyleGAN2 on the colour emoji at equal CPU time: train, measure, tabulate.

    python scripts/emoji_comparison.py --speeds SPEEDS.json [...] [--minutes 20] [--seeds 0,1]
        [--data ../shared/data/emoji/google] [--classifier emoji32.safetensors] [--out DIR]

Each network trains for as many images as it processes in `--minutes` of one CPU core: its
images per CPU-second at 32x32 come from `scripts/network_speed.py --json` (process CPU time
with one thread, so the budget does not depend on what else the machine runs), and become the
run's `train.kimg`. Runs go two at a time, one thread each, data decoded in the training
process. Each export is then scored with `gankit eval` on the classifier's features (2,000
samples against the emoji folder), and a grid of 64 samples is written. `--out` gets the runs,
`results.json` and `table.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECIPES = {  # network: (recipe, overrides that make it a 32x32 run on the emoji)
    "dcgan": ("recipes/folder_dcgan64.yaml", ["data.size=32"]),
    "r3gan": ("recipes/r3gan_emoji32.yaml", []),
    "stylegan2": ("recipes/stylegan2_emoji32.yaml", []),
}
METRICS = ("frechet_distance", "classifier_score", "classes_covered", "precision", "recall")


def run(command: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    with log.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")


def train_and_score(network: str, seed: int, kimg: float, args: argparse.Namespace) -> dict:
    recipe, overrides = RECIPES[network]
    run_dir = args.out / f"{network}-seed{seed}"
    gankit = [sys.executable, "-m", "gankit.cli"]
    if not (run_dir / "export" / "generator").exists():
        run(
            [
                *gankit,
                "train",
                recipe,
                *overrides,
                f"data.root={args.data}",
                "data.num_workers=0",
                "train.steps=null",
                f"train.kimg={kimg:.3f}",
                f"train.seed={seed}",
                "train.progress=false",
                "train.checkpoint_every=1000",
                "tracking.log_with=[]",
                f"output_dir={run_dir}",
            ],
            args.out / f"{network}-seed{seed}.train.log",
        )
    scores = run_dir / "eval.json"
    if not scores.exists():
        run(
            [
                *gankit,
                "eval",
                str(run_dir / "export" / "generator"),
                "--classifier",
                str(args.classifier),
                "--n",
                "2000",
                "--out",
                str(scores),
            ],
            args.out / f"{network}-seed{seed}.eval.log",
        )
        run(
            [
                *gankit,
                "sample",
                str(run_dir / "export" / "generator"),
                "--n",
                "64",
                "--out",
                str(args.out / f"{network}-seed{seed}.png"),
            ],
            args.out / f"{network}-seed{seed}.sample.log",
        )
    return {"network": network, "seed": seed, "kimg": kimg, **json.loads(scores.read_text())}


def table(results: list[dict], speeds: dict[str, float], minutes: float) -> str:
    """A row per network: its budget, speed, and each metric as seed / seed / ..."""
    seeds = sorted({row["seed"] for row in results})
    header = [f"{m} (seeds {' / '.join(map(str, seeds))})" for m in METRICS]
    lines = [
        f"| network | kimg in {minutes:g} CPU-min | images per CPU-s | {' | '.join(header)} |",
        "| --- " * (3 + len(METRICS)) + "|",
    ]
    for network in RECIPES:
        rows = sorted((r for r in results if r["network"] == network), key=lambda r: r["seed"])
        if not rows:
            continue
        cells = [" / ".join(_figure(row.get(m)) for row in rows) for m in METRICS]
        lines.append(
            f"| {network} | {rows[0]['kimg']:.1f} | {speeds[network]:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _figure(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def side_by_side(out: Path, seed: int) -> Path:
    """One image of each network's grid for `seed`, left to right, labelled."""
    from PIL import Image, ImageDraw

    grids = [Image.open(out / f"{network}-seed{seed}.png").convert("RGB") for network in RECIPES]
    gap, label = 8, 16
    width = sum(grid.width for grid in grids) + gap * (len(grids) - 1)
    canvas = Image.new("RGB", (width, max(grid.height for grid in grids) + label), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for network, grid in zip(RECIPES, grids, strict=True):
        canvas.paste(grid, (x, label))
        draw.text((x + 2, 2), network, fill="black")
        x += grid.width + gap
    path = out / f"grids-seed{seed}.png"
    canvas.save(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", type=Path, nargs="+", required=True)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--data", default="../shared/data/emoji/google")
    parser.add_argument("--classifier", type=Path, default=Path("classifiers/emoji32.safetensors"))
    parser.add_argument("--out", type=Path, default=Path("runs/emoji_comparison"))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument(
        "--table-only", action="store_true", help="tabulate the runs already scored in --out"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    measured = {
        row["recipe"]: row
        for file in args.speeds
        for row in json.loads(file.read_text())
        if row["size"] == 32
    }
    speeds = {
        network: measured[Path(recipe).stem]["images_per_cpu_sec"]
        for network, (recipe, _) in RECIPES.items()
    }
    jobs = [
        (network, int(seed), speeds[network] * args.minutes * 60 / 1000)
        for seed in args.seeds.split(",")
        for network in RECIPES
    ]
    if args.table_only:
        results = [
            {"network": n, "seed": seed, "kimg": kimg, **json.loads(scores.read_text())}
            for n, seed, kimg in jobs
            if (scores := args.out / f"{n}-seed{seed}" / "eval.json").exists()
        ]
    else:
        with ThreadPoolExecutor(args.parallel) as pool:
            results = list(pool.map(lambda job: train_and_score(*job, args), jobs))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "table.md").write_text(table(results, speeds, args.minutes))
    print(table(results, speeds, args.minutes))
    if all((args.out / f"{network}-seed{jobs[0][1]}.png").exists() for network in RECIPES):
        print(f"wrote {side_by_side(args.out, jobs[0][1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
