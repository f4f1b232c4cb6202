"""Small image classifiers whose features and predictions measure generated images.

Inception features fit 28x28 digits poorly and cannot be downloaded everywhere, so the
classifier metrics use a small CNN trained on the dataset itself (`gankit classifier train`,
`classifier_training.py`). Each one is a safetensors file with a JSON card beside it (same name,
`.json`) that records how it was made and its SHA-256. gankit ships the MNIST one
(`assets/mnist_classifier.*`, rebuilt by `scripts/train_classifier.py`), the default for MNIST.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from torch import nn

from gankit.core.bounded import BoundedReadError, read_json_object
from gankit.core.errors import GankitError, shown
from gankit.core.sizes import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_IMAGE_SIDE,
    check_fits,
    meta_state,
    parameter_bytes,
)
from gankit.outputs.export import file_sha256

ASSETS = Path(__file__).resolve().parent / "assets"
WEIGHTS = ASSETS / "mnist_classifier.safetensors"
CARD = ASSETS / "mnist_classifier.json"
CARD_FORMAT = "gankit-classifier"  # marks a card (and its weights) as written by gankit
MIN_SIDE = 4  # two 2x2 poolings


class ImageClassifier(nn.Module):
    """Two conv blocks and a 128-unit layer; takes (N, C, H, W) images in [-1, 1]."""

    num_features = 128  # the feature layer's width (torchmetrics reads this attribute)

    def __init__(
        self, image_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        if height < MIN_SIDE or width < MIN_SIDE or num_classes < 2:
            raise ValueError(f"need images of at least 4x4 and 2 classes, got {image_shape}")
        self.image_shape, self.num_classes = tuple(image_shape), num_classes
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), self.num_features),
            nn.ReLU(),
        )
        self.classify = nn.Linear(self.num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes)."""
        return self.classify(self.features(images))


class MNISTClassifier(ImageClassifier):
    """The classifier for 1x28x28 digits in 10 classes (the shipped one's architecture)."""

    def __init__(self) -> None:
        super().__init__((1, 28, 28), 10)


class Features(nn.Module):
    """The classifier's 128-d feature layer, as a module (for Frechet distance)."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float())


class Logits(nn.Module):
    """The classifier's logits, as a module (for the classifier score)."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images.float())


def card_path(weights: str | Path) -> Path:
    """The card beside a classifier's weights: the same name ending in .json."""
    return Path(weights).with_suffix(".json")


def read_card(weights: str | Path, setting: str = "--classifier") -> dict[str, Any]:
    """The card of the classifier at `weights`, checked for what the metrics need; errors name
    `setting`, the option or recipe key that gave the path."""
    weights, card_file = Path(weights), card_path(weights)
    fix = "train one with `gankit classifier train DATASET --out FILE.safetensors`"
    if not weights.is_file():
        raise GankitError(f"{setting}: classifier weights {weights} not found; {fix}")
    if not (card_file.exists() or card_file.is_symlink()):
        raise GankitError(
            f"{setting}: {weights} has no card {card_file.name} beside it (it says how the "
            f"classifier was trained); {fix}"
        )
    try:
        card = read_json_object(card_file, what=f"{setting}: classifier card")
    except BoundedReadError as error:
        raise GankitError(f"{error}; {fix}") from None
    problems = []
    try:
        check_card_sizes(card.get("num_classes"), card.get("image_shape"))
    except ValueError as error:
        problems.append(str(error))
    problems += [
        *[
            f"{key} is missing"
            for key in ("sha256", "dataset")
            if not isinstance(card.get(key), str)
        ],
    ]
    if problems:
        raise GankitError(
            f"{setting}: classifier card {card_file} is incomplete ({'; '.join(problems)}); {fix}"
        )
    return card


def whole(value: Any, low: int, high: int) -> bool:
    """Whether `value` is an integer (not a boolean) from `low` to `high`."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_card_sizes(num_classes: Any, image_shape: Any) -> None:
    """A card's class count and image shape are integers within gankit's bounds, else a
    ValueError that says which and what they may be."""
    if not whole(num_classes, 2, MAX_CLASSES):
        raise ValueError(
            f"num_classes must be an integer from 2 to {MAX_CLASSES:,}, got {shown(num_classes)}"
        )
    fits = (
        isinstance(image_shape, list)
        and len(image_shape) == 3
        and whole(image_shape[0], 1, MAX_CHANNELS)
        and all(whole(side, MIN_SIDE, MAX_IMAGE_SIDE) for side in image_shape[1:])
    )
    if not fits:
        raise ValueError(
            f"image_shape must be [channels, height, width] with 1 to {MAX_CHANNELS} channels "
            f"and sides from {MIN_SIDE} to {MAX_IMAGE_SIDE}, got {shown(image_shape)}"
        )


@dataclass(frozen=True)
class Classifier:
    """A loaded classifier, its card and where it came from."""

    model: ImageClassifier
    card: dict[str, Any]
    path: Path

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) images it takes."""
        return tuple(self.card["image_shape"])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        """How many classes it predicts."""
        return int(self.card["num_classes"])

    @property
    def sha256(self) -> str:
        """SHA-256 of its weights (checked against the card when loaded)."""
        return str(self.card["sha256"])


@lru_cache(maxsize=4)
def _loaded(path: str, sha256: str) -> Classifier:
    card = read_card(path)
    if file_sha256(path) != card["sha256"]:
        raise GankitError(
            f"classifier weights {path} do not match the SHA-256 in {card_path(path).name}: "
            "the file is damaged or was replaced; train it again with `gankit classifier train`"
        )
    shape, classes = tuple(card["image_shape"]), card["num_classes"]
    state = meta_state(lambda: ImageClassifier(shape, classes))
    if state is not None:
        check_fits(
            parameter_bytes(state),
            "cpu",
            f"the classifier {card_path(path).name} describes ({list(shape)} images, {classes:,} "
            "classes)",
            hint="check its card, or train a classifier for smaller images",
        )
    model = ImageClassifier(shape, classes)
    try:
        load_model(model, path, strict=True)
    except Exception as error:  # safetensors raises several types for bad files
        raise GankitError(
            f"classifier weights {path} do not fit the network its card describes "
            f"({type(error).__name__}); train it again with `gankit classifier train`"
        ) from None
    return Classifier(model.eval().requires_grad_(False), card, Path(path))


def load(path: str | Path | None = None, device: str | torch.device = "cpu") -> Classifier:
    """The classifier at `path` (None: the shipped MNIST one), verified against its card, in
    eval mode with gradients off."""
    path = str(Path(path).expanduser().resolve()) if path else str(WEIGHTS)
    loaded = _loaded(path, read_card(path)["sha256"])
    return Classifier(loaded.model.to(device), loaded.card, loaded.path)


def weights_sha256() -> str:
    """SHA-256 of the shipped MNIST weights, recorded in every evaluation's protocol."""
    return file_sha256(WEIGHTS)


def card() -> dict[str, Any]:
    """How the shipped MNIST weights were trained and their test accuracy."""
    return read_json_object(CARD, what="shipped classifier card")


def load_classifier(device: str | torch.device = "cpu") -> ImageClassifier:
    """The shipped MNIST classifier, in eval mode with gradients off."""
    if not WEIGHTS.is_file():
        raise FileNotFoundError(
            f"{WEIGHTS} is missing; rebuild it with `python scripts/train_classifier.py`"
        )
    return load(None, device).model
