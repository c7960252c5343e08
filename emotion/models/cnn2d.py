"""The report's 2D CNN over a time-frequency image (log-mel or MFCC).

Conv2D 3x3 'same' (256, 128, 64), each followed by ReLU, MaxPool 2 and Dropout;
Flatten; Dense 64 with ReLU; BatchNorm; Dense to the classes. At a 128 x 62
input this has the report's 830,726 trainable parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from emotion.models.layers import make_activation, single_input
from emotion.models.network import Network


class CNN2D(Network):
    """2D CNN classifier; `embed` gives the Dense-64 embedding that the fusion model reuses."""

    arch = "cnn2d"

    def __init__(
        self,
        input_shapes: dict[str, tuple[int, ...]],
        num_classes: int = 6,
        channels: Sequence[int] = (256, 128, 64),
        kernel_size: int = 3,
        pool_size: int = 2,
        dropout: float = 0.25,
        dense: int = 64,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.input_name, (in_channels, height, width) = single_input(
            input_shapes, 3, "cnn2d", "(channels, height, width)"
        )
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size, padding="same"),
                make_activation(activation),
                nn.MaxPool2d(pool_size),
                nn.Dropout(dropout),
            ]
            in_channels, height, width = out_channels, height // pool_size, width // pool_size
        self.convs = nn.Sequential(*blocks)
        self.embedding = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * height * width, dense),
            make_activation(activation),
            nn.BatchNorm1d(dense),
        )
        self.classifier = nn.Linear(dense, num_classes)
        self.embedding_size = dense

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The Dense embedding (after its BatchNorm) of a batch."""
        return self.embedding(self.convs(inputs[self.input_name]))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.embed(inputs))
