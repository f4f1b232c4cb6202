"""Every recipe shipped in recipes/ validates and trains a few steps (at tiny widths).

Recipes whose dataset is downloaded by torchvision (CIFAR-10, ...) train here on MNIST resized
to the recipe's image size: these runs check the recipe's components and plumbing, and no
network is needed. Image-folder recipes train on a few generated PNG files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from gankit.components.data import num_classes
from gankit.config.recipe import load_recipe
from gankit.config.registry import DATASETS
from gankit.training.trainer import Trainer

from conftest import MNIST_ROOT, ROOT

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
TORCHVISION_SIZES = {"cifar10": 32, "cifar100": 32, "fashion_mnist": 28, "kmnist": 28}


def test_the_recipes_folder_is_not_empty():
    assert len(RECIPES) >= 8


def image_files(folder: Path, count: int = 8) -> Path:
    """`count` random RGB PNGs of assorted sizes in two class subfolders."""
    rng = np.random.default_rng(0)
    for index in range(count):
        size = (40 + 3 * index, 50 + 5 * index, 3)
        path = folder / f"class_{index % 2}" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, rng.integers(0, 256, size, dtype=np.uint8))
    return folder


def data_overrides(recipe, tmp_path: Path) -> list[str]:
    """Overrides that make the recipe's data local and small."""
    name = recipe.data.name
    if name == "mnist":
        return [f"data.root={MNIST_ROOT}", "data.download=false", "data.subset=64"]
    if name in TORCHVISION_SIZES:
        size = recipe.data.size or TORCHVISION_SIZES[name]
        local = ["data.name=mnist", f"data.root={MNIST_ROOT}", "data.download=false"]
        return [*local, f"data.size={size}", "data.subset=64"]
    if name == "image_folder":
        return [f"data.root={image_files(tmp_path / 'images')}", "data.num_workers=0"]
    return ["data.subset=64"]


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_validates_and_trains(path: Path, tmp_path, mnist_root):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.data.name in DATASETS
    small = [
        *data_overrides(recipe, tmp_path),
        "data.batch_size=8",
        "train.steps=2",
        "train.log_every=2",
        "train.n_samples=4",
        "train.progress=false",
        "eval.every=0",
        f"output_dir={tmp_path / 'run'}",
    ]
    models = [
        f"{s}.{key}={value}"
        for s in ("generator", "discriminator")
        for key, value in (("width", 4), ("hidden", 16), ("max_channels", 8), ("w_dim", 16))
        if key in type(getattr(recipe, s)).model_fields
    ]
    trainer = Trainer(load_recipe(path, [*small, *models]))
    if recipe.generator.model_dump().get("num_classes"):
        assert trainer.parts.num_classes == num_classes(trainer.parts.loader.dataset)
    trainer.fit()
    run_dir = tmp_path / "run"
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["d_loss"]) and math.isfinite(record["g_loss"])
    assert (run_dir / "export" / "generator" / "model.safetensors").is_file()
    assert (run_dir / "samples" / "step_0000002.png").is_file()
