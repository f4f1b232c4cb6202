"""Component parameters: a params model read from a signature, and numbers that are numbers.

A component declares each parameter once, in its signature, with its type, bounds, description
and default:

    def __init__(self, width: Annotated[int, Field(gt=0, description="base channels")] = 64): ...

`params_from_signature` turns those parameters into the pydantic model that recipes, exports and
`gankit list` use. Parameters that the registry passes at build time (`Registry.runtime`, such
as a generator's `image_shape`) are left out.

Every int and float of a params model, derived or given, refuses true and false
(`refuse_booleans`): pydantic would otherwise read them as 1 and 0, so a slip such as `lr: true`
would train at a learning rate of 1. Everything else pydantic takes for a number is still taken.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import sys
import types
from collections.abc import Callable, Collection, Mapping
from copy import copy
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

_Model = TypeVar("_Model", bound=BaseModel)

# pydantic's errors for a non-number where a number belongs (strict fields', and NOT_A_BOOLEAN's)
NUMBER_ERRORS = frozenset({"int_type", "float_type", "number_type"})
_CONTAINERS = (
    tuple,
    list,
    set,
    frozenset,
    dict,
    collections.abc.Sequence,
    collections.abc.Mapping,
    collections.abc.Set,
)
_NOT_PARAMETERS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _refuse_booleans(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "Input should be a number, not a boolean")
    return value


# Not pydantic's strict mode, which would also refuse what recipes rely on: 1e5 (YAML reads a
# float) for an int, and "inf" (YAML reads a string) for a float, refused as not finite instead;
# nor does strict mode apply to Literals, where pydantic matches true against 1. It is placed
# after the bounds (gt=0, ...) it guards, so pydantic still applies them natively and puts them
# in the JSON schema.
NOT_A_BOOLEAN = BeforeValidator(_refuse_booleans)


def _guarded(metadata: Any) -> bool:
    return metadata is NOT_A_BOOLEAN or isinstance(metadata, Strict)


def _takes_numbers(annotation: Any) -> bool:
    """Whether pydantic reads true as a number for this type: int, float, a numeric Literal, or
    an Optional or union of them without bool (not looking inside tuples, lists, ...)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _takes_numbers(args[0])
    if origin is Literal:
        numeric = any(isinstance(value, int | float) for value in args)
        return numeric and not any(isinstance(value, bool) for value in args)
    if origin in (Union, types.UnionType):
        return bool not in args and any(_takes_numbers(arg) for arg in args)
    return annotation in (int, float)


