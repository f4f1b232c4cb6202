"""Trackers: W&B's mode (the recipe, then WANDB_MODE; never online without a key), and what a
run logs to W&B and TensorBoard."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gankit.config.recipe import WandbSection, load_recipe
from gankit.core.errors import GankitError
from gankit.outputs.tracking import best_summary, tracker_key, trackers, wandb_mode

from conftest import REFERENCE_RECIPE, TINY


@pytest.fixture
def no_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no such file: no stored login


def test_online_without_a_key_falls_back_to_offline(no_key, capsys):
    assert wandb_mode(WandbSection()) == "offline"
    assert wandb_mode(WandbSection(mode="online")) == "offline"
    assert "no W&B API key" in capsys.readouterr().err


def test_a_key_keeps_online(no_key, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(WandbSection()) == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert wandb_mode(WandbSection()) == "online"


def test_the_recipe_wins_over_the_environment(no_key, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(WandbSection()) == "disabled"
    assert wandb_mode(WandbSection(mode="offline")) == "offline"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert wandb_mode(WandbSection()) == "offline"


def test_w_and_b_is_not_looked_at_unless_chosen(no_key, monkeypatch, capsys):
    for env in (None, "", "bogus", "online"):
        if env is not None:
            monkeypatch.setenv("WANDB_MODE", env)
        assert wandb_mode(WandbSection(), ["tensorboard"]) == "disabled"
        assert wandb_mode(WandbSection(mode="online"), []) == "disabled"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("env", ["", " ", "Offline", "run"])
def test_a_wandb_mode_that_w_and_b_refuses_is_one_clear_error(no_key, monkeypatch, env, capsys):
    monkeypatch.setenv("WANDB_MODE", env)
    refused = r"^WANDB_MODE is set (but empty|to '.*'): set it to online, offline or disabled"
    with pytest.raises(GankitError, match=refused):
        wandb_mode(WandbSection())
    with pytest.raises(GankitError, match="WANDB_MODE"):
        wandb_mode(WandbSection(mode="offline"))  # wandb reads the variable all the same
    assert wandb_mode(WandbSection(mode="disabled")) == "disabled"  # W&B stays unstarted


def test_training_with_an_empty_wandb_mode_stops_at_once(tmp_path, monkeypatch, capsys):
    from gankit.cli import main

    monkeypatch.setenv("WANDB_MODE", "")
    argv = ["train", str(REFERENCE_RECIPE), *TINY, f"output_dir={tmp_path / 'run'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gankit: error: WANDB_MODE is set but empty") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("project", ["a/b", "..", ".", "team:x", "a\\b"])
def test_a_project_that_is_no_folder_name_is_refused(project, capsys):
    from gankit.cli import main

    assert main(["validate", "-q", str(REFERENCE_RECIPE), f"wandb.project={project}"]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 and problems[0].startswith("  - wandb.project: a W&B project name ")
    assert "give a plain name such as 'gankit'" in problems[0]


@pytest.mark.parametrize(
    ("log_with", "env", "install"),
    [
        ("[tensorboard]", "disabled", 'pip install "gankit[tensorboard]"'),
        ("[wandb]", "offline", "pip install wandb"),
    ],
)
def test_validate_checks_the_chosen_trackers_packages(monkeypatch, capsys, log_with, env, install):
    from gankit.cli import main

    name = log_with.strip("[]")
    monkeypatch.setenv("WANDB_MODE", env)
    argv = ["validate", "-q", str(REFERENCE_RECIPE), f"tracking.log_with={log_with}"]
    assert main(argv) == 0
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the {name} package is not installed" in err
    assert install in err
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main([*argv, "tracking.log_with=[]"]) == 0


@pytest.mark.parametrize("chosen", ["wandb disabled", "tensorboard only"])
def test_training_without_w_and_b_never_imports_wandb(tmp_path, mnist_root, chosen):
    """W&B disabled, or not chosen (TensorBoard only, with no W&B key or mode anywhere): wandb
    is not imported and says nothing."""
    overrides = [*TINY, f"output_dir={tmp_path / 'run'}", "train.steps=2"]
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env["NETRC"] = str(tmp_path / "no-netrc")
    if chosen == "wandb disabled":
        env["WANDB_MODE"] = "disabled"
    else:
        overrides.append("tracking.log_with=[tensorboard]")
    script = (
        "import sys\n"
        "from gankit.config.recipe import load_recipe\n"
        "from gankit.training.trainer import train\n"
        f"train(load_recipe({str(REFERENCE_RECIPE)!r}, {overrides!r}))\n"
        "assert 'wandb' not in sys.modules, 'wandb was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "W&B API key" not in result.stderr and "wandb" not in result.stderr.lower()
    assert (tmp_path / "run" / "export" / "generator" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "wandb").exists()
    assert (tmp_path / "run" / "tensorboard").exists() == (chosen == "tensorboard only")


# --- trackers: TensorBoard and W&B record what a run logs ------------------------------------

BLOCK = 32768  # W&B's transaction log (run-*.wandb): LevelDB-style 32 KiB blocks of records


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline W&B run's transaction log, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    found, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def test_best_summaries_and_groups_of_keys():
    assert tracker_key("d_loss") == "train/d_loss"
    assert tracker_key("lr_generator") == "train/lr_generator"
    assert tracker_key("images_per_sec") == "perf/images_per_sec"
    assert tracker_key("eval/frechet_distance") == "eval/frechet_distance"
    for key in ("eval/frechet_distance", "eval/inception_fid", "eval/coverage_tv", "eval/kid"):
        assert best_summary(key) == "min", key
    for key in ("eval/classifier_score", "eval/classes_covered", "eval/precision"):
        assert best_summary(key) == "max", key
    assert best_summary("eval/classifier_score_std") is None
    assert best_summary("train/d_loss") is None


def test_tensorboard_missing_is_one_clear_error(monkeypatch):
    recipe = load_recipe(REFERENCE_RECIPE, ["tracking.log_with=[tensorboard]"])
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(GankitError, match=r'pip install "gankit\[tensorboard\]"'):
        trackers(recipe, "disabled")
    assert trackers(load_recipe(REFERENCE_RECIPE), "disabled") == []


def test_a_run_logs_to_tensorboard_and_wandb(tmp_path, mnist_root):
    """Both trackers get the losses under train/, throughput under perf/, the learning rates
    and the sample grids; W&B gets the name, group and notes given as --key=value overrides
    (the form sweeps pass) and the export as a model artifact."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    command = [
        *(sys.executable, "-m", "gankit", "train", str(REFERENCE_RECIPE)),
        *TINY,
        *("data.subset=64", "train.steps=4", "train.log_every=2", "train.sample_every=2"),
        f"--output_dir={run_dir}",
        "--tracking.log_with=[wandb, tensorboard]",
        *("--wandb.group=sweep-1", "--wandb.notes=a first try"),
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4]

    events = EventAccumulator(str(run_dir / "tensorboard" / "gankit"), size_guidance={"images": 0})
    events.Reload()
    for name in ("d_loss", "g_loss", "d_loss_real", "lr_generator", "lr_discriminator"):
        scalars = events.Scalars(f"train/{name}")
        assert [(e.step, e.value) for e in scalars] == [
            (r["step"], pytest.approx(r[name], rel=1e-6)) for r in logged
        ], name
    assert [e.step for e in events.Scalars("perf/images_per_sec")] == [2, 4]
    assert [e.step for e in events.Images("samples")] == [0, 2, 4]
    assert "d_loss" not in events.Tags()["scalars"]  # only under its group

    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(log)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name.startswith("run-")  # the folder's name and the start time
    assert (run.run_group, run.notes) == ("sweep-1", "a first try")
    history = [
        {item.nested_key[0]: json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [h["_step"] for h in history] == [0, 2, 4]  # a row per step: grids and scalars
    assert all("samples" in h for h in history)
    scalars = [h for h in history if "train/d_loss" in h]
    assert [h["train/d_loss"] for h in scalars] == [pytest.approx(r["d_loss"]) for r in logged]
    assert all("perf/images_per_sec" in h and "train/lr_generator" in h for h in scalars)
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert (artifact.type, artifact.name) == ("model", "mnist_dcgan-generator")
    assert set(artifact.aliases) == {"latest", "step-4"}
    assert {entry.path for entry in artifact.manifest.contents} >= {
        "config.json",
        "model.safetensors",
    }
