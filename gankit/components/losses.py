"""Adversarial losses. Each takes D's logits and returns fp32 scalar losses.

A loss is an object with `discriminator(real_logits, fake_logits) -> (loss_real, loss_fake)` and
`generator(fake_logits) -> loss`; the discriminator minimises `loss_real + loss_fake`.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from gankit.config.registry import LOSSES


class GANLoss(Protocol):
    """What the trainer needs from a loss."""

    def discriminator(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor: ...


@LOSSES.register("non_saturating")
class NonSaturatingLoss:
    """Sigmoid cross-entropy on logits; G maximises log D(G(z)) (Goodfellow et al. 2014)."""

    def discriminator(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # softplus(-x) = -log(sigmoid(x)): cross-entropy against label 1, stable for any logit.
        return F.softplus(-real_logits.float()).mean(), F.softplus(fake_logits.float()).mean()

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake_logits.float()).mean()


@LOSSES.register("minimax")
class MinimaxLoss(NonSaturatingLoss):
    """The original minimax game: G minimises log(1 - D(G(z))) (saturates early in training)."""

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -F.softplus(fake_logits.float()).mean()  # log(1 - sigmoid(x)) = -softplus(x)


@LOSSES.register("hinge")
class HingeLoss:
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN): D's margins at +-1, G raises D's score."""

    def discriminator(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return F.relu(1 - real_logits.float()).mean(), F.relu(1 + fake_logits.float()).mean()

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.float().mean()


@LOSSES.register("wasserstein")
class WassersteinLoss:
    """Wasserstein critic loss (Arjovsky et al. 2017); pair it with a gradient penalty."""

    def discriminator(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return -real_logits.float().mean(), fake_logits.float().mean()

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.float().mean()


@LOSSES.register("least_squares")
class LeastSquaresLoss:
    """Least-squares GAN (Mao et al. 2017): D regresses real to 1 and fake to 0, G fake to 1."""

    def discriminator(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return 0.5 * (
            real_logits.float() - 1
        ).square().mean(), 0.5 * fake_logits.float().square().mean()

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (fake_logits.float() - 1).square().mean()