def _inside(annotation: Any) -> Any:
    """`annotation` with the numbers inside its tuples, lists, sets and dicts refusing booleans."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return Annotated[(_inside(args[0]), *args[1:])]
    if origin in (Union, types.UnionType):
        return Union[tuple(_inside(arg) for arg in args)]  # noqa: UP007
    if origin in _CONTAINERS and args:
        return origin[tuple(_item(arg) for arg in args)]
    return annotation


def _item(annotation: Any) -> Any:
    if annotation is Ellipsis:
        return annotation
    inner = _inside(annotation)
    guarded = get_origin(annotation) is Annotated and any(map(_guarded, get_args(annotation)))
    return Annotated[inner, NOT_A_BOOLEAN] if _takes_numbers(inner) and not guarded else inner


def _refusing(field: FieldInfo) -> FieldInfo | None:
    """A copy of `field` whose numbers refuse booleans, or None if they do already."""
    inside = _inside(field.annotation)
    annotation = field.annotation if inside == field.annotation else inside
    top = _takes_numbers(annotation) and not any(map(_guarded, field.metadata))
    if not top and annotation is field.annotation:
        return None
    refusing = copy(field)
    refusing.annotation = annotation
    refusing.metadata = [*field.metadata, NOT_A_BOOLEAN] if top else list(field.metadata)
    return refusing


def refuse_booleans(model: type[_Model]) -> type[_Model]:
    """`model` itself, or a subclass of it (same name, fields, defaults, bounds and JSON schema)
    whose numbers refuse true and false, also inside Optional, unions, tuples, lists and dicts.
    Every params model goes through it, and so does each recipe section with numbers."""
    changed = {
        name: (refusing.annotation, refusing)
        for name, field in model.model_fields.items()
        if (refusing := _refusing(field)) is not None
    }
    if not changed:
        return model
    return create_model(
        model.__name__,
        __base__=model,
        __module__=model.__module__,
        __doc__=model.__doc__,
        **changed,
    )


def params_from_signature(
    builder: Callable[..., Any], runtime: Collection[str]
) -> type[BaseModel] | None:
    """The params model of a class or function: one field per parameter of its signature, with
    the parameter's annotation (`Annotated[int, Field(...)]` for bounds and a description) and
    default (none: required). Parameters named in `runtime` and `*args`/`**kwargs` are left
    out. None when nothing is left."""
    where = f"{builder.__module__}.{builder.__qualname__}"
    fields: dict[str, Any] = {}
    try:
        for parameter in inspect.signature(builder).parameters.values():
            if parameter.name not in runtime and parameter.kind not in _NOT_PARAMETERS:
                fields[parameter.name] = _field(parameter, builder, where)
    except (ValueError, NameError, SyntaxError) as error:  # no signature, or a bad annotation
        raise TypeError(
            f"cannot read the parameters of {where}: {error}; pass params= to register()"
        ) from error
    if not fields:
        return None
    name = "".join(part[:1].upper() + part[1:] for part in builder.__name__.split("_"))
    try:
        model = create_model(
            f"{name}Params",
            __config__=ConfigDict(extra="forbid"),
            __module__=builder.__module__,
            __doc__=f"Parameters of {builder.__qualname__}.",
            **fields,
        )
        return refuse_booleans(model)
    except Exception as error:  # pydantic raises several kinds for types it cannot validate
        raise TypeError(
            f"cannot make a params model from the signature of {where}: {error}"
        ) from error


def _field(parameter: inspect.Parameter, builder: Any, where: str) -> tuple[Any, Any]:
    """(annotation, default or ... when required) of one parameter."""
    if parameter.kind is parameter.POSITIONAL_ONLY:
        raise TypeError(
            f"parameter {parameter.name!r} of {where} is positional-only, but components are "
            "called with keyword arguments"
        )
    annotation = parameter.annotation
    if annotation is parameter.empty:
        raise TypeError(
            f"parameter {parameter.name!r} of {where} has no type annotation: annotate it (e.g. "
            f"`{parameter.name}: int = 1`), pass it at build time (register(..., runtime=...)), "
            "or pass params= to register()"
        )
    if isinstance(annotation, str):  # `from __future__ import annotations`
        annotation = eval(annotation, _namespace(builder))
    default = ... if parameter.default is parameter.empty else parameter.default
    return annotation, default


def _namespace(builder: Any) -> dict[str, Any]:
    """The globals that the annotations of a function, or of a class's __init__, are read in."""
    function = builder
    if isinstance(builder, type):
        owner = next(cls for cls in builder.__mro__ if "__init__" in vars(cls))
        function = vars(owner)["__init__"]
    namespace = getattr(inspect.unwrap(function), "__globals__", None)
    return namespace if namespace is not None else vars(sys.modules[builder.__module__])


def boolean_for_number(problem: Mapping[str, Any]) -> str | None:
    """For a pydantic error about true/false given where a number belongs: "takes a number,
    not true"; None for any other error."""
    value = problem.get("input")
    if problem["type"] in NUMBER_ERRORS and isinstance(value, bool):
        return f"takes a number, not {str(value).lower()}"
    return None


def non_finite(value: Any, path: str) -> list[str]:
    """Key paths (`generator.bn_eps`, `x.betas[1]`) of the inf and nan floats in a plain value
    (dicts, lists, tuples), such as a params model's `model_dump()`."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in non_finite(item, f"{path}.{key}")]
    if isinstance(value, list | tuple):
        return [p for index, item in enumerate(value) for p in non_finite(item, f"{path}[{index}]")]
    return []
