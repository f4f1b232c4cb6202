"""What a run leaves on disk besides checkpoints: sample grids, their GIF, metrics, a loss plot."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gankit.components.data import to_uint8
from gankit.core.errors import GankitError

SAMPLES_DIR = "samples"
METRICS_FILE = "metrics.jsonl"
GIF_FILE = "samples.gif"
LOSS_PLOT_FILE = "losses.png"
_GRID_NAME = re.compile(r"^step_(\d+)\.png$")


def image_grid(images: torch.Tensor, padding: int = 1, per_row: int | None = None) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into a uint8 grid on a mid-grey background, square
    unless `per_row` says how many images each row holds.

    Returns (H', W') for one channel and (H', W', C) otherwise; uint8 because viewers and W&B
    show float images in [0, 1] as black.
    """
    images = to_uint8(images.detach().cpu())
    n, channels, height, width = images.shape
    per_row = per_row or math.ceil(math.sqrt(n))
    rows = math.ceil(n / per_row)
    grid = torch.full(
        (channels, rows * (height + padding) + padding, per_row * (width + padding) + padding),
        128,
        dtype=torch.uint8,
    )
    for index in range(n):
        top = padding + (index // per_row) * (height + padding)
        left = padding + (index % per_row) * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    return grid[0].numpy() if channels == 1 else grid.permute(1, 2, 0).numpy()


def scatter_plot(
    points: torch.Tensor,
    labels: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    size: int = 480,
) -> np.ndarray:
    """Draw (N, 2) points as a uint8 RGB scatter plot (coloured by `labels` when given), over
    faint `reference` points (for example the real data) when given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = points.detach().float().cpu().reshape(len(points), -1)
    figure = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots()
    if reference is not None:
        ref = reference.detach().float().cpu().reshape(len(reference), -1)
        axes.scatter(ref[:, 0], ref[:, 1], s=4, c="lightgrey", linewidths=0)
    colours = None if labels is None else labels.detach().cpu().numpy()
    colour = {"c": colours, "cmap": "tab10"} if colours is not None else {}
    axes.scatter(points[:, 0], points[:, 1], s=6, linewidths=0, **colour)
    axes.set_aspect("equal", adjustable="datalim")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_samples(
    samples: torch.Tensor,
    labels: torch.Tensor | list[int] | None = None,
    reference: torch.Tensor | None = None,
) -> np.ndarray:
    """Samples as one uint8 picture: a grid for (N, C, H, W) images, a scatter plot for 2-D
    points (N, 2)."""
    if samples.dim() == 4:
        return image_grid(samples)
    if samples.dim() == 2 and samples.shape[1] == 2:
        tags = None if labels is None else torch.as_tensor(labels)
        return scatter_plot(samples, tags, reference)
    raise ValueError(
        f"cannot draw samples of shape {tuple(samples.shape[1:])}: sample grids take "
        "(C, H, W) images and scatter plots 2-D points"
    )


def save_image(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 image (PNG by the file's suffix)."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)
    return path


def check_new_file(path: Path, *, force: bool) -> None:
    """Refuse to replace an existing file unless `force`: gankit does not overwrite a file it
    cannot tell it wrote."""
    if path.exists() and not force:
        raise GankitError(
            f"--out {path} already exists and gankit does not overwrite files; choose another "
            "name, or pass --force to replace it"
        )


def write_new_file(path: Path, write: Callable[[Path], None], *, force: bool) -> Path:
    """Write `path` through `write(temporary_path)` and publish it whole: renamed over an
    existing file only with `force`, else linked into place, which fails if the name was
    taken meanwhile (nothing is replaced)."""
    check_new_file(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        write(temp)
        if force:
            os.replace(temp, path)
        else:
            try:
                os.link(temp, path)
            except FileExistsError:
                raise GankitError(
                    f"--out {path} appeared while it was written; nothing was replaced. "
                    "Choose another name, or pass --force"
                ) from None
            except OSError:  # a filesystem without hard links: check, then rename
                check_new_file(path, force=False)
                os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def sample_path(run_dir: Path, step: int) -> Path:
    """Where the sample grid of `step` goes."""
    return run_dir / SAMPLES_DIR / f"step_{step:07d}.png"


def sample_grids(run_dir: Path) -> list[Path]:
    """The run's sample grids (files named as gankit names them), in step order."""
    folder = run_dir / SAMPLES_DIR
    grids = [path for path in folder.glob("step_*.png") if _GRID_NAME.match(path.name)]
    return sorted(grids, key=lambda path: int(_GRID_NAME.match(path.name).group(1)))


def remove_samples_after(run_dir: Path, step: int) -> None:
    """Delete the grids of steps after `step` (a resumed run draws them again)."""
    for path in sample_grids(run_dir):
        if int(_GRID_NAME.match(path.name).group(1)) > step:
            path.unlink()


def write_gif(run_dir: Path, fps: float = 5.0) -> Path | None:
    """Animate every sample grid of the run, in step order, into samples.gif."""
    import imageio.v3 as iio

    frames = [iio.imread(path) for path in sample_grids(run_dir)]
    if not frames:
        return None
    path = run_dir / GIF_FILE
    # Without optimisation every frame keeps the full size and mode, so readers (imageio's
    # imread) decode them all alike; identical consecutive grids still merge into one frame.
    iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0, optimize=False)
    return path


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl and keeps them for the loss plot."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after `step`, so a resumed run does not log them twice."""
        kept = [record for record in self.read() if record["step"] <= step]
        staging = self.path.with_name(f".{self.path.name}.tmp")
        staging.write_text("".join(json.dumps(record) + "\n" for record in kept))
        staging.replace(self.path)

    def read(self) -> list[dict[str, Any]]:
        """The records logged so far; a line cut short by a crash is left out."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records


def plot_losses(records: Iterable[dict[str, Any]], path: Path) -> Path | None:
    """Plot D's and G's losses against the step (the reference's Loss.png)."""
    records = [r for r in records if "d_loss" in r and "g_loss" in r]
    if not records:
        return None
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    steps = [r["step"] for r in records]
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    axes.plot(steps, [r["d_loss"] for r in records], label="Discriminator")
    axes.plot(steps, [r["g_loss"] for r in records], label="Generator")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(loc="upper right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path
