"""The downstream model of SUPERB and EmoBox over a frozen encoder's layers: a learned weighted sum, then a head.

Input: `features=ssl`, each clip's layers mean-pooled over time, shaped (layers, width). The classifier
standardises every (layer, unit) on the training partition first (as for every model); `layer_norm`
adds SUPERB's normalisation of each layer vector on its own. The softmax of `layer_logits` weighs the
layers (uniform at the start); the weights are logged every epoch (`layer_weight/NN`) and drawn per run,
so a run shows which layers carry emotion. `layers` changes what the head reads: `weighted` (that sum), `concat`
(every layer side by side) or one layer's index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emotion.errors import ConfigError
from emotion.models.layers import single_input
from emotion.models.network import Network


class WeightedLayers(Network):
    """Softmax-weighted sum of the encoder's layers (or all of them side by side, or one), then Linear, ReLU,
    Dropout, Linear (or one Linear: hidden=0)."""

    arch = "ssl_head"

    def __init__(
        self,
        input_shapes: dict[str, tuple[int, ...]],
        num_classes: int = 6,
        hidden: int = 256,
        dropout: float = 0.1,
        layer_norm: bool = False,
        layers: str | int = "weighted",
    ) -> None:
        super().__init__()
        self.input_name, (count, width) = single_input(input_shapes, 2, "ssl_head", "(layers, width) (features=ssl)")
        if layers not in ("weighted", "concat") and not (isinstance(layers, int) and 0 <= layers < count):
            raise ConfigError(f"model.net.layers={layers}: choose weighted, concat or a layer from 0 to {count - 1}")
        self.layers = layers
        self.layer_logits = nn.Parameter(torch.zeros(count), requires_grad=layers == "weighted")
        self.layer_norm = layer_norm
        width = width * count if layers == "concat" else width
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

    def layer_weights(self) -> torch.Tensor | None:
        """The softmax of the learned layer logits (`layers=weighted`), else None."""
        return self.layer_logits.softmax(dim=0) if self.layers == "weighted" else None

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        layers = inputs[self.input_name]  # (batch, layers, width)
        if self.layer_norm:
            layers = F.layer_norm(layers, layers.shape[-1:])
        if self.layers == "concat":
            return self.head(layers.flatten(start_dim=1))
        if isinstance(self.layers, int):
            return self.head(layers[:, self.layers])
        return self.head((self.layer_logits.softmax(dim=0)[None, :, None] * layers).sum(dim=1))
