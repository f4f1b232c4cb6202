"""`eval.keep_best`: the evaluation results that can pick a run's best export, which way each is
better, and the check of the setting against what a run's evaluations give."""

from __future__ import annotations

import typing
from typing import Any

from gankit.config.registry import DATASETS
from gankit.core.errors import GankitError, shown
from gankit.outputs.tracking import best_summary

MANIFOLD = ("precision", "recall", "density", "coverage")
CLASSIFIER = (
    "frechet_distance",
    "classifier_score",
    "classes_covered",
    "coverage_tv",
    "coverage_kl",
    *MANIFOLD,
)
CONDITIONAL = ("label_accuracy",)
INCEPTION = ("inception_fid", "inception_kid", *(f"inception_{name}" for name in MANIFOLD))
OWN_EVALUATOR = ("modes_covered", "high_quality")  # datasets that bring their own (ring)


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is the better one: distances (Frechet, KID, the
    class histogram's TV and KL), as the trackers' best summaries say; else a larger one."""
    return best_summary(f"eval/{metric}") == "min"


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` beats `best` (None: nothing yet) for `metric`."""
    if best is None:
        return True
    return value < best if lower_is_better(metric) else value > best


def brings_evaluator(dataset: str) -> bool:
    """Whether the registered dataset measures itself (its items have an `evaluator`)."""
    if dataset not in DATASETS:
        return False
    try:
        returned = typing.get_type_hints(DATASETS.get(dataset).builder).get("return")
    except (NameError, TypeError):  # a plugin's annotations that do not resolve
        return False
    return isinstance(returned, type) and hasattr(returned, "evaluator")


def available(dataset: str, metrics: list[str], conditional: bool) -> list[str]:
    """The results an evaluation gives that `eval.keep_best` can name."""
    if brings_evaluator(dataset):
        return list(OWN_EVALUATOR)
    names: list[str] = []
    if "classifier" in metrics:
        names += [*CLASSIFIER, *(CONDITIONAL if conditional else ())]
    if "inception" in metrics:
        names += INCEPTION
    return names


def check_keep_best(recipe: Any) -> None:
    """Refuse an `eval.keep_best` that the run's evaluations do not give: one line that lists
    what they give."""
    settings = recipe.eval
    if settings.keep_best is None:
        return
    conditional = bool(getattr(recipe.generator, "num_classes", 0))
    names = available(recipe.data.name, settings.metrics, conditional)
    if settings.keep_best not in names:
        listed = ", ".join(
            f"{name} ({'lower' if lower_is_better(name) else 'higher'} is better)" for name in names
        )
        raise GankitError(
            f"eval.keep_best: {shown(settings.keep_best)} is not a result of this run's "
            f"evaluations (data '{recipe.data.name}', eval.metrics {settings.metrics}); "
            f"name one of: {listed}"
        )
