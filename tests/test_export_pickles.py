"""No pickle in an export ever runs: a payload planted in each of an export's files (and beside
them, under the names other tools use for pickled weights) is never unpickled by any way of
loading an export, even when its config.json is forged to vouch for the planted file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import gankit
from gankit.cli import main
from gankit.core.errors import GankitError
from gankit.outputs.export import CONFIG_FILE, EXPORT_FILES, SHA256_KEY, WEIGHTS_FILE

from conftest import plant

SPEC = {"name": "dcgan28", "width": 4, "z_dim": 12}
# Pickled-weights names of other tools, planted beside the export's own files.
FOREIGN = ("pytorch_model.bin", "model.pt", "model.pkl")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    generator = gankit.GENERATORS.build(SPEC, image_shape=(1, 28, 28))
    return gankit.save_model(generator, tmp_path_factory.mktemp("export") / "generator", step=3)


def load_every_way(export: Path, tmp_path: Path) -> list[str]:
    """Load `export` through each public way in; returns what each said (loaded or its error)."""
    said = []
    for load in (gankit.load_generator, gankit.load_model):
        try:
            load(export)
            said.append("loaded")
        except GankitError as error:
            said.append(str(error))
    said.append(str(main(["sample", str(export), "--n", "4", "--out", str(tmp_path / "s.png")])))
    return said


def test_the_planted_payload_does_run_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    plant(tmp_path / "model.pt", marker)
    torch.load(tmp_path / "model.pt", weights_only=False)
    assert marker.read_text() == "a pickle ran"  # so its absence below means something


@pytest.mark.parametrize("name", sorted(EXPORT_FILES) + list(FOREIGN))
@pytest.mark.parametrize("forged", [False, True], ids=["as planted", "config vouches for it"])
def test_a_pickle_in_any_file_of_an_export_never_runs(
    pristine: Path, tmp_path: Path, name: str, forged: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    export = Path(shutil.copytree(pristine, tmp_path / "generator"))
    marker = tmp_path / "ran"
    plant(export / name, marker)
    if forged and name != CONFIG_FILE:
        config = json.loads((export / CONFIG_FILE).read_text())
        if name == WEIGHTS_FILE:
            config[SHA256_KEY] = hashlib.sha256((export / name).read_bytes()).hexdigest()
        config["weights_file"] = name  # an extra key a forger might hope is followed
        (export / CONFIG_FILE).write_text(json.dumps(config))
    said = load_every_way(export, tmp_path)
    capsys.readouterr()
    assert not marker.exists(), said
    if name in (CONFIG_FILE, WEIGHTS_FILE):  # the files loading needs: refused, by name
        assert all(name in outcome for outcome in said[:2]), said
        assert said[2] == "2"
