"""The Radford DCGAN pair ('dcgan'): shapes for every power-of-two size, gradients, options,
size checks, class conditioning, parameter counts of the PyTorch example, and export."""

from __future__ import annotations

import pytest
import torch

import gankit
from gankit import DISCRIMINATORS, GENERATORS
from gankit.components.models.dcgan_radford import DCGANDiscriminator, DCGANGenerator
from gankit.core.errors import RegistryError


def build_pair(shape, width=4, **extra):
    generator = GENERATORS.build({"name": "dcgan", "width": width, **extra}, image_shape=shape)
    discriminator = DISCRIMINATORS.build(
        {"name": "dcgan", "width": width, **extra_for_d(extra)}, image_shape=shape
    )
    return generator, discriminator


def extra_for_d(extra):
    return {key: value for key, value in extra.items() if key == "num_classes"}


def assert_every_parameter_has_gradient(module):
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_range_and_gradients(size, channels):
    torch.manual_seed(0)
    shape = (channels, size, size)
    generator, discriminator = build_pair(shape)
    images = generator(generator.sample_noise(4))
    assert images.shape == (4, *shape)
    assert images.min() >= -1 and images.max() <= 1
    logits = discriminator(images)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    (logits * torch.randn_like(logits)).sum().backward()
    assert_every_parameter_has_gradient(generator)
    assert_every_parameter_has_gradient(discriminator)


@pytest.mark.parametrize("size", [8, 16, 128])
def test_other_power_of_two_sizes(size):
    generator, discriminator = build_pair((3, size, size), width=2)
    images = generator.sample(2, seed=0)
    assert images.shape == (2, 3, size, size)
    assert discriminator(images).shape == (2, 1)


def test_depth_follows_the_size():
    generator = DCGANGenerator(width=8, image_shape=(3, 32, 32))
    convs = [m for m in generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    widths = [(c.in_channels, c.out_channels) for c in convs]
    assert widths == [(100, 32), (32, 16), (16, 8), (8, 3)]
    discriminator = DCGANDiscriminator(width=8, image_shape=(1, 32, 32))
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    widths = [(c.in_channels, c.out_channels) for c in convs]
    assert widths == [(1, 8), (8, 16), (16, 32), (32, 1)]


def test_initialisation_is_the_papers():
    torch.manual_seed(0)
    generator = DCGANGenerator(width=64, image_shape=(3, 64, 64))
    weight = generator.net[3].weight
    assert abs(weight.mean()) < 1e-3 and abs(weight.std() - 0.02) < 1e-3
    norm = generator.net[1]
    assert abs(norm.weight.mean() - 1) < 5e-3 and abs(norm.weight.std() - 0.02) < 5e-3
    assert (norm.bias == 0).all()


def test_spectral_norm_is_applied_and_trains():
    torch.manual_seed(0)
    discriminator = DISCRIMINATORS.build(
        {"name": "dcgan", "width": 4, "spectral_norm": True}, image_shape=(3, 32, 32)
    )
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)
    logits = discriminator(torch.rand(4, 3, 32, 32) * 2 - 1)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert_every_parameter_has_gradient(discriminator)


def test_batch_norm_off_gives_biased_convs_and_no_norm():
    discriminator = DISCRIMINATORS.build(
        {"name": "dcgan", "width": 4, "batch_norm": False}, image_shape=(1, 32, 32)
    )
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in discriminator.modules())
    middle = [m for m in discriminator.features if isinstance(m, torch.nn.Conv2d)][1:]
    assert middle and all(conv.bias is not None for conv in middle)
    one = discriminator(torch.rand(1, 1, 32, 32))
    two = discriminator(torch.rand(2, 1, 32, 32))
    assert one.shape == (1, 1) and two.shape == (2, 1)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 48, 48), (3, 32, 64), (3, 4, 4), (32, 32)])
def test_sizes_it_cannot_make_are_refused_clearly(shape):
    for cls in (DCGANGenerator, DCGANDiscriminator):
        with pytest.raises(ValueError) as error:
            cls(width=4, image_shape=shape)
        message = str(error.value)
        assert str(tuple(shape)) in message and "'dcgan'" in message
        assert "dcgan28" in message and "data.size" in message
    with pytest.raises(RegistryError, match="power-of-two"):
        GENERATORS.build({"name": "dcgan", "width": 4}, image_shape=shape)


def test_parameters_are_validated():
    with pytest.raises(RegistryError, match="width"):
        GENERATORS.build({"name": "dcgan", "width": 0}, image_shape=(3, 32, 32))
    with pytest.raises(RegistryError, match="embed_dim"):
        DISCRIMINATORS.build({"name": "dcgan", "embed_dim": 8}, image_shape=(3, 32, 32))


