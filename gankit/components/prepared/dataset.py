"""The `prepared` dataset: what `gankit data prepare` wrote, read memory-mapped.

A prepared folder holds `manifest.json` and `images-00000.safetensors`, ... (uint8 `images`
(N, C, S, S) and int64 `labels` (N,)). Opening it reads the manifest within bounds, checks each
shard's SHA-256 against it, and maps the shards: items are read from the page cache, never
decoded. The whole set as float tensors (`tensors`) is made only when asked for, by the
trainer's `perf.data_on_device` path and the metrics' reference, as for the in-memory kinds.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import struct
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch.utils.data import TensorDataset

from gankit.components.data import from_uint8
from gankit.config.registry import DATASETS
from gankit.core.bounded import BoundedReadError, open_regular, parse_json, read_json_object
from gankit.core.errors import DatasetError
from gankit.core.sizes import MAX_CLASSES, MAX_IMAGE_SIDE, check_fits

MANIFEST = "manifest.json"
FORMAT = "gankit-prepared"
FORMAT_VERSION = 1
SHARD_NAME = re.compile(r"images-\d{5}\.safetensors")
MAX_MANIFEST_BYTES = 1 << 30  # a manifest names every image: ~100 bytes each
MAX_HEADER_BYTES = 1 << 16  # a shard's safetensors header: two tensors
HASH_CHUNK = 1 << 22


def shard_name(index: int) -> str:
    """The file name of shard `index`."""
    return f"images-{index:05d}.safetensors"


def is_prepared(root: str | Path) -> bool:
    """Whether `root` is a folder holding a prepared set's manifest."""
    path = Path(root).expanduser() / MANIFEST
    return path.is_file() and not path.is_symlink()


def _fail(root: Path, what: str) -> DatasetError:
    return DatasetError(
        f"prepared set {root}: {what}; re-run `gankit data prepare SOURCE OUT` to make it again"
    )


