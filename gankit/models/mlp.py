"""Fully connected generator and discriminator for any sample shape (images or points).

No normalisation layers: the pair for toy data, quick experiments, and checks where batch
statistics would get in the way (multi-process parity, gradient accumulation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from gankit.models.base import Generator, Noise, apply_spectral_norm
from gankit.registry import DISCRIMINATORS, GENERATORS


class MLPParams(BaseModel):
    """Width and depth of an MLP."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(256, gt=0, description="units per hidden layer")
    depth: int = Field(2, ge=1, description="hidden layers")


class MLPGeneratorParams(MLPParams):
    """Parameters of the MLP generator."""

    z_dim: int = Field(64, gt=0, description="latent size")
    noise: Noise = Field("normal", description="uniform in [-1, 1] or standard normal")
    output: Literal["tanh", "linear"] = Field(
        "tanh", description="tanh for images in [-1, 1], linear for unbounded data"
    )


def _stack(in_features: int, hidden: int, depth: int, activation: nn.Module) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for index in range(depth):
        layers += [nn.Linear(in_features if index == 0 else hidden, hidden), activation]
    return layers


@GENERATORS.register("mlp", params=MLPGeneratorParams)
class MLPGenerator(Generator):
    """MLP generator: noise through `depth` ReLU layers to a sample of the data's shape."""

    def __init__(
        self,
        z_dim: int = 64,
        hidden: int = 256,
        depth: int = 2,
        noise: Noise = "normal",
        output: Literal["tanh", "linear"] = "tanh",
        image_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        self.z_dim, self.noise, self.shape = z_dim, noise, tuple(image_shape)
        self.net = nn.Sequential(
            *_stack(z_dim, hidden, depth, nn.ReLU()),
            nn.Linear(hidden, math.prod(self.shape)),
            nn.Tanh() if output == "tanh" else nn.Identity(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


class MLPDiscriminatorParams(MLPParams):
    """Parameters of the MLP discriminator."""

    spectral_norm: bool = Field(False, description="spectral normalisation of every layer")


@DISCRIMINATORS.register("mlp", params=MLPDiscriminatorParams)
class MLPDiscriminator(nn.Module):
    """MLP discriminator: a flattened sample through `depth` LeakyReLU layers to one logit."""

    def __init__(
        self,
        hidden: int = 256,
        depth: int = 2,
        spectral_norm: bool = False,
        image_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            *_stack(math.prod(image_shape), hidden, depth, nn.LeakyReLU(0.2)),
            nn.Linear(hidden, 1),
        )
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return self.net(samples)
