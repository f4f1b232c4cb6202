"""The R3GAN pair of Huang et al., "The GAN is dead; long live the GAN! A Modern GAN Baseline"
(NeurIPS 2024), in plain PyTorch, following the authors' code (brownvc/R3GAN: `R3GAN/Networks.py`,
`FusedOperators.py`, `Resamplers.py`).

Both networks are stages of residual blocks, one stage per resolution, with no normalization
layers. A block is an inverted bottleneck: a 1x1 conv expands the channels `expansion` times, a
3x3 conv in `cardinality` groups mixes space, a 1x1 conv projects back, and the result is added to
the input; each of the first two convs is followed by a learned per-channel bias and
LeakyReLU(0.2) (the authors' `BiasedActivation`); the convs and linear layers have no biases of
their own.

Initialisation (the paper's "fix-up" variance scaling): every weight is N(0, gain^2 / fan_in);
the last conv of each block starts at zero, so a fresh block is the identity, and the first two
take gain sqrt(2 / (1 + 0.2^2)) * L^(-1/4), L the network's number of blocks (with 3 convs per
block the exponent is -1 / (2 * 3 - 2)). Every other layer has gain 1; the learned 4x4 basis of G
starts N(0, 1).

G: z (with, when class-conditional, a label embedding concatenated to it) -> linear -> one
weight per channel of a learned 4x4 basis (`GenerativeBasis`) -> blocks -> [1x1 conv if the
channels change, 2x upsampling, blocks] per stage -> 1x1 conv to the image channels. The output
is not squashed (the authors' generator ends with that 1x1 conv): images come out about in
[-1, 1], and sample grids and exports' pictures clamp them; `output: tanh` bounds them.

D mirrors it: 1x1 conv from the image channels -> [blocks, 2x downsampling, 1x1 conv if the
channels change] per stage -> blocks at 4x4 -> a 4x4 depthwise conv that reduces each channel to
one number, then linear (`DiscriminativeBasis`) to the logit; class-conditional, to a vector the
size of the 4x4 stage's channels whose dot product with a label embedding is the logit
(projection, as the authors: no unconditional term).

Resampling: the authors' fixed low-pass filter [1, 3, 3, 1] / 8 (from `[1, 2, 1]` convolved with
`[1, 1]`), as a separable 4x4 kernel: zero-insertion then the filter (gain 4) to upsample, the
filter then stride 2 to downsample, with zero padding at the borders (`upfirdn2d.upsample2d` and
`downsample2d`, of which `Resamplers.py` has these plain-PyTorch references). Inside the image
this is exactly bilinear interpolation (half-pixel centres: `F.interpolate(..., mode="bilinear",
align_corners=False)`) up, and antialiased bilinear halving (`antialias=True`) down; only the
outermost row and column differ (zero padding rather than clamping). Here it is a depthwise
(transposed) conv with a constant kernel, which supports the double backward of R1/R2 and any
memory format.

Sizes: square images of side 16, 32, 64, 128 or 256 (a 4x4 basis) and 28 (MNIST: a 7x7 basis,
7 -> 14 -> 28), 1 to 4 channels. `width` is the channel count of every stage up to 32x32; each
stage above halves it, and its groups, as the authors' FFHQ presets do (64x64: 768 -> 384).

The authors' presets in these terms: CIFAR-10 (32x32) `width: 768, blocks: 2, cardinality: 96,
expansion: 2, z_dim: 64` (the defaults; class-conditional with `embed_dim: 64`), FFHQ 64x64 the
same (its 64x64 stage has 384 channels in 48 groups).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from gankit.components.models.base import (
    ClassCount,
    Discriminator,
    EmbedSize,
    Generator,
    LatentSize,
    Noise,
    check_labels,
)
from gankit.config.registry import DISCRIMINATORS, GENERATORS
from gankit.core.sizes import MAX_CHANNELS, MAX_CLASSES, MAX_DEPTH, MAX_WIDTH

LEAK = 0.2
ACTIVATION_GAIN = math.sqrt(2 / (1 + LEAK**2))  # the authors' BiasedActivation.Gain
LINEAR_LAYERS_PER_BLOCK = 3
LOWPASS = (1.0, 3.0, 3.0, 1.0)  # numpy.convolve([1, 2, 1], [1, 1])
FULL_WIDTH_SIDE = 32  # stages up to this side have `width` channels; each one above halves them
POWER_OF_TWO_SIDES = (16, 32, 64, 128, 256)
MNIST_SIDE, MNIST_BASIS = 28, 7

Width = Annotated[
    int,
    Field(
        gt=0,
        le=MAX_WIDTH,
        description="channels of every stage up to 32x32, halved at each larger one (paper, "
        f"CIFAR-10: 768); at most {MAX_WIDTH:,}",
    ),
]
Blocks = Annotated[
    int,
    Field(
        gt=0,
        le=MAX_DEPTH,
        description=f"residual blocks per stage (paper: 2); at most {MAX_DEPTH:,}",
    ),
]
Cardinality = Annotated[
    int,
    Field(
        gt=0,
        le=MAX_WIDTH,
        description="groups of each block's 3x3 conv (paper, CIFAR-10: 96), halved with the "
        f"channels above 32x32, at most one per channel; at most {MAX_WIDTH:,}",
    ),
]
Expansion = Annotated[
    int,
    Field(
        gt=0,
        le=MAX_WIDTH,
        description="each block's inner channels as a multiple of its stage's (paper: 2); "
        f"at most {MAX_WIDTH:,}",
    ),
]


def msr_init(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """The authors' `MSRInitializer`: weights N(0, (gain / sqrt(fan_in))^2), biases zero."""
    weight = layer.weight
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    nn.init.normal_(weight, 0.0, gain / math.sqrt(fan_in))
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv(in_channels: int, out_channels: int, kernel: int = 1, groups: int = 1, gain: float = 1.0):
    """A bias-free 'same' conv, initialised as the authors' `Convolution`."""
    layer = nn.Conv2d(
        in_channels, out_channels, kernel, padding=(kernel - 1) // 2, groups=groups, bias=False
    )
    return msr_init(layer, gain)


