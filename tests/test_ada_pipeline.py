"""StyleGAN2-ADA's pipeline (`augment: {name: ada}`): each operation alone (differentiable,
within its range, the identity at p = 0, drawn the same after a resume and across processes),
the presets, the one geometric resampling, the colour matrix, and a short run from the command
line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gankit import AUGMENTATIONS
from gankit.cli import main
from gankit.components.ada import COLOR, GEOMETRIC, OPERATIONS
from gankit.components.augment import Randomness
from gankit.config.recipe import load_recipe
from gankit.core.errors import RecipeError

from conftest import REFERENCE_RECIPE, TINY

# StyleGAN2-ADA's train.py, augpipe_specs: the operations each preset turns on
BLIT, GEOM = {"xflip", "rotate90", "xint"}, {"scale", "rotate", "aniso", "xfrac"}
COLOUR = {"brightness", "contrast", "lumaflip", "hue", "saturation"}
PRESETS = {
    "blit": BLIT,
    "geom": GEOM,
    "color": COLOUR,
    "filter": {"imgfilter"},
    "noise": {"noise"},
    "cutout": {"cutout"},
    "bg": BLIT | GEOM,
    "bgc": BLIT | GEOM | COLOUR,
    "bgcf": BLIT | GEOM | COLOUR | {"imgfilter"},
    "bgcfn": BLIT | GEOM | COLOUR | {"imgfilter", "noise"},
    "bgcfnc": BLIT | GEOM | COLOUR | {"imgfilter", "noise", "cutout"},
}

# The largest normal number the draws give: 24-bit uniforms through Box-Muller.
Z = math.sqrt(-2 * math.log(2**-24))
# How far outside [-1, 1] each operation may take an image in [-1, 1]. The reference clamps
# nothing: the resampler's wavelet rings a little past the input's range (measured below 1.3
# here), the colour operations are affine maps of the widest draw (contrast 2**(0.5 Z), the
# saturated chroma around the luma 2**Z, a rotation or reflection about the luma axis at most
# sqrt(3)), the filter amplifies a band by up to 2**Z, the noise adds |N| x 0.1 x N.
RANGE = {
    **dict.fromkeys(GEOMETRIC, 1.5),
    "brightness": 1 + 0.2 * Z,
    "contrast": 2 ** (0.5 * Z),
    "lumaflip": math.sqrt(3),
    "hue": math.sqrt(3),
    "saturation": 1 + 2 * 2**Z,
    "imgfilter": 2**Z,
    "noise": 1 + 0.1 * Z * Z,
    "cutout": 1.0,
}


def uniform_for(count: int, step: int = 0, process: int = 0):
    randomness = Randomness(0, torch.tensor(step), lambda n: process * n)
    randomness.start()
    return randomness.for_batch(count)


def alone(op: str, p: float = 1.0, **settings):
    """The pipeline with only `op` on, at multiplier 1."""
    spec = {"name": "ada", "p": p, "adaptive": False, **dict.fromkeys(OPERATIONS, 0.0)}
    return AUGMENTATIONS.build({**spec, op: 1.0, **settings})


def smooth_images(count: int = 8, channels: int = 3, side: int = 16) -> torch.Tensor:
    """Images in [-1, 1] with little energy near the Nyquist frequency (photos, not noise)."""
    generator = torch.Generator().manual_seed(1)
    noise = torch.rand(count, channels, side + 4, side + 4, generator=generator)
    return torch.nn.functional.avg_pool2d(noise * 2 - 1, 5, 1) * 2


@pytest.mark.parametrize("op", OPERATIONS)
def test_each_operation_alone_is_differentiable_bounded_and_identity_at_p_zero(op):
    images = smooth_images().clamp(-1, 1).requires_grad_()
    out = alone(op)(images, uniform_for(8))
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert not torch.equal(out, images)
    assert out.abs().max() <= RANGE[op]
    (out * torch.linspace(-1, 2, out.numel()).view(out.shape)).sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    still = images.detach()
    assert torch.equal(alone(op, p=0.0)(still, uniform_for(8)), still)  # bit for bit


@pytest.mark.parametrize("op", OPERATIONS)
def test_each_operation_draws_the_same_on_resume_and_across_processes(op):
    images = smooth_images()
    augment = alone(op)
    at_step_3 = augment(images, uniform_for(8, step=3))
    assert torch.equal(at_step_3, alone(op)(images, uniform_for(8, step=3)))  # a resumed run
    assert not torch.equal(at_step_3, augment(images, uniform_for(8, step=4)))
    halves = [augment(images[:4], uniform_for(4, step=3, process=0))]
    halves.append(augment(images[4:], uniform_for(4, step=3, process=1)))
    # the same draws; only a matrix product's rounding may depend on the batch's size
    torch.testing.assert_close(torch.cat(halves), at_step_3, rtol=0, atol=1e-6)


def test_each_preset_turns_on_exactly_its_operations_and_settings_override_it():
    for preset, ops in PRESETS.items():
        augment = AUGMENTATIONS.build({"name": "ada", "preset": preset})
        assert set(augment.pipeline.on) == ops, preset
    assert set(AUGMENTATIONS.build({"name": "ada"}).pipeline.on) == PRESETS["bgc"]
    tuned = AUGMENTATIONS.build({"name": "ada", "preset": "blit", "xflip": 0, "cutout": 0.5})
    assert tuned.pipeline.on == ("rotate90", "xint", "cutout")
    assert tuned.pipeline.multipliers["cutout"] == 0.5
    assert set(tuned.state_dict()) == {"p", "sign_sum", "count", "observed"}


def test_the_multiplier_scales_the_probability_per_image():
    images = torch.full((256, 1, 4, 4), 0.5)
    cut = alone("cutout", p=0.5, cutout=0.5, cutout_size=1.0)(images, uniform_for(256))
    share = float((cut == 0).flatten(1).any(1).float().mean())
    assert 0.15 < share < 0.35  # p x multiplier = 0.25 of the images


def test_geometric_blits_move_whole_pixels_through_one_resampling():
    images = smooth_images(count=16, side=16)
    flipped = alone("xflip")(images, uniform_for(16))
    dihedral = alone("xflip", rotate90=1.0)(images, uniform_for(16))
    flips = 0
    for out, image, turned in zip(flipped, images, dihedral, strict=True):
        # the wavelet is not symmetric: a mirrored image differs by a little resampling error
        if torch.equal(out, image):
            continue
        assert (out - image.flip(2)).abs().mean() < 0.05 < (out - image).abs().mean()
        flips += 1
        options = [image.rot90(k, (1, 2)) for k in range(4)]
        options += [option.flip(2) for option in options]
        assert min(float((turned - option).abs().mean()) for option in options) < 0.05
    assert 4 <= flips <= 12
    images = smooth_images(count=4, side=32)
    shifted = alone("xint")(images, uniform_for(4))  # shifts of up to 4 pixels
    for out, image in zip(shifted, images, strict=True):  # exact away from the border
        errors = [
            float((out - image.roll((dy, dx), (1, 2)))[:, 8:-8, 8:-8].abs().max())
            for dy in range(-4, 5)
            for dx in range(-4, 5)
        ]
        assert min(errors) < 1e-5


def test_the_colour_matrix_on_grayscale_and_rgb_images():
    gray = smooth_images(channels=1)
    offset = alone("brightness")(gray, uniform_for(8)) - gray
    assert torch.allclose(offset, offset.mean(dim=(1, 2, 3), keepdim=True), atol=1e-6)
    ratio = alone("contrast")(gray, uniform_for(8)) / gray
    assert torch.allclose(ratio, ratio.mean(dim=(1, 2, 3), keepdim=True), rtol=1e-4)
    flipped = alone("lumaflip")(gray, uniform_for(8))  # a reflection of the luma: negation
    negated = [torch.allclose(a, -b) for a, b in zip(flipped, gray, strict=True)]
    assert all(n or torch.equal(a, b) for n, a, b in zip(negated, flipped, gray, strict=True))
    assert 0 < sum(negated) < 8
    assert torch.equal(alone("hue")(gray, uniform_for(8)), gray)  # no hue without colour
    assert torch.equal(alone("saturation")(gray, uniform_for(8)), gray)
    rgb = smooth_images()
    for op in ("hue", "saturation"):  # they keep each pixel's luma (its mean over channels)
        out = alone(op)(rgb, uniform_for(8))
        assert torch.allclose(out.mean(dim=1), rgb.mean(dim=1), atol=1e-5)
    turned = alone("hue")(rgb, uniform_for(8))  # a rotation keeps lengths
    assert torch.allclose(turned.norm(dim=1), rgb.norm(dim=1), atol=1e-5)
    assert set(COLOR) == COLOUR
    with pytest.raises(Exception, match="RGB or grayscale images, not 2 channels"):
        alone("hue")(smooth_images(channels=2), uniform_for(8))


def test_a_short_run_from_the_command_line_trains_with_the_bgc_preset(tmp_path, mnist_root):
    run = tmp_path / "run"
    augment = "augment={name: ada, preset: bgc, p: 0.5, adaptive: false}"
    overrides = [*TINY, augment, "train.steps=2", "train.log_every=2", f"output_dir={run}"]
    assert main(["train", str(REFERENCE_RECIPE), *overrides]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["augment_p"] == 0.5 and math.isfinite(record["d_loss"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment={name: ada, preset: bgcx}", "augment.preset: Input should be 'blit', 'geom'"),
        ("augment={name: ada, hue: -1}", "augment.hue: Input should be greater than or equal to 0"),
        ("augment={name: ada, imgfilter_bands: [1, 1, 1]}", "augment.imgfilter_bands"),
        ("augment={name: ada, cutout_size: 2}", "augment.cutout_size: Input should be less than"),
    ],
)
def test_pipeline_settings_are_checked_at_their_path(override, message):
    with pytest.raises(RecipeError) as error:
        load_recipe(REFERENCE_RECIPE, [override])
    assert message in str(error.value)
