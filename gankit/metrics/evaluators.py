"""Evaluations as gankit runs them: `gankit eval` on an export, `eval.every` during training,
and the check of a recipe's `eval` settings against its data before any data is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gankit.components.data import NATIVE_CLASSES, declared_shape
from gankit.components.models.base import eval_mode, sample_footprint
from gankit.config.registry import DATASETS
from gankit.config.sections import LoaderFields
from gankit.core.errors import GankitError, warn
from gankit.core.sizes import check_fits
from gankit.metrics import classifier as classifiers
from gankit.metrics.best import check_keep_best
from gankit.metrics.evaluation import (
    ClassifierMetrics,
    Metrics,
    check_shape,
    conditional_generate,
    evaluate,
)
from gankit.metrics.inception import (
    FEATURES,
    InceptionMetrics,
    check_inception_weights,
    resolve_weights,
)
from gankit.metrics.manifold import CHUNK
from gankit.metrics.nearest import check_export
from gankit.metrics.reference import RealImages, read_split, reference_features

NOT_DATASET_PARAMS = {"name", "root", "download", "split", *LoaderFields.model_fields}
STORED_BYTES = 8  # a stored feature or distance (float64 where the metrics compute in it)


def given(setting: str, value: int) -> str:
    """How the user set a value: `--n 5` on the command line, `eval.n=5` in a recipe."""
    return f"{setting} {value}" if setting.startswith("-") else f"{setting}={value}"


def check_batch_fits(
    sample_bytes: int, batch_size: int, device: Any, setting: str = "--batch-size"
) -> None:
    """Refuse batches of generated images whose forward pass needs more memory than the device
    has available (`sample_bytes` an image: `sample_footprint(generator).peak`)."""
    check_fits(
        batch_size * sample_bytes,
        device,
        f"{given(setting, batch_size)} (one batch of generated images)",
        hint=f"lower {setting}",
    )


def check_features_fit(n: int, dims: int, device: Any, setting: str = "--n") -> None:
    """Refuse an evaluation of `n` samples whose stored features (`dims` values each) and the
    rows of k-NN distances the manifold metrics hold at a time need more memory than the
    device has available."""
    check_fits(
        n * STORED_BYTES * (dims + 2 * CHUNK),
        device,
        f"{given(setting, n)} (the features of {n:,} generated images and their distances)",
        hint=f"lower {setting}",
    )


def feature_dims(classifier: classifiers.Classifier | None, inception: bool) -> int:
    """Values stored per generated image: the classifier's features and logits, Inception's."""
    mine = classifier.model.num_features + classifier.num_classes if classifier else 0
    return mine + (FEATURES if inception else 0)


def dataset_params(section: Any) -> dict[str, Any]:
    """A data section's dataset parameters besides where the files are (size, channels...)."""
    values = section if isinstance(section, dict) else section.model_dump()
    return {key: value for key, value in values.items() if key not in NOT_DATASET_PARAMS}


def train_command(dataset: str, params: dict[str, Any] | None = None) -> str:
    """How to make a classifier for `dataset` with the dataset `params` that shape its images
    (`size=64`, ...; those left at their defaults go unsaid), so that it takes the images the
    generator makes; for messages."""
    fields = DATASETS.get(dataset).params.model_fields if dataset in DATASETS else {}
    shaping = [
        f"{key}={value}"
        for key, value in (params or {}).items()
        if value is not None and (key not in fields or fields[key].get_default() != value)
    ]
    return " ".join(
        ["gankit classifier train", dataset, *shaping, "--data-root DIR --out FILE.safetensors"]
    )


