"""Softmax regression (optionally with one hidden layer) over any features: the classical baseline's head.

With `features=egemaps` this is the field's usual baseline, logistic regression on
the 88 eGeMAPS functionals, trained through the same splits, cross-validation,
sweeps, tracking, promotion and prediction as the networks. Inputs arrive
standardised (the shared LightningModule's standardiser); each is flattened and
the flattened inputs are concatenated.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from emotion.models.layers import make_activation
from emotion.models.network import Network


class SoftmaxRegression(Network):
    """Softmax regression (one linear layer); `hidden` > 0 adds one hidden layer: a small MLP."""

    arch = "linear"

    def __init__(
        self,
        input_shapes: dict[str, tuple[int, ...]],
        num_classes: int = 6,
        hidden: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.input_names = tuple(input_shapes)
        width = sum(math.prod(shape) for shape in input_shapes.values())
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        if hidden:
            layers += [nn.Linear(width, hidden), make_activation(activation), nn.Dropout(dropout)]
            width = hidden
        self.head = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([inputs[name].flatten(start_dim=1) for name in self.input_names], dim=1))
