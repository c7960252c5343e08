"""Learning-rate schedules that torch does not ship as one class."""

from __future__ import annotations

import functools
import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(epoch: int, warmup_epochs: int, max_epochs: int) -> float:
    """The learning rate's factor at `epoch`: linear warm-up, then cosine decay to zero at `max_epochs`."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    progress = (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class WarmupCosine(LambdaLR):
    """A linear warm-up over `warmup_epochs`, then cosine decay to zero at `max_epochs` (stepped per epoch)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_epochs: int, max_epochs: int) -> None:
        factor = functools.partial(warmup_cosine_factor, warmup_epochs=warmup_epochs, max_epochs=max_epochs)
        super().__init__(optimizer, factor)
