"""A run's length in images (`train.kimg`) and its wall-clock budget (`train.max_minutes`)."""

from __future__ import annotations

import json
import time

import pytest

from gankit.cli import main
from gankit.config.recipe import load_recipe
from gankit.core.errors import RecipeError
from gankit.training.checkpoint import list_checkpoints
from gankit.training.run_length import WallClock, images_per_step, total_steps

from conftest import REFERENCE_RECIPE, TINY

SMALL = [*TINY, "data.subset=64", "train.log_every=1", "train.sample_every=1000"]


def exported_step(run_dir) -> int:
    return json.loads((run_dir / "export" / "generator" / "config.json").read_text())["step"]


def test_kimg_is_rounded_up_to_whole_iterations_over_every_process():
    recipe = load_recipe(
        REFERENCE_RECIPE,
        [*TINY, "train.steps=null", "train.kimg=0.1", "train.grad_accumulation=2"],
    )
    assert images_per_step(recipe, processes=1) == 32  # 16 a micro-batch, two accumulated
    assert total_steps(recipe, processes=1) == 4  # 100 images: 3.125 iterations, rounded up
    assert images_per_step(recipe, processes=2) == 64
    assert total_steps(recipe, processes=2) == 2


@pytest.mark.parametrize(
    ("overrides", "found"),
    [
        (["train.kimg=5"], "not both"),
        (["train.steps=null"], "give the run's length: train.steps or train.kimg"),
        (["train.steps=null", "train.kimg=0"], "train.kimg"),
        (["train.steps=100000000000"], "train.steps"),
        (["train.max_minutes=-1"], "train.max_minutes"),
    ],
)
def test_a_run_has_exactly_one_length(overrides, found):
    with pytest.raises(RecipeError, match=found):
        load_recipe(REFERENCE_RECIPE, overrides)


def test_a_run_of_kimg_trains_that_many_images(tmp_path, mnist_root, capsys):
    run_dir = tmp_path / "run"
    overrides = ["train.steps=null", "train.kimg=0.048", f"output_dir={run_dir}"]
    assert main(["train", str(REFERENCE_RECIPE), *SMALL, *overrides]) == 0
    assert "step 3/3" in capsys.readouterr().out  # 48 images at 16 a step
    assert exported_step(run_dir) == 3


def test_the_budget_ends_the_run_with_a_checkpoint_and_an_export(tmp_path, mnist_root, capsys):
    run_dir = tmp_path / "run"
    overrides = [
        "train.steps=1000000",
        "train.max_minutes=0.0001",  # 6 ms: spent after the first iteration
        "train.checkpoint_every=1000",
        f"output_dir={run_dir}",
    ]
    assert main(["train", str(REFERENCE_RECIPE), *SMALL, *overrides]) == 0
    out = capsys.readouterr().out
    assert "the wall-clock budget of train.max_minutes=0.0001 is spent at step 1" in out
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_0000001"]
    assert exported_step(run_dir) == 1
    assert (run_dir / "samples.gif").is_file()
    # the same command with a larger budget continues from there
    overrides[1] = "train.max_minutes=0.0002"
    assert main(["train", str(REFERENCE_RECIPE), *SMALL, *overrides]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert exported_step(run_dir) == 2


def test_the_clock_counts_from_its_start():
    assert not WallClock(None).spent()
    clock = WallClock(0.0005)  # 30 ms
    assert not clock.spent()
    time.sleep(0.04)
    assert clock.spent()
