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
MNIST_ROOT = Path(os.environ.get("GANKIT_MNIST_ROOT", ROOT.parent / "shared" / "data" / "mnist"))

# Tiny widths and batches: each training step takes milliseconds on 2 CPU cores.
TINY = [
    f"data.root={MNIST_ROOT}",
    "data.download=false",
    "data.batch_size=16",
    "generator.width=4",
    "discriminator.width=4",
    "train.progress=false",
]


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
    if not (MNIST_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.fail(
            f"MNIST not found in {MNIST_ROOT}; set GANKIT_MNIST_ROOT to the folder of MNIST/raw"
        )
    return MNIST_ROOT
