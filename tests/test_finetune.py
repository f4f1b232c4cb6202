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
