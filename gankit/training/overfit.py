"""A warning, once, when D seems to memorise the training images (the usual end of a GAN on a
small dataset: D tells real from fake almost perfectly, G's loss climbs, samples turn grey).

Fed the records the trainer already logs every `train.log_every` steps (losses by name, ADA's
`augment_p`), so it costs no device work and no host sync. The sign it reads: D's loss on real
images (`d_loss_real`) falls to a tenth of its level at chance (where it starts: 0.69 for the
logistic losses, 1 for hinge, 0.5 for least squares) and stays there for a few logs while G's
loss rises. Losses with no real part, or a critic's unbounded scores (Wasserstein), carry no such
sign, and the watch stays silent for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from gankit.core.errors import warn

NEAR_ZERO = 0.1  # D's loss on reals below this share of its highest (near chance, at the start)
CHANCE_FLOOR = 0.5  # the least chance level of the losses it reads, should D start strong
PATIENCE = 3  # logs in a row that must show it
G_RISE = 0.2  # over which G's loss must grow by this share of its size (at least of 0.5)


@dataclass
class OverfitWatch:
    """Watches the logged losses and warns once when D seems to memorise the `images` training
    images; `enabled` is False on all but the main process."""

    images: int
    enabled: bool = True
    warned: bool = False
    highest_real: float = 0.0  # D's loss on reals at its highest so far
    streak: list[tuple[int, float, float]] = field(default_factory=list)  # (step, real, g)

    def observe(self, step: int, record: Mapping[str, float]) -> bool:
        """Take the record logged at `step`; returns True when it warned (the first time)."""
        if not self.enabled or self.warned:
            return False
        real, g_loss = record.get("d_loss_real"), record.get("g_loss")
        if real is None or g_loss is None or not (math.isfinite(real) and math.isfinite(g_loss)):
            return False
        if real < 0:  # a critic's scores, not a classifier's losses
            self.enabled = False
            return False
        self.highest_real = max(self.highest_real, real)
        if real > NEAR_ZERO * max(self.highest_real, CHANCE_FLOOR):
            self.streak.clear()
            return False
        self.streak.append((step, real, g_loss))
        first, last = self.streak[0], self.streak[-1]
        rise = last[2] - first[2]
        if len(self.streak) < PATIENCE or rise < G_RISE * max(abs(first[2]), CHANCE_FLOOR):
            return False
        self.warned = True
        warn(self.message(first, last, record.get("augment_p")))
        return True

    def message(
        self,
        first: tuple[int, float, float],
        last: tuple[int, float, float],
        augment_p: float | None,
    ) -> str:
        """What the warning says: since when, the numbers, and what to do."""
        advice = (
            "turn on augmentation (augment.name=ada) or add data"
            if augment_p is None
            else f"augmentation is on (augment_p {augment_p:.2f}): add data, or let ADA "
            "augment sooner and more (lower augment.speed_kimg or augment.target)"
        )
        return (
            f"the discriminator tells real images from fakes almost perfectly since step "
            f"{first[0]} (its loss on real images, d_loss_real, is {last[1]:.3g}, near 0) "
            f"while G's loss rises (g_loss {first[2]:.3g} -> {last[2]:.3g}): it may be "
            f"memorising the {self.images:,} training images; "
            f"{advice}"
        )
