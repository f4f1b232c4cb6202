"""Registries of named components, and the plugin loader that fills them from other packages.

A component is a class or function whose signature declares its parameters (see `params.py`):

    @GENERATORS.register("dcgan28")
    class DCGAN28Generator(Generator):
        def __init__(self, *, width: Annotated[int, Field(gt=0)] = 64, image_shape=...): ...

`Registry.build(spec, **runtime)` validates the parameters and calls the component with them plus
runtime facts the recipe should not repeat (for example the dataset's image shape): the names in
`Registry.runtime`, which are not parameters. A pydantic model given as `register(params=...)`
replaces the signature as the source of the parameters.

A registry of one of gankit's kinds knows that kind's Protocol (`protocols.py`): `build` gives
what it built the defaults of the optional members it lacks and refuses it when it lacks a
required one.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from gankit.config.params import (
    boolean_for_number,
    non_finite,
    params_from_signature,
    refuse_booleans,
)
from gankit.config.protocols import (
    AugmentationProtocol,
    DatasetProtocol,
    DiscriminatorProtocol,
    GeneratorProtocol,
    LossProtocol,
    RegularizerProtocol,
    ScheduleProtocol,
    adopt,
    members,
)
from gankit.core.errors import PluginError, RegistryError, did_you_mean, shown

PLUGIN_GROUP = "gankit.plugins"
NO_PLUGINS_ENV = "GANKIT_NO_PLUGINS"


class NoParams(BaseModel):
    """Parameters of a component that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, the callable that builds it, and its params model."""

    name: str
    builder: Callable[..., Any]
    params: type[BaseModel]
    origin: str

    @property
    def summary(self) -> str:
        """First line of the component's docstring."""
        doc = inspect.getdoc(self.builder) or ""
        return doc.splitlines()[0] if doc else ""


