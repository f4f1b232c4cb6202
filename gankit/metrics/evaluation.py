"""Sample quality through a classifier of the dataset: Frechet distance, classifier score,
class coverage, precision/recall and density/coverage.

Everything is computed on one classifier (`gankit.metrics.classifier`; the shipped one for
MNIST, else one made by `gankit classifier train`): the Frechet distance between its 128-d
features of generated and of real images (torchmetrics' FID on those features), improved
precision and recall and density and coverage on the same features (`manifold.py`), the
Inception-score formula on its logits, and the histogram of predicted classes against the
uniform one (mode collapse shows there first). With several processes each generates its own
share of samples and torchmetrics gathers them, so nothing is counted twice. Every result
carries a `protocol` saying exactly how it was made.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable
from typing import Any

import torch
import torchmetrics
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from gankit.core.errors import GankitError
from gankit.metrics import classifier as classifiers
from gankit.metrics.inception import (  # noqa: F401  (the last two: their names before)
    Identity,
    InceptionMetrics,
    check_inception_weights,
    to_inception_input,
)
from gankit.metrics.manifold import (
    DENSITY_COVERAGE_K,
    PRECISION_RECALL_K,
    manifold_metrics,
    manifold_reference,
)
from gankit.metrics.reference import progress

SCORE_SPLITS = 10
FRECHET_KEYS = ("frechet_distance", "inception_fid")
COVERED_SHARE = 0.2  # a class is covered with at least this share of a fair 1/K share


class LabelAgreement(Metric):
    """How often the classifier names the class a conditional generator was asked for, per
    class (summed across processes)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.add_state("correct", torch.zeros(num_classes, dtype=torch.float64), "sum")
        self.add_state("total", torch.zeros(num_classes, dtype=torch.float64), "sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.long()
        hits = (logits.argmax(1) == labels).double()
        self.correct += torch.zeros_like(self.correct).index_add_(0, labels, hits)
        self.total += torch.bincount(labels, minlength=self.total.numel()).double()

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


class GeneratedFeatures(Metric):
    """The classifier's features and logits of every generated image (gathered across
    processes when computed)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("features", [], dist_reduce_fx="cat")
        self.add_state("logits", [], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor, logits: torch.Tensor) -> None:
        self.features.append(features)
        self.logits.append(logits)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return dim_zero_cat(self.features), dim_zero_cat(self.logits)


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


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between two sets of feature vectors (torchmetrics' FID, float64)."""
    metric = FrechetInceptionDistance(feature=Identity(real.shape[1])).to(real.device)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def classifier_score(logits: torch.Tensor, splits: int = SCORE_SPLITS) -> tuple[float, float]:
    """The Inception-score formula on classifier logits, mean and std over `splits` parts of
    a shuffle seeded with 0 (torchmetrics' InceptionScore, reproduced on given logits)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        logits = logits[torch.randperm(logits.shape[0])]
    scores = []
    for part in logits.chunk(splits, dim=0):
        prob, log_prob = part.softmax(dim=1), part.log_softmax(dim=1)
        mean = prob.mean(dim=0, keepdim=True)
        scores.append((prob * (log_prob - mean.log())).sum(dim=1).mean().exp())
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std())


class ClassifierMetrics:
    """Accumulates real features and generated images, then computes every classifier metric
    at once. `classifier` None: the shipped MNIST classifier."""

    cache_name = "classifier"  # what its reference features are cached as

    def __init__(
        self,
        device: str | torch.device = "cpu",
        classifier: classifiers.Classifier | None = None,
    ) -> None:
        self.classifier = classifier or classifiers.load(None, device)
        self.model = self.classifier.model.to(device)
        self.device = device
        self.real: list[torch.Tensor] = []
        self.cache_file: str | None = None
        self.generated = GeneratedFeatures().to(device)
        self.agreement = LabelAgreement(self.classifier.num_classes).to(device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's features of images in [-1, 1]."""
        return self.model.features(images.to(self.device).float())

    @property
    def extractor_sha256(self) -> str:
        """SHA-256 of the feature extractor's weights (a key of cached reference features)."""
        return self.classifier.sha256

    def set_real(self, features: torch.Tensor, cache_file: str | None = None) -> None:
        """The reference features, made before, and the cache file they came from or went to
        (see `reference.cached_features`)."""
        self.real = [features.to(self.device)]
        self.cache_file = cache_file

    @torch.no_grad()
    def update_real(self, images: torch.Tensor) -> None:
        """Add reference images, (N, C, H, W) in [-1, 1]."""
        self.real.append(self.features(images))

    @torch.no_grad()
    def update_generated(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add generated images, (N, C, H, W) in [-1, 1], and the class each was asked to
        show when the generator is class-conditional."""
        images = images.float()
        check_finite_samples(images)
        features = self.features(images)
        logits = self.model.classify(features)
        self.generated.update(features, logits)
        if labels is not None:
            self.agreement.update(logits, labels.to(logits.device))

    @property
    def reference_count(self) -> int:
        """How many reference images the features stand for."""
        return sum(batch.shape[0] for batch in self.real)

    @property
    def generated_count(self) -> int:
        """How many generated images this process has added."""
        return sum(batch.shape[0] for batch in self.generated.features)

    def compute(self) -> dict[str, Any]:
        """The metrics of everything added so far (across processes when distributed)."""
        fake, logits = self.generated.compute()
        real = torch.cat(self.real)
        score, score_std = classifier_score(logits.float())
        classes = self.classifier.num_classes
        histogram = torch.bincount(logits.argmax(1), minlength=classes).double()
        histogram = histogram / histogram.sum().clamp(min=1)
        uniform = torch.full_like(histogram, 1 / classes)
        nonzero = histogram > 0
        conditional = bool(self.agreement.update_count)
        return {
            **(self.agreement.compute() if conditional else {}),
            "frechet_distance": frechet_distance(real, fake),
            "classifier_score": score,
            "classifier_score_std": score_std,
            "class_histogram": [round(float(p), 5) for p in histogram],
            "classes_covered": int((histogram >= COVERED_SHARE / classes).sum()),
            "coverage_tv": float(0.5 * (histogram - uniform).abs().sum()),
            "coverage_kl": float((histogram[nonzero] * (histogram[nonzero] * classes).log()).sum()),
            **manifold_metrics(manifold_reference(real, fake.shape[0]), fake),
        }

    def reset_generated(self) -> None:
        """Forget the generated images (the reference features are kept)."""
        self.generated.reset()
        self.agreement.reset()

    def protocol(self) -> dict[str, Any]:
        """How the classifier numbers were made."""
        card = self.classifier.card
        return {
            "extractor": f"gankit.metrics.classifier.ImageClassifier ({self.classifier.path.name}"
            f", trained on {card['dataset']}): 128-d ReLU features (Frechet distance, precision, "
            "recall, density, coverage), logits (classifier score, class histogram)",
            "extractor_weights_sha256": self.classifier.sha256,
            "extractor_test_accuracy": card.get("test_accuracy"),
            "extractor_image_shape": list(self.classifier.image_shape),
            "extractor_classes": self.classifier.num_classes,
            "score_splits": SCORE_SPLITS,
            "classes_covered_threshold": round(COVERED_SHARE / self.classifier.num_classes, 6),
            "precision_recall_k": PRECISION_RECALL_K,
            "density_coverage_k": DENSITY_COVERAGE_K,
            "reference_cache": self.cache_file,
            "manifold_reference_samples": "as many reference features as generated samples "
            "(at most all), drawn by a shuffle seeded with 0",
        }


MNISTMetrics = ClassifierMetrics  # the name before other datasets were measured


def check_finite_samples(images: torch.Tensor) -> None:
    """Refuse generated images holding NaN or inf before they reach any feature statistics
    (whose matrix square root would crash on them)."""
    bad = int((~torch.isfinite(images.reshape(images.shape[0], -1)).all(1)).sum())
    if bad:
        raise GankitError(
            f"{bad} of {images.shape[0]} generated samples hold NaN or inf values: the generator "
            "diverged, so there is nothing to measure; evaluate an earlier export or checkpoint"
        )


def check_shape(image_shape: tuple[int, ...], classifier: classifiers.Classifier) -> None:
    """The classifier takes images of the generator's shape."""
    if tuple(image_shape) != classifier.image_shape:
        raise GankitError(
            f"the classifier {classifier.path.name} takes {list(classifier.image_shape)} images "
            f"(trained on {classifier.card['dataset']}), but this generator makes "
            f"{list(image_shape)}; give a classifier trained on this data "
            "(gankit classifier train DATASET)"
        )


Metrics = ClassifierMetrics | InceptionMetrics


@torch.no_grad()
def evaluate(
    generate: Callable[[int, torch.Generator], GeneratedBatch],
    reference: torch.Tensor | None,
    *,
    n: int,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    process: int = 0,
    processes: int = 1,
    metrics: ClassifierMetrics | None = None,
    also: tuple[Metrics, ...] = (),
    reference_description: str | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate `generate(count, rng)` against `reference` images (from `split`).

    `generate` returns images, or (images, labels) for a class-conditional generator; the
    labels add `label_accuracy` (how often the classifier agrees with the asked class).

    With several processes each makes its own `n / processes` samples (from its own seed); the
    metrics gather them. `metrics` that already hold the reference features are reused (only
    the generated side is reset), which saves recomputing the reference at every evaluation
    during training; `reference` is then only counted (None: the metrics know). `also` are
    further metrics (Inception) fed with the same generated images, or the only ones when
    `metrics` is None and `also` is not empty.
    """
    if metrics is None and not also:
        if reference is None:
            raise ValueError("evaluate needs reference images or metrics that hold them")
        metrics = ClassifierMetrics(device)
        for batch in reference.split(batch_size):
            metrics.update_real(batch.to(device))
    every = [metric for metric in (metrics, *also) if metric is not None]
    for metric in every:
        metric.reset_generated()
    share = n // processes + (1 if process < n % processes else 0)
    rng = torch.Generator(device).manual_seed(seed * 1_000_003 + process)
    starts = range(0, share, batch_size)
    for start in progress(starts, len(starts), "generating and measuring", show_progress):
        images, labels = split_generated(generate(min(batch_size, share - start), rng))
        for metric in every:
            metric.update_generated(images, labels)
    if show_progress:  # the k-NN distances of 10,000 samples take a while on a CPU
        print("gankit: computing the metrics", file=sys.stderr, flush=True)
    results: dict[str, Any] = {}
    for metric in every:
        results.update(metric.compute())
    results["protocol"] = {
        **{key: value for metric in every for key, value in metric.protocol().items()},
        "generated_samples": n,
        "reference_samples": every[0].reference_count if reference is None else len(reference),
        "reference": reference_description or f"MNIST {split} split, images scaled to [-1, 1]",
        "seed": seed,
        "processes": processes,
        "torchmetrics": torchmetrics.__version__,
    }
    if not all(math.isfinite(results[key]) for key in FRECHET_KEYS if key in results):
        raise GankitError("a Frechet distance is not finite; are the generated images finite?")
    return results


def reference_images(
    data_root: str, split: str = "test", *, root_setting: str = "--data-root"
) -> torch.Tensor:
    """The MNIST images to compare against, (N, 1, 28, 28) in [-1, 1]; a missing folder's
    error names `root_setting`, the setting that gave `data_root`."""
    from gankit.components.data import mnist_reference

    return mnist_reference(data_root, split, root_setting)  # type: ignore[arg-type]


def __getattr__(name: str) -> Any:
    """`evaluate_export` and `TrainingEvaluator` under the names they had here before they
    moved to `evaluators.py` (which imports this module)."""
    if name in ("evaluate_export", "TrainingEvaluator"):
        from gankit.metrics import evaluators

        return getattr(evaluators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
