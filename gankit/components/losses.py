"""Adversarial losses. Each sees D's logits on real and fake images and returns named fp32 parts.

A loss has `discriminator(logits) -> {name: loss}` and `generator(logits) -> {name: loss}`;
each network minimises the sum of its parts, and each part is logged under its name
(`d_loss_real`, `g_loss`, ...). `logits` is a `Logits`: D's logits on the (augmented) real
images and on the fakes, with their labels for class-conditional models. In G's update
`logits.real` is None unless the loss sets `generator_uses_real = True` (relativistic losses),
because computing it costs a forward pass of D. A loss names its parts in `parts`
({"discriminator": names, "generator": names}); one that does not is called once on small
logits to learn them.

Losses written for the earlier contract, `discriminator(real_logits, fake_logits) -> (loss_real,
loss_fake)` and `generator(fake_logits) -> loss`, still work: `named_parts` adapts them.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from pydantic import Field

from gankit.config.registry import LOSSES


class Logits(NamedTuple):
    """What a loss sees: D's logits on real images and on fakes, and, for class-conditional
    models, the labels of each (None otherwise)."""

    real: torch.Tensor | None
    fake: torch.Tensor
    real_labels: torch.Tensor | None = None
    fake_labels: torch.Tensor | None = None


Parts = dict[str, torch.Tensor]


class GANLoss(Protocol):
    """What the training iteration needs from a loss."""

    generator_uses_real: bool
    parts: dict[str, tuple[str, ...]]  # the part names of each network's loss

    def discriminator(self, logits: Logits) -> Parts: ...

    def generator(self, logits: Logits) -> Parts: ...


class PositionalLoss:
    """A loss of the earlier contract, `discriminator(real, fake) -> (real part, fake part)` and
    `generator(fake) -> loss`, seen through the current one (parts `d_loss_real`, `d_loss_fake`,
    `g_loss`)."""

    generator_uses_real = False
    parts = {"discriminator": ("d_loss_real", "d_loss_fake"), "generator": ("g_loss",)}

    def __init__(self, loss: Any) -> None:
        self.loss = loss

    def discriminator(self, logits: Logits) -> Parts:
        loss_real, loss_fake = self.loss.discriminator(logits.real, logits.fake)
        return {"d_loss_real": loss_real, "d_loss_fake": loss_fake}

    def generator(self, logits: Logits) -> Parts:
        return {"g_loss": self.loss.generator(logits.fake)}


def named_parts(loss: Any) -> GANLoss:
    """`loss` under the current contract (one of the earlier contract is adapted)."""
    required = [
        parameter
        for parameter in inspect.signature(loss.discriminator).parameters.values()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    return PositionalLoss(loss) if len(required) == 2 else loss


class SeparateLoss:
    """A loss whose parts each depend on one side's logits: `real(x)` and `fake(x)` are D's
    losses per image, `fooled(x)` G's; G never needs D's logits on reals."""

    generator_uses_real = False
    parts = PositionalLoss.parts

    def real(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fooled(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def discriminator(self, logits: Logits) -> Parts:
        return {
            "d_loss_real": self.real(logits.real.float()).mean(),
            "d_loss_fake": self.fake(logits.fake.float()).mean(),
        }

    def generator(self, logits: Logits) -> Parts:
        return {"g_loss": self.fooled(logits.fake.float()).mean()}


@LOSSES.register("non_saturating")
class NonSaturatingLoss(SeparateLoss):
    """Sigmoid cross-entropy on logits; G maximises log D(G(z)) (Goodfellow et al. 2014)."""

    # softplus(-x) = -log(sigmoid(x)): cross-entropy against label 1, stable for any logit.
    def real(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(-x)

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x)

    def fooled(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(-x)


@LOSSES.register("minimax")
class MinimaxLoss(NonSaturatingLoss):
    """The original minimax game: G minimises log(1 - D(G(z))) (saturates early in training)."""

    def fooled(self, x: torch.Tensor) -> torch.Tensor:
        return -F.softplus(x)  # log(1 - sigmoid(x)) = -softplus(x)


@LOSSES.register("hinge")
class HingeLoss(SeparateLoss):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN): D's margins at +-1, G raises D's score."""

    def real(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - x)

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(1 + x)

    def fooled(self, x: torch.Tensor) -> torch.Tensor:
        return -x


@LOSSES.register("wasserstein")
class WassersteinLoss(SeparateLoss):
    """Wasserstein critic loss (Arjovsky et al. 2017); pair it with a gradient penalty."""

    def real(self, x: torch.Tensor) -> torch.Tensor:
        return -x

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def fooled(self, x: torch.Tensor) -> torch.Tensor:
        return -x


@LOSSES.register("least_squares")
class LeastSquaresLoss(SeparateLoss):
    """Least-squares GAN (Mao et al. 2017): D regresses real to 1 and fake to 0, G fake to 1."""

    def real(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x - 1).square()

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.square()

    def fooled(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x - 1).square()


LeastSquares = Annotated[
    bool, Field(description="the least-squares form instead of the logistic one")
]


def _more_real(difference: torch.Tensor, least_squares: bool) -> torch.Tensor:
    """Per image, the loss for wanting `difference` (a logit minus a reference) positive:
    softplus(-d) = -log sigmoid(d), or (d - 1)^2."""
    return (difference - 1).square() if least_squares else F.softplus(-difference)


@LOSSES.register("relativistic")
class RelativisticLoss:
    """Relativistic GAN (RSGAN; Jolicoeur-Martineau 2018): real vs. paired fake, each side.

    D wants each real image to look more real than the fake paired with it, G the reverse."""

    generator_uses_real = True
    parts = {"discriminator": ("d_loss",), "generator": ("g_loss",)}

    def __init__(self, least_squares: LeastSquares = False) -> None:
        self.least_squares = least_squares

    def discriminator(self, logits: Logits) -> Parts:
        difference = logits.real.float() - logits.fake.float()
        return {"d_loss": _more_real(difference, self.least_squares).mean()}

    def generator(self, logits: Logits) -> Parts:
        difference = logits.fake.float() - logits.real.float()
        return {"g_loss": _more_real(difference, self.least_squares).mean()}


@LOSSES.register("relativistic_average")
class RelativisticAverageLoss:
    """Relativistic average GAN (RaGAN; with least_squares RaLSGAN; Jolicoeur-Martineau 2018).

    Each real image is judged against the average fake and each fake against the average real,
    for D and, reversed, for G."""

    generator_uses_real = True
    parts = {
        "discriminator": ("d_loss_real", "d_loss_fake"),
        "generator": ("g_loss_fake", "g_loss_real"),
    }

    def __init__(self, least_squares: LeastSquares = False) -> None:
        self.least_squares = least_squares

    def _pair(self, ahead: torch.Tensor, behind: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The losses for `ahead` looking more real than the average of `behind`, and for
        `behind` looking less real than the average of `ahead`."""
        ahead, behind = ahead.float(), behind.float()
        return (
            _more_real(ahead - behind.mean(), self.least_squares).mean(),
            _more_real(ahead.mean() - behind, self.least_squares).mean(),
        )

    def discriminator(self, logits: Logits) -> Parts:
        real, fake = self._pair(logits.real, logits.fake)
        return {"d_loss_real": real, "d_loss_fake": fake}

    def generator(self, logits: Logits) -> Parts:
        fake, real = self._pair(logits.fake, logits.real)
        return {"g_loss_fake": fake, "g_loss_real": real}
