"""The pluggable parts of a GAN: networks, losses, regularizers, schedules, data.

Importing this package registers the built-in components; a new built-in module is imported here.
"""

from gankit.components import data, losses, models, regularizers, schedules, toy

__all__ = ["data", "losses", "models", "regularizers", "schedules", "toy"]
