"""Inception-v3 FID and KID (torchmetrics, torch-fidelity's network) for images of any size and
channel count: grey images are repeated to RGB, and the network resizes to 299x299 itself.

The weights are torch-fidelity's file. They are read from `--inception-weights` /
`eval.inception_weights`, else from torch's hub cache, where torch-fidelity keeps them; only
when neither holds them are they downloaded there (never with GANKIT_OFFLINE=1). When they
cannot be had, the error says which file to put where.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from gankit.components.data import to_uint8
from gankit.core.errors import GankitError, warn
from gankit.metrics.classifier import file_sha256

WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries it
OFFLINE_ENV = "GANKIT_OFFLINE"  # 1: never download
FEATURES = 2048


def cached_weights() -> Path:
    """Where torch-fidelity keeps the Inception weights: torch's hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def check_inception_weights(weights: str) -> None:
    """Fail early, before any work, when a given Inception weights file is not on disk."""
    if not Path(weights).expanduser().is_file():
        raise GankitError(
            f"Inception weights not found at '{weights}'; download {WEIGHTS_URL} where a "
            f"network is available and pass its path, or put it at {cached_weights()}"
        )


def resolve_weights(weights: str | None, setting: str = "--inception-weights") -> Path:
    """The Inception weights file: `weights` if given, else the hub cache's, downloaded there
    first if missing and allowed. Any failure is one line naming the file and where it goes."""
    if weights:
        check_inception_weights(weights)
        return Path(weights).expanduser()
    cached = cached_weights()
    if cached.is_file():
        return cached
    advice = (
        f"download {WEIGHTS_URL} where a network is available and put it at {cached} (or pass "
        f"its path with {setting})"
    )
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise GankitError(
            f"Inception weights not found at {cached} ({OFFLINE_ENV} is set); {advice}"
        )
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(cached), progress=False)
    except Exception as error:  # URLError, HTTPError, OSError, timeouts: all say the same
        reason = " ".join(str(error).split())[:120]
        raise GankitError(
            f"Inception weights not found at {cached} and the download failed ({reason}); {advice}"
        ) from None
    return cached


def load_inception(weights: Path, device: str | torch.device = "cpu") -> nn.Module:
    """torchmetrics' Inception extractor (2048-d pool features) with `weights`.

    torch-fidelity unpickles the file in full, so it is first read with torch's weights-only
    loader, which refuses anything but tensors: a file that would run code is never loaded."""
    try:
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError, ...
        raise GankitError(
            f"Inception weights {weights} are not a plain weights file ({type(error).__name__}); "
            f"replace it with {WEIGHTS_URL}"
        ) from None
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extractor = NoTrainInceptionV3("inception-v3-compat", [str(FEATURES)], str(weights))
    except ModuleNotFoundError as error:
        raise GankitError(
            f"Inception metrics need torch-fidelity ({error}); pip install 'gankit[fid]'"
        ) from None
    except Exception as error:  # a damaged or foreign file
        raise GankitError(
            f"Inception weights {weights} cannot be loaded ({type(error).__name__}); replace "
            f"the file with {WEIGHTS_URL}"
        ) from None
    return extractor.to(device).eval().requires_grad_(False)


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """Grey or RGB images in [-1, 1] as the uint8 RGB batches the Inception extractor takes."""
    images = to_uint8(images)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class Identity(nn.Module):
    """Features passed through, for torchmetrics metrics fed with features already made."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class GatheredFeatures(Metric):
    """Feature vectors added on every process, gathered across processes when computed."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("features", [], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor) -> None:
        self.features.append(features)

    def compute(self) -> torch.Tensor:
        return dim_zero_cat(self.features)


class InceptionMetrics:
    """Inception FID and KID of generated images against reference features."""

    cache_name = "inception"  # what its reference features are cached as

    def __init__(self, weights: Path, device: str | torch.device = "cpu") -> None:
        self.weights, self.device = weights, device
        self.extractor = load_inception(weights, device)
        self.extractor_sha256 = file_sha256(weights)
        if not self.extractor_sha256.startswith(WEIGHTS_SHA256_PREFIX):
            warn(
                f"Inception weights {weights} are not torch-fidelity's published file (SHA-256 "
                f"{self.extractor_sha256[:12]}...): these FID/KID are not comparable with others'"
            )
        self.real = torch.empty(0, FEATURES)
        self.cache_file: str | None = None
        self.generated = GatheredFeatures().to(device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """2048-d Inception features of images in [-1, 1]."""
        return self.extractor(to_inception_input(images.to(self.device))).float()

    def set_real(self, features: torch.Tensor, cache_file: str | None = None) -> None:
        """The reference features, and the cache file they came from or went to (see
        `reference.cached_features`)."""
        self.real = features.to(self.device)
        self.cache_file = cache_file

    @property
    def reference_count(self) -> int:
        """How many reference images the features stand for."""
        return self.real.shape[0]

    def update_generated(self, images: torch.Tensor, labels: Any = None) -> None:
        """Add generated images in [-1, 1]."""
        self.generated.update(self.features(images))

    def reset_generated(self) -> None:
        """Forget the generated images."""
        self.generated.reset()

    def compute(self) -> dict[str, Any]:
        """`inception_fid`, `inception_kid` and its std over KID's subsets."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        fake = self.generated.compute()
        subset = min(1000, fake.shape[0], self.real.shape[0])
        fid = FrechetInceptionDistance(feature=Identity(FEATURES)).to(self.device)
        kid = KernelInceptionDistance(feature=Identity(FEATURES), subset_size=subset)
        kid = kid.to(self.device)
        for metric in (fid, kid):
            metric.update(self.real, real=True)
            metric.update(fake, real=False)
        with torch.random.fork_rng(devices=[]):  # KID draws its subsets: fix them
            torch.manual_seed(0)
            kid_mean, kid_std = kid.compute()
        return {
            "inception_fid": float(fid.compute()),
            "inception_kid": float(kid_mean),
            "inception_kid_std": float(kid_std),
        }

    def protocol(self) -> dict[str, Any]:
        """How the Inception numbers were made."""
        return {
            "inception_extractor": "torchmetrics NoTrainInceptionV3 (torch-fidelity "
            "inception-v3-compat), 2048-d pool features; grey repeated to RGB, uint8, resized "
            "to 299x299 by the extractor",
            "inception_weights_sha256": self.extractor_sha256,
            "inception_reference_cache": self.cache_file,
        }
