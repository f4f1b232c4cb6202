"""Checks that need CUDA GPUs: fp16 with loss scaling, SyncBatchNorm, CUDA graphs, no host
synchronisation in the training step. They run where a GPU is (`scripts/gpu_checks.sh`)."""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from test_network_runs import NETWORKS
from test_network_runs import fit as fit_tiny

import gankit
from gankit.config.recipe import load_recipe
from gankit.training.trainer import Trainer

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
    assert next(trainer.parts.generator.parameters()).dtype == torch.float32


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


# The fast path as the bench's graph mode runs it, and the eager fast path it is compared with
# (same fused Adam, same device-held data in the same order).
FAST = ["perf.data_on_device=true", "perf.fused_adam=true"]
GRAPH = [*FAST, "perf.cuda_graph=true"]
# EMA, a cosine learning rate, lazy R1 and path length, and ADA with a moving p: two phase
# patterns, device-side rates, weights, means and probabilities, augmentation inside the graph
EMA_R1_COSINE = [
    "ema.decay=0.9",
    "optim.generator.lr_schedule=cosine",
    "regularizer={name: r1, weight: 1.0, every: 2}",
    "regularizers=[{name: path_length, every: 2}]",
    "augment={name: ada, p: 0.5, interval: 1, speed_kimg: 0.05}",
]
# The other road through the graph: batches from the DataLoader, foreach (not fused) Adam,
# channels_last, two micro-batches per update, and a gradient penalty (random numbers drawn
# inside the graph) with a Wasserstein loss, and DiffAugment
OTHER_ROAD = [
    "perf.data_on_device=false",
    "perf.fused_adam=false",
    "perf.channels_last=true",
    "train.grad_accumulation=2",
    "loss.name=wasserstein",
    "regularizer={name: gradient_penalty, weight: 10.0, every: 1}",
    "augment={name: diffaugment}",
]


# every kind of scheduled value, moving over the 10 iterations (160 images): the replays must
# read the device tensors the schedules fill, betas included (capturable Adam's tensor betas)
SCHEDULED = [
    "optim.generator.lr={start: 4.0e-4, end: 1.0e-4, kimg: 0.16}",
    "optim.discriminator.betas=[0.5, {start: 0.9, end: 0.99, kimg: 0.16}]",
    "regularizer={name: r1, weight: {start: 1.0, end: 0.1, kimg: 0.16}, every: 2}",
    "augment={name: ada, adaptive: false, p: {start: 0.8, end: 0.2, kimg: 0.16}}",
    "ema.half_life_kimg={start: 0.01, end: 0.1, kimg: 0.16}",
]


def fit(run_dir, *overrides: str, capture: bool = True) -> Trainer:
    """Train a tiny reference recipe; `capture=False` runs a graph recipe's iterations eagerly
    through the same static buffers, capturable optimizers and device-side rates."""
    gc.collect()  # free earlier trainers' graphs (they sit in reference cycles) first
    common = [*TINY, "data.subset=256", "train.log_every=1", "train.sample_every=100"]
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*common, *overrides, f"output_dir={run_dir}"]))
    if not capture:
        trainer.iteration.graphs.capture = False
    trainer.fit()
    return trainer


