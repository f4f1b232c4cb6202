"""Hugging Face datasets as a source: folders written by save_to_disk, built here from real emoji
PNGs, give the pixels an image folder of the same files gives; classes come from the ClassLabel
column; a bad split or column is refused in one line; a recipe trains on one from the command
line."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import ExifTags, Image
from test_datasets import EMOJI

import gankit
from gankit.cli import main
from gankit.components.data import fit_image, from_uint8, image_pixels, num_classes
from gankit.components.hf_data import iter_hf_images, open_hf_dataset
from gankit.config.registry import DATASETS
from gankit.core import sizes
from gankit.core.errors import DatasetError, GankitError
from gankit.core.sizes import MAX_IMAGE_SIDE

CLASSES = ["animals_nature", "flags", "smileys_emotion"]
PER_CLASS = 4


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 emoji PNGs in three class subfolders, as an image folder holds them; in each class
    one is cut to 64x40 (so centre crop and stretch differ) and one is stored on its side with
    an EXIF orientation that turns it upright."""
    folder = tmp_path_factory.mktemp("emoji")
    for name in CLASSES:
        found = sorted((EMOJI / name).glob("*.png"))[:PER_CLASS]
        assert len(found) == PER_CLASS, f"emoji PNGs missing in {EMOJI / name}"
        (folder / name).mkdir()
        for path in found[2:]:
            shutil.copy(path, folder / name / path.name)
        with Image.open(found[0]) as image:
            image.crop((0, 0, 64, 40)).save(folder / name / found[0].name)
        with Image.open(found[1]) as image:
            exif = Image.Exif()
            exif[ExifTags.Base.Orientation] = 6  # shown turned 90 degrees clockwise
            on_its_side = image.transpose(Image.Transpose.ROTATE_90)
            on_its_side.save(folder / name / found[1].name, exif=exif)
    return folder


