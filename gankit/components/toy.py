"""2-D toy data: a ring of Gaussians, and how many of its modes a generator covers.

The ring (Metz et al. 2017, "Unrolled GANs") is the standard check for mode collapse: a
generator that has collapsed puts its samples near one or a few of the modes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from pydantic import Field
from torch.utils.data import TensorDataset

from gankit.components.models.base import eval_mode
from gankit.config.registry import DATASETS
from gankit.core.sizes import MAX_CLASSES, MAX_POINTS, check_fits

POINT_BYTES = 48  # a ring point's float32 coordinates and long label, with their temporaries


def ring_centers(modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """The (modes, 2) centres of the ring's Gaussians."""
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return (torch.stack([angles.cos(), angles.sin()], dim=1) * radius).float()


class RingDataset(TensorDataset):
    """Points of a ring of Gaussians, labelled by mode. As the dataset of a run it brings its
    own evaluation (mode coverage) and the real points drawn under the sample plots."""

    def __init__(
        self, points: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, std: float
    ) -> None:
        super().__init__(points, labels)
        self.centers, self.std = centers, std
        self.classes = [str(mode) for mode in range(len(centers))]

    def evaluator(self, n: int, seed: int, accelerator: Any) -> ToyEvaluator:
        """What `eval.every` measures on this data: mode coverage of `n` samples."""
        return ToyEvaluator(self, n, seed, accelerator)

    def reference_points(self, limit: int = 2000) -> torch.Tensor:
        """Real points to draw under the generated ones."""
        return self.tensors[0][:limit]


@DATASETS.register("ring")
def ring(
    modes: Annotated[
        int,
        Field(
            ge=2,
            le=MAX_CLASSES,
            description=f"Gaussians evenly spaced on the circle; at most {MAX_CLASSES:,}",
        ),
    ] = 8,
    radius: Annotated[float, Field(gt=0, description="radius of the circle")] = 2.0,
    std: Annotated[float, Field(gt=0, description="standard deviation of each Gaussian")] = 0.02,
    size: Annotated[
        int,
        Field(gt=0, le=MAX_POINTS, description=f"points in the dataset; at most {MAX_POINTS:,}"),
    ] = 20_000,
    data_seed: Annotated[int, Field(ge=0, description="seed of the points (not of training)")] = 0,
) -> RingDataset:
    """Points (2,) from a ring of `modes` Gaussians, each labelled with its mode."""
    check_fits(size * POINT_BYTES, "cpu", f"data.size={size} (ring points)", hint="lower data.size")
    rng = torch.Generator().manual_seed(data_seed)
    labels = torch.randint(modes, (size,), generator=rng)
    centers = ring_centers(modes, radius)
    points = centers[labels] + std * torch.randn(size, 2, generator=rng)
    return RingDataset(points, labels, centers, std)


def mode_coverage(
    samples: torch.Tensor, centers: torch.Tensor, std: float, within: float = 3.0
) -> dict[str, Any]:
    """How well `samples` (N, 2) cover the Gaussians at `centers`.

    A sample is high quality when it lies within `within` standard deviations of its nearest
    centre; a mode is covered when it holds at least a fifth of a fair share (N / modes / 5)
    of the high-quality samples (the measure of Srivastava et al. 2017, VEEGAN).
    """
    samples = samples.detach().float().reshape(len(samples), -1).cpu()
    distances = torch.cdist(samples, centers.float().cpu())
    nearest, mode = distances.min(dim=1)
    good = nearest < within * std
    counts = torch.bincount(mode[good], minlength=len(centers))
    fair = len(samples) / len(centers)
    return {
        "modes_covered": int((counts >= fair / 5).sum()),
        "modes": len(centers),
        "high_quality": float(good.float().mean()),
        "mode_histogram": [int(c) for c in counts],
    }


class ToyEvaluator:
    """Mode coverage of the generator's samples on ring data (the `eval` section's `n`)."""

    def __init__(self, dataset: Any, n: int, seed: int, accelerator: Any) -> None:
        modes = len(dataset.centers)
        check_fits(  # the (n, modes) distances and their comparisons, in float32
            n * (modes + 2) * 4 * 3,
            "cpu",
            f"eval.n={n} (distances of {n:,} samples to {modes:,} modes)",
            hint="lower eval.n or data.modes",
        )
        self.centers, self.std = dataset.centers, dataset.std
        self.n, self.seed, self.accelerator = n, seed, accelerator

    @torch.no_grad()
    def __call__(self, generator: Any) -> dict[str, Any]:
        with eval_mode(generator):
            rng = torch.Generator(generator.sample_noise(1).device).manual_seed(self.seed)
            z = generator.sample_noise(self.n, generator=rng)
            samples = generator.generate(z, generator.sample_labels(self.n, generator=rng))
        return mode_coverage(samples, self.centers, self.std)

    @staticmethod
    def describe(results: dict[str, Any]) -> str:
        """One line for the terminal."""
        return (
            f"modes covered {results['modes_covered']}/{results['modes']}  "
            f"high-quality samples {results['high_quality']:.3f}"
        )
