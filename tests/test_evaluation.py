"""MNIST metrics on real data: real vs real scores near perfect, noise and one digit far worse."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch

import gankit
from gankit.cli import main
from gankit.config.recipe import load_recipe
from gankit.core.errors import GankitError
from gankit.metrics import classifier
from gankit.metrics.evaluation import MNISTMetrics, evaluate, reference_images
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

REFERENCE_FEATURES: dict[tuple, torch.Tensor] = {}  # the classifier's, by reference tensor


@pytest.fixture(scope="module")
def test_images(mnist_root) -> torch.Tensor:
    return reference_images(str(mnist_root), "test")


@pytest.fixture(scope="module")
def train_images(mnist_root) -> torch.Tensor:
    return reference_images(str(mnist_root), "train")[:3000]


def score(reference: torch.Tensor, generated: torch.Tensor) -> dict:
    """Every metric of `generated` against `reference`, the reference's features made once."""
    metrics = MNISTMetrics()
    key = (reference.data_ptr(), reference.shape)
    if key not in REFERENCE_FEATURES:
        for batch in reference.split(1000):
            metrics.update_real(batch)
        REFERENCE_FEATURES[key] = torch.cat(metrics.real)
    metrics.set_real(REFERENCE_FEATURES[key])
    for batch in generated.split(1000):
        metrics.update_generated(batch)
    return metrics.compute()


def test_the_shipped_classifier_is_the_documented_one(test_images, mnist_root):
    card = classifier.card()
    assert card["sha256"] == classifier.weights_sha256()
    labels = gankit.data.mnist(str(mnist_root), download=False, split="test").tensors[1]
    model = classifier.load_classifier()
    with torch.no_grad():
        predicted = torch.cat([model(batch).argmax(1) for batch in test_images.split(2000)])
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.99 and accuracy == pytest.approx(card["test_accuracy"], abs=1e-4)


def test_real_digits_score_near_perfect_and_noise_or_one_digit_far_worse(
    test_images, train_images, mnist_root
):
    real = score(test_images, train_images)
    assert real["classes_covered"] == 10 and real["coverage_tv"] < 0.05
    assert real["classifier_score"] > 8.0  # near the maximum of 10 for confident, balanced classes

    noise = score(
        test_images, torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    )
    labels = gankit.data.mnist(str(mnist_root), download=False, split="train").tensors[1][:3000]
    sevens = train_images[labels == 7][:1].repeat(1000, 1, 1, 1)
    one_digit = score(test_images, sevens)

    for bad in (noise, one_digit):
        assert bad["frechet_distance"] > 20 * max(real["frechet_distance"], 0.05)
        assert bad["classifier_score"] < real["classifier_score"] / 3
        assert bad["coverage_tv"] > 0.5
    assert one_digit["classes_covered"] == 1 and one_digit["class_histogram"][7] == 1.0


def test_evaluate_records_its_protocol(test_images, train_images):
    pool = train_images

    def generate(count: int, rng: torch.Generator) -> torch.Tensor:
        return pool[torch.randint(len(pool), (count,), generator=rng)]

    results = evaluate(generate, test_images, n=1200, seed=3, batch_size=500)
    protocol = results["protocol"]
    assert protocol["generated_samples"] == 1200 and protocol["reference_samples"] == 10_000
    assert protocol["extractor_weights_sha256"] == classifier.weights_sha256()
    assert protocol["reference"].startswith("MNIST test split") and protocol["seed"] == 3
    assert results == evaluate(generate, test_images, n=1200, seed=3, batch_size=500)


def run_eval(
    tmp_path, mnist_root, *options: str, in_process: bool = False
) -> subprocess.CompletedProcess:
    """`gankit eval` of a freshly exported tiny generator, as a command (or, for refusals that
    need no interpreter of their own, through `main` in this process)."""
    generator = gankit.GENERATORS.build({"name": "dcgan28", "width": 4}, image_shape=(1, 28, 28))
    gankit.save_model(generator, tmp_path / "generator", step=0)
    arguments = ["eval", str(tmp_path / "generator"), "--data-root", str(mnist_root), *options]
    if not in_process:
        command = [sys.executable, "-m", "gankit.cli", *arguments]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(arguments)
    return subprocess.CompletedProcess(arguments, code, out.getvalue(), err.getvalue())


