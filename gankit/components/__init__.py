"""The pluggable parts of a GAN: networks, losses, regularizers, schedules, data.

Importing this package registers the built-in components; a new built-in module is imported here.
"""

from gankit.components import (
    augment,
    data,
    hf_data,
    losses,
    models,
    prepared,
    regularizers,
    schedules,
    toy,
)

__all__ = [
    "augment",
    "data",
    "hf_data",
    "losses",
    "models",
    "prepared",
    "regularizers",
    "schedules",
    "toy",
]
