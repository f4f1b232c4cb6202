"""Inception-v3 FID, KID, improved precision/recall and density/coverage (torchmetrics,
torch-fidelity's network) for images of any size and channel count, all from one pass of
Inception features: grey images are repeated to RGB, and the network resizes to 299x299 itself
(antialiased bilinear of the uint8 images), or, with the `clean` resize, the images are first
resized as clean-fid's "clean" mode does (Parmar et al. 2022): PIL bicubic of each channel.

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

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from gankit.components.data import to_uint8
from gankit.core.errors import GankitError, warn
from gankit.metrics.classifier import file_sha256
from gankit.metrics.manifold import (
    DENSITY_COVERAGE_K,
    PRECISION_RECALL_K,
    manifold_metrics,
    manifold_reference,
)

WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries it
OFFLINE_ENV = "GANKIT_OFFLINE"  # 1: never download
FEATURES = 2048
INPUT_SIDE = 299
RESIZES = {
    "extractor": "by the extractor: torch bilinear (antialiased) of the uint8 images to 299x299",
    "clean": "clean (clean-fid's 'clean' mode, written with PIL): each channel of the uint8 "
    "images resized to 299x299 by PIL bicubic in float, then rounded to uint8 for the extractor",
}


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


def to_inception_input(images: torch.Tensor, resize: str = "extractor") -> torch.Tensor:
    """Grey or RGB images in [-1, 1] as the uint8 RGB batches the Inception extractor takes;
    `resize` "clean": already resized to 299x299 by `clean_resize`."""
    images = to_uint8(images)
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    return clean_resize(images) if resize == "clean" else images


def clean_resize(images: torch.Tensor, side: int = INPUT_SIDE) -> torch.Tensor:
    """uint8 images (N, C, H, W) resized to side x side as clean-fid's "clean" mode does: each
    channel a float PIL image ('F'), bicubic, clipped to [0, 255]; then rounded to uint8."""
    pixels = images.cpu().numpy().astype(np.float32)
    resized = np.empty((*pixels.shape[:2], side, side), dtype=np.float32)
    for index, image in enumerate(pixels):
        for channel, plane in enumerate(image):
            picture = Image.fromarray(plane, mode="F").resize((side, side), Image.BICUBIC)
            resized[index, channel] = np.asarray(picture)
    rounded = np.rint(resized.clip(0, 255)).astype(np.uint8)
    return torch.from_numpy(rounded).to(images.device)


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
    """Inception FID, KID, precision/recall and density/coverage of generated images against
    reference features, all on the same features. `resize`: a key of `RESIZES`."""

    def __init__(
        self, weights: Path, device: str | torch.device = "cpu", resize: str = "extractor"
    ) -> None:
        if resize not in RESIZES:
            raise ValueError(f"unknown resize {resize!r}; known: {', '.join(RESIZES)}")
        self.weights, self.device, self.resize = weights, device, resize
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

    @property
    def cache_name(self) -> str:
        """What its reference features are cached as (the resize changes them)."""
        return "inception" if self.resize == "extractor" else f"inception-{self.resize}"

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """2048-d Inception features of images in [-1, 1]."""
        return self.extractor(to_inception_input(images.to(self.device), self.resize)).float()

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
        """`inception_fid`, `inception_kid` and its std over KID's subsets, and
        `inception_precision`, `_recall`, `_density`, `_coverage` of the same features."""
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
            **{
                f"inception_{name}": value
                for name, value in manifold_metrics(
                    manifold_reference(self.real, fake.shape[0]), fake
                ).items()
            },
        }

    def protocol(self) -> dict[str, Any]:
        """How the Inception numbers were made."""
        return {
            "inception_extractor": "torchmetrics NoTrainInceptionV3 (torch-fidelity "
            "inception-v3-compat), 2048-d pool features (FID, KID, precision, recall, density, "
            "coverage); grey repeated to RGB, uint8",
            "inception_resize": RESIZES[self.resize],
            "inception_precision_recall_k": PRECISION_RECALL_K,
            "inception_density_coverage_k": DENSITY_COVERAGE_K,
            "inception_manifold_reference_samples": "as many reference features as generated "
            "samples (at most all), drawn by a shuffle seeded with 0",
            "inception_weights_sha256": self.extractor_sha256,
            "inception_reference_cache": self.cache_file,
        }