def logged_losses(run_dir) -> list[list[float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [[r["d_loss_real"], r["d_loss_fake"], r["g_loss"]] for r in records]


def trained_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """G, D (weights and BatchNorm statistics) and the EMA of G, by name."""
    networks = {"G": trainer.parts.generator, "D": trainer.parts.discriminator}
    if trainer.parts.ema is not None:
        networks["EMA"] = trainer.parts.ema.module
    return {
        f"{name}.{key}": value.float()
        for name, network in networks.items()
        for key, value in network.state_dict().items()
    }


@needs_cuda
@pytest.mark.parametrize(
    ("extra", "patterns", "tolerance"),
    [
        ([], 1, 1e-4),
        (EMA_R1_COSINE, 2, 1e-4),
        (["mixed_precision=bf16"], 1, 2e-2),
        (OTHER_ROAD, 1, 1e-4),
        (SCHEDULED, 2, 1e-4),
    ],
    ids=["reference", "ema+r1+cosine", "bf16", "loader+foreach+gp+accumulation", "schedules"],
)
def test_cuda_graph_trains_like_eager(
    tmp_path, mnist_root, deterministic, extra, patterns, tolerance
):
    steps = "train.steps=10"
    graph = fit(tmp_path / "graph", steps, *GRAPH, *extra)
    assert len(graph.iteration.graphs.graphs) == patterns
    warmup = (
        graph.iteration.graphs.warmup * patterns
    )  # eager iterations before each pattern's capture
    assert graph.iteration.graphs.replays == 10 - warmup
    assert int(graph.iteration.device_step) == graph.step == 10
    # The same iterations without capture (same optimizer kernels and device-side rates):
    # weights, BatchNorm statistics and the EMA moved with the replays as they do eagerly.
    staged = fit(tmp_path / "staged", steps, *GRAPH, *extra, capture=False)
    assert staged.iteration.graphs.replays == 0
    torch.testing.assert_close(
        trained_state(graph), trained_state(staged), rtol=tolerance * 10, atol=tolerance
    )
    # The default eager fast path (float learning rates) logs the same losses. Its weights are
    # not compared: float and tensor rates may round Adam's step differently in the last bit,
    # and the biases in front of BatchNorm, whose gradients are rounding noise, amplify that.
    fit(tmp_path / "eager", steps, *FAST, *extra)
    for run in ("graph", "staged"):
        torch.testing.assert_close(
            logged_losses(tmp_path / run),
            logged_losses(tmp_path / "eager"),
            rtol=tolerance,
            atol=tolerance,
        )


@needs_cuda
def test_cuda_graph_run_resumes_where_it_stopped(tmp_path, mnist_root, deterministic):
    # EMA, lazy R1 and a learning rate that warms up across the checkpoint at step 4 and
    # through the replays
    changing = [
        "train.checkpoint_every=4",
        "ema.decay=0.9",
        "regularizer={name: r1, weight: 1.0, every: 2}",
        "optim.generator.warmup_steps=12",
        *GRAPH,
    ]
    straight = fit(tmp_path / "straight", "train.steps=12", *changing)
    fit(tmp_path / "resumed", "train.steps=4", *changing)
    resumed = fit(tmp_path / "resumed", "train.steps=12", *changing)
    # steps 4-11: each of the two patterns runs twice eagerly, then replays twice
    assert resumed.iteration.graphs.replays == 4
    lr = resumed.parts.g_optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.device.type == "cuda"  # still read by replays
    torch.testing.assert_close(
        logged_losses(tmp_path / "resumed"),
        logged_losses(tmp_path / "straight"),
        rtol=1e-4,
        atol=1e-5,
    )
    torch.testing.assert_close(
        trained_state(resumed), trained_state(straight), rtol=1e-3, atol=1e-5
    )


@needs_cuda
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_steady_state_steps_never_wait_for_the_gpu(tmp_path, mnist_root, mode):
    overrides = [*TINY, "data.subset=1024", "train.steps=100", f"output_dir={tmp_path}"]
    trainer = Trainer(
        load_recipe(REFERENCE_RECIPE, [*overrides, *(GRAPH if mode == "graph" else FAST)])
    )
    batches = trainer.inputs.batches()
    for _ in range(4):  # warm-up (and capture): they may synchronise
        trainer.train_step(*trainer.inputs.next(batches, trainer.step))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation now raises
    try:
        for _ in range(16):
            trainer.train_step(*trainer.inputs.next(batches, trainer.step))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert trainer.step == 20 and (mode == "eager") == (trainer.iteration.graphs is None)


# ---- the r3gan and stylegan2 pairs under the graph and compile modes --------------------------


def fit_network(run_dir, net: str, *extra: str, capture: bool = True) -> Trainer:
    """Train `net`'s tiny recipe of tests/test_network_runs.py on 256 MNIST digits
    (class-conditional); `capture=False` as in `fit`."""
    gc.collect()
    settings = ["train.sample_every=100", "data.subset=256", *extra]
    return fit_tiny(net, "mnist28", run_dir, *settings, staged=not capture)


def network_losses(run_dir) -> list[list[float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [[r["d_loss"], r["g_loss"]] for r in records]


@needs_cuda
@pytest.mark.parametrize("net", NETWORKS)
def test_the_modern_pairs_train_under_cuda_graphs_like_eager(
    tmp_path, mnist_root, deterministic, net
):
    steps = "train.steps=10"
    graph = fit_network(tmp_path / "graph" / "run", net, steps, *GRAPH)
    patterns = 1 if net == "r3gan" else 2  # stylegan2: lazy R1 and path length every other step
    assert len(graph.iteration.graphs.graphs) == patterns
    assert graph.iteration.graphs.replays == 10 - graph.iteration.graphs.warmup * patterns
    assert int(graph.iteration.device_step) == graph.step == 10
    staged = fit_network(tmp_path / "staged" / "run", net, steps, *GRAPH, capture=False)
    assert staged.iteration.graphs.replays == 0
    torch.testing.assert_close(trained_state(graph), trained_state(staged), rtol=1e-3, atol=1e-4)
    fit_network(tmp_path / "eager" / "run", net, steps, *FAST)
    for run in ("graph", "staged"):
        torch.testing.assert_close(
            network_losses(tmp_path / run / "run"),
            network_losses(tmp_path / "eager" / "run"),
            rtol=1e-4,
            atol=1e-4,
        )


@needs_cuda
@pytest.mark.parametrize("net", NETWORKS)
def test_the_modern_pairs_train_compiled_like_eager(tmp_path, mnist_root, deterministic, net):
    steps = "train.steps=4"
    eager = fit_network(tmp_path / "eager" / "run", net, steps, *FAST)
    compiled = fit_network(tmp_path / "compiled" / "run", net, steps, *FAST, "perf.compile=true")
    assert trained_state(eager).keys() == trained_state(compiled).keys()  # no _orig_mod.
    torch.testing.assert_close(
        network_losses(tmp_path / "compiled" / "run"),
        network_losses(tmp_path / "eager" / "run"),
        rtol=1e-3,
        atol=1e-4,
    )
    generator = gankit.load_generator(tmp_path / "compiled" / "run" / "export" / "generator")
    assert generator.sample(2, seed=0, labels=[0, 1]).shape == (2, 1, 28, 28)
