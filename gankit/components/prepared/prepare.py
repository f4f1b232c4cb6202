"""`gankit data prepare`: one pass over a user's images into a prepared set.

Every file of the source is read once, in parallel over the cores: its SHA-256 taken, decoded
(see `pixels.decode`), and either kept, skipped with the reason, or dropped as an exact
duplicate of an earlier file (sorted by name, so the result does not depend on timing). The
kept pixels go into uint8 safetensors shards beside a manifest (see `dataset.py`), written to a
temporary folder that is renamed into place only when complete. The source is never written.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gankit._version import __version__
from gankit.components.prepared.dataset import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    shard_name,
)
from gankit.components.prepared.hf_source import HFSource, add_hf_arguments, hf_source, list_hf
from gankit.components.prepared.pixels import NotImage, Shape, decode, parse_colour
from gankit.components.prepared.sources import Entry, Listing, list_source, read_entry
from gankit.core.atomic import atomic_folder
from gankit.core.errors import DatasetError, GankitError
from gankit.core.sizes import (
    MAX_IMAGE_SIDE,
    check_fits,
    check_workers,
    memory_size,
    usable_cores,
)

MAX_SHARD_IMAGES = 10_000_000
OPTIONS = ("size", "channels", "crop", "background", "shard_images", "workers")  # of prepare
SHARD_BYTES = 512 * 2**20  # the default shard holds about this much
CHUNK = 16  # files handed to a worker at a time
SHOWN = 5  # skipped files the summary names

# (digest, pixels or None, reason, detail): what a worker makes of one file
Outcome = tuple[str, bytes | None, str, str]


def _process(entry: Entry, shape: Shape) -> Outcome:
    """Read, hash and decode one file (in a worker process)."""
    from PIL import Image

    try:
        data = read_entry(entry)
    except (OSError, ValueError) as error:
        return "", None, "unreadable", str(getattr(error, "strerror", None) or error)
    if not data:
        return "", None, "empty", "a file of 0 bytes"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's warnings about EXIF and palettes
            return digest, decode(data, shape).tobytes(), "", ""
    except NotImage as error:
        return digest, None, "not an image", str(error)
    except Image.DecompressionBombError as error:
        return digest, None, "too large", str(error)[:200]
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        text = " ".join(str(error).split())[:200]
        reason = "truncated" if "truncated" in text or "broken data stream" in text else "corrupt"
        return digest, None, reason, f"{type(error).__name__}: {text}"


def _outcomes(entries: list[Entry], shape: Shape, workers: int) -> Iterator[Outcome]:
    """Each entry's outcome, in the entries' order, from `workers` processes."""
    work = functools.partial(_process, shape=shape)
    if workers <= 1 or len(entries) < 2 * CHUNK:
        yield from map(work, entries)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(workers, mp_context=context)  # a crashed decoder raises, not hangs
    done = 0
    try:
        for outcome in pool.map(work, entries, chunksize=CHUNK):
            done += 1
            yield outcome
    except BrokenProcessPool:
        raise DatasetError(
            f"a decoding process died (an image decoder crashed, or memory ran out) on one of "
            f"the {CHUNK} files from {entries[done].name} on; move that file out of the source, "
            "or run with --workers 1 to find it"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_out(out: Path, source: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DatasetError(f"output {out} exists and is not a folder; give a new folder name")
    if out.is_dir() and any(out.iterdir()):
        raise DatasetError(
            f"output folder {out} is not empty; gankit never writes over files: give a new "
            "or empty folder"
        )
    real_out, real_source = os.path.realpath(out), os.path.realpath(source)
    if source.is_dir() and (real_out + os.sep).startswith(real_source.rstrip(os.sep) + os.sep):
        raise DatasetError(
            f"output {out} is inside the source {source}; prepare never changes the source: "
            "give a folder outside it"
        )


class _Shards:
    """Kept images gathered into shards of `per_shard`, each written when full."""

    def __init__(self, folder: Path, shape: Shape, per_shard: int, expected: int) -> None:
        self.folder, self.shape, self.per_shard = folder, shape, per_shard
        rows = min(per_shard, max(expected, 1))
        self.buffer = np.empty((rows, shape.channels, shape.size, shape.size), dtype=np.uint8)
        self.labels: list[int] = []
        self.written: list[dict[str, Any]] = []

    def add(self, pixels: bytes, label: int) -> None:
        self.buffer[len(self.labels)] = np.frombuffer(pixels, dtype=np.uint8).reshape(
            self.buffer.shape[1:]
        )
        self.labels.append(label)
        if len(self.labels) == self.per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the images gathered so far as the next shard."""
        import torch
        from safetensors.torch import save_file

        if not self.labels:
            return
        count = len(self.labels)
        path = self.folder / shard_name(len(self.written))
        tensors = {
            "images": torch.from_numpy(self.buffer[:count]),
            "labels": torch.tensor(self.labels, dtype=torch.int64),
        }
        save_file(tensors, str(path), metadata={"format": FORMAT})
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        self.written.append({"file": path.name, "count": count, "sha256": digest.hexdigest()})
        self.labels = []


