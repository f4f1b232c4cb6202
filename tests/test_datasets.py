"""The built-in datasets on real files: torchvision's MNIST family from idx files written here,
CIFAR's errors, folders of image files, and the `classes` convention."""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Subset, TensorDataset

from gankit.components.data import (
    MNIST_FILES,
    ImageFolderDataset,
    _nchw,
    in_memory_dataset,
    mnist,
    num_classes,
)
from gankit.config.recipe import validate_recipe
from gankit.config.registry import DATASETS
from gankit.core.errors import DatasetError, RecipeError

from conftest import REFERENCE_RECIPE

TORCHVISION_CLASSES = {
    "fashion_mnist": ("FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]),
    "kmnist": ("KMNIST", ["o", "ki", "su", "tsu", "na"]),
}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file as torchvision reads it: magic 0x08<ndim>, big-endian dims, uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = np.array([0x0800 + array.ndim, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.tobytes())


def write_mnist_family(root: Path, folder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny train (5 images) and test (3 images) splits in root/folder/raw/."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    splits = {}
    for prefix, count in (("train", 5), ("t10k", 3)):
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        images[:] = (np.arange(count) * 51).reshape(-1, 1, 1)  # 0, 51, 102, ...
        images[:, 0, 0] = 255
        labels = (np.arange(count) * 3 + (prefix == "t10k")) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        splits["train" if prefix == "train" else "test"] = (images, labels)
    return splits


def scaled(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels as the datasets scale them to [-1, 1]."""
    return torch.from_numpy(pixels).float().div_(127.5).sub_(1.0)


# ---- torchvision's MNIST family ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["fashion_mnist", "kmnist"])
def test_mnist_family_from_idx_files(tmp_path: Path, name: str) -> None:
    folder, first_classes = TORCHVISION_CLASSES[name]
    splits = write_mnist_family(tmp_path, folder)
    for split, (pixels, labels) in splits.items():
        dataset = DATASETS.build(
            {"name": name, "root": str(tmp_path), "download": False, "split": split}
        )
        images, targets = dataset.tensors
        assert images.shape == (len(pixels), 1, 28, 28) and images.dtype == torch.float32
        assert targets.dtype == torch.long and targets.tolist() == labels.tolist()
        assert torch.equal(images[:, 0], scaled(pixels))
        assert images[0, 0, 1, 1] == -1.0 and (images[:, 0, 0, 0] == 1.0).all()
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert dataset.classes[:5] == first_classes and num_classes(dataset) == 10
    # files present: download stays on by default and nothing is fetched
    resized = DATASETS.build({"name": name, "root": str(tmp_path), "size": 32})
    images, targets = resized.tensors
    assert images.shape == (5, 1, 32, 32)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert targets.tolist() == splits["train"][1].tolist()
    uniform = images[1, 0, 8:, 8:]  # away from the bright corner pixel: the constant 51
    torch.testing.assert_close(uniform, torch.full_like(uniform, 51 / 127.5 - 1))


def test_mnist_family_unreadable_file(tmp_path: Path) -> None:
    write_mnist_family(tmp_path, "KMNIST")
    (tmp_path / "KMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\0\0\0\0junk")
    with pytest.raises(DatasetError) as info:
        DATASETS.build({"name": "kmnist", "root": str(tmp_path), "download": False})
    message = str(info.value)
    folder = (tmp_path / "KMNIST" / "raw").resolve()
    assert f"KMNIST files in {folder} are unreadable" in message
    assert "data.root" in message and "AssertionError" in message


def test_mnist_family_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        DATASETS.build({"name": "fashion_mnist", "root": str(tmp_path), "download": False})
    message = str(info.value)
    folder = (tmp_path / "FashionMNIST" / "raw").resolve()
    assert f"FashionMNIST files missing in {folder}: " in message
    assert all(name in message for name in MNIST_FILES)
    assert "data.download: true" in message and "FashionMNIST/raw/" in message


def test_real_mnist_classes_size_and_default(mnist_root: Path) -> None:
    native = mnist(str(mnist_root), download=False, split="test")
    assert native.classes == [str(digit) for digit in range(10)]
    assert native.tensors[0].shape == (10000, 1, 28, 28)
    same = DATASETS.build(
        {"name": "mnist", "root": str(mnist_root), "download": False, "split": "test", "size": 28}
    )
    assert torch.equal(same.tensors[0], native.tensors[0])
    resized = mnist(str(mnist_root), download=False, split="test", size=32)
    assert resized.tensors[0].shape == (10000, 1, 32, 32)
    assert resized.tensors[0].min() >= -1.0 and resized.tensors[0].max() <= 1.0
    assert torch.equal(resized.tensors[1], native.tensors[1])
    assert num_classes(native) == 10
    assert num_classes(Subset(Subset(native, range(100)), range(10))) == 10
    assert num_classes(TensorDataset(torch.zeros(2, 1, 2, 2))) == 0


# ---- CIFAR ------------------------------------------------------------------------------------


def test_cifar_layout_is_converted_to_channels_first() -> None:
    pixels = np.zeros((2, 32, 32, 3), dtype=np.uint8)  # NHWC, as torchvision holds CIFAR
    pixels[..., 0] = 255
    pixels[1, :, :, 2] = 51
    dataset = in_memory_dataset(_nchw(pixels), [3, 7], ["a"] * 10, None)
    images, labels = dataset.tensors
    assert images.shape == (2, 3, 32, 32) and images.is_contiguous()
    assert (images[:, 0] == 1.0).all() and (images[:, 1] == -1.0).all()
    assert (images[0, 2] == -1.0).all() and torch.allclose(images[1, 2], scaled(pixels[1, ..., 2]))
    assert labels.dtype == torch.long and labels.tolist() == [3, 7]
    assert in_memory_dataset(_nchw(pixels), [3, 7], ["a"], 64).tensors[0].shape == (2, 3, 64, 64)


@pytest.mark.parametrize(
    ("name", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_cifar_without_files_and_download_off(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DatasetError) as info:
        DATASETS.build({"name": name, "root": str(tmp_path), "download": False, "size": 64})
    message = str(info.value)
    assert f"files missing in {(tmp_path / folder).resolve()}: " in message
    assert "download is off" in message and "data.download: true" in message
    assert f"holds {folder}/" in message


def test_cifar_download_offline_fails_fast(tmp_path: Path) -> None:
    try:
        socket.getaddrinfo("www.cs.toronto.edu", 443)
    except OSError:
        pass
    else:
        pytest.skip("the CIFAR mirror resolves here; this checks the offline message")
    started = time.monotonic()
    with pytest.raises(DatasetError) as info:
        DATASETS.build({"name": "cifar10", "root": str(tmp_path), "download": True})
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert f"files missing in {(tmp_path / 'cifar-10-batches-py').resolve()}" in message
    assert "the download failed (" in message and "retry where the network reaches" in message


# ---- image folders ----------------------------------------------------------------------------


def save(path: Path, image: Image.Image) -> Path:
    """Save `image` at `path`, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    """cats: a grey PNG and, one level deeper, an RGBA .PNG; dogs: an RGB JPEG; plus noise."""
    root = tmp_path / "pets"
    save(root / "cats" / "grey.png", Image.new("L", (40, 30), 200))
    save(root / "cats" / "deeper" / "rgba.PNG", Image.new("RGBA", (20, 50), (0, 0, 255, 0)))
    save(root / "dogs" / "red.jpg", Image.new("RGB", (64, 64), (255, 0, 0)))
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "dogs" / "._red.jpg").write_bytes(b"resource fork, not an image")
    (root / ".thumbnails").mkdir()
    (root / ".thumbnails" / "x.png").write_bytes(b"hidden")
    (root / "no_images").mkdir()
    return root


@pytest.mark.parametrize("crop", ["center", "stretch"])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_classes_shapes_and_labels(
    class_folders: Path, channels: int, crop: str
) -> None:
    dataset = DATASETS.build(
        {
            "name": "image_folder",
            "root": str(class_folders),
            "size": 16,
            "channels": channels,
            "crop": crop,
        }
    )
    assert dataset.classes == ["cats", "dogs"] and num_classes(dataset) == 2
    assert [Path(file).name for file in dataset.files] == ["rgba.PNG", "grey.png", "red.jpg"]
    items = [dataset[index] for index in range(len(dataset))]
    assert [label for _, label in items] == [0, 0, 1]
    for image, _ in items:
        assert image.shape == (channels, 16, 16) and image.dtype == torch.float32
        assert image.min() >= -1.0 and image.max() <= 1.0
    rgba, grey, red = (image for image, _ in items)
    assert torch.equal(grey, torch.full_like(grey, 200 / 127.5 - 1))
    if channels == 3:
        assert torch.equal(rgba[:, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))  # alpha dropped
        assert (red[0] > 0.95).all() and (red[1:] < -0.95).all()
    else:
        luma = round(0.299 * 255)
        assert (red - (luma / 127.5 - 1)).abs().max() < 0.05


def test_image_folder_crop_modes(tmp_path: Path) -> None:
    stripes = np.zeros((10, 30), dtype=np.uint8)  # a white middle third between black thirds
    stripes[:, 10:20] = 255
    save(tmp_path / "flat" / "stripes.png", Image.fromarray(stripes))
    center = ImageFolderDataset(tmp_path / "flat", 10, channels=1, crop="center")[0][0]
    assert torch.equal(center, torch.ones(1, 10, 10))
    stretched = ImageFolderDataset(tmp_path / "flat", 10, channels=1, crop="stretch")[0][0]
    assert (stretched[0, :, 0] == -1.0).all() and (stretched[0, :, 5] == 1.0).all()
    assert (stretched[0, :, 9] == -1.0).all()
    as_rgb = ImageFolderDataset(tmp_path / "flat", 8, channels=3, crop="center")[0][0]
    assert as_rgb.shape == (3, 8, 8) and (as_rgb == 1.0).all()


def test_image_folder_flat_folder_is_one_class(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    for index in range(3):
        save(root / f"{index}.png", Image.new("RGB", (12 + index, 9), (index, 0, 0)))
    dataset = DATASETS.build({"name": "image_folder", "root": str(root), "size": 8})
    assert dataset.classes == ["faces"] and num_classes(dataset) == 1
    assert len(dataset) == 3 and {dataset[i][1] for i in range(3)} == {0}
    assert dataset[2][0].shape == (3, 8, 8)


def test_image_folder_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    deep = np.full((6, 6), 32768, dtype=np.uint16)
    deep[0] = 65535
    save(tmp_path / "deep" / "grey16.png", Image.fromarray(deep))
    image = ImageFolderDataset(tmp_path / "deep", 6, channels=1)[0][0]
    assert (image[0, 0] == 1.0).all()
    assert torch.equal(image[0, 1:], scaled(np.full((5, 6), 128, dtype=np.uint8)))


def test_image_folder_mixed_layout_is_refused(class_folders: Path) -> None:
    save(class_folders / "loose.png", Image.new("L", (4, 4)))
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(class_folders, 8)
    message = str(info.value)
    assert f"image folder {class_folders.resolve()} mixes 1 images" in message
    assert "loose.png" in message and "cats, dogs" in message and "subfolder" in message


def test_image_folder_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="does not exist") as info:
        DATASETS.build({"name": "image_folder", "root": str(missing), "size": 8})
    assert str(missing.resolve()) in str(info.value) and "data.root" in str(info.value)


def test_image_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError) as info:
        ImageFolderDataset(tmp_path / "docs", 8)
    message = str(info.value)
    assert f"no images found in {(tmp_path / 'docs').resolve()}" in message
    assert ".jpg" in message and ".png" in message and ".webp" in message


def test_image_folder_unreadable_image_is_named(tmp_path: Path) -> None:
    good = save(tmp_path / "set" / "a.png", Image.new("RGB", (32, 32), (9, 9, 9)))
    save(tmp_path / "set" / "b.png", Image.new("RGB", (32, 32), (9, 9, 9)))
    dataset = ImageFolderDataset(tmp_path / "set", 8)
    assert dataset[0][0].shape == (3, 8, 8)
    Path(dataset.files[1]).write_bytes(good.read_bytes()[:60])  # cut short after the listing
    with pytest.raises(DatasetError) as info:
        dataset[1]
    assert f"cannot read image {dataset.files[1]}" in str(info.value)
    assert "Replace or delete that file" in str(info.value)
    with pytest.raises(DatasetError, match=r"cannot read image .*b\.png"):
        list(DataLoader(dataset, batch_size=2, num_workers=1))


EMOJI = Path(__file__).resolve().parents[2] / "shared" / "data" / "emoji" / "google"


def listing(folder: Path) -> dict[str, tuple[int, int, float]]:
    """Every name below `folder` with its mode, size and mtime, read with lstat only."""
    found = {}
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            info = os.lstat(os.path.join(parent, name))
            found[os.path.relpath(os.path.join(parent, name), folder)] = (
                info.st_mode,
                info.st_size,
                info.st_mtime,
            )
    return found


def test_image_folder_skips_and_lists_what_is_not_an_image_and_never_opens_a_fifo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "emoji"
    smileys = sorted((EMOJI / "smileys_emotion").glob("*.png"))[:3]
    animals = sorted((EMOJI / "animals_nature").glob("*.png"))[:2]
    assert len(smileys) == 3 and len(animals) == 2, f"emoji PNGs missing in {EMOJI}"
    for folder, sources in (("smileys", smileys), ("animals", animals)):
        (root / folder).mkdir(parents=True)
        for source in sources:
            (root / folder / source.name).write_bytes(source.read_bytes())
    bad = root / "animals"
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.png").write_text("a text file named .png")
    (bad / "cut.png").write_bytes(smileys[0].read_bytes()[:400])
    Image.open(smileys[0]).convert("RGB").save(bad / "whole.jpg")
    (bad / "cut.jpg").write_bytes((bad / "whole.jpg").read_bytes()[:500])
    os.mkfifo(bad / "pipe.png")
    (bad / "to_pipe.png").symlink_to(bad / "pipe.png")
    (bad / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "smileys" / "linked.png").symlink_to(root / "smileys" / smileys[1].name)
    (root / "smileys" / "loop").symlink_to(root)  # a folder link back up: read once
    before = listing(root)

    built: list[ImageFolderDataset] = []
    worker = threading.Thread(
        target=lambda: built.append(ImageFolderDataset(root, 16)), daemon=True
    )
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "building the dataset hung (a FIFO was opened?)"
    (dataset,) = built

    assert [Path(file).name for file in dataset.files] == [
        *(source.name for source in animals),
        "whole.jpg",
        *sorted([*(source.name for source in smileys), "linked.png"]),
    ]
    assert dataset.classes == ["animals", "smileys"]
    warning = capsys.readouterr().err
    assert warning.count("gankit: warning:") == 1
    assert f"image folder {root.resolve()}: skipped 8 file(s) that are not readable" in warning
    for name, why in {
        "empty.png": "empty",
        "notes.png": "not an image in a format PIL reads",
        "cut.png": "not a readable image",
        "cut.jpg": "not a readable image",
        "pipe.png": "a FIFO, not opened",
        "to_pipe.png": "a link to a FIFO",
        "gone.png": "a broken link",
    }.items():
        assert f"animals/{name} ({why}" in warning, name
    assert "smileys/loop (a link to a folder already read" in warning
    assert "training uses the other 7" in warning
    images = next(iter(DataLoader(dataset, batch_size=7)))[0]
    assert images.shape == (7, 3, 16, 16) and images.isfinite().all()
    assert listing(root) == before


def test_image_folder_of_only_bad_files_names_them(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no images found .*set/?: skipped 1 file.*empty\.png"):
        ImageFolderDataset(tmp_path / "set", 8)


def test_image_folder_loads_in_worker_processes(class_folders: Path) -> None:
    dataset = ImageFolderDataset(class_folders, 8, channels=1)
    assert pickle.loads(pickle.dumps(dataset)).files == dataset.files
    loader = DataLoader(dataset, batch_size=2, num_workers=1)
    batches = list(loader)
    images = torch.cat([batch[0] for batch in batches])
    labels = torch.cat([batch[1] for batch in batches])
    assert torch.equal(images, torch.stack([dataset[i][0] for i in range(len(dataset))]))
    assert labels.tolist() == [0, 0, 1]


# ---- recipes ----------------------------------------------------------------------------------


def recipe_with(data: dict[str, Any]) -> dict[str, Any]:
    """The reference recipe with its data section replaced."""
    raw = yaml.safe_load(REFERENCE_RECIPE.read_text())
    raw["data"] = {**data, "batch_size": 8}
    return raw


@pytest.mark.parametrize("name", ["fashion_mnist", "kmnist", "cifar10", "cifar100", "mnist"])
def test_recipes_accept_torchvision_datasets_and_reject_unknown_keys(name: str) -> None:
    recipe = validate_recipe(recipe_with({"name": name, "size": 32}))
    assert recipe.data.name == name and recipe.data.size == 32
    assert recipe.data.root == "data" and recipe.data.split == "train"
    with pytest.raises(RecipeError, match=r"unknown key data\.sise; did you mean 'size'\?"):
        validate_recipe(recipe_with({"name": name, "sise": 32}))
    with pytest.raises(RecipeError, match=r"data\.size: Input should be greater than 0"):
        validate_recipe(recipe_with({"name": name, "size": 0}))


def test_recipes_accept_image_folders_and_reject_unknown_keys() -> None:
    recipe = validate_recipe(recipe_with({"name": "image_folder", "root": "faces", "size": 64}))
    assert (recipe.data.channels, recipe.data.crop) == (3, "center")
    with pytest.raises(RecipeError, match=r"unknown key data\.chanels; did you mean 'channels'"):
        validate_recipe(recipe_with({"name": "image_folder", "root": "x", "size": 8, "chanels": 1}))
    with pytest.raises(RecipeError, match=r"data\.size is required but missing"):
        validate_recipe(recipe_with({"name": "image_folder", "root": "x"}))
    with pytest.raises(RecipeError, match=r"data\.crop: "):
        validate_recipe(
            recipe_with({"name": "image_folder", "root": "x", "size": 8, "crop": "fit"})
        )
