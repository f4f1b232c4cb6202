"""What a run leaves on disk besides checkpoints: sample grids, their GIF, metrics, a loss plot."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gankit.components.data import to_uint8
from gankit.core.atomic import atomic_file
from gankit.core.bounded import BoundedReadError, parse_json, read_bytes, read_text, strict_int
from gankit.core.errors import GankitError, cut, warn

SAMPLES_DIR = "samples"
METRICS_FILE = "metrics.jsonl"
GIF_FILE = "samples.gif"
LOSS_PLOT_FILE = "losses.png"
_GRID_NAME = re.compile(r"^step_(\d+)\.png$")
MAX_GRID_BYTES = 64 << 20  # a sample grid read back for the GIF
MAX_METRICS_BYTES = 256 << 20  # metrics.jsonl: a million records and more


class OutputWriteError(GankitError, OSError):
    """Writing an output file failed in the OS (disk full, permission denied, ...); nothing
    half-written is left at its name. Also an OSError, with the original errno."""


def write_failure(path: Path, what: str, error: OSError, todo: str = "") -> OutputWriteError:
    """One line for a failed write of `what` at `path`: the OS's reason, that nothing
    half-written was left, and what to do (`todo`, else advice by the errno)."""
    code = error.errno
    if not todo:
        if code in (errno.ENOSPC, errno.EDQUOT):
            todo = f"free disk space in {path.parent} and run the command again"
        elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
            todo = f"make {path.parent} writable, or write to another folder"
        else:
            todo = "check the path and run the command again"
    reason = error.strerror or cut(" ".join(str(error).split()), 200)
    failure = OutputWriteError(
        f"could not write {what} {path}: {reason}; nothing half-written was left there; {todo}"
    )
    failure.errno = code
    return failure


@contextlib.contextmanager
def output_file(path: Path, what: str) -> Iterator[Path]:
    """A temporary name beside `path` to write to: renamed onto `path` when the block ends, or
    removed when it fails, an OSError then becoming one OutputWriteError naming `what`."""
    try:
        with atomic_file(path) as temp:
            yield temp
    except OutputWriteError:
        raise
    except OSError as error:
        raise write_failure(path, what, error) from None


def publish_bytes(path: Path, data: bytes, what: str) -> Path:
    """Write `data` at `path` whole (see `output_file`)."""
    with output_file(path, what) as temp, open(temp, "wb") as handle:
        handle.write(data)
    return path


def encode_image(image: np.ndarray, suffix: str, **options: Any) -> bytes:
    """A uint8 image, or a stack of frames for a GIF, encoded in memory in the format of
    `suffix` (".png", ".gif", ...): the file is then written by plain writes, so a full disk is
    one OSError, not an image writer left half-closed."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", image, extension=suffix, **options)


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


