"""Metrics beyond MNIST: `gankit classifier train` on 1x28x28 and 3x32x32 data, `gankit eval`
and `eval.every` with such a classifier, the reference cache, and the settings refused early.

The data are small synthetic sets laid out as the real ones (Fashion-MNIST's idx files, a
folder of PNGs), with classes a network can learn in one epoch."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image

import gankit
from gankit.cli import main
from gankit.config.recipe import load_recipe
from gankit.core.errors import GankitError
from gankit.metrics import classifier as classifiers
from gankit.metrics.inception import WEIGHTS_NAME, WEIGHTS_URL, load_inception
from gankit.metrics.reference import cache_dir
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY


def labelled_pixels(count: int, shape: tuple[int, int, int], classes: int, seed: int):
    """uint8 images over noise whose class sets their brightness (grey: two levels) or their
    colour (RGB): what a network learns in one epoch, whatever the shifts it trains with."""
    rng = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    images = torch.randint(0, 50, (count, *shape), generator=rng, dtype=torch.uint8)
    for index, label in enumerate(labels.tolist()):
        if shape[0] == 1:
            images[index] += 150 * label
        else:
            images[index, label % shape[0]] += 180
    return images, labels


def fake_fashion_mnist(root: Path) -> Path:
    """Fashion-MNIST's four idx files (300 training, 100 test images) under root."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", 300, 0), ("t10k", 100, 1)):
        images, labels = labelled_pixels(count, (1, 28, 28), 2, seed)  # 2 of its 10 classes
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, count, 28, 28) + images.numpy().tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, count) + labels.to(torch.uint8).numpy().tobytes()
        )
    return root


def fake_photo_folder(root: Path, per_class: int = 100) -> Path:
    """A folder of 3x32x32 PNGs in three class subfolders."""
    images, labels = labelled_pixels(3 * per_class, (3, 32, 32), 3, 2)
    for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:03d}.png")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    return fake_fashion_mnist(tmp_path_factory.mktemp("fashion"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return fake_photo_folder(tmp_path_factory.mktemp("photos"))


def train_classifier(root: Path, out: Path, *args: str) -> int:
    return main(["classifier", "train", *args, "--data-root", str(root), "--out", str(out)])


