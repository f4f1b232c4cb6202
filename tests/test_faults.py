"""What a user can do wrong, or meet, while training: each ends in one clear line, exit code 2,
and nothing is lost (file listings and hashes are compared before and after)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import gankit.training.checkpoint
from gankit.cli import main
from gankit.config.recipe import load_recipe
from gankit.core.bounded import BoundedReadError
from gankit.outputs import files
from gankit.training.checkpoint import list_checkpoints
from gankit.training.runfolder import LOCK_FILE, MARK_FILE, open_run_folder
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, ROOT, TINY

# 64 images in batches of 16: 4 steps an epoch, milliseconds a step.
SMALL = [*TINY, "data.subset=64", "train.log_every=2", "train.sample_every=2"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder`: folders as 'dir', files by their SHA-256."""
    return {
        path.relative_to(folder).as_posix(): (
            "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        )
        for path in sorted(folder.rglob("*"))
    }


def train(capsys: pytest.CaptureFixture[str], run_dir: Path, *extra: str) -> tuple[int, str]:
    """`gankit train` in this process; returns the exit code and what it printed (stderr after
    stdout)."""
    capsys.readouterr()
    code = main(["train", str(REFERENCE_RECIPE), *SMALL, f"output_dir={run_dir}", *extra])
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def one_error_line(stderr: str) -> str:
    """The single `gankit: error:` line of a failed command (and no traceback)."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("gankit: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# ---- the launcher's precision --------------------------------------------------------------


def test_accelerate_launch_mixed_precision_is_honoured(tmp_path: Path, mnist_root: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
        "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
        str(ROOT / "scripts" / "train.py"), str(REFERENCE_RECIPE), *SMALL, "train.steps=2",
        f"output_dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision bf16 (launcher)" in result.stdout
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (info["mixed_precision"], info["mixed_precision_from"]) == ("bf16", "launcher")
    assert "mixed_precision: bf16" in (run_dir / "recipe.yaml").read_text()


def test_precision_from_the_recipe_and_the_launcher(
    tmp_path: Path, mnist_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def resolved(*extra: str) -> tuple[str, str]:
        recipe = load_recipe(REFERENCE_RECIPE, [*SMALL, f"output_dir={tmp_path}/r", *extra])
        trainer = Trainer(recipe)
        assert trainer.accelerator.mixed_precision == trainer.recipe.mixed_precision
        return trainer.recipe.mixed_precision, trainer.precision_from

    assert resolved() == ("no", "default")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # what a bare `accelerate launch` sets
    assert resolved("mixed_precision=bf16") == ("bf16", "recipe")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolved() == ("bf16", "launcher")
    assert resolved("mixed_precision=bf16") == ("bf16", "recipe")


def test_recipe_precision_that_contradicts_the_launcher_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    code, stderr = train(capsys, tmp_path / "run", "mixed_precision=no")
    assert code == 2
    line = one_error_line(stderr)
    assert "mixed_precision: no" in line and "launcher asks for bf16" in line
    assert not (tmp_path / "run").exists()


def test_networks_too_large_for_memory_are_refused_with_the_estimate(
    tmp_path: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stderr = train(capsys, tmp_path / "run", "generator.width=8192", "train.steps=1")
    assert code == 2
    line = one_error_line(stderr)
    assert (
        "training recipe 'mnist_dcgan' (weights, gradients and Adam's moments: generator " in line
    )
    assert "GiB of memory is available" in line
    assert "lower generator.width=8192, or train on a device with more memory" in line
    assert not (tmp_path / "run").exists()


# ---- never delete or overwrite what gankit did not write --------------------------------------


def users_folder(folder: Path) -> Path:
    """A folder of someone's own files, with names gankit also uses."""
    for name, text in {
        "notes.txt": "mine",
        "metrics.jsonl": '{"step": 1, "mine": true}\n',
        "samples/step_0000000.png": "not a grid",
        "checkpoints/step_0000002/model.safetensors": "my weights",
        "checkpoints/abandoned/keep.txt": "mine",
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("resume", ["auto", "never"])
def test_a_folder_gankit_did_not_write_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], resume: str
) -> None:
    folder = users_folder(tmp_path / "mine")
    before = snapshot(folder)
    code, stderr = train(capsys, folder, f"train.resume={resume}", "train.steps=2")
    assert code == 2
    line = one_error_line(stderr)
    assert f"output_dir '{folder}' already holds files gankit did not write" in line
    assert "checkpoints, metrics.jsonl, notes.txt, samples" in line
    assert "Choose another output_dir" in line
    assert snapshot(folder) == before


