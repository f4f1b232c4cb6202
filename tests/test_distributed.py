"""Several processes on CPU (gloo), launched the way users launch them, compared rank by rank."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gankit.config.recipe import load_recipe
from gankit.training.checkpoint import list_checkpoints, verify
from gankit.training.trainer import Trainer

from conftest import MNIST_ROOT, REFERENCE_RECIPE, ROOT, TINY

# 64 images in per-process batches of 16: with 2 processes an epoch is 2 steps.
SMALL = [*TINY, "data.subset=64", "train.log_every=2", "train.sample_every=2"]
# A BatchNorm-free pair, so that batch statistics do not depend on how a batch is split.
MLP = [
    f"data.root={MNIST_ROOT}",
    "data.download=false",
    "data.subset=64",
    "train.progress=false",
    "generator={name: mlp, hidden: 32, z_dim: 16}",
    "discriminator={name: mlp, hidden: 32}",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(script: Path | str, *args: str, processes: int = 2) -> list[str]:
    """`accelerate launch --multi_gpu` of `script` on `processes` CPU processes."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", str(processes), "--num_machines", "1",
        "--main_process_port", str(free_port()), "--mixed_precision", "no",
        "--dynamo_backend", "no", str(script), *args,
    ]  # fmt: skip


def launch_env(wandb: str = "disabled") -> dict[str, str]:
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "WANDB_MODE": wandb, "OMP_NUM_THREADS": "1"}


