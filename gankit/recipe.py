"""Recipes: YAML files validated by pydantic before any work starts.

Each component section is `{name: <registered name>, <that component's params>}`. The recipe model
is assembled from the registries (after plugins load), so a typo in `generator.z_dim` is reported
at that path with the nearest valid key, and `gankit validate --schema` can print a JSON schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from gankit.errors import RecipeError, did_you_mean
from gankit.registry import REGISTRIES, Entry, Registry, load_plugins
from gankit.sections import (
    AdamParams,
    EMASection,
    EvalSection,
    LoaderFields,
    NumbersAreNumbers,
    OptimSection,
    PerfSection,
    RecipeBase,
    Strict,
    TrainSection,
    WandbSection,
)

__all__ = [  # the section models live in gankit.sections and are importable from here too
    "AdamParams",
    "EMASection",
    "EvalSection",
    "LoaderFields",
    "OptimSection",
    "PerfSection",
    "RecipeBase",
    "Strict",
    "TrainSection",
    "WandbSection",
    "dump_recipe",
    "load_recipe",
    "recipe_dict",
    "recipe_model",
    "training_changes",
    "validate_recipe",
]


# Keys that may change between a checkpoint and its resumption without changing the training.
RESUME_SAFE_KEYS = (
    "name",
    "output_dir",
    "data.root",
    "data.download",
    "data.num_workers",
    "train.steps",
    "train.log_every",
    "train.sample_every",
    "train.export_discriminator",
    "train.progress",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.resume",
    "train.allow_recipe_changes",
    "train.on_nan",
    "eval",
    "perf",
    "wandb",
)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def training_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved recipes in a way that changes
    training (so resuming across them would not continue the same run)."""
    old, new = _flatten(before), _flatten(after)
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    safe = tuple(RESUME_SAFE_KEYS)
    return [key for key in changed if not any(key == s or key.startswith(s + ".") for s in safe)]


# Extra fields a section carries beside its component's own parameters.
SECTION_FIELDS: dict[str, type[BaseModel]] = {"data": LoaderFields}
SECTION_ORDER = ("data", "generator", "discriminator", "loss", "schedule", "regularizer")
# Sections a recipe may leave out, and what they then are.
SECTION_DEFAULTS: dict[str, dict[str, Any]] = {"regularizer": {"name": "none"}}


def section_model(registry: Registry, entry: Entry) -> type[BaseModel]:
    """The recipe model of one component: `name` plus its params (plus the section's fields)."""
    bases = (
        entry.params,
        *([SECTION_FIELDS[registry.section]] if registry.section in SECTION_FIELDS else []),
        NumbersAreNumbers,  # for components' own params too, plugins' included
    )
    namespace = {
        "__annotations__": {"name": Literal[entry.name]},  # type: ignore[valid-type]
        "model_config": ConfigDict(extra="forbid", title=f"{registry.kind} '{entry.name}'"),
        "__module__": entry.params.__module__,
        "__doc__": entry.summary or entry.params.__doc__,
    }
    return type(f"{entry.params.__name__}Section", bases, namespace)


@lru_cache(maxsize=8)
def _recipe_model(names: tuple[tuple[str, ...], ...]) -> type[RecipeBase]:
    fields: dict[str, Any] = {}
    for section in SECTION_ORDER:
        registry = REGISTRIES[section]
        members = tuple(section_model(registry, entry) for entry in registry)
        if not members:
            raise RecipeError(f"no {registry.kind} is registered; cannot build recipes")
        annotation = (
            members[0]
            if len(members) == 1
            else Annotated[Union[members], Field(discriminator="name")]  # noqa: UP007
        )
        default = SECTION_DEFAULTS.get(section, ...)
        fields[section] = (annotation, Field(default, validate_default=True))
    return create_model("Recipe", __base__=RecipeBase, **fields)


def recipe_model() -> type[RecipeBase]:
    """The pydantic model of a recipe for the components registered now."""
    load_plugins()
    return _recipe_model(tuple(tuple(REGISTRIES[s].names()) for s in SECTION_ORDER))


class RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (`mixed_precision: no` stays a string)
    and `1e-4` is a float without needing a dot."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith((":bool", ":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """Read a recipe's YAML into a dict, with errors that name the file, line and column."""
    path = Path(path)
    if not path.is_file():
        shipped = Path(__file__).resolve().parent.parent / "recipes"
        hint = f" Recipes shipped with gankit are in {shipped}." if shipped.is_dir() else ""
        raise RecipeError(f"recipe file '{path}' not found (looked at {path.resolve()}).{hint}")
    try:
        raw = yaml.load(path.read_text(), Loader=RecipeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise RecipeError(
            f"recipe '{path}' is not valid YAML{where}: {problem}. Fix the syntax there "
            "(indentation, a missing ':' or an unclosed bracket are the usual causes)."
        ) from None
    if raw is None:
        raise RecipeError(f"recipe '{path}' is empty; start from recipes/mnist_dcgan.yaml")
    if not isinstance(raw, dict):
        raise RecipeError(
            f"recipe '{path}' must be a mapping of sections, got {type(raw).__name__}"
        )
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, str]:
    """Apply `a.b.c=value` overrides to the raw recipe in place (values parsed as YAML).

    Returns {dotted key: override text} so validation errors can name the override responsible.
    """
    applied: dict[str, str] = {}
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise RecipeError(
                f"override {override!r} is not of the form key=value (e.g. train.steps=100)"
            )
        try:
            value = yaml.load(text, Loader=RecipeLoader)
        except yaml.YAMLError:
            raise RecipeError(f"override {override!r}: cannot parse {text!r} as a value") from None
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise RecipeError(
                    f"override {override!r}: {where} is a value ({child!r}), not a section, "
                    f"so it has no key '{parts[depth + 1]}'"
                )
            node = child
        node[parts[-1]] = value
        applied[".".join(parts)] = override
    return applied


