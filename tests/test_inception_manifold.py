"""Inception features for every metric: FID, KID, precision/recall and density/coverage from one
pass, the clean (PIL bicubic) resize of the `paper` protocol, and `gankit eval` reporting them.

The Inception network is torch-fidelity's, randomly initialised (its published weights cannot be
downloaded here): the pipeline is what is tested, not the published numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import gankit
from gankit.cli import main
from gankit.metrics.inception import InceptionMetrics, clean_resize, to_inception_input
from gankit.metrics.manifold import manifold_metrics
from gankit.metrics.presets import apply_preset


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory) -> Path:
    """torch-fidelity's Inception-v3 with random (He-initialised) weights, saved as a plain
    weights file; its constructor loads a file, so it is built over an empty one."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pth")
    torch.manual_seed(0)
    network = Unloaded("inception-v3-compat", ["2048"], str(folder / "empty.pth"))
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(network.state_dict(), folder / "random.pth")
    return folder / "random.pth"


def test_all_metrics_come_from_the_same_inception_features(random_inception):
    metrics = InceptionMetrics(random_inception)
    rng = torch.Generator().manual_seed(0)
    real = torch.rand(6, 3, 16, 16, generator=rng) * 2 - 1
    dark = torch.rand(6, 3, 16, 16, generator=rng) * 0.2 - 1
    metrics.set_real(metrics.features(real))

    metrics.update_generated(real)
    same = metrics.compute()
    for key in ("precision", "recall", "coverage"):
        assert same[f"inception_{key}"] == 1.0
    assert abs(same["inception_fid"]) < 1e-3
    assert torch.equal(metrics.generated.compute(), metrics.real)  # one pass, one set

    metrics.reset_generated()
    metrics.update_generated(dark)
    apart = metrics.compute()
    for key in ("precision", "recall", "density", "coverage"):
        assert apart[f"inception_{key}"] == 0.0
    assert apart["inception_fid"] > 1
    expected = manifold_metrics(metrics.real, metrics.generated.compute())
    assert {key: apart[f"inception_{key}"] for key in expected} == expected


def test_clean_resize_is_pil_bicubic_of_each_channel():
    rng = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 5, 7), generator=rng, dtype=torch.uint8)
    resized = clean_resize(images, side=11)
    assert resized.shape == (2, 3, 11, 11) and resized.dtype == torch.uint8
    for index in range(2):
        for channel in range(3):
            plane = Image.fromarray(images[index, channel].numpy().astype(np.float32), mode="F")
            expected = np.asarray(plane.resize((11, 11), Image.BICUBIC)).clip(0, 255)
            assert np.array_equal(resized[index, channel].numpy(), np.rint(expected))
    grey = torch.zeros(1, 1, 4, 4) - 1
    assert to_inception_input(grey, "clean").shape == (1, 3, 299, 299)
    assert to_inception_input(grey).shape == (1, 3, 4, 4)  # the extractor resizes itself


def tiny_folder(root: Path, count: int = 6) -> Path:
    rng = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 256, (count, 16, 16, 3), generator=rng, dtype=torch.uint8)
    (root / "all").mkdir(parents=True)
    for index, image in enumerate(pixels):
        Image.fromarray(image.numpy()).save(root / "all" / f"{index}.png")
    return root


def test_eval_of_an_unlabelled_folder_reports_every_inception_metric_and_its_protocol(
    tmp_path, random_inception, capsys
):
    photos = tiny_folder(tmp_path / "photos")
    generator = gankit.GENERATORS.build({"name": "mlp", "hidden": 8}, image_shape=(3, 16, 16))
    data = {"root": str(photos), "size": 16, "channels": 3}
    export = gankit.save_model(generator, tmp_path / "g", step=0, dataset="image_folder", data=data)
    out = tmp_path / "eval.json"
    argv = ["eval", export, "--protocol", "paper", "--n", "6", "--batch-size", "6"]
    argv += ["--inception-weights", random_inception, "--out", out, "--nearest", "2"]
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads(out.read_text())
    assert json.loads(captured.out) == results
    keys = ("fid", "kid", "precision", "recall", "density", "coverage")
    assert all(isinstance(results[f"inception_{key}"], float) for key in keys)
    assert "frechet_distance" not in results  # no classifier for this data
    protocol = results["protocol"]
    assert protocol["preset"] == "paper" and protocol["preset_replaced"] == {"n": 6}
    assert protocol["inception_resize"].startswith("clean")
    assert protocol["generated_samples"] == 6
    assert protocol["reference"].startswith("image_folder all images (no split), 6 images")
    assert "do not follow the 'paper' protocol" in captured.err
    grid = tmp_path / "eval.nearest.png"
    memorised = results["memorisation"]
    assert memorised["grid"] == str(grid) and grid.is_file()
    assert set(memorised) >= {"features", "pixels", "definition"}


def test_the_paper_preset_fixes_samples_training_set_inception_and_clean_resize(capsys):
    chosen, record = apply_preset("paper", {"n": None, "split": None, "inception": None})
    assert (chosen.n, chosen.split, chosen.inception, chosen.resize) == (
        50_000,
        "train",
        True,
        "clean",
    )
    assert record["preset"] == "paper" and "preset_replaced" not in record
    assert capsys.readouterr().err == ""
    default, _ = apply_preset("default", {"n": 300, "split": None, "inception": True})
    assert (default.n, default.split, default.inception, default.resize) == (
        300,
        "test",
        True,
        "extractor",
    )
