"""The reference components: DCGAN shapes and parameter counts, TF padding, loss, schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gankit import DISCRIMINATORS, GENERATORS, LOSSES, SCHEDULES
from gankit.components.losses import Logits
from gankit.components.models.dcgan import ConvTranspose2dSame, conv2d_same, tf_same_padding
from gankit.core.errors import RegistryError

SHAPE = (1, 28, 28)


def build_pair(width: int = 64, **generator_params: object):
    generator = GENERATORS.build(
        {"name": "dcgan28", "width": width, **generator_params}, image_shape=SHAPE
    )
    discriminator = DISCRIMINATORS.build({"name": "dcgan28", "width": width}, image_shape=SHAPE)
    return generator, discriminator


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out  # kernel + bias, as tf.layers builds them


def test_reference_parameter_counts_match_the_tensorflow_layers():
    # The tutorial's layers; tf.contrib.layers.batch_norm learns a shift (beta) but no scale.
    generator_layers = [
        100 * 3 * 3 * 512 + 3 * 3 * 512,  # dense z -> 3x3x512
        512,  # batch_norm beta
        conv(5, 512, 256) + 256,
        conv(5, 256, 128) + 128,
        conv(5, 128, 64) + 64,
        conv(5, 64, 1),  # 'valid' transposed conv to one channel, tanh
    ]
    discriminator_layers = [
        conv(5, 1, 64),
        conv(5, 64, 128) + 128,
        conv(5, 128, 256) + 256,
        conv(5, 256, 512) + 512,
        2 * 2 * 512 + 1,  # flatten 2x2x512 -> one logit
    ]
    generator, discriminator = build_pair()
    assert count(generator) == sum(generator_layers) == 4_769_217
    assert count(discriminator) == sum(discriminator_layers) == 4_306_305


def test_generator_maps_noise_to_images_in_range_and_discriminator_to_logits():
    generator, discriminator = build_pair(width=8)
    z = generator.sample_noise(5)
    assert z.shape == (5, 100) and z.min() >= -1 and z.max() <= 1
    images = generator(z)
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert discriminator(images).shape == (5, 1)


def test_width_scales_every_layer_and_normal_noise_is_available():
    generator, discriminator = build_pair(width=4, z_dim=16, noise="normal")
    assert generator.project.out_features == 3 * 3 * 32
    assert discriminator.classify.in_features == 32 * 2 * 2
    z = generator.sample_noise(4096)
    assert z.shape == (4096, 16)
    assert z.min() < -1.5 and z.max() > 1.5  # unbounded, unlike uniform noise


def test_batch_norm_follows_tf1_defaults():
    generator, discriminator = build_pair(width=4)
    norms = [
        m
        for m in [*generator.modules(), *discriminator.modules()]
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert len(norms) == 4 + 3
    for norm in norms:
        assert norm.eps == 1e-3 and norm.momentum == 0.1
        assert norm.weight is None and norm.bias is not None
    scaled, _ = build_pair(width=4, bn_scale=True)
    assert scaled.project_norm.weight is not None


def test_kernels_start_glorot_uniform_with_zero_biases():
    generator, _ = build_pair(width=8)
    layer = generator.upsample[0]
    fan_in = layer.weight.shape[1] * 25
    fan_out = layer.weight.shape[0] * 25
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert layer.weight.abs().max() <= bound
    assert layer.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize(
    ("size", "expected"), [(28, (1, 2)), (14, (1, 2)), (7, (2, 2)), (4, (1, 2))]
)
def test_tf_same_padding_is_asymmetric_like_tensorflow(size: int, expected: tuple[int, int]):
    assert tf_same_padding(size, 5, 2) == expected


def test_same_convolutions_align_like_tensorflow():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 7)
    layer = conv2d_same(3, 4, 7)
    expected = F.conv2d(F.pad(x, (2, 2, 2, 2)), layer[1].weight, layer[1].bias, stride=2)
    assert torch.allclose(layer(x), expected)

    up = ConvTranspose2dSame(3, 4)
    full = F.conv_transpose2d(x, up.weight, up.bias, stride=2)  # (2n + 3) wide
    assert up(x).shape[-2:] == (14, 14)
    assert torch.allclose(up(x), full[..., 1:15, 1:15], atol=1e-6)  # TF crops 1 before, 2 after


def test_sample_is_reproducible_in_eval_mode_and_restores_training_mode():
    generator, _ = build_pair(width=4)
    generator.train()
    first, second = generator.sample(6, seed=3), generator.sample(6, seed=3)
    assert torch.equal(first, second)
    assert not torch.equal(first, generator.sample(6, seed=4))
    assert generator.training
    generator.eval()
    with torch.no_grad():
        z = generator.sample_noise(6, generator=torch.Generator().manual_seed(3))
        assert torch.equal(generator(z), first)  # eval-mode output of the seeded noise


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(
        RegistryError, match=r"28x28 images but the dataset's images are \(3, 32, 32\)"
    ):
        GENERATORS.build({"name": "dcgan28"}, image_shape=(3, 32, 32))


def test_non_saturating_loss_is_sigmoid_cross_entropy_on_logits():
    loss = LOSSES.build({"name": "non_saturating"})
    real = torch.tensor([[2.0], [-1.0], [30.0], [-30.0]])
    fake = torch.tensor([[0.5], [-3.0], [40.0], [-40.0]])
    parts = loss.discriminator(Logits(real, fake))
    assert torch.allclose(
        parts["d_loss_real"], F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    )
    assert torch.allclose(
        parts["d_loss_fake"], F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    )

    def g_loss(logits):
        return loss.generator(Logits(None, logits))["g_loss"]

    assert torch.allclose(
        g_loss(fake), F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    )
    assert torch.isfinite(g_loss(torch.tensor([[-1e4]])))  # stable far from zero
    assert g_loss(fake.bfloat16()).dtype == torch.float32


def test_alternating_schedule_runs_d_then_g_steps():
    schedule = SCHEDULES.build({"name": "alternating", "d_steps": 1, "g_steps": 2})
    networks = [phase.network for phase in schedule.phases(0)]
    assert networks == ["discriminator", "generator", "generator"]
    other = SCHEDULES.build({"name": "alternating", "d_steps": 3, "g_steps": 1})
    assert [phase.network for phase in other.phases(7)] == ["discriminator"] * 3 + ["generator"]
    with pytest.raises(RegistryError, match="d_steps"):
        SCHEDULES.build({"name": "alternating", "d_steps": 0})
