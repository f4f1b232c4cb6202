"""StyleGAN2-ADA's augmentation pipeline (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), in plain PyTorch, drawing all its randomness from `uniform`.

The operations, in the paper's order: the geometric ones (xflip, rotate90, xint, scale, rotate,
aniso, xfrac) compose one 3x3 matrix per image, applied once: reflected coordinates, 2x
upsampling with the sym6 wavelet, bilinear sampling, 2x downsampling with the same filter. The
colour ones (brightness, contrast, lumaflip, hue, saturation) compose one 4x4 matrix per image
around the luma axis (1-channel images: hue and saturation do not apply, lumaflip negates, as
in the reference). Then the image-space filter (gains of four frequency bands), additive noise
and cutout. Each applies to an image with probability p x its multiplier, drawn per image.

Nothing waits on the device: an operation that does not apply to an image leaves it as it was
(`torch.where` on the draws), and only operations whose multiplier is 0 are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gankit.components.ada_matrices import (
    BAND_POWER,
    CHROMA,
    CROSS,
    DELAY,
    HOMOGENEOUS,
    IDENTITY,
    LUMA,
    LUMA_HOMOGENEOUS,
    OFFSET,
    RGB,
    SYM6,
    TAPS,
    affine_grid,
    band_filtering,
    band_filters,
    color_basis,
    downsampling,
    rotate2,
    scale2,
    separable,
    translate2,
    upsampling,
)
from gankit.core.errors import GankitError

Uniform = Callable[[int], torch.Tensor]

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
OPERATIONS = (*GEOMETRIC, *COLOR, "imgfilter", "noise", "cutout")
STRENGTHS = (
    *("xint_max", "scale_std", "rotate_max", "aniso_std", "xfrac_std", "brightness_std"),
    *("contrast_std", "hue_max", "saturation_std", "imgfilter_bands", "imgfilter_std"),
    *("noise_std", "cutout_size"),
)

# StyleGAN2-ADA's train.py --augpipe choices: the operations each turns on (multiplier 1)
_BLIT, _GEOM = ("xflip", "rotate90", "xint"), ("scale", "rotate", "aniso", "xfrac")
PRESETS: dict[str, tuple[str, ...]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": COLOR,
    "filter": ("imgfilter",),
    "noise": ("noise",),
    "cutout": ("cutout",),
    "bg": (*_BLIT, *_GEOM),
    "bgc": (*_BLIT, *_GEOM, *COLOR),
    "bgcf": (*_BLIT, *_GEOM, *COLOR, "imgfilter"),
    "bgcfn": (*_BLIT, *_GEOM, *COLOR, "imgfilter", "noise"),
    "bgcfnc": (*_BLIT, *_GEOM, *COLOR, "imgfilter", "noise", "cutout"),
}

# uniform numbers each operation draws per image (a normal number takes two)
_DRAWS = {
    "xflip": 2,
    "rotate90": 2,
    "xint": 3,
    "scale": 3,
    "rotate": 4,
    "aniso": 3,
    "xfrac": 5,
    "brightness": 3,
    "contrast": 3,
    "lumaflip": 2,
    "hue": 2,
    "saturation": 3,
    "imgfilter": 12,
    "noise": 3,
    "cutout": 3,
}


def multipliers_of(preset: str, given: Mapping[str, float | None]) -> dict[str, float]:
    """Each operation's probability multiplier: the preset's (1 for its operations, else 0),
    where `given` has None."""
    on = PRESETS[preset]
    return {
        op: float(given[op]) if given.get(op) is not None else float(op in on) for op in OPERATIONS
    }


def _normal(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Standard normal numbers from two uniform ones (Box-Muller)."""
    return torch.sqrt(-2 * torch.log1p(-u)) * torch.cos(2 * torch.pi * v)


