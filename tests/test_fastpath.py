"""The `perf:` switches change speed, not training: same batches, same (or close) weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import gankit
from gankit.recipe import load_recipe
from gankit.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

SMALL = [*TINY, "data.subset=64", "train.log_every=3", "train.sample_every=100"]


def trained(run_dir, *extra: str) -> dict[str, torch.Tensor]:
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*SMALL, f"output_dir={run_dir}", *extra]))
    trainer.fit()
    return {
        f"{network}.{key}": value
        for network in ("generator", "discriminator")
        for key, value in load_file(run_dir / "export" / network / "model.safetensors").items()
    }


def test_device_batches_follow_the_dataloader_order(tmp_path, mnist_root):
    recipes = [
        [*SMALL, f"output_dir={tmp_path / name}", *extra]
        for name, extra in (("loader", ()), ("device", ("perf.data_on_device=true",)))
    ]
    loader, device = (Trainer(load_recipe(REFERENCE_RECIPE, recipe)) for recipe in recipes)
    assert device.device_batches is not None and loader.device_batches is None
    streams = [loader.batches(), device.batches()]
    for _ in range(9):  # two epochs of 4 batches, and into the third
        expected, got = (next(stream) for stream in streams)
        assert torch.equal(expected, got)
    device.epoch, device.batch_in_epoch = 1, 2  # as a resumed run would be
    loader.epoch, loader.batch_in_epoch = 1, 2
    assert torch.equal(next(loader.batches()), next(device.batches()))


def test_data_on_device_trains_the_same_weights(tmp_path, mnist_root):
    eager = trained(tmp_path / "eager", "train.steps=6")
    fast = trained(tmp_path / "fast", "train.steps=6", "perf.data_on_device=true")
    assert all(torch.equal(eager[key], fast[key]) for key in eager)


def test_fused_adam_and_channels_last_train_the_same_within_rounding(tmp_path, mnist_root):
    eager = trained(tmp_path / "eager", "train.steps=4")
    fast = trained(
        tmp_path / "fast",
        "train.steps=4",
        "perf.fused_adam=true",
        "perf.channels_last=true",
        "perf.tf32=true",
    )
    for key in eager:
        torch.testing.assert_close(fast[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    generator = gankit.load_generator(tmp_path / "fast" / "export" / "generator")
    assert generator.sample(2, seed=0).shape == (2, 1, 28, 28)


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile is missing")
def test_compiled_networks_train_the_same_within_rounding(tmp_path, mnist_root):
    eager = trained(tmp_path / "eager", "train.steps=2")
    compiled = trained(tmp_path / "compiled", "train.steps=2", "perf.compile=true")
    assert eager.keys() == compiled.keys()  # no _orig_mod. prefixes in the export
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
