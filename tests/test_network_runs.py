"""The modern pairs, 'r3gan' and 'stylegan2', end to end at tiny widths through their shipped
recipes: trained at 32x32 and 64x64 RGB (emoji) and 28x28 greyscale (MNIST, class-conditional),
exported and loaded back bit for bit, sampled with truncation and walked by `gankit
interpolate`; resumed bit for bit; trained on two processes; and run through the CUDA-graph
staging buffers on a CPU exactly as eagerly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from test_distributed import exported, launch
from test_graphs import state
from test_r3gan import emoji_folder
from test_resume import assert_same_state, final_state

import gankit
from gankit.cli import main
from gankit.config.recipe import load_recipe
from gankit.outputs.walk import walk_frames
from gankit.training.trainer import Trainer

from conftest import MNIST_ROOT, ROOT

NETWORKS = ["r3gan", "stylegan2"]
# The recipe each network trains from here, and widths that leave it a few thousand weights.
RECIPES = {"r3gan": "r3gan_emoji32", "stylegan2": "stylegan2_emoji32"}
TINY = {
    "r3gan": [
        *(f"{net}.{key}={value}" for net in ("generator", "discriminator")
          for key, value in (("width", 8), ("cardinality", 4), ("blocks", 1))),
        "generator.z_dim=8",
    ],
    "stylegan2": [
        *(f"{net}.{key}={value}" for net in ("generator", "discriminator")
          for key, value in (("width", 4), ("max_channels", 8))),
        "generator.z_dim=8",
        "generator.w_dim=8",
        "generator.mapping_layers=1",
        # every regularizer inside a few steps, and ADA's p moving at every D step
        "regularizer.every=2",
        "regularizers=[{name: path_length, weight: 2.0, every: 2}]",
        "augment.interval=1",
        "augment.speed_kimg=0.01",
    ],
}  # fmt: skip
SIZES = {"emoji32": (3, 32, 32), "emoji64": (3, 64, 64), "mnist28": (1, 28, 28)}
COMMON = [
    "data.batch_size=4",
    "data.num_workers=0",
    "train.log_every=1",
    "train.n_samples=4",
    "train.progress=false",
    "eval.every=0",
]


def data(kind: str, tmp_path: Path) -> list[str]:
    """The data overrides: 16 emoji at the kind's side, or the first 16 MNIST digits with
    their 10 classes on both networks."""
    if kind == "mnist28":
        mnist = f"{{name: mnist, root: {MNIST_ROOT}, download: false, batch_size: 4, subset: 16}}"
        return [f"data={mnist}", "generator.num_classes=10", "discriminator.num_classes=10"]
    folder = tmp_path / "emoji"
    if not folder.is_dir():
        emoji_folder(folder)
    return [f"data.root={folder}", f"data.size={SIZES[kind][-1]}"]


def overrides(net: str, kind: str, run_dir: Path, *extra: str) -> list[str]:
    return [
        *COMMON,
        *TINY[net],
        *data(kind, run_dir.parent),
        f"output_dir={run_dir}",
        *extra,
    ]


def recipe_path(net: str) -> Path:
    return ROOT / "recipes" / f"{RECIPES[net]}.yaml"


def fit(net: str, kind: str, run_dir: Path, *extra: str, staged: bool = False) -> Trainer:
    """Train the network's recipe on `kind` data as `gankit train` does; when `staged`, every
    iteration goes through the CUDA graphs' static buffers, eagerly (`capture=False`)."""
    trainer = Trainer(load_recipe(recipe_path(net), overrides(net, kind, run_dir, *extra)))
    if staged:
        trainer.iteration.capture_graphs(capture=False)
    trainer.fit()
    return trainer


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl's records without their timings."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_sec"} for line in lines]


# ---- train, export, load, sample, walk -------------------------------------------------------


@pytest.mark.parametrize("kind", list(SIZES))
@pytest.mark.parametrize("net", NETWORKS)
def test_trains_exports_and_loads_back_bit_for_bit(net, kind, tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    trainer = fit(net, kind, run_dir, "train.steps=2", "train.sample_every=2")
    logged = [r for r in records(run_dir) if "d_loss" in r]
    assert [r["step"] for r in logged] == [1, 2]
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in logged)
    assert (run_dir / "samples" / "step_0000002.png").is_file()

    shape = SIZES[kind]
    trained = trainer.parts.sampling_generator
    loaded = gankit.load_generator(run_dir / "export" / "generator")
    assert type(loaded) is type(trained) and not loaded.training
    assert loaded.num_classes == (10 if kind == "mnist28" else 0)
    labels = [0, 3, 7, 9] if loaded.num_classes else None
    samples = {}
    for psi in (1.0, 0.5):
        samples[psi] = loaded.sample(4, seed=5, labels=labels, truncation=psi)
        assert samples[psi].shape == (4, *shape) and torch.isfinite(samples[psi]).all()
        expected = trained.sample(4, seed=5, labels=labels, truncation=psi)
        assert torch.equal(samples[psi], expected), f"psi {psi}"
    assert not torch.equal(samples[1.0], samples[0.5])
    assert not torch.equal(samples[1.0][0], samples[1.0][1])  # different z, different images