def test_parameter_counts_match_the_pytorch_example():
    generator = GENERATORS.build({"name": "dcgan"}, image_shape=(3, 64, 64))
    discriminator = DISCRIMINATORS.build({"name": "dcgan"}, image_shape=(3, 64, 64))
    assert sum(p.numel() for p in generator.parameters()) == 3_576_704
    assert sum(p.numel() for p in discriminator.parameters()) == 2_765_568


def pytorch_example_pair(nz, ngf, ndf, nc):
    """The networks of the PyTorch DCGAN example (examples/dcgan/main.py), as written there."""
    nn = torch.nn
    generator = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * 8),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 4),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    discriminator = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 8),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )
    return generator, discriminator


def test_same_function_as_the_pytorch_example():
    torch.manual_seed(0)
    generator, discriminator = build_pair((3, 64, 64), width=4)
    reference_g, reference_d = pytorch_example_pair(nz=100, ngf=4, ndf=4, nc=3)
    reference_g.load_state_dict(
        {k.removeprefix("net."): v for k, v in generator.state_dict().items()}
    )
    renamed = {
        k.replace("features.", "").replace("classify.", "11."): v
        for k, v in discriminator.state_dict().items()
    }
    reference_d.load_state_dict(renamed)
    z = torch.randn(4, 100)
    images = generator(z)
    torch.testing.assert_close(images, reference_g(z[:, :, None, None]))
    torch.testing.assert_close(
        torch.sigmoid(discriminator(images)), reference_d(images).view(-1, 1)
    )


def test_unconditional_nets_have_no_embeddings_and_refuse_labels():
    generator, discriminator = build_pair((1, 32, 32))
    assert generator.num_classes == 0 and discriminator.num_classes == 0
    for net in (generator, discriminator):
        assert not any(isinstance(m, torch.nn.Embedding) for m in net.modules())
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="unconditional"):
        generator(generator.sample_noise(2), labels)
    with pytest.raises(ValueError, match="unconditional"):
        discriminator(torch.rand(2, 1, 32, 32), labels)


def test_conditional_pair_depends_on_the_labels():
    torch.manual_seed(0)
    generator, discriminator = build_pair((3, 32, 32), num_classes=10, embed_dim=6)
    generator.eval()
    discriminator.eval()
    z = generator.sample_noise(4)
    zeros, threes = torch.zeros(4, dtype=torch.long), torch.full((4,), 3)
    images = generator(z, zeros)
    assert not torch.allclose(images, generator(z, threes))
    assert not torch.allclose(discriminator(images, zeros), discriminator(images, threes))
    assert generator.sample(8, seed=0, labels=3).shape == (8, 3, 32, 32)
    assert torch.equal(generator.sample(8, seed=0, labels=3), generator.sample(8, seed=0, labels=3))
    with pytest.raises(ValueError, match="pass labels"):
        generator(z)
    with pytest.raises(ValueError, match="pass labels"):
        discriminator(images)


def test_conditional_pair_trains_every_parameter():
    torch.manual_seed(0)
    generator, discriminator = build_pair((1, 32, 32), num_classes=5, embed_dim=3)
    labels = torch.tensor([0, 1, 2, 4])
    logits = discriminator(generator(generator.sample_noise(4), labels), labels)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    (logits * torch.randn_like(logits)).sum().backward()
    assert_every_parameter_has_gradient(generator)
    assert_every_parameter_has_gradient(discriminator)


def test_spectral_norm_with_projection():
    discriminator = DISCRIMINATORS.build(
        {"name": "dcgan", "width": 4, "spectral_norm": True, "num_classes": 3},
        image_shape=(3, 16, 16),
    )
    logits = discriminator(torch.rand(2, 3, 16, 16), torch.tensor([0, 2]))
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()


@pytest.mark.parametrize("num_classes", [0, 10])
def test_export_round_trip(tmp_path, num_classes):
    torch.manual_seed(0)
    generator = GENERATORS.build(
        {"name": "dcgan", "width": 4, "num_classes": num_classes}, image_shape=(3, 32, 32)
    )
    labels = torch.arange(4) % 10 if num_classes else None
    generator.generate(generator.sample_noise(8), None if labels is None else labels.repeat(2))
    gankit.save_model(generator, tmp_path / "g")
    loaded = gankit.load_generator(tmp_path / "g")
    assert type(loaded) is DCGANGenerator and loaded.num_classes == num_classes
    expected = generator.sample(4, seed=1, labels=labels)
    assert torch.equal(loaded.sample(4, seed=1, labels=labels), expected)
