"""Checks that need CUDA GPUs: fp16 with loss scaling, SyncBatchNorm. They run where a GPU is."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from gankit.recipe import load_recipe
from gankit.trainer import Trainer

from conftest import REFERENCE_RECIPE, ROOT, TINY

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_trains_on_a_gpu(tmp_path, mnist_root, precision):
    overrides = [*TINY, f"mixed_precision={precision}", "train.steps=6", "train.log_every=3"]
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*overrides, f"output_dir={tmp_path}"]))
    trainer.fit()
    assert trainer.accelerator.device.type == "cuda"
    assert (trainer.accelerator.scaler is not None) == (precision == "fp16")
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert all(math.isfinite(record[k]) for k in ("d_loss", "g_loss")), record
    assert next(trainer.g_module.parameters()).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_sync_batch_norm_on_two_gpus(tmp_path, mnist_root):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        str(ROOT / "scripts" / "train.py"),
        str(REFERENCE_RECIPE),
        *TINY,
        "train.batch_norm=sync",
        "train.steps=4",
        f"output_dir={tmp_path}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run_info.json").read_text())["batch_norm"] == "sync"
