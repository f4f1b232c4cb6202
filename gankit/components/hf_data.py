"""Hugging Face `datasets` as a dataset source: a folder written by `save_to_disk`, or a Hub
dataset repo read through `load_dataset` (into the usual cache, `HF_DATASETS_CACHE` or
`HF_HOME`; with `HF_HUB_OFFLINE` or `HF_DATASETS_OFFLINE` set, from that cache alone).

Images are read from the image column's stored bytes (or the local file a row names) and decoded
as image folders decode their files (`data.image_pixels`, `data.fit_image`), so the same pictures
give the same pixels. `datasets` is imported only when such a dataset is opened. Nothing here
runs a dataset's code: datasets 4 and later load no scripts, and none is asked to.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch.utils.data import TensorDataset

from gankit.components.data import (
    CropMode,
    ImageChannels,
    ImageSide,
    fit_image,
    image_pixels,
    in_memory_dataset,
)
from gankit.components.image_files import open_image_file
from gankit.config.registry import DATASETS
from gankit.core.errors import DatasetError, cut, shown, warn
from gankit.core.sizes import MAX_CLASSES, check_fits, memory_size

INSTALL_HINT = "pip install 'gankit[datasets]'"
IMAGE_KEYS = {"bytes", "path"}  # the fields of datasets' Image storage
SAFE_FOLDER = re.compile(r"[\w][\w .+-]{0,99}")  # a class name usable as a folder name
SUFFIX = re.compile(r"\.\w{1,8}")  # a file suffix kept in a row's name
LISTED = 12  # the most names an error lists


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"data.name hf_dataset needs the datasets package; install it: {INSTALL_HINT}"
        ) from None
    return datasets


def _listed(names: Any) -> str:
    names = [str(name) for name in names]
    more = f", ... ({len(names)} in all)" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more if names else "none"


def open_hf_dataset(
    path: str, split: str, config: str | None = None, setting: str = "data.path"
) -> Any:
    """One split of a Hugging Face dataset as a `datasets.Dataset`: from the folder `path` when
    it exists (written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`), else from the
    Hub dataset repo `path` (its configuration `config`, for repos with several). Errors name
    `setting`, the setting that gave `path`."""
    datasets = _datasets()
    folder = Path(path).expanduser()
    if folder.exists():
        if config is not None:
            raise DatasetError(
                f"data.config {shown(config)} applies to Hub datasets, but {setting} is the "
                f"local folder {folder.resolve()}; leave data.config out"
            )
        return _from_disk(datasets, folder.resolve(), split, setting)
    if path.startswith(("/", "~", ".")) or path.count("/") > 1 or "\\" in path:
        raise DatasetError(
            f"{setting}: no folder {folder} (and {shown(path)} is not a Hub dataset repo id, "
            f"user/name); point {setting} at a folder written by save_to_disk"
        )
    return _from_hub(datasets, path, split, config, setting)


def _from_disk(datasets: Any, folder: Path, split: str, setting: str) -> Any:
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, NotADirectoryError):
        raise DatasetError(
            f"{folder} is not a dataset folder written by save_to_disk (no dataset_info.json "
            f"and state.json, nor a dataset_dict.json); point {setting} at such a folder, or "
            "at a Hub dataset repo (user/name)"
        ) from None
    except Exception as error:  # arrow and JSON readers raise several kinds on damaged files
        reason = cut(f"{type(error).__name__}: {' '.join(str(error).split())}", 200)
        raise DatasetError(
            f"cannot read the dataset folder {folder} ({reason}); save it again with save_to_disk"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DatasetError(
                f"no split {shown(split)} in the dataset folder {folder}; its splits: "
                f"{_listed(loaded)}. Set data.split to one of them"
            )
        return loaded[split]
    own = loaded.split
    if own is not None and str(own) != split:
        raise DatasetError(
            f"the dataset folder {folder} holds one split, {str(own)!r}, not {shown(split)}; "
            f"set data.split: {own}"
        )
    return loaded


def _from_hub(datasets: Any, repo_id: str, split: str, config: str | None, setting: str) -> Any:
    where = f"Hub dataset {shown(repo_id)}" + (f" (config {shown(config)})" if config else "")
    try:
        return datasets.load_dataset(repo_id, config, split=split)
    except datasets.exceptions.DatasetNotFoundError:
        raise DatasetError(
            f"{where} was not found or is not accessible, and no folder {shown(repo_id)} exists "
            f"here: check {setting}, or log in (`hf auth login` or HF_TOKEN) if it is private "
            "or gated"
        ) from None
    except ConnectionError:
        raise DatasetError(
            f"{where} is not in the Hugging Face cache ({datasets.config.HF_DATASETS_CACHE}) and "
            "the Hub cannot be reached (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set, or no "
            f"network); load it once online, or point {setting} at a folder written by "
            f"save_to_disk (no folder {shown(repo_id)} exists here)"
        ) from None
    except ValueError as error:
        text = " ".join(str(error).split())
        for word, setting_named in (("split", "data.split"), ("config", "data.config")):
            if word in text.lower():
                raise DatasetError(
                    f"{where}: {cut(text, 200)}; set {setting_named} to one of its {word}s"
                ) from None
        raise DatasetError(f"cannot load {where}: {cut(text, 200)}") from None
    except OSError as error:
        reason = cut(" ".join(str(error).split()), 200)
        raise DatasetError(f"cannot load {where}: {reason}") from None


def check_columns(dataset: Any, image_column: str, label_column: str | None) -> list[str]:
    """Refuse a missing or mistyped image or label column, in one line that lists the
    dataset's columns; return the class names (those of the ClassLabel column, else [])."""
    datasets = _datasets()
    features = dataset.features
    kinds = (f"{name} ({type(kind).__name__})" for name, kind in features.items())
    columns = f"its columns: {_listed(kinds)}"
    settings = {"data.image_column": image_column, "data.label_column": label_column}
    for setting, column in settings.items():
        if column is not None and column not in features:
            raise DatasetError(f"{setting}: no column {shown(column)} in the dataset; {columns}")
    image = features[image_column]
    stored = isinstance(image, dict) and set(image) <= IMAGE_KEYS and bool(set(image))
    if not (isinstance(image, datasets.Image) or stored):
        raise DatasetError(
            f"data.image_column: column {shown(image_column)} holds "
            f"{cut(type(image).__name__, 40)}, not images (an Image feature, or bytes/path "
            f"dicts); {columns}"
        )
    if label_column is None:
        return []
    label = features[label_column]
    if not isinstance(label, datasets.ClassLabel):
        raise DatasetError(
            f"data.label_column: column {shown(label_column)} holds "
            f"{cut(type(label).__name__, 40)}, not a ClassLabel; encode it before saving "
            f"(dataset.class_encode_column({label_column!r})), or set data.label_column: null "
            f"for unconditional training; {columns}"
        )
    if len(label.names) > MAX_CLASSES:
        raise DatasetError(
            f"data.label_column: column {shown(label_column)} has {len(label.names):,} classes, "
            f"more than gankit conditions on (at most {MAX_CLASSES:,}); set "
            "data.label_column: null for unconditional training"
        )
    return list(label.names)


def _row_name(index: int, width: int, label: int | None, classes: list[str], stored: str) -> str:
    """A row's relative name: '<class>/<row>' (or '<row>'), with the suffix of the file the row
    came from."""
    suffix = Path(stored).suffix.lower() if stored else ""
    if not SUFFIX.fullmatch(suffix):
        suffix = ".png"
    name = f"{index:0{width}d}{suffix}"
    if label is None:
        return name
    folder = classes[label] if SAFE_FOLDER.fullmatch(classes[label]) else f"class_{label}"
    return f"{folder}/{name}"


def _open_image(value: dict[str, Any]) -> Any:
    from PIL import Image

    if value.get("bytes"):
        image = Image.open(io.BytesIO(value["bytes"]))
    elif value.get("path"):
        with open_image_file(value["path"]) as handle:
            image = Image.open(io.BytesIO(handle.read()))
    else:
        raise ValueError("the row holds neither bytes nor a path")
    image.load()
    return image


def iter_hf_images(
    dataset: Any,
    image_column: str = "image",
    label_column: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> Iterator[tuple[str, Any, int | None]]:
    """The images of a `datasets.Dataset` as (relative name, PIL image, label or None), in
    row order: each image as stored (its EXIF orientation not yet applied), named
    '<class>/<row>.<suffix>' with a label column, '<row>.<suffix>' without. Rows that do not
    decode are left out and, when `skipped` is given, appended to it as (name, reason). The
    columns are checked first (`check_columns`)."""
    datasets = _datasets()
    classes = check_columns(dataset, image_column, label_column)
    columns = [image_column] + ([label_column] if label_column else [])
    raw = dataset.select_columns(columns)
    if isinstance(raw.features[image_column], datasets.Image):
        raw = raw.cast_column(image_column, datasets.Image(decode=False))
    width = len(str(max(len(raw) - 1, 0)))
    index = 0
    for batch in raw.with_format(None).iter(batch_size=256):
        labels = batch[label_column] if label_column else [None] * len(batch[image_column])
        for value, label in zip(batch[image_column], labels, strict=True):
            stored = (value or {}).get("path") or ""
            if label is not None and not 0 <= label < len(classes):
                raise DatasetError(
                    f"row {index} of column {shown(label_column)} has label {label}, not one "
                    f"of its {len(classes)} classes; drop or label that row, or set "
                    "data.label_column: null"
                )
            name = _row_name(index, width, label, classes, stored)
            index += 1
            try:
                image = _open_image(value or {})
            except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
                if skipped is not None:
                    skipped.append((name, cut(f"{type(error).__name__}: {error}", 100)))
                continue
            yield name, image, label


@DATASETS.register("hf_dataset")
def hf_dataset(
    path: Annotated[
        str,
        Field(
            min_length=1,
            description="a folder written by save_to_disk, or a Hub dataset repo (user/name)",
        ),
    ],
    size: ImageSide,
    split: Annotated[str, Field(min_length=1, description="the split to train on")] = "train",
    config: Annotated[
        str | None,
        Field(min_length=1, description="a Hub dataset's configuration, where it has several"),
    ] = None,
    image_column: Annotated[str, Field(min_length=1, description="the column of images")] = "image",
    label_column: Annotated[
        str | None,
        Field(
            min_length=1,
            description="a ClassLabel column, whose names are the classes; null: unlabelled",
        ),
    ] = None,
    channels: ImageChannels = 3,
    crop: CropMode = "center",
) -> TensorDataset:
    """A Hugging Face dataset (save_to_disk folder or Hub repo), decoded once into memory."""
    dataset = open_hf_dataset(path, split, config)
    classes = check_columns(dataset, image_column, label_column)
    count = len(dataset)
    if count == 0:
        raise DatasetError(f"split {shown(split)} of {shown(path)} has no rows; pick another")
    pixels = count * channels * size * size
    check_fits(
        pixels * 5,  # the decoded uint8 images, then their float32 copy
        "cpu",
        f"data.size={size} ({count:,} images of {channels}x{size}x{size}, "
        f"{memory_size(pixels)} as uint8 and 4x that as float32)",
        hint="lower data.size, or save part of the split (dataset.select(range(N)))",
    )
    images = torch.empty((count, channels, size, size), dtype=torch.uint8)
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    for _name, image, label in iter_hf_images(dataset, image_column, label_column, skipped):
        images[len(labels)] = fit_image(image_pixels(image, channels), size, crop)
        labels.append(label or 0)
    if not labels:
        raise DatasetError(
            f"no row of {shown(path)} (split {shown(split)}) decodes as an image: "
            f"{skipped[0][0]} ({skipped[0][1]}), ...; check column {shown(image_column)}"
        )
    if skipped:
        listed = "; ".join(f"{name} ({why})" for name, why in skipped[:8])
        warn(
            f"{shown(path)}: skipped {len(skipped)} row(s) whose image does not decode: "
            f"{listed}. Training uses the other {len(labels)}"
        )
    return in_memory_dataset(images[: len(labels)], labels, classes, None)