@pytest.fixture(scope="module")
def fashion_classifier(fashion_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classifiers") / "fashion.safetensors"
    assert train_classifier(fashion_root, out, "fashion_mnist", "--epochs", "1") == 0
    return out


@pytest.fixture(scope="module")
def photo_classifier(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classifiers") / "photos.safetensors"
    command = ["image_folder", "size=32", "channels=3", "--epochs", "1"]
    assert train_classifier(photos, out, *command) == 0
    return out


def test_a_classifier_for_grey_data_records_how_it_was_made(fashion_classifier):
    card = json.loads(fashion_classifier.with_suffix(".json").read_text())
    assert card["format"] == "gankit-classifier" and card["weights"] == "fashion.safetensors"
    assert card["dataset"] == "fashion_mnist" and card["split"] == "train"
    assert card["image_shape"] == [1, 28, 28] and card["num_classes"] == 10
    assert card["train_images"] == 300 and card["test_images"] == 100
    assert card["epochs"] == 1 and card["seed"] == 0 and card["torch"] == torch.__version__
    assert card["sha256"] == classifiers.file_sha256(fashion_classifier)
    assert card["test_accuracy"] > 0.9  # two learnable classes of ten
    loaded = classifiers.load(fashion_classifier)
    assert loaded.image_shape == (1, 28, 28) and loaded.num_classes == 10


def test_a_classifier_for_colour_images_without_a_split_holds_out_a_tenth(photo_classifier):
    card = json.loads(photo_classifier.with_suffix(".json").read_text())
    assert card["image_shape"] == [3, 32, 32] and card["num_classes"] == 3
    assert card["data"] == {"size": 32, "channels": 3}
    assert (card["train_images"], card["test_images"]) == (270, 30)
    assert card["test_split"].startswith("a fixed 10%") and card["test_accuracy"] > 0.9


def test_training_again_gives_the_same_weights_and_replaces_only_its_own(
    fashion_root, fashion_classifier, tmp_path, capsys
):
    again = tmp_path / "again.safetensors"
    for _ in range(2):  # the second run replaces what the first wrote
        assert train_classifier(fashion_root, again, "fashion_mnist", "--epochs", "1") == 0
        assert classifiers.file_sha256(again) == classifiers.file_sha256(fashion_classifier)
    foreign = tmp_path / "mine.safetensors"
    foreign.write_bytes(b"someone's weights")
    capsys.readouterr()
    code, _, err = run(capsys, "classifier", "train", "fashion_mnist", "--data-root",
                       fashion_root, "--out", foreign)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "was not written by gankit classifier train" in err
    assert (
        foreign.read_bytes() == b"someone's weights" and not foreign.with_suffix(".json").exists()
    )


def test_one_class_is_refused(tmp_path, capsys):
    folder = fake_photo_folder(tmp_path / "photos", per_class=3) / "class_0"
    code, _, err = run(capsys, "classifier", "train", "image_folder", "size=32", "--data-root",
                       folder, "--out", tmp_path / "c.safetensors")  # fmt: skip
    assert code == 2 and "has 1 class; a classifier needs labelled images" in err
    assert not (tmp_path / "c.safetensors").exists()


def export_rgb_generator(tmp_path: Path, photos: Path) -> Path:
    generator = gankit.GENERATORS.build({"name": "mlp", "hidden": 16}, image_shape=(3, 32, 32))
    data = {"root": str(photos), "size": 32, "channels": 3, "crop": "center"}
    return gankit.save_model(
        generator, tmp_path / "generator", step=0, dataset="image_folder", data=data
    )


def test_eval_of_colour_images_with_their_classifier_and_a_cached_reference(
    tmp_path, photos, photo_classifier, capsys
):
    export = export_rgb_generator(tmp_path, photos)
    code, _, err = run(capsys, "eval", export, "--n", "60")
    assert code == 2 and "--classifier: the classifier metrics need a classifier trained on " \
        "'image_folder' [3, 32, 32] images" in err  # fmt: skip

    runs = []
    for _ in range(2):
        code, out, err = run(capsys, "eval", export, "--n", "60", "--classifier", photo_classifier)
        assert code == 0, err
        runs.append((json.loads(out), err))
    (first, first_err), (second, second_err) = runs
    assert first == second
    keys = {"frechet_distance", "classifier_score", "precision", "recall", "density", "coverage"}
    assert keys <= first.keys() and len(first["class_histogram"]) == 3
    assert all(0 <= first[key] <= 1 for key in ("precision", "recall", "coverage"))
    protocol = first["protocol"]
    assert (
        protocol["reference"] == "image_folder all images (no split), 300 images, scaled to [-1, 1]"
    )
    assert protocol["extractor_weights_sha256"] == classifiers.file_sha256(photo_classifier)
    assert protocol["extractor_image_shape"] == [3, 32, 32] and protocol["generated_samples"] == 60
    cache = Path(protocol["reference_cache"])
    assert cache.parent == cache_dir() and cache.is_file()
    # progress lines when stderr is no terminal; the second run reads the reference's features
    assert "gankit: classifier features of the reference: 1/1 batches" in first_err
    assert (
        "gankit: generating and measuring: 1/1 batches\ngankit: computing the metrics" in first_err
    )
    assert "features of the reference" not in second_err


def test_eval_every_measures_colour_images_with_their_classifier(
    tmp_path, photos, photo_classifier
):
    overrides = [
        *TINY,
        f"data={{name: image_folder, root: {photos}, size: 32, channels: 3, batch_size: 16}}",
        "generator={name: mlp, hidden: 16}",
        "discriminator={name: mlp, hidden: 16}",
        "train.steps=2",
        "eval.every=2",
        "eval.n=40",
        f"eval.classifier={photo_classifier}",
        f"output_dir={tmp_path / 'run'}",
    ]
    Trainer(load_recipe(REFERENCE_RECIPE, overrides)).fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    evaluated = [record for record in records if "eval/frechet_distance" in record]
    assert [record["step"] for record in evaluated] == [2]
    assert {"eval/precision", "eval/recall", "eval/density", "eval/coverage"} <= evaluated[0].keys()


def test_validate_refuses_eval_settings_the_data_cannot_run(tmp_path, fashion_classifier, capsys):
    cifar = [REFERENCE_RECIPE, "data.name=cifar10", f"data.root={tmp_path}", "eval.every=10"]
    cases = {
        "eval.every: the classifier metrics need a classifier trained on 'cifar10' [3, 32, 32] "
        "images": [],
        f"eval.classifier: {fashion_classifier} takes [1, 28, 28] images in 10 classes (trained "
        "on 'fashion_mnist'), but data 'cifar10' gives [3, 32, 32] images in 10 classes": [
            f"eval.classifier={fashion_classifier}"
        ],
        "eval.classifier: classifier weights": [f"eval.classifier={tmp_path / 'none.safetensors'}"],
        "eval.inception_weights: Inception weights not found at": [
            "eval.metrics=[inception]",
            f"eval.inception_weights={tmp_path / 'none.pth'}",
        ],
    }
    for message, extra in cases.items():
        code, _, err = run(capsys, "validate", "-q", *cifar, *extra)
        assert code == 2 and err.startswith(f"gankit: error: {message}"), err
        assert err.count("\n") == 1 and "Traceback" not in err
    # Inception alone needs no classifier; nothing was read from the (empty) data folder
    assert run(capsys, "validate", "-q", *cifar, "eval.metrics=[inception]")[0] == 0
    code, _, err = run(capsys, "validate", "-q", *cifar, f"eval.classifier={fashion_classifier}",
                       "eval.metrics=[inception]")  # fmt: skip
    assert code == 2 and "eval.classifier: it is set but eval.metrics has no 'classifier'" in err
    assert list(tmp_path.iterdir()) == []


def test_the_command_that_makes_a_classifier_keeps_the_data_size(tmp_path, capsys):
    """A classifier made as the message says takes the generator's images: the dataset's
    shaping parameters (here size=32) are in the command."""
    resized = [REFERENCE_RECIPE, "data.size=32", "generator={name: mlp}", "eval.every=10"]
    code, _, err = run(capsys, "validate", "-q", *resized, "discriminator={name: mlp}")
    assert code == 2 and err.count("\n") == 1
    assert "`gankit classifier train mnist size=32 --data-root DIR --out FILE.safetensors`" in err


def test_inception_without_weights_names_the_file_and_where_it_goes(
    tmp_path, photos, monkeypatch, capsys
):
    export = export_rgb_generator(tmp_path, photos)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GANKIT_OFFLINE", "1")
    code, out, err = run(capsys, "eval", export, "--n", "60", "--inception")
    expected = tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_NAME
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert f"download {WEIGHTS_URL} where a network is available and put it at {expected}" in err
    assert not (tmp_path / "torch").exists()


class _Runs:
    def __reduce__(self):
        return (Path.touch, (Path(_Runs.marker),))


def test_inception_weights_that_would_run_code_are_refused(tmp_path):
    _Runs.marker = str(tmp_path / "ran")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(pickle.dumps({"a": _Runs()}, protocol=2))
    with pytest.raises(GankitError, match=r"are not a plain weights file \(UnpicklingError\)"):
        load_inception(weights)
    assert not (tmp_path / "ran").exists()


def test_a_classifier_of_other_classes_is_refused(tmp_path, photos, capsys):
    two = tmp_path / "two"
    two.mkdir()
    for name in ("class_0", "class_1"):
        (two / name).symlink_to(photos / name)
    other = tmp_path / "two.safetensors"
    assert train_classifier(two, other, "image_folder", "size=32", "--epochs", "1") == 0
    export = export_rgb_generator(tmp_path, photos)
    capsys.readouterr()
    code, out, err = run(capsys, "eval", export, "--n", "60", "--classifier", other)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.endswith(
        "--classifier: two.safetensors predicts 2 classes (trained on 'image_folder'), but the "
        "reference data has 3; make a classifier for this data with `gankit classifier train "
        "image_folder size=32 --data-root DIR --out FILE.safetensors`\n"
    )
