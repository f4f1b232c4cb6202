"""The `gankit` command: train, validate, list, sample, interpolate, eval, push, classifier
train, data prepare. `build_parser` declares them; `commands` runs them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gankit._version import __version__
from gankit.cli.arguments import (
    EXPORT_HELP,
    SEED,
    Parser,
    describe_os_error,
    frame_rate,
    positive,
    truncation,
)
from gankit.cli.commands import (
    run_classifier_train,
    run_eval,
    run_interpolate,
    run_list,
    run_push,
    run_sample,
    run_train,
    run_validate,
)
from gankit.core.errors import GankitError
from gankit.core.sizes import (
    MAX_BATCH,
    MAX_EVAL_SAMPLES,
    MAX_FPS,
    MAX_GRID_IMAGES,
    MAX_WALK_FRAMES,
    MIN_FPS,
)
from gankit.metrics.presets import MAX_NEAREST_SHOWN, NEAREST_SHOWN, PRESETS


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `gankit` command."""
    parser = Parser(prog="gankit", description="Train GANs from typed recipes.", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"gankit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train a recipe (on several processes: accelerate launch -m gankit train ...)",
        allow_abbrev=False,
    )
    train.add_argument(
        "recipe", help="recipe YAML file, or the name of a shipped one (e.g. mnist_dcgan)"
    )
    train.add_argument(
        "overrides",
        nargs="*",
        default=[],
        help="dotted overrides, e.g. train.steps=100 (or --train.steps=100)",
    )
    train.set_defaults(run=run_train)

    validate = commands.add_parser(
        "validate", help="check a recipe without training; print it resolved", allow_abbrev=False
    )
    validate.add_argument("recipe", nargs="?", help="recipe YAML file or shipped recipe name")
    validate.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100")
    validate.add_argument("--schema", action="store_true", help="print the recipe JSON schema")
    validate.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")
    validate.set_defaults(run=run_validate)

    listing = commands.add_parser("list", help="list registered components and their parameters")
    listing.add_argument(
        "kind",
        nargs="?",
        help="only this kind, e.g. generator or loss; `recipes`: the shipped ones",
    )
    listing.add_argument(
        "--markdown", action="store_true", help="as README's table of built-in components"
    )
    listing.set_defaults(run=run_list)

    sample = commands.add_parser(
        "sample", help="write a grid of samples from an exported generator"
    )
    sample.add_argument("export", help=EXPORT_HELP)
    sample.add_argument("--revision", help="Hub repos: branch, tag or commit (default main)")
    sample.add_argument(
        "--n",
        type=positive(1, MAX_GRID_IMAGES),
        default=64,
        help=f"number of images (default 64; at most {MAX_GRID_IMAGES:,})",
    )
    sample.add_argument(
        "--out", default="samples.png", help="output image file (default samples.png)"
    )
    sample.add_argument("--seed", type=SEED, default=None, help="noise seed (default: random)")
    sample.add_argument("--device", default="cpu", help="torch device (default cpu)")
    sample.add_argument(
        "--truncation",
        type=truncation,
        default=1.0,
        help="psi in (0, 1]: pull the noise toward its mean (default 1: none)",
    )
    sample.add_argument(
        "--labels",
        help="conditional generators: a class for all images (3) or one per image (0,1,2,...); "
        "default: one class per row",
    )
    sample.add_argument("--force", action="store_true", help="replace --out if it exists")
    sample.set_defaults(run=run_sample)

    walk = commands.add_parser(
        "interpolate",
        help="animate a latent walk of an exported generator (GIF, or MP4 with gankit[video])",
    )
    walk.add_argument("export", help=EXPORT_HELP)
    walk.add_argument("--out", default="walk.gif", help="walk.gif (default) or walk.mp4")
    walk.add_argument(
        "--points",
        type=positive(2, MAX_WALK_FRAMES),
        default=4,
        help="random latents the loop visits (4)",
    )
    walk.add_argument(
        "--steps",
        type=positive(1, MAX_WALK_FRAMES),
        default=16,
        help=f"frames from one point to the next (16); points x steps <= {MAX_WALK_FRAMES:,}",
    )
    walk.add_argument(
        "--n",
        type=positive(1, MAX_GRID_IMAGES),
        help="walks side by side in each frame (default 16; conditional: 8 per class row; at "
        f"most {MAX_GRID_IMAGES:,})",
    )
    walk.add_argument("--seed", type=SEED, default=None, help="noise seed (default: random)")
    walk.add_argument(
        "--label", type=int, help="conditional generators: walk this class only (default: all)"
    )
    walk.add_argument(
        "--fps",
        type=frame_rate,
        default=10.0,
        help=f"frames per second, {MIN_FPS:g} to {MAX_FPS:g} (10)",
    )
    walk.add_argument(
        "--truncation", type=truncation, default=1.0, help="psi in (0, 1] (default 1: none)"
    )
    walk.add_argument("--device", default="cpu", help="torch device (default cpu)")
    walk.add_argument("--revision", help="Hub repos: branch, tag or commit (default main)")
    walk.add_argument("--force", action="store_true", help="replace --out if it exists")
    walk.set_defaults(run=run_interpolate)

    evaluate = commands.add_parser(
        "eval",
        help="measure an exported generator: Frechet distance, score, coverage, precision/recall, "
        "density/coverage; Inception FID/KID",
    )
    evaluate.add_argument("export", help=EXPORT_HELP)
    evaluate.add_argument("--revision", help="Hub repos: branch, tag or commit (default main)")
    evaluate.add_argument(
        "--data-root",
        help="folder of the reference data (MNIST/raw/, ...); default: the export's data.root",
    )
    evaluate.add_argument(
        "--n",
        type=positive(2, MAX_EVAL_SAMPLES),
        help=f"generated samples (10000, --protocol paper: 50000; at most {MAX_EVAL_SAMPLES:,})",
    )
    evaluate.add_argument(
        "--split", choices=["test", "train"], help="reference (test; --protocol paper: train)"
    )
    evaluate.add_argument(
        "--protocol",
        choices=list(PRESETS),
        default="default",
        help="named settings: paper = 50000 samples, full training set, Inception on clean "
        "(PIL bicubic) resized images; other options given replace its values",
    )
    evaluate.add_argument(
        "--nearest",
        type=positive(1, MAX_NEAREST_SHOWN),
        nargs="?",
        const=NEAREST_SHOWN,
        metavar="K",
        help=f"memorisation check: write K samples (default {NEAREST_SHOWN}) beside their nearest "
        "training images to OUT.nearest.png, and report the copy share",
    )
    evaluate.add_argument("--seed", type=SEED, default=0, help="noise seed (0)")
    evaluate.add_argument(
        "--batch-size",
        type=positive(1, MAX_BATCH),
        default=500,
        help=f"images per batch (500; at most {MAX_BATCH:,})",
    )
    evaluate.add_argument("--device", default="cpu", help="torch device (cpu)")
    evaluate.add_argument("--out", help="also write the JSON to this file")
    evaluate.add_argument("--force", action="store_true", help="replace --out if it exists")
    evaluate.add_argument(
        "--classifier",
        help="classifier weights from `gankit classifier train` (default: the shipped one, MNIST)",
    )
    evaluate.add_argument(
        "--inception", action="store_true", help="also Inception FID/KID (needs torch-fidelity)"
    )
    evaluate.add_argument(
        "--inception-weights",
        help="Inception FID/KID from this torch-fidelity weights file (default: torch's hub cache)",
    )
    evaluate.set_defaults(run=run_eval)

    classifier = commands.add_parser(
        "classifier", help="classifiers whose features the metrics use"
    )
    classifier_commands = classifier.add_subparsers(dest="classifier_command", required=True)
    train_classifier = classifier_commands.add_parser(
        "train", help="train a small classifier on a labelled dataset (CPU, deterministic)"
    )
    train_classifier.add_argument("dataset", help="registered dataset, e.g. mnist or cifar10")
    train_classifier.add_argument(
        "overrides", nargs="*", default=[], help="dataset parameters, e.g. size=32 channels=3"
    )
    train_classifier.add_argument(
        "--data-root", default="data", help="the dataset's root (data.root), default data"
    )
    train_classifier.add_argument(
        "--out", help="weights file (.safetensors; default classifiers/DATASET.safetensors)"
    )
    train_classifier.add_argument("--epochs", type=positive(1), default=4, help="epochs (4)")
    train_classifier.add_argument("--seed", type=SEED, default=0, help="seed (0)")
    train_classifier.set_defaults(run=run_classifier_train)

    push = commands.add_parser(
        "push", help="upload an export folder to a Hugging Face Hub model repo"
    )
    push.add_argument("export", help="export folder, e.g. runs/mnist_dcgan/export/generator")
    push.add_argument("repo_id", help="Hub repo id, user/name or org/name (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to push to (created if missing; default main)")
    push.add_argument("--message", help="commit message")
    push.set_defaults(run=run_push)

    from gankit.components.prepared.prepare import add_prepare_arguments

    data = commands.add_parser("data", help="datasets: prepare a folder of images once")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    add_prepare_arguments(
        data_commands.add_parser(
            "prepare", help="decode, check, crop, resize and dedupe images into a prepared set"
        )
    )
    return parser


def _as_override(item: str) -> str:
    """`--a.b=c` -> `a.b=c`; anything else as it is (an unknown option stays one)."""
    key, sep, _ = item.partition("=")
    if sep and item.startswith("--") and key[2:3].isalpha():
        return item[2:]
    return item


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; gankit's own errors print as one message without a traceback."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`validate -q RECIPE a=1 --quiet b=2`): collect the strays.
    # `--train.steps=100` is an override too: the form W&B sweeps and other launchers pass.
    extra = [_as_override(item) for item in extra]
    strays = [item for item in extra if "=" not in item or item.startswith("-")]
    if strays or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(strays or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        code = args.run(args)
    except GankitError as error:
        print(f"gankit: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the disk, permissions, a vanished file: the OS's own words
        print(f"gankit: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gankit: interrupted", file=sys.stderr)
        return 130
    return code or 0
