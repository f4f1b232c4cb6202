"""Augmentations, the newer regularizers and mirrored data: values on known inputs, and the
training run's guarantees with them (resume bit for bit, several processes: tests/
test_distributed.py, graph staging: tests/test_graphs.py)."""

from __future__ import annotations

import json

import pytest
import torch

from gankit import AUGMENTATIONS, LOSSES, REGULARIZERS
from gankit.components.augment import Randomness, translate
from gankit.components.data import Mirrored
from gankit.config.recipe import load_recipe
from gankit.core.errors import GankitError, RecipeError
from gankit.training.fastpath import all_items
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, ROOT, TINY


def uniform_for(count: int, step: int = 0, seed: int = 0, process: int = 0):
    randomness = Randomness(seed, torch.tensor(step), lambda n: process * n)
    randomness.start()
    return randomness.for_batch(count)


def test_randomness_is_a_function_of_seed_step_call_and_global_sample():
    draws = uniform_for(8)(3)
    assert draws.shape == (8, 3) and draws.dtype == torch.float32
    assert draws.min() >= 0 and draws.max() < 1
    assert torch.equal(draws, uniform_for(8)(3))  # the same key, the same numbers
    assert not torch.equal(draws, uniform_for(8, step=1)(3))
    assert not torch.equal(draws, uniform_for(8, seed=1)(3))
    two_draws = uniform_for(8)
    assert not torch.equal(two_draws(3), two_draws(3))  # each draw of a call is fresh
    # process 1 of 2 at batch 4 draws what one process at batch 8 draws for images 4..7
    assert torch.equal(uniform_for(4, process=1)(3), draws[4:])
    many = uniform_for(4096)(4)
    assert abs(float(many.mean()) - 0.5) < 0.01 and abs(float(many.std()) - 12**-0.5) < 0.01


def test_translation_shifts_by_whole_pixels_with_zeros_or_reflection():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    down_left = translate(image, torch.tensor([1]), torch.tensor([-1]), "zeros")[0, 0]
    expected = torch.tensor(
        [[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]], dtype=torch.float32
    )
    assert torch.equal(down_left, expected)
    reflected = translate(image, torch.tensor([1]), torch.tensor([0]), "reflect")[0, 0]
    assert torch.equal(reflected[0], image[0, 0, 1]) and torch.equal(reflected[1:], image[0, 0, :3])


def test_diffaugment_applies_its_policy_differentiably():
    ones = torch.ones(64, 1, 28, 28)
    cut = AUGMENTATIONS.build({"name": "diffaugment", "policy": "cutout"})(ones, uniform_for(64))
    zeros = (cut == 0).flatten(1).sum(1)
    assert ((cut == 0) | (cut == 1)).all()
    assert zeros.max() == 14 * 14 and zeros.min() > 0  # a 14-pixel square, clipped at edges
    images = torch.rand(16, 3, 8, 8, requires_grad=True)
    augment = AUGMENTATIONS.build({"name": "diffaugment"})
    out = augment(images, uniform_for(16))
    assert out.shape == images.shape and not torch.equal(out, images)
    assert torch.equal(out, augment(images, uniform_for(16)))
    out.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with pytest.raises(RecipeError, match="policy"):
        load_recipe(REFERENCE_RECIPE, ["augment={name: diffaugment, policy: 'color,blur'}"])


def test_ada_at_p_zero_is_the_identity_and_at_p_one_changes_every_image():
    images = torch.randn(32, 1, 6, 6)
    assert torch.equal(AUGMENTATIONS.build({"name": "ada"})(images, uniform_for(32)), images)
    augmented = AUGMENTATIONS.build({"name": "ada", "p": 1.0})(images, uniform_for(32))
    # bgc at p = 1: every image is scaled, rotated, ... (tests/test_ada_pipeline.py: each op)
    assert not any(torch.equal(a, b) for a, b in zip(augmented, images, strict=True))


