"""The linear pieces of StyleGAN2-ADA's pipeline (`ada.py`), as matrices: the resampler's 2x
up- and downsampling with the sym6 wavelet and the image-space filter's four bands, per image
side (reflection padding included), the colour operations' 4x4 basis, and per-image 3x3
matrices of the plane. Built with device operations only (no copies from the host), so that a
CUDA graph may record them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Low-pass filters of the Daubechies least-asymmetric wavelets (symlets), sum sqrt(2).
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6 = (
    *(0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633),
    *(0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252),
    *(-0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148),
)
TAPS = len(SYM6)
# the resampling filter's delay (its centroid, in taps): the up- and downsampled grids are
# aligned by it, so a mirrored or turned image is not displaced by its asymmetry
DELAY = sum(i * tap for i, tap in enumerate(SYM6)) / sum(SYM6)
BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)  # expected power of the four bands (1/f)

# the 4x4 matrices that colour operations combine, by index in `color_basis()`
IDENTITY, OFFSET, HOMOGENEOUS, RGB, LUMA, LUMA_HOMOGENEOUS, CHROMA, CROSS = range(8)


def band_filters() -> torch.Tensor:
    """Four 43-tap filters (lowest band first) that split a signal into octaves with the sym2
    wavelet and sum to a unit impulse: the gains of the image-space filter weigh them."""
    low = np.asarray(SYM2)
    high = low * (-1.0) ** np.arange(low.size)
    low2, high2 = np.convolve(low, low[::-1]) / 2, np.convolve(high, high[::-1]) / 2
    bank = np.eye(4, 1)
    for band in range(1, 4):
        spread = np.zeros((4, bank.shape[1] * 2 - 1))
        spread[:, ::2] = bank  # twice the span: an octave lower
        bank = np.stack([np.convolve(row, low2) for row in spread])
        start = (bank.shape[1] - high2.size) // 2
        bank[band, start : start + high2.size] += high2
    return torch.as_tensor(bank, dtype=torch.float32)


def color_basis() -> torch.Tensor:
    """(8, 4, 4): identity; adding to RGB; keeping the homogeneous coordinate; keeping RGB;
    projecting on the luma axis v; that plus the homogeneous coordinate; projecting off v; and
    the cross product with v (a rotation's derivative about it)."""
    rgb = torch.diag(torch.tensor([1.0, 1, 1, 0]))
    luma = torch.zeros(4, 4)
    luma[:3, :3] = 1 / 3
    cross = torch.zeros(4, 4)
    cross[:3, :3] = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)
    offset = torch.zeros(4, 4)
    offset[:3, 3] = 1
    homogeneous = torch.eye(4) - rgb
    return torch.stack(
        [torch.eye(4), offset, homogeneous, rgb, luma, luma + homogeneous, rgb - luma, cross]
    )


def reflect(position: torch.Tensor, size: int) -> torch.Tensor:
    """Positions (pixel indices, any real number) mirrored into [0, size - 1] about the first
    and last pixel's centres, as reflection padding repeats an image."""
    if size == 1:
        return torch.zeros_like(position)
    period = 2 * (size - 1)
    position = torch.remainder(position, period)
    return torch.where(position > size - 1, period - position, position)


def padding(side: int, pad: int, device: torch.device) -> torch.Tensor:
    """(side + 2 pad, side): reflection padding by `pad` on both ends, however short the side."""
    index = torch.arange(-pad, side + pad, device=device, dtype=torch.float32)
    return torch.eye(side, device=device).index_select(0, reflect(index, side).long())


def upsampling(f: torch.Tensor, side: int, pad: int) -> torch.Tensor:
    """(2 (side - 1), side): pad by reflection, upsample 2x with the filter `f`, and keep what
    lies between the first and the last pixel's centres."""
    padded = padding(side, pad, f.device).t()  # a row: where one input pixel goes
    length, taps = padded.shape[1], f.numel()
    up = F.conv_transpose2d(
        padded.reshape(side, 1, 1, length), 2 * f.view(1, 1, 1, taps), stride=(1, 2)
    )
    start = (taps - 2) // 2 + 2 * pad + 1  # from the first pixel's centre to the last's
    return up[..., start : start + 2 * (side - 1)].reshape(side, 2 * (side - 1)).t()


def downsampling(f: torch.Tensor, side: int, pad: int) -> torch.Tensor:
    """(side, 2 (side + 2 pad)): downsample 2x with the filter `f` (matched to `upsampling`),
    dropping the `pad` pixels beyond each end."""
    length, taps = 2 * (side + 2 * pad), f.numel()
    start = 2 * pad - (taps - 1) // 2
    basis = torch.eye(length, device=f.device)[:, start:].reshape(length, 1, 1, length - start)
    down = F.conv2d(basis, f.view(1, 1, 1, taps), stride=(1, 2))[..., :side]
    return down.reshape(length, side).t()


def band_filtering(bank: torch.Tensor, side: int) -> torch.Tensor:
    """(bands, side, side): each band's filter on a side, its ends padded by reflection."""
    bands, taps = bank.shape
    padded = padding(side, taps // 2, bank.device).t()
    out = F.conv2d(padded.reshape(side, 1, 1, -1), bank.view(bands, 1, 1, taps))
    return out.reshape(side, bands, side).permute(1, 2, 0)


def separable(images: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """rows @ image @ columns^T for each image and channel, as two plain matrix products."""
    n, c, h, w = images.shape
    x = images.reshape(n * c * h, w) @ columns.t()
    x = x.view(n * c, h, -1).transpose(1, 2).reshape(-1, h) @ rows.t()
    return x.view(n, c, columns.shape[0], rows.shape[0]).transpose(2, 3)


def affine_grid(theta: torch.Tensor, size: list[int]) -> torch.Tensor:
    """F.affine_grid(theta, size, align_corners=False), written as two broadcast sums (on a
    CPU the library's batched product of a full coordinate grid is several times slower)."""
    n, _, h, w = size
    grid = torch.empty(n, h, w, 2, device=theta.device)
    xs, ys = ((torch.arange(side, device=theta.device) * 2 + 1) / side - 1 for side in (w, h))
    for axis in (0, 1):
        row = theta[:, axis, :, None, None]
        torch.add(row[:, 1] * ys.view(-1, 1) + row[:, 2], row[:, 0] * xs, out=grid[..., axis])
    return grid


def stack(rows: list[list[Any]], like: torch.Tensor) -> torch.Tensor:
    """Per-image matrices (N, R, C) from rows of (N,) tensors and numbers."""
    entries = [
        e if isinstance(e, torch.Tensor) else torch.full_like(like, e) for r in rows for e in r
    ]
    return torch.stack(entries, dim=1).view(-1, len(rows), len(rows[0]))


def scale2(sx: Any, sy: Any, like: torch.Tensor) -> torch.Tensor:
    return stack([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], like)


def translate2(tx: Any, ty: Any, like: torch.Tensor) -> torch.Tensor:
    return stack([[1, 0, tx], [0, 1, ty], [0, 0, 1]], like)


def rotate2(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return stack([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], cos)
