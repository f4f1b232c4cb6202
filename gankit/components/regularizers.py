"""Discriminator regularizers, composable with any loss: `none`, `r1`, `gradient_penalty`.

A regularizer returns a penalty that the trainer minimises in its own D update every `every`
iterations, multiplied by `every` so that its average strength does not depend on the interval
(lazy regularization, StyleGAN2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field

from gankit.config.registry import REGULARIZERS

Discriminator = Callable[[torch.Tensor], torch.Tensor]


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

    every = 0


class LazyPenalty:
    """A penalty of some weight, applied every `every` iterations."""

    def __init__(
        self,
        weight: Annotated[float, Field(gt=0, description="penalty weight (R1: gamma)")] = 10.0,
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
        norms, zero = _input_gradient_norms(discriminator, real)
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
