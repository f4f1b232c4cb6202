"""gankit: train GANs from typed recipes, with pluggable components, on Accelerate."""

from gankit._version import __version__
from gankit.components import (  # noqa: F401 (built-ins, and their short public names)
    augment,
    data,
    losses,
    models,
    regularizers,
    schedules,
    toy,
)
from gankit.components.models.base import Discriminator, Generator
from gankit.config.recipe import load_recipe
from gankit.config.registry import (
    AUGMENTATIONS,
    DATASETS,
    DISCRIMINATORS,
    GENERATORS,
    LOSSES,
    REGULARIZERS,
    SCHEDULES,
    Registry,
    load_plugins,
)
from gankit.config.value_schedule import Scheduled, ValueSchedule
from gankit.core.errors import GankitError
from gankit.outputs.export import load_generator, load_model, save_model

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DISCRIMINATORS",
    "GENERATORS",
    "LOSSES",
    "REGULARIZERS",
    "SCHEDULES",
    "Discriminator",
    "GankitError",
    "Generator",
    "Registry",
    "Scheduled",
    "ValueSchedule",
    "__version__",
    "load_generator",
    "load_model",
    "load_plugins",
    "load_recipe",
    "save_model",
]
