"""Every loss on known logits, against the formulas of their papers."""

from __future__ import annotations

import math

import pytest
import torch

from gankit import LOSSES

REAL = torch.tensor([[2.0], [-1.0], [0.5]])
FAKE = torch.tensor([[-3.0], [0.0], [1.5]])


def mean(values):
    return sum(values) / len(values)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


r, f = REAL.flatten().tolist(), FAKE.flatten().tolist()
EXPECTED = {
    # name: (D loss on real, D loss on fake, G loss)
    "non_saturating": (
        mean([-math.log(sigmoid(x)) for x in r]),
        mean([-math.log(1 - sigmoid(x)) for x in f]),
        mean([-math.log(sigmoid(x)) for x in f]),
    ),
    "minimax": (
        mean([-math.log(sigmoid(x)) for x in r]),
        mean([-math.log(1 - sigmoid(x)) for x in f]),
        mean([math.log(1 - sigmoid(x)) for x in f]),
    ),
    "hinge": (mean([max(0, 1 - x) for x in r]), mean([max(0, 1 + x) for x in f]), -mean(f)),
    "wasserstein": (-mean(r), mean(f), -mean(f)),
    "least_squares": (
        mean([0.5 * (x - 1) ** 2 for x in r]),
        mean([0.5 * x**2 for x in f]),
        mean([0.5 * (x - 1) ** 2 for x in f]),
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_values_on_known_logits(name):
    loss = LOSSES.build({"name": name})
    loss_real, loss_fake = loss.discriminator(REAL, FAKE)
    expected_real, expected_fake, expected_g = EXPECTED[name]
    assert loss_real.item() == pytest.approx(expected_real, rel=1e-6)
    assert loss_fake.item() == pytest.approx(expected_fake, rel=1e-6)
    assert loss.generator(FAKE).item() == pytest.approx(expected_g, rel=1e-6)
    assert loss.generator(FAKE.bfloat16()).dtype == torch.float32  # losses in fp32


def test_every_registered_loss_has_a_value_test():
    assert set(LOSSES.names()) == set(EXPECTED)
