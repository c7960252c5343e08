"""The report's 1D CNN over a time-averaged log-mel vector (128 x 1).

Four Conv1D k=5 'same' (256, 256, 128, 64), each followed by ReLU, MaxPool 2 and
BatchNorm; Flatten; Dense 32 with ReLU; Dropout; Dense to the classes. At 128
mel bins this has the report's 552,486 trainable parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from emotion.models.layers import make_activation, single_input
from emotion.models.network import Network


class CNN1D(Network):
    """1D CNN classifier over a (channels, length) input."""

    arch = "cnn1d"

    def __init__(
        self,
        input_shapes: dict[str, tuple[int, ...]],
        num_classes: int = 6,
        channels: Sequence[int] = (256, 256, 128, 64),
        kernel_size: int = 5,
        pool_size: int = 2,
        dense: int = 32,
        dropout: float = 0.3,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.input_name, (in_channels, length) = single_input(input_shapes, 2, "cnn1d", "(channels, length)")
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [
                nn.Conv1d(in_channels, out_channels, kernel_size, padding="same"),
                make_activation(activation),
                nn.MaxPool1d(pool_size),
                nn.BatchNorm1d(out_channels),
            ]
            in_channels, length = out_channels, length // pool_size
        self.convs = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * length, dense),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(dense, num_classes),
        )

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.convs(inputs[self.input_name]))