def pick_classifier(
    dataset: str,
    path: str | None,
    image_shape: tuple[int, ...],
    setting: str,
    device: Any,
    params: dict[str, Any] | None = None,
) -> classifiers.Classifier:
    """The classifier at `path`, else the shipped one for 1x28x28 MNIST; checked against the
    image shape (`params`: the dataset's, for the command that makes one)."""
    if path is None and not (dataset == "mnist" and tuple(image_shape) == (1, 28, 28)):
        raise GankitError(
            f"{setting}: the classifier metrics need a classifier trained on '{dataset}' "
            f"{list(image_shape)} images (gankit ships one for 1x28x28 MNIST only); make one "
            f"with `{train_command(dataset, params)}` and give its file"
        )
    loaded = classifiers.load(path, device)
    check_shape(image_shape, loaded)
    if loaded.card["dataset"] != dataset:
        warn(
            f"{setting}: the classifier was trained on '{loaded.card['dataset']}', the generator "
            f"on '{dataset}'; its figures measure the samples as '{loaded.card['dataset']}' images"
        )
    return loaded


def check_classes(
    classifier: classifiers.Classifier | None,
    real: RealImages,
    setting: str,
    params: dict[str, Any] | None = None,
) -> None:
    """A classifier of labelled data predicts as many classes as the data has."""
    if classifier is None or len(real.classes) < 2:
        return
    if len(real.classes) != classifier.num_classes:
        raise GankitError(
            f"{setting}: {classifier.path.name} predicts {classifier.num_classes} classes "
            f"(trained on '{classifier.card['dataset']}'), but the reference data has "
            f"{len(real.classes)}; make a classifier for this data with "
            f"`{train_command(real.dataset, params)}`"
        )


def prepare(
    real: RealImages,
    *,
    classifier: classifiers.Classifier | None,
    inception_weights: Any | None,
    device: Any,
    batch_size: int,
    show_progress: bool = False,
    write_cache: bool = True,
    resize: str = "extractor",
) -> list[Metrics]:
    """The metrics asked for, holding the reference features (from the cache when there)."""
    measures: list[Metrics] = []
    if classifier is not None:
        measures.append(ClassifierMetrics(device, classifier))
    if inception_weights is not None:
        measures.append(InceptionMetrics(inception_weights, device, resize))
    for metric in measures:
        metric.set_real(
            *reference_features(
                real, metric, batch_size, show_progress=show_progress, write=write_cache
            )
        )
    return measures


def run_evaluation(measures: list[Metrics], real: RealImages, generate: Any, **options: Any) -> Any:
    """`evaluate` with the prepared metrics (the classifier's first, when asked for)."""
    first = measures[0] if isinstance(measures[0], ClassifierMetrics) else None
    also = tuple(measures[1:] if first is not None else measures)
    return evaluate(
        generate, None, metrics=first, also=also, reference_description=real.description, **options
    )


def trained_on(config: dict[str, Any]) -> int | None:
    """How many of the training split's first images the exported run trained on
    (`data.subset`), None for all of them."""
    count = config.get("train_subset")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None