def test_eval_command_writes_json_for_an_export(tmp_path, mnist_root):
    out = tmp_path / "eval.json"
    result = run_eval(tmp_path, mnist_root, "--n", "500", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads(out.read_text())
    assert written == json.loads(result.stdout)
    assert {
        "frechet_distance",
        "classifier_score",
        "class_histogram",
        "coverage_tv",
    } <= written.keys()
    assert written["protocol"]["generator"]["step"] == 0
    assert written["protocol"]["generated_samples"] == 500


def test_eval_never_overwrites_out_without_force(tmp_path, mnist_root, capsys):
    generator = gankit.GENERATORS.build({"name": "dcgan28", "width": 4}, image_shape=(1, 28, 28))
    export = gankit.save_model(generator, tmp_path / "generator", step=0)
    out = tmp_path / "eval.json"
    out.write_text("my notes")
    argv = ["eval", str(export), "--data-root", str(mnist_root), "--n", "20", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--out {out} already exists" in err and "--force" in err and err.count("\n") == 1
    assert out.read_text() == "my notes"
    # --force gets past the check (to the data, missing here: a failed eval writes nothing)
    (tmp_path / "empty").mkdir()
    assert main([*argv, "--force", "--data-root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "MNIST files missing" in err and "already exists" not in err
    assert out.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "eval.json", "generator"]


def test_training_evaluates_every_n_steps(tmp_path, mnist_root):
    recipe = load_recipe(
        REFERENCE_RECIPE,
        [*TINY, "train.steps=4", "eval.every=2", "eval.n=200", f"output_dir={tmp_path}"],
    )
    Trainer(recipe).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "eval/frechet_distance" in r]
    assert [r["step"] for r in evaluated] == [2, 4]
    assert all(r["eval/frechet_distance"] > 0 for r in evaluated)


def test_inception_metrics_say_what_is_missing(tmp_path, mnist_root):
    missing = tmp_path / "pt_inception.pth"
    options = ["--n", "100", "--inception-weights", str(missing)]
    result = run_eval(tmp_path, mnist_root, *options, in_process=True)
    assert result.returncode == 2
    assert f"Inception weights not found at '{missing}'" in result.stderr
    assert "Traceback" not in result.stderr


def test_other_data_without_a_classifier_is_refused_before_training(tmp_path, mnist_root, capsys):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"  # MNIST's files in Fashion-MNIST's place
    raw.mkdir(parents=True)
    for source in (mnist_root / "MNIST" / "raw").glob("*-ubyte"):
        (raw / source.name).symlink_to(source)
    fashion = [*TINY, "data.name=fashion_mnist", f"data.root={tmp_path / 'data'}"]
    fashion += ["train.steps=2", "eval.every=2", "eval.n=200", f"output_dir={tmp_path / 'run'}"]
    validate = [sys.executable, "-m", "gankit.cli", "validate", "-q", str(REFERENCE_RECIPE)]
    result = subprocess.run([*validate, *fashion], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("gankit: error: eval.every: the classifier metrics need a ")
    assert "trained on 'fashion_mnist'" in result.stderr
    assert "gankit classifier train fashion_mnist" in result.stderr
    with pytest.raises(GankitError, match=r"^eval\.every: the classifier metrics need"):
        Trainer(load_recipe(REFERENCE_RECIPE, fashion))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any training

    # the digit classifier named on purpose: it measures the samples, and says so
    shipped = f"eval.classifier={classifier.WEIGHTS}"
    Trainer(load_recipe(REFERENCE_RECIPE, [*fashion, shipped])).fit()
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert "eval/frechet_distance" in json.loads(records[-1])
    export = tmp_path / "run" / "export" / "generator"
    config = json.loads((export / "config.json").read_text())
    assert config["dataset"] == "fashion_mnist" and config["data"]["root"] == str(tmp_path / "data")
    command = ["eval", str(export), "--n", "100"]
    capsys.readouterr()
    assert main(command) == 2
    assert "--classifier: the classifier metrics need" in capsys.readouterr().err
    assert main([*command, "--classifier", str(classifier.WEIGHTS)]) == 0
    result = capsys.readouterr()
    assert "the classifier was trained on 'mnist', the generator on 'fashion_mnist'" in result.err
    written = json.loads(result.out)
    assert written["protocol"]["generator"]["dataset"] == "fashion_mnist"
    assert written["protocol"]["reference"].startswith("fashion_mnist test split, 10000 images")


def test_eval_command_names_its_own_option_for_a_missing_folder(tmp_path, mnist_root):
    result = run_eval(tmp_path, tmp_path / "nowhere", "--n", "100", in_process=True)
    assert result.returncode == 2
    assert "MNIST files missing in" in result.stderr
    assert "point --data-root at the folder that holds MNIST/raw/" in result.stderr
    assert "data.download" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (
            '"num_classes": true',
            r"incomplete \(num_classes must be an integer from 2 to .*, got True",
        ),
        (
            '"image_shape": [1, 28, true]',
            r"incomplete \(image_shape must be \[channels, .*\[1, 28, True\]",
        ),
        ('"image_shape": [1, 28, 1e9]', r"image_shape must be \[channels, height, width\] .* got"),
        ('"num_classes": 1' + "0" * 5000, r"holds an integer of 5001 digits"),
        ('"num_classes": 10, "num_classes": 10', r"holds the key 'num_classes' given twice"),
        ('"num_classes": NaN', r"holds NaN, which is not a JSON number"),
    ],
)
def test_a_bad_classifier_card_is_one_clear_error(tmp_path, change, found):
    weights = tmp_path / "digits.safetensors"
    weights.write_bytes(classifier.WEIGHTS.read_bytes())
    card = json.loads(classifier.CARD.read_text())
    assert classifier.read_card(classifier.WEIGHTS) == card
    key = change.split('"')[1]
    del card[key]
    text = json.dumps(card)
    (tmp_path / "digits.json").write_text("{" + change + ", " + text[1:])
    with pytest.raises(GankitError, match=rf"^--classifier: .*{found}.*; train one with"):
        classifier.read_card(weights)


def test_a_classifier_card_that_is_a_link_is_refused(tmp_path):
    weights = tmp_path / "digits.safetensors"
    weights.write_bytes(classifier.WEIGHTS.read_bytes())
    (tmp_path / "digits.json").symlink_to(classifier.CARD)
    with pytest.raises(GankitError, match=r"classifier card .*digits\.json is a symbolic link"):
        classifier.read_card(weights)
    (tmp_path / "digits.json").unlink()
    with pytest.raises(GankitError, match=r"has no card digits\.json beside it"):
        classifier.read_card(weights)
