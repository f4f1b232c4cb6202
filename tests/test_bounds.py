"""Every size or count a user sets has an upper bound: a fixed cap where a sane one exists, the
machine (its memory available now, its cores) where it depends on it. Each one refused is one
line (exit 2 on the command line), before anything big is allocated."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel

import gankit
from gankit.cli import main
from gankit.components.models.base import check_sampling_fits, sample_footprint
from gankit.config.recipe import load_recipe
from gankit.config.recipe_file import SHIPPED_RECIPES, shipped_recipes
from gankit.config.registry import DATASETS, GENERATORS, REGISTRIES
from gankit.config.sections import EvalSection, LoaderFields, TrainSection
from gankit.core import sizes
from gankit.core.errors import GankitError
from gankit.core.sizes import (
    MAX_CLASSES,
    MAX_EVAL_SAMPLES,
    MAX_GRID_IMAGES,
    MAX_IMAGE_SIDE,
    MAX_WIDTH,
    check_training_fits,
    usable_cores,
)
from gankit.metrics import classifier as classifiers

from conftest import MNIST_ROOT

BIG_SIDE = 2048


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command printed (nothing on stdout, no traceback)."""
    out, err = capsys.readouterr()
    assert not out and "Traceback" not in err and err.count("\n") == 1, err
    return err


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line, which must refuse `argv` with exit code 2 and one line."""
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    assert code == 2
    return error_line(capsys)


def tiny_generator(image_shape: tuple[int, ...] = (1, 5, 5)) -> gankit.Generator:
    torch.manual_seed(0)
    spec = {"name": "mlp", "hidden": 1, "depth": 1, "z_dim": 2}
    return GENERATORS.build(spec, image_shape=image_shape)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gankit.save_model(tiny_generator(), tmp_path_factory.mktemp("tiny") / "generator")


# ---- recipes: each bound at its field's path ----------------------------------------------


RECIPE_BOUNDS = [
    ("mnist_dcgan", "train.n_samples", MAX_GRID_IMAGES),
    ("mnist_dcgan", "eval.n", MAX_EVAL_SAMPLES),
    ("mnist_dcgan", "eval.batch_size", sizes.MAX_BATCH),
    ("mnist_dcgan", "data.batch_size", sizes.MAX_BATCH),
    ("mnist_dcgan", "data.size", MAX_IMAGE_SIDE),
    ("mnist_dcgan", "generator.width", MAX_WIDTH),
    ("mnist_dcgan", "discriminator.width", MAX_WIDTH),
    ("mnist_dcgan", "generator.z_dim", sizes.MAX_LATENT),
    ("mnist_cdcgan", "generator.num_classes", MAX_CLASSES),
    ("mnist_cdcgan", "discriminator.num_classes", MAX_CLASSES),
    ("mnist_cdcgan", "generator.embed_dim", sizes.MAX_LATENT),
    ("cifar10_dcgan", "generator.width", MAX_WIDTH),
    ("cifar10_dcgan", "discriminator.width", MAX_WIDTH),
    ("folder_dcgan64", "data.size", MAX_IMAGE_SIDE),
    ("ring_mlp", "data.size", sizes.MAX_POINTS),
    ("ring_mlp", "data.modes", MAX_CLASSES),
    ("ring_mlp", "generator.hidden", MAX_WIDTH),
    ("ring_mlp", "discriminator.hidden", MAX_WIDTH),
    ("ring_mlp", "generator.depth", sizes.MAX_DEPTH),
    ("r3gan_mnist", "generator.blocks", sizes.MAX_DEPTH),
    ("r3gan_mnist", "discriminator.cardinality", MAX_WIDTH),
]


@pytest.mark.parametrize(("recipe", "key", "bound"), RECIPE_BOUNDS)
def test_a_recipe_value_above_its_bound_is_refused_at_its_path(recipe, key, bound, capsys):
    main(["validate", "-q", recipe, f"{key}={bound}"])
    assert f"{key}: Input should be" not in capsys.readouterr().err  # the bound itself is fine
    assert main(["validate", "-q", recipe, f"{key}={bound + 1}"]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and not out
    assert f"  - {key}: Input should be less than or equal to {bound} (got {bound + 1})" in err


@pytest.mark.parametrize("key", ["train.n_samples", "generator.width", "data.size"])
def test_a_size_that_is_not_a_number_is_refused_at_its_path(key, capsys):
    assert main(["validate", "-q", "mnist_dcgan", f"{key}=abc"]) == 2
    assert f"  - {key}: Input should be a valid integer" in capsys.readouterr().err


def test_data_workers_are_bounded_by_the_cores_this_process_may_use(capsys):
    most = 4 * usable_cores()
    assert main(["validate", "-q", "mnist_dcgan", f"data.num_workers={most}"]) == 0
    assert main(["validate", "-q", "mnist_dcgan", f"data.num_workers={most + 1}"]) == 2
    err = capsys.readouterr().err
    assert (
        f"data.num_workers: {most + 1} worker processes are more than this machine can use: at "
        f"most {most} (4 x its {usable_cores()} CPU cores)" in err
    )


def bounded_counts(model: type[BaseModel]) -> list[tuple[str, Any, str]]:
    """(name, upper bound, description) of each whole-number field of `model` that has one."""
    found = []
    for name, field in model.model_fields.items():
        if field.annotation not in (int, int | None):
            continue
        for meta in field.metadata:
            if getattr(meta, "le", None) is not None:
                found.append((name, meta.le, field.description or ""))
    return found


def test_every_bound_is_in_its_description():
    models = [entry.params for registry in REGISTRIES.values() for entry in registry]
    models += [TrainSection, EvalSection, LoaderFields]
    checked = 0
    for model in models:
        for name, bound, description in bounded_counts(model):
            assert f"at most {bound:,}" in description, (model, name, description)
            checked += 1
    assert checked >= 20
    assert "at most 4 per CPU core" in LoaderFields.model_fields["num_workers"].description


def test_the_shipped_recipes_still_validate():
    names = shipped_recipes()
    assert len(names) >= 10
    for name in names:
        load_recipe(SHIPPED_RECIPES / f"{name}.yaml")


def test_networks_refuse_images_larger_than_the_bound():
    spec = {"name": "dcgan", "width": 4}
    assert GENERATORS.build(spec, image_shape=(3, 16, 16))
    with pytest.raises(GankitError, match=f"power-of-two side from 8 to {MAX_IMAGE_SIDE}"):
        GENERATORS.build(spec, image_shape=(3, 2 * MAX_IMAGE_SIDE, 2 * MAX_IMAGE_SIDE))


# ---- the command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--n", "4097"], "argument --n: 4097 is too large; it must be <= 4,096"),
        (["sample", "--n", "abc"], "argument --n: 'abc' is not an integer"),
        (["interpolate", "--n", "4097"], "argument --n: 4097 is too large"),
        (["interpolate", "--fps", "1e-300"], "argument --fps: 1e-300: give frames per second"),
        (["interpolate", "--fps", "inf"], "argument --fps: inf: give a number above 0"),
        (["interpolate", "--fps", "nan"], "argument --fps: nan: give a number above 0"),
        (["interpolate", "--fps", "241"], "241: give frames per second from 0.1 to 240"),
        (["interpolate", "--steps", "10001"], "argument --steps: 10001 is too large"),
        (["eval", "--n", "1000001"], "argument --n: 1000001 is too large; it must be <= 1,000,000"),
        (["eval", "--batch-size", "65537"], "argument --batch-size: 65537 is too large"),
        (["sample", "--seed", "4294967296"], "argument --seed: 4294967296 is too large"),
        (["eval", "--seed", "-1"], "argument --seed: -1 is too small; it must be >= 0"),
    ],
)
def test_command_line_counts_above_their_bound_are_one_line(argv, message, tiny_export, capsys):
    command, *options = argv
    line = refused([command, str(tiny_export), *options], capsys)
    assert line.startswith(f"gankit {command}: error: ") and message in line
    assert line.rstrip().endswith(f"(see gankit {command} --help)")


def test_a_walk_of_too_many_frames_is_refused_before_loading(tiny_export, tmp_path, capsys):
    argv = ["interpolate", str(tiny_export), "--points", "101", "--steps", "100"]
    line = refused([*argv, "--out", str(tmp_path / "walk.gif")], capsys)
    assert line == (
        "gankit: error: --points 101 x --steps 100 makes 10,100 frames, more than the 10,000 a "
        "walk may have; lower --points or --steps\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_classifier_dataset_options_are_typed_and_bounded(tmp_path, capsys):
    out = str(tmp_path / "c.safetensors")
    root = ["--data-root", str(MNIST_ROOT), "--out", out]
    line = refused(["classifier", "train", "mnist", "size=abc", *root], capsys)
    assert line.startswith("gankit: error: size='abc' for dataset 'mnist': Input should be a valid")
    line = refused(["classifier", "train", "mnist", f"size={MAX_IMAGE_SIDE + 1}", *root], capsys)
    assert f"less than or equal to {MAX_IMAGE_SIDE}" in line
    line = refused(["classifier", "train", "mnist", "sise=32", *root], capsys)
    assert "dataset 'mnist' has no parameter 'sise'; did you mean 'size'?" in line
    assert list(tmp_path.iterdir()) == []


# ---- classifier cards ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num_classes", MAX_CLASSES + 1, "num_classes must be an integer from 2 to 100,000"),
        ("num_classes", "10", "num_classes must be an integer"),
        ("num_classes", True, "num_classes must be an integer"),
        ("num_classes", 10.0, "num_classes must be an integer"),
        ("image_shape", [1, 28, MAX_IMAGE_SIDE + 1], "image_shape must be [channels, height, w"),
        ("image_shape", [1, 28], "image_shape must be"),
        ("image_shape", ["1", "28", "28"], "image_shape must be"),
        ("image_shape", [1.5, 28, 28], "image_shape must be"),
        ("image_shape", [5, 28, 28], "with 1 to 4 channels and sides from 4 to 2048"),
    ],
)
def test_a_classifier_card_with_unbounded_or_untyped_sizes_is_refused(
    key, value, message, tmp_path, capsys
):
    weights = tmp_path / "c.safetensors"
    weights.write_bytes(classifiers.WEIGHTS.read_bytes())
    card = json.loads(classifiers.CARD.read_text()) | {key: value}
    (tmp_path / "c.json").write_text(json.dumps(card))
    with pytest.raises(GankitError, match=re.escape(message)):
        classifiers.read_card(weights)
    with pytest.raises(GankitError, match=re.escape(message)):
        classifiers.load(weights)


# ---- memory: the estimate against the memory available now --------------------------------


def test_available_memory_is_what_the_os_has_available_not_the_physical_total():
    meminfo = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if line
    )
    expected = int(meminfo["MemAvailable"].split()[0]) * 1024
    physical = int(meminfo["MemTotal"].split()[0]) * 1024
    available = sizes.available_bytes("cpu")
    assert abs(available - expected) < 2**30  # other processes allocate meanwhile
    assert available < physical


def test_meminfo_and_cgroup_limits_are_read(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  100 kB\nMemFree:  10 kB\nMemAvailable:  42 kB\n")
    assert sizes.meminfo_available(meminfo) == 42 * 1024
    assert sizes.meminfo_available(tmp_path / "missing") is None
    (tmp_path / "memory.max").write_text("1000\n")
    (tmp_path / "memory.current").write_text("300\n")
    assert sizes.cgroup_room(tmp_path) == 700
    (tmp_path / "memory.max").write_text("max\n")
    assert sizes.cgroup_room(tmp_path) is None


def test_networks_too_wide_for_the_available_memory_are_refused_with_the_estimate():
    builds = {
        "generator": lambda: GENERATORS.build({"name": "dcgan28", "width": MAX_WIDTH}),
        "discriminator": lambda: REGISTRIES["discriminator"].build({"name": "dcgan28"}),
    }
    available = sizes.memory_size(sizes.available_bytes("cpu"))
    with pytest.raises(GankitError) as error:
        check_training_fits(builds, "cpu", "r", [f"generator.width={MAX_WIDTH}"])
    message = str(error.value)
    assert re.fullmatch(
        r"training recipe 'r' \(weights, gradients and Adam's moments: generator \S+ TiB, "
        r"discriminator \S+ MiB\) needs about \S+ TiB; \S+ GiB of memory is available; lower "
        rf"generator.width={MAX_WIDTH}, or train on a device with more memory",
        message,
    )
    assert message.count(available.split()[0]) >= 1


def test_sampling_beyond_the_available_memory_is_refused_with_the_estimate():
    big = tiny_generator((3, BIG_SIDE, BIG_SIDE))  # 50 MB a sample
    footprint = sample_footprint(big)
    assert footprint.values == 3 * BIG_SIDE**2
    assert 4 * footprint.values <= footprint.peak <= 3 * 4 * footprint.values
    estimate = sizes.memory_size(MAX_GRID_IMAGES * footprint.peak)
    with pytest.raises(GankitError) as error:
        check_sampling_fits(footprint, MAX_GRID_IMAGES, "cpu", "--n 4096 (a grid)", "--n")
    assert re.fullmatch(
        rf"--n 4096 \(a grid\) needs about {estimate}; \S+ GiB of memory is available; lower --n",
        str(error.value),
    )
    check_sampling_fits(footprint, 2, "cpu", "two samples", "--n")  # a small grid fits


def test_the_commands_refuse_what_the_available_memory_cannot_hold(
    tiny_export, tmp_path, capsys, monkeypatch
):
    """The same estimates through `gankit sample`, `interpolate` and `eval`, on a machine with
    10 kB available (the tiny generator's sample takes about 100 bytes at its peak)."""
    monkeypatch.setattr(sizes, "available_bytes", lambda device: 10_000)
    peak = sample_footprint(gankit.load_generator(tiny_export)).peak
    out, walk = tmp_path / "grid.png", tmp_path / "walk.gif"
    line = refused(["sample", str(tiny_export), "--n", "4096", "--out", str(out)], capsys)
    assert line == (
        "gankit: error: --n 4096 (a grid of 4,096 images) needs about "
        f"{sizes.memory_size(4096 * peak)}; 9.8 KiB of memory is available; lower --n\n"
    )
    line = refused(["interpolate", str(tiny_export), "--n", "4096", "--out", str(walk)], capsys)
    assert line.startswith("gankit: error: --n 4096 (4,096 images in each of 64 frames) needs")
    assert line.endswith("; 9.8 KiB of memory is available; lower --n, --points or --steps\n")
    line = refused(["eval", str(tiny_export), "--batch-size", "65536"], capsys)
    assert line == (
        "gankit: error: --batch-size 65536 (one batch of generated images) needs about "
        f"{sizes.memory_size(65536 * peak)}; 9.8 KiB of memory is available; lower --batch-size\n"
    )
    assert sorted(tmp_path.iterdir()) == []
    assert main(["sample", str(tiny_export), "--n", "4", "--out", str(out)]) == 0


def test_a_ring_evaluation_beyond_the_available_memory_is_refused():
    ring = DATASETS.build({"name": "ring", "modes": MAX_CLASSES, "size": 10})
    with pytest.raises(GankitError) as error:
        ring.evaluator(MAX_EVAL_SAMPLES, 0, None)
    assert re.fullmatch(
        r"eval.n=1000000 \(distances of 1,000,000 samples to 100,000 modes\) needs about \S+ "
        r"[GT]iB; \S+ GiB of memory is available; lower eval.n or data.modes",
        str(error.value),
    )
    assert ring.evaluator(2000, 0, None).n == 2000


def test_a_dataset_resized_beyond_the_available_memory_is_refused(mnist_root):
    spec = {"name": "mnist", "root": str(mnist_root), "download": False, "size": MAX_IMAGE_SIDE}
    with pytest.raises(GankitError) as error:
        DATASETS.build(spec)
    assert re.fullmatch(
        rf"data.size={MAX_IMAGE_SIDE} \(60,000 images of 1x{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} held "
        r"in memory as float32\) needs about \S+ [GT]iB; \S+ GiB of memory is available; lower "
        "data.size",
        str(error.value),
    )
