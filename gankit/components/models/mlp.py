"""Fully connected generator and discriminator for any sample shape (images or points).

No normalisation layers: the pair for toy data, quick experiments, and checks where batch
statistics would get in the way (multi-process parity, gradient accumulation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from gankit.components.models.base import (
    ClassCount,
    Discriminator,
    EmbedSize,
    Generator,
    LatentSize,
    Noise,
    SpectralNorm,
    apply_spectral_norm,
    check_labels,
    layer_blocks,
)
from gankit.config.registry import DISCRIMINATORS, GENERATORS
from gankit.core.sizes import MAX_DEPTH, MAX_WIDTH

# Width and depth of either network
Hidden = Annotated[
    int,
    Field(gt=0, le=MAX_WIDTH, description=f"units per hidden layer; at most {MAX_WIDTH:,}"),
]
Depth = Annotated[
    int, Field(ge=1, le=MAX_DEPTH, description=f"hidden layers; at most {MAX_DEPTH:,}")
]


def _stack(in_features: int, hidden: int, depth: int, activation: nn.Module) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for index in range(depth):
        layers += [nn.Linear(in_features if index == 0 else hidden, hidden), activation]
    return layers


@GENERATORS.register("mlp")
class MLPGenerator(Generator):
    """MLP generator: noise through `depth` ReLU layers to a sample of the data's shape.

    When conditional, a label embedding is concatenated to the noise.
    """

    def __init__(
        self,
        *,
        hidden: Hidden = 256,
        depth: Depth = 2,
        num_classes: ClassCount = 0,
        z_dim: LatentSize = 64,
        noise: Annotated[
            Noise, Field(description="uniform in [-1, 1] or standard normal")
        ] = "normal",
        output: Annotated[
            Literal["tanh", "linear"],
            Field(description="tanh for images in [-1, 1], linear for unbounded data"),
        ] = "tanh",
        embed_dim: EmbedSize = 16,
        image_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        self.z_dim, self.noise, self.shape = z_dim, noise, tuple(image_shape)
        self.num_classes = num_classes
        inputs = z_dim + self.add_label_embedding(embed_dim)
        self.net = nn.Sequential(
            *_stack(inputs, hidden, depth, nn.ReLU()),
            nn.Linear(hidden, math.prod(self.shape)),
            nn.Tanh() if output == "tanh" else nn.Identity(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = self.join_labels(z, labels)
        return self.net(z).view(-1, *self.shape)


@DISCRIMINATORS.register("mlp")
class MLPDiscriminator(Discriminator):
    """MLP discriminator: a flattened sample through `depth` LeakyReLU layers to one logit.

    When conditional (`num_classes`), a projection class term is added to the logit.
    """

    def __init__(
        self,
        *,
        hidden: Hidden = 256,
        depth: Depth = 2,
        num_classes: ClassCount = 0,
        spectral_norm: SpectralNorm = False,
        image_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Flatten(), *_stack(math.prod(image_shape), hidden, depth, nn.LeakyReLU(0.2))
        )
        self.classify = nn.Linear(hidden, 1)
        self.add_projection(hidden)
        if spectral_norm:
            apply_spectral_norm(self)

    def input_blocks(self) -> list[nn.Module]:
        """Each weighted layer of `features` with its normalisation and activation."""
        return layer_blocks(self.features)

    def forward(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self, labels)
        features = self.features(samples)
        return self.project_labels(self.classify(features), features, labels)
