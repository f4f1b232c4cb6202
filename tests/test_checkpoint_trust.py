"""A checkpoint is only safetensors and JSON, and resuming never unpickles anything unless the
recipe trusts a checkpoint of an earlier gankit: a pickle planted in any file of a checkpoint is
never run, a manifest cannot be edited to switch the checks off, and nothing is deleted or moved
through a symbolic link."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gankit._version import __version__
from gankit.cli import main
from gankit.config.recipe import dump_recipe, load_recipe
from gankit.config.sections import AdamParams
from gankit.core.atomic import publish_folder
from gankit.training import checkpoint_state
from gankit.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    PickledCheckpointError,
    checkpoint_path,
    list_checkpoints,
    verify,
)
from gankit.training.manifest import MANIFEST_FILE, RECIPE_FILE
from gankit.training.optim import keep_implementation, make_adam
from gankit.training.state_files import StateFileError, file_names, load_state, save_state
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY, plant

SMALL = [*TINY, "data.subset=64", "train.log_every=2", "train.sample_every=2"]
LEGACY_NAMES = (
    "custom_checkpoint_0.pkl",
    "random_states_0.pkl",
    "optimizer.bin",
    "scheduler.bin",
    "scaler.pt",
    "model.safetensors",
)


def recipe(run_dir: Path, *extra: str):
    return load_recipe(REFERENCE_RECIPE, [*SMALL, f"output_dir={run_dir}", *extra])


def resume(run_dir: Path, *extra: str) -> Trainer:
    """A trainer of the run that has resumed (or started afresh), without training."""
    trainer = Trainer(recipe(run_dir, "train.steps=4", *extra))
    trainer.resume()
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """A run of 2 steps with a checkpoint at steps 1 and 2."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    Trainer(recipe(run_dir, "train.steps=2", "train.checkpoint_every=1")).fit()
    return run_dir


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run, for one test to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run", symlinks=True))


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_FILE).read_text())


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def list_file(folder: Path, name: str, manifest: dict | None = None) -> dict:
    """List `name` in the manifest with its true size and hash, as a forger would."""
    manifest = manifest or read_manifest(folder)
    data = (folder / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_manifest(folder, manifest)
    return manifest


def test_the_planted_payload_does_run_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    plant(tmp_path / "optimizer.bin", marker)
    torch.load(tmp_path / "optimizer.bin", weights_only=False)
    assert marker.read_text() == "a pickle ran"  # so its absence below means something


def test_a_checkpoint_holds_only_safetensors_and_json(trained: Path) -> None:
    newest = list_checkpoints(trained)[0]
    manifest = verify(newest)
    assert manifest["format"] == checkpoint_state.FORMAT and manifest["step"] == 2
    names = sorted(p.name for p in newest.iterdir())
    assert all(name.endswith((".safetensors", ".json", ".yaml")) for name in names), names
    assert {*names} == {*checkpoint_state.required_files(), RECIPE_FILE, MANIFEST_FILE}
    for name in names:  # none of them is a pickle, or a zip of one (torch.save's format)
        assert not (newest / name).read_bytes().startswith((b"\x80", b"PK")), name


FORMAT_SLOTS = sorted([*checkpoint_state.required_files(), RECIPE_FILE])
SLOTS = [
    *[(name, listed) for name in (*FORMAT_SLOTS, *LEGACY_NAMES) for listed in (False, True)],
    (MANIFEST_FILE, False),
]


@pytest.mark.parametrize(
    ("name", "listed"), SLOTS, ids=[f"{n}-{'listed' if x else 'as_is'}" for n, x in SLOTS]
)
def test_a_pickle_planted_in_any_file_never_runs(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, listed: bool
) -> None:
    newest = list_checkpoints(run)[0]
    marker = tmp_path / "ran"
    manifest = read_manifest(newest)
    plant(newest / name, marker)
    if listed:
        list_file(newest, name, manifest)
    trainer = resume(run)
    warning = [line for line in capsys.readouterr().err.splitlines() if "falling back" in line]
    assert not marker.exists()
    assert len(warning) == 1 and name in warning[0] and str(newest) in warning[0], warning
    assert trainer.step == 1  # the previous checkpoint, as for any other damage
    assert [p.name for p in list_checkpoints(run)] == ["step_0000001"]  # the other set aside


@pytest.mark.parametrize("name", [n for n in LEGACY_NAMES if n.endswith((".pkl", ".bin", ".pt"))])
def test_a_manifest_forged_as_an_earlier_gankits_is_refused_without_running_it(
    run: Path, tmp_path: Path, name: str
) -> None:
    newest = list_checkpoints(run)[0]
    marker = tmp_path / "ran"
    manifest = read_manifest(newest)
    del manifest["format"]  # what an earlier gankit's manifest looked like
    plant(newest / name, marker)
    list_file(newest, name, manifest)
    with pytest.raises(PickledCheckpointError) as refused:
        resume(run)  # auto: refused, not skipped
    message = str(refused.value)
    assert "\n" not in message and str(newest) in message and "holds pickles" in message
    assert "can run code" in message and "train.trust_pickled_checkpoint=true" in message
    assert not marker.exists()


def test_trusting_pickles_does_not_open_a_checkpoint_of_this_format_to_them(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = list_checkpoints(run)[0]
    marker = tmp_path / "ran"
    plant(newest / "custom_checkpoint_0.pkl", marker)
    list_file(newest, "custom_checkpoint_0.pkl")
    assert resume(run, "train.trust_pickled_checkpoint=true").step == 1
    assert "never holds" in capsys.readouterr().err and not marker.exists()


# ---- the manifest cannot be edited to switch the checks off -----------------------------------


def drop_an_entry_and_its_file(folder: Path) -> str:
    manifest = read_manifest(folder)
    del manifest["files"]["run_state.json"]
    (folder / "run_state.json").unlink()
    write_manifest(folder, manifest)
    return "does not list run_state.json, which every checkpoint of format 2 has"


def drop_the_rng_files(folder: Path) -> str:
    manifest = read_manifest(folder)
    for name in file_names("rng_0"):
        del manifest["files"][name]
        (folder / name).unlink()
    write_manifest(folder, manifest)
    return "does not list rng_0"


def edited(change, expected: str):
    """An edit of the manifest alone: `change` alters it in place."""

    def edit(folder: Path) -> str:
        manifest = read_manifest(folder)
        change(manifest)
        write_manifest(folder, manifest)
        return expected

    return edit


drop_an_entry = edited(
    lambda m: m["files"].pop("optimizer_generator.json"),
    "holds optimizer_generator.json, which its manifest does not list",
)
drop_a_hash = edited(lambda m: m["files"]["generator.safetensors"].pop("sha256"), "is malformed")
drop_the_format = edited(lambda m: m.pop("format"), "gives no format and lists no pickled files")
future_format = edited(lambda m: m.update(format=3), "has format 3; this gankit")
boolean_step = edited(lambda m: m.update(step=True), "is malformed")
step_unlike_the_folder = edited(
    lambda m: m.update(step=3), "says step 3, but the folder is named step_0000002"
)


def huge_number(folder: Path) -> str:
    (folder / MANIFEST_FILE).write_text(
        (folder / MANIFEST_FILE).read_text().replace('"step": 2', '"step": 2' + "0" * 5000)
    )
    return "an integer of 5001 digits"


def a_link_for_a_file(folder: Path) -> str:
    target = folder.parent.parent / "elsewhere.json"
    (folder / "run_state.json").rename(target)
    (folder / "run_state.json").symlink_to(target)
    return "run_state.json is a symbolic link"


EDITS = {
    "drop_an_entry_and_its_file": drop_an_entry_and_its_file,
    "drop_the_rng_files": drop_the_rng_files,
    "drop_an_entry": drop_an_entry,
    "drop_a_hash": drop_a_hash,
    "drop_the_format": drop_the_format,
    "future_format": future_format,
    "boolean_step": boolean_step,
    "step_unlike_the_folder": step_unlike_the_folder,
    "huge_number": huge_number,
    "a_link_for_a_file": a_link_for_a_file,
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_an_edited_manifest_is_refused_and_auto_falls_back(
    run: Path, capsys: pytest.CaptureFixture[str], edit
) -> None:
    newest = list_checkpoints(run)[0]
    expected = edit(newest)
    with pytest.raises(CheckpointError, match=r"is malformed|format|list|step|digits|link"):
        verify(newest)
    assert resume(run).step == 1
    warning = [line for line in capsys.readouterr().err.splitlines() if "falling back" in line]
    assert len(warning) == 1 and expected in warning[0], warning


def test_a_run_state_at_another_step_than_its_manifest_is_refused(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = list_checkpoints(run)[0]
    moved = newest.rename(newest.with_name("step_0000003"))  # name and manifest agree: step 3
    manifest = read_manifest(moved)
    manifest["step"] = 3
    write_manifest(moved, manifest)
    verify(moved)
    assert resume(run).step == 1
    err = capsys.readouterr().err
    assert "run_state.json is at step 2, its manifest at 3" in err and "falling back" in err


def test_a_well_hashed_optimizer_state_of_the_wrong_shape_names_its_file(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = list_checkpoints(run)[0]
    save_state(newest, "optimizer_generator", {"state": {}, "param_groups": []})
    for name in file_names("optimizer_generator"):
        list_file(newest, name)
    verify(newest)  # the hashes agree: only reading it shows the fault
    with pytest.raises(CheckpointError, match=r"optimizer_generator\.json does not fit"):
        resume(run, f"train.resume={newest}")
    assert resume(run).step == 1
    assert "optimizer_generator.json does not fit" in capsys.readouterr().err


# ---- links: nothing is deleted or moved outside the run folder ---------------------------------


def outside_files(tmp_path: Path) -> Path:
    """A folder outside the run, shaped like checkpoints/abandoned/, with someone's files."""
    outside = tmp_path / "outside"
    (outside / "branch_001" / "step_0000009").mkdir(parents=True)
    (outside / "branch_001" / "step_0000009" / "precious.txt").write_text("mine")
    (outside / "step_0000009").mkdir()
    (outside / "step_0000009" / "precious.txt").write_text("mine")
    return outside


def link(run: Path, which: str, outside: Path) -> Path:
    """Make `which` of the run's checkpoint folders a link to `outside`."""
    checkpoints = run / "checkpoints"
    if which == "checkpoints":
        path = checkpoints
        shutil.rmtree(path)
    elif which == "abandoned":
        path = checkpoints / "abandoned"
    elif which == "branch":
        path = checkpoints / "abandoned" / "branch_001"
        path.parent.mkdir()
        outside = outside / "branch_001"
    else:
        path = checkpoints / "step_0000009"
        outside = outside / "step_0000009"
    path.symlink_to(outside, target_is_directory=True)
    return path


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("which", ["checkpoints", "abandoned", "branch", "step"])
def test_clearing_and_pruning_refuse_a_linked_folder(run: Path, tmp_path: Path, which: str):
    outside = outside_files(tmp_path)
    before = snapshot(outside)
    linked = link(run, which, outside)
    manager = CheckpointManager(None, run, keep=1, writer="test")  # what deletes and moves
    with pytest.raises(CheckpointError, match="symbolic link") as refused:
        manager.clear()
    assert str(linked) in str(refused.value) and "\n" not in str(refused.value)
    if which != "checkpoints":
        assert [p.name for p in run.joinpath("checkpoints").glob("step_000000[12]")]
    if which in ("abandoned", "branch"):
        manager.clear(keep_set_aside=True)  # the run's own go; the link is not touched
        assert not list_checkpoints(run)
    assert snapshot(outside) == before


def test_setting_a_branch_aside_refuses_a_linked_abandoned_folder(run: Path, tmp_path: Path):
    outside = outside_files(tmp_path)
    before = snapshot(outside)
    link(run, "abandoned", outside)
    older = list_checkpoints(run)[1]
    manager = CheckpointManager(None, run, keep=3, writer="test")
    with pytest.raises(CheckpointError, match="abandoned is a symbolic link"):
        manager.branch_from(older, 1)  # step 2 would move into abandoned/
    assert snapshot(outside) == before
    assert [p.name for p in list_checkpoints(run)] == ["step_0000002", "step_0000001"]


def test_resume_never_does_not_follow_a_linked_abandoned_folder(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = outside_files(tmp_path)
    before = snapshot(outside)
    linked = link(run, "abandoned", outside)
    code = main(["train", str(REFERENCE_RECIPE), *SMALL, f"output_dir={run}", "train.resume=never"])
    assert code == 2
    err = capsys.readouterr().err
    assert "holds an earlier run" not in err  # refused before anything is said to go
    errors = [line for line in err.splitlines() if line.startswith("gankit: error:")]
    assert len(errors) == 1, err
    shown_as = linked.relative_to(run).as_posix()
    assert f"{shown_as} is a symbolic link to {outside}" in errors[0]
    assert snapshot(outside) == before
    assert [p.name for p in list_checkpoints(run)] == ["step_0000002", "step_0000001"]


# ---- checkpoints of earlier gankit versions (Accelerate's pickles) -----------------------------


def save_the_old_way(manager: CheckpointManager, step: int, recipe_text: str) -> Path:
    """What gankit wrote before its own format: `accelerator.save_state` (pickles) and a
    manifest without a format."""
    final = checkpoint_path(manager.run_dir, step)
    staging = manager.staging_for(final)
    staging.mkdir(parents=True)
    manager.accelerator.save_state(str(staging), safe_serialization=True)
    (staging / RECIPE_FILE).write_text(recipe_text)
    files = {
        path.name: {
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        for path in sorted(staging.iterdir())
    }
    manifest = {"step": step, "gankit_version": __version__, "files": files}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    publish_folder(staging, final)
    return final


# a learning-rate schedule too, so that format 1's custom_checkpoint_1.pkl is there
WARMUP = ("optim.generator.warmup_steps=3",)


@pytest.fixture(scope="module")
def pickled(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """A run of 2 steps whose one checkpoint an earlier gankit wrote."""
    run_dir = tmp_path_factory.mktemp("pickled") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CheckpointManager, "save", save_the_old_way)
        Trainer(recipe(run_dir, "train.steps=2", "train.checkpoint_every=2", *WARMUP)).fit()
    return run_dir


def test_the_old_layout_is_what_accelerate_wrote(pickled: Path) -> None:
    (checkpoint,) = list_checkpoints(pickled)
    assert verify(checkpoint)["format"] == checkpoint_state.PICKLED_FORMAT
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "custom_checkpoint_0.pkl",
        "custom_checkpoint_1.pkl",
        MANIFEST_FILE,
        "model.safetensors",
        "model_1.safetensors",
        "optimizer.bin",
        "optimizer_1.bin",
        "random_states_0.pkl",
        RECIPE_FILE,
    ]


def test_an_old_checkpoint_is_refused_in_one_line_without_the_flag(
    pickled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = Path(shutil.copytree(pickled, tmp_path / "run"))
    before = snapshot(run_dir)
    code = main(["train", str(REFERENCE_RECIPE), *SMALL, *WARMUP, f"output_dir={run_dir}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("gankit: error:")]
    assert "holds pickles (custom_checkpoint_0.pkl, custom_checkpoint_1.pkl, optimizer.bin" in line
    assert "can run code" in line and "train.trust_pickled_checkpoint=true" in line
    assert snapshot(run_dir) == before


def exported(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "export" / "generator" / "model.safetensors")


def test_an_old_checkpoint_resumes_exactly_with_the_flag(
    pickled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = Path(shutil.copytree(pickled, tmp_path / "run"))
    four = ("train.steps=4", "train.checkpoint_every=2", *WARMUP)
    Trainer(recipe(run_dir, *four, "train.trust_pickled_checkpoint=true")).fit()
    assert "which holds pickles" in capsys.readouterr().err
    straight = tmp_path / "straight"
    Trainer(recipe(straight, *four)).fit()
    ours, theirs = exported(run_dir), exported(straight)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    newest = list_checkpoints(run_dir)[0]
    assert verify(newest)["format"] == checkpoint_state.FORMAT  # written without pickles


def test_trusting_pickles_still_reads_the_weights_with_safetensors_only(
    pickled: Path, tmp_path: Path
) -> None:
    run_dir = Path(shutil.copytree(pickled, tmp_path / "run"))
    (checkpoint,) = list_checkpoints(run_dir)
    marker = tmp_path / "ran"
    plant(checkpoint / "model.safetensors", marker)
    list_file(checkpoint, "model.safetensors")
    with pytest.raises(CheckpointError, match="is intact but does not fit this run"):
        resume(run_dir, *WARMUP, "train.trust_pickled_checkpoint=true")
    assert not marker.exists()


# ---- the state files themselves -------------------------------------------------------------


def assert_same(a, b) -> None:
    """Equal values of the same types (an OrderedDict comes back as a dict, in order)."""
    kind = lambda value: dict if isinstance(value, dict) else type(value)  # noqa: E731
    assert kind(a) is kind(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def test_an_optimizers_state_and_rng_states_round_trip_exactly(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=torch.tensor(1e-3), betas=(0.5, 0.9), foreach=False
    )
    for _ in range(2):
        model(torch.randn(5, 3)).square().sum().backward()
        optimizer.step()
    state = {
        "optimizer": optimizer.state_dict(),  # int keys, tuples, a tensor lr, float32 steps
        "weights": model.state_dict(),  # num_batches_tracked: an int64 scalar
        "mixed": [math.inf, -math.inf, math.nan, -0.0, 1e-300, True, None, "", (1,), []],
        "half": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
        (0, "key"): {7: torch.zeros(0, 2, dtype=torch.uint8)},
    }
    save_state(tmp_path, "state", state)
    assert_same(load_state(tmp_path, "state"), state)

    accelerator = SimpleNamespace(step=5)
    random.random(), np.random.normal(), torch.rand(1)  # a cached gaussian in NumPy's state
    rng = checkpoint_state.rng_states(accelerator)
    save_state(tmp_path, "rng_0", rng)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    loaded = load_state(tmp_path, "rng_0")
    assert_same(loaded, rng)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    accelerator.step = 0
    checkpoint_state.set_rng_states(loaded, accelerator)
    assert accelerator.step == 5
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


def test_a_capturable_optimizer_keeps_its_kernels_through_a_state_file(tmp_path: Path) -> None:
    """The learning rate as a device tensor and the step counts of a CUDA-graph run's Adam
    come back as they were, through `keep_implementation` (on a CPU here)."""

    def capturable() -> torch.optim.Adam:
        parameters = [torch.nn.Parameter(torch.ones(3))]
        optimizer = make_adam(parameters, AdamParams(), capturable_on=torch.device("cpu"))
        keep_implementation(optimizer)
        return optimizer

    parameter = torch.nn.Parameter(torch.ones(3))
    trained = torch.optim.Adam([parameter], lr=0.05)
    parameter.grad = torch.full((3,), 0.5)
    trained.step()  # (a capturable Adam steps only on a GPU)
    saved = capturable()
    saved.load_state_dict(trained.state_dict())
    save_state(tmp_path, "optimizer", saved.state_dict())
    loaded = capturable()
    loaded.load_state_dict(load_state(tmp_path, "optimizer"))
    group = loaded.param_groups[0]
    assert group["capturable"] is True and isinstance(group["lr"], torch.Tensor)
    assert float(group["lr"]) == pytest.approx(0.05)
    assert_same(loaded.state_dict()["state"], saved.state_dict()["state"])


def test_the_grad_scaler_is_saved_and_restored(tmp_path: Path, mnist_root: Path) -> None:
    first = Trainer(recipe(tmp_path / "a", "train.steps=2"))
    scaler = first.accelerator.scaler = torch.amp.GradScaler("cpu", growth_interval=7)
    scaler.scale(torch.ones(()))  # fp16 training made its scale tensor
    scaler.update(new_scale=96.0)
    folder = first.checkpoints.save(0, dump_recipe(first.recipe))
    assert load_state(folder, "grad_scaler")["scale"] == 96.0
    (tmp_path / "b").mkdir()
    second = Trainer(recipe(tmp_path / "b", "train.steps=2", f"train.resume={folder}"))
    second.accelerator.scaler = torch.amp.GradScaler("cpu")
    second.resume()
    assert second.accelerator.scaler.state_dict() == scaler.state_dict()


def forge(tmp_path: Path, document: dict, tensors: dict | None = None) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"format": 1, "state": document}))
    save_file(tensors or {}, str(tmp_path / "s.safetensors"))


@pytest.mark.parametrize(
    ("document", "tensors", "message"),
    [
        ({"tensor": "0"}, None, "refers to a tensor '0' its .safetensors file lacks"),
        ({"dict": {}}, {"0": torch.zeros(1)}, "holds tensors 0 that s.json does not refer to"),
        ([{"tensor": "0"}, {"tensor": "0"}], {"0": torch.zeros(1)}, "refers to the tensor"),
        ({"pairs": [[1, 2], [1, 3]]}, None, "holds the dict key 1 twice"),
        ({"pairs": [[[1], 2]]}, None, "a dict key that is a list"),
        ({"pickle": "gASV"}, None, "which is no value it writes"),
        ({"dict": {}, "tuple": []}, None, "where a value belongs"),
    ],
)
def test_a_state_file_gankit_did_not_write_is_refused(tmp_path, document, tensors, message):
    forge(tmp_path, document, tensors)
    with pytest.raises(StateFileError, match=r"s\.json|s\.safetensors") as refused:
        load_state(tmp_path, "s")
    assert message in str(refused.value)


def test_state_files_refuse_what_they_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match=r"state\['device'\] is a device"):
        save_state(tmp_path, "state", {"device": torch.device("cpu")})
    (tmp_path / "s.json").write_text('{"format": true, "state": null}')
    save_file({}, str(tmp_path / "s.safetensors"))
    with pytest.raises(StateFileError, match="not a state file of format 1"):
        load_state(tmp_path, "s")
    plant(tmp_path / "s.safetensors", tmp_path / "ran")
    (tmp_path / "s.json").write_text('{"format": 1, "state": null}')
    with pytest.raises(StateFileError, match="not a readable safetensors file"):
        load_state(tmp_path, "s")
    assert not (tmp_path / "ran").exists()


def test_every_torch_load_in_gankit_is_weights_only() -> None:
    root = Path(__file__).resolve().parents[1] / "gankit"
    calls = 0
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls += 1
                flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert flags.get("weights_only") == "True", f"{path}:{node.lineno}"
    assert calls >= 1  # the Inception weights' check
