"""A Hugging Face dataset as the source of `gankit data prepare` (`--hf`): a folder written by
`save_to_disk` or a Hub dataset repo, one entry per row.

Listing reads only the label column; each worker opens the dataset itself (memory-mapped Arrow
files) and reads a row's stored image bytes, so the rows go through the same checks, hashing
and decoding as files do.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from gankit.components.hf_data import check_columns, open_hf_dataset
from gankit.components.image_files import open_image_file
from gankit.components.prepared.sources import MAX_ENTRIES, MAX_FILE_BYTES, Entry, Listing
from gankit.core.errors import DatasetError

_opened: dict[tuple[int, HFSource], Any] = {}  # per process: each worker opens its own


@dataclass(frozen=True)
class HFSource:
    """Which dataset, split and columns `--hf` names."""

    path: str
    split: str = "train"
    config: str | None = None
    image_column: str = "image"
    label_column: str | None = None


def add_hf_arguments(parser: argparse.ArgumentParser) -> None:
    """`--hf` and the settings that pick a split and columns of a Hugging Face dataset."""
    parser.add_argument(
        "--hf",
        action="store_true",
        help="SOURCE is a Hugging Face dataset: a folder written by save_to_disk, or a Hub repo",
    )
    parser.add_argument("--split", default="train", help="with --hf: the split (train)")
    parser.add_argument("--config", help="with --hf: the Hub dataset's configuration")
    parser.add_argument("--image-column", default="image", help="with --hf: images (image)")
    parser.add_argument(
        "--label-column", help="with --hf: a ClassLabel column to take classes from (none)"
    )


def hf_source(args: argparse.Namespace) -> HFSource | None:
    """The dataset the parsed arguments name, or None without `--hf`."""
    if not args.hf:
        return None
    return HFSource(args.source, args.split, args.config, args.image_column, args.label_column)


def _dataset(source: HFSource) -> Any:
    return open_hf_dataset(source.path, source.split, source.config, setting="SOURCE")


def list_hf(source: HFSource) -> Listing:
    """One entry per row, named '<class>/<row>' (or '<row>' without a label column)."""
    dataset = _dataset(source)
    classes = check_columns(dataset, source.image_column, source.label_column)
    if len(dataset) > MAX_ENTRIES:
        raise DatasetError(
            f"{source.path} has {len(dataset):,} rows in split {source.split!r}, more than one "
            f"prepared set may hold ({MAX_ENTRIES:,}); prepare slices of it (--split "
            "'train[:50%]' for a Hub dataset)"
        )
    width = len(str(max(len(dataset) - 1, 0)))
    labels: list[Any] = [None] * len(dataset)
    if source.label_column is not None:
        labels = dataset.select_columns([source.label_column]).with_format(None)[
            source.label_column
        ]
    listing = Listing(root_name=os.path.basename(source.path.rstrip("/")) or "images")
    for row, label in enumerate(labels):
        group = classes[label] if label is not None and 0 <= label < len(classes) else ""
        name = f"{group}/{row:0{width}d}" if group else f"{row:0{width}d}"
        if label is not None and not group:
            listing.refused.append((name, "bad label", f"label {label} of {len(classes)} classes"))
            continue
        listing.entries.append(Entry(name, group, hf=source, row=row))
    return listing


def read_row(source: HFSource, row: int) -> bytes:
    """The stored bytes of one row's image (its bytes, or the regular file its path names), at
    most MAX_FILE_BYTES (else ValueError)."""
    key = (os.getpid(), source)
    if key not in _opened:
        import datasets

        dataset = _dataset(source).select_columns([source.image_column])
        if isinstance(dataset.features[source.image_column], datasets.Image):
            dataset = dataset.cast_column(source.image_column, datasets.Image(decode=False))
        _opened[key] = dataset.with_format(None)
    value = _opened[key][row][source.image_column] or {}
    if value.get("bytes"):
        data = value["bytes"]
    elif value.get("path"):
        with open_image_file(value["path"]) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    else:
        raise ValueError("the row holds neither image bytes nor a path")
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES:,} bytes")
    return bytes(data)
