"""What every generator offers: its noise distribution and `sample`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Noise = Literal["uniform", "normal"]


def sample_noise(
    kind: Noise,
    n: int,
    z_dim: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw `n` latent vectors: uniform in [-1, 1) or standard normal."""
    if kind == "uniform":
        return torch.rand(n, z_dim, device=device, generator=generator).mul_(2).sub_(1)
    if kind == "normal":
        return torch.randn(n, z_dim, device=device, generator=generator)
    raise ValueError(f"unknown noise {kind!r}; use 'uniform' or 'normal'")


class Generator(nn.Module):
    """Base class of generators: maps (N, z_dim) noise to (N, C, H, W) images in [-1, 1].

    Subclasses set `z_dim` and `noise` and implement `forward(z)`; `sample` comes for free.
    """

    z_dim: int
    noise: Noise

    def sample_noise(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` latent vectors from this generator's noise distribution, on its device."""
        return sample_noise(self.noise, n, self.z_dim, device=self._device(), generator=generator)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """Generate `n` images in [-1, 1] as a float32 (N, C, H, W) tensor, in eval mode.

        `seed` makes the noise reproducible without touching the global RNG.
        """
        device = self._device()
        generator = torch.Generator(device).manual_seed(seed) if seed is not None else None
        was_training = self.training
        self.eval()
        try:
            images = self(self.sample_noise(n, generator=generator))
        finally:
            self.train(was_training)
        return images.float()

    def _device(self) -> torch.device:
        first = next(self.parameters(), None)
        return first.device if first is not None else torch.device("cpu")


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectrally normalise every conv and linear layer in place (Miyato et al. 2018)."""
    for layer in list(module.modules()):
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.utils.parametrizations.spectral_norm(layer)
