"""Recipe loading, overrides, round-trips and the errors people see for bad recipes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import gankit
from gankit.config.recipe import (
    SECTION_DEFAULTS,
    SECTION_ORDER,
    apply_overrides,
    dump_recipe,
    load_recipe,
    recipe_dict,
    recipe_model,
    validate_recipe,
)
from gankit.config.registry import DISCRIMINATORS, GENERATORS, LOSSES, SCHEDULES
from gankit.core.errors import GankitError, RecipeError

from conftest import REFERENCE_RECIPE


def reference_raw() -> dict[str, Any]:
    return yaml.safe_load(REFERENCE_RECIPE.read_text())


def recipe_error(overrides: list[str], path: Path | str = REFERENCE_RECIPE) -> str:
    """The message of the RecipeError that loading `path` with `overrides` raises."""
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def write_recipe(tmp_path: Path, raw: Any, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---- the reference recipe --------------------------------------------------------------------


def test_reference_recipe_has_the_reference_values() -> None:
    recipe = load_recipe(REFERENCE_RECIPE)
    assert recipe.name == "mnist_dcgan"
    assert recipe.mixed_precision is None  # as launched: accelerate launch --mixed_precision
    assert recipe.data.name == "mnist"
    assert recipe.data.batch_size == 100
    assert recipe.data.download is True
    assert recipe.generator.name == "dcgan28"
    assert recipe.generator.z_dim == 100
    assert recipe.generator.noise == "uniform"
    assert recipe.discriminator.name == "dcgan28"
    assert recipe.loss.name == "non_saturating"
    assert recipe.schedule.name == "alternating"
    assert (recipe.schedule.d_steps, recipe.schedule.g_steps) == (1, 2)
    for network in (recipe.optim.generator, recipe.optim.discriminator):
        assert network.lr == pytest.approx(2e-4)
        assert network.betas == (0.5, 0.999)
    assert recipe.train.steps == 60000
    assert recipe.train.seed == 0


def test_output_dir_defaults_to_runs_slash_name() -> None:
    recipe = load_recipe(REFERENCE_RECIPE)
    assert recipe.output_dir == "runs/mnist_dcgan"
    assert recipe.run_dir == Path("runs/mnist_dcgan")
    renamed = load_recipe(REFERENCE_RECIPE, ["name=other_run"])
    assert renamed.output_dir == "runs/other_run"


def test_explicit_output_dir_is_kept(tmp_path: Path) -> None:
    recipe = load_recipe(REFERENCE_RECIPE, [f"output_dir={tmp_path / 'run'}"])
    assert recipe.output_dir == str(tmp_path / "run")
    assert recipe.run_dir == tmp_path / "run"


# ---- overrides -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "read", "expected"),
    [
        ("train.steps=7", lambda r: r.train.steps, 7),
        ("train.seed=123", lambda r: r.train.seed, 123),
        ("data.root=/some/where", lambda r: r.data.root, "/some/where"),
        ("data.download=false", lambda r: r.data.download, False),
        ("data.batch_size=8", lambda r: r.data.batch_size, 8),
        ("output_dir=elsewhere/run", lambda r: r.output_dir, "elsewhere/run"),
        ("mixed_precision=bf16", lambda r: r.mixed_precision, "bf16"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_key_is_overridable(override: str, read: Any, expected: Any) -> None:
    assert read(load_recipe(REFERENCE_RECIPE)) != expected  # the override changes something
    assert read(load_recipe(REFERENCE_RECIPE, [override])) == expected


def _toy_component(**params: Any) -> dict[str, Any]:
    """A stand-in component registered only while a test runs."""
    return params


@pytest.fixture
def toy_components() -> Iterator[None]:
    """Register a second component in each section, with the same params as the built-in."""
    registrations = [
        (GENERATORS, GENERATORS.get("dcgan28").params),
        (DISCRIMINATORS, DISCRIMINATORS.get("dcgan28").params),
        (LOSSES, None),
        (SCHEDULES, SCHEDULES.get("alternating").params),
    ]
    for registry, params in registrations:
        registry.register("toy", params=params)(_toy_component)
    try:
        yield
    finally:
        for registry, _ in registrations:
            registry.unregister("toy")


@pytest.mark.usefixtures("toy_components")
@pytest.mark.parametrize("section", ["generator", "discriminator", "loss", "schedule"])
def test_component_name_is_overridable(section: str) -> None:
    recipe = load_recipe(REFERENCE_RECIPE, [f"{section}.name=toy"])
    assert getattr(recipe, section).name == "toy"
    others = [s for s in ("generator", "discriminator", "loss", "schedule") if s != section]
    assert all(getattr(recipe, other).name != "toy" for other in others)


@pytest.mark.usefixtures("toy_components")
def test_errors_under_several_components_name_the_users_path() -> None:
    """With two generators registered, pydantic's union tag must not leak into the path."""
    message = recipe_error(["generator.widht=3", "generator.z_dim=abc"])
    assert "unknown key generator.widht; did you mean 'width'?" in message
    assert "generator.z_dim:" in message
    assert "dcgan28.z_dim" not in message and "dcgan28.widht" not in message
    unknown = recipe_error(["generator.name=dcgan_28"])
    assert "unknown generator 'dcgan_28' at generator.name; did you mean 'dcgan28'?" in unknown
    available = unknown.split("available: ")[1].split(".")[0].split(", ")
    assert {"dcgan28", "toy"} <= set(available) and available == sorted(available)


