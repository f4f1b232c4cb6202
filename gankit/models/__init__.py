"""Built-in generators and discriminators (importing this registers them)."""

from gankit.models import dcgan, mlp
from gankit.models.base import Generator, sample_noise

__all__ = ["Generator", "dcgan", "mlp", "sample_noise"]
