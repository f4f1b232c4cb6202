"""Third-party components through the real `gankit.plugins` entry-point group.

Each plugin is a real distribution on disk (a package plus a `*.dist-info` folder with METADATA and
entry_points.txt), found by importlib.metadata once its folder is on sys.path / PYTHONPATH.

The rest of the suite runs with plugin autoloading off (tests/conftest.py sets GANKIT_NO_PLUGINS);
these tests switch it back on, so they also meet any plugin the environment holds: what they
assert about the loaded plugins is relative to what the environment already provides.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch

import gankit.config.registry as registry
from gankit.config.registry import LOSSES, NO_PLUGINS_ENV, PLUGIN_GROUP, REGISTRIES, load_plugins
from gankit.core.errors import PluginError

from conftest import REFERENCE_RECIPE, ROOT

GOOD_MODULE = "gankit_test_plugin"
BROKEN_MODULE = "gankit_broken_plugin"

GOOD_SOURCE = '''
"""A third-party gankit plugin used by the tests."""

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

import gankit


class MarginParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    margin: float = Field(1.0, gt=0, description="hinge margin")


@gankit.LOSSES.register("plugin_loss", params=MarginParams)
class PluginHingeLoss:
    """Hinge loss from the test plugin."""

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = margin

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor):
        real = F.relu(self.margin - real_logits.float()).mean()
        fake = F.relu(self.margin + fake_logits.float()).mean()
        return real, fake

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.float().mean()
'''

BROKEN_SOURCE = 'raise RuntimeError("plugin exploded on import")\n'

USER_MODULE = "gankit_user_plugin"

# A plugin as a user installs it (the README's "Your own components"), with names that sort among
# the built-in ones, so that a test listing every component would notice it, and that no real
# plugin in the environment uses (the README's own `my_hinge` may well be installed).
USER_SOURCE = '''
"""A user's own gankit components."""

import math

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

import gankit


class HingeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    margin: float = Field(1.0, gt=0, description="hinge margin")


@gankit.LOSSES.register("hinge_user_test", params=HingeParams)
class MyHinge:
    """Hinge loss (Lim & Ye 2017)."""

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = margin

    def discriminator(self, real_logits, fake_logits):
        real = F.relu(self.margin - real_logits.float()).mean()
        return real, F.relu(self.margin + fake_logits.float()).mean()

    def generator(self, fake_logits):
        return -fake_logits.float().mean()


class GeneratorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    z_dim: int = Field(8, gt=0, description="latent size")


@gankit.GENERATORS.register("dcgan28_user_test", params=GeneratorParams)
class UserGenerator(gankit.Generator):
    """A user's generator: one linear layer."""

    def __init__(self, z_dim: int = 8, image_shape=(1, 28, 28)) -> None:
        super().__init__()
        self.z_dim, self.noise, self.num_classes = z_dim, "normal", 0
        self.shape = tuple(image_shape)
        self.net = nn.Sequential(nn.Linear(z_dim, math.prod(self.shape)), nn.Tanh())

    def forward(self, z, labels=None):
        return self.net(z).view(-1, *self.shape)
