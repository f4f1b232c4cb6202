"""Differentiable augmentation of every image the discriminator sees: `none`, `diffaugment`, `ada`.

An augmentation is called as `augment(images, uniform)` and returns images of the same shape,
differentiably (G's gradient flows through it). It draws its randomness only from `uniform(k)`:
k uniform numbers in [0, 1) per image, a fresh (N, k) tensor at each call. The training run
provides `uniform` from a counter-based generator on the device (`Randomness`), keyed by the
seed, the iteration, the call and each image's index in the global batch, so augmentations are
the same after a resume, the same for one process at batch 2B as for two at B, and replay
unchanged from a CUDA graph.

An adaptive augmentation also has `observe(sign_sum, count)`: the sum of sign(D(x)) over the
augmented real images of a discriminator update, and their count, both summed over processes.
One with state is an `nn.Module` whose buffers hold it: they move to the training device, are
checkpointed, and are updated in place (a CUDA graph holds them). `values()` names what is worth
logging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from gankit.components.ada import PRESETS, STRENGTHS, AdaPipeline, multipliers_of
from gankit.config.registry import AUGMENTATIONS
from gankit.config.value_schedule import Scheduled

Uniform = Callable[[int], torch.Tensor]

# ---- randomness --------------------------------------------------------------------------

_MASK = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply) of int64 tensors holding values < 2**32.
    The constants are below 2**31, so no product leaves int64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _MASK
    return x ^ (x >> 16)


class Randomness:
    """Uniform numbers on the device that are a function of (seed, step, call, draw, sample).

    `step` is a device tensor (the iteration's count, so a CUDA-graph replay reads the current
    one); calls and draws are counted on the host within an iteration (`start`), which is the
    same on every replay of the same phases."""

    def __init__(self, seed: int, step: torch.Tensor, first_sample: Callable[[int], int]) -> None:
        self.seed = seed & _MASK
        self.step = step
        self.first_sample = first_sample  # batch size -> this process's first global index
        self.call = 0
        self.counters: dict[tuple[int, int], torch.Tensor] = {}  # by (images, draws per image)

    def start(self) -> None:
        """A new iteration: number its calls from 0."""
        self.call = 0

    def for_batch(self, count: int) -> Uniform:
        """The `uniform` of one augmentation call on `count` images."""
        self.call += 1
        call, draws = self.call, [0]

        def uniform(k: int) -> torch.Tensor:
            draws[0] += 1
            key = _mix(self.step.long() & _MASK ^ self.seed)
            key = _mix(key ^ (call * 0x9E3779B1 & _MASK))
            key = _mix(key ^ (draws[0] * 0x85EBCA77 & _MASK))
            bits = _mix(key ^ self._counters(count, k))
            return (bits >> 8).float() / float(1 << 24)  # 24 bits: exact in float32

        return uniform

    def _counters(self, count: int, k: int) -> torch.Tensor:
        """(count, k) distinct counters, global image index x k + draw column, made once per
        shape: the same tensor every step."""
        if (count, k) not in self.counters:
            first = self.first_sample(count)
            index = torch.arange(first * k, (first + count) * k, device=self.step.device)
            self.counters[count, k] = index.view(count, k) & _MASK
        return self.counters[count, k]


# ---- pieces ------------------------------------------------------------------------------


def _gather(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """images[n, c, rows[n, y], cols[n, x]] for every n, c, y, x (indices in range)."""
    n, c, h, w = images.shape
    index = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices reflected into [0, size) (for shifts of less than `size`)."""
    index = torch.where(index < 0, -index, index)
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def translate(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, fill: str) -> torch.Tensor:
    """Shift each image by (dy[n], dx[n]) whole pixels (int64 tensors of shape (N,)); the
    uncovered border is 0 (`fill="zeros"`) or the image reflected (`fill="reflect"`)."""
    _, _, h, w = images.shape
    rows = torch.arange(h, device=images.device)[None, :] - dy[:, None]
    cols = torch.arange(w, device=images.device)[None, :] - dx[:, None]
    if fill == "reflect":
        return _gather(images, _reflect(rows, h), _reflect(cols, w))
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    shifted = _gather(images, rows.clamp(0, h - 1), cols.clamp(0, w - 1))
    return shifted * inside[:, None].to(images.dtype)


