"""The benchmark script runs both loops and writes its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import MNIST_ROOT, REFERENCE_RECIPE, ROOT


def test_bench_writes_ratios_for_gankit_and_the_plain_loop(tmp_path, mnist_root):
    out = tmp_path / "bench.json"
    overrides = [
        f"data.root={MNIST_ROOT}",
        "data.download=false",
        "data.batch_size=16",
        "generator.width=4",
        "discriminator.width=4",
        "data.subset=256",
    ]
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            str(REFERENCE_RECIPE),
            *overrides,
            "--device",
            "cpu",
            "--iters",
            "3",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--outputs-every",
            "2",
            "--json",
            str(out),
        ],
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for name in ("plain", "gankit", "gankit_with_outputs"):
        assert figures[name]["ms_per_iter"] > 0 and figures[name]["images_per_sec"] > 0
    assert figures["ratio"] == round(
        figures["gankit"]["ms_per_iter"] / figures["plain"]["ms_per_iter"], 3
    )
    assert figures["device"] == "cpu" and "ratio gankit/plain" in result.stdout
