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


def knn_radii(features: torch.Tensor, *ks: int) -> list[torch.Tensor]:
    """Each vector's distance to its k-th nearest other vector in the same set, for each k."""
    if features.shape[0] <= max(ks):
        raise ValueError(f"need more than k={max(ks)} feature vectors, got {features.shape[0]}")
    nearest = torch.cat(  # k + 1 smallest: each vector is its own nearest, at distance 0
        [
            torch.cdist(rows, features).topk(max(ks) + 1, dim=1, largest=False).values
            for rows in features.split(CHUNK)
        ]
    )
    return [nearest[:, k] for k in ks]


@torch.no_grad()
def manifold_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float | None]:
    """Precision, recall (k=3), density and coverage (k=5) of `fake` (M, D) against `real`
    (N, D), computed in float64; None each when a set has too few vectors for k=5.

    One pass over the fake-to-real distances serves all four (chunks of fake rows)."""
    if min(real.shape[0], fake.shape[0]) <= DENSITY_COVERAGE_K:
        return dict.fromkeys(("precision", "recall", "density", "coverage"))
    real, fake = real.double(), fake.double()
    real_pr, real_dc = knn_radii(real, PRECISION_RECALL_K, DENSITY_COVERAGE_K)
    (fake_pr,) = knn_radii(fake, PRECISION_RECALL_K)
    in_real_ball = torch.zeros(fake.shape[0], dtype=torch.bool)
    in_real_balls = torch.zeros(fake.shape[0], dtype=torch.float64)
    recalled = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    nearest_fake = torch.full((real.shape[0],), torch.inf, dtype=torch.float64, device=real.device)
    for start in range(0, fake.shape[0], CHUNK):
        distances = torch.cdist(fake[start : start + CHUNK], real)  # (chunk, N)
        rows = slice(start, start + distances.shape[0])
        in_real_ball[rows] = (distances <= real_pr).any(1).cpu()
        in_real_balls[rows] = (distances <= real_dc).sum(1).double().cpu()
        recalled |= (distances <= fake_pr[rows, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, distances.min(0).values)
    return {
        "precision": float(in_real_ball.double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_real_balls.sum() / (DENSITY_COVERAGE_K * fake.shape[0])),
        "coverage": float((nearest_fake <= real_dc).double().mean()),
    }


def manifold_reference(real: torch.Tensor, count: int) -> torch.Tensor:
    """`count` reference features (all when there are fewer) for precision/recall and
    density/coverage, which compare sets of equal size; a fixed shuffle picks them."""
    if real.shape[0] <= count:
        return real
    order = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(0))
    return real[order[:count].to(real.device)]
