"""Discriminator regularizers, composable with any loss: `none`, `r1`, `gradient_penalty`.

A regularizer returns a penalty that the trainer minimises in its own D update every `every`
iterations, multiplied by `every` so that its average strength does not depend on the interval
(lazy regularization, StyleGAN2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field

from gankit.registry import REGULARIZERS

Discriminator = Callable[[torch.Tensor], torch.Tensor]


class LazyParams(BaseModel):
    """How often and how strongly to regularize."""

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(10.0, gt=0, description="penalty weight (R1: gamma)")
    every: int = Field(1, gt=0, description="iterations between penalty updates (lazy: 16)")


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


@REGULARIZERS.register("r1", params=LazyParams)
class R1Penalty:
    """R1 (Mescheder et al. 2018): weight / 2 * E ||grad_x D(x)||^2 on real images."""

    def __init__(self, weight: float = 10.0, every: int = 1) -> None:
        self.weight, self.every = weight, every

    def penalty(
        self, discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        norms, zero = _input_gradient_norms(discriminator, real)
        return self.weight / 2 * norms.square().mean() + zero


@REGULARIZERS.register("gradient_penalty", params=LazyParams)
class GradientPenalty:
    """WGAN-GP (Gulrajani et al. 2017): weight * E (||grad D(x_hat)|| - 1)^2, with x_hat
    random points between real and fake images."""

    def __init__(self, weight: float = 10.0, every: int = 1) -> None:
        self.weight, self.every = weight, every

    def penalty(
        self, discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        mix = torch.rand(real.shape[0], *[1] * (real.dim() - 1), device=real.device)
        between = mix * real.detach() + (1 - mix) * fake.detach()
        norms, zero = _input_gradient_norms(discriminator, between)
        return self.weight * (norms - 1).square().mean() + zero
