"""Built-in generators and discriminators (importing this registers them)."""

from gankit.components.models import dcgan, dcgan_radford, mlp, r3gan, stylegan2
from gankit.components.models.base import Generator, sample_noise

__all__ = ["Generator", "dcgan", "dcgan_radford", "mlp", "r3gan", "sample_noise", "stylegan2"]
