"""The 28x28 DCGAN pair of the reference recipe, layer for layer as the TensorFlow original.

TensorFlow semantics are kept where they change the numbers: 'same' padding is asymmetric
(more at the bottom/right), `tf.contrib.layers.batch_norm` learns a shift but no scale, its
decay 0.9 is torch momentum 0.1 and its eps is 1e-3, and kernels start Glorot-uniform with
zero biases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

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
from gankit.core.sizes import MAX_CLASSES, MAX_WIDTH

# BatchNorm settings shared by both networks (defaults: TF1 `batch_norm`)
BNMomentum = Annotated[float, Field(gt=0, le=1, description="torch momentum (TF decay 0.9)")]
BNEps = Annotated[float, Field(gt=0, description="variance epsilon")]
BNScale = Annotated[bool, Field(description="learn a per-channel scale (TF default: no)")]


def tf_batch_norm(
    channels: int, bn_momentum: float, bn_eps: float, bn_scale: bool
) -> nn.BatchNorm2d:
    """A BatchNorm2d with TF1 semantics: a learned shift and, only if `bn_scale`, a scale."""
    norm = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)
    if not bn_scale:
        norm.register_parameter("weight", None)
    return norm


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) for one spatial dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """Stride-2 transposed conv with TF 'same' output alignment: doubles H and W exactly."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        # TF crops (k - s) // 2 rows before and the rest after; torch crops `padding` on both
        # sides, so crop the leading rows here and cut the trailing ones in forward.
        super().__init__(
            in_channels, out_channels, kernel_size, stride=2, padding=(kernel_size - 2) // 2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return super().forward(x)[..., : 2 * height, : 2 * width]


def conv2d_same(in_channels: int, out_channels: int, size: int) -> nn.Sequential:
    """A 5x5 stride-2 conv with TF 'same' padding for a `size` x `size` input."""
    before, after = tf_same_padding(size, 5, 2)
    return nn.Sequential(
        nn.ZeroPad2d((before, after, before, after)),
        nn.Conv2d(in_channels, out_channels, 5, stride=2),
    )


def glorot_init(module: nn.Module) -> None:
    """TF layer defaults: Glorot-uniform kernels, zero biases (BatchNorm left as is)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def check_image_shape(image_shape: Sequence[int], who: str) -> int:
    """Return the channel count of a (C, 28, 28) shape, or explain why it does not fit."""
    if len(image_shape) != 3 or tuple(image_shape[1:]) != (28, 28):
        raise ValueError(
            f"{who} makes 28x28 images but the dataset's images are {tuple(image_shape)}; "
            "pick a model for that size or resize the data"
        )
    return int(image_shape[0])


@GENERATORS.register("dcgan28")
class DCGAN28Generator(Generator):
    """DCGAN generator for 28x28 images: dense to 3x3, three stride-2 upsamplings, 5x5 'valid'.

    With `num_classes`, a learned label embedding is concatenated to z (class-conditional).
    """

    def __init__(
        self,
        *,
        bn_momentum: BNMomentum = 0.1,
        bn_eps: BNEps = 1e-3,
        bn_scale: BNScale = False,
        z_dim: LatentSize = 100,
        width: Annotated[
            int,
            Field(
                gt=0,
                le=MAX_WIDTH,
                description="channels of the last hidden layer; 8x at the first; at most "
                f"{MAX_WIDTH:,}",
            ),
        ] = 64,
        noise: Annotated[
            Noise, Field(description="uniform in [-1, 1] or standard normal")
        ] = "uniform",
        num_classes: ClassCount = 0,
        embed_dim: EmbedSize = 50,
        image_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        channels = check_image_shape(image_shape, "generator 'dcgan28'")
        bn = {"bn_momentum": bn_momentum, "bn_eps": bn_eps, "bn_scale": bn_scale}
        self.z_dim, self.noise, self.width = z_dim, noise, width
        self.num_classes = num_classes
        inputs = z_dim + self.add_label_embedding(embed_dim)
        self.project = nn.Linear(inputs, 3 * 3 * 8 * width)
        self.project_norm = tf_batch_norm(8 * width, **bn)
        blocks = []
        for in_ch, out_ch in ((8 * width, 4 * width), (4 * width, 2 * width), (2 * width, width)):
            blocks += [ConvTranspose2dSame(in_ch, out_ch), tf_batch_norm(out_ch, **bn), nn.ReLU()]
        self.upsample = nn.Sequential(*blocks)  # 3 -> 6 -> 12 -> 24
        self.to_image = nn.ConvTranspose2d(width, channels, 5)  # 24 -> 28 ('valid')
        glorot_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = self.join_labels(z, labels)
        h = self.project(z).view(-1, 8 * self.width, 3, 3)
        h = torch.relu(self.project_norm(h))
        return torch.tanh(self.to_image(self.upsample(h)))


@DISCRIMINATORS.register("dcgan28")
class DCGAN28Discriminator(Discriminator):
    """DCGAN discriminator for 28x28 images: four stride-2 convs, then one logit per image.

    With `num_classes`, a projection term <embed(y), features> is added to the logit.
    """

    def __init__(
        self,
        *,
        bn_momentum: BNMomentum = 0.1,
        bn_eps: BNEps = 1e-3,
        bn_scale: BNScale = False,
        width: Annotated[
            int,
            Field(
                gt=0,
                le=MAX_WIDTH,
                description=f"channels of the first conv; 8x at the last; at most {MAX_WIDTH:,}",
            ),
        ] = 64,
        batch_norm: Annotated[
            bool, Field(description="BatchNorm after convs 2-4 (reference: yes)")
        ] = True,
        spectral_norm: SpectralNorm = False,
        num_classes: Annotated[
            int,
            Field(
                ge=0,
                le=MAX_CLASSES,
                description=f"classes (projection head); 0: unconditional; at most {MAX_CLASSES:,}",
            ),
        ] = 0,
        image_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        channels = check_image_shape(image_shape, "discriminator 'dcgan28'")
        self.num_classes = num_classes
        bn = {"bn_momentum": bn_momentum, "bn_eps": bn_eps, "bn_scale": bn_scale}
        layers: list[nn.Module] = [conv2d_same(channels, width, 28), nn.LeakyReLU(0.2)]
        size, in_ch = 14, width
        for out_ch in (2 * width, 4 * width, 8 * width):  # 14 -> 7 -> 4 -> 2
            norm = [tf_batch_norm(out_ch, **bn)] if batch_norm else []
            layers += [conv2d_same(in_ch, out_ch, size), *norm, nn.LeakyReLU(0.2)]
            size, in_ch = -(-size // 2), out_ch
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classify = nn.Linear(8 * width * size * size, 1)
        glorot_init(self)
        self.add_projection(8 * width * size * size)
        if spectral_norm:
            apply_spectral_norm(self)

    def input_blocks(self) -> list[nn.Module]:
        """Each weighted layer of `features` with its normalisation and activation."""
        return layer_blocks(self.features)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self, labels)
        features = self.features(images)
        return self.project_labels(self.classify(features), features, labels)