def _classes(listing: Listing) -> tuple[list[str], list[Entry], list[dict[str, str]]]:
    """The class names, the entries to read, and those refused for lying directly in the
    source beside class folders."""
    groups = sorted({entry.group for entry in listing.entries if entry.group})
    if not groups:
        return [listing.root_name], listing.entries, []
    loose = [entry for entry in listing.entries if not entry.group]
    refused = [
        {"source": e.name, "reason": "beside class folders", "detail": "not in a class folder"}
        for e in loose
    ]
    return groups, [entry for entry in listing.entries if entry.group], refused


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    size: int = 64,
    channels: Literal[1, 3] = 3,
    crop: Literal["center", "pad"] = "center",
    background: str = "white",
    shard_images: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    hf: HFSource | None = None,
) -> dict[str, Any]:
    """Prepare the images of `source` (folder, .zip or list file; with `hf`, the rows of that
    Hugging Face dataset) into the new folder `out`; returns the manifest written there. Bad
    input raises DatasetError (one line)."""
    from tqdm import tqdm

    started = time.perf_counter()
    if not 0 < size <= MAX_IMAGE_SIDE:
        raise DatasetError(f"size {size} is out of bounds; give 1 to {MAX_IMAGE_SIDE}")
    if channels not in (1, 3) or crop not in ("center", "pad"):
        raise DatasetError(f"channels {channels!r}, crop {crop!r}: give 1 or 3, center or pad")
    shape = Shape(size, channels, crop, parse_colour(background))
    image_bytes = channels * size * size
    per_shard = shard_images or max(1, SHARD_BYTES // image_bytes)
    if not 0 < per_shard <= MAX_SHARD_IMAGES:
        raise DatasetError(f"shard_images {per_shard} is out of bounds (1..{MAX_SHARD_IMAGES:,})")
    source, out = Path(source).expanduser(), Path(out).expanduser()
    _check_out(out, source)
    listing = list_hf(hf) if hf is not None else list_source(source)
    classes, entries, skipped = _classes(listing)
    skipped += [{"source": n, "reason": r, "detail": d} for n, r, d in listing.refused]
    if not entries:
        raise DatasetError(
            f"no files to prepare in {source} ({len(skipped)} refused unread); give a folder, "
            ".zip or list file of images"
        )
    rows = min(per_shard, len(entries))
    check_fits(
        rows * image_bytes, "cpu", f"a shard of {rows:,} images", hint="lower --shard-images"
    )
    index = {name: label for label, name in enumerate(classes)}
    first_of: dict[str, str] = {}
    kept: list[str] = []
    labels: list[int] = []
    duplicates: list[dict[str, str]] = []
    with atomic_folder(out) as staging:
        shards = _Shards(staging, shape, per_shard, len(entries))
        bar = tqdm(
            total=len(entries), unit="img", file=sys.stderr, disable=not progress, leave=False
        )
        with bar:
            outcomes = _outcomes(entries, shape, workers or usable_cores())
            for entry, (digest, pixels, reason, detail) in zip(entries, outcomes, strict=True):
                bar.update()
                if digest in first_of:
                    duplicates.append({"source": entry.name, "duplicate_of": first_of[digest]})
                elif pixels is None:
                    skipped.append({"source": entry.name, "reason": reason, "detail": detail})
                else:
                    first_of[digest] = entry.name
                    label = index[entry.group] if entry.group else 0
                    shards.add(pixels, label)
                    kept.append(entry.name)
                    labels.append(label)
        shards.flush()
        if not kept:
            raise DatasetError(_nothing_kept(source, skipped))
        manifest = _manifest(shape, per_shard, source, listing, classes, kept, labels)
        manifest |= {"shards": shards.written, "duplicates": duplicates}
        manifest["skipped"] = sorted(skipped, key=lambda item: item["source"])
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        _write_manifest(staging / MANIFEST, manifest)
        _check_out(out, source)  # nothing appeared there meanwhile
    return manifest


def _nothing_kept(source: Path, skipped: list[dict[str, str]]) -> str:
    shown = "; ".join(f"{item['source']} ({item['reason']})" for item in skipped[:5])
    return (
        f"no readable images in {source}: all {len(skipped)} file(s) were skipped ({shown}"
        f"{'; ...' if len(skipped) > 5 else ''}); give a folder, .zip or list file of images"
    )


def _manifest(
    shape: Shape,
    per_shard: int,
    source: Path,
    listing: Listing,
    classes: list[str],
    kept: list[str],
    labels: list[int],
) -> dict[str, Any]:
    red, green, blue = shape.background
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gankit_version": __version__,
        "size": shape.size,
        "channels": shape.channels,
        "layout": "NCHW",
        "count": len(kept),
        "classes": classes,
        "options": {
            "source": str(source),
            "size": shape.size,
            "channels": shape.channels,
            "crop": shape.crop,
            "background": f"#{red:02x}{green:02x}{blue:02x}",
            "shard_images": per_shard,
        },
        "root_name": listing.root_name,
        "sources": kept,
        "labels": labels,
    }


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def summary(manifest: dict[str, Any], out: str | Path) -> str:
    """What a prepare run did, in a few lines: kept, skipped by reason, duplicates, classes."""
    count, seconds = manifest["count"], manifest["seconds"]
    shape = f"{manifest['channels']}x{manifest['size']}x{manifest['size']}"
    stored = sum((Path(out) / shard["file"]).stat().st_size for shard in manifest["shards"])
    total = count + len(manifest["skipped"]) + len(manifest["duplicates"])
    lines = [
        f"prepared {count:,} of {total:,} files as {shape} images into {out} "
        f"({len(manifest['shards'])} shard(s), {memory_size(stored)}) in {seconds:.1f} s "
        f"({total / max(seconds, 1e-9):,.0f} files/s)"
    ]
    reasons = Counter(item["reason"] for item in manifest["skipped"])
    listed = ", ".join(f"{reason} {number:,}" for reason, number in sorted(reasons.items()))
    lines.append(f"skipped {len(manifest['skipped']):,}" + (f": {listed}" if listed else ""))
    for item in manifest["skipped"][:SHOWN]:
        lines.append(f"  {item['source']}: {item['reason']} ({item['detail']})")
    if len(manifest["skipped"]) > SHOWN:
        lines.append(f"  and {len(manifest['skipped']) - SHOWN:,} more")
    lines.append(f"duplicates {len(manifest['duplicates']):,} (same bytes as an earlier file)")
    sizes = Counter(manifest["labels"])
    shown = ", ".join(f"{name} {sizes[label]:,}" for label, name in enumerate(manifest["classes"]))
    lines.append(f"classes {len(manifest['classes']):,}: {shown}")
    if manifest["skipped"] or manifest["duplicates"]:
        lines.append(f"each skipped file and duplicate is listed in {Path(out) / MANIFEST}")
    return "\n".join(lines)


