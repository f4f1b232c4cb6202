"""Time `gankit data prepare` and reading the prepared set against decoding per step.

    python scripts/data_speed.py [--n 10000] [--side 512] [--size 64] [--batches 20]
        [--batch-size 64] [--classes 10] [--keep DIR] [--json FILE]

Makes `--n` smooth random `--side`x`--side` JPEG "photos" in a temporary folder (one subfolder
per class), runs `gankit data prepare` on it at `--size` (a subprocess, as a user would; the
images/s count only the pass, as its summary prints it), then reads `--batches` shuffled
batches of `--batch-size` through a DataLoader (one process, as the trainer's default) from the
prepared set and from `image_folder` on the same folder (which decodes every image at every
step), and prints images/s of each and their ratio. The temporary folder is removed unless
`--keep` names where to leave it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gankit.components.data import ImageFolderDataset
from gankit.components.prepared.dataset import MANIFEST, PreparedDataset
from gankit.core.bounded import read_json_object

ROOT = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, count: int, side: int, classes: int, seed: int = 0) -> float:
    """`count` smooth random JPEGs (quality 90) in `classes` subfolders; seconds taken."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    for index in range(count):
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        photo = Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC)
        target = folder / f"class_{index % classes:02d}" / f"{index:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        photo.save(target, "JPEG", quality=90)
    return time.perf_counter() - started


def read_speed(dataset: torch.utils.data.Dataset, batches: int, batch_size: int) -> float:
    """Images per second of `batches` shuffled batches drawn through a DataLoader."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    generator = iter(loader)
    next(generator)  # first batch: page cache and lazy imports, not timed
    started = time.perf_counter()
    for _ in range(batches):
        try:
            next(generator)
        except StopIteration:
            generator = iter(loader)
            next(generator)
    return batches * batch_size / (time.perf_counter() - started)


def whole_set_speed(dataset: PreparedDataset, batches: int, batch_size: int) -> float:
    """Images per second of batches gathered by index from the whole set held as one tensor,
    as `perf.data_on_device` does (the tensor made once, not timed)."""
    images = dataset.tensors[0]
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(batches):
        images.index_select(0, torch.randint(len(images), (batch_size,), generator=generator))
    return batches * batch_size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print its figures (and write them to --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="photos to make (10000)")
    parser.add_argument("--side", type=int, default=512, help="their side in pixels (512)")
    parser.add_argument("--size", type=int, default=64, help="prepared side (64)")
    parser.add_argument("--classes", type=int, default=10, help="class subfolders (10)")
    parser.add_argument("--batches", type=int, default=20, help="batches read per dataset (20)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (64)")
    parser.add_argument("--keep", type=Path, help="make the photos here and leave them")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not 0 < args.n <= 1_000_000 or not 0 < args.side <= 4096 or args.batches <= 0:
        parser.error("--n 1..1,000,000, --side 1..4096 and --batches > 0")
    work = args.keep or Path(tempfile.mkdtemp(prefix="gankit-data-speed-"))
    try:
        photos, out = work / "photos", work / "prepared"
        made = make_photos(photos, args.n, args.side, args.classes)
        print(f"made {args.n:,} {args.side}x{args.side} JPEGs in {made:.1f} s", flush=True)
        command = [sys.executable, "-m", "gankit", "data", "prepare", str(photos), str(out)]
        started = time.perf_counter()
        subprocess.run([*command, "--size", str(args.size)], check=True, cwd=ROOT)
        wall = time.perf_counter() - started
        manifest = read_json_object(out / MANIFEST, what="manifest", max_bytes=1 << 30)
        figures = {
            "images": args.n,
            "side": args.side,
            "size": args.size,
            "cores": len(os.sched_getaffinity(0)),
            "prepare_images_per_s": args.n / manifest["seconds"],
            "prepare_images_per_s_with_startup": args.n / wall,
        }
        prepared = PreparedDataset(out)
        folder = ImageFolderDataset(photos, args.size)
        figures["prepared_read_images_per_s"] = read_speed(prepared, args.batches, args.batch_size)
        figures["image_folder_read_images_per_s"] = read_speed(
            folder, args.batches, args.batch_size
        )
        figures["read_ratio"] = (
            figures["prepared_read_images_per_s"] / figures["image_folder_read_images_per_s"]
        )
        figures["prepared_whole_set_images_per_s"] = whole_set_speed(
            prepared, args.batches, args.batch_size
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"prepare: {figures['prepare_images_per_s']:,.0f} images/s in the pass "
        f"({figures['prepare_images_per_s_with_startup']:,.0f} with the command's start), "
        f"{args.n:,} {args.side}x{args.side} JPEGs to {args.size}x{args.size} on "
        f"{figures['cores']} cores\n"
        f"read {args.batches} batches of {args.batch_size}: prepared "
        f"{figures['prepared_read_images_per_s']:,.0f} images/s, image_folder "
        f"{figures['image_folder_read_images_per_s']:,.0f} images/s: "
        f"{figures['read_ratio']:,.0f}x faster; the whole set in memory (perf.data_on_device): "
        f"{figures['prepared_whole_set_images_per_s']:,.0f} images/s"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
