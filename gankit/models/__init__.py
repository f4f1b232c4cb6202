"""Built-in generators and discriminators (importing this registers them)."""

from gankit.models import dcgan
from gankit.models.base import Generator, sample_noise

__all__ = ["Generator", "dcgan", "sample_noise"]
