"""Exact resume and fault tolerance: stop anywhere, lose nothing, continue bit for bit."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from safetensors.torch import load_file

from gankit import LOSSES
from gankit.config.recipe import load_recipe
from gankit.core.errors import GankitError
from gankit.training.checkpoint import CheckpointError, list_checkpoints, verify
from gankit.training.divergence import DivergenceError
from gankit.training.state_files import load_state
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

# 64 images in batches of 16: an epoch is 4 steps, so these runs cross several epochs.
SMALL = [*TINY, "data.subset=64", "train.log_every=3", "train.sample_every=4"]
LONG = ("train.steps=48", "train.checkpoint_every=10")  # a few seconds of training


def command(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gankit.cli",
        "train",
        str(REFERENCE_RECIPE),
        *SMALL,
        f"output_dir={run_dir}",
        *extra,
    ]


def run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        command(run_dir, *extra), env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Weights of G and D and both optimizers' states in the newest checkpoint, by name."""
    (newest, *_) = list_checkpoints(run_dir)
    tensors = {}
    for network in ("generator", "discriminator"):
        weights = load_file(newest / f"{network}.safetensors")
        tensors.update({f"{network}.{k}": v for k, v in weights.items()})
        state = load_state(newest, f"optimizer_{network}")["state"]
        tensors.update({f"{network}.{p}.{k}": v for p, s in state.items() for k, v in s.items()})
    return tensors


def losses(run_dir: Path) -> list[tuple]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["d_loss_real"], r["d_loss_fake"], r["g_loss"]) for r in records]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight(tmp_path_factory, mnist_root) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run(run_dir, *LONG)
    return run_dir


def test_resumed_run_equals_the_uninterrupted_one_bit_for_bit(straight, tmp_path):
    run_dir = tmp_path / "run"
    run(run_dir, "train.steps=24", "train.checkpoint_every=10")  # a log and a grid step
    result = run(run_dir, *LONG)  # a new process resumes
    assert "resumed from" in result.stdout and "step 24 of 48" in result.stdout
    kept = [p.name for p in list_checkpoints(run_dir)]
    assert kept == ["step_0000048", "step_0000040", "step_0000030"]  # keep_checkpoints: 3
    assert_same_state(final_state(run_dir), final_state(straight))
    assert losses(run_dir) == losses(straight)
    # The grids continue where they stopped, identical; the GIF holds them all.
    grids = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    assert grids == sorted(p.name for p in (straight / "samples").glob("*.png"))
    assert iio.improps(run_dir / "samples.gif").n_images == len(grids)
    for name in grids:
        if (straight / "samples" / name).exists():
            assert (run_dir / "samples" / name).read_bytes() == (
                straight / "samples" / name
            ).read_bytes()


