"""gankit: train GANs from typed recipes, with pluggable components, on Accelerate."""

from gankit import data, losses, models, regularizers, schedules, toy  # noqa: F401 (built-ins)
from gankit._version import __version__
from gankit.errors import GankitError
from gankit.export import load_generator, load_model, save_model
from gankit.models.base import Generator
from gankit.recipe import load_recipe
from gankit.registry import (
    DATASETS,
    DISCRIMINATORS,
    GENERATORS,
    LOSSES,
    REGULARIZERS,
    SCHEDULES,
    Registry,
    load_plugins,
)

__all__ = [
    "DATASETS",
    "DISCRIMINATORS",
    "GENERATORS",
    "LOSSES",
    "REGULARIZERS",
    "SCHEDULES",
    "GankitError",
    "Generator",
    "Registry",
    "__version__",
    "load_generator",
    "load_model",
    "load_plugins",
    "load_recipe",
    "save_model",
]