def _uniform_int(u: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Integers in [low, high] from uniform numbers in [0, 1)."""
    return (u * (high - low + 1)).floor().long().clamp(max=high - low) + low


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1, 1, 1)


# ---- DiffAugment -------------------------------------------------------------------------

DIFFAUGMENT_OPS = ("color", "translation", "cutout")


@AUGMENTATIONS.register("none")
class NoAugmentation:
    """D sees the images as they are."""

    def __call__(self, images: torch.Tensor, uniform: Uniform) -> torch.Tensor:
        return images


@AUGMENTATIONS.register("diffaugment")
class DiffAugment:
    """DiffAugment (Zhao et al. 2020): color, translation and cutout on every image D sees."""

    def __init__(
        self,
        policy: Annotated[
            str,
            Field(
                pattern=r"^(color|translation|cutout)(,(color|translation|cutout))*$",
                description="comma-separated ops, applied in order: color, translation, cutout",
            ),
        ] = "color,translation,cutout",
        translation: Annotated[
            float, Field(gt=0, le=0.5, description="largest shift, as a share of the side")
        ] = 0.125,
        cutout: Annotated[
            float, Field(gt=0, le=1, description="side of the cut-out square, as a share")
        ] = 0.5,
    ) -> None:
        self.ops = tuple(policy.split(","))
        self.shift, self.cut = translation, cutout

    def __call__(self, images: torch.Tensor, uniform: Uniform) -> torch.Tensor:
        for op in self.ops:
            images = getattr(self, f"_{op}")(images, uniform)
        return images

    @staticmethod
    def _color(images: torch.Tensor, uniform: Uniform) -> torch.Tensor:
        """Brightness +-0.5, saturation x[0, 2) around the pixel's channel mean, contrast
        x[0.5, 1.5) around the image's mean."""
        u = uniform(3)
        images = images + _per_image(u[:, 0] - 0.5)
        mean = images.mean(dim=1, keepdim=True)
        images = (images - mean) * _per_image(u[:, 1] * 2) + mean
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return (images - mean) * _per_image(u[:, 2] + 0.5) + mean

    def _translation(self, images: torch.Tensor, uniform: Uniform) -> torch.Tensor:
        """A shift of up to `translation` of each side, the border zero."""
        _, _, h, w = images.shape
        sy, sx = int(h * self.shift + 0.5), int(w * self.shift + 0.5)
        u = uniform(2)
        return translate(
            images, _uniform_int(u[:, 0], -sy, sy), _uniform_int(u[:, 1], -sx, sx), "zeros"
        )

    def _cutout(self, images: torch.Tensor, uniform: Uniform) -> torch.Tensor:
        """A square of `cutout` of the side set to 0, centred anywhere in the image."""
        _, _, h, w = images.shape
        ch, cw = int(h * self.cut + 0.5), int(w * self.cut + 0.5)
        u = uniform(2)
        top = _uniform_int(u[:, 0], 0, h + (1 - ch % 2) - 1) - ch // 2
        left = _uniform_int(u[:, 1], 0, w + (1 - cw % 2) - 1) - cw // 2
        rows = torch.arange(h, device=images.device)[None, :] - top[:, None]
        cols = torch.arange(w, device=images.device)[None, :] - left[:, None]
        cut = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]
        return images * (~cut)[:, None].to(images.dtype)


# ---- ADA ---------------------------------------------------------------------------------


_Band = Annotated[float, Field(ge=0)]


def _multiplier(what: str) -> Any:
    return Annotated[
        float | None,
        Field(ge=0, description=f"multiplier of p for {what}; none: the preset's"),
    ]


def _strength(what: str, most: float) -> Any:
    return Annotated[float, Field(ge=0, le=most, description=what)]


