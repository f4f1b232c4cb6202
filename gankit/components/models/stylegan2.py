"""The StyleGAN2 pair (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN",
CVPR 2020): a mapping network, a skip generator of modulated convolutions, and a residual
discriminator with a minibatch standard deviation layer. Plain PyTorch; layers in
`stylegan2_layers.py`.

Generator: z (normalised to unit second moment; with classes, a normalised label embedding
concatenated) -> `mapping_layers` fully connected layers (lr multiplier 0.01) -> w. A learned
4x4 constant, then per resolution two modulated 3x3 convolutions (the first upsamples) with
noise inputs, and a toRGB whose images are upsampled and summed. Each layer reads its own copy
of w; in training mode, with probability `mixing_prob`, the copies switch from w to a second w
at a random crossover layer (style mixing). Training also tracks w's moving average (`w_avg`, a
buffer: exported and checkpointed), toward which `truncation` pulls w.

Noise inputs: training draws fresh noise at every call; eval mode (sampling, grids, exports)
adds each layer's fixed noise buffer, so a sample depends only on z (`noise_mode` 'const').
`forward(..., noise_mode=...)` picks 'random', 'const' or 'none' explicitly.

Images are not squashed into [-1, 1] (as the authors' are not); image grids clamp them.

Channels: `width` at the image's resolution, doubled at each halving down to 4x4, at most
`max_channels` (the authors' channel_base is width x image side). Sizes: square, power-of-two
sides from 8 to 1024, and 28x28 (made at 32x32 and cropped by 2 pixels on each side; D pads
28x28 images back to 32x32 by repeating their border).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Annotated, Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from gankit.components.models.base import (
    ClassCount,
    Discriminator,
    Generator,
    LatentSize,
    Noise,
    check_labels,
    check_truncation,
)
from gankit.components.models.stylegan2_layers import (
    EqualConv2d,
    EqualLinear,
    StyleConv,
    ToRGB,
    fir_filter,
    minibatch_stddev,
    normalize_second_moment,
    upsample,
)
from gankit.config.registry import DISCRIMINATORS, GENERATORS
from gankit.core.sizes import MAX_BATCH, MAX_CHANNELS, MAX_DEPTH, MAX_LATENT, MAX_WIDTH

MIN_SIDE, MAX_SIDE = 8, 1024
PADDED = {28: 32}  # sides made at a larger power of two and cropped (G) or padded (D)
NoiseMode = Literal["random", "const", "none"]
NOISE_MODES = get_args(NoiseMode)

Width = Annotated[
    int,
    Field(
        gt=0,
        le=MAX_WIDTH,
        description="channels at the image's resolution, doubled at each halving down to 4x4 "
        f"(capped by max_channels); at most {MAX_WIDTH:,}",
    ),
]
WSize = Annotated[
    int,
    Field(
        gt=0, le=MAX_LATENT, description=f"size of w, the mapping's output; at most {MAX_LATENT:,}"
    ),
]
MaxChannels = Annotated[
    int, Field(gt=0, le=MAX_WIDTH, description=f"most channels of any layer; at most {MAX_WIDTH:,}")
]


def geometry(image_shape: Sequence[int], who: str) -> tuple[int, int, int]:
    """(channels, side the network works at, pixels cropped or padded per side) of a
    (C, S, S) shape; anything else is refused with a message naming the shape."""
    shape = tuple(int(size) for size in image_shape)
    side = shape[1] if len(shape) == 3 else 0
    built = PADDED.get(side, side)
    fits = (
        len(shape) == 3
        and 1 <= shape[0] <= MAX_CHANNELS
        and shape[1] == shape[2]
        and MIN_SIDE <= built <= MAX_SIDE
        and built & (built - 1) == 0
    )
    if not fits:
        raise ValueError(
            f"{who} makes square images with 1 to {MAX_CHANNELS} channels and a power-of-two side "
            f"from {MIN_SIDE} to {MAX_SIDE}, or 28x28, but the dataset's images are {shape}; "
            "resize the data with data.size"
        )
    return shape[0], built, (built - side) // 2


def channel_counts(side: int, width: int, max_channels: int) -> dict[int, int]:
    """Channels per resolution, 4 up to `side`: `width` at `side`, doubling as it halves."""
    return {
        4 * 2**k: min(width * side // (4 * 2**k), max_channels)
        for k in range(side.bit_length() - 2)
    }


class MappingNetwork(nn.Module):
    """z (and a label) -> w: normalised inputs through `layers` LeakyReLU layers, lr mult 0.01."""

    def __init__(
        self, z_dim: int, w_dim: int, layers: int, num_classes: int, lr_mul: float = 0.01
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = EqualLinear(num_classes, w_dim) if num_classes else None
        sizes = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * layers
        self.layers = nn.Sequential(
            *(EqualLinear(a, b, activate=True, lr_mul=lr_mul) for a, b in itertools.pairwise(sizes))
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x = normalize_second_moment(z)
        if self.embed is not None and labels is not None:
            one_hot = F.one_hot(labels, self.num_classes).to(x.dtype)
            x = torch.cat([x, normalize_second_moment(self.embed(one_hot))], dim=1)
        return self.layers(x)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (upsampling conv,) conv, toRGB."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, channels: int
    ) -> None:
        super().__init__()
        self.conv0 = (
            StyleConv(in_channels, out_channels, w_dim, resolution, up=True)
            if in_channels
            else None
        )
        self.conv1 = StyleConv(out_channels, out_channels, w_dim, resolution, up=False)
        self.to_rgb = ToRGB(out_channels, channels, w_dim)
        self.convs = 2 if in_channels else 1


@GENERATORS.register("stylegan2")
class StyleGAN2Generator(Generator):
    """StyleGAN2 generator (Karras et al. 2020): mapping network, modulated convs, skip toRGBs."""

    path_length_latents = True  # path length in w, as StyleGAN2

    def __init__(
        self,
        z_dim: LatentSize = 512,
        w_dim: WSize = 512,
        mapping_layers: Annotated[
            int, Field(ge=1, le=MAX_DEPTH, description=f"layers z -> w; at most {MAX_DEPTH}")
        ] = 8,
        width: Width = 128,
        max_channels: MaxChannels = 512,
        mixing_prob: Annotated[
            float, Field(ge=0, le=1, description="chance of style mixing per training batch")
        ] = 0.9,
        w_avg_beta: Annotated[
            float, Field(ge=0, lt=1, description="decay of the moving average of w (truncation)")
        ] = 0.995,
        num_classes: ClassCount = 0,
        noise: Annotated[
            Noise, Field(description="distribution of z: standard normal or uniform in [-1, 1]")
        ] = "normal",
        image_shape: Sequence[int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        channels, side, self.crop = geometry(image_shape, "generator 'stylegan2'")
        self.z_dim, self.noise, self.num_classes = z_dim, noise, num_classes
        self.mixing_prob, self.w_avg_beta = mixing_prob, w_avg_beta
        counts = channel_counts(side, width, max_channels)
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, num_classes)
        self.const = nn.Parameter(torch.randn(counts[4], 4, 4))
        self.blocks = nn.ModuleList(
            SynthesisBlock(counts.get(res // 2, 0) if res > 4 else 0, count, w_dim, res, channels)
            for res, count in counts.items()
        )
        self.num_ws = sum(block.convs for block in self.blocks) + 1
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.register_buffer("kernel", fir_filter(), persistent=False)

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        truncation: float = 1.0,
        noise_mode: NoiseMode | None = None,
        return_latents: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images from (N, z_dim) noise (and (N,) labels when conditional). `truncation` psi
        pulls w toward its average; `noise_mode` defaults to 'random' in training, else 'const'.
        `return_latents`: also the per-layer w (N, num_ws, w_dim), for the path-length
        regularizer (StyleGAN2 measures the Jacobian in w)."""
        check_labels(self, labels)
        noise_mode = noise_mode or ("random" if self.training else "const")
        if noise_mode not in NOISE_MODES:
            raise ValueError(
                f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}"
            )
        ws = self.styles(z, labels, truncation)
        images = self.synthesize(ws, noise_mode)
        return (images, ws) if return_latents else images

    def generate(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, *, truncation: float = 1.0
    ) -> torch.Tensor:
        """Call the generator; `truncation` psi pulls w (not z) toward the average w."""
        return self(z, labels, truncation=check_truncation(truncation))

    def styles(
        self, z: torch.Tensor, labels: torch.Tensor | None, truncation: float = 1.0
    ) -> torch.Tensor:
        """(N, num_ws, w_dim): the w each layer reads (mixed and tracked in training)."""
        w = self.mapping(z, labels)
        ws = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
            if self.mixing_prob > 0:
                ws = self.mix(ws, z, labels)
        if truncation != 1:
            ws = self.w_avg.to(ws.dtype).lerp(ws, truncation)
        return ws

    def mix(self, ws: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Style mixing: with probability `mixing_prob`, the layers from a random crossover
        (1 .. num_ws - 1, one per batch) read the w of fresh noise. No host sync."""
        fresh = torch.randn_like(z) if self.noise == "normal" else torch.rand_like(z) * 2 - 1
        other = self.mapping(fresh, labels).unsqueeze(1)
        device = ws.device
        crossover = torch.randint(1, self.num_ws, (), device=device)
        crossover = torch.where(
            torch.rand((), device=device) < self.mixing_prob, crossover, self.num_ws
        )
        switched = (torch.arange(self.num_ws, device=device) >= crossover).view(1, -1, 1)
        return torch.where(switched, other.to(ws.dtype), ws)

    def synthesize(self, ws: torch.Tensor, noise_mode: NoiseMode = "const") -> torch.Tensor:
        """Images from per-layer styles (N, num_ws, w_dim)."""
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        image, index = None, 0
        for block in self.blocks:
            if block.conv0 is not None:
                x = block.conv0(x, ws[:, index], noise_mode)
                index += 1
            x = block.conv1(x, ws[:, index], noise_mode)
            index += 1
            rgb = block.to_rgb(x, ws[:, index])  # shares its w with the next block's first conv
            image = rgb if image is None else upsample(image, self.kernel) + rgb
        if self.crop:
            image = image[:, :, self.crop : -self.crop, self.crop : -self.crop]
        return image


class DiscriminatorBlock(nn.Module):
    """A residual block of D: two 3x3 convs (the second downsamples) plus a downsampling 1x1
    skip, summed and scaled by 1/sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True, gain=math.sqrt(0.5))
        self.skip = EqualConv2d(
            in_channels, out_channels, 1, down=True, bias=False, activate=False, gain=math.sqrt(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.conv1(self.conv0(x))


@DISCRIMINATORS.register("stylegan2")
class StyleGAN2Discriminator(Discriminator):
    """StyleGAN2 residual discriminator (Karras et al. 2020) with minibatch standard deviation.

    Conditional through a projection term on the features before its output layer."""

    def __init__(
        self,
        width: Width = 128,
        max_channels: MaxChannels = 512,
        mbstd_group: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_BATCH,
                description="samples per group of the minibatch stddev layer (lowered to a "
                f"divisor of the batch); at most {MAX_BATCH:,}",
            ),
        ] = 4,
        num_classes: ClassCount = 0,
        image_shape: Sequence[int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        channels, side, self.pad = geometry(image_shape, "discriminator 'stylegan2'")
        self.num_classes, self.mbstd_group = num_classes, mbstd_group
        counts = channel_counts(side, width, max_channels)
        self.from_rgb = EqualConv2d(channels, counts[side], 1)
        self.blocks = nn.Sequential(
            *(DiscriminatorBlock(counts[res], counts[res // 2]) for res in sorted(counts)[:0:-1])
        )
        last = counts[4]
        self.conv = EqualConv2d(last + 1, last, 3)
        self.fc = EqualLinear(last * 4 * 4, last, activate=True)
        self.out = EqualLinear(last, 1)
        self.add_projection(last)

    def input_blocks(self) -> list[nn.Module]:
        """One block per resolution, the first with fromRGB (as stylegan2-ada's freeze_layers)."""
        if not len(self.blocks):
            return [self.from_rgb]
        return [nn.ModuleList([self.from_rgb, self.blocks[0]]), *self.blocks[1:]]

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 1) logits for images and, when conditional, their (N,) class labels."""
        check_labels(self, labels)
        if self.pad:
            images = F.pad(images, [self.pad] * 4, mode="replicate")
        x = self.blocks(self.from_rgb(images))
        x = self.conv(minibatch_stddev(x, self.mbstd_group))
        features = self.fc(x.flatten(1))
        return self.project_labels(self.out(features), features, labels)
