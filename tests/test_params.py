"""Components whose signature declares their parameters, plugin params models, and numbers that
refuse true and false wherever a recipe or a build gives them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gankit.cli import main
from gankit.config.params import boolean_for_number
from gankit.config.recipe import load_recipe, section_model
from gankit.config.registry import LOSSES, REGISTRIES, NoParams, Registry
from gankit.config.sections import (
    AdamParams,
    EMASection,
    EvalSection,
    LoaderFields,
    PerfSection,
    TrainSection,
    WandbSection,
)
from gankit.core.errors import RecipeError, RegistryError

from conftest import REFERENCE_RECIPE


class Margin:
    """A margin loss whose signature declares its parameters."""

    def __init__(
        self,
        margin: Annotated[float, Field(gt=0, description="hinge margin")] = 1.0,
        steps: Annotated[int, Field(ge=1, le=8, description="how many")] = 2,
        betas: tuple[float, float] = (0.5, 0.9),
        size: int | None = None,
        channels: Literal[1, 3] = 3,
        label: str = "m",
    ) -> None:
        self.values = {
            "margin": margin,
            "steps": steps,
            "betas": betas,
            "size": size,
            "channels": channels,
            "label": label,
        }


class PluginParams(BaseModel):
    """A plugin's own params model, given with params=."""

    model_config = ConfigDict(extra="forbid")
    margin: float = Field(1.0, gt=0, description="hinge margin")
    steps: int | None = None
    betas: tuple[float, float] = (0.5, 0.9)
    channels: Literal[1, 3] = 3


class PluginLoss(dict):
    """What `make_plugin` builds: its params, with a loss's methods (LOSSES refuses what is
    not a loss)."""

    def discriminator(self, logits: Any) -> dict[str, Any]:
        return {}

    def generator(self, logits: Any) -> dict[str, Any]:
        return {}


def make_plugin(**params: Any) -> dict[str, Any]:
    """A component built from PluginParams."""
    return PluginLoss(params)


@pytest.fixture
def widgets() -> Registry:
    """A fresh registry that passes `image_shape` at build time, like GENERATORS."""
    return Registry("widget", "widget", runtime=("image_shape",))


@pytest.fixture
def margin_loss() -> Iterator[str]:
    """`Margin` and a params= plugin registered as losses while a test runs."""
    LOSSES.register("margin_test")(Margin)
    LOSSES.register("plugin_test", params=PluginParams)(make_plugin)
    try:
        yield "margin_test"
    finally:
        LOSSES.unregister("margin_test")
        LOSSES.unregister("plugin_test")


def number_error_paths(model: type[BaseModel], values: dict[str, Any]) -> set[tuple[Any, ...]]:
    """The paths at which validating `values` refuses true or false for a number."""
    try:
        model.model_validate(values)
    except ValidationError as error:
        return {tuple(e["loc"]) for e in error.errors() if boolean_for_number(e)}
    return set()


# The params model read from a signature -------------------------------------------------------


def test_a_signature_becomes_the_params_model(widgets: Registry) -> None:
    widgets.register("margin")(Margin)
    params = widgets.get("margin").params

    assert list(params.model_fields) == ["margin", "steps", "betas", "size", "channels", "label"]
    assert params().model_dump() == Margin().values  # the signature's defaults
    assert params.model_fields["margin"].description == "hinge margin"
    schema = params.model_json_schema()["properties"]
    assert schema["steps"]["minimum"] == 1 and schema["steps"]["maximum"] == 8
    assert params.model_config["extra"] == "forbid"
    built = widgets.build({"name": "margin", "margin": 2, "betas": [0.1, 0.2]})
    assert built.values["margin"] == 2.0 and isinstance(built.values["margin"], float)
    assert built.values["betas"] == (0.1, 0.2)  # a YAML list still makes the tuple
    assert built.gankit_spec["params"] == {**Margin().values, "margin": 2.0, "betas": [0.1, 0.2]}


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"margin": 0}, "widget.margin: Input should be greater than 0"),
        ({"steps": 9}, "widget.steps: Input should be less than or equal to 8"),
        ({"margin": True}, "widget.margin takes a number, not true"),
        ({"steps": False}, "widget.steps takes a number, not false"),
        ({"size": True}, "widget.size takes a number, not true"),  # int | None
        ({"channels": True}, "widget.channels takes a number, not true"),  # Literal[1, 3]
        ({"channels": 2}, "widget.channels: Input should be 1 or 3"),
        ({"betas": [True, 0.9]}, "widget.betas.0 takes a number, not true"),
        ({"betas": [0.5, False]}, "widget.betas.1 takes a number, not false"),
    ],
)
def test_a_signature_component_refuses_bad_values(
    widgets: Registry, params: dict[str, Any], problem: str
) -> None:
    widgets.register("margin")(Margin)
    with pytest.raises(RegistryError) as caught:
        widgets.build({"name": "margin", **params})
    assert problem in str(caught.value)