def _origin(obj: Any) -> str:
    try:
        path = inspect.getsourcefile(obj) or "?"
        line = inspect.getsourcelines(obj)[1]
        return f"{obj.__module__}.{obj.__qualname__} ({path}:{line})"
    except (TypeError, OSError):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    """Named components of one kind (generator, loss, ...), looked up by recipes and exports."""

    def __init__(
        self,
        kind: str,
        section: str,
        runtime: Iterable[str] = (),
        protocol: type | None = None,
    ) -> None:
        self.kind = kind  # what one entry is, in messages: "generator"
        self.section = section  # the recipe key that picks one: "generator"
        self.runtime = tuple(runtime)  # what build() is given besides the params: "image_shape"
        self.protocol = protocol  # what a built one must offer (None: anything)
        self._entries: dict[str, Entry] = {}

    @property
    def plural(self) -> str:
        """The kind in the plural, for messages: "losses", "generators"."""
        return self.kind + ("es" if self.kind.endswith("s") else "s")

    def register(
        self,
        name: str,
        *,
        params: type[BaseModel] | None = None,
        runtime: Iterable[str] = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator that registers a class or function under `name`.

        Its params model is read from its signature: every parameter but `*args`, `**kwargs`,
        the registry's `runtime` names and those in `runtime` here (passed to `build` by its
        caller). A pydantic model given as `params` is used instead. Either way, the model's
        numbers refuse booleans.
        """
        if params is not None and not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise TypeError(f"params for {self.kind} '{name}' must be a pydantic BaseModel class")
        skipped = {*self.runtime, *runtime}

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            origin = _origin(obj)
            if name in self._entries:
                raise RegistryError(
                    f"{self.kind} '{name}' is registered twice: first by "
                    f"{self._entries[name].origin}, again by {origin}. Rename one of them."
                )
            if params is not None:
                model = refuse_booleans(params)
            else:
                model = params_from_signature(obj, skipped)
            self._entries[name] = Entry(name, obj, model or NoParams, origin)
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a component (for tests and interactive sessions)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry:
        """The entry called `name`, or an error listing what exists and the closest match."""
        if not isinstance(name, str):
            raise RegistryError(self.unknown_message(name))
        if name not in self._entries:
            load_plugins()
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: object, where: str | None = None) -> str:
        """The message for an unknown name, as recipes and exports report it (`where`: the
        key that named it, by default `<section>.name`)."""
        known = self.names()
        hint = did_you_mean(str(name), known) if isinstance(name, str) else ""
        return (
            f"unknown {self.kind} {shown(name)} at {where or self.section + '.name'}"
            f"{hint or ';'} "
            f"available: {', '.join(known) or '(none)'}. A component from another package is "
            f"found once that package is installed with a '{PLUGIN_GROUP}' entry point or imported."
        )

    def plugin(self, name: str) -> dict[str, str] | None:
        """Where a component from outside gankit comes from: its module and, when found, the
        installed distribution that provides it and its version (so an export can say what to
        install); None for gankit's own components."""
        module = getattr(self.get(name).builder, "__module__", None) or ""
        top = module.partition(".")[0]
        if not top or top == "gankit":
            return None
        source = {"module": module}
        dist = _distribution(top)
        if dist is not None:
            source.update(distribution=dist.metadata["Name"], version=dist.version)
        return source

    def names(self) -> list[str]:
        """Sorted names of every registered component."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def build(self, spec: Mapping[str, Any] | BaseModel, **runtime: Any) -> Any:
        """Build a component from `{name: ..., **params}` (a dict or a validated recipe section).

        The built object remembers how it was made (`gankit_spec`), so exports can rebuild it.
        """
        raw = spec.model_dump() if isinstance(spec, BaseModel) else dict(spec)
        if "name" not in raw:
            raise RegistryError(
                f"{self.section} needs a 'name'; available: {', '.join(self.names())}"
            )
        entry = self.get(raw.pop("name"))
        fields = entry.params.model_fields
        if isinstance(spec, BaseModel):  # a recipe section: its own keys were validated already
            raw = {key: value for key, value in raw.items() if key in fields}
        for key in raw:
            if key not in fields:
                hint = did_you_mean(key, fields) or ";"
                raise RegistryError(
                    f"unknown parameter {key!r} for {self.kind} '{entry.name}' at "
                    f"{self.section}.{key}{hint} valid: {', '.join(fields)}"
                )
        try:
            params = entry.params.model_validate(raw)
        except ValidationError as error:
            problems = "; ".join(_problem(self.section, e) for e in error.errors())
            raise RegistryError(
                f"bad parameters for {self.kind} '{entry.name}': {problems}"
            ) from None
        infinite = non_finite(params.model_dump(), self.section)
        if infinite:
            raise RegistryError(
                f"bad parameters for {self.kind} '{entry.name}': {', '.join(infinite[:5])} must "
                f"be {'a finite number' if len(infinite) == 1 else 'finite numbers'}; inf and nan "
                "are not allowed"
            )
        try:
            built = entry.builder(**params.model_dump(), **runtime)
        except (ValueError, TypeError) as error:
            raise RegistryError(f"cannot build {self.kind} '{entry.name}': {error}") from error
        self.check(entry, built)
        with contextlib.suppress(AttributeError):  # a slotted object cannot carry it
            built.gankit_spec = {
                "kind": self.kind,
                "name": entry.name,
                "params": params.model_dump(mode="json"),
                "runtime": {k: _jsonable(v) for k, v in runtime.items()},
            }
        return built

    def check(self, entry: Entry, built: Any) -> None:
        """Give `built` the defaults of the optional members of this kind's Protocol that it
        lacks; refuse it, naming what it lacks, when it lacks a required one."""
        if self.protocol is None:
            return
        lacks = adopt(built, self.protocol)
        if lacks:
            required = [name for name, (needed, _) in members(self.protocol).items() if needed]
            raise RegistryError(
                f"{self.kind} '{entry.name}' ({entry.origin}) lacks {', '.join(lacks)}; every "
                f"{self.kind} offers {', '.join(required)} "
                f"(gankit.config.protocols.{self.protocol.__name__})"
            )


def _distribution(top_module: str) -> importlib.metadata.Distribution | None:
    """The installed distribution that provides the top-level module `top_module`: from the
    files distributions list, else from the `gankit.plugins` entry point that names it."""
    names = importlib.metadata.packages_distributions().get(top_module, [])
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.distribution(name)
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        if entry_point.module.partition(".")[0] == top_module and entry_point.dist is not None:
            return entry_point.dist
    return None


def _problem(section: str, error: Mapping[str, Any]) -> str:
    path = ".".join(map(str, (section, *error["loc"])))
    boolean = boolean_for_number(error)
    return f"{path} {boolean}" if boolean else f"{path}: {error['msg']}"


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


GENERATORS = Registry(
    "generator", "generator", runtime=("image_shape",), protocol=GeneratorProtocol
)
DISCRIMINATORS = Registry(
    "discriminator", "discriminator", runtime=("image_shape",), protocol=DiscriminatorProtocol
)
LOSSES = Registry("loss", "loss", protocol=LossProtocol)
SCHEDULES = Registry("schedule", "schedule", protocol=ScheduleProtocol)
DATASETS = Registry("dataset", "data", protocol=DatasetProtocol)
REGULARIZERS = Registry("regularizer", "regularizer", protocol=RegularizerProtocol)
AUGMENTATIONS = Registry("augmentation", "augment", protocol=AugmentationProtocol)
REGISTRIES: dict[str, Registry] = {
    registry.section: registry
    for registry in (
        GENERATORS,
        DISCRIMINATORS,
        LOSSES,
        SCHEDULES,
        DATASETS,
        REGULARIZERS,
        AUGMENTATIONS,
    )
}

_plugins_lock = threading.RLock()  # a plugin may look names up while it is being imported
_plugins_loaded = False
_plugin_failures: list[str] = []


def load_plugins(*, force: bool = False) -> list[str]:
    """Import every module named in the `gankit.plugins` entry-point group, once.

    Importing a plugin module runs its `register` decorators. Set GANKIT_NO_PLUGINS=1 to skip
    autoloading (components can still be registered by importing their module yourself).
    Returns the names of the entry points loaded by this call. Plugins that fail to import are
    reported together, on this call and every later one, while the others stay loaded.
    """
    global _plugins_loaded
    with _plugins_lock:
        if os.environ.get(NO_PLUGINS_ENV, "") not in ("", "0"):
            return []
        if _plugins_loaded and not force:
            if _plugin_failures:
                raise PluginError(" ".join(_plugin_failures))
            return []
        _plugins_loaded = True
        _plugin_failures.clear()
        loaded = []
        for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            try:
                entry_point.load()
            except (Exception, SystemExit) as error:  # a plugin's sys.exit must not end gankit
                dist = entry_point.dist
                source = f"{dist.name} {dist.version}" if dist else "unknown distribution"
                what = (
                    f"called sys.exit({error.code!r}) on import"
                    if isinstance(error, SystemExit)
                    else f"failed to load: {type(error).__name__}: {error}"
                )
                _plugin_failures.append(
                    f"gankit plugin '{entry_point.name}' ({entry_point.value}, from {source}) "
                    f"{what}. Fix or uninstall that package, or set {NO_PLUGINS_ENV}=1 to skip "
                    "plugin autoloading."
                )
                cause = error
                continue
            loaded.append(entry_point.name)
        if _plugin_failures:
            raise PluginError(" ".join(_plugin_failures)) from cause
        return loaded
