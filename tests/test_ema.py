"""The generator's moving average: its arithmetic, and that samples, exports and resume use it."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

import gankit
from gankit.config.recipe import load_recipe
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
