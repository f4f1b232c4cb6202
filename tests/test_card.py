"""Every export carries a Hub model card (README.md) and, for a generator, its samples."""

from __future__ import annotations

import json

import imageio.v3 as iio
import pytest
import torch
from huggingface_hub import ModelCard

import gankit
from gankit.components.models.base import grid_labels
from gankit.config.recipe import load_recipe
from gankit.core.errors import ExportError
from gankit.outputs.files import render_samples
from gankit.training.trainer import Trainer

from conftest import ROOT

RING = ROOT / "recipes" / "ring_mlp.yaml"
TINY_RING = [
    "generator.hidden=8",
    "discriminator.hidden=8",
    "data.size=512",
    "data.batch_size=32",
    "train.progress=false",
    "train.log_every=2",
    "eval.every=3",
    "eval.n=64",
    "train.n_samples=16",
]


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    """A few steps of the ring recipe, with an EMA and an evaluation at the end."""
    run_dir = tmp_path_factory.mktemp("ring") / "run"
    recipe = load_recipe(RING, [*TINY_RING, f"output_dir={run_dir}", "train.steps=3"])
    Trainer(recipe).fit()
    return run_dir


def test_a_run_exports_cards_with_recipe_step_ema_and_metrics(ring_run):
    generator_card = ModelCard.load(ring_run / "export" / "generator" / "README.md")
    assert generator_card.data.library_name == "gankit"
    assert {"gan", "gankit", "generator", "mlp"} <= set(generator_card.data.tags)
    assert generator_card.data.datasets == ["ring"]
    text = generator_card.text
    assert (
        "This is a generator (`mlp`) trained with [gankit](https://pypi.org/project/gankit/) on "
        "`ring` for 3 steps. The weights are an exponential moving average (EMA) of the "
        "generator's weights over training." in text
    )
    assert 'gankit.load_generator("user/repo")' in text
    assert "![samples drawn with seed 0](samples.png)" in text
    recipe_block = text.split("## Training recipe")[1].split("```")[1]
    assert "name: mlp" in recipe_block and "hidden: 8" in recipe_block
    assert "r1" in recipe_block and "decay: 0.99" in recipe_block and "root" not in recipe_block
    metrics = [json.loads(line) for line in (ring_run / "metrics.jsonl").read_text().splitlines()]
    (evaluated,) = [r for r in metrics if "eval/modes_covered" in r]
    assert f"| `modes_covered` | `{evaluated['eval/modes_covered']}` |" in text

    discriminator = ring_run / "export" / "discriminator"
    assert sorted(p.name for p in discriminator.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    card = ModelCard.load(discriminator / "README.md")
    assert "discriminator" in card.data.tags and 'gankit.load_model("user/repo")' in card.text
    assert "for 3 steps. The weights are the discriminator's weights at step 3." in card.text


def test_the_sample_picture_is_the_generators_seed_0_samples(tmp_path):
    torch.manual_seed(0)
    spec = {"name": "mlp", "hidden": 8, "depth": 1, "z_dim": 4, "num_classes": 3}
    generator = gankit.GENERATORS.build(spec, image_shape=(1, 5, 5))
    folder = gankit.save_model(generator, tmp_path / "generator", dataset="mnist")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "samples.png",
    ]
    labels = grid_labels(64, 3).tolist()
    expected = render_samples(generator.sample(64, seed=0, labels=labels), labels=labels)
    assert (iio.imread(folder / "samples.png") == expected).all()
    card = ModelCard.load(folder / "README.md")
    assert "class-conditional" in card.data.tags and "image-generation" in card.data.tags
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert "| `num_classes` | `3` |" in card.text
    # the card is extra: the checksum still guards the weights, and the export re-exports
    gankit.load_generator(folder)
    gankit.save_model(generator, folder)


def test_a_users_readme_is_not_replaced_by_an_export(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("my notes")
    (folder / "samples.png").write_bytes(b"my picture")
    generator = gankit.GENERATORS.build({"name": "mlp", "hidden": 8}, image_shape=(1, 4, 4))
    with pytest.raises(ExportError, match="is not a gankit export"):
        gankit.save_model(generator, folder)
    assert (folder / "README.md").read_text() == "my notes"
    assert (folder / "samples.png").read_bytes() == b"my picture"


def test_the_card_says_what_the_weights_are_in_plain_sentences():
    from gankit.outputs.card import model_card

    config = {"kind": "generator", "name": "dcgan28", "params": {}, "format_version": 1}
    assert "This is a generator (`dcgan28`) trained with [gankit](" in model_card(config)
    assert "The weights are the trained generator's weights.\n" in model_card(config)
    one_step = model_card({**config, "step": 1, "dataset": "mnist"})
    assert "on `mnist` for 1 step. The weights are the generator's weights at step 1.\n" in (
        one_step
    )
    assert "The weights are an exponential moving average (EMA) of the generator's weights" in (
        model_card({**config, "ema": True})
    )
