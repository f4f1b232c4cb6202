"""The `gankit` command: train, validate, list, sample, interpolate, eval, push, classifier
train, data prepare."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gankit._version import __version__
from gankit.core.errors import GankitError, cut, shown
from gankit.core.sizes import (
    MAX_BATCH,
    MAX_EVAL_SAMPLES,
    MAX_FPS,
    MAX_GRID_IMAGES,
    MAX_SEED,
    MAX_WALK_FRAMES,
    MIN_FPS,
)
from gankit.metrics.presets import MAX_NEAREST_SHOWN, NEAREST_SHOWN, PRESETS

EXPORT_HELP = "export folder (e.g. runs/mnist_dcgan/export/generator) or Hub repo id (user/repo)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _train(args: argparse.Namespace) -> int:
    from gankit.config.recipe import load_recipe
    from gankit.training.launcher import check_process_count, die_with_launcher
    from gankit.training.trainer import train

    die_with_launcher()
    check_process_count()
    return train(load_recipe(args.recipe, args.overrides))


def _validate(args: argparse.Namespace) -> None:
    from gankit.config.recipe import dump_recipe, load_recipe, recipe_model

    if args.schema:
        print(json.dumps(recipe_model().model_json_schema(), indent=2))
        return
    if args.recipe is None:
        raise GankitError("gankit validate needs a RECIPE file (or --schema)")
    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.eval.every:
        from gankit.metrics.evaluators import check_eval_settings

        check_eval_settings(recipe)
    from gankit.outputs.tracking import check_tracker_packages

    check_tracker_packages(recipe.tracking.log_with, recipe.wandb.mode or os.getenv("WANDB_MODE"))
    if args.quiet:
        return
    print(dump_recipe(recipe), end="")
    print(f"# {args.recipe}: valid", file=sys.stderr)


def _list(args: argparse.Namespace) -> None:
    from gankit.config.listing import markdown, plain
    from gankit.config.registry import REGISTRIES, load_plugins

    if args.kind == "recipes":
        from gankit.config.recipe_file import SHIPPED_RECIPES, shipped_recipes

        for name in shipped_recipes():
            print(f"{name:<26} {SHIPPED_RECIPES / name}.yaml")
        return
    load_plugins()
    names = {name for r in REGISTRIES.values() for name in (r.section, r.kind, r.plural)}
    if args.kind and args.kind not in names:
        raise GankitError(
            f"unknown kind {args.kind!r}; use one of {', '.join(REGISTRIES)}, or recipes"
        )
    print((markdown if args.markdown else plain)(args.kind), end="")


def _sample(args: argparse.Namespace) -> None:
    from gankit.components.models.base import check_sampling_fits, sample_footprint
    from gankit.outputs.export import load_generator
    from gankit.outputs.files import check_new_file, render_samples, write_new_file

    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_SUFFIXES or out.is_dir():
        raise GankitError(
            f"--out {out}: give an image file name ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    check_new_file(out, force=args.force)  # before loading: a refusal costs nothing
    generator = load_generator(args.export, device=args.device, revision=args.revision)
    labels = _labels(args.labels, args.n, generator)
    check_sampling_fits(
        sample_footprint(generator),
        args.n,
        generator.weights_device(),
        f"--n {args.n} (a grid of {args.n:,} images)",
        "--n",
    )
    try:
        images = generator.sample(args.n, seed=args.seed, labels=labels, truncation=args.truncation)
    except ValueError as error:
        raise GankitError(f"--labels {args.labels}: {error}") from None
    picture = render_samples(images, labels=labels)
    print(write_new_file(out, lambda temp: _write_image(picture, temp), force=args.force))


def _write_image(picture: Any, path: Path) -> None:
    from gankit.outputs.files import encode_image

    path.write_bytes(encode_image(picture, path.suffix.lower()))


def _interpolate(args: argparse.Namespace) -> None:
    from gankit.components.models.base import check_sampling_fits, sample_footprint
    from gankit.outputs.export import load_generator
    from gankit.outputs.walk import check_video_path, walk_frames, write_video

    out = Path(args.out)
    check_video_path(out, force=args.force)
    count = args.points * args.steps
    if count > MAX_WALK_FRAMES:
        raise GankitError(
            f"--points {args.points} x --steps {args.steps} makes {count:,} frames, more than "
            f"the {MAX_WALK_FRAMES:,} a walk may have; lower --points or --steps"
        )
    generator = load_generator(args.export, device=args.device, revision=args.revision)
    conditional = bool(generator.num_classes)
    walks = args.n if args.n is not None else (8 if conditional else 16)
    images = walks * (generator.num_classes if conditional and args.label is None else 1)
    check_sampling_fits(
        sample_footprint(generator),
        images,
        generator.weights_device(),
        f"--n {walks} ({images:,} images in each of {count:,} frames)",
        "--n, --points or --steps",
        frames=count,
    )
    try:
        frames = walk_frames(
            generator,
            walks=walks,
            points=args.points,
            steps=args.steps,
            seed=args.seed,
            label=args.label,
            truncation=args.truncation,
        )
    except ValueError as error:
        raise GankitError(f"--label {args.label}: {error}") from None
    print(write_video(frames, out, fps=args.fps, force=args.force))


def _labels(text: str | None, n: int, generator: Any) -> list[int] | None:
    """--labels as class indices: one for every image, or one per image; for a conditional
    generator without --labels, one class per grid row."""
    from gankit.components.models.base import grid_labels

    if not generator.num_classes:
        if text is not None:
            raise GankitError("--labels: this generator is unconditional; leave --labels out")
        return None
    if text is None:
        return grid_labels(n, generator.num_classes).tolist()
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GankitError(
            f"--labels {text}: give class indices separated by commas, e.g. 3 or 0,1,2"
        ) from None
    if len(values) not in (1, n):
        raise GankitError(f"--labels: give one class, or {n} (one per image); got {len(values)}")
    return values * n if len(values) == 1 else values


def _eval(args: argparse.Namespace) -> None:
    from gankit.metrics.presets import apply_preset
    from gankit.outputs.files import check_new_file, write_new_file
    from gankit.outputs.hub import resolve_export

    if args.out and Path(args.out).is_dir():
        raise GankitError(f"--out {args.out} is a folder; give a file name such as eval.json")
    if args.nearest and not args.out:
        raise GankitError("--nearest writes its grid beside the report: give --out FILE.json")
    grid = Path(args.out).with_suffix(".nearest.png") if args.nearest else None
    for path in (args.out, grid):
        if path:
            check_new_file(Path(path), force=args.force)  # before the work, as `gankit sample`
    folder = resolve_export(args.export, revision=args.revision)  # before the metrics' imports
    from gankit.metrics.evaluators import evaluate_export

    given = {"n": args.n, "split": args.split, "inception": args.inception or None}
    chosen, preset = apply_preset(args.protocol, given)
    results = evaluate_export(
        str(folder),
        name=args.export,
        data_root=args.data_root,
        n=chosen.n,
        split=chosen.split,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        classifier=args.classifier,
        inception=chosen.inception,
        inception_weights=args.inception_weights,
        show_progress=True,
        resize=chosen.resize,
        preset=preset,
        nearest=args.nearest or 0,
        nearest_out=grid,
        force=args.force,
    )
    if args.revision:
        results["protocol"]["generator"]["revision"] = args.revision
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        write_new_file(Path(args.out), lambda temp: temp.write_text(text + "\n"), force=args.force)


def _classifier_train(args: argparse.Namespace) -> None:
    from gankit.config.recipe import apply_overrides
    from gankit.metrics.classifier_training import train_classifier

    params: dict[str, Any] = {}
    apply_overrides(params, args.overrides)
    out = args.out or f"classifiers/{args.dataset}.safetensors"
    command = " ".join(["gankit classifier train", args.dataset, *args.overrides])
    command += f" --epochs {args.epochs} --seed {args.seed}"
    card = train_classifier(
        args.dataset,
        data_root=args.data_root,
        out=out,
        epochs=args.epochs,
        seed=args.seed,
        params=params,
        command=command,
    )
    print(json.dumps(card, indent=2))
    print(f"# wrote {out} and {Path(out).with_suffix('.json')}", file=sys.stderr)


def _push(args: argparse.Namespace) -> None:
    from gankit.outputs.hub import push_export

    url = push_export(
        args.export,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        message=args.message,
    )
    print(url)


OS_ERROR_ADVICE = {
    errno.ENOSPC: "free disk space, then run the same command: training resumes from the newest "
    "intact checkpoint",
    errno.EDQUOT: "free space within your quota, then run the same command",
    errno.EACCES: "fix the permissions, or choose another folder (e.g. output_dir=...)",
    errno.EPERM: "fix the permissions, or choose another folder (e.g. output_dir=...)",
    errno.EROFS: "the filesystem is read-only; choose another folder (e.g. output_dir=...)",
}


def describe_os_error(error: OSError) -> str:
    """An OSError as one line: what failed, on which file, and what to do."""
    what = error.strerror or str(error)
    where = f": {error.filename}" if error.filename else ""
    advice = OS_ERROR_ADVICE.get(error.errno or 0, "check the path and try again")
    return f"{what}{where}; {advice}"


def positive(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (and at most `maximum`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{cut(text)} is too small; it must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{cut(text)} is too large; it must be <= {maximum:,}")
        return value

    return parse


SEED = positive(0, MAX_SEED)  # the argparse type of every --seed


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number above 0")
    return value


def frame_rate(text: str) -> float:
    """An argparse type: frames per second, a finite number from MIN_FPS to MAX_FPS."""
    value = positive_float(text)
    if not MIN_FPS <= value <= MAX_FPS:
        raise argparse.ArgumentTypeError(
            f"{text}: give frames per second from {MIN_FPS:g} to {MAX_FPS:g}"
        )
    return value


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (with where to read the usage), exit 2."""

    def error(self, message: str) -> Any:
        """Print `message` as one line and exit with status 2 (argparse's usage error)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def truncation(text: str) -> float:
    """An argparse type: a truncation psi in (0, 1]."""
    from gankit.components.models.base import check_truncation

    try:
        return check_truncation(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            str(error) if "truncation" in str(error) else f"{text!r} is not a number"
        ) from None


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
    train.set_defaults(run=_train)

    validate = commands.add_parser(
        "validate", help="check a recipe without training; print it resolved", allow_abbrev=False
    )
    validate.add_argument("recipe", nargs="?", help="recipe YAML file or shipped recipe name")
    validate.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100")
    validate.add_argument("--schema", action="store_true", help="print the recipe JSON schema")
    validate.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")
    validate.set_defaults(run=_validate)

    listing = commands.add_parser("list", help="list registered components and their parameters")
    listing.add_argument(
        "kind",
        nargs="?",
        help="only this kind, e.g. generator or loss; `recipes`: the shipped ones",
    )
    listing.add_argument(
        "--markdown", action="store_true", help="as README's table of built-in components"
    )
    listing.set_defaults(run=_list)

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
    sample.set_defaults(run=_sample)

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
    walk.set_defaults(run=_interpolate)

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
    evaluate.set_defaults(run=_eval)

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
    train_classifier.set_defaults(run=_classifier_train)

    push = commands.add_parser(
        "push", help="upload an export folder to a Hugging Face Hub model repo"
    )
    push.add_argument("export", help="export folder, e.g. runs/mnist_dcgan/export/generator")
    push.add_argument("repo_id", help="Hub repo id, user/name or org/name (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to push to (created if missing; default main)")
    push.add_argument("--message", help="commit message")
    push.set_defaults(run=_push)

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


if __name__ == "__main__":
    sys.exit(main())
