"""The model card (README.md) of an export, as the Hugging Face Hub reads it: a YAML metadata
header (library, tags, dataset) and a body saying what the model is, how it was trained, how it
scores and how to load it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gankit.components.models.base import Generator, grid_labels
from gankit.outputs.files import render_samples

CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
# Recipe sections a card lists, and the keys left out of them (paths on the training machine).
CARD_SECTIONS = (
    "data",
    "generator",
    "discriminator",
    "loss",
    "schedule",
    "regularizer",
    "regularizers",
    "augment",
    "optim",
    "ema",
)
PRIVATE_KEYS = {"root", "data_root", "output_dir"}


def recipe_summary(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a resolved recipe a card shows: the components and their parameters, the
    optimizers, the EMA and the length of training; no local paths."""
    summary: dict[str, Any] = {"name": recipe.get("name")}
    for section in CARD_SECTIONS:
        value = recipe.get(section)
        if value in (None, [], {}) or (isinstance(value, dict) and value.get("name") == "none"):
            continue
        summary[section] = _without_paths(value)
    train = recipe.get("train", {})
    summary["train"] = {key: train[key] for key in ("steps", "seed") if key in train}
    if recipe.get("mixed_precision"):
        summary["mixed_precision"] = recipe["mixed_precision"]
    return summary


def _without_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k not in PRIVATE_KEYS}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


def metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """The card's YAML header, in huggingface_hub's ModelCardData fields."""
    generator = config["kind"] == "generator"
    shape = config.get("runtime", {}).get("image_shape") or []
    images = len(shape) == 3
    conditional = bool(config.get("params", {}).get("num_classes"))
    tags = ["gankit", "gan", config["kind"], config["name"]]
    if images:
        tags.insert(2, "image-generation")
    if conditional:
        tags.append("class-conditional")
    header: dict[str, Any] = {"library_name": "gankit", "tags": tags}
    if config.get("dataset"):
        header["datasets"] = [config["dataset"]]
    if generator and images:
        header["pipeline_tag"] = "unconditional-image-generation"
    return header


def model_card(
    config: Mapping[str, Any],
    *,
    recipe: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    samples: bool = False,
) -> str:
    """README.md of an export from its config.json, with the recipe summary (`recipe_summary`),
    the latest evaluation `metrics` and, with `samples`, the sample grid written beside it."""
    kind, name = config["kind"], config["name"]
    title = f"{recipe['name']}: {kind}" if recipe and recipe.get("name") else f"gankit {kind}"
    facts = [f"a {kind} (`{name}`) trained with [gankit](https://pypi.org/project/gankit/)"]
    if config.get("dataset"):
        facts.append(f"on `{config['dataset']}`")
    step = config.get("step")
    if step is not None:
        facts.append(f"for {step} step{'' if step == 1 else 's'}")
    if config.get("ema"):
        weights = f"an exponential moving average (EMA) of the {kind}'s weights over training"
    elif step is not None:
        weights = f"the {kind}'s weights at step {step}"
    else:
        weights = f"the trained {kind}'s weights"
    lines = [
        "---",
        yaml.safe_dump(metadata(config), sort_keys=False).rstrip(),
        "---",
        "",
        f"# {title}",
        "",
        f"This is {' '.join(facts)}. The weights are {weights}.",
        "",
    ]
    if samples:
        lines += ["## Samples", "", f"![samples drawn with seed 0]({SAMPLES_FILE})", ""]
    lines += _usage(kind)
    lines += _model(config)
    if recipe:
        lines += ["## Training recipe", "", "```yaml", _yaml(recipe).rstrip(), "```", ""]
    if metrics:
        lines += ["## Evaluation", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| `{key}` | {_number(value)} |" for key, value in metrics.items()]
        lines.append("")
    lines += [
        "## Files",
        "",
        "- `config.json`: the component, its parameters, the step, the dataset, whether the "
        "weights are an EMA, and the SHA-256 of the weights (checked on every load)",
        "- `model.safetensors`: the weights (loading never unpickles)",
        *([f"- `{SAMPLES_FILE}`: samples drawn with seed 0"] if samples else []),
        "",
    ]
    return "\n".join(lines)


def _usage(kind: str) -> list[str]:
    loader = "load_generator" if kind == "generator" else "load_model"
    code = [
        "import gankit",
        "",
        f'model = gankit.{loader}("user/repo")  # this repo\'s id, or the export folder',
    ]
    if kind == "generator":
        code[-1] = code[-1].replace("model =", "G =")
        code.append("images = G.sample(16, seed=0)  # float32 (16, C, H, W) in [-1, 1]")
    lines = ["## How to use", "", "```python", *code, "```", ""]
    if kind == "generator":
        lines += ["```bash", "gankit sample user/repo --n 64 --out grid.png", "```", ""]
    return lines


def _model(config: Mapping[str, Any]) -> list[str]:
    lines = ["## Model", "", f"`{config['kind']}: {config['name']}`", "", "| parameter | value |"]
    lines.append("| --- | --- |")
    for key, value in {**config.get("params", {}), **config.get("runtime", {})}.items():
        lines.append(f"| `{key}` | `{json.dumps(value)}` |")
    version = config.get("gankit_version")
    if version:
        lines += ["", f"Exported by gankit {version} (export format {config['format_version']})."]
    return [*lines, ""]


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=None, width=100)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else f"`{json.dumps(value)}`"


def write_samples(model: Any, path: Path, seed: int = 0) -> bool:
    """Write a generator's samples (a grid, or a scatter plot of 2-D points) to `path`; False
    for other models and for samples that cannot be drawn."""
    if not isinstance(model, Generator):
        return False
    import imageio.v3 as iio

    n = 64
    labels = grid_labels(n, model.num_classes).tolist() if model.num_classes else None
    try:
        samples = model.sample(n, seed=seed, labels=labels)
        picture = render_samples(samples, labels=labels)
    except (ValueError, RuntimeError):  # a sample shape with no picture, an op with no kernel
        return False
    iio.imwrite(path, picture, extension=".png")
    return True