class BiasedActivation(nn.Module):
    """A learned per-channel bias, then LeakyReLU(0.2) (the authors' `BiasedActivation`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return F.leaky_relu(x + self.bias.to(x.dtype).view(shape), LEAK)


class ResidualBlock(nn.Module):
    """x + project(act(grouped(act(expand(x))))): an inverted bottleneck, identity when fresh.

    `total_blocks` is the network's number of blocks L: the first two convs start with gain
    sqrt(2 / 1.04) * L^(-1/4), the last at zero.
    """

    def __init__(self, channels: int, expansion: int, cardinality: int, total_blocks: int) -> None:
        super().__init__()
        inner = channels * expansion
        gain = ACTIVATION_GAIN * total_blocks ** (-1 / (2 * LINEAR_LAYERS_PER_BLOCK - 2))
        self.expand = conv(channels, inner, 1, gain=gain)
        self.act1 = BiasedActivation(inner)
        self.grouped = conv(inner, inner, 3, groups=cardinality, gain=gain)
        self.act2 = BiasedActivation(inner)
        self.project = conv(inner, channels, 1, gain=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.act2(self.grouped(self.act1(self.expand(x)))))


def lowpass_kernel() -> torch.Tensor:
    """The authors' 4x4 low-pass kernel: the outer product of [1, 3, 3, 1], summing to 1."""
    taps = torch.tensor(LOWPASS)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum()


class Resample(nn.Module):
    """2x up- or downsampling of each of `channels` channels with the fixed [1, 3, 3, 1]
    low-pass filter (bilinear inside the image; see the module's docstring)."""

    def __init__(self, channels: int, up: bool) -> None:
        super().__init__()
        self.up = up
        gain = 4.0 if up else 1.0  # zero-insertion leaves a quarter of the samples
        kernel = (gain * lowpass_kernel()).expand(channels, 1, 4, 4).contiguous()
        self.register_buffer("kernel", kernel, persistent=False)  # a constant, not a weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, channels = self.kernel.to(x.dtype), self.kernel.shape[0]
        if self.up:
            return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=channels)
        return F.conv2d(x, kernel, stride=2, padding=1, groups=channels)


