"""The generator's moving average: its arithmetic, and that samples, exports and resume use it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import gankit
from gankit.config.recipe import load_recipe
from gankit.core.errors import RecipeError
from gankit.outputs.files import image_grid
from gankit.training.ema import EMA
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

SMALL = [*TINY, "data.subset=64", "train.log_every=2", "train.sample_every=2"]


def test_update_moves_weights_by_one_minus_decay_and_copies_buffers():
    live = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(live, decay=0.75, warmup=False)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        live[0].weight.add_(1.0)
        live[1].running_mean.fill_(5.0)
    ema.set_step(100)
    ema.update(live)
    torch.testing.assert_close(ema.module[0].weight, 0.75 * before + 0.25 * live[0].weight)
    assert torch.equal(ema.module[1].running_mean, live[1].running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_warmup_starts_with_a_low_decay():
    ema = EMA(torch.nn.Linear(1, 1), decay=0.999, warmup=True)
    assert ema.decay_at(0) == 0.1 and ema.decay_at(90) == 0.91 and ema.decay_at(10**6) == 0.999
    live = torch.nn.Linear(1, 1)
    with torch.no_grad():
        live.weight.fill_(1.0)
        ema.module.weight.fill_(0.0)
    ema.set_step(90)  # the device-side weight follows the step: 1 - 0.91
    ema.update(live)
    torch.testing.assert_close(ema.module.weight, torch.full((1, 1), 0.09))


def test_samples_and_export_use_the_average(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    recipe = load_recipe(
        REFERENCE_RECIPE, [*SMALL, "ema.decay=0.9", "train.steps=4", f"output_dir={run_dir}"]
    )
    trainer = Trainer(recipe)
    trainer.fit()
    config = json.loads((run_dir / "export" / "generator" / "config.json").read_text())
    assert config["ema"] is True
    exported = load_file(run_dir / "export" / "generator" / "model.safetensors")
    average = trainer.parts.ema.module.state_dict()
    assert all(torch.equal(exported[k], average[k]) for k in exported)
    live = trainer.parts.generator.state_dict()
    assert any(not torch.equal(exported[k], live[k]) for k in exported)
    with torch.no_grad():
        expected = image_grid(trainer.parts.ema.module.eval()(trainer.fixed_noise))
    import imageio.v3 as iio

    assert (iio.imread(run_dir / "samples" / "step_0000004.png") == expected).all()
    assert gankit.load_generator(run_dir / "export" / "generator").sample(2).shape[0] == 2


def test_the_average_resumes_exactly(tmp_path, mnist_root):
    def run(name: str, steps: int) -> dict[str, torch.Tensor]:
        overrides = [
            *SMALL,
            "ema.decay=0.9",
            f"train.steps={steps}",
            "train.checkpoint_every=2",
            f"output_dir={tmp_path / name}",
        ]
        Trainer(load_recipe(REFERENCE_RECIPE, overrides)).fit()
        return load_file(tmp_path / name / "export" / "generator" / "model.safetensors")

    straight = run("straight", 6)
    run("resumed", 4)
    resumed = run("resumed", 6)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_half_life_in_images_means_the_same_at_any_batch_size():
    """StyleGAN's ema_kimg: over one half-life of images, an old weight's share halves, whether
    those images came 16 or 64 at a time."""
    for batch in (16, 64):
        ema = EMA(torch.nn.Linear(1, 1), half_life_images=1024, images_per_step=batch)
        steps = 1024 // batch
        assert math.prod(ema.decay_at(step) for step in range(steps)) == pytest.approx(0.5)
        assert ema.decay_at(0) == pytest.approx(0.5 ** (batch / 1024))


def test_the_rampup_caps_the_half_life_by_the_images_seen():
    ema = EMA(torch.nn.Linear(1, 1), half_life_images=10_000, images_per_step=100, rampup=0.05)
    assert ema.decay_at(0) == 0.0  # nothing seen yet: the average starts as G
    assert ema.decay_at(10) == pytest.approx(0.5 ** (100 / (10 * 100 * 0.05)))
    assert ema.decay_at(10_000) == pytest.approx(0.5 ** (100 / 10_000))  # the cap no longer binds


@pytest.mark.parametrize(
    ("overrides", "found"),
    [
        (["ema.decay=0.9", "ema.half_life_kimg=10"], "not both"),
        (["ema.rampup=0.05"], "ema.rampup needs ema.half_life_kimg"),
        (["ema.half_life_kimg=-1"], "ema.half_life_kimg"),
    ],
)
def test_the_two_ways_to_set_the_rate_are_exclusive(overrides, found):
    with pytest.raises(RecipeError, match=found):
        load_recipe(REFERENCE_RECIPE, [*SMALL, *overrides])


def test_a_run_with_a_half_life_keeps_and_exports_the_average(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    overrides = ["ema.half_life_kimg=0.05", "ema.rampup=0.5", "train.steps=3"]
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*SMALL, *overrides, f"output_dir={run_dir}"]))
    trainer.fit()
    images_per_step = 16  # data.batch_size in TINY, one process
    assert trainer.parts.ema.images_per_step == images_per_step
    assert trainer.parts.ema.decay_at(3) == pytest.approx(0.5 ** (16 / min(50, 3 * 16 * 0.5)))
    config = json.loads((run_dir / "export" / "generator" / "config.json").read_text())
    assert config["ema"] is True
    exported = load_file(run_dir / "export" / "generator" / "model.safetensors")
    live = trainer.parts.generator.state_dict()
    assert any(not torch.equal(exported[k], live[k]) for k in exported)
