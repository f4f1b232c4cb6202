"""train.init_from: a new run starts from exported weights; a resumed run ignores it."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from gankit.cli import main
from gankit.config.recipe import load_recipe
from gankit.core.errors import GankitError
from gankit.training.trainer import Trainer

from conftest import ROOT

RING = ROOT / "recipes" / "ring_mlp.yaml"
TINY = [
    "generator.hidden=8",
    "discriminator.hidden=8",
    "data.size=256",
    "data.batch_size=32",
    "train.progress=false",
    "train.log_every=1",
    "eval.every=0",
    "train.n_samples=16",
    "train.checkpoint_every=2",
]


def recipe(run_dir, *overrides: str):
    return load_recipe(RING, [*TINY, f"output_dir={run_dir}", *overrides])


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """Two steps of the ring recipe: a checkpoint and both exports."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    Trainer(recipe(run_dir, "train.steps=2")).fit()
    return run_dir


def weights(folder):
    return load_file(folder / "model.safetensors")


def same(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> bool:
    state = module.state_dict()
    return state.keys() == tensors.keys() and all(torch.equal(state[k], tensors[k]) for k in state)


@pytest.mark.parametrize("point_at", ["export/generator", "export", "."])
def test_a_new_run_starts_from_the_exported_weights(source_run, tmp_path, point_at):
    export = source_run / "export"
    trainer = Trainer(
        recipe(tmp_path / "tuned", "train.steps=3", f"train.init_from={source_run / point_at}")
    )
    fresh = {k: v.clone() for k, v in trainer.parts.generator.state_dict().items()}
    assert not same(trainer.parts.generator, weights(export / "generator"))
    trainer.resume()
    assert trainer.step == 0
    assert same(trainer.parts.generator, weights(export / "generator"))
    assert same(trainer.parts.ema.module, weights(export / "generator"))
    assert same(trainer.parts.discriminator, weights(export / "discriminator"))
    assert not all(torch.equal(fresh[k], v) for k, v in weights(export / "generator").items())


def test_only_the_generator_when_no_discriminator_export_is_beside_it(source_run, tmp_path):
    alone = tmp_path / "alone" / "generator"
    shutil.copytree(source_run / "export" / "generator", alone)
    trainer = Trainer(recipe(tmp_path / "tuned", "train.steps=3", f"train.init_from={alone}"))
    fresh_d = {k: v.clone() for k, v in trainer.parts.discriminator.state_dict().items()}
    trainer.resume()
    assert same(trainer.parts.generator, weights(alone))
    assert same(trainer.parts.discriminator, fresh_d)


def test_a_mismatched_export_is_one_clear_error(source_run, tmp_path, capsys):
    init = f"train.init_from={source_run / 'export'}"
    trainer = Trainer(recipe(tmp_path / "a", "train.steps=3", init, "generator.hidden=16"))
    with pytest.raises(GankitError, match=r"generator.hidden: export 8, recipe 16"):
        trainer.resume()
    overrides = [*TINY, f"output_dir={tmp_path / 'b'}", "train.steps=3", init]
    code = main(["train", str(RING), *overrides, "discriminator.depth=2"])
    error = capsys.readouterr().err
    assert code == 2 and "discriminator.depth: export 3, recipe 2" in error
    assert "Traceback" not in error and error.strip().count("\n") == 0
    assert not (tmp_path / "b" / "checkpoints").exists()
    missing = f"train.init_from={tmp_path / 'nothing'}"
    assert main(["train", str(RING), *TINY, f"output_dir={tmp_path / 'c'}", missing]) == 2
    assert "no export there" in capsys.readouterr().err


def test_a_resumed_run_continues_from_its_checkpoint_not_init_from(source_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(source_run, run_dir)
    mismatched = tmp_path / "other"
    trainer = Trainer(recipe(tmp_path / "other-run", "train.steps=2", "discriminator.depth=2"))
    trainer.fit()  # an export that init_from would refuse
    shutil.copytree(tmp_path / "other-run" / "export", mismatched)
    resumed = Trainer(recipe(run_dir, "train.steps=3", f"train.init_from={mismatched}"))
    resumed.resume()
    assert resumed.step == 2
    assert same(resumed.parts.discriminator, weights(source_run / "export" / "discriminator"))


def test_freeze_d_keeps_the_first_blocks_of_the_exported_discriminator(source_run, tmp_path):
    init = f"train.init_from={source_run / 'export'}"
    trainer = Trainer(recipe(tmp_path / "frozen", "train.steps=3", init, "train.freeze_d=2"))
    trainer.fit()
    exported = weights(source_run / "export" / "discriminator")
    blocks = trainer.parts.discriminator.input_blocks()
    assert len(blocks) == 3
    frozen_ids = {id(p) for block in blocks[:2] for p in block.parameters()}
    optimized = {id(p) for group in trainer.parts.d_optimizer.param_groups for p in group["params"]}
    assert frozen_ids and not frozen_ids & optimized  # no optimizer step touches them
    for name, value in trainer.parts.discriminator.state_dict().items():
        layer = int(name.split(".")[1]) if name.startswith("features.") else None
        kept = layer is not None and layer < 5  # Flatten, then (Linear, LeakyReLU) x 2
        assert torch.equal(value, exported[name]) == kept, name
    assert all(p.requires_grad for p in trainer.parts.generator.parameters())


def test_freeze_d_beyond_the_declared_blocks_is_one_clear_error(tmp_path, capsys):
    overrides = [*TINY, f"output_dir={tmp_path / 'run'}", "train.steps=2", "train.freeze_d=4"]
    assert main(["train", str(RING), *overrides]) == 2
    error = capsys.readouterr().err
    assert "train.freeze_d=4: discriminator 'mlp' has 3 blocks" in error
    assert error.strip().count("\n") == 0 and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ({"name": "dcgan28", "width": 4}, (1, 28, 28)),
        ({"name": "dcgan", "width": 4}, (3, 32, 32)),
        ({"name": "mlp", "hidden": 8}, (1, 8, 8)),
        ({"name": "r3gan", "width": 16, "cardinality": 2, "blocks": 1}, (3, 32, 32)),
        ({"name": "stylegan2", "width": 8, "max_channels": 16}, (3, 32, 32)),
    ],
)
def test_every_discriminator_declares_its_blocks_from_the_image_side(spec, shape):
    from gankit.config.registry import DISCRIMINATORS

    discriminator = DISCRIMINATORS.build(spec, image_shape=shape)
    blocks = discriminator.input_blocks()
    assert len(blocks) >= 2
    ids = [[id(p) for p in block.parameters()] for block in blocks]
    flat = [i for block in ids for i in block]
    assert all(ids) and len(flat) == len(set(flat))  # each holds weights, none shared
    assert len(flat) < len(list(discriminator.parameters()))  # the head is not a block
    images = torch.randn(2, *shape, requires_grad=True)
    first_weight = next(p for p in blocks[0].parameters() if p.dim() > 1)
    (gradient,) = torch.autograd.grad(discriminator(images).sum(), first_weight)
    assert first_weight.shape[1] in (shape[0], shape[0] * shape[1] * shape[2])  # reads the image
    assert gradient.abs().sum() > 0