class Upsample(nn.Module):
    """G's transition between stages: a 1x1 conv when the channels change, then 2x up."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = conv(in_channels, out_channels) if in_channels != out_channels else None
        self.resample = Resample(out_channels, up=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample(x if self.linear is None else self.linear(x))


class Downsample(nn.Module):
    """D's transition between stages: 2x down, then a 1x1 conv when the channels change."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.resample = Resample(in_channels, up=False)
        self.linear = conv(in_channels, out_channels) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resample(x)
        return x if self.linear is None else self.linear(x)


class GenerativeBasis(nn.Module):
    """A learned side x side basis per channel, each weighted by a linear function of the input
    vector: (N, in_features) -> (N, channels, side, side)."""

    def __init__(self, in_features: int, channels: int, side: int) -> None:
        super().__init__()
        self.basis = nn.Parameter(torch.randn(channels, side, side))
        self.linear = msr_init(nn.Linear(in_features, channels, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basis.to(x.dtype)[None] * self.linear(x)[:, :, None, None]


class DiscriminativeBasis(nn.Module):
    """A side x side depthwise conv that reduces each channel to one number, then linear:
    (N, channels, side, side) -> (N, out_features)."""

    def __init__(self, channels: int, out_features: int, side: int) -> None:
        super().__init__()
        self.basis = msr_init(nn.Conv2d(channels, channels, side, groups=channels, bias=False))
        self.linear = msr_init(nn.Linear(channels, out_features, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.basis(x).flatten(1))


def plan(
    image_shape: Sequence[int], who: str, width: int, cardinality: int, expansion: int
) -> tuple[int, list[tuple[int, int, int]]]:
    """The channel count of the images and the stages, smallest first: (side, channels, groups).

    Refuses, naming what to change, image shapes other than (1..4, S, S) with S in 16..256 (a
    power of two) or 28, and block sizes whose groups do not divide their channels."""
    shape = tuple(int(size) for size in image_shape)
    sides = (*POWER_OF_TWO_SIDES, MNIST_SIDE)
    if not (
        len(shape) == 3
        and 1 <= shape[0] <= MAX_CHANNELS
        and shape[1] == shape[2]
        and shape[1] in sides
    ):
        raise ValueError(
            f"{who} makes square images of side 16, 32, 64, 128, 256 or 28 with 1 to "
            f"{MAX_CHANNELS} channels but the dataset's images are {shape}; resize the data "
            "with data.size or pick a model for that size"
        )
    side = shape[1]
    base = MNIST_BASIS if side == MNIST_SIDE else 4
    stages = []
    while base <= side:
        halvings = max(0, (base // FULL_WIDTH_SIDE).bit_length() - 1)
        channels = max(1, width >> halvings)
        inner = channels * expansion
        if inner > MAX_WIDTH:
            raise ValueError(
                f"{who}'s blocks would have {inner:,} inner channels (width {width} x expansion "
                f"{expansion}), more than {MAX_WIDTH:,}; lower width or expansion"
            )
        groups = min(max(1, cardinality >> halvings), inner)
        if inner % groups:
            raise ValueError(
                f"{who}'s {base}x{base} blocks have {inner} inner channels (width {width} x "
                f"expansion {expansion}) that {groups} groups (cardinality {cardinality}) do "
                "not divide; pick a cardinality that divides width x expansion"
            )
        stages.append((base, channels, groups))
        base *= 2
    return shape[0], stages


@GENERATORS.register("r3gan")
class R3GANGenerator(Generator):
    """R3GAN generator (Huang et al. 2024): a learned 4x4 basis, then stages of grouped
    inverted-bottleneck residual blocks, bilinear 2x upsampling; no normalization."""

    def __init__(
        self,
        *,
        z_dim: LatentSize = 64,
        width: Width = 768,
        blocks: Blocks = 2,
        cardinality: Cardinality = 96,
        expansion: Expansion = 2,
        noise: Annotated[
            Noise, Field(description="standard normal (paper) or uniform in [-1, 1]")
        ] = "normal",
        num_classes: ClassCount = 0,
        embed_dim: EmbedSize = 64,
        output: Annotated[
            Literal["linear", "tanh"],
            Field(description="linear: as the authors (about [-1, 1]); tanh: bounded to it"),
        ] = "linear",
        image_shape: Sequence[int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        channels, stages = plan(image_shape, "generator 'r3gan'", width, cardinality, expansion)
        self.z_dim, self.noise, self.num_classes, self.output = z_dim, noise, num_classes, output
        total_blocks = blocks * len(stages)
        in_features = z_dim + self.add_label_embedding(embed_dim)
        if self.embed is not None:  # the authors' bias-free linear layer on one-hot labels
            nn.init.normal_(self.embed.weight, 0.0, 1 / math.sqrt(num_classes))
        side, previous, _ = stages[0]
        self.basis = GenerativeBasis(in_features, previous, side)
        self.stages = nn.ModuleList()
        for index, (_side, width_here, groups) in enumerate(stages):
            layers = [] if index == 0 else [Upsample(previous, width_here)]
            layers += [
                ResidualBlock(width_here, expansion, groups, total_blocks) for _ in range(blocks)
            ]
            self.stages.append(nn.Sequential(*layers))
            previous = width_here
        self.to_image = conv(previous, channels)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (about [-1, 1]) from (N, z_dim) noise and, when conditional, (N,) labels."""
        z = self.join_labels(z, labels)
        x = self.basis(z)
        for stage in self.stages:
            x = stage(x)
        images = self.to_image(x)
        return torch.tanh(images) if self.output == "tanh" else images


@DISCRIMINATORS.register("r3gan")
class R3GANDiscriminator(Discriminator):
    """R3GAN discriminator (Huang et al. 2024): stages of grouped inverted-bottleneck residual
    blocks, bilinear 2x downsampling, a learned 4x4 basis to the logit; no normalization."""

    def __init__(
        self,
        *,
        width: Width = 768,
        blocks: Blocks = 2,
        cardinality: Cardinality = 96,
        expansion: Expansion = 2,
        num_classes: Annotated[
            int,
            Field(
                ge=0,
                le=MAX_CLASSES,
                description="classes; the logit is the projection of a label embedding (the "
                f"4x4 stage's width) on D's features; 0: unconditional; at most {MAX_CLASSES:,}",
            ),
        ] = 0,
        image_shape: Sequence[int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        channels, stages = plan(image_shape, "discriminator 'r3gan'", width, cardinality, expansion)
        self.num_classes = num_classes
        total_blocks = blocks * len(stages)
        stages = stages[::-1]  # largest first
        previous = stages[0][1]
        self.from_image = conv(channels, previous)
        self.stages = nn.ModuleList()
        for index, (_side, width_here, groups) in enumerate(stages):
            layers: list[nn.Module] = [
                ResidualBlock(width_here, expansion, groups, total_blocks) for _ in range(blocks)
            ]
            if index + 1 < len(stages):
                layers.append(Downsample(width_here, stages[index + 1][1]))
            self.stages.append(nn.Sequential(*layers))
            previous = width_here
        side = stages[-1][0]
        self.basis = DiscriminativeBasis(previous, previous if num_classes else 1, side)
        self.add_projection(previous)
        if self.project is not None:  # the authors' embedding: gain 1 / sqrt(its size)
            std = 1 / math.sqrt(previous) / math.sqrt(num_classes)
            nn.init.normal_(self.project.embed.weight, 0.0, std)

    def input_blocks(self) -> list[nn.Module]:
        """One block per resolution, the first with the layer that reads the image."""
        return [nn.ModuleList([self.from_image, self.stages[0]]), *self.stages[1:]]

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 1) logits for images and, when conditional, their (N,) class labels."""
        check_labels(self, labels)
        x = self.from_image(images)
        for stage in self.stages:
            x = stage(x)
        features = self.basis(x)
        return features if self.project is None else self.project(features, labels)
