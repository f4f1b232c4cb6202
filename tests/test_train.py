"""End to end on real MNIST, on CPU: every output, W&B offline, both entry points, precision."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch
from safetensors.torch import load_file

import gankit
from gankit.components.schedules import G_STEP
from gankit.config.recipe import load_recipe
from gankit.core.errors import GankitError
from gankit.training.iteration import Inputs
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, ROOT, TINY


def run_overrides(run_dir, *extra: str) -> list[str]:
    return [*TINY, f"output_dir={run_dir}", *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_root):
    """One short run with W&B offline, shared by the tests that inspect its outputs."""
    run_dir = tmp_path_factory.mktemp("run") / "mnist"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(run_dir / "wandb-scratch"))
        steps = ("train.steps=30", "train.log_every=5", "train.sample_every=10")
        trainer = Trainer(load_recipe(REFERENCE_RECIPE, run_overrides(run_dir, *steps)))
        trainer.fit()
    return run_dir, trainer


def test_run_writes_every_output(finished_run):
    run_dir, _ = finished_run
    resolved = load_recipe(run_dir / "recipe.yaml")
    assert resolved.train.steps == 30 and resolved.generator.width == 4
    grids = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    assert grids == ["step_0000000.png", "step_0000010.png", "step_0000020.png", "step_0000030.png"]
    grid = iio.imread(run_dir / "samples" / "step_0000030.png")
    assert grid.shape == (10 * 29 + 1, 10 * 29 + 1) and grid.dtype == "uint8"  # 100 fixed samples
    assert iio.improps(run_dir / "samples.gif").n_images == 4
    assert iio.improps(run_dir / "losses.png").shape[0] > 100
    for network in ("generator", "discriminator"):
        assert (run_dir / "export" / network / "config.json").is_file()
        assert (run_dir / "export" / network / "model.safetensors").is_file()


def test_losses_are_finite_and_the_discriminator_learned(finished_run):
    run_dir, _ = finished_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    for record in records:
        for key in ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "images_per_sec"):
            assert math.isfinite(record[key]), (key, record)
    first, last = records[0], records[-1]
    # D learns to tell the digits from G's early samples: its losses on real and fake move and
    # its total loss falls from the first logging window to the last.
    assert abs(last["d_loss_real"] - first["d_loss_real"]) > 0.05
    assert abs(last["d_loss_fake"] - first["d_loss_fake"]) > 0.05
    assert last["d_loss"] < first["d_loss"] - 0.1


def test_export_matches_the_trained_generator(finished_run):
    run_dir, trainer = finished_run
    loaded = gankit.load_generator(run_dir / "export" / "generator")
    trained = trainer.parts.generator.eval()
    with torch.no_grad():
        assert torch.equal(loaded(trainer.fixed_noise), trained(trainer.fixed_noise))
    config = json.loads((run_dir / "export" / "generator" / "config.json").read_text())
    assert config["step"] == 30 and config["recipe"] == "mnist_dcgan"


def test_wandb_offline_run_holds_config_scalars_and_images(finished_run):
    run_dir, _ = finished_run
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    log = next(offline.glob("run-*.wandb")).read_bytes()
    for text in (b"dcgan28", b"n_samples", b"d_loss_real", b"g_loss"):  # config and scalar keys
        assert text in log, text
    images = sorted((offline / "files" / "media" / "images").glob("samples_*.png"))
    assert len(images) == 4
    assert iio.imread(images[-1]).max() > 0  # uint8 grids, not black floats


def test_accelerate_launch_and_gankit_train_do_the_same(tmp_path, mnist_root):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    extra = ("train.steps=3", "train.sample_every=2")
    commands = {
        "launch": [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "1",
            "--cpu",
            str(ROOT / "scripts" / "train.py"),
        ],
        "cli": [sys.executable, "-m", "gankit.cli", "train"],
    }
    weights = {}
    for name, command in commands.items():
        run_dir = tmp_path / name
        result = subprocess.run(
            [*command, str(REFERENCE_RECIPE), *run_overrides(run_dir, *extra)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "step 3/3" in result.stdout
        assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
            "step_0000000.png",
            "step_0000002.png",
            "step_0000003.png",
        ]
        weights[name] = load_file(run_dir / "export" / "generator" / "model.safetensors")
    assert weights["launch"].keys() == weights["cli"].keys()
    for key, tensor in weights["launch"].items():
        assert torch.equal(tensor, weights["cli"][key]), key


def test_bf16_trains_on_cpu(tmp_path, mnist_root):
    recipe = load_recipe(
        REFERENCE_RECIPE, run_overrides(tmp_path, "mixed_precision=bf16", "train.steps=3")
    )
    trainer = Trainer(recipe)
    trainer.fit()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(math.isfinite(record[key]) for key in ("d_loss", "g_loss"))
    assert (
        next(trainer.parts.generator.parameters()).dtype == torch.float32
    )  # master weights stay fp32


def test_loader_workers_serve_the_same_batches_and_persist_across_epochs(tmp_path, mnist_root):
    """Three epochs of two batches: worker processes load the same batches in the same order
    as the main process, and are started once, not every epoch."""
    steps = ("data.subset=32", "train.steps=6", "train.log_every=6")
    trainers = {}
    for workers in (0, 1):
        run_dir = tmp_path / f"workers{workers}"
        recipe = load_recipe(
            REFERENCE_RECIPE, run_overrides(run_dir, *steps, f"data.num_workers={workers}")
        )
        trainers[workers] = Trainer(recipe)
        trainers[workers].fit()
    assert (
        trainers[1].parts.loader.persistent_workers
        and not trainers[0].parts.loader.persistent_workers
    )
    for a, b in zip(
        trainers[0].parts.generator.parameters(),
        trainers[1].parts.generator.parameters(),
        strict=True,
    ):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fp16 refusal is for CPU-only machines")
def test_fp16_without_a_gpu_is_refused_before_any_work(tmp_path):
    recipe = load_recipe(
        REFERENCE_RECIPE, run_overrides(tmp_path / "run", "mixed_precision=fp16", "train.steps=3")
    )
    with pytest.raises(GankitError, match="fp16 needs a CUDA GPU"):
        Trainer(recipe)
    assert not (tmp_path / "run").exists()


@pytest.fixture
def tiny_trainer(tmp_path, mnist_root) -> Trainer:
    return Trainer(load_recipe(REFERENCE_RECIPE, run_overrides(tmp_path, "train.steps=2")))


def adam_steps(optimizer: torch.optim.Optimizer) -> set[float]:
    return {float(state["step"]) for state in optimizer.state.values()}


def test_one_iteration_is_one_d_update_then_two_g_updates(tiny_trainer):
    real, _ = next(tiny_trainer.inputs.batches())
    z = tiny_trainer.parts.generator.sample_noise(real.shape[0])
    tiny_trainer.train_step(real, z)
    assert adam_steps(tiny_trainer.parts.d_optimizer) == {1.0}
    assert adam_steps(tiny_trainer.parts.g_optimizer) == {2.0}
    assert tiny_trainer.step == 1


def test_a_generator_step_leaves_the_discriminator_weights_and_grads_alone(tiny_trainer):
    discriminator, generator = tiny_trainer.parts.discriminator, tiny_trainer.parts.generator
    d_before = {k: v.clone() for k, v in discriminator.named_parameters()}
    g_before = {k: v.clone() for k, v in generator.named_parameters()}
    real, _ = next(tiny_trainer.inputs.batches())
    z = generator.sample_noise(real.shape[0])
    tiny_trainer.iteration.run_phases(Inputs(real, z), (G_STEP, G_STEP))  # two G updates only
    for name, parameter in discriminator.named_parameters():
        assert torch.equal(parameter, d_before[name]), name
        assert parameter.grad is None, name
        assert parameter.requires_grad, name  # unfrozen again for the next D step
    assert any(not torch.equal(p, g_before[k]) for k, p in generator.named_parameters())


def test_parameters_a_discriminator_froze_itself_stay_frozen(tiny_trainer):
    bias = tiny_trainer.parts.discriminator.classify.bias
    bias.requires_grad_(False)
    before = bias.clone()
    real, _ = next(tiny_trainer.inputs.batches())
    tiny_trainer.train_step(real, tiny_trainer.inputs.latents(real.shape[0], tiny_trainer.step)[0])
    assert not bias.requires_grad and torch.equal(bias, before)