def test_an_output_dir_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results"
    path.write_text("my results")
    code, stderr = train(capsys, path, "train.steps=2")
    assert code == 2
    assert "is a file, not a folder" in one_error_line(stderr)
    assert path.read_text() == "my results"


def test_a_fresh_start_removes_only_what_gankit_wrote(
    tmp_path: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(capsys, run_dir, "train.steps=4", "train.checkpoint_every=2")[0] == 0
    assert (run_dir / MARK_FILE).is_file()
    added = {
        "notes.txt": "mine",
        "samples/my_picture.png": "mine",
        "checkpoints/README.txt": "mine",
        "checkpoints/abandoned/branch_001/my_notes.txt": "mine",
    }
    for name, text in added.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    old_grids = sorted(p.name for p in (run_dir / "samples").glob("step_*.png"))
    assert old_grids == [f"step_000000{i}.png" for i in (0, 2, 4)]

    code, stderr = train(capsys, run_dir, "train.steps=2", "train.resume=never")
    assert code == 0, stderr
    assert "holds an earlier run" in stderr
    for name, text in added.items():
        assert (run_dir / name).read_text() == text
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_0000002"]
    assert sorted(p.name for p in (run_dir / "samples").glob("step_*.png")) == [
        "step_0000000.png",
        "step_0000002.png",
    ]


def test_a_run_folder_from_before_the_mark_is_still_resumed(
    tmp_path: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(capsys, run_dir, "train.steps=2", "train.checkpoint_every=2")[0] == 0
    (run_dir / MARK_FILE).unlink()  # as an earlier gankit left its run folders
    (run_dir / LOCK_FILE).unlink()
    code, stderr = train(capsys, run_dir, "train.steps=4", "train.checkpoint_every=2")
    assert code == 0, stderr
    assert f"resumed from {run_dir / 'checkpoints' / 'step_0000002'}" in stderr
    assert list_checkpoints(run_dir)[0].name == "step_0000004"
    assert (run_dir / MARK_FILE).is_file()


# ---- one writer per run folder --------------------------------------------------------------


def test_a_second_run_on_a_busy_folder_is_refused_and_a_killed_one_leaves_no_stale_lock(
    tmp_path: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "gankit.cli", "train", str(REFERENCE_RECIPE), *SMALL,
        "train.steps=100000", "train.checkpoint_every=2", f"output_dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(run_dir):  # training: the lock is held
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first run never wrote a checkpoint"
            time.sleep(0.2)
        holder = json.loads((run_dir / LOCK_FILE).read_text())
        assert holder["pid"] == first.pid
        metrics_before = (run_dir / "metrics.jsonl").read_bytes()

        code, stderr = train(capsys, run_dir, "train.steps=4")
        assert code == 2
        line = one_error_line(stderr)
        assert (
            f"output_dir '{run_dir}' is in use by another gankit run (pid {first.pid} on " in line
        )
        assert "wait for it to finish or stop it, or choose another output_dir" in line
        # the refused run wrote nothing: the first one's log only grew
        assert (run_dir / "metrics.jsonl").read_bytes().startswith(metrics_before)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()

    # what a writer killed mid-way may leave: cleaned up by the next run, which holds the lock
    newest = list_checkpoints(run_dir)[0].name
    steps = int(newest.removeprefix("step_"))
    dead = first.pid  # killed and waited for: no process has this id now
    leftovers = [
        run_dir / "checkpoints" / f".step_0000099.tmp-{dead}-abcd",
        run_dir / "export" / f".generator.tmp-{dead}-abcd",
        run_dir / "checkpoints" / f".{newest}.old-{dead}-abcd",
        run_dir / "checkpoints" / ".step_0000098.tmp",  # as earlier gankit versions named them
    ]
    for leftover in leftovers:
        leftover.mkdir(parents=True)
        (leftover / "part.bin").write_bytes(b"partial")
    code, stderr = train(capsys, run_dir, f"train.steps={steps + 2}", "train.checkpoint_every=2")
    assert code == 0, stderr
    assert not any(path.exists() for path in leftovers)
    assert (run_dir / LOCK_FILE).read_text() == ""  # released at the end


def test_every_process_of_a_launch_stops_on_a_busy_folder(tmp_path: Path, mnist_root: Path) -> None:
    from test_distributed import SMALL as TWO_PROCESS_RECIPE
    from test_distributed import launch_command, launch_env

    run_dir = tmp_path / "run"
    lock = open_run_folder(run_dir)  # this test's process is the other run
    try:
        command = launch_command(
            ROOT / "scripts" / "train.py",
            str(REFERENCE_RECIPE),
            *TWO_PROCESS_RECIPE,
            "train.steps=2",
            f"output_dir={run_dir}",
        )
        result = subprocess.run(
            command, env=launch_env(), capture_output=True, text=True, timeout=300
        )
    finally:
        lock.release()
    assert result.returncode != 0
    ours = result.stderr.split("torch/distributed/elastic")[0]  # then the launcher's report
    assert "Traceback" not in ours
    busy = f"is in use by another gankit run (pid {os.getpid()} on "
    lines = [line for line in result.stderr.splitlines() if line.startswith("gankit: error:")]
    assert len(lines) == 2 and all(busy in line for line in lines), result.stderr[-3000:]
    assert sorted(path.name for path in run_dir.iterdir()) == [LOCK_FILE, MARK_FILE]


# ---- checkpoints are verified before anything in them is read ---------------------------------


def corrupt_recipe(folder: Path) -> None:
    path = folder / "recipe.yaml"
    path.write_bytes(b"\xff\xfe: [" + path.read_bytes()[3:])


def truncate_recipe(folder: Path) -> None:
    path = folder / "recipe.yaml"
    path.write_bytes(path.read_bytes()[:40])


def mistype_a_size(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(iter(manifest["files"].values()))
    entry["bytes"] = str(entry["bytes"])
    (folder / "manifest.json").write_text(json.dumps(manifest))


def mistype_the_step(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["step"] = [manifest["step"]]
    (folder / "manifest.json").write_text(json.dumps(manifest))


def list_a_file_outside(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["../../recipe.yaml"] = {"bytes": 1, "sha256": "0" * 64}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def add_an_unlisted_file(folder: Path) -> None:
    (folder / "random_states_9.pkl").write_bytes(b"not written by gankit")


def garble_the_manifest(folder: Path) -> None:
    (folder / "manifest.json").write_bytes(b"\x00\x01 not json")


@pytest.mark.parametrize(
    "damage",
    [
        corrupt_recipe,
        truncate_recipe,
        mistype_a_size,
        mistype_the_step,
        list_a_file_outside,
        add_an_unlisted_file,
        garble_the_manifest,
    ],
)
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str], damage
) -> None:
    run_dir = tmp_path / "run"
    assert train(capsys, run_dir, "train.steps=4", "train.checkpoint_every=2")[0] == 0
    newest, previous = list_checkpoints(run_dir)
    damage(newest)

    code, stderr = train(capsys, run_dir, "train.steps=6", "train.checkpoint_every=2")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    warning = [line for line in stderr.splitlines() if "falling back" in line]
    assert len(warning) == 1 and str(newest) in warning[0]
    assert "recipe differs" not in stderr
    assert f"resumed from {previous}" in stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]  # steps 3-4 trained again from step 2


def test_a_crash_mid_line_in_the_metrics_log_does_not_stop_a_resume(
    tmp_path: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(capsys, run_dir, "train.steps=2", "train.checkpoint_every=2")[0] == 0
    with (run_dir / "metrics.jsonl").open("a") as log:
        log.write('{"step": 3, "d_lo')  # killed in the middle of a write
    code, stderr = train(capsys, run_dir, "train.steps=4", "train.checkpoint_every=2")
    assert code == 0, stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]


# ---- a full disk or an unwritable folder ------------------------------------------------------


def test_a_full_disk_during_a_checkpoint_names_the_intact_one(
    tmp_path: Path,
    mnist_root: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir = tmp_path / "run"
    write_manifest = gankit.training.checkpoint.write_manifest

    def disk_fills_at_step_4(folder: Path, step: int) -> None:
        if step == 4:
            (folder / "partial").write_bytes(b"x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "manifest.json"))
        write_manifest(folder, step)

    monkeypatch.setattr(gankit.training.checkpoint, "write_manifest", disk_fills_at_step_4)
    code, stderr = train(capsys, run_dir, "train.steps=6", "train.checkpoint_every=2")
    assert code == 2
    line = one_error_line(stderr)
    intact = run_dir / "checkpoints" / "step_0000002"
    assert "could not write the checkpoint of step 4 (No space left on device" in line
    assert f"the newest intact checkpoint is {intact}" in line
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_0000002"]
    assert not any(p.name.startswith(".") for p in (run_dir / "checkpoints").iterdir())
    gankit.training.checkpoint.verify(intact)

    monkeypatch.setattr(gankit.training.checkpoint, "write_manifest", write_manifest)  # space again
    code, stderr = train(capsys, run_dir, "train.steps=6", "train.checkpoint_every=2")
    assert code == 0, stderr
    assert list_checkpoints(run_dir)[0].name == "step_0000006"


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """Mount a small tmpfs (root only); yields a function that mounts one of a given size."""
    mounted: list[Path] = []

    def mount(size: str, *options: str) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        spec = ",".join([f"size={size}", *options])
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", spec, "tmpfs", str(point)], capture_output=True
        )
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True)


def test_a_really_full_disk_ends_in_one_line_and_keeps_the_last_checkpoint(
    small_filesystem, mnist_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = small_filesystem("1600k")
    run_dir = disk / "run"
    code, stderr = train(
        capsys, run_dir, "train.steps=40", "train.checkpoint_every=2", "train.keep_checkpoints=20"
    )
    assert code == 2
    line = one_error_line(stderr)
    assert "No space left on device" in line
    intact = list_checkpoints(run_dir)
    assert intact, "the disk should hold at least one checkpoint"
    for folder in intact:
        gankit.training.checkpoint.verify(folder)
    assert str(intact[0]) in line or "run the same command" in line


def test_a_read_only_output_folder_ends_in_one_line(
    small_filesystem, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = small_filesystem("1m", "ro")
    code, stderr = train(capsys, disk / "run", "train.steps=2")
    assert code == 2
    line = one_error_line(stderr)
    assert f"cannot create output_dir '{disk / 'run'}' (Read-only file system)" in line


# ---- what the run leaves is usable by others ----------------------------------------------


def test_the_gif_reads_back_whole_with_every_grid(tmp_path: Path) -> None:
    # Grids of narrow and of full grey ranges: what a run's first and later grids look like,
    # and what made frames decode with different shapes (or not at all) before.
    rng = np.random.default_rng(0)
    narrow = rng.integers(120, 136, (29, 29), dtype=np.uint8)
    full = rng.integers(0, 256, (29, 29), dtype=np.uint8)
    grids = [narrow, full, narrow[::-1], full[::-1]]
    for step, grid in enumerate(grids):
        files.save_image(grid, files.sample_path(tmp_path, step))
    frames = iio.imread(files.write_gif(tmp_path))
    assert frames.shape == (4, 29, 29)
    for frame, grid in zip(frames, grids, strict=True):
        assert (frame == grid).all()


# ---- image outputs: damaged grids of earlier runs, full disks -------------------------------

FULL = "0d15c0ff"  # the random part of the temporary names in these tests


@pytest.fixture
def disk_full_at(monkeypatch: pytest.MonkeyPatch):
    """Returns a function that makes writes to the temporary name of `path` (and so the file
    being published there) fail with the OS's own ENOSPC: the name is a link to /dev/full."""
    monkeypatch.setattr("secrets.token_hex", lambda nbytes=None: FULL)

    def fill(path: Path, suffix: str = "") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f".{path.name}.tmp-{os.getpid()}-{FULL}{suffix}"
        temp.symlink_to("/dev/full")
        return temp

    return fill


def no_noise(err: str) -> None:
    import gc

    gc.collect()  # an image writer left half-closed would complain from __del__ now
    assert "Exception ignored" not in err and "Traceback" not in err, err


def test_damaged_grids_of_an_earlier_run_are_left_out_of_the_gif(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 256, (29, 29), dtype=np.uint8) for _ in range(3)]
    for step, grid in zip((2, 4, 8), grids, strict=True):
        files.save_image(grid, files.sample_path(tmp_path, step))
    samples = tmp_path / "samples"
    (samples / "step_0000003.png").write_bytes((samples / "step_0000002.png").read_bytes()[:200])
    (samples / "step_0000005.png").write_bytes(b"not a picture")
    (samples / "step_0000006.png").symlink_to(samples / "step_0000002.png")
    files.save_image(grids[0][:10], samples / "step_0000007.png")  # another run's size
    frames = iio.imread(files.write_gif(tmp_path), index=None)
    assert frames.shape == (3, 29, 29)
    for frame, grid in zip(frames, grids, strict=True):
        assert (frame == grid).all()
    warnings = capfd.readouterr().err.splitlines()
    assert len(warnings) == 4, warnings
    for step, found in [
        (3, "is not a readable PNG (image file is truncated)"),
        (5, "is not a readable PNG"),
        (6, "is a symbolic link"),
        (7, "is (10, 29), not (29, 29) as the last grid"),
    ]:
        (line,) = [w for w in warnings if f"step_{step:07d}.png" in w]
        assert line.startswith("gankit: warning: ") and found in line, line
        assert line.endswith("left out of samples.gif"), line


@pytest.mark.parametrize("output", ["grid", "gif", "loss plot"])
def test_a_full_disk_while_writing_an_image_is_one_line_and_leaves_nothing(
    tmp_path: Path, disk_full_at, capfd: pytest.CaptureFixture[str], output: str
) -> None:
    grid = np.full((29, 29), 7, dtype=np.uint8)
    files.save_image(grid, files.sample_path(tmp_path, 2))
    records = [{"step": 2, "d_loss": 1.0, "g_loss": 2.0}]
    files.plot_losses(records, tmp_path / files.LOSS_PLOT_FILE)
    files.write_gif(tmp_path)
    before = snapshot(tmp_path)
    target, write, what = {
        "grid": (
            files.sample_path(tmp_path, 2),
            lambda: files.save_image(grid, files.sample_path(tmp_path, 2)),
            "the sample grid",
        ),
        "gif": (tmp_path / files.GIF_FILE, lambda: files.write_gif(tmp_path), "the GIF"),
        "loss plot": (
            tmp_path / files.LOSS_PLOT_FILE,
            lambda: files.plot_losses(records * 2, tmp_path / files.LOSS_PLOT_FILE),
            "the loss plot",
        ),
    }[output]
    temp = disk_full_at(target)
    with pytest.raises(files.OutputWriteError) as caught:
        write()
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).startswith(f"could not write {what}")
    assert str(caught.value).endswith(
        f"{target}: No space left on device; nothing half-written was left there; free disk "
        f"space in {target.parent} and run the command again"
    )
    assert not temp.is_symlink() and snapshot(tmp_path) == before  # the old file is intact
    no_noise(capfd.readouterr().err)


def test_a_full_disk_under_gankit_sample_is_one_line_with_the_path(
    tmp_path: Path, disk_full_at, capfd: pytest.CaptureFixture[str]
) -> None:
    import gankit

    spec = {"name": "mlp", "hidden": 8, "depth": 1, "z_dim": 4}
    export = gankit.save_model(gankit.GENERATORS.build(spec, image_shape=(1, 5, 5)), tmp_path / "g")
    out = tmp_path / "pictures" / "grid.png"
    temp = disk_full_at(out, ".png")
    assert main(["sample", str(export), "--out", str(out)]) == 2
    err = capfd.readouterr().err
    assert err == (
        f"gankit: error: could not write --out {out}: No space left on device; nothing "
        f"half-written was left there; free disk space in {out.parent} or choose another --out\n"
    )
    no_noise(err)
    assert not temp.is_symlink() and list(out.parent.iterdir()) == []


# ---- metrics.jsonl read back ----------------------------------------------------------------


def test_the_metrics_log_writes_nan_as_null_and_reads_back_within_bounds(tmp_path: Path) -> None:
    log = files.MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"step": 1, "d_loss": 0.5, "g_loss": float("nan"), "x": float("inf")})
    log.write({"step": 2, "d_loss": 0.25, "g_loss": 1.5, "e": {"a": [float("-inf"), 1.0]}})
    assert log.path.read_text().splitlines() == [
        '{"step": 1, "d_loss": 0.5, "g_loss": null, "x": null}',
        '{"step": 2, "d_loss": 0.25, "g_loss": 1.5, "e": {"a": [null, 1.0]}}',
    ]
    with log.path.open("a") as handle:
        handle.write('{"step": 3, "d_lo')  # a writer killed midway
    assert [r["step"] for r in log.read()] == [1, 2]
    assert files.plot_losses(log.read(), tmp_path / "losses.png").is_file()
    log.truncate_after(1)
    assert log.path.read_text() == '{"step": 1, "d_loss": 0.5, "g_loss": null, "x": null}\n'


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("garbage", r"line 2, is not valid JSON"),
        ('{"step": 2, "d_loss": NaN}', r"line 2, holds NaN, which is not a JSON number"),
        ('{"step": 2, "d_loss": 1e999}', r"line 2, holds a number too large for a float"),
        ('{"step": 2' + "0" * 5000 + "}", r"line 2, holds an integer of 5001 digits"),
        ('{"step": 2, "step": 3}', r"line 2, holds the key 'step' given twice"),
        ('{"step": true}', r"line 2, is not a record with a step"),
        ("[2]", r"line 2, is not a record with a step"),
    ],
    ids=["garbage", "nan", "overflow", "5001-digits", "key-twice", "bool-step", "list"],
)
def test_a_bad_line_in_the_metrics_log_is_one_error_naming_it(
    tmp_path: Path, line: str, found: str
) -> None:
    log = files.MetricsLog(tmp_path / "metrics.jsonl")
    log.path.write_text('{"step": 1, "d_loss": 1.0}\n' + line + '\n{"step": 3}\n')
    before = snapshot(tmp_path)
    message = rf"^metrics log {log.path}, {found}.*; remove that line, or move the file away"
    with pytest.raises(BoundedReadError, match=message):
        log.read()
    with pytest.raises(BoundedReadError, match=message):
        log.truncate_after(1)
    assert snapshot(tmp_path) == before


