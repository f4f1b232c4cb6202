"""The memorisation check of `gankit eval --nearest`: generated samples beside their nearest
training images, and the share of samples that copy a training image.

A sample counts as a copy when it is at least as close to its nearest training image as that
training image is to its own nearest other training image: the complement of the
"authenticity" of Alaa et al. 2022 (How Faithful is your Synthetic Data?, ICML), per sample.
It is measured in a feature space (the classifier's or Inception's features) and in pixels.
Distances are computed in chunks of both sides, so memory stays at chunk x chunk whatever the
size of the training set, and the training images' own nearest neighbours are looked up only
for those that are some sample's nearest, not for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gankit.metrics.evaluation import GeneratedBatch, split_generated
from gankit.metrics.presets import NEAREST_SHOWN
from gankit.metrics.reference import RealImages, reference_features
from gankit.outputs.files import encode_image, image_grid, write_new_file

NEIGHBOURS = 3  # training images shown beside each sample
QUERY_CHUNK = 256
KEY_CHUNK = 4096
DEFINITION = (
    "copy_share: the share of generated samples at least as close to their nearest training "
    "image as that training image is to its nearest other training image (1 - authenticity, "
    "Alaa et al. 2022), Euclidean distances; held_out: the same share for real images the run "
    "never saw (the reference split), the level of a generator that does not copy"
)


@torch.no_grad()
def nearest(
    queries: torch.Tensor, keys: torch.Tensor, k: int, *, skip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (M, k) and indices (M, k) of each query's k nearest keys, nearest first.
    `skip` (M,): for each query, the index of a key that is not its neighbour (itself)."""
    queries, keys = queries.flatten(1).float(), keys.flatten(1).float()
    k = min(k, keys.shape[0] - (0 if skip is None else 1))
    found_d, found_i = [], []
    for q_start in range(0, queries.shape[0], QUERY_CHUNK):
        rows = queries[q_start : q_start + QUERY_CHUNK]
        best_d = torch.full((rows.shape[0], 0), torch.inf, device=rows.device)
        best_i = torch.zeros((rows.shape[0], 0), dtype=torch.long, device=rows.device)
        for k_start in range(0, keys.shape[0], KEY_CHUNK):
            distances = torch.cdist(rows, keys[k_start : k_start + KEY_CHUNK].to(rows.device))
            if skip is not None:
                own = skip[q_start : q_start + rows.shape[0]].to(rows.device) - k_start
                inside = (own >= 0) & (own < distances.shape[1])
                distances[inside.nonzero().squeeze(1), own[inside]] = torch.inf
            index = torch.arange(distances.shape[1], device=rows.device) + k_start
            best_d = torch.cat([best_d, distances], 1)
            best_i = torch.cat([best_i, index.expand_as(distances)], 1)
            best_d, order = best_d.topk(min(k, best_d.shape[1]), dim=1, largest=False)
            best_i = best_i.gather(1, order)
        found_d.append(best_d)
        found_i.append(best_i)
    return torch.cat(found_d), torch.cat(found_i)


def copy_share(
    distances: torch.Tensor, indices: torch.Tensor, train: torch.Tensor
) -> dict[str, float]:
    """The share of samples that copy a training image (see the module), from each sample's
    nearest training image (`distances`, `indices` (M,) of `train`), and distance medians."""
    used, where = indices.cpu().unique(return_inverse=True)
    if train.shape[0] < 2:
        own_nearest = torch.full(used.shape, torch.inf)
    else:
        own_nearest = nearest(train[used.to(train.device)], train, 1, skip=used)[0][:, 0].cpu()
    threshold = own_nearest[where]
    distances = distances.cpu()
    return {
        "copy_share": float((distances <= threshold).double().mean()),
        "sample_nn_distance_median": float(distances.median()),
        "matched_train_nn_distance_median": float(own_nearest.median()),
    }


@dataclass
class Space:
    """A space where distances are measured: a name, a map from images in [-1, 1] to vectors,
    and the training images' vectors."""

    name: str
    vectors: Callable[[torch.Tensor], torch.Tensor]
    train: torch.Tensor