def evaluate_export(
    path: str,
    *,
    data_root: str | None,
    n: int = 10_000,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 500,
    device: str = "cpu",
    classifier: str | None = None,
    inception: bool = False,
    inception_weights: str | None = None,
    show_progress: bool = False,
    revision: str | None = None,
    name: str | None = None,
    resize: str = "extractor",
    preset: dict[str, Any] | None = None,
    nearest: int = 0,
    nearest_out: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Evaluate an exported generator (`gankit eval`) against its dataset's `split` under
    `data_root` (None: the folder recorded in the export, else `data`): the classifier metrics
    (`classifier`, or the shipped one for MNIST), and Inception FID/KID when `inception` or
    weights are given (alone when there is no classifier for the data), on images resized as
    `resize` says. `path`: an export folder or a Hub repo id (at `revision`); `name`: how the
    results name the export; `preset`: the protocol's record (`presets.apply_preset`).
    `nearest` > 0: also the memorisation check, its grid of `nearest` samples written to
    `nearest_out` (see `nearest.check_export`)."""
    from gankit.outputs.export import load_generator, read_config
    from gankit.outputs.hub import resolve_export

    path = str(resolve_export(path, revision=revision))

    inception = inception or bool(inception_weights)
    if inception_weights:
        check_inception_weights(inception_weights)
    generator = load_generator(path, device=device)
    check_batch_fits(sample_footprint(generator).peak, batch_size, device)
    image_shape = tuple(generator.sample(1, seed=0).shape[1:])
    config = read_config(path)
    dataset = config.get("dataset", "mnist")  # exports before it was recorded: MNIST's
    shipped = dataset == "mnist" and image_shape == (1, 28, 28)
    recorded = config.get("data", {})
    params = dataset_params(recorded)
    chosen = None
    if classifier or shipped or not inception:
        chosen = pick_classifier(dataset, classifier, image_shape, "--classifier", device, params)
    weights = resolve_weights(inception_weights) if inception else None
    check_features_fit(n, feature_dims(chosen, inception), device)
    root = data_root or recorded.get("root") or "data"
    real = read_split(dataset, root, split, image_shape=image_shape, params=params)
    check_classes(chosen, real, "--classifier", params)
    measures = prepare(
        real,
        classifier=chosen,
        inception_weights=weights,
        device=device,
        batch_size=batch_size,
        show_progress=show_progress,
        resize=resize,
    )
    sampling = {"n": n, "seed": seed, "batch_size": batch_size, "device": device}
    generate = conditional_generate(generator)
    try:
        results = run_evaluation(
            measures, real, generate, split=split, show_progress=show_progress, **sampling
        )
    except GankitError as error:
        raise GankitError(f"evaluating the generator exported in '{path}': {error}") from None
    if nearest and nearest_out is not None:
        results["memorisation"] = check_export(
            generate,
            real,
            lambda reference: (
                reference
                if reference.split in ("train", "all")
                else read_split(dataset, root, "train", image_shape=image_shape, params=params)
            ).first(trained_on(config)),
            measures[0],
            out=nearest_out,
            force=force,
            shown=nearest,
            show_progress=show_progress,
            **sampling,
        )
    results["protocol"].update(preset or {})
    results["protocol"]["generator"] = {
        "export": name or str(path),
        **({"revision": revision} if revision else {}),
        "dataset": dataset,
        "name": config["name"],
        "step": config.get("step"),
        "ema": config.get("ema", False),
        "num_classes": generator.num_classes,
    }
    return results


def check_eval_settings(recipe: Any) -> None:
    """Refuse `eval` settings that cannot run on the recipe's data, before any data is read
    (`gankit validate` and the start of training): one line saying what to change."""
    settings = recipe.eval
    data = recipe.data
    if not settings.every:
        return
    check_keep_best(recipe)
    shape = declared_shape(data.name, data.model_dump())
    if shape is None:  # data whose shape shows only once loaded: checked then
        return
    if "classifier" in settings.metrics:
        if settings.classifier is None:
            if data.name != "mnist" or shape != (1, 28, 28):
                raise GankitError(
                    f"eval.every: the classifier metrics need a classifier trained on "
                    f"'{data.name}' {list(shape)} images (gankit ships one for 1x28x28 MNIST "
                    f"only): make one with `{train_command(data.name, dataset_params(data))}` and "
                    "set eval.classifier "
                    "to that file; or set eval.metrics: [inception] (Inception FID and KID), "
                    "or eval.every: 0"
                )
        else:
            card = classifiers.read_card(settings.classifier, "eval.classifier")
            classes = NATIVE_CLASSES.get(data.name)
            if tuple(card["image_shape"]) != shape or classes not in (None, card["num_classes"]):
                data_says = f"{list(shape)} images" + (f" in {classes} classes" if classes else "")
                raise GankitError(
                    f"eval.classifier: {settings.classifier} takes {card['image_shape']} images "
                    f"in {card['num_classes']} classes (trained on '{card['dataset']}'), but data "
                    f"'{data.name}' gives {data_says}; make a classifier for this data with "
                    f"`{train_command(data.name, dataset_params(data))}`"
                )
    if "inception" in settings.metrics and settings.inception_weights:
        try:
            check_inception_weights(settings.inception_weights)
        except GankitError as error:
            raise GankitError(f"eval.inception_weights: {error}") from None


class TrainingEvaluator:
    """Evaluates the generator during training, on every process, against a fixed reference."""

    def __init__(
        self,
        recipe: Any,
        image_shape: tuple[int, ...],
        accelerator: Any,
        sample_bytes: int | None = None,
    ) -> None:
        """With `sample_bytes` (`sample_footprint(generator).peak`), an evaluation that would not
        fit the memory is refused before the reference data is read."""
        check_eval_settings(recipe)
        settings, data = recipe.eval, recipe.data
        if len(image_shape) != 3:
            raise GankitError(
                f"eval.every: the image metrics need images (C, H, W), but the '{data.name}' "
                f"samples have shape {tuple(image_shape)}; set eval.every: 0"
            )
        root = settings.data_root or getattr(data, "root", None)
        if root is None:
            raise GankitError("eval.every is set but the data has no folder: set eval.data_root")
        self.settings, self.seed, self.accelerator = settings, recipe.train.seed, accelerator
        device = accelerator.device
        chosen = None
        if "classifier" in settings.metrics:
            chosen = pick_classifier(
                data.name,
                settings.classifier,
                image_shape,
                "eval.classifier",
                device,
                dataset_params(data),
            )
        weights = None
        if "inception" in settings.metrics:
            weights = resolve_weights(settings.inception_weights, "eval.inception_weights")
        if sample_bytes is not None:
            check_batch_fits(sample_bytes, settings.batch_size, device, "eval.batch_size")
        check_features_fit(settings.n, feature_dims(chosen, weights is not None), device, "eval.n")
        setting = "eval.data_root" if settings.data_root else "data.root"
        self.real = read_split(
            data.name,
            root,
            settings.split,
            image_shape=image_shape,
            params=dataset_params(data),
            root_setting=setting,
        )
        check_classes(chosen, self.real, "eval.classifier", dataset_params(data))
        self.measures = prepare(
            self.real,
            classifier=chosen,
            inception_weights=weights,
            device=device,
            batch_size=settings.batch_size,
            write_cache=accelerator.is_main_process,
        )

    @staticmethod
    def describe(results: dict[str, Any]) -> str:
        """One line for the terminal."""
        parts = []
        if "frechet_distance" in results:
            classes = len(results["class_histogram"])
            parts += [
                f"Frechet distance {results['frechet_distance']:.3f}",
                f"classifier score {results['classifier_score']:.3f}",
                f"classes covered {results['classes_covered']}/{classes}",
            ]
            if results["precision"] is not None:
                parts += [
                    f"precision {results['precision']:.3f}",
                    f"recall {results['recall']:.3f}",
                ]
        if "label_accuracy" in results:
            parts.append(f"label accuracy {results['label_accuracy']:.3f}")
        if "inception_fid" in results:
            parts.append(f"Inception FID {results['inception_fid']:.3f}")
            if results["inception_precision"] is not None:
                parts.append(
                    f"Inception precision {results['inception_precision']:.3f} "
                    f"recall {results['inception_recall']:.3f}"
                )
        return "  ".join(parts)

    @torch.no_grad()
    def __call__(self, generator: torch.nn.Module) -> dict[str, Any]:
        generate = conditional_generate(generator, self.accelerator.autocast)
        with eval_mode(generator):
            return run_evaluation(
                self.measures,
                self.real,
                generate,
                n=self.settings.n,
                split=self.settings.split,
                seed=self.seed,
                batch_size=self.settings.batch_size,
                device=self.accelerator.device,
                process=self.accelerator.process_index,
                processes=self.accelerator.num_processes,
            )
