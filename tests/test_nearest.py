"""The memorisation check (`gankit eval --nearest`): chunked nearest neighbours, the copy share
of a generator that returns training images (all copies) and of noise (none), and the grid that
shows each sample beside its nearest training images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.cli import main
from gankit.metrics import nearest as nearest_module
from gankit.metrics.evaluation import ClassifierMetrics, reference_images
from gankit.metrics.evaluators import trained_on
from gankit.metrics.nearest import NEIGHBOURS, check_export, nearest
from gankit.metrics.reference import RealImages

SIDE, PAD = 28, 2


@pytest.fixture(scope="module")
def training(mnist_root) -> RealImages:
    images = reference_images(str(mnist_root), "train")[:300]
    return RealImages(images, torch.zeros(300, dtype=torch.long), [], "mnist", "train")


def test_chunked_nearest_neighbours_are_the_brute_force_ones(monkeypatch):
    monkeypatch.setattr(nearest_module, "QUERY_CHUNK", 7)
    monkeypatch.setattr(nearest_module, "KEY_CHUNK", 5)
    rng = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(20, 6, generator=rng), torch.randn(23, 6, generator=rng)
    distances, indices = nearest(queries, keys, 3)
    expected = torch.cdist(queries, keys).topk(3, dim=1, largest=False)
    assert torch.equal(indices, expected.indices)
    assert torch.allclose(distances, expected.values)
    own_d, own_i = nearest(keys, keys, 2, skip=torch.arange(23))
    full = torch.cdist(keys, keys).fill_diagonal_(torch.inf).topk(2, dim=1, largest=False)
    assert torch.equal(own_i, full.indices) and torch.allclose(own_d, full.values)


def cell(grid: np.ndarray, row: int, column: int) -> np.ndarray:
    top, left = PAD + row * (SIDE + PAD), PAD + column * (SIDE + PAD)
    return grid[top : top + SIDE, left : left + SIDE]


def run_check(tmp_path, training, generate, name):
    out = tmp_path / f"{name}.nearest.png"
    report = check_export(
        generate, training, lambda reference: training, ClassifierMetrics(), out=out, force=False,
        shown=4, n=40, seed=0, batch_size=16, device="cpu",
    )  # fmt: skip
    return report, np.asarray(Image.open(out))


def test_copies_of_training_images_are_all_memorised_and_shown_beside_them(tmp_path, training):
    def copies(count: int, rng: torch.Generator) -> torch.Tensor:
        return training.images[torch.randint(0, 300, (count,), generator=rng)]

    report, grid = run_check(tmp_path, training, copies, "copies")
    for space in ("features", "pixels"):
        assert report[space]["copy_share"] == 1.0
        distances = report[space]  # float32 matrix products: a copy is at ~0, not exactly 0
        assert (
            distances["sample_nn_distance_median"]
            < 0.01 * distances["matched_train_nn_distance_median"]
        )
    assert grid.shape == (PAD + 4 * (SIDE + PAD), PAD + 2 * (1 + NEIGHBOURS) * (SIDE + PAD))
    expected = copies(4, torch.Generator().manual_seed(0))
    for row in range(4):
        sample = cell(grid, row, 0)
        shown = ((expected[row, 0] + 1) * 127.5).round().clamp(0, 255).numpy().astype(np.uint8)
        assert np.array_equal(sample, shown)  # the sample itself...
        assert np.array_equal(cell(grid, row, 1), sample)  # ...and the same training image
        assert np.array_equal(cell(grid, row, 1 + NEIGHBOURS + 1), sample)  # in pixels too
        assert not np.array_equal(cell(grid, row, 2), sample)


def test_noise_copies_nothing(tmp_path, training):
    def noise(count: int, rng: torch.Generator) -> torch.Tensor:
        return torch.rand(count, 1, SIDE, SIDE, generator=rng) * 2 - 1

    report, _ = run_check(tmp_path, training, noise, "noise")
    assert report["features"]["copy_share"] == 0.0 and report["pixels"]["copy_share"] == 0.0
    assert report["definition"].startswith("copy_share: the share of generated samples")
    assert report["training_set"].startswith("mnist train split, 300 images")


def test_the_grid_needs_a_report_beside_it(tmp_path, capsys):
    code = main(["eval", str(tmp_path / "no-export"), "--nearest"])
    err = capsys.readouterr().err
    assert code == 2 and err == (
        "gankit: error: --nearest writes its grid beside the report: give --out FILE.json\n"
    )
    taken = tmp_path / "eval.nearest.png"
    taken.write_bytes(b"mine")
    out = str(tmp_path / "eval.json")
    code = main(["eval", str(tmp_path / "no-export"), "--nearest", "--out", out])
    assert code == 2 and str(taken) in capsys.readouterr().err and taken.read_bytes() == b"mine"


def test_a_run_on_a_subset_is_compared_with_the_images_it_trained_on(tmp_path, training):
    assert trained_on({"train_subset": 100}) == 100
    assert all(trained_on(c) is None for c in ({}, {"train_subset": True}, {"train_subset": "9"}))
    first = training.first(100)
    assert torch.equal(first.images, training.images[:100]) and len(first.labels) == 100
    assert first.description.startswith("mnist train[:100] split, 100 images")
    assert training.first(None) is training and training.first(10**6) is training

    def copies(count: int, rng: torch.Generator) -> torch.Tensor:
        return training.images[torch.randint(0, 300, (count,), generator=rng)]

    report = check_export(
        copies, training, lambda reference: reference.first(100), ClassifierMetrics(),
        out=tmp_path / "g.nearest.png", force=False, shown=2, n=40, seed=0, batch_size=16,
        device="cpu",
    )  # fmt: skip
    assert report["training_set"].startswith("mnist train[:100] split, 100 images")
    assert 0 < report["pixels"]["copy_share"] < 1  # copies of images 100-299 are not its own


def test_real_images_the_run_never_saw_give_the_baseline(tmp_path, training):
    seen, unseen = training.first(150), training.images[150:]
    held_out = RealImages(unseen, training.labels[150:], training.classes, "mnist", "test")

    def copies(count: int, rng: torch.Generator) -> torch.Tensor:
        return seen.images[torch.randint(0, 150, (count,), generator=rng)]

    report = check_export(
        copies, held_out, lambda reference: seen, ClassifierMetrics(),
        out=tmp_path / "g.nearest.png", force=False, shown=2, n=100, seed=0, batch_size=32,
        device="cpu",
    )  # fmt: skip
    baseline = report["held_out"]
    assert baseline["images"] == 100 and baseline["set"].startswith("mnist test split")
    for space in ("features", "pixels"):
        assert report[space]["copy_share"] == 1.0
        assert 0 < baseline[space] < 0.9  # unseen digits: some close, most not
        drawn = iter(unseen.split(32))  # the held-out images themselves, as the samples
        unseen_only = check_export(
            lambda count, rng, drawn=drawn: next(drawn)[:count], held_out, lambda _: seen,
            ClassifierMetrics(), out=tmp_path / f"{space}.nearest.png", force=False, shown=2,
            n=100, seed=0, batch_size=32, device="cpu",
        )  # fmt: skip
        assert unseen_only[space]["copy_share"] == baseline[space]  # the same measure
