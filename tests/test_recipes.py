"""Every recipe shipped in recipes/ validates and trains a few steps (at tiny widths)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gankit.recipe import load_recipe
from gankit.trainer import Trainer

from conftest import MNIST_ROOT, ROOT

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_the_recipes_folder_is_not_empty():
    assert len(RECIPES) >= 4


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_validates_and_trains(path: Path, tmp_path, mnist_root):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    small = [
        f"data.root={MNIST_ROOT}",
        "data.download=false",
        "data.batch_size=8",
        "data.subset=64",
        "train.steps=2",
        "train.log_every=2",
        "train.progress=false",
        f"output_dir={tmp_path}",
    ]
    widths = [
        f"{s}.width=4"
        for s in ("generator", "discriminator")
        if "width" in type(getattr(recipe, s)).model_fields
    ]
    Trainer(load_recipe(path, [*small, *widths])).fit()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["d_loss"]) and math.isfinite(record["g_loss"])
    assert (tmp_path / "export" / "generator" / "model.safetensors").is_file()
