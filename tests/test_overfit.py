"""The warning, once, when the logged losses show D memorising the training images; and the
shipped recipes that train on an image folder have ADA on."""

from __future__ import annotations

import pytest

from gankit.config.recipe import load_recipe
from gankit.training.overfit import OverfitWatch

from conftest import ROOT


def feed(watch: OverfitWatch, records: list[tuple[float, float]], every: int = 100) -> list[int]:
    """Give the watch (d_loss_real, g_loss) records logged every `every` steps; returns the
    steps at which it warned."""
    return [
        index * every
        for index, (real, g_loss) in enumerate(records, 1)
        if watch.observe(index * every, {"d_loss_real": real, "d_loss": real, "g_loss": g_loss})
    ]


# D learns, then separates the 200 images perfectly from step 400 on while G's loss climbs.
MEMORISING = [(0.68, 0.9), (0.45, 1.4), (0.2, 2.1)] + [(0.05 / (i + 1), 3.0 + i) for i in range(8)]
HEALTHY = [(0.68, 0.9), (0.5, 1.2), (0.35, 2.0), (0.42, 1.8)] * 5 + [(0.3, 2.6), (0.28, 3.1)]


def test_memorising_is_warned_about_once_with_the_step_and_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    watch = OverfitWatch(200)
    assert feed(watch, MEMORISING) == [600]  # three logs in a row show it: 400, 500, 600
    warning = capsys.readouterr().err.strip()
    assert warning.count("gankit: warning:") == 1
    assert "tells real images from fakes almost perfectly since step 400" in warning
    assert "g_loss 3 -> 5" in warning
    assert "memorising the 200 training images" in warning
    assert warning.endswith("turn on augmentation (augment.name=ada) or add data")


def test_a_healthy_run_is_not_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    assert feed(OverfitWatch(60000), HEALTHY) == []
    assert capsys.readouterr().err == ""


def test_a_strong_discriminator_with_a_steady_generator_is_not_warned_about() -> None:
    steady = [(0.68, 0.9), (0.3, 2.0)] + [(0.03, 4.0 + 0.1 * (i % 2)) for i in range(10)]
    assert feed(OverfitWatch(500), steady) == []


def test_a_discriminator_strong_from_the_first_log_is_still_seen() -> None:
    assert feed(OverfitWatch(500), [(0.04, 2.0), (0.03, 2.6), (0.02, 3.2), (0.01, 4.0)]) == [300]


def test_a_pause_in_the_pattern_starts_it_over() -> None:
    broken = [(0.68, 0.9), (0.04, 2.0), (0.03, 2.6), (0.3, 1.5), (0.03, 2.0), (0.02, 2.2)]
    assert feed(OverfitWatch(500), broken) == []


def test_a_critic_without_a_sign_is_not_read() -> None:
    watch = OverfitWatch(500)
    wasserstein = [(-0.5, 0.5), (-3.0, 3.0)] + [(0.01, 4.0 + i) for i in range(6)]
    assert feed(watch, wasserstein) == []
    assert not watch.observe(900, {"d_loss": 0.01, "g_loss": 9.0})  # relativistic: no real part


def test_with_ada_on_the_advice_is_to_add_data(capsys: pytest.CaptureFixture[str]) -> None:
    watch = OverfitWatch(200)
    for step, (real, g_loss) in enumerate(MEMORISING, 1):
        watch.observe(step * 100, {"d_loss_real": real, "g_loss": g_loss, "augment_p": 0.97})
    warning = capsys.readouterr().err
    assert "augmentation is on (augment_p 0.97): add data, or let ADA augment sooner" in warning
    assert "lower augment.speed_kimg or augment.target" in warning


def test_only_the_main_process_warns(capsys: pytest.CaptureFixture[str]) -> None:
    assert feed(OverfitWatch(200, enabled=False), MEMORISING) == []
    assert capsys.readouterr().err == ""


FOLDER_RECIPES = [
    path
    for path in sorted((ROOT / "gankit" / "recipes").glob("*.yaml"))
    if load_recipe(path).data.name == "image_folder"
]


def test_there_are_folder_recipes() -> None:
    assert "folder_dcgan64" in [path.stem for path in FOLDER_RECIPES]


@pytest.mark.parametrize("path", FOLDER_RECIPES, ids=[path.stem for path in FOLDER_RECIPES])
def test_folder_recipes_validate_with_augmentation_on(path) -> None:
    """ADA, adaptive; or DiffAugment where the loss leaves ADA's signal, the sign of D's logits
    on reals, meaningless (the relativistic losses fix only differences of logits)."""
    recipe = load_recipe(path)
    if recipe.loss.name.startswith("relativistic"):
        assert recipe.augment.name in ("diffaugment", "ada")
    else:
        assert recipe.augment.name == "ada"
    if recipe.augment.name == "ada":
        assert recipe.augment.adaptive
    assert load_recipe(path, ["augment={name: none}"]).augment.name == "none"