@torch.no_grad()
def memorisation(
    generate: Callable[[int, torch.Generator], GeneratedBatch],
    train_images: torch.Tensor,
    spaces: list[Space],
    *,
    n: int,
    seed: int,
    batch_size: int,
    shown: int = NEAREST_SHOWN,
    device: Any = "cpu",
) -> tuple[dict[str, Any], np.ndarray]:
    """The copy share of `n` samples in each space, and a uint8 grid: one row per shown sample,
    for each space the sample then its NEIGHBOURS nearest training images. The samples are
    drawn as `evaluate` draws them (same seed), so they are the evaluation's own."""
    rng = torch.Generator(device).manual_seed(seed * 1_000_003)
    kept: list[torch.Tensor] = []
    found: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {s.name: [] for s in spaces}
    for start in range(0, n, batch_size):
        images, _ = split_generated(generate(min(batch_size, n - start), rng))
        if sum(batch.shape[0] for batch in kept) < shown:
            kept.append(images[: shown - sum(batch.shape[0] for batch in kept)].cpu())
        for space in spaces:
            found[space.name].append(nearest(space.vectors(images), space.train, NEIGHBOURS))
    samples = torch.cat(kept)
    report: dict[str, Any] = {"definition": DEFINITION, "samples": n, "neighbours": NEIGHBOURS}
    cells = []
    for space in spaces:
        distances = torch.cat([d for d, _ in found[space.name]])
        indices = torch.cat([i for _, i in found[space.name]])
        report[space.name] = copy_share(distances[:, 0], indices[:, 0], space.train)
        shown_indices = indices[: samples.shape[0]].cpu()
        cells.append(torch.cat([samples[:, None], train_images[shown_indices]], 1))
    tiles = torch.cat(cells, 1)  # (shown, spaces * (1 + NEIGHBOURS), C, H, W)
    grid = image_grid(tiles.flatten(0, 1), padding=2, per_row=tiles.shape[1])
    report["grid_columns"] = [
        f"{space.name}: " + ("sample" if column == 0 else f"training neighbour {column}")
        for space in spaces
        for column in range(1 + NEIGHBOURS)
    ]
    return report, grid


def check_export(
    generate: Callable[[int, torch.Generator], GeneratedBatch],
    real: RealImages,
    train: Callable[[RealImages], RealImages],
    extractor: Any,
    *,
    out: Path,
    force: bool,
    shown: int,
    n: int,
    seed: int,
    batch_size: int,
    device: Any,
    show_progress: bool = False,
) -> dict[str, Any]:
    """`gankit eval --nearest`: the copy share of the evaluation's samples against the training
    images (`train()`, given the evaluation's reference `real`, which may be them) in
    `extractor`'s features and in pixels; the grid written to `out` (never over a file unless
    `force`)."""
    training = train(real)
    features, _ = reference_features(
        training, extractor, batch_size, show_progress=show_progress, role="training images"
    )
    spaces = [
        Space("features", extractor.features, features),
        Space("pixels", lambda images: images, training.images),
    ]
    report, grid = memorisation(
        generate,
        training.images,
        spaces,
        n=n,
        seed=seed,
        batch_size=batch_size,
        shown=shown,
        device=device,
    )
    if real.split not in ("train", "all"):  # real images the run never saw: the baseline
        held_out = real.images[:n]
        report["held_out"] = {
            "images": held_out.shape[0],
            "set": real.description,
            **{space.name: shares(held_out, space, batch_size, device) for space in spaces},
        }
    write_new_file(out, lambda temp: temp.write_bytes(encode_image(grid, ".png")), force=force)
    space = f"{extractor.cache_name} features"
    return {
        **report,
        "feature_space": space,
        "training_set": training.description,
        "grid": str(out),
    }


@torch.no_grad()
def shares(images: torch.Tensor, space: Space, batch_size: int, device: Any) -> float:
    """The copy share of `images` (on the CPU) in `space`, a batch at a time."""
    found = [
        nearest(space.vectors(images[start : start + batch_size].to(device)), space.train, 1)
        for start in range(0, images.shape[0], batch_size)
    ]
    distances = torch.cat([d for d, _ in found])[:, 0]
    indices = torch.cat([i for _, i in found])[:, 0]
    return copy_share(distances, indices, space.train)["copy_share"]
