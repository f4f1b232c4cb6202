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
    decay of the coming iteration. With `warmup`, the decay starts low,
    min(decay, (1 + step) / (10 + step)), so early weights fade fast.
    """

    def __init__(self, source: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(source).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        device = next(source.parameters()).device
        # 1 - decay of the coming update, on the device so that a CUDA graph reads it at replay
        self.weight = torch.full((), 1.0 - self.decay_at(0), device=device)

    def decay_at(self, step: int) -> float:
        """The decay used after `step` iterations."""
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