def test_ada_steers_p_by_the_sign_of_d_on_reals():
    ada = AUGMENTATIONS.build({"name": "ada", "interval": 2, "speed_kimg": 1.0, "target": 0.6})
    count = torch.tensor(100.0)
    ada.observe(count * 0.9, count)  # D is sure of the reals: overfitting
    assert float(ada.p) == 0  # adjusted only every `interval` updates
    ada.observe(count * 0.9, count)
    assert float(ada.p) == pytest.approx(200 / 1000)  # 200 images of 1,000 for the full way
    ada.observe(-count, count)
    ada.observe(-count, count)
    assert float(ada.p) == 0  # back down, and never below 0
    state = ada.state_dict()
    assert set(state) == {"p", "sign_sum", "count", "observed"}
    fixed = AUGMENTATIONS.build({"name": "ada", "p": 0.3, "adaptive": False, "interval": 1})
    fixed.observe(count, count)
    assert float(fixed.p) == pytest.approx(0.3)
    assert fixed.values() == {"augment_p": fixed.p}


def test_r2_penalises_d_s_gradient_on_the_fakes():
    weights = torch.tensor([3.0, 4.0])
    r2 = REGULARIZERS.build({"name": "r2", "weight": 2.0})
    assert r2.network == "discriminator"
    penalty = r2.penalty(
        lambda x: (x * weights).sum(1, keepdim=True), torch.zeros(5, 2), torch.ones(5, 2)
    )
    assert penalty.item() == pytest.approx(2.0 / 2 * 25)  # weight / 2 * ||w||^2


def test_path_length_penalises_the_spread_of_g_s_jacobian_norms():
    matrix = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    pl = REGULARIZERS.build({"name": "path_length", "weight": 2.0, "decay": 0.5, "batch_shrink": 1})
    assert pl.network == "generator" and float(pl.mean) == 0
    z = torch.randn(4, 3)
    torch.manual_seed(7)
    penalty = pl.penalty(lambda z: (z @ matrix.T).view(-1, 3, 2, 2), z)
    torch.manual_seed(7)
    noise = torch.randn(4, 3, 2, 2) / 2  # per-channel pixel count 4: divided by sqrt(4)
    lengths = (noise.flatten(1) @ matrix).norm(dim=1)  # ||J^T y|| for a linear G
    mean = 0.5 * lengths.mean()
    assert float(pl.mean) == pytest.approx(float(mean), rel=1e-5)
    assert penalty.item() == pytest.approx(float(2.0 * (lengths - mean).square().mean()), rel=1e-5)


def test_mirrored_data_adds_each_image_flipped():
    images = torch.arange(24.0).reshape(3, 1, 2, 4)
    dataset = Mirrored(torch.utils.data.TensorDataset(images, torch.tensor([0, 1, 2])))
    assert len(dataset) == 6
    image, label = dataset[4]
    assert torch.equal(image, images[1].flip(-1)) and label == 1
    assert torch.equal(all_items(dataset), torch.stack([dataset[i][0] for i in range(6)]))
    with pytest.raises(IndexError):
        dataset[6]


EVERYTHING_NEW = [
    *TINY,
    "data.subset=64",
    "data.hflip=true",
    "train.log_every=2",
    "train.sample_every=100",
    "train.checkpoint_every=2",
    "loss={name: relativistic_average, least_squares: true}",
    "augment={name: ada, p: 0.2, interval: 1, speed_kimg: 0.05}",
    "regularizers=[{name: r2, weight: 1.0, every: 2}, {name: path_length, every: 2}]",
]


