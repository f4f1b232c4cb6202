"""Unit tests of the Registry class: registration, build, and the errors people read."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

from gankit import GENERATORS, Generator
from gankit.components.models.dcgan import DCGAN28Generator
from gankit.config.registry import REGISTRIES, NoParams, Registry
from gankit.core.errors import GankitError, RegistryError


class GizmoParams(BaseModel):
    """Parameters of the test component."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(8, gt=0)
    z_dim: int = 16


class Gizmo:
    """A test component that records what it was built with.

    More text that is not part of the summary.
    """

    def __init__(self, *, width: int, z_dim: int, shape: tuple[int, ...]) -> None:
        self.width, self.z_dim, self.shape = width, z_dim, shape


class GizmoGenerator(Generator):
    """A generator that records what it was built with (the global GENERATORS refuses what is
    not a generator)."""

    def __init__(self, *, width: int, z_dim: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.width, self.z_dim, self.shape, self.noise = width, z_dim, shape, "normal"


class First:
    """Registered first under a shared name."""


class Second:
    """Registered second under the same name."""


class Slotted:
    """A built object that cannot carry extra attributes."""

    __slots__ = ("width",)

    def __init__(self, width: int = 1) -> None:
        self.width = width


def origin_of(obj: type) -> str:
    """Where `Registry` says a class comes from: module.qualname (file:line)."""
    line = inspect.getsourcelines(obj)[1]
    return f"{obj.__module__}.{obj.__qualname__} ({inspect.getsourcefile(obj)}:{line})"


@pytest.fixture
def widgets() -> Registry:
    """A fresh registry that the global ones never see."""
    return Registry("widget", "widget")


@pytest.fixture
def gizmos(widgets: Registry) -> Registry:
    """A fresh registry holding 'gizmo' (params), 'dcgan28' and 'mlp' (no params)."""
    widgets.register("gizmo", params=GizmoParams)(Gizmo)
    widgets.register("dcgan28")(First)
    widgets.register("mlp")(Second)
    return widgets


# Registration -----------------------------------------------------------------------------------


def test_register_decorator_records_entry_and_returns_object(widgets: Registry) -> None:
    decorated = widgets.register("gizmo", params=GizmoParams)(Gizmo)

    assert decorated is Gizmo  # the decorator leaves the class usable as before
    assert "gizmo" in widgets
    assert "other" not in widgets
    assert len(widgets) == 1
    entry = widgets.get("gizmo")
    assert entry.name == "gizmo"
    assert entry.builder is Gizmo
    assert issubclass(entry.params, GizmoParams)  # its numbers refuse booleans (test_params.py)
    assert list(entry.params.model_fields) == ["width", "z_dim"]
    assert entry.summary == "A test component that records what it was built with."
    assert entry.origin == origin_of(Gizmo)


def test_register_without_params_uses_noparams(widgets: Registry) -> None:
    @widgets.register("plain")
    def make_plain() -> dict[str, int]:
        return {"made": 1}

    assert widgets.get("plain").params is NoParams
    assert widgets.get("plain").summary == ""
    assert widgets.build({"name": "plain"}) == {"made": 1}
    with pytest.raises(RegistryError, match=r"unknown parameter 'width' for widget 'plain'"):
        widgets.build({"name": "plain", "width": 3})


def test_register_rejects_params_that_are_not_a_pydantic_model(widgets: Registry) -> None:
    with pytest.raises(TypeError, match=r"params for widget 'gizmo' must be a pydantic BaseModel"):
        widgets.register("gizmo", params=dict)  # type: ignore[arg-type]
    assert "gizmo" not in widgets


def test_names_and_iteration_are_sorted(widgets: Registry) -> None:
    for name in ("zeta", "alpha", "mid"):
        widgets.register(name)(Gizmo)
    assert widgets.names() == ["alpha", "mid", "zeta"]
    assert [entry.name for entry in widgets] == ["alpha", "mid", "zeta"]


def test_unregister_removes_and_tolerates_unknown(gizmos: Registry) -> None:
    gizmos.unregister("mlp")
    gizmos.unregister("never-registered")  # no error
    assert gizmos.names() == ["dcgan28", "gizmo"]
    with pytest.raises(RegistryError, match=r"available: dcgan28, gizmo\."):
        gizmos.get("mlp")


def test_global_registries_by_section() -> None:
    assert {section: registry.kind for section, registry in REGISTRIES.items()} == {
        "generator": "generator",
        "discriminator": "discriminator",
        "augment": "augmentation",
        "loss": "loss",
        "schedule": "schedule",
        "data": "dataset",
        "regularizer": "regularizer",
    }
    assert "dcgan28" in REGISTRIES["generator"]
    assert "non_saturating" in REGISTRIES["loss"]


# build ------------------------------------------------------------------------------------------


def test_build_passes_params_and_runtime_and_records_spec(gizmos: Registry) -> None:
    spec = {"name": "gizmo", "width": 3}

    gizmo = gizmos.build(spec, shape=(1, 28, 28))

    assert isinstance(gizmo, Gizmo)
    assert (gizmo.width, gizmo.z_dim, gizmo.shape) == (3, 16, (1, 28, 28))  # default z_dim filled
    assert gizmo.gankit_spec == {
        "kind": "widget",
        "name": "gizmo",
        "params": {"width": 3, "z_dim": 16},
        "runtime": {"shape": [1, 28, 28]},  # tuples become lists so the spec is JSON
    }
    assert spec == {"name": "gizmo", "width": 3}  # the caller's dict is not consumed


def test_build_from_a_recipe_section_ignores_the_sections_own_fields(gizmos: Registry) -> None:
    class GizmoSection(BaseModel):
        name: str
        width: int
        batch_size: int  # a section field (like data.batch_size), not a component parameter

    gizmo = gizmos.build(GizmoSection(name="gizmo", width=5, batch_size=99), shape=(3,))

    assert (gizmo.width, gizmo.z_dim, gizmo.shape) == (5, 16, (3,))
    assert gizmo.gankit_spec["params"] == {"width": 5, "z_dim": 16}
    assert gizmo.gankit_spec["runtime"] == {"shape": [3]}


def test_build_of_a_slotted_object_skips_the_spec(widgets: Registry) -> None:
    widgets.register("slotted")(Slotted)

    built = widgets.build({"name": "slotted"})

    assert isinstance(built, Slotted)
    assert not hasattr(built, "gankit_spec")


def test_build_without_name_lists_the_available_names(gizmos: Registry) -> None:
    with pytest.raises(RegistryError) as caught:
        gizmos.build({"width": 3})
    assert str(caught.value) == "widget needs a 'name'; available: dcgan28, gizmo, mlp"


def test_build_of_a_real_generator_records_image_shape() -> None:
    generator = GENERATORS.build(
        {"name": "dcgan28", "width": 2, "z_dim": 4}, image_shape=(1, 28, 28)
    )

    assert isinstance(generator, DCGAN28Generator)
    assert generator(torch.zeros(2, 4)).shape == (2, 1, 28, 28)
    assert generator.gankit_spec["kind"] == "generator"
    assert generator.gankit_spec["params"]["width"] == 2
    assert generator.gankit_spec["params"]["noise"] == "uniform"
    assert generator.gankit_spec["runtime"] == {"image_shape": [1, 28, 28]}


# Errors -----------------------------------------------------------------------------------------


def test_unknown_name_suggests_close_match_and_lists_available(gizmos: Registry) -> None:
    with pytest.raises(RegistryError) as caught:
        gizmos.get("dcgan82")
    message = str(caught.value)
    assert isinstance(caught.value, GankitError)  # the CLI prints it without a traceback
    assert "unknown widget 'dcgan82' at widget.name; did you mean 'dcgan28'?" in message
    assert "available: dcgan28, gizmo, mlp." in message
    assert "'gankit.plugins' entry point" in message


def test_unknown_name_in_build_gives_the_same_message(gizmos: Registry) -> None:
    with pytest.raises(RegistryError, match=r"did you mean 'gizmo'\? available: dcgan28, gizmo"):
        gizmos.build({"name": "gizmoo"})


def test_unknown_name_without_a_close_match_still_lists_available(gizmos: Registry) -> None:
    with pytest.raises(RegistryError) as caught:
        gizmos.get("transformer")
    message = str(caught.value)
    assert "did you mean" not in message
    assert "unknown widget 'transformer' at widget.name; available: dcgan28, gizmo, mlp." in message


def test_unknown_name_in_an_empty_registry(widgets: Registry) -> None:
    with pytest.raises(
        RegistryError, match=r"unknown widget 'x' at widget\.name; available: \(none\)"
    ):
        widgets.get("x")


def test_unknown_generator_in_the_global_registry_suggests_dcgan28() -> None:
    with pytest.raises(RegistryError) as caught:
        GENERATORS.build({"name": "dcgan82"}, image_shape=(1, 28, 28))
    message = str(caught.value)
    assert "unknown generator 'dcgan82' at generator.name; did you mean 'dcgan28'?" in message
    assert "dcgan28" in message.split("available:")[1]


def test_duplicate_registration_names_both_origins(widgets: Registry) -> None:
    widgets.register("twin")(First)

    with pytest.raises(RegistryError) as caught:
        widgets.register("twin")(Second)

    message = str(caught.value)
    assert "widget 'twin' is registered twice" in message
    assert f"first by {origin_of(First)}, again by {origin_of(Second)}." in message
    assert f"{__name__}.First" in message and f"{__name__}.Second" in message
    assert widgets.get("twin").builder is First  # the first registration is kept


def test_duplicate_of_a_builtin_generator_names_the_builtin() -> None:
    builtin = GENERATORS.get("dcgan28")
    try:
        with pytest.raises(RegistryError) as caught:
            GENERATORS.register("dcgan28")(Second)
        message = str(caught.value)
        assert "generator 'dcgan28' is registered twice" in message
        assert "first by gankit.components.models.dcgan.DCGAN28Generator (" in message
        assert f"again by {origin_of(Second)}" in message
        assert GENERATORS.get("dcgan28") is builtin
    finally:
        if GENERATORS.get("dcgan28") is not builtin:  # only if the library let it through
            GENERATORS.unregister("dcgan28")
            GENERATORS.register("dcgan28", params=builtin.params)(builtin.builder)


@pytest.fixture
def global_test_generator() -> Iterator[str]:
    """A name registered in the global GENERATORS for one test, then removed."""
    name = "test_registry_gizmo"
    GENERATORS.register(name, params=GizmoParams)(GizmoGenerator)
    try:
        yield name
    finally:
        GENERATORS.unregister(name)


def test_global_registration_is_listed_built_and_removable(global_test_generator: str) -> None:
    assert global_test_generator in GENERATORS.names()
    gizmo = GENERATORS.build({"name": global_test_generator, "z_dim": 2}, shape=(1,))
    assert (gizmo.width, gizmo.z_dim) == (8, 2)
    assert gizmo.gankit_spec["kind"] == "generator"

    GENERATORS.unregister(global_test_generator)

    assert global_test_generator not in GENERATORS
    with pytest.raises(RegistryError, match=r"unknown generator 'test_registry_gizmo'"):
        GENERATORS.get(global_test_generator)


def test_unknown_parameter_suggests_the_close_key(gizmos: Registry) -> None:
    with pytest.raises(RegistryError) as caught:
        gizmos.build({"name": "gizmo", "widht": 3}, shape=(1,))
    assert str(caught.value) == (
        "unknown parameter 'widht' for widget 'gizmo' at widget.widht; did you mean 'width'? "
        "valid: width, z_dim"
    )


def test_unknown_parameter_without_a_close_key_lists_valid_keys(gizmos: Registry) -> None:
    with pytest.raises(RegistryError) as caught:
        gizmos.build({"name": "gizmo", "colour": "red"}, shape=(1,))
    message = str(caught.value)
    assert "did you mean" not in message
    assert (
        message
        == "unknown parameter 'colour' for widget 'gizmo' at widget.colour; valid: width, z_dim"
    )


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"width": 0}, "widget.width: Input should be greater than 0"),
        ({"z_dim": "many"}, "widget.z_dim: Input should be a valid integer"),
    ],
)
def test_invalid_parameter_value_is_a_registry_error(
    widgets: Registry, params: dict[str, object], problem: str
) -> None:
    calls: list[dict[str, object]] = []

    @widgets.register("gizmo", params=GizmoParams)
    def make(**kwargs: object) -> dict[str, object]:
        calls.append(kwargs)
        return kwargs

    with pytest.raises(RegistryError) as caught:
        widgets.build({"name": "gizmo", **params})
    message = str(caught.value)
    assert message.startswith("bad parameters for widget 'gizmo': ")
    assert problem in message
    assert calls == []  # nothing is built from invalid parameters


