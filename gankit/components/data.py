"""Datasets: each returns a torch Dataset of (image, label), images float (C, H, W) in [-1, 1].

Every dataset built here carries `classes`, the list of its class names; `num_classes` reads it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset, Subset, TensorDataset

from gankit.components.image_files import find_images, open_image_file
from gankit.config.registry import DATASETS
from gankit.core.errors import DatasetError, cut, warn
from gankit.core.sizes import MAX_IMAGE_SIDE, check_fits

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)
CIFAR100_FILES = ("train", "test", "meta")
RESIZE_CHUNK = 4096  # images resized at a time, to bound the extra memory of `size`


@dataclass(frozen=True)
class TorchvisionSource:
    """Where a torchvision dataset keeps its files under `root`, and how to describe them."""

    title: str  # the dataset's name in messages
    class_name: str  # the torchvision.datasets class
    folder: str  # the folder torchvision reads, relative to root
    files: tuple[str, ...]  # the files torchvision checks for there
    form: str  # what the files are, for the message that asks for them
    mirrors: str  # where torchvision downloads them from, in words

    def path(self, root: str) -> Path:
        """The resolved folder torchvision reads for this `root`."""
        return (Path(root).expanduser() / self.folder).resolve()


MNIST_SOURCE = TorchvisionSource(
    "MNIST", "MNIST", "MNIST/raw", MNIST_FILES, "uncompressed", "the MNIST mirrors"
)
FASHION_MNIST_SOURCE = TorchvisionSource(
    "FashionMNIST",
    "FashionMNIST",
    "FashionMNIST/raw",
    MNIST_FILES,
    "uncompressed",
    "the Fashion-MNIST mirror",
)
KMNIST_SOURCE = TorchvisionSource(
    "KMNIST", "KMNIST", "KMNIST/raw", MNIST_FILES, "uncompressed", "the KMNIST mirror"
)
CIFAR10_SOURCE = TorchvisionSource(
    "CIFAR-10",
    "CIFAR10",
    "cifar-10-batches-py",
    CIFAR10_FILES,
    "the Python version, as extracted from cifar-10-python.tar.gz",
    "www.cs.toronto.edu",
)
CIFAR100_SOURCE = TorchvisionSource(
    "CIFAR-100",
    "CIFAR100",
    "cifar-100-python",
    CIFAR100_FILES,
    "the Python version, as extracted from cifar-100-python.tar.gz",
    "www.cs.toronto.edu",
)


def _register_torchvision(
    name: str,
    source: TorchvisionSource,
    summary: str,
    classes: Sequence[str] | None = None,
) -> Any:
    """Register a torchvision dataset under `name`, loaded whole into memory
    (`in_memory_dataset`)."""

    def load(
        root: Annotated[
            str,
            Field(
                description="folder holding the torchvision folder "
                "(MNIST/raw/, cifar-10-batches-py/...)"
            ),
        ] = "data",
        download: Annotated[
            bool, Field(description="download the files when they are missing")
        ] = True,
        split: Annotated[
            Literal["train", "test"], Field(description="train or test split")
        ] = "train",
        size: Annotated[
            int | None,
            Field(
                gt=0,
                le=MAX_IMAGE_SIDE,
                description="resize to size x size (bilinear, antialiased); none: native; at "
                f"most {MAX_IMAGE_SIDE:,}",
            ),
        ] = None,
    ) -> TensorDataset:
        dataset = _open_torchvision(source, root, download, split)
        images = dataset.data
        images = _nchw(images) if images.ndim == 4 else images.unsqueeze(1)  # CIFAR is NHWC
        return in_memory_dataset(images, dataset.targets, classes or dataset.classes, size)

    load.__name__ = load.__qualname__ = name
    load.__doc__ = summary
    return DATASETS.register(name)(load)


mnist = _register_torchvision(
    "mnist",
    MNIST_SOURCE,
    "MNIST digits, 1x28x28, scaled to [-1, 1] once and held in memory.",
    classes=[str(digit) for digit in range(10)],
)
fashion_mnist = _register_torchvision(
    "fashion_mnist",
    FASHION_MNIST_SOURCE,
    "Fashion-MNIST clothing, 1x28x28, scaled to [-1, 1] once and held in memory.",
)
kmnist = _register_torchvision(
    "kmnist",
    KMNIST_SOURCE,
    "Kuzushiji-MNIST characters, 1x28x28, scaled to [-1, 1] once and held in memory.",
)
cifar10 = _register_torchvision(
    "cifar10",
    CIFAR10_SOURCE,
    "CIFAR-10 photos, 3x32x32 in 10 classes, scaled to [-1, 1] once and held in memory.",
)
cifar100 = _register_torchvision(
    "cifar100",
    CIFAR100_SOURCE,
    "CIFAR-100 photos, 3x32x32 in 100 classes, scaled to [-1, 1] once and held in memory.",
)


def _open_torchvision(
    source: TorchvisionSource,
    root: str,
    download: bool,
    split: Literal["train", "test"],
    root_setting: str = "data.root",
) -> Any:
    """The torchvision dataset, or a DatasetError saying what is missing, where, and the fix
    (`root_setting` names the setting that gave `root`)."""
    import torchvision.datasets

    folder = source.path(root)
    missing = [name for name in source.files if not (folder / name).exists()]
    if missing and not download:
        raise DatasetError(
            files_message(source, folder, missing, "download is off", download, root_setting)
        )
    try:
        cls = getattr(torchvision.datasets, source.class_name)
        return cls(str(Path(root).expanduser()), train=split == "train", download=download)
    except Exception as error:  # torchvision raises several types for offline and bad files
        reason = _failure(error)
        why = f"the download failed ({reason})" if missing else f"loading them failed ({reason})"
        raise DatasetError(
            files_message(source, folder, missing, why, download, root_setting)
        ) from None


def _failure(error: Exception) -> str:
    """torchvision's error in a few words: for a download, the last mirror's network error
    (torchvision lists every mirror it tried), else the error's type and text."""
    text = " ".join(str(error).split())
    network = re.findall(r"<urlopen error (.+?)>", text)
    if network:
        return f"no connection: {cut(network[-1], 120)}"
    return cut(f"{type(error).__name__}: {text}", 300)


