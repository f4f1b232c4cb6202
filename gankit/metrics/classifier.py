"""The MNIST digit classifier gankit ships to measure generated digits (features and labels).

Inception features fit 28x28 digits poorly and cannot be downloaded everywhere, so the MNIST
metrics use this small CNN instead. `scripts/train_classifier.py` rebuilds its weights
deterministically; `gankit/metrics/assets/mnist_classifier.json` records how and how well.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from torch import nn

ASSETS = Path(__file__).resolve().parent / "assets"
WEIGHTS = ASSETS / "mnist_classifier.safetensors"
CARD = ASSETS / "mnist_classifier.json"


class MNISTClassifier(nn.Module):
    """Two conv blocks and a 128-unit layer; takes (N, 1, 28, 28) images in [-1, 1]."""

    num_features = 128  # the feature layer's width (torchmetrics reads this attribute)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, self.num_features),
            nn.ReLU(),
        )
        self.classify = nn.Linear(self.num_features, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10)."""
        return self.classify(self.features(images))


class Features(nn.Module):
    """The classifier's 128-d feature layer, as a module (for Frechet distance)."""

    def __init__(self, classifier: MNISTClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float())


class Logits(nn.Module):
    """The classifier's logits, as a module (for the classifier score)."""

    def __init__(self, classifier: MNISTClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images.float())


def weights_sha256() -> str:
    """SHA-256 of the shipped weights, recorded in every evaluation's protocol."""
    return hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()


def card() -> dict[str, Any]:
    """How the shipped weights were trained and their test accuracy."""
    return json.loads(CARD.read_text())


@lru_cache(maxsize=1)
def _loaded() -> MNISTClassifier:
    model = MNISTClassifier()
    load_model(model, str(WEIGHTS), strict=True)
    return model.eval().requires_grad_(False)


def load_classifier(device: str | torch.device = "cpu") -> MNISTClassifier:
    """The shipped classifier, in eval mode with gradients off."""
    if not WEIGHTS.is_file():
        raise FileNotFoundError(
            f"{WEIGHTS} is missing; rebuild it with `python scripts/train_classifier.py`"
        )
    return _loaded().to(device)
