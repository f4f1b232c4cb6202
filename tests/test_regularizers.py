"""Gradient penalties: their values on a known discriminator, and their lazy schedule."""

from __future__ import annotations

import json

import pytest
import torch

from gankit import REGULARIZERS
from gankit.config.recipe import load_recipe
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY


def linear_discriminator(weights: torch.Tensor):
    """D(x) = <w, x>: its input gradient is w everywhere."""
    return lambda images: (images.flatten(1) * weights).sum(1, keepdim=True)


def test_r1_is_half_gamma_times_the_squared_gradient_norm():
    weights = torch.tensor([3.0, 4.0])  # norm 5
    r1 = REGULARIZERS.build({"name": "r1", "weight": 10.0})
    real = torch.randn(6, 2)
    assert r1.penalty(linear_discriminator(weights), real, real).item() == pytest.approx(
        10 / 2 * 25
    )


def test_gradient_penalty_pulls_the_gradient_norm_to_one():
    weights = torch.tensor([0.0, 2.0])  # norm 2
    penalty = REGULARIZERS.build({"name": "gradient_penalty", "weight": 10.0})
    real, fake = torch.randn(5, 2), torch.randn(5, 2)
    assert penalty.penalty(linear_discriminator(weights), real, fake).item() == pytest.approx(10.0)
    unit = penalty.penalty(linear_discriminator(torch.tensor([0.6, 0.8])), real, fake)
    assert unit.item() == pytest.approx(0.0, abs=1e-10)


def test_a_lazy_penalty_adds_a_d_update_every_k_iterations(tmp_path, mnist_root):
    overrides = [
        *TINY,
        "regularizer={name: r1, weight: 1.0, every: 2}",
        "train.steps=4",
        "train.log_every=4",
        f"output_dir={tmp_path}",
    ]
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, overrides))
    trainer.fit()
    d_steps = {float(state["step"]) for state in trainer.parts.d_optimizer.state.values()}
    # one loss update per iteration and a penalty update every 2, for every parameter (the
    # output bias gets a zero penalty gradient, so DDP finds a gradient for each)
    assert d_steps == {4.0 + 2.0}
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["d_r1"] > 0


def test_without_a_regularizer_no_penalty_is_logged(tmp_path, mnist_root):
    trainer = Trainer(
        load_recipe(REFERENCE_RECIPE, [*TINY, "train.steps=2", f"output_dir={tmp_path}"])
    )
    assert trainer.recipe.regularizer.name == "none"
    trainer.fit()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert not {"d_r1", "d_penalty"} & set(record)