def launch(script: Path | str, *args: str, processes: int = 2, wandb: str = "disabled"):
    """Launch as a user would on one machine, and expect success."""
    command, env = launch_command(script, *args, processes=processes), launch_env(wandb)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_two_processes_through_the_training_script(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    result = launch(
        ROOT / "scripts" / "train.py",
        str(REFERENCE_RECIPE),
        *SMALL,
        "train.steps=4",
        "eval.every=4",
        "eval.n=101",
        f"output_dir={run_dir}",
        wandb="offline",
    )
    assert "process 0 of 2" in result.stdout and "process 1 of 2" in result.stdout
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (
        info["processes"] == 2
        and info["batch_per_process"] == 16
        and info["batch_per_update"] == 32
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 4]  # one writer: no line twice
    (evaluated,) = [r for r in records if "eval/frechet_distance" in r]  # both ranks' samples
    assert evaluated["eval/classes_covered"] >= 1 and evaluated["eval/frechet_distance"] > 0
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert result.stdout.count("done: outputs in") == 1
    assert (run_dir / "export" / "generator" / "model.safetensors").is_file()


def test_ranks_share_weights_and_fixed_noise_but_not_data_or_noise(tmp_path, mnist_root):
    out = tmp_path / "report.json"
    launch(
        ROOT / "tests" / "helpers" / "distributed_probe.py",
        str(out),
        str(REFERENCE_RECIPE),
        *SMALL,
        "train.steps=4",
        f"output_dir={tmp_path / 'run'}",
    )
    reports = [json.loads(Path(f"{out}.{process}").read_text()) for process in (0, 1)]
    assert [(r["process"], r["processes"]) for r in reports] == [(0, 2), (1, 2)]
    index = {round(value, 6): i for i, value in enumerate(reports[0]["dataset"])}
    for epoch in range(2):  # each epoch: the ranks' batches are disjoint and cover the data once
        batches = [r["seen"][2 * epoch + s] for r in reports for s in range(2)]
        indices = [index[round(value, 6)] for batch in batches for value in batch]
        assert sorted(indices) == list(range(64))
    for step in range(4):
        assert reports[0]["noise"][step] != reports[1]["noise"][step]
    assert reports[0]["parameters"] == reports[1]["parameters"]
    assert reports[0]["buffers"] == reports[1]["buffers"]  # BatchNorm statistics from process 0
    assert reports[0]["fixed_noise"] == reports[1]["fixed_noise"]


def exported(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for network in ("generator", "discriminator"):
        weights = load_file(run_dir / "export" / network / "model.safetensors")
        tensors.update({f"{network}.{k}": v for k, v in weights.items()})
    return tensors


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("variant", ["augmented", "conditional"])
def test_two_processes_at_b_equal_one_process_at_2b(tmp_path, mnist_root, variant):
    """Unconditional with ADA (each image's augmentation is keyed by its place in the global
    batch, and p by D's verdicts summed over processes), and class-conditional."""
    extra = {
        "augmented": ["augment={name: ada, p: 0.5, interval: 1, speed_kimg: 0.01}"],
        "conditional": ["generator.num_classes=10", "discriminator.num_classes=10"],
    }[variant]
    steps = ["train.steps=3", "train.log_every=3", "train.sample_every=3", *extra]
    launch(
        ROOT / "scripts" / "train.py",
        str(REFERENCE_RECIPE),
        *MLP,
        *steps,
        "data.batch_size=8",
        f"output_dir={tmp_path / 'two'}",
    )
    single = Trainer(
        load_recipe(
            REFERENCE_RECIPE, [*MLP, *steps, "data.batch_size=16", f"output_dir={tmp_path / 'one'}"]
        )
    )
    single.fit()
    two, one = exported(tmp_path / "two"), exported(tmp_path / "one")
    assert_close(two, one)
    initial = Trainer(
        load_recipe(
            REFERENCE_RECIPE,
            [
                *MLP,
                *extra,
                "data.batch_size=16",
                "train.steps=1",
                f"output_dir={tmp_path / 'init'}",
            ],
        )
    )
    start = {f"generator.{k}": v for k, v in initial.parts.generator.state_dict().items()}
    assert any(not torch.equal(start[k], one[k]) for k in start)  # it trained


def test_gradient_accumulation_steps_both_networks_once_per_phase(tmp_path, mnist_root):
    recipe = load_recipe(
        REFERENCE_RECIPE,
        [*TINY, "train.grad_accumulation=2", "train.steps=1", f"output_dir={tmp_path}"],
    )
    trainer = Trainer(recipe)
    real, _ = next(trainer.inputs.batches())
    assert real.shape[0] == 32  # two micro-batches of 16
    trainer.train_step(real, trainer.inputs.latents(real.shape[0], trainer.step)[0])
    steps = lambda optimizer: {float(s["step"]) for s in optimizer.state.values()}  # noqa: E731
    assert steps(trainer.parts.d_optimizer) == {1.0} and steps(trainer.parts.g_optimizer) == {2.0}


def test_gradient_accumulation_equals_the_large_batch(tmp_path, mnist_root):
    steps = ["train.steps=3", "train.log_every=3", "train.sample_every=3"]
    accumulated = Trainer(
        load_recipe(
            REFERENCE_RECIPE,
            [
                *MLP,
                *steps,
                "data.batch_size=8",
                "train.grad_accumulation=2",
                f"output_dir={tmp_path / 'acc'}",
            ],
        )
    )
    accumulated.fit()
    large = Trainer(
        load_recipe(
            REFERENCE_RECIPE,
            [*MLP, *steps, "data.batch_size=16", f"output_dir={tmp_path / 'large'}"],
        )
    )
    large.fit()
    assert_close(exported(tmp_path / "acc"), exported(tmp_path / "large"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without CUDA")
def test_sync_batch_norm_on_cpu_falls_back_with_a_message(tmp_path, mnist_root, capsys):
    recipe = load_recipe(
        REFERENCE_RECIPE,
        [*TINY, "train.batch_norm=sync", "train.steps=1", f"output_dir={tmp_path}"],
    )
    trainer = Trainer(recipe)
    assert "sync needs CUDA GPUs" in capsys.readouterr().err
    assert trainer.batch_norm == "broadcast"
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.parts.generator.modules())


def test_a_global_batch_is_split_over_processes_or_refused(tmp_path, mnist_root):
    whole = Trainer(
        load_recipe(REFERENCE_RECIPE, [*TINY, "data.global_batch=true", f"output_dir={tmp_path}"])
    )
    assert whole.parts.batch_size == 16  # one process: the global batch is its batch
    result = subprocess.run(
        launch_command(
            ROOT / "scripts" / "train.py",
            str(REFERENCE_RECIPE),
            *SMALL,
            "data.global_batch=true",
            "data.batch_size=15",
            f"output_dir={tmp_path / 'run'}",
        ),
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "does not split evenly over 2 processes" in result.stderr
    assert "gankit: error: data.batch_size 15" in result.stderr  # a message, not a crash


def test_two_process_resume_equals_the_uninterrupted_run(tmp_path, mnist_root):
    script = ROOT / "scripts" / "train.py"
    common = [str(REFERENCE_RECIPE), *SMALL, "train.log_every=1", "train.checkpoint_every=1"]
    launch(script, *common, "train.steps=6", f"output_dir={tmp_path / 'straight'}")
    launch(script, *common, "train.steps=3", f"output_dir={tmp_path / 'resumed'}")
    result = launch(script, *common, "train.steps=6", f"output_dir={tmp_path / 'resumed'}")
    assert "resumed from" in result.stdout
    straight, resumed = exported(tmp_path / "straight"), exported(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    metrics = [(tmp_path / run / "metrics.jsonl").read_text() for run in ("straight", "resumed")]
    losses = [
        [
            {k: v for k, v in json.loads(line).items() if k != "images_per_sec"}
            for line in text.splitlines()
        ]
        for text in metrics
    ]
    assert losses[0] == losses[1]


def test_two_processes_with_a_lazy_gradient_penalty(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    launch(
        ROOT / "scripts" / "train.py",
        str(REFERENCE_RECIPE),
        *SMALL,
        "train.steps=4",
        "regularizer={name: r1, weight: 1.0, every: 2}",
        "train.grad_accumulation=2",
        "data.subset=128",
        f"output_dir={run_dir}",
    )
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["d_r1"] > 0


def test_sigterm_to_the_launcher_stops_every_process_at_the_same_step(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    env = launch_env()
    command = launch_command(
        ROOT / "scripts" / "train.py",
        str(REFERENCE_RECIPE),
        *TINY,
        "train.steps=1000000",
        "train.log_every=100000",
        "train.checkpoint_every=100000",
        f"output_dir={run_dir}",
    )
    launcher = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "samples").is_dir() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # some steps, but far from any log or checkpoint step
    launcher.send_signal(signal.SIGTERM)
    stdout, stderr = launcher.communicate(timeout=120)
    assert "SIGTERM at step" in stdout, stderr[-3000:]
    (checkpoint,) = list_checkpoints(run_dir)
    assert 0 < verify(checkpoint)["step"] < 100000
    assert not (run_dir / "export").exists()
