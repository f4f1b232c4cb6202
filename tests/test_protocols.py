"""Each registry kind's Protocol: the built-in components offer it, a component that does not is
refused at build, and the class-conditional plumbing the networks share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from gankit.components.models.base import Discriminator, Projection
from gankit.config.protocols import (
    AugmentationProtocol,
    DiscriminatorProtocol,
    GeneratorProtocol,
    LossProtocol,
    RegularizerProtocol,
    ScheduleProtocol,
    lacking,
)
from gankit.config.registry import REGISTRIES
from gankit.core.errors import RegistryError

GENERATORS, DISCRIMINATORS, LOSSES = (REGISTRIES[k] for k in ("generator", "discriminator", "loss"))
REGULARIZERS, SCHEDULES = REGISTRIES["regularizer"], REGISTRIES["schedule"]
AUGMENTATIONS, DATASETS = REGISTRIES["augment"], REGISTRIES["data"]
CLASSES = 5
# Each network small, conditional, on images it makes: (params, image shape)
NETWORKS = {
    "dcgan28": ({"width": 4}, (1, 28, 28)),
    "dcgan": ({"width": 4}, (3, 16, 16)),
    "mlp": ({"hidden": 16}, (1, 8, 8)),
    "r3gan": ({"width": 8, "cardinality": 2, "blocks": 1}, (3, 16, 16)),
    "stylegan2": ({"width": 8, "max_channels": 16}, (3, 16, 16)),
}
G_ONLY = {"stylegan2": {"z_dim": 16, "w_dim": 16, "mapping_layers": 2}}


def test_every_registry_of_gankit_knows_its_protocol() -> None:
    assert all(registry.protocol is not None for registry in REGISTRIES.values())


@pytest.mark.parametrize("name", GENERATORS.names())
def test_every_generator_offers_the_generator_protocol(name: str) -> None:
    params, shape = NETWORKS[name]
    for classes in (0, CLASSES):
        spec = {"name": name, **params, **G_ONLY.get(name, {}), "num_classes": classes}
        generator = GENERATORS.build(spec, image_shape=shape)
        assert isinstance(generator, GeneratorProtocol)
        assert lacking(generator, GeneratorProtocol) == []


@pytest.mark.parametrize("name", DISCRIMINATORS.names())
def test_every_discriminator_offers_the_discriminator_protocol(name: str) -> None:
    params, shape = NETWORKS[name]
    for classes in (0, CLASSES):
        spec = {"name": name, **params, "num_classes": classes}
        discriminator = DISCRIMINATORS.build(spec, image_shape=shape)
        assert isinstance(discriminator, Discriminator)
        assert isinstance(discriminator, DiscriminatorProtocol)
        assert discriminator.num_classes == classes


@pytest.mark.parametrize(
    ("registry", "protocol"),
    [
        (LOSSES, LossProtocol),
        (REGULARIZERS, RegularizerProtocol),
        (AUGMENTATIONS, AugmentationProtocol),
        (SCHEDULES, ScheduleProtocol),
    ],
)
def test_every_other_builtin_offers_its_kinds_protocol(registry: Any, protocol: type) -> None:
    for name in registry.names():
        built = registry.build({"name": name})
        assert lacking(built, protocol) == [], name


def test_optional_members_get_their_defaults_and_declared_ones_stay() -> None:
    diffaugment = AUGMENTATIONS.build({"name": "diffaugment"})
    ada = AUGMENTATIONS.build({"name": "ada"})
    assert diffaugment.observe is None and diffaugment.values is None
    assert callable(ada.observe) and set(ada.values()) == {"augment_p"}
    assert SCHEDULES.build({"name": "alternating"}).batches_per_step == 1
    assert SCHEDULES.build({"name": "n_critic", "n_critic": 3}).batches_per_step == 3
    assert REGULARIZERS.build({"name": "r1"}).network == "discriminator"
    assert REGULARIZERS.build({"name": "path_length"}).network == "generator"
    ring = DATASETS.build({"name": "ring", "size": 16})
    assert callable(ring.evaluator) and callable(ring.reference_points)


@pytest.fixture
def incomplete_loss() -> Iterator[str]:
    """A plugin loss with a discriminator's method but no generator's."""

    @LOSSES.register("half_a_loss")
    class HalfALoss:
        """Only D's side."""

        def discriminator(self, logits: Any) -> dict[str, torch.Tensor]:
            return {"d_loss": logits.real.mean()}

    try:
        yield "half_a_loss"
    finally:
        LOSSES.unregister("half_a_loss")


def test_a_component_lacking_a_required_member_is_refused_at_build(incomplete_loss: str) -> None:
    with pytest.raises(RegistryError) as error:
        LOSSES.build({"name": incomplete_loss})
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("loss 'half_a_loss' (")
    assert "HalfALoss" in message and "lacks generator;" in message
    assert "LossProtocol" in message


def test_a_discriminator_without_num_classes_is_unconditional() -> None:
    class Plain(torch.nn.Module):
        """A discriminator of a plugin, written before num_classes existed."""

        def __init__(self, image_shape: Any = (1, 8, 8)) -> None:
            super().__init__()

    DISCRIMINATORS.register("plain_test")(Plain)
    try:
        built = DISCRIMINATORS.build({"name": "plain_test"}, image_shape=(1, 8, 8))
    finally:
        DISCRIMINATORS.unregister("plain_test")
    assert built.num_classes == 0


def test_the_shared_projection_is_the_hand_computed_term() -> None:
    torch.manual_seed(0)

    class Tiny(Discriminator):
        def __init__(self) -> None:
            super().__init__()
            self.num_classes = 3
            self.add_projection(4)

    tiny = Tiny()
    features, logits = torch.randn(6, 4), torch.randn(6, 1)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    embed = tiny.project.embed.weight
    by_hand = logits + torch.stack(
        [(embed[y] * h).sum() for y, h in zip(labels, features, strict=True)]
    ).unsqueeze(1)
    torch.testing.assert_close(tiny.project_labels(logits, features, labels), by_hand)
    assert isinstance(tiny.project, Projection)
    tiny.num_classes = 0
    tiny.add_projection(4)
    assert tiny.project is None
    assert tiny.project_labels(logits, features, None) is logits


@pytest.mark.parametrize("name", GENERATORS.names())
def test_conditional_generators_make_other_images_for_other_labels(name: str) -> None:
    params, shape = NETWORKS[name]
    spec = {"name": name, **params, **G_ONLY.get(name, {}), "num_classes": CLASSES}
    torch.manual_seed(0)
    generator = GENERATORS.build(spec, image_shape=shape)
    z = generator.sample_noise(4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        generator.eval()
        images = [generator(z, torch.full((4,), label)) for label in range(CLASSES)]
    for first in range(CLASSES):
        for second in range(first + 1, CLASSES):
            assert not torch.allclose(images[first], images[second]), (first, second)
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        generator(z)
