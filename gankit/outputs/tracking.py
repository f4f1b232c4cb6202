"""Weights & Biases through Accelerate's tracker: mode resolution, run config, scalars, images.

`wandb` is imported only by Accelerate's tracker, and only when the mode is not `disabled`.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from gankit.config.recipe import WandbSection
from gankit.core.errors import GankitError


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC")).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_mode(section: WandbSection) -> str:
    """`online`, `offline` or `disabled`: the recipe's choice, else WANDB_MODE, else online.

    Online without an API key would fail (or wait for a prompt), so it falls back to offline
    with a message; `wandb sync` uploads an offline run later.
    """
    mode = section.mode or os.environ.get("WANDB_MODE", "").strip().lower() or "online"
    if mode in ("dryrun",):
        mode = "offline"
    if mode not in ("online", "offline", "disabled"):
        raise GankitError(
            f"W&B mode {mode!r} (wandb.mode or WANDB_MODE): use online, offline or disabled"
        )
    if mode == "online" and not _has_api_key():
        print(
            "gankit: no W&B API key found (WANDB_API_KEY or `wandb login`); logging offline. "
            "Upload later with `wandb sync`, or set wandb.mode: disabled.",
            file=sys.stderr,
        )
        mode = "offline"
    return mode


def start_tracking(
    accelerator: Accelerator,
    section: WandbSection,
    mode: str,
    config: dict[str, Any],
    run_dir: Path,
    run_id: str | None = None,
) -> None:
    """Start the W&B run (main process) with the resolved recipe as its config; with `run_id`,
    continue that run (a resumed training)."""
    if mode == "disabled":
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    init_kwargs = {
        "name": config.get("name"),
        "dir": str(run_dir),
        "mode": mode,
        "entity": section.entity,
        "tags": section.tags or None,
    }
    if run_id:
        init_kwargs.update(id=run_id, resume="allow")
    accelerator.init_trackers(section.project, config=config, init_kwargs={"wandb": init_kwargs})


def run_id(accelerator: Accelerator) -> str | None:
    """The id of the W&B run this process logs to, if any (saved so a resume continues it)."""
    for tracker in accelerator.trackers:
        run = getattr(tracker, "run", None)
        if tracker.name == "wandb" and run is not None:
            return run.id
    return None


def log_image(accelerator: Accelerator, key: str, image: np.ndarray, step: int) -> None:
    """Log one uint8 image to the trackers that take images."""
    for tracker in accelerator.trackers:
        if hasattr(tracker, "log_images"):
            tracker.log_images({key: [image]}, step=step)
