"""Every loss on known logits, against the formulas of their papers."""

from __future__ import annotations

import math

import pytest
import torch

from gankit import LOSSES
from gankit.components.losses import Logits, named_parts

REAL = torch.tensor([[2.0], [-1.0], [0.5]])
FAKE = torch.tensor([[-3.0], [0.0], [1.5]])


def mean(values):
    return sum(values) / len(values)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


r, f = REAL.flatten().tolist(), FAKE.flatten().tolist()
PAIRS = list(zip(r, f, strict=True))
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


RELATIVISTIC = {
    # (name, least_squares): ({D part: value}, {G part: value})
    ("relativistic", False): (
        {"d_loss": mean([math.log1p(math.exp(-(a - b))) for a, b in PAIRS])},
        {"g_loss": mean([math.log1p(math.exp(-(b - a))) for a, b in PAIRS])},
    ),
    ("relativistic", True): (
        {"d_loss": mean([(a - b - 1) ** 2 for a, b in PAIRS])},
        {"g_loss": mean([(b - a - 1) ** 2 for a, b in PAIRS])},
    ),
    ("relativistic_average", False): (
        {
            "d_loss_real": mean([-math.log(sigmoid(a - mean(f))) for a in r]),
            "d_loss_fake": mean([-math.log(1 - sigmoid(b - mean(r))) for b in f]),
        },
        {
            "g_loss_fake": mean([-math.log(sigmoid(b - mean(r))) for b in f]),
            "g_loss_real": mean([-math.log(1 - sigmoid(a - mean(f))) for a in r]),
        },
    ),
    ("relativistic_average", True): (  # RaLSGAN, Jolicoeur-Martineau (2018), eq. 9
        {
            "d_loss_real": mean([(a - mean(f) - 1) ** 2 for a in r]),
            "d_loss_fake": mean([(b - mean(r) + 1) ** 2 for b in f]),
        },
        {
            "g_loss_fake": mean([(b - mean(r) - 1) ** 2 for b in f]),
            "g_loss_real": mean([(a - mean(f) + 1) ** 2 for a in r]),
        },
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_values_on_known_logits(name):
    loss = LOSSES.build({"name": name})
    d_parts = loss.discriminator(Logits(REAL, FAKE))
    expected_real, expected_fake, expected_g = EXPECTED[name]
    assert list(d_parts) == ["d_loss_real", "d_loss_fake"] == list(loss.parts["discriminator"])
    assert d_parts["d_loss_real"].item() == pytest.approx(expected_real, rel=1e-6)
    assert d_parts["d_loss_fake"].item() == pytest.approx(expected_fake, rel=1e-6)
    g_parts = loss.generator(Logits(None, FAKE))  # G's update computes no real logits
    assert list(g_parts) == ["g_loss"] and not loss.generator_uses_real
    assert g_parts["g_loss"].item() == pytest.approx(expected_g, rel=1e-6)
    assert loss.generator(Logits(None, FAKE.bfloat16()))["g_loss"].dtype == torch.float32


@pytest.mark.parametrize("spec", sorted(RELATIVISTIC), ids=lambda s: f"{s[0]}-ls{int(s[1])}")
def test_relativistic_loss_values_on_known_logits(spec):
    name, least_squares = spec
    loss = LOSSES.build({"name": name, "least_squares": least_squares})
    assert loss.generator_uses_real  # the iteration computes D(real) in G's update for it
    expected_d, expected_g = RELATIVISTIC[spec]
    for parts, expected in (
        (loss.discriminator(Logits(REAL, FAKE)), expected_d),
        (loss.generator(Logits(REAL, FAKE.bfloat16())), expected_g),
    ):
        assert {k: v.item() for k, v in parts.items()} == pytest.approx(expected, rel=1e-5)
        assert all(v.dtype == torch.float32 for v in parts.values())
    assert tuple(loss.discriminator(Logits(REAL, FAKE))) == loss.parts["discriminator"]
    assert tuple(loss.generator(Logits(REAL, FAKE))) == loss.parts["generator"]


def test_relativistic_losses_push_each_side_past_the_other():
    """D's loss falls as reals score above fakes; G's falls as fakes score above reals."""
    for name in ("relativistic", "relativistic_average"):
        loss = LOSSES.build({"name": name})
        apart, close = Logits(REAL + 5, FAKE), Logits(REAL, FAKE)
        assert sum(loss.discriminator(apart).values()) < sum(loss.discriminator(close).values())
        assert sum(loss.generator(apart).values()) > sum(loss.generator(close).values())


def test_a_loss_of_the_positional_contract_is_adapted():
    class Margin:
        def discriminator(self, real_logits, fake_logits):
            return (1 - real_logits).relu().mean(), (1 + fake_logits).relu().mean()

        def generator(self, fake_logits):
            return -fake_logits.mean()

    loss = named_parts(Margin())
    hinge = LOSSES.build({"name": "hinge"})
    # dicts of named 0-d tensors: compared name by name, each value to float rounding
    torch.testing.assert_close(
        loss.discriminator(Logits(REAL, FAKE)), hinge.discriminator(Logits(REAL, FAKE))
    )
    torch.testing.assert_close(
        loss.generator(Logits(None, FAKE)), hinge.generator(Logits(None, FAKE))
    )
    assert named_parts(hinge) is hinge  # the current contract passes through


def test_every_registered_loss_has_a_value_test():
    assert set(LOSSES.names()) == set(EXPECTED) | {name for name, _ in RELATIVISTIC}