def test_overrides_parse_yaml_values() -> None:
    recipe = load_recipe(
        REFERENCE_RECIPE,
        [
            "train.steps=5",
            "optim.generator.lr=1e-4",
            "optim.discriminator.lr=1.0e-4",
            "optim.generator.betas=[0.1, 0.25]",
            "train.progress=false",
            "train.export_discriminator=true",
            "wandb.tags=[a, b]",
        ],
    )
    assert recipe.train.steps == 5
    assert isinstance(recipe.train.steps, int)
    assert recipe.optim.generator.lr == pytest.approx(1e-4)
    assert recipe.optim.discriminator.lr == pytest.approx(1e-4)
    assert recipe.optim.generator.betas == (0.1, 0.25)
    assert recipe.train.progress is False
    assert recipe.train.export_discriminator is True
    assert recipe.wandb.tags == ["a", "b"]


def test_apply_overrides_sets_parsed_values_in_place_and_reports_them() -> None:
    raw: dict[str, Any] = {"train": {"steps": 1}}
    applied = apply_overrides(
        raw, ["train.steps=5", "optim.generator.lr=1.0e-4", "a.b.c=[1, 2]", "x.flag=true"]
    )
    assert raw["train"]["steps"] == 5
    assert isinstance(raw["train"]["steps"], int)
    assert raw["optim"]["generator"]["lr"] == pytest.approx(1e-4)
    assert isinstance(raw["optim"]["generator"]["lr"], float)
    assert raw["a"] == {"b": {"c": [1, 2]}}
    assert raw["x"]["flag"] is True
    assert applied == {
        "train.steps": "train.steps=5",
        "optim.generator.lr": "optim.generator.lr=1.0e-4",
        "a.b.c": "a.b.c=[1, 2]",
        "x.flag": "x.flag=true",
    }


def test_override_exponent_without_a_dot_is_a_float() -> None:
    raw: dict[str, Any] = {}
    apply_overrides(raw, ["optim.generator.lr=1e-4", "train.steps=1e5"])
    assert isinstance(raw["optim"]["generator"]["lr"], float)
    assert load_recipe(REFERENCE_RECIPE, ["train.steps=1e5"]).train.steps == 100000


def test_mixed_precision_no_is_overridable() -> None:
    recipe = load_recipe(REFERENCE_RECIPE, ["mixed_precision=bf16", "mixed_precision=no"])
    assert recipe.mixed_precision == "no"