@AUGMENTATIONS.register("ada")
class AdaptiveAugment(nn.Module):
    """ADA (Karras et al. 2020): StyleGAN2-ADA's pipeline (preset bgc), its p steered by D.

    Each operation applies to an image with probability p x its multiplier (`ada.py`); p moves
    up while D's mean sign on augmented reals is above `target` and down while it is below."""

    def __init__(
        self,
        target: Annotated[
            float, Field(gt=0, lt=1, description="wanted E[sign(D(real))]; p rises above it")
        ] = 0.6,
        interval: Annotated[
            int, Field(gt=0, description="discriminator updates between adjustments of p")
        ] = 4,
        speed_kimg: Annotated[
            float, Field(gt=0, description="thousands of real images for p to go from 0 to 1")
        ] = 500.0,
        p: Annotated[
            Scheduled(ge=0, le=1),
            Field(description="the starting probability; with adaptive: false, or a schedule"),
        ] = 0.0,
        adaptive: Annotated[bool, Field(description="false: keep p fixed")] = True,
        preset: Annotated[
            Literal[tuple(PRESETS)],
            Field(description="StyleGAN2-ADA's augpipe: the operations at multiplier 1"),
        ] = "bgc",
        xflip: _multiplier("mirror left-right") = None,
        rotate90: _multiplier("quarter turns") = None,
        xint: _multiplier("integer translation") = None,
        scale: _multiplier("isotropic scaling") = None,
        rotate: _multiplier("rotation by any angle") = None,
        aniso: _multiplier("anisotropic scaling") = None,
        xfrac: _multiplier("fractional translation") = None,
        brightness: _multiplier("brightness") = None,
        contrast: _multiplier("contrast") = None,
        lumaflip: _multiplier("luma flip") = None,
        hue: _multiplier("hue rotation (RGB)") = None,
        saturation: _multiplier("saturation (RGB)") = None,
        imgfilter: _multiplier("image-space filter") = None,
        noise: _multiplier("additive noise") = None,
        cutout: _multiplier("cutout") = None,
        xint_max: _strength("largest integer translation, share of the side", 1) = 0.125,
        scale_std: _strength("log2 deviation of isotropic scaling", 4) = 0.2,
        rotate_max: _strength("range of rotation angles; 1: the full circle", 1) = 1.0,
        aniso_std: _strength("log2 deviation of anisotropic scaling", 4) = 0.2,
        xfrac_std: _strength("deviation of fractional translation, share of the side", 1) = 0.125,
        brightness_std: _strength("deviation of the brightness offset", 4) = 0.2,
        contrast_std: _strength("log2 deviation of contrast", 4) = 0.5,
        hue_max: _strength("range of hue rotations; 1: the full circle", 1) = 1.0,
        saturation_std: _strength("log2 deviation of saturation", 4) = 1.0,
        imgfilter_bands: Annotated[
            tuple[_Band, _Band, _Band, _Band],
            Field(description="multipliers of the filter's four bands, lowest first"),
        ] = (1.0, 1.0, 1.0, 1.0),
        imgfilter_std: _strength("log2 deviation of a band's gain", 4) = 1.0,
        noise_std: _strength("deviation of the noise's deviation", 4) = 0.1,
        cutout_size: _strength("side of the cut-out rectangle, share of the side", 1) = 0.5,
    ) -> None:
        settings = dict(locals())  # the operations' multipliers and strengths, by name
        super().__init__()
        self.target, self.interval, self.speed_kimg = target, interval, speed_kimg
        self.adaptive, self.preset = adaptive, preset
        strengths = {name: settings[name] for name in STRENGTHS}
        self.pipeline = AdaPipeline(multipliers_of(preset, settings), **strengths)
        # the state, checkpointed: p, and D's verdicts since the last adjustment
        self.register_buffer("p", torch.tensor(p))
        self.register_buffer("sign_sum", torch.zeros(()))
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.long))

    def forward(self, images: torch.Tensor, uniform: Uniform) -> torch.Tensor:
        return self.pipeline(images, uniform, self.p)

    def observe(self, sign_sum: torch.Tensor, count: torch.Tensor) -> None:
        """Note D's verdict on a batch of augmented reals; every `interval` updates, move p by
        count / (speed_kimg * 1000) toward the target (p stays in [0, 1])."""
        if not self.adaptive:
            return
        self.sign_sum += sign_sum.float()
        self.count += count.float()
        self.observed += 1
        due = self.observed >= self.interval
        overfitting = torch.sign(self.sign_sum / self.count.clamp(min=1) - self.target)
        moved = (self.p + overfitting * self.count / (self.speed_kimg * 1000)).clamp(0, 1)
        self.p.copy_(torch.where(due, moved, self.p))
        for total in (self.sign_sum, self.count, self.observed):
            total.copy_(torch.where(due, torch.zeros_like(total), total))

    def values(self) -> dict[str, torch.Tensor]:
        """What is logged: the probability."""
        return {"augment_p": self.p}
