"""Regularizers of either network, composable with any loss and with each other.

On D: `r1` (real images), `r2` (fakes), `gradient_penalty` (points between them). On G:
`path_length`. A regularizer says which `network` it trains and returns a penalty that the
iteration minimises in an update of its own every `every` iterations, multiplied by `every` so
that its average strength does not depend on the interval (lazy regularization, StyleGAN2).

A discriminator's penalty is `penalty(discriminator, real, fake)`, with `discriminator` a
function of images (it augments them as every D call does); a generator's is
`penalty(generator, z)`, with `generator` a function of noise. A regularizer with state is an
`nn.Module` whose buffers hold it (checkpointed, on the training device, updated in place).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from gankit.config.registry import REGULARIZERS
from gankit.config.value_schedule import Scheduled

Discriminator = Callable[[torch.Tensor], torch.Tensor]
Generator = Callable[[torch.Tensor], torch.Tensor]


def _input_gradient_norms(
    discriminator: Discriminator, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample norms of dD/dx, and 0 * D's output (added to the penalty so that parameters
    the input gradient does not depend on, like the last bias, still get a (zero) gradient:
    DDP expects one for every parameter)."""
    inputs = inputs.detach().float().requires_grad_(True)
    scores = discriminator(inputs).float()
    (gradient,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return gradient.flatten(1).norm(dim=1), 0.0 * scores.sum()


@REGULARIZERS.register("none")
class NoRegularizer:
    """No penalty."""

    network = "discriminator"
    every = 0


class LazyPenalty:
    """A penalty of some weight on D, applied every `every` iterations."""

    network = "discriminator"

    def __init__(
        self,
        weight: Annotated[
            Scheduled(gt=0), Field(description="penalty weight (R1: gamma), or a schedule")
        ] = 10.0,
        every: Annotated[
            int, Field(gt=0, description="iterations between penalty updates (lazy: 16)")
        ] = 1,
    ) -> None:
        self.weight, self.every = weight, every


@REGULARIZERS.register("r1")
class R1Penalty(LazyPenalty):
    """R1 (Mescheder et al. 2018): weight / 2 * E ||grad_x D(x)||^2 on real images."""

    def penalty(
        self, discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        return self.on(discriminator, real)

    def on(self, discriminator: Discriminator, images: torch.Tensor) -> torch.Tensor:
        """weight / 2 * E ||grad_x D(x)||^2 over `images`."""
        norms, zero = _input_gradient_norms(discriminator, images)
        return self.weight / 2 * norms.square().mean() + zero


@REGULARIZERS.register("gradient_penalty")
class GradientPenalty(LazyPenalty):
    """WGAN-GP (Gulrajani et al. 2017): weight * E (||grad D(x_hat)|| - 1)^2.

    x_hat are random points between real and fake images.
    """

    def penalty(
        self, discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        mix = torch.rand(real.shape[0], *[1] * (real.dim() - 1), device=real.device)
        between = mix * real.detach() + (1 - mix) * fake.detach()
        norms, zero = _input_gradient_norms(discriminator, between)
        return self.weight * (norms - 1).square().mean() + zero


@REGULARIZERS.register("r2")
class R2Penalty(R1Penalty):
    """R2 (Mescheder et al. 2018): weight / 2 * E ||grad_x D(x)||^2 on fakes (with R1: R3GAN)."""

    def penalty(
        self, discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        return self.on(discriminator, fake)


def trained_network(regularizer: object) -> str:
    """The network a regularizer trains; one written before regularizers said so trains D."""
    return getattr(regularizer, "network", "discriminator")


@REGULARIZERS.register("path_length")
class PathLength(nn.Module):
    """Path length on G (StyleGAN2): weight * E (||J^T y|| - a)^2, a the lengths' moving mean.

    y is Gaussian image noise scaled by 1/sqrt(pixels); J is G's Jacobian in its latents: the
    per-layer w of a generator that declares them (`path_length_latents`, StyleGAN2: the length
    is then the root of the mean over layers of each layer's squared length, as theirs), else z.
    `generator(z, return_latents=True)` returns the images and those latents (a function of
    z alone is differentiated in z)."""

    network = "generator"

    def __init__(
        self,
        weight: Annotated[
            Scheduled(gt=0), Field(description="penalty weight, or a schedule")
        ] = 2.0,
        every: Annotated[
            int, Field(gt=0, description="iterations between penalty updates (lazy: 4)")
        ] = 4,
        decay: Annotated[
            float, Field(gt=0, le=1, description="moving mean's update rate per penalty")
        ] = 0.01,
        batch_shrink: Annotated[
            int, Field(ge=1, description="use 1/batch_shrink of the batch (StyleGAN2: 2)")
        ] = 2,
    ) -> None:
        super().__init__()
        self.weight, self.every, self.decay, self.batch_shrink = weight, every, decay, batch_shrink
        self.register_buffer("mean", torch.zeros(()))  # the moving mean of the path lengths

    def penalty(self, generator: Callable[..., Any], z: torch.Tensor) -> torch.Tensor:
        z = z[: max(1, z.shape[0] // self.batch_shrink)].detach().float().requires_grad_(True)
        if "return_latents" in inspect.signature(generator).parameters:
            images, latents = generator(z, return_latents=True)
        else:  # a plain function of noise
            images, latents = generator(z), z
        images = images.float()
        pixels = images[0].numel() / images.shape[1]  # per channel: H x W for images
        noise = torch.randn_like(images) / pixels**0.5
        (gradient,) = torch.autograd.grad((images * noise).sum(), latents, create_graph=True)
        # per sample: the root of the mean over layers of the squared length in each layer's
        # latent (StyleGAN2's w, (N, layers, w_dim)); for z, (N, z_dim), its length
        gradient = gradient.float().reshape(gradient.shape[0], -1, gradient.shape[-1])
        lengths = gradient.square().sum(2).mean(1).sqrt()
        self.mean.copy_(self.mean.lerp(lengths.mean().detach(), self.decay))
        # 0 * images: every parameter of G gets a (zero) gradient, as DDP expects
        return self.weight * (lengths - self.mean).square().mean() + 0.0 * images.sum()
