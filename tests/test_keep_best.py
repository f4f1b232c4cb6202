"""`eval.keep_best`: each evaluation that beats the best so far is exported to export/best/, the
best survives a resume, and a result the evaluations do not give is refused before training."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from gankit.cli import main
from gankit.config.recipe import load_recipe
from gankit.metrics.best import improves, lower_is_better
from gankit.metrics.evaluators import evaluate_export
from gankit.training.checkpoint import checkpoint_path
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, ROOT, TINY

EVAL = ["eval.every=1", "eval.n=24", "eval.batch_size=24", "eval.keep_best=precision"]
SMALL = [*TINY, "data.subset=64", "train.log_every=1", "train.sample_every=100", *EVAL]
STEPS = ["train.checkpoint_every=2", "train.keep_checkpoints=1"]


def train(run_dir, *overrides):
    recipe = load_recipe(REFERENCE_RECIPE, [*SMALL, f"output_dir={run_dir}", *STEPS, *overrides])
    Trainer(recipe).fit()


def evaluations(run_dir) -> dict[int, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r for r in records if "eval/precision" in r}


def test_the_best_export_is_the_best_evaluation_and_survives_a_resume(tmp_path, mnist_root):
    """This tiny generator's precision starts at its maximum, 1, so the first evaluation stays
    the best: a later one (or a resumed run that forgot the best) would replace it."""
    run_dir = tmp_path / "run"
    train(run_dir, "train.steps=3")
    found = evaluations(run_dir)
    assert [found[step]["eval/precision"] for step in (1, 2, 3)] == [1.0, 1.0, 1.0]
    best = json.loads((run_dir / "export" / "best" / "best.json").read_text())
    assert (best["metric"], best["step"], best["value"]) == ("precision", 1, 1.0)
    assert best["results"]["frechet_distance"] == found[1]["eval/frechet_distance"]
    assert found[2]["eval/frechet_distance"] != found[1]["eval/frechet_distance"]
    export = run_dir / "export" / "best" / "generator"
    assert json.loads((export / "config.json").read_text())["step"] == 1
    again = evaluate_export(str(export), data_root=str(mnist_root), n=24, batch_size=24)
    assert again["frechet_distance"] == pytest.approx(found[1]["eval/frechet_distance"], rel=1e-5)
    assert again["precision"] == 1.0

    # its checkpoint is written and spared by pruning, beside the newest
    kept = {path.name for path in (run_dir / "checkpoints").iterdir()}
    assert kept == {checkpoint_path(run_dir, 1).name, checkpoint_path(run_dir, 3).name}
    checkpoint = load_file(checkpoint_path(run_dir, 1) / "generator.safetensors")
    exported = load_file(export / "model.safetensors")
    assert checkpoint.keys() == exported.keys()
    assert all(torch.equal(checkpoint[key], exported[key]) for key in exported)

    weights = (export / "model.safetensors").read_bytes()
    train(run_dir, "train.steps=4")  # resumes from step 3; step 4 measures precision 1 again
    assert evaluations(run_dir)[4]["eval/precision"] == 1.0
    assert json.loads((run_dir / "export" / "best" / "best.json").read_text())["step"] == 1
    assert (export / "model.safetensors").read_bytes() == weights
    assert checkpoint_path(run_dir, 1).is_dir()


def test_directions():
    assert lower_is_better("inception_fid") and not lower_is_better("precision")
    assert improves("frechet_distance", 1.0, 2.0) and not improves("frechet_distance", 3.0, 2.0)
    assert improves("coverage", 0.5, 0.4) and improves("recall", 0.1, None)


def test_a_result_the_evaluations_do_not_give_is_refused_with_the_ones_they_give(capsys):
    code = main(["validate", "-q", str(REFERENCE_RECIPE), "eval.every=5", "eval.keep_best=fid"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("gankit: error: eval.keep_best: 'fid' is not a result of this run's")
    assert "frechet_distance (lower is better)" in err and "precision (higher is better)" in err
    assert "inception_fid" not in err
    inception = ["eval.every=5", "eval.metrics=[classifier,inception]", "eval.keep_best=fid"]
    assert main(["validate", "-q", str(REFERENCE_RECIPE), *inception]) == 2
    assert "inception_fid (lower is better)" in capsys.readouterr().err
    good = ["eval.every=5", "eval.keep_best=inception_coverage", "eval.metrics=[inception]"]
    assert main(["validate", "-q", str(REFERENCE_RECIPE), *good]) == 0


def test_data_that_measures_itself_offers_its_own_results(capsys):
    ring = [str(ROOT / "recipes" / "ring_mlp.yaml"), "eval.every=5"]
    assert main(["validate", "-q", *ring, "eval.keep_best=modes_covered"]) == 0
    assert main(["validate", "-q", *ring, "eval.keep_best=precision"]) == 2
    err = capsys.readouterr().err
    assert "name one of: modes_covered (higher is better), high_quality (higher is better)" in err
