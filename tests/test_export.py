"""Exports: config.json + model.safetensors, rebuilt without pickle, bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import gankit
from gankit.core.errors import ExportError
from gankit.outputs import export


@pytest.fixture
def trained_generator() -> gankit.Generator:
    torch.manual_seed(0)
    generator = gankit.GENERATORS.build(
        {"name": "dcgan28", "width": 4, "z_dim": 12}, image_shape=(1, 28, 28)
    )
    generator.train()
    with torch.no_grad():  # move the BatchNorm running statistics away from their defaults
        for _ in range(3):
            generator(generator.sample_noise(8))
    return generator


def test_round_trip_gives_identical_outputs_bit_for_bit(tmp_path, trained_generator, monkeypatch):
    folder = gankit.save_model(trained_generator, tmp_path / "generator", step=7)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "samples.png"]
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "generator" and config["name"] == "dcgan28"
    assert config["params"]["z_dim"] == 12 and config["runtime"]["image_shape"] == [1, 28, 28]
    assert (
        config["format_version"] == export.FORMAT_VERSION
        and config["step"] == 7
        and config["ema"] is False
    )

    def no_pickle(*args, **kwargs):
        raise AssertionError("loading an export must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = gankit.load_generator(folder)
    assert not loaded.training
    trained_generator.eval()
    z = trained_generator.sample_noise(16)
    with torch.no_grad():
        assert torch.equal(loaded(z), trained_generator(z))
    assert torch.equal(loaded.sample(4, seed=1), trained_generator.sample(4, seed=1))
    saved = load_file(folder / "model.safetensors")
    assert torch.equal(
        saved["project_norm.running_mean"], trained_generator.project_norm.running_mean
    )


def test_load_generator_needs_no_training_code(tmp_path, trained_generator):
    gankit.save_model(trained_generator, tmp_path / "generator")
    script = (
        "import sys, gankit\n"
        f"G = gankit.load_generator({str(tmp_path / 'generator')!r})\n"
        "x = G.sample(3, seed=0)\n"
        "assert x.shape == (3, 1, 28, 28) and x.min() >= -1 and x.max() <= 1\n"
        "heavy = ['gankit.training.trainer', 'accelerate', 'wandb']\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_sample_command_writes_a_grid(tmp_path, trained_generator):
    gankit.save_model(trained_generator, tmp_path / "generator")
    out = tmp_path / "grid.png"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gankit.cli",
            "sample",
            str(tmp_path / "generator"),
            "--n",
            "9",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    import imageio.v3 as iio

    grid = iio.imread(out)
    assert grid.shape == (3 * 29 + 1, 3 * 29 + 1) and grid.dtype == "uint8"


def test_truncated_weights_are_a_clear_error(tmp_path, trained_generator):
    folder = gankit.save_model(trained_generator, tmp_path / "generator")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ExportError, match="corrupt, truncated"):
        gankit.load_generator(folder)


def test_unknown_component_in_config_is_a_clear_error(tmp_path, trained_generator):
    folder = gankit.save_model(trained_generator, tmp_path / "generator")
    config = json.loads((folder / "config.json").read_text())
    config["name"] = "dcgan82"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"unknown generator 'dcgan82'.*did you mean 'dcgan28'"):
        gankit.load_generator(folder)


def test_missing_export_and_wrong_kind_are_clear_errors(tmp_path):
    with pytest.raises(ExportError, match="no export at"):
        gankit.load_generator(tmp_path / "nothing")
    discriminator = gankit.DISCRIMINATORS.build(
        {"name": "dcgan28", "width": 4}, image_shape=(1, 28, 28)
    )
    gankit.save_model(discriminator, tmp_path / "discriminator")
    assert isinstance(gankit.load_model(tmp_path / "discriminator"), torch.nn.Module)
    with pytest.raises(ExportError, match="not a generator"):
        gankit.load_generator(tmp_path / "discriminator")


def test_a_failed_export_leaves_the_previous_one_intact(tmp_path, trained_generator, monkeypatch):
    folder = gankit.save_model(trained_generator, tmp_path / "generator", step=1)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_safetensors_from", crash)
    with pytest.raises(OSError, match="disk full"):
        gankit.save_model(trained_generator, tmp_path / "generator", step=2)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["generator"]  # no staging folder left behind
