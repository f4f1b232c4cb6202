"""The StyleGAN2 pair ('stylegan2'): its layers against independent computations (demodulation,
FIR resampling, equalized learning rate, minibatch stddev), style mixing, w_avg and truncation
in w, noise modes, shapes, class conditioning, export, and a short training run from the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gankit
from gankit import DISCRIMINATORS, GENERATORS
from gankit.cli import main
from gankit.components.models.stylegan2 import (
    DiscriminatorBlock,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    channel_counts,
)
from gankit.components.models.stylegan2_layers import (
    EqualConv2d,
    EqualLinear,
    StyleConv,
    downsample,
    fir_filter,
    minibatch_stddev,
    modulated_conv2d,
    modulated_weights,
    upsample,
)
from gankit.core.errors import RegistryError
from gankit.outputs.files import render_samples
from gankit.outputs.walk import walk_frames, walk_latents

from conftest import ROOT

EMOJI = Path(__file__).resolve().parents[2] / "shared" / "data" / "emoji" / "google"
TINY = {"width": 4, "max_channels": 8, "z_dim": 8, "w_dim": 8, "mapping_layers": 2}
TINY_D = {"width": 4, "max_channels": 8}


def build_g(shape=(3, 16, 16), **extra) -> StyleGAN2Generator:
    return GENERATORS.build({"name": "stylegan2", **TINY, **extra}, image_shape=shape)


def build_d(shape=(3, 16, 16), **extra) -> StyleGAN2Discriminator:
    return DISCRIMINATORS.build({"name": "stylegan2", **TINY_D, **extra}, image_shape=shape)


# ---- layers ------------------------------------------------------------------------------------


def test_demodulation_gives_each_output_channel_unit_norm_per_sample():
    torch.manual_seed(0)
    weight, styles = torch.randn(5, 3, 3, 3), torch.rand(4, 3) * 3 + 0.1
    demodulated = modulated_weights(weight, styles, demodulate=True)
    assert demodulated.shape == (4, 5, 3, 3, 3)
    norms = demodulated.square().sum(dim=[2, 3, 4]).sqrt()
    torch.testing.assert_close(norms, torch.ones(4, 5))
    modulated = modulated_weights(weight, styles, demodulate=False)
    torch.testing.assert_close(modulated[2, :, 1], weight[:, 1] * styles[2, 1])
    # so the output does not change when a sample's styles are scaled as a whole
    x = torch.randn(4, 3, 6, 6)
    out = modulated_conv2d(x, weight, styles)
    torch.testing.assert_close(modulated_conv2d(x, weight, styles * 7), out)


@pytest.mark.parametrize("up", [False, True])
def test_the_grouped_convolution_is_one_convolution_per_sample(up):
    torch.manual_seed(1)
    kernel = fir_filter()
    weight, styles, x = torch.randn(5, 3, 3, 3), torch.randn(4, 3), torch.randn(4, 3, 6, 6)
    out = modulated_conv2d(x, weight, styles, up=up, kernel=kernel)
    assert out.shape == (4, 5, 12 if up else 6, 12 if up else 6)
    weights = modulated_weights(weight, styles, demodulate=True)
    for index in range(4):
        one = x[index : index + 1]
        if up:  # transposed conv then the FIR filter (gain 4), padded back to twice the size
            expected = F.conv_transpose2d(one, weights[index].transpose(0, 1), stride=2)
            expected = upfirdn_numpy(expected[0].numpy(), kernel.numpy() * 4, 1, 1, 1)[None]
            expected = torch.from_numpy(expected)
        else:
            expected = F.conv2d(one, weights[index], padding=1)
        torch.testing.assert_close(out[index : index + 1], expected, atol=1e-5, rtol=1e-5)


def upfirdn_numpy(x: np.ndarray, kernel: np.ndarray, up: int, pad: tuple | int, down: int):
    """Upsample (zeros after each pixel), pad, convolve, keep every `down`-th pixel, with plain
    loops over (C, H, W) arrays: the definition of FIR resampling."""
    before, after = (pad, pad) if isinstance(pad, int) else pad
    channels, height, width = x.shape
    upsampled = np.zeros((channels, height * up, width * up))
    upsampled[:, ::up, ::up] = x
    padded = np.pad(upsampled, [(0, 0), (before, after), (before, after)])
    taps = kernel.shape[0]
    size = padded.shape[1] - taps + 1
    flipped = kernel[::-1, ::-1]
    out = np.zeros((channels, size, size))
    for row in range(size):
        for column in range(size):
            window = padded[:, row : row + taps, column : column + taps]
            out[:, row, column] = (window * flipped).sum(axis=(1, 2))
    return out[:, ::down, ::down].astype(np.float32)


def test_fir_upsampling_and_downsampling_match_the_definition():
    torch.manual_seed(2)
    kernel = fir_filter()
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    torch.testing.assert_close(kernel, torch.from_numpy(np.outer(taps, taps) / 64).float())
    x = torch.randn(1, 2, 5, 5)
    up = upsample(x, kernel)
    assert up.shape == (1, 2, 10, 10)
    expected = upfirdn_numpy(x[0].numpy(), kernel.numpy() * 4, up=2, pad=(2, 1), down=1)
    torch.testing.assert_close(up[0], torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
    y = torch.randn(1, 2, 8, 8)
    down = downsample(y, kernel)
    assert down.shape == (1, 2, 4, 4)
    expected = upfirdn_numpy(y[0].numpy(), kernel.numpy(), up=1, pad=1, down=2)
    torch.testing.assert_close(down[0], torch.from_numpy(expected), atol=1e-5, rtol=1e-5)


def test_fir_resampling_of_constants_and_impulses():
    kernel = fir_filter()
    up = upsample(torch.full((1, 1, 6, 6), 2.5), kernel)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full((1, 1, 8, 8), 2.5))
    down = downsample(torch.full((1, 1, 8, 8), 2.5), kernel)
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full((1, 1, 2, 2), 2.5))
    impulse = torch.zeros(1, 1, 6, 6)
    impulse[0, 0, 2, 3] = 1
    # the impulse becomes the filter (times 4, the zeros' gain) around pixel (4, 6)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    expected = torch.zeros(12, 12)
    expected[3:7, 5:9] = 4 * torch.outer(taps, taps)
    torch.testing.assert_close(upsample(impulse, kernel)[0, 0], expected)
    # down(up(x)) is x filtered by the 3-tap [3, 10, 3] / 16 in each direction
    three = torch.tensor([3.0, 10.0, 3.0]) / 16
    expected = torch.zeros(6, 6)
    expected[1:4, 2:5] = torch.outer(three, three)
    torch.testing.assert_close(downsample(upsample(impulse, kernel), kernel)[0, 0], expected)


def test_equalized_learning_rate_scales_the_stored_weights_at_run_time():
    torch.manual_seed(3)
    linear = EqualLinear(400, 300)
    assert abs(linear.weight.std() - 1) < 0.01 and abs(linear.weight.mean()) < 0.01
    x = torch.randn(2, 400)
    torch.testing.assert_close(linear(x), x @ (linear.weight / 20).T + linear.bias)
    conv = EqualConv2d(16, 32, 3, activate=False)
    assert abs(conv.weight.std() - 1) < 0.03
    images = torch.randn(2, 16, 5, 5)
    expected = F.conv2d(images, conv.weight / 12, conv.bias, padding=1)
    torch.testing.assert_close(conv(images), expected)
    activated = EqualConv2d(16, 32, 3, gain=0.5)
    activated.load_state_dict(conv.state_dict())
    torch.testing.assert_close(activated(images), F.leaky_relu(expected, 0.2) * 2**0.5 * 0.5)


def test_the_mapping_network_learns_a_hundred_times_slower():
    torch.manual_seed(4)
    generator = GENERATORS.build(
        {"name": "stylegan2", **TINY, "z_dim": 256, "w_dim": 256}, image_shape=(3, 8, 8)
    )
    layers = list(generator.mapping.layers)
    assert len(layers) == 2 and all(layer.lr_mul == 0.01 for layer in layers)
    first = layers[0]
    assert abs(first.weight.std() - 100) < 1  # stored N(0, 1) / 0.01
    x = torch.randn(3, 256)
    expected = F.leaky_relu(x @ (first.weight * 0.01 / 16).T + first.bias * 0.01, 0.2) * 2**0.5
    torch.testing.assert_close(first(x), expected)
    # the stored weights' gradients are the effective weights' times lr_mul / sqrt(fan_in), so
    # Adam moves the effective weights 100 times less than an ordinary layer's
    effective = (first.weight.detach() * 0.01 / 16).requires_grad_(True)
    bias = (first.bias.detach() * 0.01).requires_grad_(True)
    (F.leaky_relu(F.linear(x, effective, bias), 0.2) * 2**0.5).sum().backward()
    first(x).sum().backward()
    torch.testing.assert_close(first.weight.grad, effective.grad * 0.01 / 16)
    torch.testing.assert_close(first.bias.grad, bias.grad * 0.01)
    z = torch.randn(5, 256) * 3
    normalised = z / z.square().mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(generator.mapping(z, None), generator.mapping(normalised, None))


def test_the_style_affine_starts_at_bias_one_and_noise_at_strength_zero():
    layer = StyleConv(4, 6, 8, resolution=8, up=False)
    assert (layer.affine.bias == 1).all() and layer.noise_strength.item() == 0
    assert layer.noise_const.shape == (8, 8)


def test_minibatch_stddev_appends_the_groups_mean_std():
    torch.manual_seed(5)
    x = torch.randn(8, 3, 4, 4)
    out = minibatch_stddev(x, group_size=4)
    assert out.shape == (8, 4, 4, 4) and torch.equal(out[:, :3], x)
    values = x.numpy()
    for sample in range(8):
        group = [sample % 2 + 2 * k for k in range(4)]  # samples j, j + 2, j + 4, j + 6
        expected = np.sqrt(values[group].var(axis=0) + 1e-8).mean()
        assert np.allclose(out[sample, 3].numpy(), expected, atol=1e-6)
    six = minibatch_stddev(torch.randn(6, 3, 4, 4), group_size=4)  # groups of 3
    assert six.shape == (6, 4, 4, 4) and torch.equal(six[0, 3], six[2, 3])


def test_the_residual_block_sums_both_downsampled_paths_over_root_two():
    torch.manual_seed(13)
    block = DiscriminatorBlock(3, 5)
    with torch.no_grad():
        block.conv1.bias.normal_()
        x = torch.randn(2, 3, 8, 8)
        kernel = fir_filter().numpy()
        hidden = block.conv0(x)
        filtered = torch.from_numpy(
            np.stack([upfirdn_numpy(h.numpy(), kernel, 1, 2, 1) for h in hidden])
        )
        main = F.conv2d(filtered, block.conv1.weight / 27**0.5, block.conv1.bias, stride=2)
        main = F.leaky_relu(main, 0.2) * 2**0.5
        halved = torch.from_numpy(np.stack([upfirdn_numpy(s.numpy(), kernel, 1, 1, 2) for s in x]))
        skip = F.conv2d(halved, block.skip.weight / 3**0.5)
        out = block(x)
    assert out.shape == (2, 5, 4, 4) and block.skip.bias is None
    torch.testing.assert_close(out, (main + skip) * 0.5**0.5, atol=1e-5, rtol=1e-5)


# ---- the generator ---------------------------------------------------------------------------


def affine_inputs(generator: StyleGAN2Generator) -> tuple[list, list]:
    """Hooks recording the w that each conv's and each toRGB's style layer reads, in call order."""
    convs, rgbs = [], []
    for module in generator.modules():
        if isinstance(module, StyleConv):
            module.affine.register_forward_hook(lambda m, args, out: convs.append(args[0]))
    for block in generator.blocks:
        block.to_rgb.affine.register_forward_hook(lambda m, args, out: rgbs.append(args[0]))
    return convs, rgbs


def test_style_mixing_switches_w_at_one_crossover_layer():
    torch.manual_seed(6)
    generator = build_g((3, 32, 32), mixing_prob=1.0).train()
    convs, rgbs = affine_inputs(generator)
    z = torch.randn(4, 8)
    crossovers = set()
    for _ in range(12):
        convs.clear()
        rgbs.clear()
        generator(z)
        own = generator.mapping(z, None)
        per_layer = [*convs, rgbs[-1]]  # the w of each of the num_ws layers
        assert len(per_layer) == generator.num_ws == 8
        same = [torch.allclose(w, own) for w in per_layer]
        crossover = same.index(False)
        assert 1 <= crossover < 8 and all(same[:crossover]) and not any(same[crossover:])
        assert all(torch.equal(w, per_layer[crossover]) for w in per_layer[crossover:])
        # each toRGB reads the w of the next block's first conv
        assert all(torch.equal(rgbs[k], convs[1 + 2 * k]) for k in range(3))
        crossovers.add(crossover)
    assert len(crossovers) > 2  # drawn at random
    for mode, prob in (("eval", 1.0), ("train", 0.0)):
        generator = build_g((3, 32, 32), mixing_prob=prob).train(mode == "train")
        convs, rgbs = affine_inputs(generator)
        generator(z)
        own = generator.mapping(z, None)
        assert all(torch.allclose(w, own) for w in [*convs, *rgbs]), mode


def test_the_skip_generator_sums_every_resolutions_rgb_upsampled():
    torch.manual_seed(14)
    generator = build_g((3, 16, 16)).eval()
    rgbs = []
    for block in generator.blocks:
        block.to_rgb.register_forward_hook(lambda m, args, out: rgbs.append(out[0].numpy()))
    with torch.no_grad():
        image = generator(torch.randn(1, 8))
    assert [rgb.shape for rgb in rgbs] == [(3, 4, 4), (3, 8, 8), (3, 16, 16)]
    kernel = fir_filter().numpy() * 4
    expected = rgbs[0]
    for rgb in rgbs[1:]:
        expected = upfirdn_numpy(expected, kernel, up=2, pad=(2, 1), down=1) + rgb
    torch.testing.assert_close(image[0], torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
    assert generator.const.shape == (8, 4, 4)


def test_training_tracks_w_avg_and_truncation_zero_gives_its_image():
    torch.manual_seed(7)
    generator = build_g(mixing_prob=0.0, w_avg_beta=0.9).train()
    assert torch.equal(generator.w_avg, torch.zeros(8))
    z = torch.randn(6, 8)
    generator(z)
    w = generator.mapping(z, None)
    torch.testing.assert_close(generator.w_avg, 0.1 * w.mean(0))
    generator(z)
    torch.testing.assert_close(generator.w_avg, 0.1 * w.mean(0) * (1 + 0.9))
    generator.eval()
    before = generator.w_avg.clone()
    with torch.no_grad():
        images = generator(torch.randn(3, 8), truncation=0.0)
        average = generator.synthesize(before.expand(1, generator.num_ws, -1))
    assert torch.equal(generator.w_avg, before)  # eval mode leaves it
    torch.testing.assert_close(images, average.expand(3, -1, -1, -1))
    # sample(truncation=psi) pulls w (not z) toward w_avg
    noise = generator.sample_noise(3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        w = generator.mapping(noise, None)
        ws = before.lerp(w, 0.5).unsqueeze(1).expand(-1, generator.num_ws, -1)
        expected = generator.synthesize(ws)
    torch.testing.assert_close(generator.sample(3, seed=2, truncation=0.5), expected)
    assert not torch.allclose(
        generator.sample(3, seed=2, truncation=0.5), generator.sample(3, seed=2)
    )


def test_latent_walks_truncate_in_w():
    torch.manual_seed(16)
    generator = build_g()
    generator.train()(generator.sample_noise(4))  # a w_avg away from 0
    frames = walk_frames(generator, walks=1, points=2, steps=2, seed=1, truncation=0.5)
    latents = walk_latents(generator, walks=1, points=2, steps=2, seed=1)
    with torch.no_grad():
        expected = generator.eval()(latents[1], truncation=0.5)
        in_z = generator(latents[1] * 0.5)
    assert (frames[1] == render_samples(expected)).all()
    assert not (frames[1] == render_samples(in_z)).all()


def test_noise_is_random_in_training_and_fixed_in_eval_mode():
    torch.manual_seed(8)
    generator = build_g(mixing_prob=0.0)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, StyleConv):
                module.noise_strength.fill_(0.5)
    z = torch.randn(2, 8)
    with torch.no_grad():
        generator.train()
        assert not torch.equal(generator(z), generator(z))
        generator.eval()
        const = generator(z)
        assert torch.equal(const, generator(z))
        assert torch.equal(const, generator(z, noise_mode="const"))
        assert not torch.equal(const, generator(z, noise_mode="none"))
        assert not torch.equal(generator(z, noise_mode="random"), const)
    with pytest.raises(ValueError, match="noise_mode must be one of random, const, none"):
        generator(z, noise_mode="fixed")


@pytest.mark.parametrize("shape", [(3, 16, 16), (3, 32, 32), (3, 64, 64), (1, 28, 28)])
def test_shapes_and_gradients(shape):
    torch.manual_seed(9)
    generator, discriminator = build_g(shape), build_d(shape)
    images = generator(generator.sample_noise(4))
    assert images.shape == (4, *shape) and torch.isfinite(images).all()
    logits = discriminator(images)
    assert logits.shape == (4, 1)
    (logits * torch.randn_like(logits)).sum().backward()
    for network in (generator, discriminator):
        for name, parameter in network.named_parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert generator.sample(2, seed=0).shape == (2, *shape)


def test_the_pair_runs_under_bf16_autocast_and_keeps_w_avg_in_float32():
    torch.manual_seed(15)
    generator, discriminator = build_g(num_classes=2).train(), build_d(num_classes=2)
    labels = torch.tensor([0, 1, 1, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = discriminator(generator(generator.sample_noise(4), labels), labels)
    assert torch.isfinite(logits).all() and generator.w_avg.dtype == torch.float32
    assert generator.w_avg.abs().sum() > 0


def test_28x28_is_made_at_32x32_and_cropped():
    torch.manual_seed(10)
    small, full = build_g((1, 28, 28)).eval(), build_g((1, 32, 32)).eval()
    full.load_state_dict(small.state_dict())  # the same network
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(z), full(z)[:, :, 2:-2, 2:-2])
    discriminator, same = build_d((1, 28, 28)), build_d((1, 32, 32))
    same.load_state_dict(discriminator.state_dict())
    images = torch.rand(2, 1, 28, 28)
    padded = F.pad(images, [2] * 4, mode="replicate")
    torch.testing.assert_close(discriminator(images), same(padded))


def test_channels_follow_width_and_the_cap():
    assert channel_counts(32, 64, 512) == {4: 512, 8: 256, 16: 128, 32: 64}
    assert channel_counts(64, 16, 32) == {4: 32, 8: 32, 16: 32, 32: 32, 64: 16}
    discriminator = build_d((3, 32, 32), width=2, max_channels=6)
    convs = [m.weight.shape[:2] for m in discriminator.modules() if isinstance(m, EqualConv2d)]
    assert convs[0] == (2, 3) and convs[-1] == (6, 7)  # fromRGB; the 4x4 conv after mbstd


@pytest.mark.parametrize("shape", [(3, 4, 4), (3, 48, 48), (3, 32, 64), (5, 32, 32), (32, 32)])
def test_sizes_it_cannot_make_are_refused_clearly(shape):
    for cls in (StyleGAN2Generator, StyleGAN2Discriminator):
        with pytest.raises(ValueError, match=r"data\.size") as error:
            cls(width=4, image_shape=shape)
        assert str(tuple(shape)) in str(error.value) and "'stylegan2'" in str(error.value)
    with pytest.raises(RegistryError, match="mixing_prob"):
        build_g(mixing_prob=1.5)


def test_conditional_pair_depends_on_the_labels():
    torch.manual_seed(11)
    generator = build_g(num_classes=5).eval()
    discriminator = build_d(num_classes=5)
    z = generator.sample_noise(4)
    zeros, threes = torch.zeros(4, dtype=torch.long), torch.full((4,), 3)
    images = generator(z, zeros)
    assert not torch.allclose(images, generator(z, threes))
    assert not torch.allclose(discriminator(images, zeros), discriminator(images, threes))
    with pytest.raises(ValueError, match="pass labels"):
        generator(z)
    with torch.no_grad():  # the label embedding is normalised, like z, before the mapping
        mapped = generator.mapping(z, threes)
        generator.mapping.embed.weight.mul_(5)
        generator.mapping.embed.bias.mul_(5)
        torch.testing.assert_close(generator.mapping(z, threes), mapped)
    with pytest.raises(ValueError, match="pass labels"):
        discriminator(images)
    generator.train()
    logits = discriminator(generator(z, zeros), zeros)
    logits.sum().backward()
    for network in (generator, discriminator):
        assert all(p.grad is not None for p in network.parameters())
    assert torch.equal(generator.sample(4, seed=1, labels=2), generator.sample(4, seed=1, labels=2))


def test_export_round_trip_keeps_w_avg_and_samples_bit_for_bit(tmp_path):
    torch.manual_seed(12)
    generator = build_g(num_classes=3)
    generator.train()
    for _ in range(3):
        generator(generator.sample_noise(4), torch.arange(4) % 3)
    assert generator.w_avg.abs().sum() > 0
    gankit.save_model(generator, tmp_path / "g")
    loaded = gankit.load_generator(tmp_path / "g")
    assert type(loaded) is StyleGAN2Generator
    assert torch.equal(loaded.w_avg, generator.w_avg)
    for psi in (1.0, 0.6):
        expected = generator.sample(5, seed=3, labels=[0, 1, 2, 0, 1], truncation=psi)
        assert torch.equal(
            loaded.sample(5, seed=3, labels=[0, 1, 2, 0, 1], truncation=psi), expected
        )


# ---- training ----------------------------------------------------------------------------------


def emoji_folder(root: Path) -> Path:
    """Eight real emoji PNGs in two class folders."""
    for category in ("smileys_emotion", "animals_nature"):
        sources = sorted((EMOJI / category).glob("*.png"))[:4]
        assert len(sources) == 4, f"emoji PNGs missing in {EMOJI}"
        (root / category).mkdir(parents=True)
        for source in sources:
            (root / category / source.name).write_bytes(source.read_bytes())
    return root


def test_two_training_steps_from_the_cli_train_and_export(tmp_path):
    run = tmp_path / "run"
    overrides = [
        f"data.root={emoji_folder(tmp_path / 'emoji')}",
        "data.size=16",
        "data.batch_size=4",
        "data.num_workers=0",
        *(f"generator.{key}={value}" for key, value in TINY.items()),
        *(f"discriminator.{key}={value}" for key, value in TINY_D.items()),
        "regularizer.every=1",
        "regularizers=[{name: path_length, weight: 2.0, every: 1}]",
        "train.steps=2",
        "train.log_every=1",
        "train.sample_every=2",
        "train.n_samples=4",
        "train.progress=false",
        "eval.every=0",
        f"output_dir={run}",
    ]
    assert main(["train", str(ROOT / "recipes" / "stylegan2_emoji32.yaml"), *overrides]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in records)
    assert all(math.isfinite(r["d_r1"]) and math.isfinite(r["g_path_length"]) for r in records)
    generator = gankit.load_generator(run / "export" / "generator")
    assert type(generator) is StyleGAN2Generator and generator.w_avg.abs().sum() > 0
    assert generator.sample(2, seed=0, truncation=0.7).shape == (2, 3, 16, 16)


def test_path_length_is_measured_in_w_as_stylegan2_does():
    torch.manual_seed(0)
    generator = build_g().eval()  # fixed noise inputs, no mixing: the same images each call
    regularizer = gankit.REGULARIZERS.build({"name": "path_length", "batch_shrink": 1})
    z = torch.randn(4, TINY["z_dim"])

    def generate(z, return_latents=False):
        return generator(z, return_latents=return_latents)

    torch.manual_seed(1)
    penalty = regularizer.penalty(generate, z)

    torch.manual_seed(1)  # the same image-space noise y
    images, ws = generator(z.clone().requires_grad_(True), return_latents=True)
    assert ws.shape == (4, generator.num_ws, TINY["w_dim"])
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (in_w,) = torch.autograd.grad((images * noise).sum(), ws, retain_graph=True)
    lengths = in_w.square().sum(2).mean(1).sqrt()  # the root of the mean over layers
    mean = 0.01 * lengths.mean()  # the moving mean after its first update from 0
    assert regularizer.mean.item() == pytest.approx(mean.item(), rel=1e-5)
    assert penalty.item() == pytest.approx(2.0 * (lengths - mean).square().mean().item(), rel=1e-5)
    z_path = z.clone().requires_grad_(True)  # what a measurement in z would have given
    (in_z,) = torch.autograd.grad((generator(z_path) * noise).sum(), z_path)
    assert not torch.allclose(in_z.norm(dim=1), lengths, rtol=0.05)
