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

from gankit.models.base import (
    Generator,
    Noise,
    Projection,
    apply_spectral_norm,
    check_labels,
)
from gankit.registry import DISCRIMINATORS, GENERATORS


class MLPParams(BaseModel):
    """Width and depth of an MLP."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(256, gt=0, description="units per hidden layer")
    depth: int = Field(2, ge=1, description="hidden layers")
    num_classes: int = Field(0, ge=0, description="classes to condition on; 0: unconditional")


class MLPGeneratorParams(MLPParams):
    """Parameters of the MLP generator."""

    z_dim: int = Field(64, gt=0, description="latent size")
    noise: Noise = Field("normal", description="uniform in [-1, 1] or standard normal")
    output: Literal["tanh", "linear"] = Field(
        "tanh", description="tanh for images in [-1, 1], linear for unbounded data"
    )
    embed_dim: int = Field(16, gt=0, description="label embedding concatenated to z (classes)")


def _stack(in_features: int, hidden: int, depth: int, activation: nn.Module) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for index in range(depth):
        layers += [nn.Linear(in_features if index == 0 else hidden, hidden), activation]
    return layers


@GENERATORS.register("mlp", params=MLPGeneratorParams)
class MLPGenerator(Generator):
    """MLP generator: noise (and a label embedding, when conditional) through `depth` ReLU
    layers to a sample of the data's shape."""

    def __init__(
        self,
        z_dim: int = 64,
        hidden: int = 256,
        depth: int = 2,
        noise: Noise = "normal",
        output: Literal["tanh", "linear"] = "tanh",
        num_classes: int = 0,
        embed_dim: int = 16,
        image_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        self.z_dim, self.noise, self.shape = z_dim, noise, tuple(image_shape)
        self.num_classes = num_classes
        if num_classes:
            self.embed = nn.Embedding(num_classes, embed_dim)
        inputs = z_dim + (embed_dim if num_classes else 0)
        self.net = nn.Sequential(
            *_stack(inputs, hidden, depth, nn.ReLU()),
            nn.Linear(hidden, math.prod(self.shape)),
            nn.Tanh() if output == "tanh" else nn.Identity(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self, labels)
        if labels is not None:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        return self.net(z).view(-1, *self.shape)


class MLPDiscriminatorParams(MLPParams):
    """Parameters of the MLP discriminator."""

    spectral_norm: bool = Field(False, description="spectral normalisation of every layer")


@DISCRIMINATORS.register("mlp", params=MLPDiscriminatorParams)
class MLPDiscriminator(nn.Module):
    """MLP discriminator: a flattened sample through `depth` LeakyReLU layers to one logit
    (plus a projection class term when `num_classes` is set)."""

    def __init__(
        self,
        hidden: int = 256,
        depth: int = 2,
        spectral_norm: bool = False,
        num_classes: int = 0,
        image_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Flatten(), *_stack(math.prod(image_shape), hidden, depth, nn.LeakyReLU(0.2))
        )
        self.classify = nn.Linear(hidden, 1)
        if num_classes:
            self.project = Projection(num_classes, hidden)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self, labels)
        features = self.features(samples)
        logits = self.classify(features)
        return logits if labels is None else logits + self.project(features, labels)
