"""Sample quality on MNIST: Frechet distance, classifier score and class coverage.

All three are computed on the shipped digit classifier (`gankit.metrics.classifier`): Frechet
distance between its 128-d features of generated images and of real MNIST images (torchmetrics'
FID with this extractor), the Inception-score formula on its logits, and the histogram of
predicted classes against the uniform one (mode collapse shows there first). With several
processes each evaluates its own share of samples and torchmetrics sums the statistics, so
nothing is counted twice. Every result carries a `protocol` saying exactly how it was made."""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchmetrics
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from gankit.components.data import to_uint8
from gankit.components.models.base import eval_mode
from gankit.core.errors import GankitError, warn
from gankit.metrics import classifier

SCORE_SPLITS = 10


class ClassHistogram(Metric):
    """Counts of the classifier's predicted classes (summed across processes)."""

    def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.predict = predict
        self.add_state("counts", torch.zeros(10, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor) -> None:
        self.counts += torch.bincount(self.predict(images).argmax(1), minlength=10).double()

    def compute(self) -> torch.Tensor:
        return self.counts / self.counts.sum().clamp(min=1)


class LabelAgreement(Metric):
    """How often the classifier names the class a conditional generator was asked for, per
    class (summed across processes)."""

    def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.predict = predict
        self.add_state("correct", torch.zeros(10, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(10, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.long()
        hits = (self.predict(images).argmax(1) == labels).double()
        self.correct += torch.zeros_like(self.correct).index_add_(0, labels, hits)
        self.total += torch.bincount(labels, minlength=10).double()

    def compute(self) -> dict[str, Any]:
        asked = self.total > 0
        return {
            "label_accuracy": float(self.correct.sum() / self.total.sum().clamp(min=1)),
            "label_accuracy_per_class": [
                round(float(c / t), 5) if t > 0 else None
                for c, t in zip(self.correct, self.total, strict=True)
            ],
            "classes_asked": int(asked.sum()),
        }


GeneratedBatch = torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]


def split_generated(batch: GeneratedBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images and their requested labels (None when unconditional) from what `generate` gave."""
    return batch if isinstance(batch, tuple) else (batch, None)


def conditional_generate(
    generator: Any, autocast: Any = None
) -> Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]:
    """`generate(count, rng)` for the metrics: noise (and uniform labels when the generator is
    class-conditional) from `rng`, images as float32 with the labels they were asked for."""

    def generate(count: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = generator.sample_noise(count, generator=rng)
        labels = generator.sample_labels(count, generator=rng)
        with autocast() if autocast is not None else contextlib.nullcontext():
            images = generator.generate(z, labels)
        return images.float(), labels

    return generate


class MNISTMetrics:
    """Accumulates real and generated images, then computes every MNIST metric at once."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        model = classifier.load_classifier(device)
        self.frechet = FrechetInceptionDistance(
            feature=classifier.Features(model), reset_real_features=False
        ).to(device)
        logits = classifier.Logits(model)
        with warnings.catch_warnings():  # it keeps every sample's 10 logits: small here
            warnings.filterwarnings("ignore", message=".*save all extracted features.*")
            self.score = InceptionScore(feature=logits, splits=SCORE_SPLITS).to(device)
        self.histogram = ClassHistogram(logits).to(device)
        self.agreement = LabelAgreement(logits).to(device)

    @torch.no_grad()
    def update_real(self, images: torch.Tensor) -> None:
        """Add reference images, (N, 1, 28, 28) in [-1, 1]."""
        self.frechet.update(images, real=True)

    @torch.no_grad()
    def update_generated(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add generated images, (N, 1, 28, 28) in [-1, 1], and the class each was asked to
        show when the generator is class-conditional."""
        images = images.float()
        check_finite_samples(images)
        self.frechet.update(images, real=False)
        self.score.update(images)
        self.histogram.update(images)
        if labels is not None:
            self.agreement.update(images, labels)

    def compute(self) -> dict[str, Any]:
        """The metrics of everything added so far (across processes when distributed)."""
        with torch.random.fork_rng(devices=[]):  # the score shuffles its splits: fix the order
            torch.manual_seed(0)
            score, score_std = self.score.compute()
        histogram = self.histogram.compute()
        uniform = torch.full_like(histogram, 0.1)
        nonzero = histogram > 0
        conditional = bool(self.agreement.update_count)
        return {
            **(self.agreement.compute() if conditional else {}),
            "frechet_distance": float(self.frechet.compute()),
            "classifier_score": float(score),
            "classifier_score_std": float(score_std),
            "class_histogram": [round(float(p), 5) for p in histogram],
            "classes_covered": int((histogram >= 0.02).sum()),  # >= 1/5 of a fair share
            "coverage_tv": float(0.5 * (histogram - uniform).abs().sum()),
            "coverage_kl": float((histogram[nonzero] * (histogram[nonzero] * 10).log()).sum()),
        }

    def reset_generated(self) -> None:
        """Forget the generated images (the reference statistics are kept)."""
        self.frechet.reset()
        self.score.reset()
        self.histogram.reset()
        self.agreement.reset()


def check_finite_samples(images: torch.Tensor) -> None:
    """Refuse generated images holding NaN or inf before they reach any feature statistics
    (whose matrix square root would crash on them)."""
    bad = int((~torch.isfinite(images.reshape(images.shape[0], -1)).all(1)).sum())
    if bad:
        raise GankitError(
            f"{bad} of {images.shape[0]} generated samples hold NaN or inf values: the generator "
            "diverged, so there is nothing to measure; evaluate an earlier export or checkpoint"
        )


def check_mnist_shaped(image_shape: tuple[int, ...]) -> None:
    """The MNIST metrics need 1x28x28 images."""
    if tuple(image_shape) != (1, 28, 28):
        raise GankitError(
            f"the MNIST metrics need 1x28x28 images, but this generator makes {tuple(image_shape)}"
        )


def protocol(
    *, generated: int, reference: int, split: str, seed: int, processes: int = 1
) -> dict[str, Any]:
    """How the numbers were made, for the record."""
    card = classifier.card()
    return {
        "extractor": "gankit.metrics.classifier.MNISTClassifier: 128-d ReLU features "
        "(Frechet distance), logits (classifier score, class histogram)",
        "extractor_weights_sha256": classifier.weights_sha256(),
        "extractor_test_accuracy": card["test_accuracy"],
        "generated_samples": generated,
        "reference_samples": reference,
        "reference": f"MNIST {split} split, images scaled to [-1, 1]",
        "seed": seed,
        "processes": processes,
        "score_splits": SCORE_SPLITS,
        "classes_covered_threshold": 0.02,
        "torchmetrics": torchmetrics.__version__,
    }


@torch.no_grad()
def evaluate(
    generate: Callable[[int, torch.Generator], GeneratedBatch],
    reference: torch.Tensor,
    *,
    n: int,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    process: int = 0,
    processes: int = 1,
    metrics: MNISTMetrics | None = None,
) -> dict[str, Any]:
    """Evaluate `generate(count, rng)` against `reference` images (from `split`).

    `generate` returns images, or (images, labels) for a class-conditional generator; the
    labels add `label_accuracy` (how often the classifier agrees with the asked class).

    With several processes each makes its own `n / processes` samples (from its own seed) and
    adds its own slice of the reference; the metrics sum the statistics across processes.
    `metrics` that already hold this process's reference are reused (only the generated side
    is reset), which saves re-reading the reference at every evaluation during training.
    """
    if metrics is None:
        metrics = MNISTMetrics(device)
        for batch in reference[process::processes].split(batch_size):
            metrics.update_real(batch.to(device))
    else:
        metrics.reset_generated()
    share = n // processes + (1 if process < n % processes else 0)
    rng = torch.Generator(device).manual_seed(seed * 1_000_003 + process)
    for start in range(0, share, batch_size):
        metrics.update_generated(*split_generated(generate(min(batch_size, share - start), rng)))
    results = metrics.compute()
    results["protocol"] = protocol(
        generated=n, reference=reference.shape[0], split=split, seed=seed, processes=processes
    )
    if not math.isfinite(results["frechet_distance"]):
        raise GankitError("the Frechet distance is not finite; are the generated images finite?")
    return results


def reference_images(
    data_root: str, split: str = "test", *, root_setting: str = "--data-root"
) -> torch.Tensor:
    """The MNIST images to compare against, (N, 1, 28, 28) in [-1, 1]; a missing folder's
    error names `root_setting`, the setting that gave `data_root`."""
    from gankit.components.data import mnist_reference

    return mnist_reference(data_root, split, root_setting)  # type: ignore[arg-type]


def not_mnist_message(dataset: str) -> str:
    """Why the MNIST metrics do not measure a generator trained on another dataset."""
    return (
        f"gankit's image metrics compare generated images with MNIST's digits through a digit "
        f"classifier, so they do not measure a generator trained on '{dataset}'"
    )


def evaluate_export(
    path: str,
    *,
    data_root: str,
    n: int = 10_000,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 500,
    device: str = "cpu",
    inception_weights: str | None = None,
    revision: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Evaluate an exported generator (`gankit eval`); Inception FID/KID too, given weights.
    `path`: an export folder or a Hub repo id (at `revision`); `name`: how the results name
    the export (default: `path`)."""
    from gankit.outputs.export import load_generator, read_config
    from gankit.outputs.hub import resolve_export

    if inception_weights:
        check_inception_weights(inception_weights)
    folder = resolve_export(path, revision=revision)
    generator = load_generator(folder, device=device)
    check_mnist_shaped(generator.sample(1, seed=0).shape[1:])
    config = read_config(folder)
    dataset = config.get("dataset", "mnist")  # exports before it was recorded: MNIST's shape
    if dataset != "mnist":
        warn(f"{not_mnist_message(dataset)}; the figures below score it as MNIST digits")
    generate = conditional_generate(generator)

    reference = reference_images(data_root, split)
    try:
        results = evaluate(
            generate, reference, n=n, split=split, seed=seed, batch_size=batch_size, device=device
        )
    except GankitError as error:
        raise GankitError(f"evaluating the generator exported in '{path}': {error}") from None
    if inception_weights:
        inception = inception_metrics(
            generate, reference, weights=inception_weights, n=n, seed=seed, device=device
        )
        results["protocol"]["inception_weights_sha256"] = inception.pop("inception_weights_sha256")
        results.update(inception)
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


class TrainingEvaluator:
    """Evaluates the generator during training, on every process, against a fixed reference."""

    def __init__(self, recipe: Any, image_shape: tuple[int, ...], accelerator: Any) -> None:
        check_mnist_shaped(image_shape)
        settings = recipe.eval
        dataset = recipe.data.name
        if dataset != "mnist" and settings.data_root is None:
            raise GankitError(
                f"eval.every: {not_mnist_message(dataset)}. Set eval.every: 0, or, if these "
                "images are digits to compare with MNIST's, set eval.data_root to the folder "
                "that holds MNIST/raw/"
            )
        root = settings.data_root or getattr(recipe.data, "root", None)
        if root is None:
            raise GankitError("eval.every is set but there is no MNIST folder: set eval.data_root")
        self.settings, self.seed, self.accelerator = settings, recipe.train.seed, accelerator
        setting = "eval.data_root" if settings.data_root else "data.root"
        self.reference = reference_images(root, settings.split, root_setting=setting)
        self.metrics = MNISTMetrics(accelerator.device)
        shard = self.reference[accelerator.process_index :: accelerator.num_processes]
        for batch in shard.split(settings.batch_size):
            self.metrics.update_real(batch.to(accelerator.device))

    @staticmethod
    def describe(results: dict[str, Any]) -> str:
        """One line for the terminal."""
        line = (
            f"Frechet distance {results['frechet_distance']:.3f}  "
            f"classifier score {results['classifier_score']:.3f}  "
            f"classes covered {results['classes_covered']}/10"
        )
        if "label_accuracy" in results:
            line += f"  label accuracy {results['label_accuracy']:.3f}"
        return line

    @torch.no_grad()
    def __call__(self, generator: torch.nn.Module) -> dict[str, Any]:
        generate = conditional_generate(generator, self.accelerator.autocast)
        with eval_mode(generator):
            return evaluate(
                generate,
                self.reference,
                n=self.settings.n,
                split=self.settings.split,
                seed=self.seed,
                batch_size=self.settings.batch_size,
                device=self.accelerator.device,
                process=self.accelerator.process_index,
                processes=self.accelerator.num_processes,
                metrics=self.metrics,
            )


def check_inception_weights(weights: str) -> None:
    """Fail early, before any work, when the Inception weights file is not on disk."""
    if not Path(weights).is_file():
        raise GankitError(
            f"Inception weights not found at '{weights}'; download "
            "pt_inception-2015-12-05-6726825d.pth (torch-fidelity's FID Inception) where a "
            "network is available and pass its path"
        )


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """Grey or RGB images in [-1, 1] as the uint8 RGB batches the Inception extractor takes."""
    images = to_uint8(images)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def inception_metrics(
    generate: Callable[[int, torch.Generator], GeneratedBatch],
    reference: torch.Tensor,
    *,
    weights: str,
    n: int,
    seed: int = 0,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Inception-v3 FID and KID (torchmetrics / torch-fidelity), from weights on local disk.

    `weights` is the torch-fidelity Inception file (pt_inception-2015-12-05-6726825d.pth); it is
    never downloaded here.
    """
    check_inception_weights(weights)
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.image.kid import KernelInceptionDistance

        extractor = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(weights))
    except ModuleNotFoundError as error:
        raise GankitError(
            f"Inception metrics need torch-fidelity ({error}); pip install torch-fidelity"
        ) from None
    extractor = extractor.to(device)
    fid = FrechetInceptionDistance(feature=extractor).to(device)
    kid = KernelInceptionDistance(feature=extractor, subset_size=min(1000, n)).to(device)
    for batch in reference.split(batch_size):
        batch = to_inception_input(batch.to(device))
        fid.update(batch, real=True)
        kid.update(batch, real=True)
    rng = torch.Generator(device).manual_seed(seed)
    for start in range(0, n, batch_size):
        images, _ = split_generated(generate(min(batch_size, n - start), rng))
        check_finite_samples(images)
        batch = to_inception_input(images)
        fid.update(batch, real=False)
        kid.update(batch, real=False)
    kid_mean, kid_std = kid.compute()
    return {
        "inception_fid": float(fid.compute()),
        "inception_kid": float(kid_mean),
        "inception_kid_std": float(kid_std),
        "inception_weights_sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
    }