def test_a_signature_component_refuses_unknown_keys(widgets: Registry) -> None:
    widgets.register("margin")(Margin)
    with pytest.raises(RegistryError, match=r"unknown parameter 'margn'.*did you mean 'margin'"):
        widgets.build({"name": "margin", "margn": 2.0})


def test_numbers_are_still_read_as_numbers(widgets: Registry) -> None:
    widgets.register("margin")(Margin)
    built = widgets.build({"name": "margin", "steps": 4.0, "size": None, "channels": 1})
    assert built.values["steps"] == 4 and isinstance(built.values["steps"], int)
    assert built.values["size"] is None and built.values["channels"] == 1


def test_a_function_is_a_component_and_a_parameter_without_default_is_required(
    widgets: Registry,
) -> None:
    @widgets.register("scaled")
    def scaled(
        width: Annotated[int, Field(gt=0, description="width")], *, scale: float = 1.0
    ) -> dict[str, Any]:
        """A function component."""
        return {"width": width, "scale": scale}

    assert widgets.build({"name": "scaled", "width": 3}) == {"width": 3, "scale": 1.0}
    assert widgets.get("scaled").params.model_fields["width"].is_required()
    with pytest.raises(RegistryError, match=r"widget\.width: Field required"):
        widgets.build({"name": "scaled"})
    with pytest.raises(RegistryError, match=r"widget\.scale takes a number, not true"):
        widgets.build({"name": "scaled", "width": 3, "scale": True})


def test_runtime_facts_are_not_parameters(widgets: Registry) -> None:
    def shaped(
        image_shape: Sequence[int], shift: Annotated[int, Field(ge=0)] = 0, *extra: Any, **more: Any
    ) -> tuple[tuple[int, ...], int]:
        """Runtime image_shape from the registry; *extra and **more are not parameters."""
        return tuple(image_shape), shift

    def sized(shape: Sequence[int], width: int = 1) -> tuple[tuple[int, ...], int]:
        """A runtime fact this component names itself."""
        return tuple(shape), width

    widgets.register("shaped")(shaped)
    widgets.register("sized", runtime=("shape",))(sized)

    assert list(widgets.get("shaped").params.model_fields) == ["shift"]
    assert widgets.build({"name": "shaped", "shift": 2}, image_shape=[1, 4, 4]) == ((1, 4, 4), 2)
    assert list(widgets.get("sized").params.model_fields) == ["width"]
    assert widgets.build({"name": "sized"}, shape=(3,)) == ((3,), 1)
    with pytest.raises(RegistryError, match=r"unknown parameter 'image_shape'"):
        widgets.build({"name": "shaped", "image_shape": [1, 4, 4]}, image_shape=[1, 4, 4])


def test_a_component_without_parameters_gets_noparams(widgets: Registry) -> None:
    widgets.register("none")(Sequence)  # a class without a constructor of its own
    widgets.register("empty")(lambda: None)
    assert widgets.get("none").params is NoParams and widgets.get("empty").params is NoParams


def test_a_parameter_without_annotation_is_refused_at_registration(widgets: Registry) -> None:
    def loose(margin=1.0):  # type: ignore[no-untyped-def]
        return margin

    with pytest.raises(TypeError, match=r"parameter 'margin' of .*loose has no type annotation"):
        widgets.register("loose")(loose)
    assert "loose" not in widgets


def test_a_positional_only_parameter_is_refused_at_registration(widgets: Registry) -> None:
    def positional(margin: float = 1.0, /) -> float:
        return margin

    with pytest.raises(TypeError, match=r"parameter 'margin' of .*positional is positional-only"):
        widgets.register("positional")(positional)


# Recipes and `gankit list` --------------------------------------------------------------------


def test_a_signature_component_in_a_recipe(margin_loss: str) -> None:
    recipe = load_recipe(REFERENCE_RECIPE, [f"loss={{name: {margin_loss}, margin: 2}}"])
    assert recipe.loss.margin == 2.0 and recipe.loss.steps == 2
    for override, problem in [
        ("loss.margin=true", "loss.margin takes a number, not true"),
        ("loss.betas=[true, 0.9]", "loss.betas.0 takes a number, not true"),
        ("loss.margn=2", "unknown key loss.margn; did you mean 'margin'?"),
        ("loss.steps=0", "loss.steps: Input should be greater than or equal to 1"),
    ]:
        with pytest.raises(RecipeError) as caught:
            load_recipe(REFERENCE_RECIPE, [f"loss.name={margin_loss}", override])
        assert problem in str(caught.value), override


