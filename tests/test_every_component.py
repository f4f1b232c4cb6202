"""Every registered model, loss and regularizer builds and takes a training step without NaN,
in the way timm tests over its model registry."""

from __future__ import annotations

import pytest
import torch

from gankit import AUGMENTATIONS, DISCRIMINATORS, GENERATORS, LOSSES, REGULARIZERS, SCHEDULES
from gankit.components.augment import Randomness
from gankit.components.losses import Logits
from gankit.components.models.base import Generator

SHAPE = (1, 28, 28)
SMALL = {
    "dcgan28": {"width": 4},
    "dcgan": {"width": 4},
    "mlp": {"hidden": 16},
    "r3gan": {"width": 8, "cardinality": 4},
    "stylegan2": {"width": 4, "max_channels": 8},
}
SHAPES = {"dcgan": (3, 32, 32)}  # models for other sizes than 28x28
CLASSES = 3


def conditional(registry, name) -> list[int]:
    """The class counts to test a model with: 0, and CLASSES when it can be conditional."""
    return [0, CLASSES] if "num_classes" in registry.get(name).params.model_fields else [0]


def spectral_norms(name) -> list[bool]:
    """Spectral normalisation off, and on when the discriminator offers it."""
    return (
        [False, True]
        if "spectral_norm" in DISCRIMINATORS.get(name).params.model_fields
        else [False]
    )


@pytest.mark.parametrize(
    ("name", "classes"),
    [(n, k) for n in GENERATORS.names() for k in conditional(GENERATORS, n)],
)
def test_generator_builds_samples_and_backpropagates(name, classes):
    shape = SHAPES.get(name, SHAPE)
    extra = {"num_classes": classes} if classes else {}
    generator = GENERATORS.build({"name": name, **SMALL.get(name, {}), **extra}, image_shape=shape)
    assert isinstance(generator, Generator) and generator.num_classes == classes
    labels = generator.sample_labels(4)
    images = generator.generate(generator.sample_noise(4), labels)
    assert images.shape == (4, *shape) and torch.isfinite(images).all()
    images.square().mean().backward()
    assert all(p.grad is not None for p in generator.parameters())
    assert generator.sample(3, seed=0).shape == (3, *shape)
    if classes:
        assert generator.sample(3, seed=0, labels=[0, 1, 2]).shape == (3, *shape)


@pytest.mark.parametrize(
    ("name", "classes", "spectral_norm"),
    [
        (n, k, sn)
        for n in DISCRIMINATORS.names()
        for k in conditional(DISCRIMINATORS, n)
        for sn in spectral_norms(n)
    ],
)
def test_discriminator_builds_scores_and_backpropagates(name, classes, spectral_norm):
    shape = SHAPES.get(name, SHAPE)
    params = {"name": name, **SMALL.get(name, {})}
    if spectral_norm:
        params["spectral_norm"] = True
    if classes:
        params["num_classes"] = classes
    discriminator = DISCRIMINATORS.build(params, image_shape=shape)
    images = torch.rand(4, *shape) * 2 - 1
    logits = discriminator(images, torch.arange(4) % classes) if classes else discriminator(images)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in discriminator.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_gives_finite_gradients(name):
    loss = LOSSES.build({"name": name})
    real = torch.randn(8, 1, requires_grad=True)
    fake = torch.randn(8, 1, requires_grad=True)
    d_parts = loss.discriminator(Logits(real, fake))
    g_real = real if loss.generator_uses_real else None
    g_parts = loss.generator(Logits(g_real, fake))
    (sum(d_parts.values()) + sum(g_parts.values())).backward()
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()
    assert tuple(d_parts) == loss.parts["discriminator"]
    assert tuple(g_parts) == loss.parts["generator"]


@pytest.mark.parametrize("name", [n for n in REGULARIZERS.names() if n != "none"])
def test_regularizer_penalty_reaches_every_weight_of_its_network(name):
    regularizer = REGULARIZERS.build({"name": name})
    if regularizer.network == "generator":
        network = GENERATORS.build({"name": "dcgan28", "width": 4}, image_shape=SHAPE)
        penalty = regularizer.penalty(network, torch.rand(4, network.z_dim))
    else:
        network = DISCRIMINATORS.build({"name": "dcgan28", "width": 4}, image_shape=SHAPE)
        penalty = regularizer.penalty(network, torch.rand(4, *SHAPE), torch.rand(4, *SHAPE))
    penalty.backward()
    assert torch.isfinite(penalty) and penalty > 0
    assert all(p.grad is not None for p in network.parameters())


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_augmentation_keeps_shapes_and_passes_gradients(name):
    augment = AUGMENTATIONS.build({"name": name})
    if isinstance(augment, torch.nn.Module):
        augment = AUGMENTATIONS.build({"name": name, "p": 0.5})
    images = torch.rand(8, *SHAPE, requires_grad=True)
    randomness = Randomness(0, torch.tensor(0), lambda count: 0)
    randomness.start()
    out = augment(images, randomness.for_batch(8))
    assert out.shape == images.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_schedule_gives_phases_for_both_networks(name):
    schedule = SCHEDULES.build({"name": name})
    networks = {phase.network for step in range(4) for phase in schedule.phases(step)}
    assert networks == {"discriminator", "generator"}
    schedule.load_state_dict(schedule.state_dict())
