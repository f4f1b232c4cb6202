"""README's quickstart in a fresh clone: its training command without MNIST or a network, the
tests' search for MNIST, and CI running the README's test command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import MNIST_ROOT, ROOT


def quickstart() -> list[str]:
    """The lines of the README's quickstart code block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()


# What `accelerate launch` prints about the defaults it used when it has no config (README).
LAUNCHER_DEFAULTS = ("The following values were not passed", "\t`--", "To avoid this warning")


def test_quickstart_without_a_network_is_one_line_naming_the_override(tmp_path):
    """The README's training command, in a folder laid out like a fresh clone without MNIST and
    with no route to the MNIST mirrors: one error line that names the override, no traceback
    from the dataset or the launcher, and nothing written but the download folder."""
    train = quickstart()[0].split(" && ")[-1]
    assert "accelerate launch" in train and "data.root" not in train
    for name in ("scripts", "recipes"):
        (tmp_path / name).symlink_to(ROOT / name)
    dead = "http://127.0.0.1:9"  # the discard port: every download is refused at once
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    env |= {"http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        ["bash", "-c", train], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith(LAUNCHER_DEFAULTS)]
    assert len(lines) == 1, done.stderr
    folder = (tmp_path / "data" / "MNIST" / "raw").resolve()
    assert lines[0].startswith(f"gankit: error: MNIST files missing in {folder}: ")
    assert "the download failed (no connection: " in lines[0]
    assert "data.root=PATH data.download=false" in lines[0] and "holds MNIST/raw/" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "recipes", "scripts"]


def test_ci_runs_the_readme_test_command():
    commands = quickstart()
    assert len(commands) == 2 and commands[1] == "python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [line for line in ci if "pytest" in line and not line.startswith("#")] == [commands[1]]


def run_pytest(checkout: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GANKIT_MNIST_ROOT"}
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests"]
    return subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)


def test_tests_find_mnist_in_data_or_name_every_place_they_looked(tmp_path):
    """The suite's conftest in a fresh clone beside no shared folder: without MNIST, one line
    naming GANKIT_MNIST_ROOT, data/ and ../shared/data/mnist; with MNIST in data/, it is used."""
    checkout = tmp_path / "clone"
    (checkout / "tests").mkdir(parents=True)
    (checkout / "tests" / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (checkout / "tests" / "test_reads_mnist.py").write_text(
        "def test_root(mnist_root):\n    print('MNIST at', mnist_root)\n"
    )
    done = run_pytest(checkout)
    assert done.returncode == 4
    error = [line for line in done.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(error) == 1 and "Traceback" not in done.stdout + done.stderr
    places = f"GANKIT_MNIST_ROOT (not set), {checkout / 'data'}, {tmp_path / 'shared/data/mnist'}"
    assert f"not found in any of: {places}; " in error[0]

    (checkout / "data").mkdir()
    (checkout / "data" / "MNIST").symlink_to(MNIST_ROOT / "MNIST")
    done = run_pytest(checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"MNIST at {checkout / 'data'}" in done.stdout
