"""The real side of the metrics: a dataset's images, their features, and a cache of those.

A dataset is read through gankit's registry without downloading. Datasets with a train/test
split give the split asked for; those without (image folders) give all their images. Features
of the real images depend only on the images and the extractor, so they are cached in a
safetensors file keyed by a hash of the dataset, split, image count, the images' bytes and the
extractor's weights (`cache_dir()`); a repeated evaluation reads them instead of recomputing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gankit._version import __version__
from gankit.components.data import TORCHVISION_SOURCES, to_uint8, torchvision_split
from gankit.config.registry import DATASETS
from gankit.core.atomic import atomic_file

CACHE_ENV = "GANKIT_CACHE"  # overrides where reference features are cached
T = TypeVar("T")


@dataclass(frozen=True)
class RealImages:
    """Real images (N, C, H, W) in [-1, 1], their labels, and what they are, in words."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    dataset: str
    split: str  # "train", "test", or "all" for datasets without a split

    def first(self, count: int | None) -> RealImages:
        """The first `count` images (a run's `data.subset`), or all of them for None."""
        if count is None or count >= len(self.images):
            return self
        split = f"{self.split}[:{count}]"
        return RealImages(
            self.images[:count], self.labels[:count], self.classes, self.dataset, split
        )

    @property
    def description(self) -> str:
        """For the protocol: which images these are."""
        what = "all images (no split)" if self.split == "all" else f"{self.split} split"
        return f"{self.dataset} {what}, {self.images.shape[0]} images, scaled to [-1, 1]"


def has_split(name: str) -> bool:
    """Whether the registered dataset `name` has train and test splits."""
    return "split" in DATASETS.get(name).params.model_fields


def read_split(
    name: str,
    root: str,
    split: str,
    *,
    image_shape: tuple[int, ...] | None = None,
    params: dict[str, Any] | None = None,
    root_setting: str = "--data-root",
) -> RealImages:
    """One split of the registered dataset `name` under `root`, in memory, never downloaded.

    `image_shape` (C, H, W) asks for images of that size where the dataset can resize
    (`size`) and choose channels (`channels`); `params` are further dataset parameters.
    """
    fields = DATASETS.get(name).params.model_fields
    spec: dict[str, Any] = {**(params or {}), "name": name, "root": root}
    if image_shape is not None and "size" in fields:
        spec["size"] = image_shape[-1]
    if image_shape is not None and "channels" in fields:
        spec["channels"] = image_shape[0]
    splits = "split" in fields
    if name in TORCHVISION_SOURCES:
        dataset = torchvision_split(name, root, split, root_setting, spec.get("size"))  # type: ignore[arg-type]
    else:
        dataset = DATASETS.build(
            {**spec, **({"split": split} if splits else {}), **_no_download(fields)}
        )
    images, labels = stack(dataset)
    classes = list(getattr(dataset, "classes", []) or [])
    return RealImages(images, labels, classes, name, split if splits else "all")


def _no_download(fields: Iterable[str]) -> dict[str, Any]:
    return {"download": False} if "download" in fields else {}


def stack(dataset: Any, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset's (image, label) items as two tensors (a TensorDataset's own, else read)."""
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    batches = list(loader)
    return torch.cat([b[0] for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches])


def held_out(count: int, split: str, fraction: float = 0.1) -> torch.Tensor:
    """Indices of a fixed split of `count` items for data without one: a seeded shuffle, the
    first `fraction` of it as "test", the rest as "train"."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    cut = max(1, round(count * fraction))
    return order[:cut] if split == "test" else order[cut:]


def cache_dir() -> Path:
    """Where reference features are cached: $GANKIT_CACHE, else $XDG_CACHE_HOME/gankit, else
    ~/.cache/gankit."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gankit"


def cache_key(real: RealImages, extractor: str, extractor_sha256: str) -> str:
    """The hash that names a cached set of reference features."""
    pixels = hashlib.sha256(to_uint8(real.images).numpy().tobytes()).hexdigest()
    fields = {
        "dataset": real.dataset,
        "split": real.split,
        "n": real.images.shape[0],
        "images_sha256": pixels,
        "extractor": extractor,
        "extractor_sha256": extractor_sha256,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def cached_features(
    real: RealImages,
    extractor: str,
    extractor_sha256: str,
    compute: Callable[[], torch.Tensor],
    *,
    use_cache: bool = True,
    write: bool = True,
) -> tuple[torch.Tensor, str | None]:
    """The reference features, read from the cache or computed by `compute()` and cached
    (atomically; `write` False: only read). Returns them and the cache file used, if any."""
    if not use_cache:
        return compute(), None
    path = cache_dir() / f"reference-{cache_key(real, extractor, extractor_sha256)}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["features"], str(path)
        except (SafetensorError, KeyError, OSError):
            pass  # damaged or foreign: recomputed and replaced below
    features = compute()
    if write:
        metadata = {
            "dataset": real.dataset,
            "split": real.split,
            "n": str(real.images.shape[0]),
            "extractor": extractor,
            "extractor_sha256": extractor_sha256,
            "gankit": __version__,
        }
        try:
            with atomic_file(path) as staging:
                save_file({"features": features.contiguous().cpu()}, str(staging), metadata)
        except OSError as error:  # a cache that cannot be written only costs time
            print(f"gankit: warning: reference features not cached ({error})", file=sys.stderr)
            return features, None
    return features, str(path)


def reference_features(
    real: RealImages,
    metric: Any,
    batch_size: int,
    *,
    show_progress: bool = False,
    write: bool = True,
    role: str = "reference",
) -> tuple[torch.Tensor, str | None]:
    """`metric`'s features of the real images (its `features`, `cache_name` and
    `extractor_sha256`), from the cache when there, and the cache file used; `role`: what the
    progress lines call the images."""

    def compute() -> torch.Tensor:
        batches = real.images.split(batch_size)
        what = f"{metric.cache_name} features of the {role}"
        shown = progress(batches, len(batches), what, show_progress)
        return torch.cat([metric.features(batch) for batch in shown])

    return cached_features(real, metric.cache_name, metric.extractor_sha256, compute, write=write)


def progress(items: Iterable[T], total: int, what: str, enabled: bool) -> Iterator[T]:
    """`items`, reporting on stderr as they pass: a tqdm bar on a terminal, otherwise a line at
    every tenth of `total`. Silent when not `enabled`."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(items, total=total, desc=what, unit="batch", leave=False)
        return
    step = max(1, total // 10)
    for done, item in enumerate(items, 1):
        yield item
        if done % step == 0 or done == total:
            print(f"gankit: {what}: {done}/{total} batches", file=sys.stderr, flush=True)
