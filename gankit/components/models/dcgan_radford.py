"""The DCGAN pair of Radford et al. (2015) for square power-of-two images, optionally
class-conditional.

Layer for layer the PyTorch DCGAN example: 4x4 kernels, stride-2 (transposed) convs that double
(halve) the size, BatchNorm, ReLU in G and LeakyReLU(0.2) in D, no conv biases, and the paper's
N(0, 0.02) weights. The depth follows the image size: G starts at 4x4 with `width * 2**(n - 1)`
channels and halves them at each of its `n = log2(size) - 2` upsamplings; D mirrors it.

Conditioning: G concatenates a learned label embedding to z; D adds a projection term
(Miyato & Koyama 2018) on the flattened 4x4 features that its final 4x4 conv reads, which makes
the final kernel class-specific: <w + embed(y), h>.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from gankit.components.models.base import (
    Discriminator,
    Generator,
    LatentSize,
    Noise,
    SpectralNorm,
    apply_spectral_norm,
    check_labels,
    layer_blocks,
)
from gankit.config.registry import DISCRIMINATORS, GENERATORS
from gankit.core.sizes import MAX_CLASSES, MAX_IMAGE_SIDE, MAX_LATENT, MAX_WIDTH

MIN_SIZE = 8


def stride2_layers(image_shape: Sequence[int], who: str) -> tuple[int, int]:
    """(channels, number of stride-2 layers) for a (C, S, S) shape with S a power of two >= 8.

    Anything else is refused with a message that names the shape and what to do instead.
    """
    shape = tuple(int(size) for size in image_shape)
    fits = (
        len(shape) == 3
        and shape[0] > 0
        and shape[1] == shape[2]
        and MIN_SIZE <= shape[1] <= MAX_IMAGE_SIDE
        and shape[1] & (shape[1] - 1) == 0
    )
    if not fits:
        raise ValueError(
            f"{who} makes square images with a power-of-two side from {MIN_SIZE} to "
            f"{MAX_IMAGE_SIDE} (8, 16, 32, 64, 128, ...) but the dataset's images are {shape}; "
            "pick a model for that size, e.g. dcgan28 for 28x28, or resize the data with data.size"
        )
    return shape[0], shape[1].bit_length() - 3


def radford_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: conv weights N(0, 0.02), BatchNorm scales N(1, 0.02),
    biases 0 (embeddings left as they are)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


@GENERATORS.register("dcgan")
class DCGANGenerator(Generator):
    """DCGAN generator (Radford et al.) for square power-of-two images: 4x4, then doublings."""

    def __init__(
        self,
        z_dim: LatentSize = 100,
        width: Annotated[
            int,
            Field(
                gt=0,
                le=MAX_WIDTH,
                description="channels of the last hidden layer, doubled at each smaller size "
                f"(64x64: 512-256-128-64); at most {MAX_WIDTH:,}",
            ),
        ] = 64,
        noise: Annotated[
            Noise, Field(description="standard normal or uniform in [-1, 1]")
        ] = "normal",
        num_classes: Annotated[
            int,
            Field(
                ge=0,
                le=MAX_CLASSES,
                description=f"classes to condition on (0: unconditional); at most {MAX_CLASSES:,}",
            ),
        ] = 0,
        embed_dim: Annotated[
            int,
            Field(
                gt=0,
                le=MAX_LATENT,
                description="size of the label embedding concatenated to z (conditional only); "
                f"at most {MAX_LATENT:,}",
            ),
        ] = 50,
        image_shape: Sequence[int] = (3, 64, 64),
    ) -> None:
        super().__init__()
        channels, layers = stride2_layers(image_shape, "generator 'dcgan'")
        self.z_dim, self.noise, self.num_classes = z_dim, noise, num_classes
        in_channels = z_dim + self.add_label_embedding(embed_dim)
        hidden = width * 2 ** (layers - 1)
        blocks: list[nn.Module] = [
            nn.ConvTranspose2d(in_channels, hidden, 4, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
        ]
        for _ in range(layers - 1):
            blocks += [
                nn.ConvTranspose2d(hidden, hidden // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(hidden // 2),
                nn.ReLU(),
            ]
            hidden //= 2
        blocks += [nn.ConvTranspose2d(hidden, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*blocks)
        radford_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from (N, z_dim) noise and, when conditional, (N,) class labels."""
        z = self.join_labels(z, labels)
        return self.net(z[:, :, None, None])


@DISCRIMINATORS.register("dcgan")
class DCGANDiscriminator(Discriminator):
    """DCGAN discriminator (Radford et al.) for square power-of-two images: halvings to 4x4."""

    def __init__(
        self,
        width: Annotated[
            int,
            Field(
                gt=0,
                le=MAX_WIDTH,
                description="channels of the first conv, doubled at each stride-2 conv "
                f"(64x64: 64-128-256-512); at most {MAX_WIDTH:,}",
            ),
        ] = 64,
        batch_norm: Annotated[
            bool, Field(description="BatchNorm after every conv but the first and last")
        ] = True,
        spectral_norm: SpectralNorm = False,
        num_classes: Annotated[
            int,
            Field(
                ge=0,
                le=MAX_CLASSES,
                description="classes to condition on with a projection term (0: unconditional); "
                f"at most {MAX_CLASSES:,}",
            ),
        ] = 0,
        image_shape: Sequence[int] = (3, 64, 64),
    ) -> None:
        super().__init__()
        channels, layers = stride2_layers(image_shape, "discriminator 'dcgan'")
        self.num_classes = num_classes
        blocks: list[nn.Module] = [
            nn.Conv2d(channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
        ]
        hidden = width
        for _ in range(layers - 1):
            norm = [nn.BatchNorm2d(2 * hidden)] if batch_norm else []
            blocks += [
                nn.Conv2d(hidden, 2 * hidden, 4, 2, 1, bias=not batch_norm),
                *norm,
                nn.LeakyReLU(0.2),
            ]
            hidden *= 2
        self.features = nn.Sequential(*blocks)
        self.classify = nn.Conv2d(hidden, 1, 4, 1, 0, bias=False)
        self.add_projection(hidden * 4 * 4)
        radford_init(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def input_blocks(self) -> list[nn.Module]:
        """Each weighted layer of `features` with its normalisation and activation."""
        return layer_blocks(self.features)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 1) logits for images and, when conditional, their (N,) class labels."""
        check_labels(self, labels)
        features = self.features(images)
        logits = self.classify(features).flatten(1)
        return self.project_labels(logits, features.flatten(1), labels)
