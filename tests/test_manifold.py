"""Precision/recall and density/coverage: hand-checked cases and a plain reference version."""

from __future__ import annotations

import pytest
import torch

from gankit.metrics import manifold
from gankit.metrics.manifold import knn_radii, manifold_metrics


def reference_prdc(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """The definitions written out on full distance matrices, one point at a time."""
    real, fake = real.double(), fake.double()

    def radius(points: torch.Tensor, i: int, k: int) -> float:
        others = [float((points[i] - points[j]).norm()) for j in range(len(points)) if j != i]
        return sorted(others)[k - 1]

    def inside(point: torch.Tensor, center: torch.Tensor, r: float) -> bool:
        return float((point - center).norm()) <= r

    r3 = [radius(real, i, 3) for i in range(len(real))]
    f3 = [radius(fake, j, 3) for j in range(len(fake))]
    r5 = [radius(real, i, 5) for i in range(len(real))]
    real_balls3 = list(zip(real, r3, strict=True))
    fake_balls3 = list(zip(fake, f3, strict=True))
    real_balls5 = list(zip(real, r5, strict=True))
    in_real3 = [any(inside(y, x, r) for x, r in real_balls3) for y in fake]
    in_fake3 = [any(inside(x, y, r) for y, r in fake_balls3) for x in real]
    in_real5 = [sum(inside(y, x, r) for x, r in real_balls5) for y in fake]
    covered5 = [any(inside(y, x, r) for y in fake) for x, r in real_balls5]
    precision = sum(in_real3) / len(fake)
    recall = sum(in_fake3) / len(real)
    density = sum(in_real5) / (5 * len(fake))
    coverage = sum(covered5) / len(real)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_precision_by_hand_on_a_line():
    # reals at 0..6; their 3rd-nearest-neighbour radii are 3, 2, 2, 2, 2, 2, 3
    real = torch.arange(7.0).unsqueeze(1)
    assert knn_radii(real, 3)[0].tolist() == [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0]
    # inside, far outside, on the edge of 6's ball, on the edge of 0's, just outside 0's
    fake = torch.tensor([[2.5], [14.0], [9.0], [-3.0], [-3.5], [20.0], [30.0], [40.0]])
    assert manifold_metrics(real, fake)["precision"] == 3 / 8


def test_too_few_points_for_the_neighbourhoods_give_no_numbers():
    points = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert set(manifold_metrics(points, points).values()) == {None}


def test_identical_sets_score_one_and_far_apart_sets_zero():
    points = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    same = manifold_metrics(points, points.clone())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0  # each generated point sits in its own ball, and others'
    far = manifold_metrics(points, points + 1000.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_one_generated_mode_has_precision_but_no_recall_or_coverage():
    rng = torch.Generator().manual_seed(1)
    real = torch.cat([torch.randn(40, 4, generator=rng) + 10 * c for c in range(4)])
    collapsed = torch.randn(160, 4, generator=rng) * 0.3  # all near the first mode
    scores = manifold_metrics(real, collapsed)
    assert scores["precision"] > 0.9
    assert scores["recall"] < 0.3 and scores["coverage"] < 0.3


@pytest.mark.parametrize("chunk", [7, 1024])
def test_chunked_distances_match_the_plain_definitions(monkeypatch, chunk):
    monkeypatch.setattr(manifold, "CHUNK", chunk)  # several chunks, and one
    rng = torch.Generator().manual_seed(2)
    real = torch.randn(45, 5, generator=rng)
    fake = torch.randn(38, 5, generator=rng) * 0.8 + 1.5
    got = manifold_metrics(real, fake)
    expected = reference_prdc(real, fake)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1  # a case that tells them apart
