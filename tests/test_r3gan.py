"""The R3GAN pair ('r3gan'): identity blocks at init, no normalization, grouped convs, the
variance scaling, bilinear resampling, shapes, conditioning, parameter counts, exports, and a
two-step training from the command line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gankit
from gankit.cli import main
from gankit.components.models.r3gan import (
    ACTIVATION_GAIN,
    R3GANDiscriminator,
    R3GANGenerator,
    Resample,
    ResidualBlock,
)
from gankit.config.registry import DISCRIMINATORS, GENERATORS
from gankit.core.errors import GankitError
from gankit.core.sizes import meta_state

from conftest import ROOT

TINY = {"width": 8, "cardinality": 4}
SHAPES = [(3, 16, 16), (3, 32, 32), (3, 64, 64), (1, 28, 28)]
EMOJI = ROOT.parent / "shared" / "data" / "emoji" / "google"
NORMS = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def pair(image_shape, **params):
    torch.manual_seed(0)
    spec = {"name": "r3gan", **TINY, **params}
    generator = GENERATORS.build(spec, image_shape=image_shape)
    d_spec = {k: v for k, v in spec.items() if k not in ("z_dim", "noise", "embed_dim", "output")}
    return generator, DISCRIMINATORS.build(d_spec, image_shape=image_shape)


def jiggle(module: nn.Module, seed: int = 1) -> None:
    """Move every weight off its initial value (the zero-initialised convs included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def block_parameters(channels: int, expansion: int, groups: int) -> int:
    """Weights of one block: 1x1 expand, grouped 3x3, 1x1 project, and two activation biases."""
    inner = channels * expansion
    return 2 * channels * inner + inner * (inner // groups) * 9 + 2 * inner


def test_a_fresh_block_is_exactly_the_identity_and_learns_away_from_it():
    torch.manual_seed(0)
    block = ResidualBlock(8, expansion=2, cardinality=4, total_blocks=6)
    x = torch.randn(3, 8, 5, 5)
    assert torch.equal(block(x), x)
    assert torch.count_nonzero(block.project.weight) == 0
    block(x).square().sum().backward()
    assert block.project.weight.grad.abs().sum() > 0  # the zero conv is where learning starts
    with torch.no_grad():
        block.project.weight.add_(block.project.weight.grad)
    assert not torch.equal(block(x), x)


def test_fresh_networks_are_their_transitions_alone():
    """Every block of a fresh G is the identity: removing them all changes nothing."""
    generator, _ = pair((3, 32, 32), blocks=3)
    z = generator.sample_noise(2)
    with torch.no_grad():
        full = generator(z)
        for stage in generator.stages:
            for index, layer in enumerate(stage):
                if isinstance(layer, ResidualBlock):
                    stage[index] = nn.Identity()
        assert torch.equal(generator(z), full)


def test_the_variance_scaling_follows_the_number_of_blocks():
    """Fix-up init: the first two convs start at gain sqrt(2 / 1.04) * L^(-1/4) over
    sqrt(fan_in), L the network's blocks; 16 times the blocks halves their weights' scale."""
    torch.manual_seed(0)
    for total in (1, 16):
        block = ResidualBlock(64, expansion=2, cardinality=8, total_blocks=total)
        gain = ACTIVATION_GAIN * total**-0.25
        assert block.expand.weight.std().item() == pytest.approx(gain / math.sqrt(64), rel=0.05)
        fan_in = (128 // 8) * 9
        assert block.grouped.weight.std().item() == pytest.approx(
            gain / math.sqrt(fan_in), rel=0.05
        )
        assert torch.count_nonzero(block.project.weight) == 0
        assert torch.count_nonzero(block.act1.bias) == 0
    generator, discriminator = pair((3, 32, 32), blocks=3)
    blocks = [m for m in generator.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 3 * 4  # 4x4, 8x8, 16x16, 32x32
    assert len([m for m in discriminator.modules() if isinstance(m, ResidualBlock)]) == 12


def test_no_normalization_anywhere_and_grouped_convs_with_cardinality_groups():
    generator, discriminator = pair((3, 32, 32), width=16, cardinality=8)
    for network in (generator, discriminator):
        assert not [m for m in network.modules() if isinstance(m, NORMS)]
        assert not [n for n, _ in network.named_parameters() if "parametrizations" in n]
        blocks = [m for m in network.modules() if isinstance(m, ResidualBlock)]
        assert blocks
        for block in blocks:
            layers = [block.expand, block.grouped, block.project]
            assert [c.kernel_size for c in layers] == [(1, 1), (3, 3), (1, 1)]
            assert [c.groups for c in layers] == [1, 8, 1]
            assert (block.expand.out_channels, block.grouped.out_channels) == (32, 32)
            assert all(c.bias is None for c in layers)  # the bias sits in the activation
        convs = [m for m in network.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert all(layer.bias is None for layer in convs)


def test_activations_are_a_learned_bias_then_leaky_relu_after_the_first_two_convs():
    torch.manual_seed(0)
    block = ResidualBlock(4, expansion=2, cardinality=2, total_blocks=1)
    with torch.no_grad():
        block.act1.bias.normal_()
        block.act2.bias.normal_()
        block.project.weight.normal_()
    x = torch.randn(2, 4, 3, 3)
    h = F.leaky_relu(block.expand(x) + block.act1.bias.view(1, -1, 1, 1), 0.2)
    h = F.leaky_relu(block.grouped(h) + block.act2.bias.view(1, -1, 1, 1), 0.2)
    torch.testing.assert_close(block(x), x + block.project(h))


def test_above_32_pixels_each_stage_halves_the_channels_and_the_groups():
    generator, discriminator = pair((3, 64, 64), width=16, cardinality=8)
    last = next(m for m in generator.stages[-1] if isinstance(m, ResidualBlock))
    assert (last.expand.in_channels, last.grouped.groups) == (8, 4)
    first = next(m for m in discriminator.stages[0] if isinstance(m, ResidualBlock))
    assert (first.expand.in_channels, first.grouped.groups) == (8, 4)
    assert generator.stages[-1][0].linear.out_channels == 8  # the transition's 1x1 conv
    assert discriminator.stages[0][-1].linear.out_channels == 16


def test_resampling_is_bilinear_inside_the_image():
    """The authors' [1, 3, 3, 1] filter: bilinear up (half-pixel centres) and antialiased
    bilinear down, but for the outermost row and column (zero padding, as upfirdn2d)."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    up = Resample(3, up=True).double()(x)
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], bilinear[..., 1:-1, 1:-1])
    down = Resample(3, up=False).double()(x)
    halved = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    torch.testing.assert_close(down[..., 1:-1, 1:-1], halved[..., 1:-1, 1:-1])
    constant = torch.ones(1, 1, 8, 8)
    assert torch.equal(Resample(1, up=True)(constant)[..., 1:-1, 1:-1], torch.ones(1, 1, 14, 14))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_shapes(shape):
    generator, discriminator = pair(shape)
    images = generator.sample(4, seed=0)
    assert images.shape == (4, *shape) and torch.isfinite(images).all()
    logits = discriminator(images)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    side = 7 if shape[-1] == 28 else 4  # MNIST: a 7x7 basis, 7 -> 14 -> 28
    assert generator.basis.basis.shape[-2:] == (side, side)
    assert discriminator.basis.basis.kernel_size == (side, side)
    assert (
        len(generator.stages) == len(discriminator.stages) == int(math.log2(shape[-1] / side)) + 1
    )


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_any_channel_count_from_one_to_four(channels):
    generator, discriminator = pair((channels, 16, 16))
    assert discriminator(generator.sample(2, seed=0)).shape == (2, 1)


@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 48, 48), (3, 512, 512), (5, 32, 32), (3, 32, 16)])
def test_other_image_shapes_are_refused_naming_the_sizes(shape):
    for registry in (GENERATORS, DISCRIMINATORS):
        with pytest.raises(GankitError, match=r"side 16, 32, 64, 128, 256 or 28 with 1 to 4"):
            registry.build({"name": "r3gan", **TINY}, image_shape=shape)


def test_groups_that_do_not_divide_the_channels_are_refused():
    with pytest.raises(GankitError, match="cardinality 3"):
        GENERATORS.build({"name": "r3gan", "width": 8, "cardinality": 3}, image_shape=(3, 16, 16))
    with pytest.raises(GankitError, match="lower width or expansion"):
        GENERATORS.build({"name": "r3gan", "width": 8192, "expansion": 2}, image_shape=(3, 16, 16))
    # more groups than inner channels: one per channel (depthwise)
    generator = GENERATORS.build({"name": "r3gan", "width": 4}, image_shape=(3, 16, 16))
    assert {m.grouped.groups for m in generator.modules() if isinstance(m, ResidualBlock)} == {8}


def test_conditional_networks_take_labels_and_answer_per_label():
    generator, discriminator = pair((3, 32, 32), num_classes=5, embed_dim=6)
    jiggle(generator)
    jiggle(discriminator)
    z = generator.sample_noise(1).expand(5, -1)
    with torch.no_grad():
        images = generator(z, torch.arange(5))
        assert images.shape == (5, 3, 32, 32)
        assert all(not torch.equal(images[0], images[k]) for k in range(1, 5))
        same = images[:1].expand(5, -1, -1, -1)
        logits = discriminator(same, torch.arange(5))
    assert logits.shape == (5, 1) and logits.unique().numel() == 5
    assert generator.basis.linear.in_features == generator.z_dim + 6
    assert discriminator.project.embed.weight.shape == (5, 8)  # the 4x4 stage's width
    with pytest.raises(ValueError, match="class-conditional"):
        generator(z)
    with pytest.raises(ValueError, match="class-conditional"):
        discriminator(same)
    unconditional, critic = pair((3, 16, 16))
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(unconditional.sample_noise(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        critic(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]))


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_grows_with_blocks_and_width_as_the_blocks_say():
    shape = (3, 32, 32)  # four stages, all at full width
    for blocks in (1, 2):
        g1, d1 = pair(shape, blocks=blocks, width=16, cardinality=4)
        g2, d2 = pair(shape, blocks=blocks + 1, width=16, cardinality=4)
        added = 4 * block_parameters(16, 2, 4)
        assert count(g2) - count(g1) == added and count(d2) - count(d1) == added
    narrow, _ = pair(shape, width=16, cardinality=4)
    wide, _ = pair(shape, width=32, cardinality=4)
    blocks_only = [
        sum(count(m) for m in g.modules() if isinstance(m, ResidualBlock)) for g in (narrow, wide)
    ]
    assert blocks_only == [8 * block_parameters(16, 2, 4), 8 * block_parameters(32, 2, 4)]
    assert count(wide) > 3 * count(narrow)  # the blocks grow as width^2
    more_groups, _ = pair(shape, width=16, cardinality=8)
    assert count(more_groups) < count(narrow)  # grouping saves the 3x3 conv's weights


def test_the_defaults_are_the_papers_cifar10_preset():
    generator = R3GANGenerator()
    discriminator = R3GANDiscriminator()
    assert (generator.z_dim, generator.noise) == (64, "normal")
    block = next(m for m in generator.modules() if isinstance(m, ResidualBlock))
    assert (block.expand.in_channels, block.expand.out_channels, block.grouped.groups) == (
        768,
        1536,
        96,
    )
    assert len(generator.stages) == len(discriminator.stages) == 4
    # about 20M parameters each, as the paper's CIFAR-10 models
    assert 19e6 < count(generator) < 22e6 and 19e6 < count(discriminator) < 22e6


def test_meta_builds_match_real_ones():
    spec = {"name": "r3gan", **TINY, "num_classes": 3}
    for registry in (GENERATORS, DISCRIMINATORS):
        state = meta_state(lambda r=registry: r.build(spec, image_shape=(1, 28, 28)))
        real = registry.build(spec, image_shape=(1, 28, 28)).state_dict()
        assert state == {k: (tuple(v.shape), v.dtype) for k, v in real.items()}


@pytest.mark.parametrize("classes", [0, 4])
def test_export_and_load_give_bit_identical_samples(tmp_path, classes):
    generator, _ = pair((3, 32, 32), num_classes=classes, output="tanh")
    jiggle(generator)
    folder = gankit.save_model(generator, tmp_path / "generator")
    config = json.loads((folder / "config.json").read_text())
    assert config["name"] == "r3gan" and config["params"]["output"] == "tanh"
    loaded = gankit.load_generator(folder)
    assert isinstance(loaded, R3GANGenerator) and not loaded.training
    labels = [0, 1, 2, 3] if classes else None
    expected = generator.sample(4, seed=3, labels=labels)
    assert torch.equal(loaded.sample(4, seed=3, labels=labels), expected)
    assert expected.abs().max() < 1  # tanh


def test_gradients_of_the_penalties_reach_every_weight():
    """R1/R2 need the double backward of every layer (the resampling convs included)."""
    _, discriminator = pair((3, 16, 16), num_classes=2)
    penalty = gankit.REGULARIZERS.build({"name": "r1"}).penalty(
        lambda x: discriminator(x, torch.tensor([0, 1, 0, 1])),
        torch.rand(4, 3, 16, 16),
        torch.rand(4, 3, 16, 16),
    )
    penalty.backward()
    assert torch.isfinite(penalty)
    assert all(p.grad is not None for p in discriminator.parameters())


def emoji_folder(folder: Path, count: int = 16) -> Path:
    """`count` images in two class subfolders: real emoji when the shared set is here, else
    random RGB PNGs."""
    if EMOJI.is_dir():
        for name in ("smileys_emotion", "animals_nature"):
            (folder / name).mkdir(parents=True)
            for path in sorted((EMOJI / name).glob("*.png"))[: count // 2]:
                shutil.copy(path, folder / name / path.name)
        return folder
    rng = np.random.default_rng(0)
    for index in range(count):
        path = folder / f"class_{index % 2}" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return folder


def test_two_steps_of_the_emoji_recipe_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    overrides = [
        f"data.root={emoji_folder(tmp_path / 'emoji')}",
        "data.num_workers=0",
        "data.batch_size=4",
        "generator.width=8",
        "generator.cardinality=4",
        "discriminator.width=8",
        "discriminator.cardinality=4",
        "train.steps=2",
        "train.log_every=1",
        "train.progress=false",
        f"output_dir={run}",
    ]
    assert main(["train", "r3gan_emoji32", *overrides]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "d_loss" in r][-1] == 2
    last = [r for r in records if "d_loss" in r][-1]
    assert all(math.isfinite(last[key]) for key in ("d_loss", "g_loss", "d_r1", "d_r2"))
    generator = gankit.load_generator(run / "export" / "generator")
    assert isinstance(generator, R3GANGenerator)
    assert generator.sample(2, seed=0).shape == (2, 3, 32, 32)
    assert (run / "export" / "discriminator" / "model.safetensors").is_file()