# ---- dump round-trip and schema --------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [[], ["optim.generator.betas=[0.1, 0.2]", "output_dir=/tmp/x", "wandb.tags=[t]"]],
    ids=["reference", "overridden"],
)
def test_dump_recipe_round_trips(overrides: list[str]) -> None:
    recipe = load_recipe(REFERENCE_RECIPE, overrides)
    text = dump_recipe(recipe)
    reloaded = validate_recipe(yaml.safe_load(text))
    assert reloaded == recipe
    assert dump_recipe(reloaded) == text


def test_recipe_dict_is_fully_resolved_with_name_first() -> None:
    resolved = recipe_dict(load_recipe(REFERENCE_RECIPE))
    assert next(iter(resolved)) == "name"
    for section in SECTION_ORDER:
        assert next(iter(resolved[section])) == "name"
    # defaults the YAML file leaves out are filled in
    assert resolved["generator"]["bn_eps"] == pytest.approx(1e-3)
    assert resolved["data"]["num_workers"] == 0
    assert resolved["optim"]["generator"]["betas"] == [0.5, 0.999]
    assert resolved["output_dir"] == "runs/mnist_dcgan"


def test_json_schema_has_the_component_sections() -> None:
    schema = recipe_model().model_json_schema()
    properties = schema["properties"]
    for section in (*SECTION_ORDER, "optim", "train", "wandb", "name", "output_dir"):
        assert section in properties
    for section in (*SECTION_ORDER, "train", "name"):
        assert (section in schema["required"]) == (section not in SECTION_DEFAULTS)
    definitions = schema["$defs"]

    def fields_of(section: str, name: str) -> set[str]:
        """The fields of one component's schema (a single $ref, or a member of a oneOf)."""
        members = properties[section].get("oneOf") or [properties[section]]
        for member in members:
            fields = definitions[member["$ref"].rsplit("/", 1)[-1]]["properties"]
            if fields["name"].get("const") == name:
                return set(fields)
        raise AssertionError(f"no schema for {section} {name!r}")

    assert {"name", "z_dim", "width", "noise"} <= fields_of("generator", "dcgan28")
    assert {"name", "width"} <= fields_of("discriminator", "dcgan28")
    assert {"name", "d_steps", "g_steps"} <= fields_of("schedule", "alternating")
    assert {"name", "root", "download", "batch_size"} <= fields_of("data", "mnist")


# ---- errors: what, where, and what to do -----------------------------------------------------


def test_recipe_errors_are_gankit_errors() -> None:
    assert issubclass(RecipeError, GankitError)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "generator.name=dcgan_28",
            "unknown generator 'dcgan_28' at generator.name; did you mean 'dcgan28'? "
            "available: dcgan, dcgan28",
        ),
        (
            "discriminator.name=dcgan_28",
            "unknown discriminator 'dcgan_28' at discriminator.name; did you mean 'dcgan28'? "
            "available: dcgan, dcgan28",
        ),
        (
            "loss.name=non_saturate",
            "unknown loss 'non_saturate' at loss.name; did you mean 'non_saturating'? "
            "available: hinge, least_squares, minimax, non_saturating",
        ),
        (
            "schedule.name=alternate",
            "unknown schedule 'alternate' at schedule.name; did you mean 'alternating'? "
            "available: alternating",
        ),
        ("data.name=mnst", "unknown dataset 'mnst' at data.name; did you mean 'mnist'?"),
    ],
)
def test_unknown_component_name(override: str, expected: str) -> None:
    message = recipe_error([override])
    assert expected in message
    assert f"[set by override '{override}']" in message
    assert str(REFERENCE_RECIPE) in message


@pytest.mark.parametrize(
    ("override", "expected", "valid"),
    [
        ("train.stepz=5", "unknown key train.stepz; did you mean 'steps'?", "steps"),
        ("optim.generator.lrr=1", "unknown key optim.generator.lrr; did you mean 'lr'?", "lr"),
        ("data.rot=x", "unknown key data.rot; did you mean 'root'?", "batch_size"),
        ("trian.steps=5", "unknown key trian; did you mean 'train'?", "optim"),
    ],
)
def test_unknown_key_override(override: str, expected: str, valid: str) -> None:
    message = recipe_error([override])
    assert expected in message
    assert re.search(rf"valid keys here: [^\n]*\b{valid}\b", message)
    assert f"[set by override '{override}']" in message


