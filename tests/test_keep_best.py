"""`eval.keep_best`: each evaluation that beats the best so far is exported to export/best/, the
best survives a resume, and a result the evaluations do not give is refused before training."""

from __future__ import annotations

import json

import pytest

import gankit
from gankit.cli import main
from gankit.config.recipe import load_recipe
from gankit.metrics.best import improves, lower_is_better
from gankit.metrics.evaluators import evaluate_export
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

EVAL = ["eval.every=1", "eval.n=24", "eval.batch_size=24", "eval.keep_best=frechet_distance"]
SMALL = [*TINY, "data.subset=64", "train.log_every=1", "train.sample_every=100", *EVAL]


def train(run_dir, *overrides):
    recipe = load_recipe(REFERENCE_RECIPE, [*SMALL, f"output_dir={run_dir}", *overrides])
    Trainer(recipe).fit()


def evaluations(run_dir) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r["eval/frechet_distance"] for r in records if "eval/frechet_distance" in r}


def test_the_best_export_is_the_best_evaluation_and_survives_a_resume(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    train(run_dir, "train.steps=3", "train.checkpoint_every=2")
    found = evaluations(run_dir)
    best_step = min(found, key=found.get)
    best = json.loads((run_dir / "export" / "best" / "best.json").read_text())
    assert (best["metric"], best["step"], best["value"]) == (
        "frechet_distance",
        best_step,
        found[best_step],
    )
    export = run_dir / "export" / "best" / "generator"
    assert json.loads((export / "config.json").read_text())["step"] == best_step
    again = evaluate_export(str(export), data_root=str(mnist_root), n=24, batch_size=24)
    assert again["frechet_distance"] == pytest.approx(found[best_step], rel=1e-5)
    assert gankit.load_generator(export).z_dim == 100

    # A better best than any to come (as if set after the last checkpoint) is kept on resume.
    best["value"] = 0.0
    (run_dir / "export" / "best" / "best.json").write_text(json.dumps(best))
    weights = (export / "model.safetensors").read_bytes()
    train(run_dir, "train.steps=4", "train.checkpoint_every=2")
    assert len(evaluations(run_dir)) == 4
    assert json.loads((run_dir / "export" / "best" / "best.json").read_text())["value"] == 0.0
    assert (export / "model.safetensors").read_bytes() == weights


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
