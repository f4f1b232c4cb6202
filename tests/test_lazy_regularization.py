"""StyleGAN2's correction for lazy regularization: a network whose penalty runs as an update of
its own every k iterations gets Adam's lr scaled by k/(k+1) and its betas raised to k/(k+1)."""

from __future__ import annotations

import pytest

from gankit.config.recipe import load_recipe
from gankit.training.optim import lazy_ratio
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

SMALL = [*TINY, "data.subset=32", "train.log_every=2", "train.sample_every=2"]
LAZY = "regularizers=[{name: r1, weight: 1.0, every: 16}, {name: path_length, every: 4}]"


def adam_settings(optimizer) -> tuple[float, tuple[float, float]]:
    (group,) = optimizer.param_groups
    return float(group["lr"]), tuple(group["betas"])


def test_the_ratio_is_the_share_of_loss_updates():
    assert lazy_ratio(1, [16]) == 16 / 17  # StyleGAN2's mb_ratio
    assert lazy_ratio(1, [1]) == 1.0  # a penalty every iteration is not lazy
    assert lazy_ratio(2, [16, 4]) == pytest.approx(2 / (2 + 1 / 16 + 1 / 4))
    assert lazy_ratio(1, []) == 1.0


def test_each_network_is_corrected_for_its_own_lazy_regularizers(tmp_path, mnist_root):
    recipe = load_recipe(REFERENCE_RECIPE, [*SMALL, LAZY, f"output_dir={tmp_path / 'run'}"])
    parts = Trainer(recipe).parts
    d_ratio, g_ratio = 16 / 17, 2 / (2 + 1 / 4)  # the reference schedule: 1 D and 2 G updates
    lr, betas = adam_settings(parts.d_optimizer)
    assert lr == pytest.approx(2e-4 * d_ratio)
    assert betas == pytest.approx((0.5**d_ratio, 0.999**d_ratio))
    lr, betas = adam_settings(parts.g_optimizer)
    assert lr == pytest.approx(2e-4 * g_ratio)
    assert betas == pytest.approx((0.5**g_ratio, 0.999**g_ratio))


def test_the_correction_can_be_switched_off(tmp_path, mnist_root):
    overrides = [*SMALL, LAZY, "optim.lazy_correction=false", f"output_dir={tmp_path / 'run'}"]
    parts = Trainer(load_recipe(REFERENCE_RECIPE, overrides)).parts
    for optimizer in (parts.d_optimizer, parts.g_optimizer):
        lr, betas = adam_settings(optimizer)
        assert lr == pytest.approx(2e-4) and betas == pytest.approx((0.5, 0.999))


def test_a_resumed_run_keeps_the_corrected_settings(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    common = [*SMALL, LAZY, "train.checkpoint_every=2", f"output_dir={run_dir}"]
    Trainer(load_recipe(REFERENCE_RECIPE, [*common, "train.steps=2"])).fit()
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*common, "train.steps=4"]))
    trainer.resume()
    assert trainer.step == 2
    lr, betas = adam_settings(trainer.parts.d_optimizer)
    assert lr == pytest.approx(2e-4 * 16 / 17)
    assert betas == pytest.approx((0.5 ** (16 / 17), 0.999 ** (16 / 17)))
