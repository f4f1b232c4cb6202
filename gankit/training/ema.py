"""An exponential moving average of the generator's weights (for samples, exports, metrics)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """Keeps `module`, a frozen copy of a network whose weights trail the live ones.

    After each iteration `update` moves every weight a fraction (1 - decay) toward the live
    network's and copies the buffers (BatchNorm statistics) as they are; `set_step` picks the
    decay of the coming iteration. The decay is either fixed per iteration, `decay` (with
    `warmup`, it starts low, min(decay, (1 + step) / (10 + step)), so early weights fade fast),
    or StyleGAN's half-life in images: with `half_life_images` H and `images_per_step` B, the
    decay is 0.5 ** (B / H), so a weight's influence halves every H images at any batch size;
    with `rampup` r, H is at most r times the images seen so far (StyleGAN's `ema_rampup`).
    """

    def __init__(
        self,
        source: nn.Module,
        decay: float = 0.0,
        warmup: bool = True,
        *,
        half_life_images: float = 0.0,
        images_per_step: int = 1,
        rampup: float = 0.0,
    ) -> None:
        if decay > 0 and half_life_images > 0:
            raise ValueError("give the EMA either a decay or a half-life in images, not both")
        self.module = copy.deepcopy(source).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        self.half_life_images, self.images_per_step = half_life_images, images_per_step
        self.rampup = rampup
        device = next(source.parameters()).device
        # 1 - decay of the coming update, on the device so that a CUDA graph reads it at replay
        self.weight = torch.full((), 1.0 - self.decay_at(0), device=device)

    def decay_at(self, step: int) -> float:
        """The decay used after `step` iterations."""
        if self.half_life_images > 0:
            half_life = self.half_life_images
            if self.rampup > 0:
                half_life = min(half_life, step * self.images_per_step * self.rampup)
            return 0.5 ** (self.images_per_step / max(half_life, 1e-8))
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    def set_step(self, step: int) -> None:
        """Use the decay of iteration `step` in the next `update` (no host sync)."""
        self.weight.fill_(1.0 - self.decay_at(step))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        """Move the average toward `source` (device ops only; no host sync)."""
        for kept, current in zip(self.module.parameters(), source.parameters(), strict=True):
            kept.lerp_(current.detach(), self.weight)
        for kept, current in zip(self.module.buffers(), source.buffers(), strict=True):
            kept.copy_(current)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
