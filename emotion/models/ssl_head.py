"""The downstream model of SUPERB and EmoBox over a frozen upstream's layers: a learned weighted sum, then a head.

Input: `features=ssl`, each clip's layers mean-pooled over time, shaped (layers, dim). The
softmax of `layer_logits` weighs the layers (uniform at the start); the weights are logged every
epoch (`layer_weight/NN`), so a run shows which layers carry emotion.
"""

from __future__ import annotations

import torch
from torch import nn

from emotion.models.layers import single_input


class WeightedLayers(nn.Module):
    """Softmax-weighted sum of the upstream's layers, then Linear, ReLU, Dropout, Linear."""

    arch = "ssl_head"

    def __init__(
        self, input_shapes: dict[str, tuple[int, ...]], num_classes: int = 6, hidden: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.input_name, (layers, dim) = single_input(input_shapes, 2, "ssl_head", "(layers, dim) (features=ssl)")
        self.layer_logits = nn.Parameter(torch.zeros(layers))
        self.head = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def layer_weights(self) -> torch.Tensor:
        return self.layer_logits.softmax(dim=0)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        layers = inputs[self.input_name]  # (batch, layers, dim)
        return self.head((self.layer_weights()[None, :, None] * layers).sum(dim=1))