def test_builder_type_error_becomes_a_registry_error(gizmos: Registry) -> None:
    with pytest.raises(RegistryError) as caught:
        gizmos.build({"name": "gizmo"})  # the runtime `shape` is missing
    assert str(caught.value).startswith("cannot build widget 'gizmo': ")
    assert "shape" in str(caught.value)
    assert isinstance(caught.value.__cause__, TypeError)


def test_a_name_that_is_not_a_string_is_a_registry_error(widgets: Registry) -> None:
    with pytest.raises(RegistryError, match=r"unknown widget \['a'\] at widget\.name"):
        widgets.build({"name": ["a"]})


@pytest.mark.parametrize("value", [float("inf"), "inf", "Infinity"])
def test_non_finite_parameters_are_refused_before_building(value: object) -> None:
    with pytest.raises(RegistryError) as caught:
        GENERATORS.build({"name": "dcgan28", "width": 4, "bn_eps": value}, image_shape=(1, 28, 28))
    assert str(caught.value) == (
        "bad parameters for generator 'dcgan28': generator.bn_eps must be a finite number; inf "
        "and nan are not allowed"
    )


def test_non_finite_numbers_inside_parameters_are_refused(widgets: Registry) -> None:
    @widgets.register("pair")
    def pair(betas: tuple[float, float] = (0.5, 0.9)) -> tuple[float, float]:
        return betas

    assert widgets.build({"name": "pair", "betas": [0.1, 0.2]}) == (0.1, 0.2)
    with pytest.raises(RegistryError, match=r"widget\.betas\[1\] must be a finite number"):
        widgets.build({"name": "pair", "betas": [0.1, float("inf")]})
    with pytest.raises(RegistryError, match=r"widget\.betas\[0\], widget\.betas\[1\] must be fin"):
        widgets.build({"name": "pair", "betas": [float("nan"), float("-inf")]})