def _field(manifest: dict, key: str, kind: type | tuple[type, ...], root: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _fail(root, f"{MANIFEST} has no valid '{key}'")
    return value


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the prepared set in `root`, read within bounds and checked for shape."""
    try:
        manifest = read_json_object(
            root / MANIFEST, what="prepared-set manifest", max_bytes=MAX_MANIFEST_BYTES
        )
    except BoundedReadError as error:
        raise _fail(root, str(error)) from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise _fail(
            root,
            f"{MANIFEST} is not a format {FORMAT_VERSION} {FORMAT} manifest (format "
            f"{manifest.get('format')!r}, version {manifest.get('format_version')!r})",
        )
    size, channels = _field(manifest, "size", int, root), _field(manifest, "channels", int, root)
    classes = _field(manifest, "classes", list, root)
    if not 0 < size <= MAX_IMAGE_SIDE or channels not in (1, 3):
        raise _fail(root, f"{MANIFEST} gives size {size} and {channels} channels")
    if not 0 < len(classes) <= MAX_CLASSES or not all(isinstance(c, str) for c in classes):
        raise _fail(root, f"{MANIFEST} has no valid class names")
    for shard in _field(manifest, "shards", list, root):
        if not _valid_shard(shard):
            raise _fail(root, f"{MANIFEST} lists a shard it cannot describe: {shard!r:.80}")
    return manifest


def _valid_shard(shard: Any) -> bool:
    if not isinstance(shard, dict):
        return False
    name, count, digest = shard.get("file"), shard.get("count"), shard.get("sha256")
    return (
        isinstance(name, str)
        and SHARD_NAME.fullmatch(name) is not None
        and type(count) is int
        and count > 0
        and isinstance(digest, str)
    )


def _sha256(path: Path) -> str:
    descriptor = open_regular(path, what="prepared-set shard")
    digest = hashlib.sha256()
    with os.fdopen(descriptor, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tensor(header: dict, key: str, dtype: str, shape: list[int], start: int, path: Path) -> Any:
    info = header.get(key)
    if not isinstance(info, dict) or info.get("dtype") != dtype or info.get("shape") != shape:
        raise DatasetError(f"{path}: its '{key}' tensor is not {dtype} {shape}")
    begin, end = info["data_offsets"]
    return start + begin, start + end


def map_shard(
    path: Path, count: int, channels: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A shard's images (uint8 (count, C, S, S), memory-mapped, read-only use) and labels."""
    total = path.stat().st_size
    with os.fdopen(open_regular(path, what="prepared-set shard"), "rb") as handle:
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else MAX_HEADER_BYTES + 1
        if length > MAX_HEADER_BYTES:
            raise DatasetError(f"{path} is not a safetensors file gankit wrote")
        header = parse_json(handle.read(length), where=f"the header of {path}")
    start = 8 + length
    first, last = _tensor(header, "images", "U8", [count, channels, size, size], start, path)
    label_first, label_last = _tensor(header, "labels", "I64", [count], start, path)
    if max(last, label_last) > total or last - first != count * channels * size * size:
        raise DatasetError(f"{path}: its tensors do not fit the file")
    mapped = torch.from_file(str(path), shared=False, size=total, dtype=torch.uint8)
    images = mapped[first:last].view(count, channels, size, size)
    labels = mapped[label_first:label_last].clone().view(torch.int64)
    return images, labels


class PreparedDataset(TensorDataset):
    """A prepared set's images as float (C, S, S) in [-1, 1] with int labels, read from its
    memory-mapped shards (each checked against the manifest's SHA-256 when `verify`)."""

    def __init__(self, root: str | Path, *, verify: bool = True) -> None:
        folder = Path(root).expanduser().resolve()
        if not is_prepared(folder):
            state = "has no " + MANIFEST if folder.is_dir() else "does not exist"
            raise DatasetError(
                f"prepared set {folder} {state}; make one with `gankit data prepare SOURCE "
                f"{folder}` and point data.root at it"
            )
        manifest = read_manifest(folder)
        self.root, self.verify = str(folder), verify
        self.size, self.channels = manifest["size"], manifest["channels"]
        self.classes: list[str] = list(manifest["classes"])
        self._shards = manifest["shards"]
        self._open(folder)
        if len(self) != manifest.get("count"):
            raise _fail(folder, f"its shards hold {len(self)} images, the manifest says "
                                f"{manifest.get('count')!r}")  # fmt: skip
        self._float: torch.Tensor | None = None

    def _open(self, folder: Path) -> None:
        self._images, self._labels, self._starts = [], [], []
        total = 0
        for shard in self._shards:
            path = folder / shard["file"]
            if self.verify and _sha256(path) != shard["sha256"]:
                raise _fail(folder, f"{shard['file']} does not match its SHA-256 in {MANIFEST} "
                                    "(changed or damaged since it was written)")  # fmt: skip
            images, labels = map_shard(path, shard["count"], self.channels, self.size)
            if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(
                self.classes
            ):
                raise _fail(folder, f"{shard['file']} holds labels outside its classes")
            self._starts.append(total)
            self._images.append(images)
            self._labels.append(labels)
            total += shard["count"]
        self._count = total
        self._all_labels = torch.cat(self._labels)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # DataLoader workers map the shards again themselves,
        for key in ("_images", "_labels", "_all_labels", "_float"):
            state[key] = None
        state["verify"] = False  # checked once, when this set was opened
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open(Path(self.root))

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"index {index} out of range for {self._count} images")
        if self._float is not None:
            return self._float[index], int(self._all_labels[index])
        shard = bisect.bisect_right(self._starts, index) - 1
        row = index - self._starts[shard]
        return from_uint8(self._images[shard][row]), int(self._labels[shard][row])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Items `indices` gathered at once (a DataLoader's batch): one copy per shard."""
        if len(indices) and not -self._count <= min(indices) <= max(indices) < self._count:
            raise IndexError(f"an index of {indices[:4]}... is out of range for {len(self)} images")
        rows = torch.as_tensor(indices, dtype=torch.int64).remainder(max(self._count, 1))
        images = self._float[rows] if self._float is not None else from_uint8(self._gather(rows))
        return list(zip(images.unbind(0), self._all_labels[rows].tolist(), strict=True))

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        if len(self._images) == 1:
            return self._images[0].index_select(0, rows)
        pixels = torch.empty((len(rows), self.channels, self.size, self.size), dtype=torch.uint8)
        shard_of = torch.searchsorted(torch.tensor(self._starts), rows, right=True) - 1
        for shard in shard_of.unique().tolist():
            chosen = shard_of == shard
            pixels[chosen] = self._images[shard][rows[chosen] - self._starts[shard]]
        return pixels

    @property
    def pixels(self) -> torch.Tensor:
        """Every image as uint8 (N, C, S, S) (one shard's mapping, else a copy of all)."""
        return self._images[0] if len(self._images) == 1 else torch.cat(self._images)

    @property
    def labels(self) -> torch.Tensor:
        """Every label, int64 (N,)."""
        return self._all_labels

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """The whole set as the in-memory kinds hold it: float images in [-1, 1] and labels
        (made on first use, then kept; items are read from it afterwards)."""
        if self._float is None:
            count, side = self._count, self.size
            check_fits(
                count * self.channels * side * side * 4,
                "cpu",
                f"the prepared set {self.root} ({count:,} images held in memory as float32)",
                hint="train without perf.data_on_device, or use data.subset",
            )
            self._float = from_uint8(self.pixels)
        return self._float, self.labels


def prepared_for_image_folder(root: str | Path, size: int, channels: int) -> PreparedDataset | None:
    """The prepared set in `root` when `image_folder` is pointed at one (None when `root` holds
    no gankit manifest): it must hold images of the `size` and `channels` asked for."""
    if not is_prepared(root):
        return None
    try:
        manifest = read_json_object(
            Path(root).expanduser() / MANIFEST, what="manifest", max_bytes=MAX_MANIFEST_BYTES
        )
    except BoundedReadError:
        return None  # someone else's manifest.json: the folder's images are read as they are
    if manifest.get("format") != FORMAT:
        return None
    dataset = PreparedDataset(root)
    if (dataset.size, dataset.channels) != (size, channels):
        side, depth = dataset.size, dataset.channels
        raise DatasetError(
            f"data.root {root} holds images prepared at {depth}x{side}x{side}, not "
            f"{channels}x{size}x{size}: set data.size={side} data.channels={depth}, or prepare "
            f"the source again with --size {size} --channels {channels}"
        )
    return dataset


@DATASETS.register("prepared")
def prepared(
    root: Annotated[
        str, Field(description="folder written by `gankit data prepare` (manifest.json, shards)")
    ],
) -> PreparedDataset:
    """Images prepared once by `gankit data prepare`, memory-mapped and checked (SHA-256)."""
    return PreparedDataset(root)
