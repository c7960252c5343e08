"""The downstream model of SUPERB and EmoBox over a frozen encoder's layers: a learned weighted sum, then a head.

Input: `features=ssl`, each clip's layers mean-pooled over time, shaped (layers, width). The classifier
standardises every (layer, unit) on the training partition first (as for every model); `layer_norm`
adds SUPERB's normalisation of each layer vector on its own. The softmax of `layer_logits` weighs the
layers (uniform at the start); the weights are logged every epoch (`layer_weight/NN`) and drawn per run,
so a run shows which layers carry emotion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emotion.models.layers import single_input
from emotion.models.network import Network


class WeightedLayers(Network):
    """Softmax-weighted sum of the encoder's layers, then Linear, ReLU, Dropout, Linear (or one Linear: hidden=0)."""

    arch = "ssl_head"

    def __init__(
        self,
        input_shapes: dict[str, tuple[int, ...]],
        num_classes: int = 6,
        hidden: int = 256,
        dropout: float = 0.1,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.input_name, (layers, width) = single_input(input_shapes, 2, "ssl_head", "(layers, width) (features=ssl)")
        self.layer_logits = nn.Parameter(torch.zeros(layers))
        self.layer_norm = layer_norm
        if hidden:
            self.head = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(width, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def layer_weights(self) -> torch.Tensor:
        """The softmax of the learned layer logits."""
        return self.layer_logits.softmax(dim=0)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        layers = inputs[self.input_name]  # (batch, layers, width)
        if self.layer_norm:
            layers = F.layer_norm(layers, layers.shape[-1:])
        return self.head((self.layer_weights()[None, :, None] * layers).sum(dim=1))