def latest_logged_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_sigkill_anywhere_then_resume_ends_where_an_uninterrupted_run_does(straight, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    rng = random.Random(0)
    # Alternate: kill while a checkpoint is being written, and kill at a random step.
    targets = sorted(rng.sample(range(5, 45), 3))
    kills = mid_write = 0
    for attempt in range(6):
        process = subprocess.Popen(
            command(run_dir, *LONG), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if attempt % 2 == 0 and any((run_dir / "checkpoints").glob(".step_*.tmp-*")):
                mid_write += 1
                break
            if attempt % 2 == 1 and latest_logged_step(run_dir) >= targets[attempt // 2]:
                time.sleep(rng.uniform(0, 0.05))
                break
            time.sleep(0.0005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        for checkpoint in list_checkpoints(run_dir):
            verify(checkpoint)  # every published checkpoint is complete
    assert kills >= 4 and mid_write >= 2, (kills, mid_write)
    run(run_dir, *LONG)  # finish what the kills left
    assert_same_state(final_state(run_dir), final_state(straight))
    assert losses(run_dir) == losses(straight)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    process = subprocess.Popen(
        command(run_dir, "train.steps=100000", "train.checkpoint_every=1000"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    assert "SIGTERM at step" in stdout and "run the same command to resume" in stdout
    (checkpoint,) = list_checkpoints(run_dir)
    step = verify(checkpoint)["step"]
    assert 3 <= step < 1000  # written at the stop, not at a scheduled checkpoint
    assert not (run_dir / "export").exists()  # the run is not finished
    run(run_dir, f"train.steps={step + 2}", "train.checkpoint_every=1000")
    assert verify(list_checkpoints(run_dir)[0])["step"] == step + 2


def in_process(run_dir: Path, *extra: str) -> Trainer:
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*SMALL, f"output_dir={run_dir}", *extra]))
    trainer.fit()
    return trainer


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, mnist_root, capsys):
    run_dir = tmp_path / "run"
    in_process(run_dir, "train.steps=6", "train.checkpoint_every=2")
    newest = list_checkpoints(run_dir)[0]
    weights = newest / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    trainer = in_process(run_dir, "train.steps=8", "train.checkpoint_every=2")
    err = capsys.readouterr().err
    assert "step_0000006: generator.safetensors is truncated" in err and "falling back" in err
    assert trainer.step == 8
    with pytest.raises(CheckpointError, match="corrupt"):
        broken = list_checkpoints(run_dir)[0] / "optimizer_generator.safetensors"
        data = bytearray(broken.read_bytes())
        data[len(data) // 2] ^= 0xFF
        broken.write_bytes(bytes(data))
        in_process(run_dir, "train.steps=9", f"train.resume={list_checkpoints(run_dir)[0]}")


def test_a_run_whose_every_checkpoint_is_corrupt_is_not_silently_restarted(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    in_process(run_dir, "train.steps=2", "train.checkpoint_every=1", "train.keep_checkpoints=2")
    for checkpoint in list_checkpoints(run_dir):
        (checkpoint / "discriminator.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*train\.resume=never"):
        in_process(run_dir, "train.steps=3")
    assert in_process(run_dir, "train.steps=3", "train.resume=never").step == 3


def test_a_recipe_that_changes_training_is_refused_unless_allowed(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    in_process(run_dir, "train.steps=2")
    with pytest.raises(
        CheckpointError, match=r"keys that change training: data\.batch_size, optim\.generator\.lr"
    ):
        in_process(run_dir, "train.steps=4", "optim.generator.lr=1e-3", "data.batch_size=8")
    assert in_process(run_dir, "train.steps=3", "train.log_every=1", "wandb.project=x").step == 3
    allowed = in_process(
        run_dir, "train.steps=4", "optim.generator.lr=1e-3", "train.allow_recipe_changes=true"
    )
    assert allowed.step == 4


@pytest.fixture
def nan_loss():
    """A non-saturating loss whose D loss turns NaN at one step (the 5th D update)."""

    @LOSSES.register("nan_at_fifth_d_update")
    class NanLoss:
        calls = 0

        def discriminator(self, real_logits, fake_logits):
            NanLoss.calls += 1
            poison = float("nan") if NanLoss.calls == 5 else 0.0
            return (
                torch.nn.functional.softplus(-real_logits).mean() + poison,
                torch.nn.functional.softplus(fake_logits).mean(),
            )

        def generator(self, fake_logits):
            return torch.nn.functional.softplus(-fake_logits).mean()

    yield NanLoss
    LOSSES.unregister("nan_at_fifth_d_update")


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, mnist_root, nan_loss
):
    run_dir = tmp_path / "run"
    with pytest.raises(DivergenceError, match="NaN or infinite at step 5"):
        in_process(
            run_dir, "loss.name=nan_at_fifth_d_update", "train.steps=10", "train.checkpoint_every=2"
        )
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_0000004", "step_0000002"]
    assert not (run_dir / "export").exists()


def test_on_nan_skip_skips_the_update_and_finishes(tmp_path, mnist_root, nan_loss):
    trainer = in_process(
        tmp_path / "run",
        "loss.name=nan_at_fifth_d_update",
        "train.steps=8",
        "train.on_nan=skip",
        "train.log_every=8",
    )
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped_updates"] == 1
    assert all(torch.isfinite(p).all() for p in trainer.parts.discriminator.parameters())


def resumed(run_dir: Path, resume: str | Path, steps: int = 6) -> Trainer:
    """A trainer of the run that has loaded `resume` (and tidied the run folder)."""
    overrides = [*SMALL, f"output_dir={run_dir}", f"train.steps={steps}", f"train.resume={resume}"]
    trainer = Trainer(load_recipe(REFERENCE_RECIPE, [*overrides, "train.checkpoint_every=2"]))
    trainer.resume()
    return trainer


def names(folders: list[Path]) -> list[str]:
    return [folder.name for folder in folders]


def test_resume_from_an_explicit_checkpoint_folder(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    in_process(run_dir, "train.steps=6", "train.checkpoint_every=2")
    branch_a = verify(run_dir / "checkpoints" / "step_0000006")  # its manifest: file hashes
    trainer = resumed(run_dir, list_checkpoints(run_dir)[1])  # back to step 4
    assert (
        trainer.step == 4 and trainer.inputs.epoch * 4 + trainer.inputs.batch_in_epoch == 4
    )  # 4 an epoch
    # the abandoned step-6 checkpoint is set aside, where `auto` does not pick it up later
    assert names(list_checkpoints(run_dir)) == ["step_0000004", "step_0000002"]
    aside = run_dir / "checkpoints" / "abandoned" / "branch_001" / "step_0000006"
    verify(aside)  # intact: nothing is lost by resuming from an older checkpoint
    with pytest.raises(CheckpointError, match="not found"):
        in_process(run_dir, "train.steps=6", f"train.resume={tmp_path / 'nowhere'}")
    with pytest.raises(CheckpointError, match="not found"):  # refused before anything is made
        in_process(tmp_path / "fresh", f"train.resume={tmp_path / 'nowhere'}")
    assert not (tmp_path / "fresh").exists()

    # a second branch (another G learning rate) reaches step 6 too; then going back to the
    # first one's step 6 sets the second aside and makes the first the run's newest, so `auto`
    # continues it after a crash
    other_lr = ("optim.generator.lr=1e-3", "train.allow_recipe_changes=true")
    in_process(run_dir, "train.steps=6", "train.checkpoint_every=2", *other_lr)
    branch_b = verify(run_dir / "checkpoints" / "step_0000006")
    weights = "generator.safetensors"
    assert branch_b["files"][weights] != branch_a["files"][weights]
    assert resumed(run_dir, aside).step == 6
    # the second branch leaves whole (its steps 2 and 4 too: they are not the first's history)
    assert names(list_checkpoints(run_dir)) == ["step_0000006"]
    assert verify(run_dir / "checkpoints" / "step_0000006") == branch_a
    assert not (run_dir / "checkpoints" / "abandoned" / "branch_001").exists()  # emptied
    second = run_dir / "checkpoints" / "abandoned" / "branch_002"
    assert names(sorted(second.iterdir())) == ["step_0000002", "step_0000004", "step_0000006"]
    assert verify(second / "step_0000006") == branch_b
    assert resumed(run_dir, "auto").step == 6
    assert verify(run_dir / "checkpoints" / "step_0000006") == branch_a


def test_a_fresh_start_keeps_set_aside_checkpoints_unless_never(tmp_path, mnist_root, capsys):
    run_dir = tmp_path / "run"
    in_process(run_dir, "train.steps=4", "train.checkpoint_every=2")
    resumed(run_dir, list_checkpoints(run_dir)[1], steps=4)  # back to 2: step 4 set aside
    aside = run_dir / "checkpoints" / "abandoned" / "branch_001" / "step_0000004"
    assert aside.is_dir()
    assert "the checkpoints of the branch left behind (step_0000004) moved" in (
        capsys.readouterr().err
    )
    for checkpoint in list_checkpoints(run_dir):  # as if the run's own were lost
        shutil.rmtree(checkpoint)
    fresh = resumed(run_dir, "auto", steps=4)  # nothing to resume: starts over
    assert fresh.step == 0 and aside.is_dir()  # what was set aside is not lost
    resumed(run_dir, "never", steps=4)
    assert not aside.exists()  # `never` deletes everything, as documented


def test_a_checkpoint_of_another_run_is_copied_in_so_auto_can_resume_it(tmp_path, mnist_root):
    other, run_dir = tmp_path / "other", tmp_path / "run"
    in_process(other, "train.steps=4", "train.checkpoint_every=2")
    in_process(run_dir, "train.steps=2", "train.checkpoint_every=2")
    source = other / "checkpoints" / "step_0000004"
    assert resumed(run_dir, source).step == 4
    assert names(list_checkpoints(run_dir)) == ["step_0000004"]  # this run's own: set aside
    assert verify(run_dir / "checkpoints" / "step_0000004") == verify(source)  # a copy
    assert source.is_dir()
    aside = run_dir / "checkpoints" / "abandoned" / "branch_001"
    assert names(sorted(aside.iterdir())) == ["step_0000002"]


def test_a_checkpoint_past_train_steps_is_refused_and_the_run_left_alone(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    in_process(run_dir, "train.steps=4", "train.checkpoint_every=2")
    recipe_text = (run_dir / "recipe.yaml").read_text()
    metrics = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(GankitError) as error:
        in_process(run_dir, "train.steps=2")
    message = str(error.value)
    assert "is at step 4, past train.steps=2" in message and "Raise it to train" in message
    assert (run_dir / "recipe.yaml").read_text() == recipe_text  # still says 4 steps
    assert (run_dir / "metrics.jsonl").read_text() == metrics
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_0000004", "step_0000002"]


def test_a_checkpoint_of_the_first_format_resumes_with_the_same_state(tmp_path, mnist_root):
    lazy = ("regularizer={name: r1, every: 2}", "ema.decay=0.9", "train.log_every=5")
    overrides = [*SMALL, "train.steps=3", *lazy]
    trained = Trainer(load_recipe(REFERENCE_RECIPE, [*overrides, f"output_dir={tmp_path / 'a'}"]))
    batches = trained.inputs.batches()
    for _ in range(3):  # no log step: the counters hold three iterations
        trained.iteration.run(trained.inputs.next(batches, trained.step))
    state = trained.run_state.state_dict()
    iteration = state["iteration"]
    # What the first format held: the counters as positions in one tensor and one list.
    first_format = {
        "step": iteration["step"],
        "epoch": state["epoch"],
        "batch_in_epoch": state["batch_in_epoch"],
        "fixed_noise": state["fixed_noise"],
        "loss_sums": torch.stack(list(iteration["loss_sums"].values())),
        "loss_counts": list(iteration["updates"].values()),
        "schedule": iteration["schedule"],
        "wandb_run_id": None,
        "ema": iteration["ema"],
        "processes": 1,
    }
    assert list(iteration["loss_sums"]) == ["d_loss_real", "d_loss_fake", "g_loss", "d_r1"]
    assert iteration["updates"]["d_r1"] == 1 and iteration["updates"]["generator"] == 6

    # The second format named the one D regularizer's sum and count d_penalty and regularize.
    second_format = {
        **state,
        "iteration": {
            **iteration,
            "loss_sums": {
                ("d_penalty" if k == "d_r1" else k): v for k, v in iteration["loss_sums"].items()
            },
            "updates": {
                ("regularize" if k == "d_r1" else k): v for k, v in iteration["updates"].items()
            },
        },
    }
    second = Trainer(load_recipe(REFERENCE_RECIPE, [*overrides, f"output_dir={tmp_path / 'c'}"]))
    second.run_state.load_state_dict(second_format)
    assert second.iteration.updates == iteration["updates"]
    assert torch.equal(second.iteration.loss_sums["d_r1"], iteration["loss_sums"]["d_r1"])

    fresh = Trainer(load_recipe(REFERENCE_RECIPE, [*overrides, f"output_dir={tmp_path / 'b'}"]))
    fresh.run_state.load_state_dict(first_format)
    loaded = fresh.iteration.state_dict()
    assert loaded["step"] == 3 and loaded["updates"] == iteration["updates"]
    for name, total in iteration["loss_sums"].items():
        assert total != 0 and torch.equal(loaded["loss_sums"][name], total), name
    for key, value in iteration["ema"].items():
        assert torch.equal(loaded["ema"][key], value), key
    assert (fresh.inputs.epoch, fresh.inputs.batch_in_epoch) == (
        trained.inputs.epoch,
        trained.inputs.batch_in_epoch,
    )