def files_message(
    source: TorchvisionSource,
    folder: Path,
    missing: Sequence[str],
    why: str,
    download: bool,
    root_setting: str = "data.root",
) -> str:
    """The message for a torchvision dataset whose files are missing or unreadable."""
    where = f"{source.title} files missing in {folder}: {', '.join(missing)}"
    if not missing:
        where = f"{source.title} files in {folder} are unreadable or fail torchvision's checks"
    layout = source.folder.split("/")[0] + ("/raw/" if source.folder.endswith("/raw") else "/")
    fixes = f"point {root_setting} at the folder that holds {layout}"
    if root_setting == "data.root" and download and missing:  # the download failed
        return (
            f"{where}; {why}; retry where the network reaches {source.mirrors}, or train on a "
            f"copy: data.root=PATH data.download=false, with PATH the folder that holds "
            f"{layout} ({source.form})"
        )
    if root_setting == "data.root":  # only training's data section can download
        retry = "retry" if download else "set data.download: true"
        fixes += f", or {retry} where the network reaches {source.mirrors}"
    else:
        fixes += f" (download them where the network reaches {source.mirrors})"
    return (
        f"{where}; {why}. Put the files {', '.join(source.files)} ({source.form}) in that "
        f"folder, or {fixes}."
    )


TORCHVISION_SOURCES = {
    "mnist": MNIST_SOURCE,
    "fashion_mnist": FASHION_MNIST_SOURCE,
    "kmnist": KMNIST_SOURCE,
    "cifar10": CIFAR10_SOURCE,
    "cifar100": CIFAR100_SOURCE,
}
NATIVE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "kmnist": (1, 28, 28)}
NATIVE_SHAPES |= {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
NATIVE_CLASSES = {"mnist": 10, "fashion_mnist": 10, "kmnist": 10, "cifar10": 10, "cifar100": 100}


def torchvision_split(
    name: str,
    root: str,
    split: Literal["train", "test"],
    root_setting: str,
    size: int | None = None,
) -> TensorDataset:
    """One split of a registered torchvision dataset, in memory (never downloaded; a missing
    file's error names `root_setting`, the setting that gave `root`)."""
    dataset = _open_torchvision(TORCHVISION_SOURCES[name], root, False, split, root_setting)
    images = dataset.data
    images = _nchw(images) if images.ndim == 4 else images.unsqueeze(1)
    classes = [str(digit) for digit in range(10)] if name == "mnist" else dataset.classes
    return in_memory_dataset(images, dataset.targets, classes, size)


def mnist_reference(root: str, split: Literal["train", "test"], root_setting: str) -> torch.Tensor:
    """MNIST's images of one split, (N, 1, 28, 28) in [-1, 1], for evaluation (never
    downloaded; errors name `root_setting`)."""
    return torchvision_split("mnist", root, split, root_setting).tensors[0]


def declared_shape(name: str, params: dict[str, Any]) -> tuple[int, int, int] | None:
    """The (C, H, W) images a built-in dataset section gives, known without reading any file;
    None for datasets whose shape shows only once loaded (plugins)."""
    if name in NATIVE_SHAPES:
        channels, height, width = NATIVE_SHAPES[name]
        size = params.get("size")
        return (channels, size, size) if size else (channels, height, width)
    if name in ("image_folder", "hf_dataset"):
        return (params.get("channels", 3), params["size"], params["size"])
    return None


def _nchw(images: Any) -> torch.Tensor:
    """(N, H, W, C) uint8 numpy images as a contiguous (N, C, H, W) tensor."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def in_memory_dataset(
    images: torch.Tensor, labels: Any, classes: Sequence[str], size: int | None
) -> TensorDataset:
    """A TensorDataset of uint8 (N, C, H, W) images scaled to [-1, 1] (and resized to `size`)."""
    count, channels = images.shape[:2]
    height, width = (size, size) if size else images.shape[-2:]
    what = f"{count:,} images of {channels}x{height}x{width} held in memory as float32"
    check_fits(
        count * channels * height * width * 4,
        "cpu",
        f"data.size={size} ({what})" if size else f"the dataset ({what})",
        hint="lower data.size" if size else "resize it with data.size, or free memory",
    )
    if size is None or tuple(images.shape[-2:]) == (size, size):
        scaled = from_uint8(images)
    else:
        scaled = torch.empty((images.shape[0], images.shape[1], size, size))
        for start in range(0, images.shape[0], RESIZE_CHUNK):
            chunk = from_uint8(images[start : start + RESIZE_CHUNK])
            resized = torch.nn.functional.interpolate(
                chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            scaled[start : start + RESIZE_CHUNK] = resized.clamp_(-1.0, 1.0)
    targets = labels.clone() if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    dataset = TensorDataset(scaled, targets.long())
    dataset.classes = list(classes)  # type: ignore[attr-defined]
    return dataset


# The parameters every kind that decodes image files shares, declared once
ImageSide = Annotated[
    int,
    Field(
        gt=0,
        le=MAX_IMAGE_SIDE,
        description=f"images come out size x size; at most {MAX_IMAGE_SIDE:,}",
    ),
]
ImageChannels = Annotated[Literal[1, 3], Field(description="1: greyscale, 3: RGB")]
CropMode = Annotated[
    Literal["center", "stretch"],
    Field(
        description="center: short side to size, then the central square; stretch: to size x size"
    ),
]


@DATASETS.register("image_folder")
def image_folder(
    root: Annotated[
        str,
        Field(
            description="folder of images: one subfolder per class, or the images directly in "
            "it; or a folder `gankit data prepare` wrote (read as `prepared`)"
        ),
    ],
    size: ImageSide,
    channels: ImageChannels = 3,
    crop: CropMode = "center",
) -> Dataset:
    """Image files from a folder, decoded per item; subfolders are classes."""
    from gankit.components.prepared.dataset import prepared_for_image_folder

    prepared = prepared_for_image_folder(root, size, channels)  # a folder `data prepare` wrote
    if prepared is not None:
        return prepared
    return ImageFolderDataset(root, size, channels=channels, crop=crop)


class ImageFolderDataset(Dataset):
    """Image files under `root`, found recursively and decoded when an item is read. Files that
    do not open as images (empty, not an image, cut short, a FIFO or device) are skipped with
    one warning that lists them (see `image_files.find_images`).

    Images in first-level subfolders are labelled by subfolder (class names sorted, like
    torchvision's ImageFolder); images directly in `root` form one class named after `root`.
    Names starting with '.' are skipped. Items are (float (channels, size, size) in [-1, 1],
    int label). Picklable, so DataLoader workers can read it.
    """

    def __init__(
        self,
        root: str | Path,
        size: int,
        *,
        channels: Literal[1, 3] = 3,
        crop: Literal["center", "stretch"] = "center",
    ) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if crop not in ("center", "stretch"):
            raise ValueError(f"crop must be 'center' or 'stretch', got {crop!r}")
        folder = Path(root).expanduser().resolve()
        if not folder.is_dir():
            state = "is not a folder" if folder.exists() else "does not exist"
            raise DatasetError(
                f"image folder {folder} {state}. Point data.root at a folder of images (one "
                "subfolder per class, or the images directly in it)."
            )
        listing = find_images(folder, tuple(IMG_EXTENSIONS))
        found = listing.images
        if not found:
            unreadable = f"; {listing.describe_skipped(folder)}" if listing.skipped else ""
            raise DatasetError(
                f"no images found in {folder} (searched it and its subfolders for "
                f"{', '.join(IMG_EXTENSIONS)}, in any case; names starting with '.' are "
                "skipped). Put images there or point data.root at the folder that holds them"
                f"{unreadable}."
            )
        if listing.skipped:
            warn(listing.describe_skipped(folder))
        loose = [path for path in found if len(path.parts) == 1]
        nested = sorted({path.parts[0] for path in found if len(path.parts) > 1})
        if loose and nested:
            shown = ", ".join(str(path) for path in loose[:3]) + (", ..." if len(loose) > 3 else "")
            raise DatasetError(
                f"image folder {folder} mixes {len(loose)} images directly in it ({shown}) with "
                f"images in class subfolders ({', '.join(nested)}). Move the loose images into "
                "a subfolder of their own, or point data.root at a folder with one layout."
            )
        self.root = str(folder)
        self.size = size
        self.channels = channels
        self.crop = crop
        self.classes: list[str] = nested or [folder.name]
        index = {name: label for label, name in enumerate(self.classes)}
        self.files = [str(folder / path) for path in found]
        self.labels = [index[path.parts[0]] if nested else 0 for path in found]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            pixels = _decode(path, self.channels)
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
            reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
            raise DatasetError(
                f"cannot read image {path} ({reason}). Replace or delete that file, or move "
                f"it out of {self.root}."
            ) from None
        return from_uint8(fit_image(pixels, self.size, self.crop)), self.labels[index]


def _decode(path: str, channels: int) -> torch.Tensor:
    """The image file as a uint8 (channels, H, W) tensor (see `image_pixels`)."""
    from PIL import Image

    with open_image_file(path) as handle, Image.open(handle) as image:
        return image_pixels(image, channels)


def image_pixels(image: Any, channels: int) -> torch.Tensor:
    """An opened PIL image as a uint8 (channels, H, W) tensor, turned upright by its EXIF
    orientation (in place); 16-bit greyscale scaled to 8 bits. Every image source decodes
    through it, so the same picture gives the same pixels whatever holds it."""
    import numpy as np
    from PIL import Image, ImageOps
    from torchvision.transforms.v2.functional import pil_to_tensor

    ImageOps.exif_transpose(image, in_place=True)
    if image.mode.startswith("I;16"):
        deep = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(deep), 0, 255).astype(np.uint8), mode="L")
    return pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))


def fit_image(pixels: torch.Tensor, size: int, crop: str) -> torch.Tensor:
    """Resize (bilinear, antialiased) a (C, H, W) image to (C, size, size)."""
    from torchvision.transforms.v2.functional import center_crop, resize

    if crop == "center":
        side = min(pixels.shape[-2:])
        pixels = center_crop(pixels, [side, side])
    if tuple(pixels.shape[-2:]) == (size, size):
        return pixels
    return resize(pixels, [size, size], antialias=True)


class Mirrored(Dataset):
    """A dataset followed by its images mirrored left-right (`data.hflip`): twice the items,
    item i + len(dataset) being item i flipped, with the same label."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.size = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return 2 * self.size

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image, label = self.dataset[index % self.size]
        return (image.flip(-1) if index >= self.size else image), label


def base_dataset(dataset: Dataset) -> Dataset:
    """The dataset behind any Subsets or mirrors of it."""
    while isinstance(dataset, Subset | Mirrored):
        dataset = dataset.dataset
    return dataset


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (0..255) as float images in [-1, 1], the range networks train on."""
    return pixels.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] as uint8 pixels, clamped and rounded."""
    return images.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def num_classes(dataset: Dataset) -> int:
    """How many classes `dataset` has (its `classes`, seen through Subsets); 0 when unknown."""
    classes = getattr(base_dataset(dataset), "classes", None)
    return len(classes) if classes is not None else 0


def image_shape(dataset: torch.utils.data.Dataset) -> tuple[int, int, int]:
    """The (C, H, W) shape of the dataset's images, read from its first item."""
    first = dataset[0]
    image = first[0] if isinstance(first, tuple | list) else first
    return tuple(image.shape)  # type: ignore[return-value]