def emoji_rows(folder: Path) -> Dataset:
    """The folder's images as a Dataset with an Image column and a ClassLabel column, in the
    image folder's order (class, then file name)."""
    files = sorted(folder.glob("*/*.png"), key=lambda path: path.parts[-2:])
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=CLASSES)})
    rows = {
        "image": [str(path) for path in files],
        "label": [CLASSES.index(path.parent.name) for path in files],
    }
    return Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def saved(emoji: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The emoji as a DatasetDict (train: all 12, test: the flags) written by save_to_disk
    from a copy of the PNGs that is deleted afterwards: only the saved bytes can be read."""
    base = tmp_path_factory.mktemp("hf")
    copy = shutil.copytree(emoji, base / "copy")
    rows = emoji_rows(copy)
    flags = rows.filter(lambda row: row["label"] == CLASSES.index("flags"))
    DatasetDict({"train": rows, "test": flags}).save_to_disk(str(base / "emoji_dict"))
    shutil.rmtree(copy)
    return base / "emoji_dict"


def build(path: Path, **params: object) -> torch.utils.data.TensorDataset:
    return DATASETS.build({"name": "hf_dataset", "path": str(path), "size": 16, **params})


@pytest.mark.parametrize(("channels", "crop"), [(3, "center"), (1, "stretch")])
def test_pixels_match_the_image_folder_of_the_same_files(emoji, saved, channels, crop):
    settings = {"size": 16, "channels": channels, "crop": crop}
    folder = DATASETS.build({"name": "image_folder", "root": str(emoji), **settings})
    hf = build(saved, label_column="label", channels=channels, crop=crop)
    assert len(hf) == len(folder) == 3 * PER_CLASS
    images, labels = hf.tensors
    assert images.shape == (12, channels, 16, 16) and images.dtype == torch.float32
    expected = torch.stack([folder[index][0] for index in range(len(folder))])
    assert torch.equal(images, expected)
    assert labels.tolist() == folder.labels == [0] * 4 + [1] * 4 + [2] * 4
    for label, name in enumerate(CLASSES):  # the emoji stored on its side comes out upright
        with Image.open(sorted((EMOJI / name).glob("*.png"))[1]) as upright:
            pixels = from_uint8(fit_image(image_pixels(upright, channels), 16, crop))
        assert torch.equal(images[label * PER_CLASS + 1], pixels)
    assert hf.classes == folder.classes == CLASSES and num_classes(hf) == 3


def test_a_dataset_dict_split_is_picked(saved):
    test = build(saved, split="test", label_column="label")
    assert len(test) == PER_CLASS and test.tensors[1].tolist() == [1] * PER_CLASS
    train = build(saved, label_column="label")
    assert torch.equal(test.tensors[0], train.tensors[0][PER_CLASS : 2 * PER_CLASS])


def test_an_unlabelled_dataset_is_unconditional(emoji, saved, tmp_path):
    rows = emoji_rows(emoji).remove_columns("label")
    rows.save_to_disk(str(tmp_path / "plain"))
    dataset = build(tmp_path / "plain")
    assert dataset.classes == [] and num_classes(dataset) == 0 and len(dataset) == 12
    assert torch.equal(dataset.tensors[0], build(saved).tensors[0])
    unnamed = build(tmp_path / "plain", split="anything")  # a lone Dataset has no split name
    assert torch.equal(unnamed.tensors[0], dataset.tensors[0])


def test_a_column_of_bytes_and_path_dicts_reads_like_an_image_column(emoji, saved, tmp_path):
    files = sorted(emoji.glob("*/*.png"), key=lambda path: path.parts[-2:])
    stored = [{"bytes": path.read_bytes(), "path": path.name} for path in files]
    rows = Dataset.from_dict({"picture": stored})
    assert "bytes" in rows.features["picture"]  # a plain struct, not datasets' Image feature
    rows.save_to_disk(str(tmp_path / "dicts"))
    dataset = build(tmp_path / "dicts", image_column="picture")
    assert torch.equal(dataset.tensors[0], build(saved).tensors[0])


def test_without_the_datasets_package_one_line_says_what_to_install(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(DatasetError) as error:
        build(saved)
    assert str(error.value) == (
        "data.name hf_dataset needs the datasets package; install it: "
        "pip install 'gankit[datasets]'"
    )


def test_rows_iterate_as_named_images_with_labels(saved, tmp_path):
    rows = open_hf_dataset(str(saved), "test")
    named = list(iter_hf_images(rows, "image", "label"))
    assert [name for name, _, _ in named][:2] == ["flags/0.png", "flags/1.png"]
    assert {label for _, _, label in named} == {1}
    assert [image.size for _, image, _ in named] == [(64, 40), (64, 64), (64, 64), (64, 64)]
    broken = Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": "x.png"}, named[0][1]]},
        features=Features({"image": ImageFeature()}),
    )
    skipped: list[tuple[str, str]] = []
    kept = list(iter_hf_images(broken, skipped=skipped))
    assert [name for name, _, _ in kept] == ["1.png"] and kept[0][2] is None
    assert [name for name, _ in skipped] == ["0.png"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"split": "validation"},
            "no split 'validation' in the dataset folder {saved}; its splits: train, test. Set "
            "data.split to one of them",
        ),
        (
            {"config": "small"},
            "data.config 'small' applies to Hub datasets, but data.path is the local folder "
            "{saved}; leave data.config out",
        ),
        (
            {"image_column": "img"},
            "data.image_column: no column 'img' in the dataset; its columns: image (Image), "
            "label (ClassLabel)",
        ),
        (
            {"label_column": "labels"},
            "data.label_column: no column 'labels' in the dataset; its columns: image (Image), "
            "label (ClassLabel)",
        ),
        (
            {"image_column": "label"},
            "data.image_column: column 'label' holds ClassLabel, not images (an Image feature, "
            "or bytes/path dicts); its columns: image (Image), label (ClassLabel)",
        ),
    ],
)
def test_a_missing_split_or_column_is_refused_in_one_line(saved, params, message):
    with pytest.raises(DatasetError) as error:
        build(saved, **params)
    assert str(error.value) == message.format(saved=saved.resolve())


def test_a_hub_dataset_not_in_the_cache_offline_is_refused(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetError) as error:
        build("someone/emoji")
    assert str(error.value).startswith(
        "Hub dataset 'someone/emoji' is not in the Hugging Face cache "
        f"({tmp_path / 'cache'}) and the Hub cannot be reached (HF_HUB_OFFLINE or "
        "HF_DATASETS_OFFLINE is set, or no network)"
    )
    with pytest.raises(DatasetError, match=r"^data.path: no folder /nowhere/emoji \(and"):
        build("/nowhere/emoji")


def test_images_beyond_the_available_memory_are_refused_before_decoding(saved, monkeypatch):
    monkeypatch.setattr(sizes, "available_bytes", lambda device: 100 * 2**20)
    with pytest.raises(GankitError) as error:
        build(saved, size=MAX_IMAGE_SIDE)
    assert str(error.value) == (
        f"data.size={MAX_IMAGE_SIDE} (12 images of 3x{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}, 144.0 MiB "
        "as uint8 and 4x that as float32) needs about 720.0 MiB; 100.0 MiB of memory is "
        "available; lower data.size, or save part of the split (dataset.select(range(N)))"
    )


def test_a_label_column_that_is_not_a_class_label_is_refused(emoji, tmp_path):
    rows = emoji_rows(emoji).cast_column("label", Value("int64"))
    rows.save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(DatasetError, match=r"column 'label' holds Value, not a ClassLabel; encode"):
        build(tmp_path / "ints", label_column="label")


def test_the_command_line_refuses_with_exit_2_and_one_line(saved, tmp_path, capsys):
    data = f"data={{name: hf_dataset, path: {saved}, split: valid, size: 16}}"
    assert main(["train", "folder_dcgan64", data, f"output_dir={tmp_path / 'run'}"]) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1 and "Traceback" not in err
    assert "no split 'valid' in the dataset folder" in err and "its splits: train, test" in err
    assert (
        main(["train", "folder_dcgan64", f"data={{name: hf_dataset, path: {tmp_path}, size: 16}}"])
        == 2
    )
    assert "is not a dataset folder written by save_to_disk" in capsys.readouterr().err


def test_two_conditional_training_steps_from_the_command_line(saved, tmp_path):
    run = tmp_path / "run"
    data = f"data={{name: hf_dataset, path: {saved}, label_column: label, size: 16, batch_size: 4}}"
    overrides = [
        data,
        "generator.width=4",
        "discriminator.width=4",
        "generator.num_classes=3",
        "discriminator.num_classes=3",
        "train.steps=2",
        "train.log_every=1",
        "train.n_samples=4",
        "train.progress=false",
        "perf.data_on_device=true",
        f"output_dir={run}",
    ]
    assert main(["train", "folder_dcgan64", *overrides]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [record for record in records if "d_loss" in record][-1]
    assert last["step"] == 2 and math.isfinite(last["d_loss"]) and math.isfinite(last["g_loss"])
    generator = gankit.load_generator(run / "export" / "generator")
    assert generator.num_classes == 3
    assert generator.sample(3, seed=0, labels=[0, 1, 2]).shape == (3, 3, 16, 16)


def test_data_prepare_takes_a_hugging_face_dataset(saved, emoji, tmp_path, capsys):
    from gankit.components.prepared.dataset import PreparedDataset

    assert main(["data", "prepare", str(emoji), str(tmp_path / "folder"), "--size", "16"]) == 0
    hf = ["--hf", "--label-column", "label", "--size", "16"]
    assert main(["data", "prepare", str(saved), str(tmp_path / "rows"), *hf]) == 0
    rows, folder = PreparedDataset(tmp_path / "rows"), PreparedDataset(tmp_path / "folder")
    assert rows.classes == folder.classes == CLASSES
    assert torch.equal(rows.pixels, folder.pixels)  # the same bytes, the same decoding
    assert torch.equal(rows.tensors[1], folder.tensors[1])
    manifest = json.loads((tmp_path / "rows" / "manifest.json").read_text())
    assert manifest["sources"][0] == "animals_nature/00"
    test_split = ["--hf", "--split", "test", "--size", "16"]  # no label column: one class
    assert main(["data", "prepare", str(saved), str(tmp_path / "flags"), *test_split]) == 0
    flags = PreparedDataset(tmp_path / "flags")
    assert len(flags) == PER_CLASS and flags.classes == ["emoji_dict"]
    capsys.readouterr()
    assert main(["data", "prepare", str(saved), str(tmp_path / "no-flag"), "--size", "16"]) == 2
    error = capsys.readouterr().err
    assert "is a Hugging Face dataset written by save_to_disk; add --hf" in error
    assert error.strip().count("\n") == 0 and not (tmp_path / "no-flag").exists()
