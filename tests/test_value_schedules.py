"""Recipe values that follow a schedule over the images seen: learning rates, Adam's beta2, a
regularizer's weight, the EMA half-life and a fixed augmentation probability."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_resume import assert_same_state, final_state

from gankit.config.recipe import load_recipe
from gankit.config.value_schedule import ValueSchedule
from gankit.core.errors import GankitError
from gankit.training.checkpoint import list_checkpoints
from gankit.training.optim import lazy_ratio
from gankit.training.state_files import load_state
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

SMALL = [*TINY, "data.subset=32", "train.log_every=1", "train.sample_every=100"]
BATCH = 16  # TINY's data.batch_size: images per iteration in one process
SCHEDULED = [
    "optim.discriminator.lr={start: 4.0e-4, end: 1.0e-4, shape: linear}",
    "optim.generator.lr={start: 3.0e-4, end: 1.0e-4, rampup_kimg: 0.032}",
    "optim.generator.betas=[0.0, {start: 0.9, end: 0.99, shape: linear}]",
    "regularizers=[{name: r1, weight: {start: 1.0, end: 0.2, shape: linear}, every: 2}]",
    "augment={name: ada, adaptive: false, p: {start: 0.6, end: 0.0, kimg: 0.064}}",
    "ema.half_life_kimg={start: 0.0, end: 1.0, shape: linear}",
]


def test_shapes_ramp_up_and_hold():
    linear = ValueSchedule(start=1.0, end=0.0, shape="linear")
    assert [linear.at(images, 100) for images in (0, 25, 50, 100, 150)] == [1, 0.75, 0.5, 0, 0]
    cosine = ValueSchedule(start=2.0, end=1.0)
    assert cosine.at(0, 100) == 2.0 and cosine.at(100, 100) == 1.0
    assert cosine.at(50, 100) == pytest.approx(1.5)
    assert cosine.at(25, 100) == pytest.approx(1 + (1 + math.cos(math.pi / 4)) / 2)
    ramped = ValueSchedule(start=1.0, end=0.0, shape="linear", rampup_kimg=0.01, kimg=0.02)
    assert [ramped.at(images, 10**6) for images in (0, 5, 10, 20, 30, 1000)] == [
        0,
        0.5,
        1,
        0.5,
        0,
        0,
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.generator.lr={start: 0, end: 1.0e-4}", "optim.generator.lr: start = 0.0 must be"),
        (
            "regularizers=[{name: r1, weight: {start: 1.0, end: -0.5}}]",
            "end = -0.5 must be greater",
        ),
        ("optim.generator.betas=[0.5, {start: 0.9, end: 1.0}]", "end = 1.0 must be less than 1"),
        ("optim.generator.lr={start: 1.0e-3, end: 1.0e-4, steps: 3}", "optim.generator.lr.steps"),
        ("optim.generator.lr={start: 1.0e-3, end: true}", "optim.generator.lr.end"),
        (
            "regularizers=[{name: r1, weight: {start: 1.0, end: -1.0}}]",
            "regularizers.0.weight: end = -1.0 must be greater than 0",
        ),
    ],
)
def test_schedules_are_checked_like_the_values_they_schedule(override, message, mnist_root):
    with pytest.raises(GankitError) as error:
        load_recipe(REFERENCE_RECIPE, [*SMALL, override])
    assert message in str(error.value)
    assert "<" not in str(error.value)  # no internal union tags


def test_a_scheduled_lr_replaces_lr_schedule_and_warmup(mnist_root):
    with pytest.raises(GankitError, match=r"lr is a schedule.*remove lr_schedule"):
        load_recipe(
            REFERENCE_RECIPE,
            [
                *SMALL,
                "optim.generator.lr={start: 1.0e-3, end: 0}",
                "optim.generator.warmup_steps=5",
            ],
        )


def test_ada_refuses_a_schedule_for_the_p_it_steers(tmp_path, mnist_root):
    recipe = load_recipe(
        REFERENCE_RECIPE,
        [*SMALL, "augment={name: ada, p: {start: 0.5, end: 0}}", f"output_dir={tmp_path}"],
    )
    with pytest.raises(GankitError, match="set augment\\.adaptive: false"):
        Trainer(recipe)


def expected(schedule: dict, images: float, run_images: float) -> float:
    return ValueSchedule(**schedule).at(images, run_images)


def test_every_scheduled_value_is_set_each_iteration_and_logged(tmp_path, mnist_root):
    steps = 6
    run_dir = tmp_path / "run"
    trainer = Trainer(
        load_recipe(
            REFERENCE_RECIPE,
            [*SMALL, *SCHEDULED, f"train.steps={steps}", f"output_dir={run_dir}"],
        )
    )
    parts = trainer.parts
    seen = []  # the values in force during each iteration's updates
    original = trainer.iteration.run_phases

    def record(inputs, phases):
        (d_group,) = parts.d_optimizer.param_groups
        (g_group,) = parts.g_optimizer.param_groups
        seen.append(
            {
                "d_lr": float(d_group["lr"]),
                "g_lr": float(g_group["lr"]),
                "g_beta2": float(g_group["betas"][1]),
                "r1": float(parts.regularizers["d_r1"].weight),
                "p": float(parts.augment.p),
                "half_life": parts.ema.half_life_images,
            }
        )
        return original(inputs, phases)

    trainer.iteration.run_phases = record
    trainer.fit()

    run_images = steps * BATCH
    d_ratio, g_ratio = lazy_ratio(1, [2]), 1.0  # r1 every 2 on D; G has no lazy penalty
    for step, values in enumerate(seen):
        images = step * BATCH
        assert values["d_lr"] == pytest.approx(
            d_ratio * expected({"start": 4e-4, "end": 1e-4, "shape": "linear"}, images, run_images)
        )
        assert values["g_lr"] == pytest.approx(
            g_ratio
            * expected({"start": 3e-4, "end": 1e-4, "rampup_kimg": 0.032}, images, run_images)
        )
        assert values["g_beta2"] == pytest.approx(
            expected({"start": 0.9, "end": 0.99, "shape": "linear"}, images, run_images)
        )
        assert values["r1"] == pytest.approx(
            expected({"start": 1.0, "end": 0.2, "shape": "linear"}, images, run_images)
        )
        assert values["p"] == pytest.approx(
            expected({"start": 0.6, "end": 0.0, "kimg": 0.064}, images, run_images)
        )
        assert values["half_life"] == pytest.approx(
            1000 * expected({"start": 0.0, "end": 1.0, "shape": "linear"}, images, run_images)
        )
    assert seen[0]["g_lr"] == 0.0 and seen[2]["g_lr"] == pytest.approx(3e-4)  # the ramp-up
    assert seen[4]["p"] == 0.0 and seen[0]["p"] == pytest.approx(0.6)  # held after kimg
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:  # the values of the iteration the line ends with
        images = (record["step"] - 1) * BATCH
        assert record["schedule/d_r1.weight"] == pytest.approx(
            expected({"start": 1.0, "end": 0.2, "shape": "linear"}, images, run_images)
        )
        assert record["schedule/optim.generator.betas[1]"] == pytest.approx(
            expected({"start": 0.9, "end": 0.99, "shape": "linear"}, images, run_images)
        )
    assert {
        "schedule/optim.discriminator.lr",
        "schedule/optim.generator.lr",
        "schedule/augment.p",
        "schedule/ema.half_life_kimg",
    } <= records[-1].keys()


class Crash(Exception):
    pass


def test_a_run_with_schedules_resumes_bit_for_bit(tmp_path, mnist_root):
    common = [*SMALL, *SCHEDULED, "train.checkpoint_every=3", "train.steps=6"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    Trainer(load_recipe(REFERENCE_RECIPE, [*common, f"output_dir={straight}"])).fit()
    crashing = Trainer(load_recipe(REFERENCE_RECIPE, [*common, f"output_dir={resumed}"]))
    run = crashing.iteration.run

    def crash_after_the_checkpoint(inputs):
        if crashing.iteration.step == 4:
            raise Crash
        run(inputs)

    crashing.iteration.run = crash_after_the_checkpoint
    with pytest.raises(Crash):
        crashing.fit()
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*common, f"output_dir={resumed}"]))
    trainer.resume()
    assert trainer.step == 3
    trainer.fit()
    assert_same_state(final_state(resumed), final_state(straight))
    assert torch.equal(trainer.parts.augment.p.cpu(), torch.tensor(0.0))
    (newest, *_) = list_checkpoints(resumed)
    saved = load_state(newest, "run_state")["scheduled_values"]  # the values at its step
    assert saved == pytest.approx(trainer.parts.value_schedules.values(6))
    assert saved["optim.discriminator.lr"] == pytest.approx(1e-4)  # the recipe value, uncorrected
