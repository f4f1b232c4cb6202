"""Every registered model, loss and regularizer builds and takes a training step without NaN,
in the way timm tests over its model registry."""

from __future__ import annotations

import pytest
import torch

from gankit import DISCRIMINATORS, GENERATORS, LOSSES, REGULARIZERS, SCHEDULES
from gankit.models.base import Generator

SHAPE = (1, 28, 28)
SMALL = {"dcgan28": {"width": 4}, "mlp": {"hidden": 16}}


@pytest.mark.parametrize("name", GENERATORS.names())
def test_generator_builds_samples_and_backpropagates(name):
    generator = GENERATORS.build({"name": name, **SMALL.get(name, {})}, image_shape=SHAPE)
    assert isinstance(generator, Generator)
    images = generator(generator.sample_noise(4))
    assert images.shape == (4, *SHAPE) and torch.isfinite(images).all()
    images.square().mean().backward()
    assert all(p.grad is not None for p in generator.parameters())
    assert generator.sample(3, seed=0).shape == (3, *SHAPE)


@pytest.mark.parametrize("name", DISCRIMINATORS.names())
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_discriminator_builds_scores_and_backpropagates(name, spectral_norm):
    params = {"name": name, **SMALL.get(name, {})}
    if spectral_norm:
        params["spectral_norm"] = True
    discriminator = DISCRIMINATORS.build(params, image_shape=SHAPE)
    logits = discriminator(torch.rand(4, *SHAPE) * 2 - 1)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in discriminator.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_gives_finite_gradients(name):
    loss = LOSSES.build({"name": name})
    real = torch.randn(8, 1, requires_grad=True)
    fake = torch.randn(8, 1, requires_grad=True)
    d_real, d_fake = loss.discriminator(real, fake)
    (d_real + d_fake + loss.generator(fake)).backward()
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()


@pytest.mark.parametrize("name", [n for n in REGULARIZERS.names() if n != "none"])
def test_regularizer_penalty_reaches_every_discriminator_weight(name):
    regularizer = REGULARIZERS.build({"name": name})
    discriminator = DISCRIMINATORS.build({"name": "dcgan28", "width": 4}, image_shape=SHAPE)
    real, fake = torch.rand(4, *SHAPE), torch.rand(4, *SHAPE)
    penalty = regularizer.penalty(discriminator, real, fake)
    penalty.backward()
    assert torch.isfinite(penalty) and penalty > 0
    assert all(p.grad is not None for p in discriminator.parameters())


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_schedule_gives_phases_for_both_networks(name):
    schedule = SCHEDULES.build({"name": name})
    networks = {phase.network for step in range(4) for phase in schedule.phases(step)}
    assert networks == {"discriminator", "generator"}
    schedule.load_state_dict(schedule.state_dict())