def test_a_resumed_run_with_augmentation_and_regularizers_equals_the_straight_one(
    tmp_path, mnist_root
):
    def fit(name: str, steps: int) -> Trainer:
        overrides = [*EVERYTHING_NEW, f"train.steps={steps}", f"output_dir={tmp_path / name}"]
        trainer = Trainer(load_recipe(REFERENCE_RECIPE, overrides))
        trainer.fit()
        return trainer

    straight = fit("straight", 4)
    fit("resumed", 2)
    resumed = fit("resumed", 4)
    assert len(resumed.parts.dataset) == 128  # mirrored
    a, b = straight.iteration.state_dict(), resumed.iteration.state_dict()
    assert a["augment"]["p"] != 0.2  # p moved, and moved the same way
    for key in ("augment", "regularizers"):
        assert repr(a[key]) == repr(b[key]), key
    assert float(a["regularizers"]["g_path_length"]["mean"]) > 0
    for network in ("generator", "discriminator"):
        sa = getattr(straight.parts, network).state_dict()
        sb = getattr(resumed.parts, network).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), network
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    for name in (
        "d_loss_real",
        "d_loss_fake",
        "g_loss_fake",
        "g_loss_real",
        "d_r2",
        "g_path_length",
        "augment_p",
    ):
        assert name in record, name
    assert record["g_loss"] == pytest.approx(record["g_loss_fake"] + record["g_loss_real"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("regularizers=[{name: r11}]", "unknown regularizer 'r11' at regularizers.0.name; did you"),
        ("regularizers=[{name: r1, wieght: 2}]", "regularizers.0.wieght; did you mean 'weight'?"),
        ("regularizers=[{name: r2, weight: -1}]", "regularizers.0.weight: Input should be greater"),
        ("regularizers=[{name: r1}]", "regularizer r1 is given more than once"),
        ("augment={name: adaa}", "unknown augmentation 'adaa' at augment.name; did you mean"),
    ],
)
def test_regularizer_lists_and_augmentations_are_checked_with_clear_messages(override, message):
    with pytest.raises(RecipeError) as error:
        load_recipe(REFERENCE_RECIPE, ["regularizer={name: r1}", override])
    assert message in str(error.value)


def test_a_loss_returning_other_parts_than_it_declares_is_a_clear_error(tmp_path, mnist_root):
    @LOSSES.register("misdeclared_parts")
    class Misdeclared:
        """Declares one D part, returns another."""

        generator_uses_real = False
        parts = {"discriminator": ("d_loss",), "generator": ("g_loss",)}

        def discriminator(self, logits):
            return {"d_total": logits.real.float().mean() - logits.fake.float().mean()}

        def generator(self, logits):
            return {"g_loss": -logits.fake.float().mean()}

    try:
        trainer = Trainer(
            load_recipe(
                REFERENCE_RECIPE,
                [*TINY, "loss.name=misdeclared_parts", "train.steps=1", f"output_dir={tmp_path}"],
            )
        )
        with pytest.raises(GankitError, match=r"returned the discriminator parts \['d_total'\]"):
            trainer.fit()
    finally:
        LOSSES.unregister("misdeclared_parts")


def test_a_regularizer_written_before_network_existed_still_trains_d(tmp_path, mnist_root):
    @REGULARIZERS.register("older_penalty")
    class Older:
        """Declares no `network`: it regularizes D, as every regularizer once did."""

        every = 2

        def penalty(self, discriminator, real, fake):
            return discriminator(real).float().square().mean()

    try:
        overrides = [*TINY, "regularizer.name=older_penalty", "train.steps=2", "train.log_every=2"]
        Trainer(load_recipe(REFERENCE_RECIPE, [*overrides, f"output_dir={tmp_path}"])).fit()
    finally:
        REGULARIZERS.unregister("older_penalty")
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["d_older_penalty"] > 0


@pytest.mark.parametrize("override", ["augment={name: ada}", "data.hflip=true"])
def test_augmenting_samples_that_are_not_images_is_one_clear_error(tmp_path, override):
    recipe = load_recipe(ROOT / "recipes" / "ring_mlp.yaml", [override, f"output_dir={tmp_path}"])
    with pytest.raises(GankitError, match=r"they transform images of shape \(C, H, W\), but"):
        Trainer(recipe)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
