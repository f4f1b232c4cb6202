"""Datasets: each returns a torch Dataset of (image, label), images float (C, H, W) in [-1, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

from gankit.errors import DatasetError
from gankit.registry import DATASETS

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MNISTParams(BaseModel):
    """Where MNIST lives and whether it may be downloaded."""

    model_config = ConfigDict(extra="forbid")
    root: str = Field("data", description="folder holding MNIST/raw/ (torchvision layout)")
    download: bool = Field(True, description="download the files when they are missing")
    split: Literal["train", "test"] = Field("train", description="train (60k) or test (10k)")


@DATASETS.register("mnist", params=MNISTParams)
def mnist(
    root: str = "data", download: bool = True, split: Literal["train", "test"] = "train"
) -> TensorDataset:
    """MNIST digits, 1x28x28, scaled to [-1, 1] once and held in memory."""
    from torchvision.datasets import MNIST

    raw = Path(root).expanduser() / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).exists()]
    if missing and not download:
        raise DatasetError(
            _missing_message(raw, missing, "download is off", "or set data.download: true")
        )
    try:
        dataset = MNIST(str(Path(root).expanduser()), train=split == "train", download=download)
    except Exception as error:  # torchvision raises several types for offline and bad files
        raise DatasetError(
            _missing_message(
                raw,
                missing,
                f"the download failed ({type(error).__name__}: {' '.join(str(error).split())})",
                "or retry where the network reaches the MNIST mirrors",
            )
        ) from None
    images = dataset.data.unsqueeze(1).float().div_(127.5).sub_(1.0)
    return TensorDataset(images, dataset.targets.clone())


def _missing_message(raw: Path, missing: list[str], why: str, remedy: str) -> str:
    return (
        f"MNIST files missing in {raw.resolve()}: {', '.join(missing) or 'none, but unreadable'}; "
        f"{why}. Put the four files {', '.join(MNIST_FILES)} (uncompressed) in that folder, "
        f"point data.root at the folder that holds MNIST/raw/, {remedy}."
    )


def image_shape(dataset: torch.utils.data.Dataset) -> tuple[int, int, int]:
    """The (C, H, W) shape of the dataset's images, read from its first item."""
    first = dataset[0]
    image = first[0] if isinstance(first, tuple | list) else first
    return tuple(image.shape)  # type: ignore[return-value]
