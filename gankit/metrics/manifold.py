"""Improved precision and recall (Kynkaanniemi et al. 2019) and density and coverage (Naeem et
al. 2020) of generated features against real ones.

Each real (or generated) feature vector owns a ball whose radius is the distance to its k-th
nearest neighbour in its own set. Precision: the share of generated vectors inside some real
ball; recall: the share of real vectors inside some generated ball (k = 3). Density: generated
vectors inside real balls, counted with multiplicity, divided by k and their number; coverage:
the share of real balls holding at least one generated vector (k = 5). A point on a ball's
boundary counts as inside. Distances come from `torch.cdist` on row chunks, so memory stays
at chunk x N.
"""

from __future__ import annotations

import torch

PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5
CHUNK = 1024  # rows of a distance matrix computed at a time


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Each vector's distance to its k-th nearest other vector in the same set."""
    if features.shape[0] <= k:
        raise ValueError(f"need more than k={k} feature vectors, got {features.shape[0]}")
    radii = [
        torch.cdist(rows, features).kthvalue(k + 1, dim=1).values for rows in features.split(CHUNK)
    ]
    return torch.cat(radii)  # k + 1: each vector is its own nearest, at distance 0


def _inside_counts(
    points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor
) -> torch.Tensor:
    """For each point, how many of the balls (centers, radii) hold it."""
    counts = [(torch.cdist(rows, centers) <= radii).sum(1) for rows in points.split(CHUNK)]
    return torch.cat(counts)


def _nearest(points: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Each point's distance to its nearest vector in `others`."""
    return torch.cat([torch.cdist(rows, others).min(1).values for rows in points.split(CHUNK)])


@torch.no_grad()
def manifold_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float | None]:
    """Precision, recall (k=3), density and coverage (k=5) of `fake` (M, D) against `real`
    (N, D), computed in float64; None each when a set has too few vectors for k=5."""
    if min(real.shape[0], fake.shape[0]) <= DENSITY_COVERAGE_K:
        return dict.fromkeys(("precision", "recall", "density", "coverage"))
    real, fake = real.double(), fake.double()
    real_radii_pr = knn_radii(real, PRECISION_RECALL_K)
    fake_radii_pr = knn_radii(fake, PRECISION_RECALL_K)
    real_radii_dc = knn_radii(real, DENSITY_COVERAGE_K)
    density_counts = _inside_counts(fake, real, real_radii_dc)
    return {
        "precision": float((_inside_counts(fake, real, real_radii_pr) > 0).double().mean()),
        "recall": float((_inside_counts(real, fake, fake_radii_pr) > 0).double().mean()),
        "density": float(density_counts.double().sum() / (DENSITY_COVERAGE_K * fake.shape[0])),
        "coverage": float((_nearest(real, fake) <= real_radii_dc).double().mean()),
    }