def test_swapping_a_component_by_name_says_to_replace_the_section() -> None:
    message = recipe_error(["generator.name=mlp"])  # the file's dcgan28 keys stay behind
    assert "unknown key generator.width: 'generator.name=mlp' swaps the component" in message
    assert "generator='{name: mlp, ...}'" in message and "did you mean" not in message
    assert re.search(r"Valid keys here: [^\n]*\bhidden\b", message)
    load_recipe(REFERENCE_RECIPE, ["generator={name: mlp}"])  # what the message suggests


def test_unknown_key_in_the_yaml_file(tmp_path: Path) -> None:
    raw = reference_raw()
    raw["generator"]["widht"] = raw["generator"].pop("width")
    path = write_recipe(tmp_path, raw)
    message = recipe_error([], path)
    assert f"recipe '{path}' is invalid" in message
    assert "unknown key generator.widht; did you mean 'width'?" in message
    assert "set by override" not in message  # it came from the file


def test_wrong_type() -> None:
    message = recipe_error(["generator.z_dim=abc"])
    assert "generator.z_dim:" in message
    assert "valid integer" in message
    assert "'abc'" in message
    assert "[set by override 'generator.z_dim=abc']" in message


def test_negative_learning_rate() -> None:
    message = recipe_error(["optim.generator.lr=-1e-4"])
    assert "optim.generator.lr:" in message
    assert "greater than 0" in message
    assert "[set by override 'optim.generator.lr=-1e-4']" in message
    assert "optim.discriminator" not in message


def test_override_of_a_whole_section_is_blamed_for_errors_inside_it() -> None:
    message = recipe_error(["optim.generator={lr: -1}"])
    assert "optim.generator.lr:" in message
    assert "[set by override 'optim.generator={lr: -1}']" in message


def test_every_problem_is_reported_at_once() -> None:
    message = recipe_error(["train.stepz=5", "generator.z_dim=abc", "optim.generator.lr=0"])
    assert message.count("\n  - ") == 3
    for path in ("train.stepz", "generator.z_dim", "optim.generator.lr"):
        assert path in message


def test_missing_sections_and_names(tmp_path: Path) -> None:
    raw = reference_raw()
    del raw["train"]
    del raw["generator"]["name"]
    message = recipe_error([], write_recipe(tmp_path, raw))
    assert "train is required but missing" in message
    assert "generator.name is missing; available generators: dcgan, dcgan28" in message


def test_missing_loss_name_message_is_spelled_right() -> None:
    raw = reference_raw()
    del raw["loss"]["name"]
    with pytest.raises(RecipeError, match=r"loss\.name is missing") as info:
        validate_recipe(raw)
    assert "available losses: hinge, least_squares, minimax, non_saturating" in str(info.value)


def test_missing_recipe_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = recipe_error([], missing)
    assert f"recipe file '{missing}' not found" in message
    shipped = sorted(p.stem for p in REFERENCE_RECIPE.parent.glob("*.yaml"))
    assert f"Recipes shipped with gankit, by name: {', '.join(shipped)}." in message


def test_shipped_recipes_are_found_by_name(tmp_path: Path, monkeypatch) -> None:
    """`gankit train mnist_dcgan` works from any folder (a pip install has no recipes/ folder);
    a file of that name in the working folder wins over the shipped recipe."""
    monkeypatch.chdir(tmp_path)
    for name in ("mnist_dcgan", "mnist_dcgan.yaml"):
        assert load_recipe(name).generator.name == "dcgan28"
    assert (Path(gankit.__file__).parent / "recipes" / "mnist_dcgan.yaml").is_file()
    (tmp_path / "mnist_dcgan.yaml").write_text(
        REFERENCE_RECIPE.read_text().replace("name: mnist_dcgan", "name: mine")
    )
    assert load_recipe("mnist_dcgan.yaml").name == "mine"
    assert "not found" in recipe_error([], Path("mnist_dcgann"))