def validate_recipe(
    raw: Mapping[str, Any], *, source: str = "recipe", overrides: Mapping[str, str] | None = None
) -> RecipeBase:
    """Validate a raw recipe dict; errors name each bad key's path and what to do."""
    model = recipe_model()
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = [_describe(problem, raw, overrides or {}) for problem in error.errors()]
        raise RecipeError(
            f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in dict.fromkeys(problems))
        ) from None


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> RecipeBase:
    """Read, override and validate a recipe file."""
    raw = read_recipe_file(path)
    applied = apply_overrides(raw, overrides)
    return validate_recipe(raw, source=f"recipe '{path}'", overrides=applied)


def recipe_dict(recipe: RecipeBase) -> dict[str, Any]:
    """The resolved recipe as plain data, every default filled in, `name` first in each section."""
    values = recipe.model_dump(mode="json")
    order = ("name", "output_dir", "mixed_precision", *SECTION_ORDER)
    resolved = {key: values[key] for key in order} | values  # the rest in declaration order
    for section in SECTION_ORDER:
        resolved[section] = {"name": values[section]["name"], **values[section]}
    return resolved


def dump_recipe(recipe: RecipeBase) -> str:
    """The resolved recipe as YAML (see `recipe_dict`)."""
    return yaml.safe_dump(recipe_dict(recipe), sort_keys=False)


def _describe(
    problem: Mapping[str, Any], raw: Mapping[str, Any], overrides: Mapping[str, str]
) -> str:
    loc = _user_loc(problem["loc"], raw)
    path = ".".join(map(str, loc))
    kind, value = problem["type"], problem.get("input")
    section = loc[0] if loc and loc[0] in REGISTRIES else None
    registry = REGISTRIES.get(section) if section else None
    names_component = registry is not None and loc[1:] in ((), ("name",))
    if names_component and kind in ("union_tag_invalid", "literal_error"):
        path = f"{section}.name"
        name = raw[section].get("name") if isinstance(raw.get(section), dict) else value
        message = registry.unknown_message(name)
    elif names_component and kind in ("union_tag_not_found", "missing"):
        path = f"{section}.name"
        message = (
            f"{section}.name is missing; available {registry.plural}: {', '.join(registry.names())}"
        )
    elif kind == "extra_forbidden":
        valid = _fields_at(loc[:-1], raw)
        renamed = overrides.get(f"{section}.name") if section and len(loc) == 2 else None
        from_file = not any(k == path or path.startswith(k + ".") for k in overrides)
        if renamed and from_file:  # the file's other keys belong to the component it named
            message = (
                f"unknown key {path}: {renamed!r} swaps the component but keeps the file's other "
                f"{section} keys; replace the whole section instead, e.g. "
                f"{section}='{{name: {raw[section].get('name')}, ...}}'. Valid keys here: "
                f"{', '.join(valid)}"
            )
        else:
            hint = did_you_mean(str(loc[-1]), valid) or ";"
            message = f"unknown key {path}{hint} valid keys here: {', '.join(valid)}"
    elif kind == "missing":
        message = f"{path} is required but missing"
    elif kind == "value_error":  # a validator's own sentence, without pydantic's prefix
        error = problem["ctx"]["error"]
        message = f"{path}: {error}" if path else str(error)  # a whole-recipe check names its keys
    else:
        message = f"{path}: {problem['msg']} (got {value!r})"
    blamed = (
        [o for k, o in overrides.items() if not path and k in message]  # a whole-recipe check
        or [o for k, o in overrides.items() if k == path]
        or [o for k, o in overrides.items() if path.startswith(k + ".")]
        or [o for k, o in overrides.items() if k.startswith(path + ".")]
    )
    return message + (f" [set by override '{blamed[0]}']" if blamed else "")


def _user_loc(loc: tuple[Any, ...], raw: Mapping[str, Any]) -> tuple[Any, ...]:
    """Drop the discriminator tag pydantic inserts after a component section's key."""
    section = raw.get(loc[0]) if loc and loc[0] in REGISTRIES else None
    if len(loc) > 1 and isinstance(section, dict) and section.get("name") == loc[1]:
        return (loc[0], *loc[2:]) if len(REGISTRIES[loc[0]]) > 1 else tuple(loc)
    return tuple(loc)


def _fields_at(loc: Sequence[Any], raw: Mapping[str, Any]) -> list[str]:
    model: type[BaseModel] | None = recipe_model()
    for depth, part in enumerate(loc):
        if depth == 0 and part in REGISTRIES:
            registry = REGISTRIES[part]
            name = raw.get(part, {}).get("name") if isinstance(raw.get(part), dict) else None
            if name not in registry:
                return []
            model = section_model(registry, registry.get(name))
            continue
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return list(model.model_fields) if model else []
