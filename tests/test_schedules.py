"""Schedules: which updates run in an iteration, and on which batch."""

from __future__ import annotations

import torch

from gankit import SCHEDULES
from gankit.config.recipe import load_recipe
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY


def test_n_critic_gives_each_critic_update_its_own_batch():
    schedule = SCHEDULES.build({"name": "n_critic", "n_critic": 3})
    assert schedule.batches_per_step == 3
    assert [(p.network, p.batch) for p in schedule.phases(0)] == [
        ("discriminator", 0), ("discriminator", 1), ("discriminator", 2), ("generator", 2),
    ]  # fmt: skip


def test_an_n_critic_iteration_draws_fresh_batches_for_the_critic(
    tmp_path, mnist_root, monkeypatch
):
    overrides = [
        *TINY,
        "schedule={name: n_critic, n_critic: 3}",
        "train.steps=1",
        f"output_dir={tmp_path}",
    ]
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, overrides))
    seen: list[torch.Tensor] = []
    critic_loss = trainer.iteration.d_loss

    def recording(batch):
        seen.append(batch.real.clone())
        return critic_loss(batch)

    monkeypatch.setattr(trainer.iteration, "d_loss", recording)
    real, z, *_ = trainer.inputs.next(trainer.inputs.batches(), trainer.step)
    assert real.shape[0] == 3 * 16 and z.shape[0] == 3 * 16
    trainer.train_step(real, z)
    assert len(seen) == 3 and all(batch.shape[0] == 16 for batch in seen)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    steps = lambda optimizer: {float(s["step"]) for s in optimizer.state.values()}  # noqa: E731
    assert steps(trainer.parts.d_optimizer) == {3.0} and steps(trainer.parts.g_optimizer) == {1.0}
