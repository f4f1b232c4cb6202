"""Class-conditional training on real MNIST: labels reach both networks, the grids show one class
per row, exports keep their classes, and the metrics check the asked classes."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch

import gankit
from gankit.components.models.base import grid_labels
from gankit.config.recipe import load_recipe
from gankit.core.errors import GankitError
from gankit.metrics.evaluation import MNISTMetrics, reference_images
from gankit.outputs.files import image_grid
from gankit.training.trainer import Trainer

from conftest import ROOT, TINY

RECIPE = ROOT / "recipes" / "mnist_cdcgan.yaml"
SMALL = [*TINY, "data.subset=64", "train.log_every=2", "train.sample_every=100", "ema.decay=0"]


def trainer(run_dir, *extra: str) -> Trainer:
    return Trainer(load_recipe(RECIPE, [*SMALL, f"output_dir={run_dir}", *extra]))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist_root) -> tuple:
    run_dir = tmp_path_factory.mktemp("conditional") / "run"
    run = trainer(run_dir, "train.steps=4", "train.n_samples=20")
    run.fit()
    return run_dir, run


def test_real_labels_belong_to_their_images_and_fake_labels_follow_the_seed(tmp_path, mnist_root):
    run = trainer(tmp_path, "train.steps=4")
    dataset = gankit.data.mnist(TINY[0].split("=", 1)[1], download=False)
    images, labels = dataset.tensors[0][:64], dataset.tensors[1][:64]
    inputs = run.inputs.next(run.inputs.batches(), run.step)
    assert inputs.real_labels is not None and inputs.fake_labels is not None
    for image, label in zip(inputs.real, inputs.real_labels, strict=True):
        (index,) = [i for i in range(64) if torch.equal(images[i], image)][:1]
        assert labels[index] == label
    again = run.inputs.latents(inputs.real.shape[0], run.step)
    assert torch.equal(again[0], inputs.z) and torch.equal(again[1], inputs.fake_labels)
    assert inputs.fake_labels.dtype == torch.long and inputs.fake_labels.min() >= 0
    assert inputs.fake_labels.max() < 10
    run.iteration.run(inputs)  # the next step draws other labels
    assert not torch.equal(
        run.inputs.latents(inputs.real.shape[0], run.step)[1], inputs.fake_labels
    )


def test_both_networks_see_the_labels(tmp_path, mnist_root):
    run = trainer(tmp_path, "train.steps=1")
    seen = {"G": [], "D": []}
    run.parts.generator.register_forward_hook(lambda m, args, out: seen["G"].append(len(args)))
    run.parts.discriminator.register_forward_hook(lambda m, args, out: seen["D"].append(len(args)))
    run.train_step(*run.inputs.next(run.inputs.batches(), run.step))
    assert seen["G"] and set(seen["G"]) == {2} and seen["D"] and set(seen["D"]) == {2}


def test_the_grid_shows_one_class_per_row_and_the_export_keeps_its_classes(finished):
    run_dir, run = finished
    assert torch.equal(run.fixed_labels.cpu(), grid_labels(20, 10))
    assert run.fixed_labels.view(-1).tolist()[:10] == [0] * 5 + [1] * 5  # 5 per row for 20
    generator = run.parts.sampling_generator.eval()
    with torch.no_grad():
        expected = image_grid(generator(run.fixed_noise, run.fixed_labels))
    assert (iio.imread(run_dir / "samples" / "step_0000004.png") == expected).all()
    loaded = gankit.load_generator(run_dir / "export" / "generator")
    config = json.loads((run_dir / "export" / "generator" / "config.json").read_text())
    assert loaded.num_classes == 10 and config["params"]["num_classes"] == 10
    assert config["train_subset"] == 64  # the images --nearest compares with
    sevens = loaded.sample(4, seed=0, labels=7)
    assert torch.equal(sevens, run.parts.generator.sample(4, seed=0, labels=7))
    assert not torch.equal(sevens, loaded.sample(4, seed=0, labels=1))
    with pytest.raises(ValueError, match="labels must lie in"):
        loaded.sample(2, labels=10)


def test_the_cli_samples_the_asked_classes(finished, tmp_path):
    run_dir, _ = finished
    export = str(run_dir / "export" / "generator")
    base = [sys.executable, "-m", "gankit.cli", "sample", export, "--seed", "0", "--n", "4"]
    ok = subprocess.run(
        [*base, "--labels", "3", "--out", str(tmp_path / "threes.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    expected = image_grid(gankit.load_generator(export).sample(4, seed=0, labels=3))
    assert (iio.imread(tmp_path / "threes.png") == expected).all()
    bad = subprocess.run([*base, "--labels", "1,2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "one class, or 4" in bad.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # refused by the recipe's own validation (gankit validate says so too)
        (("discriminator.num_classes=0",), "discriminator.num_classes is 0"),
        (("generator.num_classes=5", "discriminator.num_classes=5"), "set generator.num_classes"),
    ],
)
def test_mismatched_classes_are_refused_before_training(tmp_path, mnist_root, overrides, message):
    with pytest.raises(GankitError, match=message):
        trainer(tmp_path, "train.steps=1", *overrides)


def test_label_accuracy_measures_agreement_with_the_asked_class(mnist_root):
    images = reference_images(str(mnist_root), "test")[:2000]
    labels = gankit.data.mnist(str(mnist_root), download=False, split="test").tensors[1][:2000]
    results = {}
    for name, asked in (("true", labels), ("shuffled", labels[torch.randperm(2000)])):
        metrics = MNISTMetrics()
        metrics.update_real(images)
        metrics.update_generated(images, asked)
        results[name] = metrics.compute()
    assert results["true"]["label_accuracy"] > 0.97
    assert results["shuffled"]["label_accuracy"] < 0.2
    assert results["true"]["classes_asked"] == 10
    assert min(results["true"]["label_accuracy_per_class"]) > 0.9


def test_evaluation_during_training_reports_label_accuracy(tmp_path, mnist_root):
    run = trainer(tmp_path, "train.steps=2", "eval.every=2", "eval.n=200", "eval.batch_size=100")
    run.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    (evaluation,) = [r for r in records if "eval/label_accuracy" in r]
    assert 0.0 <= evaluation["eval/label_accuracy"] <= 1.0


def test_a_conditional_run_resumes_exactly(tmp_path, mnist_root):
    trainer(tmp_path / "straight", "train.steps=6").fit()
    trainer(tmp_path / "split", "train.steps=3").fit()
    trainer(tmp_path / "split", "train.steps=6").fit()
    for network in ("generator", "discriminator"):
        straight = gankit.load_model(tmp_path / "straight" / "export" / network).state_dict()
        split = gankit.load_model(tmp_path / "split" / "export" / network).state_dict()
        assert all(torch.equal(straight[k], split[k]) for k in straight)