def test_a_metrics_log_that_is_huge_or_a_link_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = files.MetricsLog(tmp_path / "metrics.jsonl")
    log.path.write_text('{"step": 1}\n' * 100)
    monkeypatch.setattr(files, "MAX_METRICS_BYTES", 1000)
    with pytest.raises(BoundedReadError, match=r"is larger than 1,000 bytes"):
        log.read()
    log.path.rename(tmp_path / "elsewhere.jsonl")
    log.path.symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(BoundedReadError, match=r"metrics\.jsonl is a symbolic link"):
        log.read()


def test_a_damaged_metrics_log_stops_a_resume_in_one_line(
    tmp_path: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(capsys, run_dir, "train.steps=2", "train.checkpoint_every=2")[0] == 0
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text('{"step": 2, "d_loss": Infinity}\n')
    code, stderr = train(capsys, run_dir, "train.steps=4", "train.checkpoint_every=2")
    assert code == 2
    line = one_error_line(stderr)
    assert line == (
        f"gankit: error: metrics log {metrics}, line 1, holds Infinity, which is not a JSON "
        "number; it is not a file gankit wrote; remove that line, or move the file away (the "
        "run then starts a new one)"
    )
    assert metrics.read_text() == '{"step": 2, "d_loss": Infinity}\n'