@pytest.mark.parametrize("net", NETWORKS)
def test_exports_interpolate_and_truncate_in_the_latent_space(net, tmp_path):
    run_dir = tmp_path / "run"
    fit(net, "emoji32", run_dir, "train.steps=2", "train.sample_every=2")
    export = run_dir / "export" / "generator"
    out = tmp_path / "walk.gif"
    argv = ["interpolate", str(export), "--out", str(out), "--points", "2", "--steps", "3"]
    assert main([*argv, "--seed", "1", "--n", "2", "--truncation", "0.7"]) == 0
    generator = gankit.load_generator(export)
    frames = iio.imread(out, index=None)
    walk = walk_frames(generator, walks=2, points=2, steps=3, seed=1, truncation=0.7)
    assert len(walk) == 6 and walk[0].shape[:2] == (32 + 2, 2 * 32 + 3)  # two 32x32 images
    assert frames.shape == (6, *walk[0].shape)  # 2 points x 3 steps
    assert len({frame.tobytes() for frame in frames}) > 1  # the walk moves
    z = generator.sample_noise(3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if net == "stylegan2":  # psi 0 puts every z on the average w: one image
            average = generator(z, truncation=0.0)
            assert all(torch.equal(average[0], image) for image in average[1:])
        images = generator(z)
        assert not torch.equal(images[0], images[1])


# ---- resume, processes, graph staging --------------------------------------------------------


@pytest.mark.parametrize("net", NETWORKS)
def test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit(net, tmp_path, capsys):
    every = ["train.checkpoint_every=2", "train.sample_every=2"]
    straight = tmp_path / "straight" / "run"
    fit(net, "emoji32", straight, "train.steps=4", *every)
    resumed = tmp_path / "resumed" / "run"
    fit(net, "emoji32", resumed, "train.steps=2", *every)
    capsys.readouterr()
    trainer = fit(net, "emoji32", resumed, "train.steps=4", *every)
    said = "".join(capsys.readouterr())
    assert "resumed from" in said and "(step 2 of 4)" in said and trainer.step == 4
    assert_same_state(final_state(resumed), final_state(straight))
    assert_same_state(exported(resumed), exported(straight))  # the EMA of G among them
    assert records(resumed) == records(straight)
    assert (resumed / "samples" / "step_0000004.png").read_bytes() == (
        straight / "samples" / "step_0000004.png"
    ).read_bytes()


@pytest.mark.parametrize("net", NETWORKS)
def test_two_processes_train_and_export(net, tmp_path):
    run_dir = tmp_path / "run"
    result = launch(
        ROOT / "scripts" / "train.py",
        str(recipe_path(net)),
        *overrides(net, "emoji32", run_dir, "train.steps=2"),
    )
    assert "process 0 of 2" in result.stdout and "process 1 of 2" in result.stdout
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (info["processes"], info["batch_per_update"]) == (2, 8)
    logged = records(run_dir)
    assert [r["step"] for r in logged] == [1, 2]
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in logged)
    generator = gankit.load_generator(run_dir / "export" / "generator")
    assert torch.isfinite(generator.sample(2, seed=0)).all()


@pytest.mark.parametrize("net", NETWORKS)
def test_graph_staging_trains_exactly_like_eager(net, tmp_path, deterministic):
    every = ["train.steps=4", "train.sample_every=4"]
    eager = fit(net, "emoji32", tmp_path / "eager" / "run", *every)
    staged = fit(net, "emoji32", tmp_path / "staged" / "run", *every, staged=True)
    graphs = staged.iteration.graphs
    # r3gan: R1 and R2 every step, one pattern; stylegan2: lazy R1 and path length every other
    assert len(graphs.eager_runs) == (1 if net == "r3gan" else 2)
    assert sum(graphs.eager_runs.values()) == 4 and graphs.replays == 0
    expected, got = state(eager), state(staged)
    assert expected.keys() == got.keys()
    assert [key for key in expected if not torch.equal(expected[key], got[key])] == []
    assert eager.iteration.loss_sums.keys() == staged.iteration.loss_sums.keys()
    for name, total in staged.iteration.loss_sums.items():
        assert torch.equal(eager.iteration.loss_sums[name], total), name
    assert repr(eager.iteration.state_dict()) == repr(staged.iteration.state_dict())
    assert records(tmp_path / "eager" / "run") == records(tmp_path / "staged" / "run")


# ---- CONTRIBUTING's "Adding a network" -----------------------------------------------------

# Imports CONTRIBUTING's network module, trains it from a recipe, loads the export back. In a
# process of its own: the suite's registries stay as they are.
TRAIN_THE_EXAMPLE = """
import sys
import gankit
import gankit_networks
from gankit.cli import main

run_dir, *argv = sys.argv[1:]
assert main(["train", *argv, f"output_dir={run_dir}"]) == 0
generator = gankit.load_generator(f"{run_dir}/export/generator")
assert type(generator) is gankit_networks.TinyConvGenerator, type(generator)
print("samples", tuple(generator.sample(3, seed=0).shape))
"""


def test_the_contributing_guides_network_trains_and_exports(tmp_path):
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text[text.index("## Adding a network") :].split("\n## ")[0]
    code = section.split("```python\n")[1].split("```")[0]
    assert "GENERATORS.register" in code and "DISCRIMINATORS.register" in code
    (tmp_path / "gankit_networks.py").write_text(code)
    script = tmp_path / "train_the_example.py"
    script.write_text(TRAIN_THE_EXAMPLE)
    run_dir = tmp_path / "run"
    argv = [
        str(run_dir),
        str(recipe_path("r3gan")),
        *COMMON,
        *data("emoji32", tmp_path),
        "generator={name: tiny_conv, width: 8, z_dim: 8}",
        "discriminator={name: tiny_conv, width: 8}",
        "train.steps=2",
        "train.sample_every=2",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ["PYTHONPATH"]])}
    result = subprocess.run(
        [sys.executable, str(script), *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "samples (3, 3, 32, 32)" in result.stdout
    logged = records(run_dir)
    assert [r["step"] for r in logged] == [1, 2]
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in logged)
    config = json.loads((run_dir / "export" / "generator" / "config.json").read_text())
    assert config["name"] == "tiny_conv" and config["params"]["width"] == 8