def test_gankit_list_shows_a_signature_components_parameters(
    margin_loss: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", "loss"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line for line in lines if line.startswith(f"  {margin_loss} ")]
    (hinge,) = [line for line in lines if line.startswith("  hinge ")]
    description = "A margin loss whose signature declares its parameters."
    assert row.endswith(description)
    assert row.index(description) == len(hinge) - len(hinge[2:].split(None, 1)[1])  # aligned
    assert "      margin: float = 1.0  # hinge margin" in lines
    assert "      size: int | None = None" in lines
    assert "      betas: tuple[float, float] = (0.5, 0.9)" in lines
    assert main(["list", "--markdown", "loss"]) == 0
    table = capsys.readouterr().out
    assert (
        f"| `loss` | `{margin_loss}` | `margin` (1.0: hinge margin), `steps` (2: how many), "
        "`betas` ([0.5, 0.9]), `size` (none), `channels` (3), `label` (`m`); A margin loss "
        "whose signature declares its parameters. |"
    ) in table.splitlines()
    assert table.startswith("| section | name | parameters (default) |\n| --- | --- | --- |\n")


# A plugin's params model ----------------------------------------------------------------------


def test_a_plugins_params_model_keeps_its_fields_and_refuses_booleans(margin_loss: str) -> None:
    params = LOSSES.get("plugin_test").params
    assert issubclass(params, PluginParams) and params.__name__ == "PluginParams"
    assert params.model_fields["margin"].description == "hinge margin"
    assert params.model_json_schema() == PluginParams.model_json_schema()
    assert PluginParams(margin=True).margin == 1.0  # the plugin's own class is left as it was
    built = LOSSES.build({"name": "plugin_test", "margin": 2, "betas": [0.1, 0.2]})
    assert built == {"margin": 2.0, "steps": None, "betas": (0.1, 0.2), "channels": 3}
    for key, value in [("margin", True), ("steps", True), ("channels", True)]:
        with pytest.raises(RegistryError, match=rf"loss\.{key} takes a number, not true"):
            LOSSES.build({"name": "plugin_test", key: value})
    with pytest.raises(RecipeError, match=r"loss\.betas\.0 takes a number, not true"):
        load_recipe(REFERENCE_RECIPE, ["loss={name: plugin_test, betas: [true, 0.9]}"])
    with pytest.raises(RecipeError, match=r"loss\.margin: Input should be greater than 0"):
        load_recipe(REFERENCE_RECIPE, ["loss={name: plugin_test, margin: 0}"])


def test_a_params_model_without_numbers_is_used_as_given(widgets: Registry) -> None:
    class Named(BaseModel):
        label: str = "x"
        on: bool = False

    widgets.register("named", params=Named)(make_plugin)
    assert widgets.get("named").params is Named


# Every number gankit declares -----------------------------------------------------------------


def true_for(schema: dict[str, Any]) -> Any:
    """true where `schema` takes a number, or a list of them where it takes a list."""
    return [True] * len(schema.get("prefixItems", [0])) if schema.get("type") == "array" else True


def numeric_fields(model: type[BaseModel]) -> list[tuple[str, dict[str, Any]]]:
    """The fields of `model` whose JSON schema takes numbers (also in a list or an option)."""
    properties = model.model_json_schema()["properties"]
    return [
        (name, schema)
        for name, schema in properties.items()
        if '"integer"' in json.dumps(schema) or '"number"' in json.dumps(schema)
    ]


@pytest.mark.parametrize(
    "model",
    [AdamParams, LoaderFields, TrainSection, EvalSection, EMASection, PerfSection, WandbSection],
)
def test_every_number_of_the_fixed_sections_refuses_booleans(model: type[BaseModel]) -> None:
    for name, schema in numeric_fields(model):
        paths = number_error_paths(model, {"steps": 1, name: true_for(schema)})
        assert paths and all(path[0] == name for path in paths), name


def test_every_number_of_every_component_refuses_booleans() -> None:
    checked = 0
    for registry in REGISTRIES.values():
        for entry in registry:
            model = section_model(registry, entry)
            for name, schema in numeric_fields(model):
                paths = number_error_paths(model, {"name": entry.name, name: true_for(schema)})
                assert paths and all(path[0] == name for path in paths), (entry.name, name)
                checked += 1
    assert checked > 40  # the built-ins' numbers, data's loader fields included