def test_gankit_list_recipes_names_the_shipped_ones(capsys) -> None:
    from gankit.cli import main

    assert main(["list", "recipes"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == sorted(p.stem for p in REFERENCE_RECIPE.parent.glob("*.yaml"))
    assert "mnist_dcgan" in listed


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ngenerator:\n  name: dcgan28\n  z_dim: 100\n width: 64\n")
    message = recipe_error([], path)
    assert f"recipe '{path}' is not valid YAML at line 5, column 2" in message
    assert "indentation" in message


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just words\n", "str"), ("42\n", "int")]
)
def test_recipe_that_is_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "flat.yaml"
    path.write_text(text)
    message = recipe_error([], path)
    assert f"recipe '{path}' must be a mapping of sections, got {kind}" in message


def test_override_below_a_value() -> None:
    message = recipe_error(["train.steps.x=1"])
    assert message == (
        "override 'train.steps.x=1': train.steps is a value (60000), not a section, "
        "so it has no key 'x'"
    )


def test_override_of_a_key_that_does_not_exist() -> None:
    message = recipe_error(["foo.bar=1"])
    assert "unknown key foo;" in message
    assert "valid keys here: name, output_dir" in message
    assert "[set by override 'foo.bar=1']" in message


@pytest.mark.parametrize("override", ["train.steps", "=5", "train..steps=1", ".x=1", "steps."])
def test_malformed_override(override: str) -> None:
    message = recipe_error([override])
    assert f"override {override!r} is not of the form key=value" in message
    assert "train.steps=100" in message  # the example


def test_override_value_that_is_not_yaml() -> None:
    message = recipe_error(["train.steps=[1"])
    assert "override 'train.steps=[1': cannot parse '[1' as a value" in message


def test_validate_recipe_names_its_source() -> None:
    raw = reference_raw()
    raw["train"]["steps"] = 0
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, source="my recipe")
    message = str(info.value)
    assert message.startswith("my recipe is invalid:")
    assert "train.steps: Input should be greater than 0 (got 0)" in message


def test_empty_recipe_file_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(RecipeError, match=r"empty\.yaml' is empty"):
        load_recipe(empty)


def test_a_whole_recipe_check_names_its_keys_and_blames_the_override() -> None:
    message = recipe_error(["discriminator.num_classes=3"])
    assert "generator.num_classes is 0 but discriminator.num_classes is 3" in message
    assert "[set by override 'discriminator.num_classes=3']" in message
    assert "\n  - generator.num_classes" in message  # the sentence starts the line, no ': '


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.generator.lr=true", "optim.generator.lr takes a number, not true"),
        ("data.batch_size=true", "data.batch_size takes a number, not true"),
        ("generator.z_dim=false", "generator.z_dim takes a number, not false"),
        ("data.subset=true", "data.subset takes a number, not true"),  # int | None
        (
            "optim.generator.betas=[false, 0.999]",
            "optim.generator.betas.0 takes a number, not false",
        ),
        ("optim.generator.betas=[0.5, true]", "optim.generator.betas.1 takes a number, not true"),
        (  # Literal[1, 3]: true would be read as 1, greyscale
            "data={name: image_folder, root: images, size: 8, channels: true}",
            "data.channels takes a number, not true",
        ),
    ],
)
def test_a_boolean_for_a_number_is_refused(override: str, expected: str) -> None:
    # pydantic alone reads true as 1: `lr: true` would train at a learning rate of 1
    message = recipe_error([override])
    assert expected in message and f"[set by override '{override}']" in message


def test_numbers_still_validate_as_numbers() -> None:
    recipe = load_recipe(REFERENCE_RECIPE, ["optim.generator.lr=1", "train.progress=false"])
    assert recipe.optim.generator.lr == 1.0 and recipe.train.progress is False