def _bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of bounds; give {low} to {high:,}")
        return value

    return parse


def _colour(text: str) -> str:
    try:
        parse_colour(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `gankit data prepare`; the parser runs `run_prepare`."""
    parser.add_argument("source", help="folder of images (subfolders: classes), .zip, or list file")
    parser.add_argument("out", help="new folder to write the prepared set to")
    parser.add_argument(
        "--size", type=_bounded(1, MAX_IMAGE_SIDE), default=64, help="images come out SIZE x SIZE"
    )
    parser.add_argument("--channels", type=int, choices=[1, 3], default=3, help="1: grey, 3: RGB")
    parser.add_argument(
        "--crop",
        choices=["center", "pad"],
        default="center",
        help="center: the central square (default); pad: the whole image on the background",
    )
    parser.add_argument(
        "--background", type=_colour, default="white", help="white, black or #rrggbb"
    )
    parser.add_argument(
        "--shard-images",
        type=_bounded(1, MAX_SHARD_IMAGES),
        help=f"images per shard file (default: about {memory_size(SHARD_BYTES)} a shard)",
    )
    parser.add_argument(
        "--workers", type=_bounded(1, 1024), help="decoding processes (default: one per core)"
    )
    add_hf_arguments(parser)
    parser.set_defaults(run=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    """Run `gankit data prepare` from parsed arguments; print the summary."""
    if args.workers:
        try:
            check_workers(args.workers)
        except ValueError as error:
            raise GankitError(f"--workers: {error}") from None
    options = {key: getattr(args, key) for key in OPTIONS}
    manifest = prepare(args.source, args.out, **options, hf=hf_source(args))
    print(summary(manifest, args.out))
    return 0
