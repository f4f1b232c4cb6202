"""`gankit classifier train`: a small classifier for any labelled dataset, trained
deterministically on the CPU in seconds to minutes, whose features the metrics use.

It trains `ImageClassifier` on the dataset's train split (data without a split: a fixed 90%),
measures it on the test split (the other 10%), and writes the weights (safetensors) and a card
beside them (`.json`) recording the protocol: dataset, splits, image shape, classes, epochs,
seed, test accuracy, the weights' SHA-256, torch version. Same data, seed, thread count and
torch: same weights.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from safetensors.torch import save_model
from torch.utils.data import DataLoader, TensorDataset

from gankit._version import __version__
from gankit.config.registry import DATASETS
from gankit.core.atomic import atomic_file
from gankit.core.bounded import BoundedReadError, read_json_object
from gankit.core.errors import GankitError, cut, did_you_mean, shown
from gankit.metrics.classifier import CARD_FORMAT, ImageClassifier, card_path, file_sha256
from gankit.metrics.reference import RealImages, has_split, held_out, read_split

BATCH_SIZE = 128
OPTIMIZER = "Adam, one-cycle to lr 2e-3, batch 128, random shifts of <= 2 px"


def check_replaceable(out: Path) -> None:
    """Refuse to write over files gankit did not write: the weights and card may be replaced
    only when the card there is a gankit classifier card naming these weights."""
    card = card_path(out)
    if out.suffix != ".safetensors":
        raise GankitError(f"--out {out}: give a file name ending in .safetensors")
    if out.is_dir() or card.is_dir():
        raise GankitError(f"--out {out}: {out if out.is_dir() else card} is a folder")
    if not (out.exists() or card.exists()):
        return
    try:
        written = read_json_object(card, what="classifier card")
        ours = written.get("format") == CARD_FORMAT and written.get("weights") == out.name
    except BoundedReadError:
        ours = False
    if not ours:
        raise GankitError(
            f"--out {out}: {out.name} or {card.name} already exists and was not written by "
            "gankit classifier train; move it away or choose another --out"
        )


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels inside the block, the previous setting restored after it."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@torch.no_grad()
def accuracy(model: ImageClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of `images` the model labels correctly."""
    model.eval()
    predictions = torch.cat([model(batch).argmax(1) for batch in images.split(1000)])
    return (predictions == labels).float().mean().item()


def checked_params(dataset: str, root: str, params: dict[str, Any]) -> dict[str, Any]:
    """The dataset parameters given as `key=value` (size=32, ...), checked against the dataset's
    own types and bounds and converted to them; a bad one is one line that names it."""
    entry = DATASETS.get(dataset)
    fields = [key for key in entry.params.model_fields if key not in ("root", "split", "download")]
    for key in params:
        if key not in fields:
            hint = did_you_mean(key, fields) or ";"
            raise GankitError(
                f"{cut(key)}={shown(params[key])}: dataset '{dataset}' has no parameter "
                f"{shown(key)}{hint} valid: {', '.join(fields) or 'none'} (the folder is "
                "--data-root)"
            )
    given = {"root": root} if "root" in entry.params.model_fields else {}
    try:
        validated = entry.params.model_validate({**given, **params})
    except ValidationError as error:
        problem = error.errors()[0]
        key = ".".join(map(str, problem["loc"]))
        raise GankitError(
            f"{key}={shown(problem.get('input'))} for dataset '{dataset}': {problem['msg']}"
        ) from None
    return {key: getattr(validated, key) for key in params}


def splits(dataset: str, root: str, params: dict[str, Any]) -> tuple[RealImages, RealImages, str]:
    """The train and test images, and how the test images were chosen."""
    if has_split(dataset):
        train = read_split(dataset, root, "train", params=params)
        return train, read_split(dataset, root, "test", params=params), "test split"
    every = read_split(dataset, root, "all", params=params)
    parts = []
    for split in ("train", "test"):
        index = held_out(every.images.shape[0], split)
        parts.append(
            RealImages(every.images[index], every.labels[index], every.classes, dataset, split)
        )
    return parts[0], parts[1], "a fixed 10% of the images (shuffle seeded with 0)"


def log(line: str) -> None:
    print(f"gankit: {line}", file=sys.stderr, flush=True)


def train_classifier(
    dataset: str,
    *,
    data_root: str,
    out: str | Path,
    epochs: int = 4,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train a classifier on `dataset` (under `data_root`, with dataset `params` such as size),
    write it to `out` and its card beside it; returns the card."""
    out = Path(out)
    check_replaceable(out)
    params = checked_params(dataset, data_root, dict(params or {}))
    train, test, test_split = splits(dataset, data_root, params)
    classes = train.classes or [str(c) for c in range(int(train.labels.max()) + 1)]
    if len(classes) < 2:
        raise GankitError(
            f"{dataset} under {data_root} has {len(classes)} class; a classifier needs labelled "
            "images in at least 2 classes (an image folder: one subfolder per class)"
        )
    image_shape = tuple(train.images.shape[1:])
    torch.manual_seed(seed)
    loader = DataLoader(
        TensorDataset(train.images, train.labels),
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    model = ImageClassifier(image_shape, len(classes))  # type: ignore[arg-type]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=2e-3, total_steps=epochs * len(loader)
    )
    start = time.perf_counter()
    with deterministic():
        for epoch in range(epochs):
            model.train()
            for images, labels in loader:
                # small random shifts (up to 2 pixels) make the features robust to imperfect images
                shift = torch.randint(-2, 3, (2,)).tolist()
                images = torch.roll(images, shifts=shift, dims=(2, 3))
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            test_accuracy = accuracy(model, test.images, test.labels)
            seconds = time.perf_counter() - start
            log(f"epoch {epoch + 1}/{epochs}: test accuracy {test_accuracy:.4f} ({seconds:.0f} s)")
    seconds = time.perf_counter() - start
    with atomic_file(out) as staging:
        save_model(model, str(staging))
    card = {
        "format": CARD_FORMAT,
        "architecture": "gankit.metrics.classifier.ImageClassifier",
        "weights": out.name,
        "dataset": dataset,
        "data": params,
        "split": train.split,
        "test_split": test_split,
        "image_shape": list(image_shape),
        "num_classes": len(classes),
        "classes": classes,
        "train_images": train.images.shape[0],
        "test_images": test.images.shape[0],
        "test_accuracy": round(accuracy(model, test.images, test.labels), 4),
        "epochs": epochs,
        "seed": seed,
        "optimizer": OPTIMIZER,
        "command": command or f"gankit classifier train {dataset} --epochs {epochs} --seed {seed}",
        "torch": torch.__version__,
        "gankit": __version__,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1),
        "sha256": file_sha256(out),
    }
    with atomic_file(card_path(out)) as staging:
        staging.write_text(json.dumps(card, indent=2) + "\n")
    return card