class _Draws:
    """The columns of one (N, k) uniform draw, handed out in order."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values, self.taken = values, 0

    def uniform(self) -> torch.Tensor:
        self.taken += 1
        return self.values[:, self.taken - 1]

    def normal(self) -> torch.Tensor:
        return _normal(self.uniform(), self.uniform())

    def applies(self, probability: torch.Tensor) -> torch.Tensor:
        return self.uniform() < probability


class AdaPipeline(nn.Module):
    """StyleGAN2-ADA's augmentations at probability `p` (a 0-d tensor) times each operation's
    multiplier. Its filters are buffers that are not checkpointed (constants)."""

    def __init__(self, multipliers: Mapping[str, float], **strengths: Any) -> None:
        super().__init__()
        self.multipliers = {op: float(multipliers[op]) for op in OPERATIONS}
        self.on = tuple(op for op in OPERATIONS if self.multipliers[op] > 0)
        self.strengths = dict(strengths)
        geometric = torch.tensor(SYM6, dtype=torch.float32)
        self.register_buffer("resampler", geometric / geometric.sum(), persistent=False)
        self.register_buffer("bands", band_filters(), persistent=False)
        self.register_buffer("band_power", torch.tensor(BAND_POWER), persistent=False)
        self.register_buffer("color_basis", color_basis(), persistent=False)
        self.operators: dict[tuple[str, int, torch.device], Any] = {}

    def forward(self, images: torch.Tensor, uniform: Uniform, p: torch.Tensor) -> torch.Tensor:
        """`images` augmented, each operation on each image with probability p x multiplier."""
        if not self.on:
            return images
        draws = _Draws(uniform(sum(_DRAWS[op] for op in self.on)))
        chance = {op: p * self.multipliers[op] for op in self.on}
        x = images.float()
        with torch.autocast(images.device.type, enabled=False):  # in float32, as the reference
            if any(op in self.on for op in GEOMETRIC):
                x = self._geometric(x, draws, chance)
            if any(op in self.on for op in COLOR):
                x = self._color(x, draws, chance)
            if "imgfilter" in self.on:
                x = self._filter(x, draws, chance["imgfilter"])
            if "noise" in self.on:
                x = self._noise(x, draws, chance["noise"], uniform)
            if "cutout" in self.on:
                x = self._cutout(x, draws, chance["cutout"])
        return x.to(images.dtype)

    def _operators(self, kind: str, side: int) -> Any:
        """The matrices of a side's resampling (up, down) or band filters, made once per side
        and device (not kept while a CUDA graph is captured: its tensors hold no values yet)."""
        key = (kind, side, self.resampler.device)
        if key in self.operators:
            return self.operators[key]
        with torch.inference_mode(False), torch.no_grad():  # constants, usable anywhere
            if kind == "resample":
                pad = self.resampler.numel() // 4
                made = (
                    upsampling(self.resampler, side, pad),
                    downsampling(self.resampler, side, pad),
                )
            else:
                made = band_filtering(self.bands, side)
        if not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
            self.operators[key] = made
        return made

    # ---- geometry ----------------------------------------------------------------------------

    def _geometric_matrix(
        self, draws: _Draws, chance: dict[str, torch.Tensor], height: int, width: int
    ) -> torch.Tensor:
        """(N, 3, 3): from an output pixel to where it is read in the input, in pixels from the
        image's centre, composed in the reference's order."""
        s = self.strengths
        one = torch.ones_like(draws.values[:, 0])
        matrix = torch.eye(3, device=one.device).expand(one.shape[0], 3, 3)
        if "xflip" in self.on:
            flip = draws.applies(chance["xflip"]) & (draws.uniform() < 0.5)
            matrix = matrix @ scale2(torch.where(flip, -one, one), 1, one)
        if "rotate90" in self.on:
            applies = draws.applies(chance["rotate90"])
            turns = torch.where(applies, (draws.uniform() * 4).floor().clamp(max=3), 0 * one)
            cos = (turns == 0).float() - (turns == 2).float()  # exact quarter turns
            sin = (turns == 1).float() - (turns == 3).float()
            matrix = matrix @ rotate2(cos, sin)
        if "xint" in self.on:
            applies = draws.applies(chance["xint"])
            shift = [(draws.uniform() * 2 - 1) * s["xint_max"] for _ in range(2)]
            tx, ty = (
                torch.where(applies, t * n, 0 * one).round()
                for t, n in zip(shift, (width, height), strict=True)
            )
            matrix = matrix @ translate2(-tx, -ty, one)
        if "scale" in self.on:
            applies = draws.applies(chance["scale"])
            scale = torch.where(applies, torch.exp2(draws.normal() * s["scale_std"]), one)
            matrix = matrix @ scale2(1 / scale, 1 / scale, one)
        # P(pre or post) = p x multiplier: each of the two rotations applies with p_rot
        p_rot = 1 - torch.sqrt((1 - chance["rotate"]).clamp(0, 1)) if "rotate" in self.on else None
        if "rotate" in self.on:
            matrix = matrix @ self._rotation(draws, p_rot, one)
        if "aniso" in self.on:
            applies = draws.applies(chance["aniso"])
            scale = torch.where(applies, torch.exp2(draws.normal() * s["aniso_std"]), one)
            matrix = matrix @ scale2(1 / scale, scale, one)
        if "rotate" in self.on:
            matrix = matrix @ self._rotation(draws, p_rot, one)
        if "xfrac" in self.on:
            applies = draws.applies(chance["xfrac"])
            tx = torch.where(applies, draws.normal() * s["xfrac_std"] * width, 0 * one)
            ty = torch.where(applies, draws.normal() * s["xfrac_std"] * height, 0 * one)
            matrix = matrix @ translate2(-tx, -ty, one)
        return matrix

    def _rotation(self, draws: _Draws, p_rot: Any, one: torch.Tensor) -> torch.Tensor:
        applies = draws.applies(p_rot)
        theta = (draws.uniform() * 2 - 1) * math.pi * self.strengths["rotate_max"]
        theta = torch.where(applies, theta, 0 * one)
        return rotate2(torch.cos(theta), torch.sin(theta))

    def _geometric(
        self, images: torch.Tensor, draws: _Draws, chance: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        n, _, h, w = images.shape
        if h < 2 or w < 2:
            raise GankitError(
                f"ADA's geometric operations need images of 2x2 pixels or more, not {h}x{w}: "
                "set augment.preset to one without them (color, filter, noise, cutout)"
            )
        matrix = self._geometric_matrix(draws, chance, h, w)
        (up_h, down_h), (up_w, down_w) = (
            self._operators("resample", h),
            self._operators("resample", w),
        )
        upsampled = separable(images, up_h, up_w)
        pad = self.resampler.numel() // 4  # input pixels the filter reaches on each side
        size = [n, images.shape[1], 2 * (h + 2 * pad), 2 * (w + 2 * pad)]
        grid = affine_grid(self._sampling(matrix, h, w, pad), size)
        sampled = F.grid_sample(
            upsampled, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        result = separable(sampled, down_h, down_w)
        moved = (matrix != torch.eye(3, device=images.device)).flatten(1).any(1)
        return torch.where(moved.view(n, 1, 1, 1), result, images)

    @staticmethod
    def _sampling(matrix: torch.Tensor, h: int, w: int, pad: int) -> torch.Tensor:
        """(N, 2, 3): grid_sample's map from the output grid (twice the resolution, `pad`
        pixels beyond each side) to the upsampled input between its first and last pixel
        centres, both in [-1, 1]; `matrix` acts on the resampler's true pixel positions (its
        filter's delay moves them, the same way at both ends of the resampling)."""
        one = matrix[:, 0, 0] * 0 + 1
        spans = [2 * (side + 2 * pad) for side in (w, h)]
        start = 2 * pad - (TAPS - 1) // 2 + (TAPS - 1) / 2  # of a pixel, on the output grid
        shift = [(2 * (side + 2 * pad) - 1) / 4 - start / 2 - (side - 1) / 2 for side in (w, h)]
        output = translate2(*shift, one) @ scale2(spans[0] / 4, spans[1] / 4, one)
        lead = (DELAY - (TAPS - 1) / 2) / 2  # where the filter puts pixels, less the middle
        centred = translate2(lead, lead, one) @ matrix @ translate2(-lead, -lead, one)
        return (scale2(2 / (w - 1), 2 / (h - 1), one) @ centred @ output)[:, :2]

    # ---- colour, filter, corruptions ---------------------------------------------------------

    def _color(
        self, images: torch.Tensor, draws: _Draws, chance: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """One 4x4 matrix per image on homogeneous RGB: brightness, contrast, luma flip, hue
        rotation and saturation, in that order, around the luma axis (1, 1, 1) / sqrt(3)."""
        n, c, h, w = images.shape
        if c not in (1, 3):
            raise GankitError(
                f"ADA's colour operations take RGB or grayscale images, not {c} channels: set "
                "augment.preset to one without colour (bg, blit, geom), or set the multipliers "
                f"of {', '.join(COLOR)} to 0"
            )
        s = self.strengths
        one = torch.ones_like(draws.values[:, 0])
        basis = self.color_basis
        matrix = basis[IDENTITY].expand(n, 4, 4)

        def then(constant: int, scalar: torch.Tensor, varying: int) -> torch.Tensor:
            return (basis[constant] + scalar.view(n, 1, 1) * basis[varying]) @ matrix

        if "brightness" in self.on:
            applies = draws.applies(chance["brightness"])
            offset = torch.where(applies, draws.normal() * s["brightness_std"], 0 * one)
            matrix = then(IDENTITY, offset, OFFSET)
        if "contrast" in self.on:
            applies = draws.applies(chance["contrast"])
            factor = torch.where(applies, torch.exp2(draws.normal() * s["contrast_std"]), one)
            matrix = then(HOMOGENEOUS, factor, RGB)
        if "lumaflip" in self.on:
            applies = draws.applies(chance["lumaflip"])
            flip = torch.where(applies & (draws.uniform() < 0.5), one, 0 * one)
            matrix = then(IDENTITY, -2 * flip, LUMA)  # a Householder reflection
        if "hue" in self.on:
            applies = draws.applies(chance["hue"])
            theta = (draws.uniform() * 2 - 1) * math.pi * s["hue_max"]
            theta = torch.where(applies, theta, 0 * one)
            if c == 3:  # rotation about the luma axis
                turned = torch.sin(theta).view(n, 1, 1) * (basis[CROSS] @ matrix)
                matrix = then(LUMA_HOMOGENEOUS, torch.cos(theta), CHROMA) + turned
        if "saturation" in self.on:
            applies = draws.applies(chance["saturation"])
            factor = torch.where(applies, torch.exp2(draws.normal() * s["saturation_std"]), one)
            if c == 3:
                matrix = then(LUMA_HOMOGENEOUS, factor, CHROMA)
        flat = images.reshape(n, c, h * w)
        if c == 3:
            result = matrix[:, :3, :3] @ flat + matrix[:, :3, 3:]
        else:  # the mean of the matrix's rows acts on the one channel
            mean = matrix[:, :3, :].mean(dim=1)
            result = flat * mean[:, :3].sum(dim=1).view(n, 1, 1) + mean[:, 3:].view(n, 1, 1)
        moved = (matrix != basis[IDENTITY]).flatten(1).any(1)
        return torch.where(moved.view(n, 1, 1, 1), result.view(n, c, h, w), images)

    def _filter(self, images: torch.Tensor, draws: _Draws, chance: torch.Tensor) -> torch.Tensor:
        """Each of four frequency bands amplified by 2**N(0, imgfilter_std) with probability
        p x imgfilter x its band's multiplier, the expected power kept (one separable filter)."""
        n, _, h, w = images.shape
        s = self.strengths
        one = torch.ones_like(draws.values[:, 0])
        applied, gains = [], []
        for band_multiplier in s["imgfilter_bands"]:
            applied.append(draws.applies(chance * band_multiplier))
            gain = torch.exp2(draws.normal() * s["imgfilter_std"])
            gains.append(torch.where(applied[-1], gain, one))
        gain = torch.stack(gains, dim=1)
        power = self.band_power
        # each band's gain alone, normalised to the expected power; the product of all four
        norms = torch.sqrt(power.sum() - power + power * gain.square())
        taps = gain / norms.prod(dim=1, keepdim=True)  # weights of the bands' filters
        rows, columns = (
            torch.einsum("nb,bij->nij", taps, self._operators("bands", side)) for side in (h, w)
        )
        x = torch.matmul(rows[:, None], torch.matmul(images, columns.transpose(1, 2)[:, None]))
        moved = torch.stack(applied, dim=1).any(dim=1)
        return torch.where(moved.view(n, 1, 1, 1), x, images)

    def _noise(
        self, images: torch.Tensor, draws: _Draws, chance: torch.Tensor, uniform: Uniform
    ) -> torch.Tensor:
        """Gaussian noise on every pixel and channel, its deviation |N(0, noise_std)| per image."""
        n, c, h, w = images.shape
        applies = draws.applies(chance)
        sigma = draws.normal().abs() * self.strengths["noise_std"]
        pixels = c * h * w
        u = uniform(2 * pixels)
        noise = _normal(u[:, :pixels], u[:, pixels:]).view(n, c, h, w)
        noisy = images + noise * sigma.view(n, 1, 1, 1)
        return torch.where(applies.view(n, 1, 1, 1), noisy, images)

    def _cutout(self, images: torch.Tensor, draws: _Draws, chance: torch.Tensor) -> torch.Tensor:
        """A rectangle of cutout_size of each side set to 0, centred anywhere in the image."""
        _, _, h, w = images.shape
        applies = draws.applies(chance)
        half = torch.where(applies, self.strengths["cutout_size"] / 2, 0.0)
        keep = []
        for size in (w, h):
            centre = draws.uniform()
            position = (torch.arange(size, device=images.device) + 0.5) / size
            keep.append((position[None, :] - centre[:, None]).abs() >= half[:, None])
        mask = keep[1][:, :, None] | keep[0][:, None, :]
        return images * mask[:, None].to(images.dtype)
