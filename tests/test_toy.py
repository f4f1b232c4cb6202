"""The 2-D ring: its data, the mode-coverage measure, scatter plots, and a short CPU training
run of the shipped ring recipe that must cover most of the modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import gankit
from gankit.components.toy import mode_coverage, ring, ring_centers
from gankit.config.recipe import load_recipe
from gankit.outputs.files import render_samples
from gankit.training.trainer import Trainer

from conftest import ROOT

RECIPE = ROOT / "recipes" / "ring_mlp.yaml"


def test_ring_points_sit_on_their_labelled_modes():
    dataset = ring(modes=8, radius=2.0, std=0.02, size=4000, data_seed=1)
    points, labels = dataset.tensors
    assert points.shape == (4000, 2) and labels.shape == (4000,)
    assert dataset.classes == [str(m) for m in range(8)]
    offsets = points - ring_centers(8, 2.0)[labels]
    assert offsets.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.bincount(labels, minlength=8).min() > 400  # roughly uniform over modes
    again = ring(modes=8, radius=2.0, std=0.02, size=4000, data_seed=1).tensors[0]
    assert torch.equal(points, again)


def test_mode_coverage_tells_full_partial_and_collapsed_samples_apart():
    centers, std = ring_centers(8, 2.0), 0.02
    real = ring(size=2000, data_seed=2).tensors[0]
    full = mode_coverage(real, centers, std)
    assert full["modes_covered"] == 8 and full["high_quality"] > 0.98

    three_modes = real[ring(size=2000, data_seed=2).tensors[1] < 3]
    partial = mode_coverage(three_modes, centers, std)
    assert partial["modes_covered"] == 3 and partial["high_quality"] > 0.98

    collapsed = centers[0] + std * torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    one = mode_coverage(collapsed, centers, std)
    assert one["modes_covered"] == 1 and one["mode_histogram"][0] > 1900

    spread = torch.rand(2000, 2, generator=torch.Generator().manual_seed(0)) * 4 - 2
    blurry = mode_coverage(spread, centers, std)
    assert blurry["high_quality"] < 0.05 and blurry["modes_covered"] == 0


def test_points_are_drawn_as_a_scatter_plot_and_other_shapes_are_refused():
    points = ring(size=500).tensors[0]
    picture = render_samples(points, labels=torch.arange(500) % 8, reference=points)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 8  # several colours were drawn
    with pytest.raises(ValueError, match="cannot draw samples of shape"):
        render_samples(torch.zeros(4, 3))


def test_the_ring_recipe_covers_most_modes_in_seconds_on_cpu(tmp_path):
    steps = 1500
    trainer = Trainer(
        load_recipe(
            RECIPE,
            [
                f"output_dir={tmp_path}",
                f"train.steps={steps}",
                f"eval.every={steps}",
                "train.progress=false",
            ],
        )
    )
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    (final,) = [r for r in records if "eval/modes_covered" in r]
    assert final["eval/modes_covered"] >= 6, final
    assert final["eval/high_quality"] > 0.3, final
    generator = gankit.load_generator(tmp_path / "export" / "generator")
    samples = generator.sample(2000, seed=1)
    assert samples.shape == (2000, 2)
    assert mode_coverage(samples, ring_centers(), 0.02)["modes_covered"] >= 6
    assert (tmp_path / "samples" / f"step_{steps:07d}.png").is_file()