'''


def make_distribution(
    root: Path, *, dist: str, version: str, module: str, entry_point: str, source: str
) -> Path:
    """Write an installed-looking distribution into `root` and return `root`."""
    package = root / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[gankit.plugins]\n{entry_point} = {module}\n")
    return root


@pytest.fixture(scope="module")
def good_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_distribution(
        tmp_path_factory.mktemp("good_plugin"),
        dist="gankit_test_plugin",
        version="0.1",
        module=GOOD_MODULE,
        entry_point="myplugin",
        source=GOOD_SOURCE,
    )


@pytest.fixture(scope="module")
def user_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_distribution(
        tmp_path_factory.mktemp("user_plugin"),
        dist="gankit-user-plugin",
        version="1.0",
        module=USER_MODULE,
        entry_point="userplugin",
        source=USER_SOURCE,
    )


def plugin_entry_points() -> list[str]:
    """The names in the `gankit.plugins` group that importlib.metadata finds on sys.path now."""
    return [entry_point.name for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP)]


@pytest.fixture(scope="module")
def broken_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_distribution(
        tmp_path_factory.mktemp("broken_plugin"),
        dist="gankit-broken-plugin",
        version="0.3",
        module=BROKEN_MODULE,
        entry_point="brokenplugin",
        source=BROKEN_SOURCE,
    )


def gankit_cli(
    *args: str, plugins: Sequence[Path], cwd: Path, no_plugins: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `python -m gankit.cli ARGS` with the plugin folders prepended to PYTHONPATH."""
    env = dict(os.environ)
    env.pop(NO_PLUGINS_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(
        [*(str(path) for path in plugins), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["WANDB_MODE"] = "disabled"
    if no_plugins:
        env[NO_PLUGINS_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "gankit.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Through the command line (fresh processes, so plugin autoloading runs as it does for users) -----


def test_list_shows_the_plugin_loss_and_its_params(good_plugin: Path, tmp_path: Path) -> None:
    result = gankit_cli("list", "loss", plugins=[good_plugin], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "losses (loss.name):"
    row = re.compile(r"  plugin_loss +Hinge loss from the test plugin\.")
    assert any(row.fullmatch(line) for line in lines), result.stdout
    assert "      margin: float = 1.0  # hinge margin" in lines
    assert any(line.startswith("  non_saturating ") for line in lines)  # built-ins stay
    assert "generators" not in result.stdout  # only the kind asked for


def test_validate_accepts_the_plugin_loss(good_plugin: Path, tmp_path: Path) -> None:
    result = gankit_cli(
        "validate",
        str(REFERENCE_RECIPE),
        "loss.name=plugin_loss",
        "loss.margin=0.5",
        "-q",
        plugins=[good_plugin],
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_validate_checks_the_plugin_params(good_plugin: Path, tmp_path: Path) -> None:
    result = gankit_cli(
        "validate",
        str(REFERENCE_RECIPE),
        "loss.name=plugin_loss",
        "loss.margn=0.5",
        "-q",
        plugins=[good_plugin],
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert "unknown key loss.margn; did you mean 'margin'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_plugins_env_skips_autoloading(
    good_plugin: Path, broken_plugin: Path, tmp_path: Path
) -> None:
    # With both plugins on the path, neither is imported: the good one's loss is unknown and the
    # broken one does not fail.
    result = gankit_cli(
        "validate",
        str(REFERENCE_RECIPE),
        "loss.name=plugin_loss",
        "-q",
        plugins=[good_plugin, broken_plugin],
        cwd=tmp_path,
        no_plugins=True,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert "gankit: error:" in result.stderr
    assert "unknown loss 'plugin_loss'" in result.stderr
    assert "plugin_loss" not in result.stderr.split("available: ")[1].split(".")[0]
    assert "failed to load" not in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_plugin_is_reported_without_traceback(broken_plugin: Path, tmp_path: Path) -> None:
    result = gankit_cli("list", "loss", plugins=[broken_plugin], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    stderr = result.stderr
    assert "gankit plugin 'brokenplugin' (gankit_broken_plugin, from gankit-broken-plugin 0.3)" in (
        stderr
    )
    assert "failed to load: RuntimeError: plugin exploded on import" in stderr
    assert "GANKIT_NO_PLUGINS=1" in stderr
    assert "Traceback" not in stderr


def test_a_plugin_that_exits_on_import_is_reported_by_name(tmp_path: Path) -> None:
    exiting = make_distribution(
        tmp_path / "site",
        dist="gankit-exiting-plugin",
        version="1.2",
        module="gankit_exiting_plugin",
        entry_point="exitingplugin",
        source='import sys\nsys.exit("no GPU here")\n',
    )
    result = gankit_cli("list", "loss", plugins=[exiting], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "gankit: error: gankit plugin 'exitingplugin' (gankit_exiting_plugin, from "
        "gankit-exiting-plugin 1.2) called sys.exit('no GPU here') on import."
    )
    assert "GANKIT_NO_PLUGINS=1" in result.stderr


def test_no_plugins_env_works_around_a_broken_plugin(broken_plugin: Path, tmp_path: Path) -> None:
    result = gankit_cli(
        "validate",
        str(REFERENCE_RECIPE),
        "-q",
        plugins=[broken_plugin],
        cwd=tmp_path,
        no_plugins=True,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# In process -------------------------------------------------------------------------------------


@pytest.fixture
def fresh_plugin_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Plugins not loaded yet; afterwards every component and plugin module that the test loaded
    (its own plugins', and any the environment holds) is gone again."""
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_plugin_failures", [])
    monkeypatch.delenv(NO_PLUGINS_ENV, raising=False)
    for module in (GOOD_MODULE, BROKEN_MODULE):
        sys.modules.pop(module, None)
    components = {section: set(entries.names()) for section, entries in REGISTRIES.items()}
    modules = set(sys.modules)
    try:
        yield monkeypatch
    finally:
        for section, entries in REGISTRIES.items():
            for name in set(entries.names()) - components[section]:
                entries.unregister(name)
        plugins = {
            entry_point.module.partition(".")[0]
            for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP)
        }
        for module in set(sys.modules) - modules:
            if module.partition(".")[0] in plugins:
                sys.modules.pop(module)


def test_load_plugins_is_idempotent(
    good_plugin: Path, fresh_plugin_state: pytest.MonkeyPatch
) -> None:
    environment = plugin_entry_points()  # plugins installed where the tests run: usually none
    fresh_plugin_state.syspath_prepend(str(good_plugin))
    everything = sorted(["myplugin", *environment])

    assert sorted(load_plugins()) == everything
    assert "plugin_loss" in LOSSES
    assert load_plugins() == []  # already loaded: nothing is imported again
    assert "plugin_loss" in LOSSES
    assert sorted(load_plugins(force=True)) == everything  # reloading does not register twice
    fresh_plugin_state.setenv(NO_PLUGINS_ENV, "1")
    assert load_plugins(force=True) == []


def test_get_loads_plugins_for_an_unknown_name(
    good_plugin: Path, fresh_plugin_state: pytest.MonkeyPatch
) -> None:
    fresh_plugin_state.syspath_prepend(str(good_plugin))
    assert "plugin_loss" not in LOSSES

    entry = LOSSES.get("plugin_loss")  # no explicit load_plugins()

    assert entry.origin.startswith(f"{GOOD_MODULE}.PluginHingeLoss (")
    loss = LOSSES.build({"name": "plugin_loss", "margin": 2.0})
    real, fake = loss.discriminator(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0]))
    assert (real.item(), fake.item()) == (0.5, 1.5)  # mean(relu(2 - x)), mean(relu(2 + x))
    assert loss.generator(torch.tensor([1.0, 3.0])).item() == -2.0
    assert loss.gankit_spec == {
        "kind": "loss",
        "name": "plugin_loss",
        "params": {"margin": 2.0},
        "runtime": {},
    }


def test_broken_plugin_raises_plugin_error(
    broken_plugin: Path, fresh_plugin_state: pytest.MonkeyPatch
) -> None:
    fresh_plugin_state.syspath_prepend(str(broken_plugin))

    with pytest.raises(PluginError) as caught:
        load_plugins()

    message = str(caught.value)
    assert message.startswith("gankit plugin 'brokenplugin' (gankit_broken_plugin, from ")
    assert "gankit-broken-plugin 0.3" in message
    assert "set GANKIT_NO_PLUGINS=1" in message
    assert isinstance(caught.value.__cause__, RuntimeError)
    # Later lookups keep reporting the broken plugin instead of a misleading "unknown loss".
    with pytest.raises(PluginError, match="brokenplugin"):
        LOSSES.get("plugin_loss")


def test_a_broken_plugin_does_not_stop_the_others_loading(
    good_plugin: Path, broken_plugin: Path, fresh_plugin_state: pytest.MonkeyPatch
) -> None:
    fresh_plugin_state.syspath_prepend(str(good_plugin))
    fresh_plugin_state.syspath_prepend(str(broken_plugin))

    with pytest.raises(PluginError, match="brokenplugin"):
        load_plugins()
    assert "plugin_loss" in LOSSES


# Isolation of the rest of the suite ------------------------------------------------------------


def test_the_suite_ignores_plugins_installed_where_it_runs(
    user_plugin: Path, tmp_path: Path
) -> None:
    """Tests that count the registered components pass with a user's plugin installed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(user_plugin))
        assert "userplugin" in plugin_entry_points()  # a real, discoverable distribution
    sensitive = [
        "tests/test_recipe.py::test_unknown_component_name",  # loads recipes, so plugins (5 cases)
        "tests/test_losses.py::test_every_registered_loss_has_a_value_test",  # after a recipe
        "tests/test_cli.py::test_recipe_errors_are_one_clean_message[unknown-component]",  # child
        "tests/test_plugins.py::test_load_plugins_is_idempotent",  # autoloading on
    ]
    env = {key: value for key, value in os.environ.items() if key != NO_PLUGINS_ENV}  # a shell's
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(user_plugin), env.get("PYTHONPATH")]))

    inner = [f"--basetemp={tmp_path / 'inner'}", "-p", "no:cacheprovider", "-q", "-n", "0"]
    inner += sensitive  # one process: the suite already runs on every core
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *inner],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    report = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "8 passed" in result.stdout, report


# A plugin that extends every newer contract, one file --------------------------------------------

MODERN_MODULE = "gankit_modern_plugin"
MODERN_SOURCE = '''
"""A third-party package's loss, generator regularizer and augmentation, in one file."""

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

