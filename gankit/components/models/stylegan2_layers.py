"""The layers of StyleGAN2 (Karras et al. 2020), in plain PyTorch (no custom CUDA ops).

Equalized learning rate everywhere: weights are stored as N(0, 1) / lr_mul and scaled at run
time by lr_mul / sqrt(fan_in), biases by lr_mul. FIR resampling uses the [1, 3, 3, 1] filter
(outer product, normalised to sum 1) as a depthwise convolution: upsampling is a stride-2
transposed convolution with the filter times 4, downsampling a padded stride-2 convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2)  # keeps the activations' second moment through LeakyReLU(0.2)


def fir_filter(taps: tuple[float, ...] = FIR_TAPS) -> torch.Tensor:
    """The 2-D separable low-pass filter of `taps`: their outer product, normalised to sum 1."""
    line = torch.tensor(taps, dtype=torch.float32)
    kernel = torch.outer(line, line)
    return kernel / kernel.sum()


def _depthwise(kernel: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    return kernel.to(dtype).flip([0, 1]).expand(channels, 1, *kernel.shape)


def fir(x: torch.Tensor, kernel: torch.Tensor, pad: int, stride: int = 1) -> torch.Tensor:
    """Pad every side by `pad`, then filter each channel with `kernel` at `stride`."""
    x = F.pad(x, [pad] * 4)
    return F.conv2d(x, _depthwise(kernel, x.shape[1], x.dtype), stride=stride, groups=x.shape[1])


def upsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Double the size: zeros between the pixels, then the filter times 4 (the zeros' gain).

    One stride-2 transposed depthwise convolution (4x4 filter, padding 1) does both."""
    weight = _depthwise(kernel * 4, x.shape[1], x.dtype)
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=x.shape[1])


def downsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Halve the size: filter (padding 1) and keep every second pixel."""
    return fir(x, kernel, pad=1, stride=2)


def normalize_second_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square (the mapping network's input normalisation)."""
    return x * x.square().mean(dim=1, keepdim=True).add(eps).rsqrt()


def leaky(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """LeakyReLU(0.2) times sqrt(2) (times `gain`)."""
    return F.leaky_relu(x, LEAKY_SLOPE) * (LEAKY_GAIN * gain)


class EqualLinear(nn.Module):
    """A fully connected layer with equalized learning rate and an optional LeakyReLU."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activate: bool = False,
        lr_mul: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul, self.activate = lr_mul, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return leaky(x) if self.activate else x


class EqualConv2d(nn.Module):
    """A convolution with equalized learning rate, optional FIR downsampling by 2 (D's layers).

    With `activate`, bias then LeakyReLU(0.2) * sqrt(2); `gain` scales the output (the residual
    block's 1/sqrt(2))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        down: bool = False,
        bias: bool = True,
        activate: bool = True,
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.down, self.activate, self.gain = down, activate, gain
        self.register_buffer("kernel", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        size = self.weight.shape[-1]
        if not self.down:
            x = F.conv2d(x, weight, padding=size // 2)
        elif size == 1:  # filter and subsample first, then the 1x1 convolution
            x = F.conv2d(downsample(x, self.kernel), weight)
        else:  # filter with the padding of both, then a strided convolution
            x = F.conv2d(fir(x, self.kernel, pad=(size + 1) // 2), weight, stride=2)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return leaky(x, self.gain) if self.activate else x * self.gain


def modulated_weights(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """Per-sample weights (N, O, I, k, k): `weight` (O, I, k, k) scaled per input channel by
    `styles` (N, I), then, with `demodulate`, each output channel scaled to unit L2 norm."""
    weights = weight.unsqueeze(0) * styles[:, None, :, None, None]
    if demodulate:
        weights = weights * weights.square().sum(dim=[2, 3, 4], keepdim=True).add(1e-8).rsqrt()
    return weights


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    up: bool = False,
    kernel: torch.Tensor | None = None,
) -> torch.Tensor:
    """A modulated (and demodulated) convolution, as one grouped convolution over the batch.

    With `up`, a stride-2 transposed convolution followed by the FIR `kernel` doubles the size."""
    batch, in_channels, height, width = x.shape
    weights = modulated_weights(weight, styles, demodulate).to(x.dtype)
    out_channels, size = weight.shape[0], weight.shape[-1]
    x = x.reshape(1, batch * in_channels, height, width)
    if up:
        assert kernel is not None, "upsampling needs the FIR kernel"
        weights = weights.transpose(1, 2).reshape(batch * in_channels, out_channels, size, size)
        x = F.conv_transpose2d(x, weights, stride=2, groups=batch)
        # 2H + size - 2 pixels; padding the 4-tap filter by (5 - size) / 2 brings them to 2H
        x = fir(x, kernel * 4, pad=(5 - size) // 2)
    else:
        weights = weights.reshape(batch * out_channels, in_channels, size, size)
        x = F.conv2d(x, weights, padding=size // 2, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


class StyleConv(nn.Module):
    """A modulated 3x3 convolution of the synthesis network (optionally upsampling by 2), with
    its affine style layer (bias 1 at start), per-pixel noise of a learned strength (0 at start),
    a bias and LeakyReLU(0.2) * sqrt(2)."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool
    ) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        # the fixed noise of deterministic sampling (noise_mode 'const'), exported with the model
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("kernel", fir_filter(), persistent=False)
        self.up = up

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, kernel=self.kernel)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return leaky(x + self.bias.view(1, -1, 1, 1))


class ToRGB(nn.Module):
    """A modulated 1x1 convolution to image channels, without demodulation, plus a bias."""

    def __init__(self, in_channels: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return x + self.bias.view(1, -1, 1, 1)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """x with one more channel: per group of samples, the standard deviation of each feature
    over the group, averaged over features and pixels, repeated over the group's samples.

    The group is the largest size up to `group_size` that divides the batch (a batch of 6 uses
    groups of 3), so any batch size works."""
    batch, channels, height, width = x.shape
    group = next(size for size in range(min(group_size, batch), 0, -1) if batch % size == 0)
    grouped = x.reshape(group, -1, channels, height, width).float()
    deviation = grouped.var(dim=0, unbiased=False).add(1e-8).sqrt().mean(dim=[1, 2, 3])
    column = deviation.to(x.dtype).view(1, -1, 1, 1, 1).expand(group, -1, 1, height, width)
    return torch.cat([x, column.reshape(batch, 1, height, width)], dim=1)