def save_image(image: np.ndarray, path: str | Path, what: str = "the sample grid") -> Path:
    """Write a uint8 image (PNG by the file's suffix) whole (see `output_file`)."""
    path = Path(path)
    return publish_bytes(path, encode_image(image, path.suffix.lower()), what)


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
    taken meanwhile (nothing is replaced). A failed write (a full disk, a folder not writable)
    is one OutputWriteError, and the temporary file is removed."""
    check_new_file(path, force=force)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
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
    except OutputWriteError:
        raise
    except OSError as error:
        todo = {
            errno.ENOSPC: f"free disk space in {path.parent} or choose another --out",
            errno.EDQUOT: f"free space within your quota in {path.parent} or choose another --out",
            errno.EACCES: f"choose another --out, or make {path.parent} writable",
            errno.EPERM: f"choose another --out, or make {path.parent} writable",
            errno.EROFS: f"{path.parent} is read-only; choose another --out",
        }.get(error.errno or 0, f"check that {path.parent} is writable and has free space")
        raise write_failure(path, "--out", error, todo) from None
    finally:
        with contextlib.suppress(OSError):
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


def _read_grid(path: Path) -> np.ndarray | None:
    """A sample grid read back for the GIF, or None (with a warning) when it is unreadable."""
    import imageio.v3 as iio

    try:
        data = read_bytes(path, what="sample grid", max_bytes=MAX_GRID_BYTES)
        return iio.imread(data, plugin="pillow", extension=".png")
    except BoundedReadError as error:
        reason = str(error)
    except Exception as error:  # image decoders raise many kinds for a damaged file
        reason = f"{path} is not a readable PNG ({cut(str(error), 100)})"
    warn(f"{reason}; it is left out of {GIF_FILE}")
    return None


def write_gif(run_dir: Path, fps: float = 5.0) -> Path | None:
    """Animate every sample grid of the run, in step order, into samples.gif. A grid that
    cannot be read, or whose size differs from the last one's (left by another run), is left
    out with a warning."""
    grids = [(path, _read_grid(path)) for path in sample_grids(run_dir)]
    grids = [(path, frame) for path, frame in grids if frame is not None]
    if not grids:
        return None
    shape = grids[-1][1].shape
    for path, frame in grids:
        if frame.shape != shape:
            warn(f"{path} is {frame.shape}, not {shape} as the last grid; left out of {GIF_FILE}")
    frames = [frame for _path, frame in grids if frame.shape == shape]
    # Without optimisation every frame keeps the full size and mode, so readers (imageio's
    # imread) decode them all alike; identical consecutive grids still merge into one frame.
    data = encode_image(np.stack(frames), ".gif", duration=1000 / fps, loop=0, optimize=False)
    return publish_bytes(run_dir / GIF_FILE, data, "the GIF of the sample grids")


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl and reads them back (within bounds)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` as a line; NaN and inf (a loss of an update that did not run) are
        written as null, so the line is valid JSON."""
        with self.path.open("a") as handle:
            handle.write(_json_line(record))

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after `step`, so a resumed run does not log them twice."""
        kept = [record for record in self.read() if record["step"] <= step]
        with output_file(self.path, "the metrics log") as staging:
            staging.write_text("".join(_json_line(record) for record in kept))

    def read(self) -> list[dict[str, Any]]:
        """The records logged so far; a last line cut short by a crash is left out. A line that
        is not a record gankit wrote is a BoundedReadError naming the file and line."""
        if not (self.path.exists() or self.path.is_symlink()):
            return []
        text = read_text(self.path, what="metrics log", max_bytes=MAX_METRICS_BYTES)
        # After the last newline: nothing, or a line whose writer was killed midway.
        lines = text.split("\n")[:-1]
        records = []
        for number, line in enumerate(lines, 1):
            where = f"metrics log {self.path}, line {number},"
            try:
                record = parse_json(line, where=where)
            except BoundedReadError as error:
                raise BoundedReadError(f"{error}; {_FIX_METRICS}") from None
            if not isinstance(record, dict) or not strict_int(record.get("step")):
                raise BoundedReadError(f"{where} is not a record with a step; {_FIX_METRICS}")
            records.append(record)
        return records


_FIX_METRICS = "remove that line, or move the file away (the run then starts a new one)"


def _number(value: Any) -> float:
    """A logged value as a number to plot: NaN for null (and anything not a number)."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _finite(value: Any) -> Any:
    """`value` with NaN and inf (also inside dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(_finite(record), allow_nan=False) + "\n"


def plot_losses(records: Iterable[dict[str, Any]], path: Path) -> Path | None:
    """Plot D's and G's losses against the step (the reference's Loss.png); written whole."""
    records = [r for r in records if "d_loss" in r and "g_loss" in r]
    if not records:
        return None
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    def values(key: str) -> list[float]:
        return [_number(record[key]) for record in records]

    steps = [r["step"] for r in records]
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    axes.plot(steps, values("d_loss"), label="Discriminator")
    axes.plot(steps, values("g_loss"), label="Generator")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(loc="upper right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return publish_bytes(path, buffer.getvalue(), "the loss plot")