import gankit
from gankit.components.losses import Logits


@gankit.LOSSES.register("plugin_relativistic_hinge")
class RelativisticHinge:
    """Relativistic hinge: each side's logits against the other side's mean."""

    generator_uses_real = True

    def discriminator(self, logits: Logits):
        real, fake = logits.real.float(), logits.fake.float()
        return {
            "d_loss_real": F.relu(1 - (real - fake.mean())).mean(),
            "d_loss_fake": F.relu(1 + (fake - real.mean())).mean(),
        }

    def generator(self, logits: Logits):
        real, fake = logits.real.float(), logits.fake.float()
        return {"g_loss_fake": F.relu(1 - (fake - real.mean())).mean(),
                "g_loss_real": F.relu(1 + (real - fake.mean())).mean()}


@gankit.REGULARIZERS.register("plugin_brightness")
class Brightness:
    """Keeps G's mean pixel near a target."""

    network = "generator"

    def __init__(
        self,
        target: Annotated[float, Field(description="wanted mean pixel")] = -0.5,
        every: Annotated[int, Field(gt=0)] = 2,
    ) -> None:
        self.target, self.every = target, every

    def penalty(self, generator, z):
        return (generator(z).float().mean() - self.target).square()


@gankit.AUGMENTATIONS.register("plugin_vflip")
class VerticalFlip:
    """Flips half of the images upside down."""

    def __call__(self, images, uniform):
        flip = (uniform(1)[:, 0] < 0.5).view(-1, 1, 1, 1)
        return torch.where(flip, images.flip(-2), images)
