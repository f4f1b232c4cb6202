"""Exports that can be trusted: checksums, finite weights, sizes checked before allocating,
normal file modes, leftovers of killed writers cleared, user files never replaced, and write
failures that leave the previous export intact. Real safetensors files, real registry models."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from torch import nn

import gankit
from gankit.cli import main
from gankit.config.registry import Registry
from gankit.core import sizes
from gankit.core.atomic import atomic_folder, remove_leftovers
from gankit.core.errors import ExportError, GankitError, RegistryError
from gankit.core.sizes import (
    GIB,
    MAX_WIDTH,
    check_fits,
    memory_size,
    meta_state,
    parameter_bytes,
)
from gankit.metrics.evaluation import MNISTMetrics
from gankit.outputs import export

SPEC = {"name": "dcgan28", "width": 4, "z_dim": 12}


def build_generator(**params) -> gankit.Generator:
    torch.manual_seed(0)
    return gankit.GENERATORS.build({**SPEC, **params}, image_shape=(1, 28, 28))


def hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below `folder` (hidden ones too), by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def flip_a_data_byte(weights: Path) -> None:
    """Change one bit in the middle of the tensor data (past the header)."""
    data = bytearray(weights.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start + (len(data) - start) // 2] ^= 0x01
    weights.write_bytes(bytes(data))


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("gankit: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return gankit.save_model(build_generator(), tmp_path / "generator", step=3)


# checksum


def test_the_checksum_is_recorded_and_an_export_without_it_is_refused(saved, tmp_path, capsys):
    config = json.loads((saved / "config.json").read_text())
    weights = saved / "model.safetensors"
    assert config[export.SHA256_KEY] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert config["format_version"] == export.FORMAT_VERSION == 1
    assert torch.equal(
        gankit.load_generator(saved).sample(2, seed=0), build_generator().eval().sample(2, seed=0)
    )
    config_file = saved / "config.json"
    for checksum, found in [(None, "lacks"), (123, "has no valid"), ("abc", "has no valid")]:
        if checksum is None:
            del config[export.SHA256_KEY]
        else:
            config[export.SHA256_KEY] = checksum
        config_file.write_text(json.dumps(config))
        before = hashes(tmp_path)
        message = (
            rf"^{re.escape(str(config_file))} {found} weights_sha256 \(the SHA-256 of "
            r"model\.safetensors\), so its weights cannot be verified and gankit will not load "
            r"them; re-export the model with this gankit"
        )
        with pytest.raises(ExportError, match=message):
            gankit.load_generator(saved)
        assert main(["sample", str(saved), "--out", str(tmp_path / "grid.png")]) == 2
        assert re.search(message[1:], one_error_line(capsys).removeprefix("gankit: error: "))
        assert hashes(tmp_path) == before


def test_a_flipped_byte_in_the_weights_is_refused(saved, tmp_path, capsys):
    weights = saved / "model.safetensors"
    flip_a_data_byte(weights)
    before = hashes(tmp_path)
    message = (
        rf"{re.escape(str(weights))} has been altered or corrupted since export .*"
        r"SHA-256 is [0-9a-f]{16}\.\.\., config\.json records [0-9a-f]{16}\.\.\.; restore the "
        "file from a good copy or re-export the model"
    )
    with pytest.raises(ExportError, match=message):
        gankit.load_generator(saved)
    out = tmp_path / "grid.png"
    assert main(["sample", str(saved), "--n", "4", "--out", str(out)]) == 2
    assert re.search(message, one_error_line(capsys))
    assert not out.exists() and hashes(tmp_path) == before
    # the flipped file is still valid safetensors: only the checksum catches it
    assert export._header(weights)


# non-finite weights and samples


def test_nan_or_inf_weights_and_buffers_are_refused_unless_allowed(tmp_path, capsys):
    generator = build_generator()
    with torch.no_grad():
        generator.project.weight[0, 0] = float("nan")
        generator.project_norm.running_var[1] = float("inf")
    folder = gankit.save_model(generator, tmp_path / "generator")
    weights = folder / "model.safetensors"
    before = hashes(tmp_path)
    message = (
        rf"{re.escape(str(weights))} holds NaN or infinite values in 2 tensors: "
        r"project\.weight \(1 of 3456\), project_norm\.running_var \(1 of 32\); the training "
        "diverged before this export.*allow_nonfinite=True"
    )
    with pytest.raises(ExportError, match=message):
        gankit.load_generator(folder)
    with pytest.raises(ExportError, match=message):
        gankit.load_model(folder)
    loaded = gankit.load_generator(folder, allow_nonfinite=True)
    assert torch.isnan(loaded.project.weight[0, 0]) and torch.isinf(
        loaded.project_norm.running_var[1]
    )
    assert main(["sample", str(folder), "--out", str(tmp_path / "grid.png")]) == 2
    assert re.search(message, one_error_line(capsys))
    assert hashes(tmp_path) == before


def test_eval_of_an_all_nan_export_is_an_error_not_a_crash(tmp_path, mnist_root, capsys):
    generator = build_generator()
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.fill_(float("nan"))
    folder = gankit.save_model(generator, tmp_path / "generator")
    before = hashes(tmp_path)
    code = main(["eval", str(folder), "--data-root", str(mnist_root), "--n", "100"])
    assert code == 2
    err = one_error_line(capsys)
    assert "model.safetensors holds NaN or infinite values in 14 tensors: project.weight" in err
    assert hashes(tmp_path) == before


def test_eval_of_a_generator_whose_samples_overflow_is_an_error_not_a_crash(tmp_path, mnist_root):
    generator = build_generator()
    with torch.no_grad():  # finite weights whose products overflow: NaN and inf samples
        generator.project.weight.fill_(3e38)
    folder = gankit.save_model(generator, tmp_path / "generator")
    assert not torch.isfinite(gankit.load_generator(folder).sample(50, seed=0)).all()
    # a subprocess: the failure this guards against is a segmentation fault
    command = ["eval", str(folder), "--data-root", str(mnist_root), "--n", "100"]
    result = subprocess.run(
        [sys.executable, "-m", "gankit.cli", *command, "--batch-size", "50"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2, result.stderr
    *progress, last = result.stderr.splitlines()  # progress lines, then the error
    assert "Traceback" not in result.stderr and not any("error" in line for line in progress)
    assert re.fullmatch(
        rf"gankit: error: evaluating the generator exported in '{re.escape(str(folder))}': "
        r"\d+ of 50 generated samples hold NaN or inf values: the generator diverged, so there "
        r"is nothing to measure; evaluate an earlier export or checkpoint",
        last,
    )


def test_the_metrics_count_non_finite_samples_before_any_statistics():
    metrics = MNISTMetrics()
    images = torch.zeros(10, 1, 28, 28)
    images[1, 0, 3, 3] = float("nan")
    images[4, 0, 0, 0] = float("inf")
    images[7] = float("-inf")
    with pytest.raises(GankitError, match=r"^3 of 10 generated samples hold NaN or inf values"):
        metrics.update_generated(images)
    assert metrics.generated_count == 0
    metrics.update_generated(torch.zeros(10, 1, 28, 28))
    assert metrics.generated_count == 10


# sizes


def test_a_config_asking_for_a_huge_model_is_refused_before_allocating(
    saved, tmp_path, capsys, monkeypatch
):
    config = json.loads((saved / "config.json").read_text())
    config["params"]["width"] = MAX_WIDTH  # its convolutions would take about 200 GB
    (saved / "config.json").write_text(json.dumps(config))
    before = hashes(tmp_path)
    real_build = Registry.build

    def build_on_meta_only(self, spec, **runtime):
        if torch.get_default_device().type != "meta":
            raise AssertionError(f"{spec} was built for real")
        return real_build(self, spec, **runtime)

    monkeypatch.setattr(Registry, "build", build_on_meta_only)
    weights, config_file = saved / "model.safetensors", saved / "config.json"
    message = (
        rf"{re.escape(str(weights))} does not match {re.escape(str(config_file))}: 21 tensors "
        r"differ between the generator the config describes and the file: project\.bias: config "
        r"\[589824\] F32, file \[288\] F32; project\.weight: config \[589824, 12\] F32, "
        r"file \[288, 12\] F32; .* \(and 17 more\)\. Was config\.json edited\?"
    )
    with pytest.raises(ExportError, match=message):
        gankit.load_generator(saved)
    assert main(["sample", str(saved), "--out", str(tmp_path / "grid.png")]) == 2
    assert re.search(message, one_error_line(capsys))
    assert hashes(tmp_path) == before


def test_a_half_precision_export_still_loads_into_its_float_model(tmp_path):
    generator = build_generator().half()
    folder = gankit.save_model(generator, tmp_path / "generator")
    loaded = gankit.load_generator(folder)
    assert loaded.project.weight.dtype == torch.float32
    assert torch.equal(loaded.project.weight, generator.project.weight.float())


def test_a_model_larger_than_the_memory_is_refused_with_its_size(saved, monkeypatch):
    monkeypatch.setattr(sizes, "available_bytes", lambda device: 1000)
    nbytes = sum(t.nbytes for t in build_generator().state_dict().values())
    with pytest.raises(
        GankitError,
        match=rf"^the generator exported in '{re.escape(str(saved))}' needs about "
        rf"{re.escape(memory_size(nbytes))}; 1.0 KiB of memory is available; check the sizes in "
        ".*config.json or load it on a machine with more memory$",
    ):
        gankit.load_generator(saved)


def test_check_fits_compares_with_the_available_memory():
    available = sizes.available_bytes("cpu")
    check_fits(available // 2, "cpu", "half the memory")
    with pytest.raises(
        GankitError,
        match=r"^a recipe's training state needs about .* GiB; .* GiB of memory is available; "
        "make it smaller",
    ):
        check_fits(available + 4 * GIB, "cpu", "a recipe's training state")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_check_fits_compares_with_the_free_gpu_memory():
    free, _total = torch.cuda.mem_get_info()
    check_fits(free // 2, "cuda", "half the free memory")
    with pytest.raises(GankitError, match=r"GiB of memory is free on cuda"):
        check_fits(free + 4 * GIB, "cuda", "more than the free memory")


def test_meta_state_gives_the_real_state_without_allocating():
    real = build_generator().state_dict()
    state = meta_state(lambda: build_generator())
    assert state == {name: (tuple(t.shape), t.dtype) for name, t in real.items()}
    assert parameter_bytes(state) == sum(t.nbytes for t in real.values())
    huge = meta_state(lambda: build_generator(width=MAX_WIDTH))
    assert parameter_bytes(huge) > 2**37
    shared = nn.Linear(3, 2)
    assert set(meta_state(lambda: nn.Sequential(shared, nn.ReLU(), shared))) == {
        "0.bias",
        "0.weight",
    }

    def needs_real_values() -> nn.Module:
        layer = nn.Linear(3, int(torch.ones(1).sum().item()))
        return layer

    assert meta_state(needs_real_values) is None
    with pytest.raises(RegistryError, match="unknown generator 'dcgan82'"):
        meta_state(lambda: gankit.GENERATORS.build({"name": "dcgan82"}, image_shape=(1, 28, 28)))


# permissions


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_exports_get_the_modes_the_umask_gives(tmp_path):
    previous = os.umask(0o022)
    try:
        folder = gankit.save_model(build_generator(), tmp_path / "export" / "generator")
        assert mode(folder) == 0o755 and mode(folder.parent) == 0o755
        assert {p.name: mode(p) for p in folder.iterdir()} == {
            "config.json": 0o644,
            "model.safetensors": 0o644,
            "README.md": 0o644,
            "samples.png": 0o644,
        }
        os.umask(0o027)
        gankit.save_model(build_generator(), folder)  # replacing takes the current umask
        assert mode(folder) == 0o750
        assert {mode(p) for p in folder.iterdir()} == {0o640}
    finally:
        os.umask(previous)


# leftovers of killed writers


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(saved, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        names = {
            "dead_staging": f".generator.tmp-{dead.pid}-0badc0de",
            "dead_retired": f".generator.old-{dead.pid}-0badf00d",
            "our_unused": f".generator.tmp-{os.getpid()}-5eed5eed",
            "live": f".generator.tmp-{live.pid}-1ee71ee7",
            "parent": f".generator.old-{os.getppid()}-12345678",
            "other_export": f".discriminator.tmp-{dead.pid}-0badc0de",
            "no_pid": ".generator.tmp-k3j_x9ab",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.safetensors").write_bytes(b"partial")
        gankit.save_model(build_generator(), saved, step=4)
        left = {key for key, name in names.items() if (tmp_path / name).exists()}
        assert left == {"live", "parent", "other_export", "no_pid"}
        assert json.loads((saved / "config.json").read_text())["step"] == 4
        with atomic_folder(tmp_path / "generator") as staging:  # in use: kept
            assert staging.name.startswith(f".generator.tmp-{os.getpid()}-")
            assert remove_leftovers(tmp_path, "generator") == [] and staging.is_dir()
            assert remove_leftovers(os.path.relpath(tmp_path), "generator") == []
            assert staging.is_dir()
        live.kill()
        live.wait()
        assert remove_leftovers(tmp_path, "generator") == [tmp_path / names["live"]]
    finally:
        live.kill()
        live.wait()


def test_an_export_retired_by_a_killed_writer_is_put_back(saved, tmp_path):
    before = hashes(saved)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # killed between its two renames: the old export set aside, the new one staged
    saved.rename(tmp_path / f".generator.old-{dead.pid}-0badf00d")
    staging = tmp_path / f".generator.tmp-{dead.pid}-0badc0de"
    staging.mkdir()
    (staging / "config.json").write_text("{}")
    assert remove_leftovers(tmp_path, "generator") == [staging]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]
    assert hashes(saved) == before
    gankit.load_generator(saved)


# user files


def test_exporting_over_user_files_is_refused_and_touches_nothing(tmp_path):
    generator = build_generator()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / "config.json").write_text('{"lr": 0.1}')
    not_export = tmp_path / "not_export"
    not_export.mkdir()
    (not_export / "config.json").write_text('{"name": "mine"}')
    (not_export / "model.safetensors").write_bytes(b"my weights")
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"weights")
    before = hashes(tmp_path)
    choose = "choose another folder for the export"
    with pytest.raises(
        ExportError,
        match=rf"'{re.escape(str(mine))}' holds files that are not part of a gankit export "
        rf"\(notes\.txt\), which exporting there would delete; {choose}",
    ):
        gankit.save_model(generator, mine)
    with pytest.raises(
        ExportError,
        match=rf"'{re.escape(str(not_export))}' is not a gankit export \(.*config\.json is "
        rf"missing or has no format_version\), so gankit will not replace it; {choose}",
    ):
        gankit.save_model(generator, not_export)
    with pytest.raises(
        ExportError, match=rf"'{re.escape(str(a_file))}' is a file, not an export folder; {choose}"
    ):
        gankit.save_model(generator, a_file)
    assert hashes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "model.bin", "not_export"]
    empty = tmp_path / "empty"
    empty.mkdir()
    gankit.load_generator(gankit.save_model(generator, empty))  # an empty folder is fine


# write failures


def fail_with(error: Exception):
    def write(*args, **kwargs):
        raise error

    return write


def test_a_full_disk_leaves_the_previous_export_intact(saved, tmp_path, monkeypatch):
    before = hashes(tmp_path)
    monkeypatch.setattr(
        export, "save_safetensors_from", fail_with(OSError(errno.ENOSPC, "No space left"))
    )
    with pytest.raises(
        ExportError,
        match=rf"^could not write the export to '{re.escape(str(saved))}': No space left; the "
        rf"previous export at '{re.escape(str(saved))}' is intact; free disk space there",
    ) as caught:
        gankit.save_model(build_generator(), saved, step=4)
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert hashes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]
    # safetensors reports its OS errors as text
    full = SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    monkeypatch.setattr(export, "save_safetensors_from", fail_with(full))
    with pytest.raises(ExportError, match=": No space left on device; the previous export at"):
        gankit.save_model(build_generator(), saved, step=4)
    assert hashes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]


def test_permission_denied_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        export,
        "save_safetensors_from",
        fail_with(PermissionError(errno.EACCES, "Permission denied")),
    )
    folder = tmp_path / "generator"
    with pytest.raises(
        ExportError,
        match=rf"^could not write the export to '{re.escape(str(folder))}': Permission denied; "
        rf"nothing was written at '{re.escape(str(folder))}'; export to a folder you may write to",
    ):
        gankit.save_model(build_generator(), folder)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_puts_the_previous_export_back(saved, tmp_path, monkeypatch):
    before = hashes(tmp_path)
    real_rename = pathlib.Path.rename

    def rename(self, target):
        if self.name.startswith(".generator.tmp-"):
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", rename)
    with pytest.raises(ExportError, match=r"Input/output error; the previous export at .* intact"):
        gankit.save_model(build_generator(), saved, step=4)
    assert hashes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]


# config.json: what it may ask for


def rewrite_config(folder: Path, **changes) -> Path:
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config))
    return config_file


@pytest.mark.parametrize(
    ("kind", "name", "params"),
    [
        ("dataset", "mnist", {"root": "/usr", "download": True}),
        ("loss", "non_saturating", {}),
        ("schedule", "alternating", {}),
        ("regularizer", "r1", {}),
        (["generator"], "dcgan28", {}),
    ],
)
def test_a_config_of_another_kind_builds_nothing(
    saved, tmp_path, capsys, monkeypatch, kind, name, params
):
    config_file = rewrite_config(saved, kind=kind, name=name, params=params, runtime={})
    before = hashes(tmp_path)

    def no_build(self, *args, **kwargs):
        raise AssertionError(f"the {self.kind} registry was asked to build")

    monkeypatch.setattr(Registry, "build", no_build)
    monkeypatch.setattr(Registry, "get", no_build)
    message = (
        rf"^{re.escape(str(config_file))}: kind .* is not what an export holds; gankit exports "
        r"a generator or a discriminator, and loads nothing else$"
    )
    with pytest.raises(ExportError, match=message):
        gankit.load_model(saved)
    assert main(["sample", str(saved), "--out", str(tmp_path / "grid.png")]) == 2
    assert "is not what an export holds" in one_error_line(capsys)
    assert hashes(tmp_path) == before


def test_only_generators_and_discriminators_are_exported(tmp_path):
    loss = gankit.LOSSES.build({"name": "non_saturating"})
    with pytest.raises(ExportError, match="a loss is not exported; gankit exports a generator"):
        gankit.save_model(loss, tmp_path / "loss")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('"format_version": true', r"format_version is True, not a format version"),
        ('"format_version": "1"', r"format_version is '1', not a format version"),
        ('"format_version": 0', r"format_version is 0, not a format version"),
        ('"format_version": 1.0', r"format_version is 1\.0, not a format version"),
        ('"format_version": 1' + "0" * 5000, r"holds an integer of 5001 digits"),
        ('"format_version": 99', r"has format version 99, newer than this gankit"),
    ],
    ids=["true", "string", "zero", "float", "5001-digits", "newer"],
)
def test_a_bad_format_version_is_refused(saved, capsys, text, found):
    config_file = saved / "config.json"
    config = json.loads(config_file.read_text())
    del config["format_version"]
    config_file.write_text("{" + text + ", " + json.dumps(config)[1:])
    with pytest.raises(ExportError, match=found):
        gankit.load_generator(saved)
    assert main(["sample", str(saved), "--out", str(saved.parent / "grid.png")]) == 2
    assert re.search(found, one_error_line(capsys))


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_a_non_finite_parameter_in_the_config_is_refused(saved, capsys, number):
    config_file = saved / "config.json"
    text = config_file.read_text()
    config_file.write_text(re.sub(r'"bn_eps": [^,}\s]+', f'"bn_eps": {number}', text))
    assert config_file.read_text() != text
    with pytest.raises(ExportError, match=rf"^export config {re.escape(str(config_file))} holds"):
        gankit.load_generator(saved)
    assert main(["sample", str(saved), "--out", str(saved.parent / "grid.png")]) == 2
    assert "not a file gankit wrote" in one_error_line(capsys)


def test_a_config_that_is_a_link_a_fifo_or_huge_is_refused_unopened(saved, tmp_path):
    config_file = saved / "config.json"
    real = tmp_path / "real.json"
    config_file.rename(real)
    config_file.symlink_to(real)
    with pytest.raises(ExportError, match="is a symbolic link; gankit does not follow links"):
        gankit.load_generator(saved)
    config_file.unlink()
    os.mkfifo(config_file)  # opening it for reading would block forever
    with pytest.raises(ExportError, match="is not a regular file"):
        gankit.load_generator(saved)
    with pytest.raises(ExportError, match="is not a gankit export"):
        gankit.save_model(build_generator(), saved)  # nor is a folder holding one replaced
    config_file.unlink()
    config = json.loads(real.read_text())
    config["padding"] = "x" * (2 << 20)
    config_file.write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"is larger than 1,048,576 bytes"):
        gankit.load_generator(saved)


def test_only_a_hub_cache_link_into_its_own_blobs_is_followed(saved, tmp_path):
    repo = tmp_path / "models--someone--tiny"
    snapshot = repo / "snapshots" / "2c15947f"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for path in saved.iterdir():
        blob = repo / "blobs" / hashlib.sha256(path.name.encode()).hexdigest()
        path.rename(blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    gankit.load_generator(snapshot)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes((snapshot / "config.json").read_bytes())
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(elsewhere)
    with pytest.raises(
        ExportError, match=r"config\.json is a symbolic link; gankit does not follow"
    ):
        gankit.load_generator(snapshot)
