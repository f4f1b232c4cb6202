"""What each `gankit` command does with its parsed arguments (each imports what it needs when
it runs, so `gankit --help` starts fast)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gankit.core.errors import GankitError
from gankit.core.sizes import (
    MAX_WALK_FRAMES,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def run_train(args: argparse.Namespace) -> int:
    from gankit.config.recipe import load_recipe
    from gankit.training.launcher import check_process_count, die_with_launcher
    from gankit.training.trainer import train

    die_with_launcher()
    check_process_count()
    return train(load_recipe(args.recipe, args.overrides))


def run_validate(args: argparse.Namespace) -> None:
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


def run_list(args: argparse.Namespace) -> None:
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


def run_sample(args: argparse.Namespace) -> None:
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


def run_interpolate(args: argparse.Namespace) -> None:
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


def run_eval(args: argparse.Namespace) -> None:
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


def run_classifier_train(args: argparse.Namespace) -> None:
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


def run_push(args: argparse.Namespace) -> None:
    from gankit.outputs.hub import push_export

    url = push_export(
        args.export,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        message=args.message,
    )
    print(url)
