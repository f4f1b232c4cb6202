"""Where a run reports to: metrics.jsonl and the terminal (main process), and the trackers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from gankit.components.models.base import eval_mode, forward
from gankit.core.bounded import BoundedReadError
from gankit.core.errors import warn
from gankit.outputs import files, tracking


def interactive() -> bool:
    """Whether a progress bar would be seen: on a terminal or in a notebook, not in a log file."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class Reporter:
    """Writes metric records, sample grids, and at the end the GIF and the loss plot."""

    def __init__(
        self, accelerator: Accelerator, run_dir: Path, reference: torch.Tensor | None = None
    ) -> None:
        self.accelerator, self.run_dir = accelerator, run_dir
        self.metrics = files.MetricsLog(run_dir / files.METRICS_FILE)
        self.reference = reference  # real points drawn under 2-D scatter plots
        self.tracking = tracking.Tracking(accelerator)

    def record(self, step: int, values: dict[str, Any], line: str) -> None:
        """Append `values` to metrics.jsonl and print `line` (main process); log to trackers."""
        if self.accelerator.is_main_process:
            self.metrics.write({"step": step, **values})
            tqdm.write(line)
        self.tracking.log(values, step)

    @torch.no_grad()
    def samples(
        self,
        generator: torch.nn.Module,
        noise: torch.Tensor,
        step: int,
        labels: torch.Tensor | None = None,
    ) -> None:
        """Write the grid of `generator`'s samples of `noise` (and `labels`, for a conditional
        generator: a class per row) in eval mode, and log it."""
        if not self.accelerator.is_main_process:
            return
        with eval_mode(generator), self.accelerator.autocast():
            images = forward(generator, noise, labels)
        grid = files.render_samples(images, labels, self.reference)
        files.save_image(grid, files.sample_path(self.run_dir, step))
        self.tracking.image("samples", grid, step)

    def close(self) -> None:
        """The GIF of every grid and the loss plot (main process)."""
        if self.accelerator.is_main_process:
            files.write_gif(self.run_dir)
            try:
                records = self.metrics.read()
            except BoundedReadError as error:
                warn(f"the loss plot is not drawn: {error}")
                records = []
            files.plot_losses(records, self.run_dir / files.LOSS_PLOT_FILE)
            self.tracking.flush()
            tqdm.write(f"done: outputs in {self.run_dir}")


def loss_line(record: dict[str, Any], losses: dict[str, tuple[str, ...]]) -> str:
    """`d_loss 0.9217 (real 0.4613, fake 0.4603)  g_loss 1.7835`: each network's total and,
    when it has several, its parts (`losses`: the part names of each network's updates)."""
    shown = []
    for total, network in (("d_loss", "discriminator"), ("g_loss", "generator")):
        names = [name for name in losses[network] if name != total]
        parts = ", ".join(f"{name.removeprefix(total + '_')} {record[name]:.4f}" for name in names)
        shown.append(f"{total} {record[total]:.4f}" + (f" ({parts})" if parts else ""))
    return "  ".join(shown)
