"""Adversarial losses. Each takes D's logits and returns fp32 scalar losses.

A loss is an object with `discriminator(real_logits, fake_logits) -> (loss_real, loss_fake)` and
`generator(fake_logits) -> loss`; the discriminator minimises `loss_real + loss_fake`.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from gankit.registry import LOSSES


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
