"""Shared fixtures: the real MNIST files, the reference recipe, a quiet W&B, no plugins."""

from __future__ import annotations

import os

# The suite runs on two pytest-xdist workers (pyproject's addopts); two processes with two
# intra-op threads each on two cores are many times slower than one thread each. Set before
# torch is imported; every subprocess a test starts inherits it. An explicit setting wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest
import torch

from gankit.config.registry import NO_PLUGINS_ENV

# The suite sees only gankit's own components, whatever `gankit.plugins` the environment holds:
# plugin autoloading is off for the whole session, set here (on import, before any test is
# collected) so that every subprocess a test starts inherits it too. The plugin tests switch it
# back on for their own test plugins (tests/test_plugins.py).
os.environ[NO_PLUGINS_ENV] = "1"

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses the tests start (launchers, scripts, the `gankit` command) import this checkout's
# gankit, whichever one an environment has installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)
REFERENCE_RECIPE = ROOT / "recipes" / "mnist_dcgan.yaml"


def holds_mnist(root: Path) -> bool:
    """Whether `root` is a folder that holds MNIST/raw/ with the training images."""
    return (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def find_mnist() -> tuple[Path, str]:
    """Where the tests read MNIST: GANKIT_MNIST_ROOT when set, else the checkout's data/ (where
    the README's quickstart downloads it), else ../shared/data/mnist; and the places looked in."""
    if os.environ.get("GANKIT_MNIST_ROOT"):
        root = Path(os.environ["GANKIT_MNIST_ROOT"]).expanduser()
        return root, f"GANKIT_MNIST_ROOT={root}"
    candidates = [ROOT / "data", ROOT.parent / "shared" / "data" / "mnist"]
    found = next((root for root in candidates if holds_mnist(root)), candidates[0])
    return found, f"GANKIT_MNIST_ROOT (not set), {candidates[0]}, {candidates[1]}"


MNIST_ROOT, MNIST_PLACES = find_mnist()

# Tiny widths and batches: each training step takes milliseconds on 2 CPU cores.
TINY = [
    f"data.root={MNIST_ROOT}",
    "data.download=false",
    "data.batch_size=16",
    "generator.width=4",
    "discriminator.width=4",
    "train.progress=false",
]


def mnist_missing() -> str:
    """The one line that says MNIST was not found, where it was looked for, and what to do."""
    return (
        f"MNIST/raw/train-images-idx3-ubyte not found in any of: {MNIST_PLACES}; set "
        "GANKIT_MNIST_ROOT to the folder that holds MNIST/raw/, or run the README's quickstart "
        "once where the network reaches the MNIST mirrors (it downloads MNIST to data/)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Without MNIST, a run of tests that read it stops at once with `mnist_missing()`, before
    pytest-xdist starts its workers (the controller decides, from the test files named)."""
    config = session.config
    if holds_mnist(MNIST_ROOT) or hasattr(config, "workerinput"):
        return
    files: set[Path] = set()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0])
        files.update(path.rglob("test_*.py") if path.is_dir() else [path])
    uses = ("MNIST_ROOT", "mnist_root", "TINY")
    if any(p.is_file() and any(u in p.read_text(encoding="utf-8") for u in uses) for p in files):
        raise pytest.UsageError(mnist_missing())


@pytest.fixture(autouse=True)
def _quiet_wandb(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")  # tests that check W&B switch it to offline
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _cache_in_temp(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reference features are cached in the session's temporary folder, not in ~/.cache."""
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path_factory.getbasetemp() / "gankit-cache"))


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic cuDNN kernels (a no-op on a CPU), so that two CUDA runs can agree to
    rounding: otherwise the biases in front of BatchNorm, whose gradients are pure rounding
    noise, take Adam steps of full size in random directions."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not holds_mnist(MNIST_ROOT):
        pytest.fail(mnist_missing(), pytrace=False)
    return MNIST_ROOT


class Payload:
    """A pickle whose unpickling writes a marker file: the proof that a pickle ran. The trust
    tests plant it in every file of checkpoints and exports and check the marker never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "a pickle ran"))


def plant(path: Path, marker: Path) -> None:
    """Replace `path` with a pickled Payload, as torch.load(weights_only=False) would run it."""
    path.unlink(missing_ok=True)
    torch.save(Payload(marker), path)
