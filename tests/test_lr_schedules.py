"""Learning-rate schedules: warm-up and decay per network, stepped per iteration, resumable."""

from __future__ import annotations

import math

import pytest
import torch

from gankit.config.recipe import AdamParams, load_recipe
from gankit.training.optim import lr_schedule
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

COS_45 = math.cos(math.pi / 4)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]),  # reaches 0 after the last of 6 steps
        ("cosine", [0.5, 1.0, 1.0, (1 + COS_45) / 2, 0.5, (1 - COS_45) / 2]),
    ],
)
def test_factors_after_a_two_step_warmup(kind, expected):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1.0)
    schedule = lr_schedule(optimizer, AdamParams(lr=1.0, lr_schedule=kind, warmup_steps=2), 6)
    seen = []
    for _ in expected:
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx(expected)


def test_each_network_follows_its_own_schedule_and_resumes(tmp_path, mnist_root):
    def run(name: str, steps: int) -> Trainer:
        overrides = [
            *TINY,
            "data.subset=64",
            "optim.generator.lr_schedule=linear",
            "optim.discriminator.warmup_steps=8",
            f"train.steps={steps}",
            "train.checkpoint_every=2",
            f"output_dir={tmp_path / name}",
        ]
        trainer = Trainer(load_recipe(REFERENCE_RECIPE, overrides))
        trainer.fit()
        return trainer

    straight = run("straight", 8)
    g_lr = straight.parts.g_optimizer.param_groups[0]["lr"]
    d_lr = straight.parts.d_optimizer.param_groups[0]["lr"]
    assert g_lr == pytest.approx(0.0) and d_lr == pytest.approx(2e-4)  # decayed; warmed up
    run("resumed", 4)  # the schedule follows train.steps, so extending a run stretches it:
    resumed = run("resumed", 8)  # allowed, and here the same since both say 8 in the end
    assert resumed.parts.g_optimizer.param_groups[0]["lr"] == pytest.approx(g_lr)
    assert resumed.parts.d_optimizer.param_groups[0]["lr"] == pytest.approx(d_lr)


def test_optimizer_settings_changed_on_resume_take_effect(tmp_path, mnist_root):
    """With train.allow_recipe_changes, a new learning rate, betas, eps and weight decay apply
    from the resumed step on (the checkpoint's optimizer state would otherwise keep the old)."""

    def run(steps: int, *changes: str) -> Trainer:
        overrides = [*TINY, "data.subset=64", f"output_dir={tmp_path}", f"train.steps={steps}"]
        # G warms up over 8 steps, D keeps a constant rate
        overrides += ["optim.generator.warmup_steps=8", "train.checkpoint_every=4", *changes]
        trainer = Trainer(load_recipe(REFERENCE_RECIPE, overrides))
        trainer.fit()
        return trainer

    run(4)
    changed = [
        "train.allow_recipe_changes=true",
        "optim.generator.lr=1e-3",
        "optim.discriminator.lr=5e-4",
        "optim.discriminator.betas=[0.0, 0.99]",
        "optim.discriminator.eps=1e-6",
        "optim.discriminator.weight_decay=0.01",
    ]
    trainer = run(6, *changed)
    g_group, d_group = (
        trainer.parts.g_optimizer.param_groups[0],
        trainer.parts.d_optimizer.param_groups[0],
    )
    # after step 6, G's rate is the new base at 7/8 of its warm-up; later steps keep it up
    assert g_group["lr"] == pytest.approx(1e-3 * 7 / 8)
    assert trainer.parts.lr_schedules[0].base_lrs == [1e-3]
    assert d_group["lr"] == 5e-4 and tuple(d_group["betas"]) == (0.0, 0.99)
    assert d_group["eps"] == 1e-6 and d_group["weight_decay"] == 0.01
