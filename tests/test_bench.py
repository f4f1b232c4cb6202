"""The benchmark script runs both loops and writes its figures."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from unittest import mock

from conftest import MNIST_ROOT, REFERENCE_RECIPE, ROOT


def test_bench_writes_ratios_for_gankit_and_the_plain_loop(tmp_path, mnist_root):
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
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
            "--markdown",
            str(table),
        ],
        env={**os.environ, "WANDB_MODE": "disabled", "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(tmp_path.glob("gankit-bench-*"))  # its runs' checkpoints are cleaned up
    figures = json.loads(out.read_text())
    for name in ("plain", "gankit", "gankit_with_outputs"):
        assert figures[name]["ms_per_iter"] > 0 and figures[name]["images_per_sec"] > 0
    assert figures["ratio"] == round(
        figures["gankit"]["ms_per_iter"] / figures["plain"]["ms_per_iter"], 3
    )
    assert figures["device"] == "cpu" and "ratio gankit/plain" in result.stdout
    assert (
        list(figures["modes"]) == ["eager"]
        and figures["modes"]["eager"]["ratio"] == (figures["ratio"])
    )
    rows = table.read_text().splitlines()
    assert rows[0].startswith("Device: cpu") and "TF32 off" in rows[0]
    assert rows[4].startswith("| plain PyTorch | ") and rows[5].startswith("| gankit, eager | ")
    assert f"| {figures['ratio']:.2f} |" in rows[5]


def test_bench_refuses_the_graph_mode_on_a_cpu():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), str(REFERENCE_RECIPE),
         "--device", "cpu", "--modes", "eager,graph"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "the graph mode needs --device cuda" in result.stderr


def bench(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), *arguments],
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def bench_here(*arguments: str) -> subprocess.CompletedProcess:
    """scripts/bench.py's `main` run in this process (for refusals, which train nothing)."""
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out, err = io.StringIO(), io.StringIO()
    argv = mock.patch.object(sys, "argv", ["bench.py", *arguments])
    with argv, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = script.main()
    return subprocess.CompletedProcess(arguments, code, out.getvalue(), err.getvalue())


def test_bench_refuses_recipes_the_plain_loop_would_not_train_alike():
    result = bench_here(str(ROOT / "recipes" / "ring_mlp.yaml"), "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the plain loop does not implement the r1 regularizer; an EMA of G" in result.stderr
    conditional = bench_here(str(ROOT / "recipes" / "mnist_cdcgan.yaml"), "--device", "cpu")
    assert conditional.returncode == 2 and "class-conditional models" in conditional.stderr


def test_bench_reports_recipe_mistakes_in_one_line():
    result = bench_here(str(REFERENCE_RECIPE), "train.stepz=3", "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown key train.stepz; did you mean 'steps'?" in result.stderr


def test_a_failing_fast_mode_is_reported_and_the_other_loops_still_measured(tmp_path, mnist_root):
    # perf.cuda_graph on a CPU trains eagerly, but it cannot be combined with perf.compile: the
    # compile mode fails when its recipe is built, the eager one runs
    out, table = tmp_path / "bench.json", tmp_path / "bench.md"
    result = bench(
        str(REFERENCE_RECIPE),
        f"data.root={MNIST_ROOT}",
        "data.download=false",
        "data.batch_size=16",
        "generator.width=4",
        "discriminator.width=4",
        "perf.cuda_graph=true",
        *("--device", "cpu", "--modes", "eager,compile", "--iters", "2", "--warmup", "1"),
        *("--rounds", "1", "--outputs-every", "2", "--json", str(out), "--markdown", str(table)),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert "cuda_graph cannot be combined with perf.compile" in figures["modes"]["compile"]["error"]
    assert figures["modes"]["eager"]["ms_per_iter"] > 0 and figures["ratio"] > 0
    assert "| gankit, compile | failed: RecipeError: " in table.read_text()
    assert "the compile mode failed" in result.stderr
