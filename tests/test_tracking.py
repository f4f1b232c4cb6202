"""W&B mode resolution: the recipe, then WANDB_MODE; never online without a key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gankit.config.recipe import WandbSection
from gankit.outputs.tracking import wandb_mode

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


def test_disabled_training_never_imports_wandb(tmp_path, mnist_root):
    overrides = [*TINY, f"output_dir={tmp_path}", "train.steps=2"]
    script = (
        "import sys\n"
        "from gankit.config.recipe import load_recipe\n"
        "from gankit.training.trainer import train\n"
        f"train(load_recipe({str(REFERENCE_RECIPE)!r}, {overrides!r}))\n"
        "assert 'wandb' not in sys.modules, 'wandb was imported'\n"
    )
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "export" / "generator" / "model.safetensors").is_file()
