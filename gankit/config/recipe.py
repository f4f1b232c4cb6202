"""Recipes: YAML files validated by pydantic before any work starts.

Each component section is `{name: <registered name>, <that component's params>}`. The recipe model
is assembled from the registries (after plugins load), so a typo in `generator.z_dim` is reported
at that path with the nearest valid key, and `gankit validate --schema` can print a JSON schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from gankit.config.params import boolean_for_number
from gankit.config.recipe_file import (
    RecipeLoader,
    check_bounds,
    parse_override_value,
    read_recipe_file,
)
from gankit.config.registry import REGISTRIES, Entry, Registry, load_plugins
from gankit.config.sections import (
    AdamParams,
    EMASection,
    EvalSection,
    FiniteInside,
    LoaderFields,
    OptimSection,
    PerfSection,
    RecipeBase,
    Strict,
    TrackingSection,
    TrainSection,
    WandbSection,
)
from gankit.config.value_schedule import NUMBER, SCHEDULE
from gankit.core.errors import RecipeError, cut, did_you_mean, shown

__all__ = [  # the section models (config.sections) and the reader (config.recipe_file) too
    "AdamParams",
    "EMASection",
    "EvalSection",
    "LoaderFields",
    "OptimSection",
    "PerfSection",
    "RecipeBase",
    "RecipeLoader",
    "Strict",
    "TrackingSection",
    "TrainSection",
    "WandbSection",
    "dump_recipe",
    "load_recipe",
    "read_recipe_file",
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
    "train.kimg",
    "train.max_minutes",
    "train.log_every",
    "train.sample_every",
    "train.export_discriminator",
    "train.progress",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.resume",
    "train.allow_recipe_changes",
    "train.trust_pickled_checkpoint",
    "train.init_from",  # read only when a run starts, never on resume
    "train.on_nan",
    "eval",
    "perf",
    "tracking",
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
SECTION_ORDER = (
    "data",
    "generator",
    "discriminator",
    "loss",
    "schedule",
    "regularizer",
    "augment",
)
# Sections a recipe may leave out, and what they then are.
SECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "regularizer": {"name": "none"},
    "augment": {"name": "none"},
}


def section_model(registry: Registry, entry: Entry) -> type[BaseModel]:
    """The recipe model of one component: `name` plus its params (plus the section's fields)."""
    bases = (
        entry.params,
        *([SECTION_FIELDS[registry.section]] if registry.section in SECTION_FIELDS else []),
        FiniteInside,  # for components' own params too, plugins' included
    )
    namespace = {
        "__annotations__": {"name": Literal[entry.name]},  # type: ignore[valid-type]
        "model_config": ConfigDict(
            extra="forbid", allow_inf_nan=False, title=f"{registry.kind} '{entry.name}'"
        ),
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
        if section == "regularizer":  # several at once, e.g. R1 on D and path length on G
            fields["regularizers"] = (
                list[annotation],  # type: ignore[valid-type]
                Field(default_factory=list, description="regularizers besides `regularizer`"),
            )
    return create_model("Recipe", __base__=RecipeBase, **fields)


def recipe_model() -> type[RecipeBase]:
    """The pydantic model of a recipe for the components registered now."""
    load_plugins()
    return _recipe_model(tuple(tuple(REGISTRIES[s].names()) for s in SECTION_ORDER))


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
                f"override {shown(override)} is not of the form key=value (e.g. train.steps=100)"
            )
        value = parse_override_value(text, override, ".".join(parts))
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise RecipeError(
                    f"override {shown(override)}: {cut(where)} is a value ({shown(child)}), not "
                    f"a section, so it has no key {shown(parts[depth + 1])}"
                )
            node = child
        node[parts[-1]] = value
        applied[".".join(parts)] = override
    return applied


def validate_recipe(
    raw: Mapping[str, Any], *, source: str = "recipe", overrides: Mapping[str, str] | None = None
) -> RecipeBase:
    """Validate a raw recipe dict; errors name each bad key's path and what to do."""
    check_bounds(raw, source)
    model = recipe_model()
    try:
        return model.model_validate(raw)
    except RecursionError:
        raise RecipeError(f"{source} is nested too deeply to validate") from None
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
    order = ("name", "output_dir", "mixed_precision", *SECTION_ORDER, "regularizers")
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
    key = ".".join(map(str, loc))
    path = ".".join(cut(str(part), 40) for part in loc)
    kind, value = problem["type"], problem.get("input")
    section = loc[0] if loc and loc[0] in REGISTRIES else None
    registry = REGISTRIES.get(section) if section else None
    names_component = registry is not None and loc[1:] in ((), ("name",))
    if names_component and kind in ("union_tag_invalid", "literal_error"):
        key = path = f"{section}.name"
        name = raw[section].get("name") if isinstance(raw.get(section), dict) else value
        message = registry.unknown_message(_Echo.of(name))
    elif loc[:1] == ("regularizers",) and len(loc) == 2 and kind == "union_tag_invalid":
        key = f"{path}.name"
        name = value.get("name") if isinstance(value, dict) else value
        message = REGISTRIES["regularizer"].unknown_message(_Echo.of(name), key)
    elif names_component and kind in ("union_tag_not_found", "missing"):
        key = path = f"{section}.name"
        message = (
            f"{section}.name is missing; available {registry.plural}: {', '.join(registry.names())}"
        )
    elif kind == "extra_forbidden":
        valid = _fields_at(loc[:-1], raw)
        renamed = overrides.get(f"{section}.name") if section and len(loc) == 2 else None
        from_file = not any(k == key or key.startswith(k + ".") for k in overrides)
        if renamed and from_file:  # the file's other keys belong to the component it named
            message = (
                f"unknown key {path}: {shown(renamed)} swaps the component but keeps the file's "
                f"other {section} keys; replace the whole section instead, e.g. "
                f"{section}='{{name: {cut(str(raw[section].get('name')))}, ...}}'. Valid keys "
                f"here: {', '.join(valid)}"
            )
        else:
            hint = did_you_mean(cut(str(loc[-1])), valid) or ";"
            message = f"unknown key {path}{hint} valid keys here: {', '.join(valid)}"
    elif kind == "missing":
        message = f"{path} is required but missing"
    elif boolean := boolean_for_number(problem):
        message = f"{path} {boolean}"
    elif kind == "value_error":  # a validator's own sentence, without pydantic's prefix
        error = problem["ctx"]["error"]
        message = f"{path}: {error}" if path else str(error)  # a whole-recipe check names its keys
    elif kind == "finite_number":
        message = (
            f"{path} must be a finite number, not {shown(value)}; .inf and .nan are not allowed"
        )
    else:
        message = f"{path}: {problem['msg']} (got {shown(value)})"
    blamed = (
        [o for k, o in overrides.items() if not key and k in message]  # a whole-recipe check
        or [o for k, o in overrides.items() if k == key]
        or [o for k, o in overrides.items() if key.startswith(k + ".")]
        or [o for k, o in overrides.items() if k.startswith(key + ".")]
    )
    return message + (f" [set by override {shown(blamed[0])}]" if blamed else "")


class _Echo:
    """A user's value in a message that formats it with !r: its repr, cut short."""

    def __init__(self, value: Any) -> None:
        self.text = shown(value)

    def __repr__(self) -> str:
        return self.text

    @classmethod
    def of(cls, value: Any) -> Any:
        """A short string as it is (so a typo still gets its suggestion), anything else cut."""
        return value if isinstance(value, str) and repr(value) == shown(value) else cls(value)


def _user_loc(loc: tuple[Any, ...], raw: Mapping[str, Any]) -> tuple[Any, ...]:
    """Drop the discriminator tags pydantic inserts: after a component section's key, and a
    schedulable value's form."""
    loc = tuple(part for part in loc if part not in (NUMBER, SCHEDULE))
    if len(loc) > 2 and loc[0] == "regularizers" and isinstance(loc[1], int):
        items = raw.get("regularizers")
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        if isinstance(item, dict) and item.get("name") == loc[2]:
            return (*loc[:2], *loc[3:])  # the discriminator tag pydantic inserts
    section = raw.get(loc[0]) if loc and loc[0] in REGISTRIES else None
    if len(loc) > 1 and isinstance(section, dict) and section.get("name") == loc[1]:
        return (loc[0], *loc[2:]) if len(REGISTRIES[loc[0]]) > 1 else tuple(loc)
    return tuple(loc)


def _fields_at(loc: Sequence[Any], raw: Mapping[str, Any]) -> list[str]:
    model: type[BaseModel] | None = recipe_model()
    if len(loc) == 2 and loc[0] == "regularizers" and isinstance(loc[1], int):
        items, registry = raw.get("regularizers"), REGISTRIES["regularizer"]
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        name = item.get("name") if isinstance(item, dict) else None
        return (
            list(section_model(registry, registry.get(name)).model_fields)
            if name in registry
            else []
        )
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