'''


@pytest.fixture(scope="module")
def modern_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_distribution(
        tmp_path_factory.mktemp("modern_plugin"),
        dist="gankit-modern-plugin",
        version="0.2",
        module=MODERN_MODULE,
        entry_point="modernplugin",
        source=MODERN_SOURCE,
    )


def test_a_plugin_loss_regularizer_and_augmentation_train(
    modern_plugin: Path, tmp_path: Path, mnist_root: Path
) -> None:
    result = gankit_cli(
        "train",
        str(REFERENCE_RECIPE),
        f"data.root={mnist_root}",
        "data.download=false",
        "data.subset=64",
        "data.batch_size=16",
        "generator.width=8",
        "discriminator.width=8",
        "train.steps=4",
        "train.log_every=4",
        "train.progress=false",
        "loss.name=plugin_relativistic_hinge",
        "regularizers=[{name: plugin_brightness, every: 2}, {name: r1, weight: 1.0}]",
        "augment.name=plugin_vflip",
        f"output_dir={tmp_path / 'run'}",
        plugins=[modern_plugin],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for name in ("d_loss_real", "d_loss_fake", "g_loss_fake", "g_loss_real", "d_r1"):
        assert record[name] > 0, name
    assert record["g_plugin_brightness"] > 0
    assert re.search(r"g_loss [\d.]+ \(fake [\d.]+, real [\d.]+\)", result.stdout), result.stdout
    listed = gankit_cli("list", "augment", plugins=[modern_plugin], cwd=tmp_path)
    assert "plugin_vflip" in listed.stdout and "diffaugment" in listed.stdout


# Exports of a plugin's components --------------------------------------------------------------


def test_an_export_names_the_package_its_generator_came_from(
    user_plugin: Path, fresh_plugin_state: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import gankit
    from gankit.core.errors import ExportError

    fresh_plugin_state.syspath_prepend(str(user_plugin))
    generator = gankit.GENERATORS.build({"name": "dcgan28_user_test"}, image_shape=(1, 28, 28))
    folder = gankit.save_model(generator, tmp_path / "generator")
    config = json.loads((folder / "config.json").read_text())
    assert config["plugin"] == {
        "module": USER_MODULE,
        "distribution": "gankit-user-plugin",
        "version": "1.0",
    }
    assert gankit.load_generator(folder).sample(2).shape == (2, 1, 28, 28)
    builtin = gankit.save_model(
        gankit.GENERATORS.build({"name": "mlp"}, image_shape=(2,)), tmp_path / "mlp"
    )
    assert "plugin" not in json.loads((builtin / "config.json").read_text())

    gankit.GENERATORS.unregister("dcgan28_user_test")  # as on a machine without the package
    with pytest.raises(
        ExportError,
        match=rf"^the generator 'dcgan28_user_test' exported in '{re.escape(str(folder))}' comes "
        r"from the package gankit-user-plugin, which is not installed here \(or no longer "
        r"registers it\): install it \(pip install gankit-user-plugin; version 1\.0 made this "
        r"export\) and load again$",
    ):
        gankit.load_generator(folder)
    config["plugin"] = {"module": "gankit_user_plugin"}  # no distribution found at export
    config["plugin"]["distribution"] = "evil; rm -rf /"  # not a distribution name: not advised
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"comes from the module 'gankit_user_plugin', which"):
        gankit.load_generator(folder)
