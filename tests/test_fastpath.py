"""The `perf:` switches change speed, not training: same batches, same (or close) weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import gankit
from gankit.config.recipe import load_recipe
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

SMALL = [*TINY, "data.subset=64", "train.log_every=3", "train.sample_every=100"]


def losses(run_dir) -> list[list[float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [[r["d_loss_real"], r["d_loss_fake"], r["g_loss"]] for r in records]


def trained(run_dir, *extra: str) -> dict[str, torch.Tensor]:
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*SMALL, f"output_dir={run_dir}", *extra]))
    trainer.fit()
    return {
        f"{network}.{key}": value
        for network in ("generator", "discriminator")
        for key, value in load_file(run_dir / "export" / network / "model.safetensors").items()
    }


CONDITIONAL = ("generator.num_classes=10", "discriminator.num_classes=10")


def assert_same_batch(expected, got) -> None:
    (images, labels), (device_images, device_labels) = expected, got
    assert torch.equal(images, device_images)
    assert (labels is None and device_labels is None) or torch.equal(labels, device_labels)


@pytest.mark.parametrize("conditional", [False, True], ids=["images", "images+labels"])
def test_device_loader_follows_the_dataloader_order(tmp_path, mnist_root, conditional):
    models = CONDITIONAL if conditional else ()
    recipes = [
        [*SMALL, *models, f"output_dir={tmp_path / name}", *extra]
        for name, extra in (("loader", ()), ("device", ("perf.data_on_device=true",)))
    ]
    loader, device = (Trainer(load_recipe(REFERENCE_RECIPE, recipe)) for recipe in recipes)
    assert device.parts.device_loader is not None and loader.parts.device_loader is None
    streams = [loader.inputs.batches(), device.inputs.batches()]
    for _ in range(9):  # two epochs of 4 batches, and into the third
        expected, got = (next(stream) for stream in streams)
        assert_same_batch(expected, got)
        assert (expected[1] is not None) == conditional
    device.inputs.load_state_dict({"epoch": 1, "batch_in_epoch": 2})  # as a resumed run would
    loader.inputs.load_state_dict({"epoch": 1, "batch_in_epoch": 2})
    assert_same_batch(next(loader.inputs.batches()), next(device.inputs.batches()))


def test_data_on_device_trains_the_same_weights(tmp_path, mnist_root):
    eager = trained(tmp_path / "eager", "train.steps=6")
    fast = trained(tmp_path / "fast", "train.steps=6", "perf.data_on_device=true")
    assert all(torch.equal(eager[key], fast[key]) for key in eager)


# Rounding differs between kernels, so these compare the losses (the criterion), not
# the weights: conv biases in front of BatchNorm get gradients of pure rounding noise, which Adam
# normalises into full-size steps, so those weights differ while the outputs do not.
def test_fused_adam_and_channels_last_give_the_same_losses(tmp_path, mnist_root):
    steps = ("train.steps=6", "train.log_every=1")
    trained(tmp_path / "eager", *steps)
    trained(
        tmp_path / "fast",
        *steps,
        "perf.fused_adam=true",
        "perf.channels_last=true",
        "perf.tf32=true",
    )
    torch.testing.assert_close(
        losses(tmp_path / "fast"), losses(tmp_path / "eager"), rtol=1e-3, atol=1e-4
    )
    generator = gankit.load_generator(tmp_path / "fast" / "export" / "generator")
    assert generator.sample(2, seed=0).shape == (2, 1, 28, 28)


def test_compiled_networks_give_the_same_losses(tmp_path, mnist_root):
    # a BatchNorm-free pair: the compiled graphs are small, so a cold compiler cache costs
    # seconds, not the minute the DCGAN pair's train and eval graphs take
    steps = (
        "train.steps=3",
        "train.log_every=1",
        "generator={name: mlp, hidden: 32, z_dim: 16}",
        "discriminator={name: mlp, hidden: 32}",
    )
    eager = trained(tmp_path / "eager", *steps)
    compiled = trained(tmp_path / "compiled", *steps, "perf.compile=true")
    assert eager.keys() == compiled.keys()  # no _orig_mod. prefixes in the export
    torch.testing.assert_close(
        losses(tmp_path / "compiled"), losses(tmp_path / "eager"), rtol=1e-3, atol=1e-4
    )
