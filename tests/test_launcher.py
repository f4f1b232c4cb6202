"""What launchers do with gankit's processes: torchrun's workers die with it (they run in
sessions of their own, out of reach of a signal to the launcher's group), and a launch that
asked for more processes than it started says how to get them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil

from gankit.training.launcher import die_with_launcher, requested_processes

from conftest import REFERENCE_RECIPE, ROOT, TINY


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_killing_the_launchers_group_leaves_no_worker(tmp_path, mnist_root):
    """torchrun with 2 CPU workers, started as a shell starts a job (a process group of its
    own); SIGKILL to that group: no worker trains on."""
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(free_port()), str(ROOT / "scripts" / "train.py"),
        str(REFERENCE_RECIPE), *TINY, "train.steps=1000000", "train.log_every=100000",
        "train.checkpoint_every=100000", f"output_dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "WANDB_MODE": "disabled"}
    launcher = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "samples").is_dir() and time.monotonic() < deadline:
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            time.sleep(0.2)
        workers = psutil.Process(launcher.pid).children(recursive=True)
        assert len(workers) == 2
        assert all(os.getpgid(w.pid) != launcher.pid for w in workers)  # out of the group
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    _, alive = psutil.wait_procs(workers, timeout=20)
    for worker in alive:
        worker.kill()
    assert alive == [], "workers trained on after their launcher was killed"


def test_the_process_count_asked_of_accelerate_launch_is_read():
    accelerate = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--cpu"]
    assert requested_processes([*accelerate, "--num_processes", "2", "train.py"]) == 2
    assert requested_processes([*accelerate, "--num-processes=3", "train.py"]) == 3
    assert requested_processes([*accelerate, "train.py"]) is None
    module = ["python", "-m", "accelerate.commands.launch", "--num_processes", "4", "x.py"]
    assert requested_processes(module) == 4
    assert requested_processes(["bash", "-c", "--num_processes 2"]) is None
    assert requested_processes(["/venv/bin/python", "/venv/bin/torchrun", "train.py"]) is None


def test_outside_torchrun_the_process_follows_no_launcher(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert die_with_launcher() is False


def test_accelerate_launch_cpu_with_two_processes_says_how_to_get_them(tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts one process: one warning line names
    the two commands that start two (the run then stops here at its missing data)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "-q", "--cpu", "--num_processes",
        "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "scripts" / "train.py"), str(REFERENCE_RECIPE), *TINY,
        f"data.root={tmp_path / 'no-data'}", f"output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "gankit: warning: accelerate launch was asked for 2 processes but started 1 (with --cpu "
        "it starts one), so this run trains in 1; for 2 CPU processes run `ACCELERATE_USE_CPU=1 "
        "accelerate launch --multi_gpu --num_processes 2 ...` or `ACCELERATE_USE_CPU=1 torchrun "
        "--nproc_per_node 2 ...`"
    ], result.stderr
