"""A compact ECAPA-style TDNN over log-mel frames, with attentive statistics pooling over time.

The network of speaker-independent SER recipes (ECAPA-TDNN, as in SpeechBrain's emotion
recipes), made small (about 0.67 M parameters at the defaults, against the report's 0.83 M):
a 1D convolution over frequency-as-channels, residual dilated blocks with squeeze-excitation,
the blocks' outputs concatenated, then attentive statistics pooling (a learned weighting
of frames, whose weighted mean and standard deviation summarise the clip) and a small head.

Each clip's mean log-mel spectrum is subtracted first, as speaker recognisers do (cepstral
mean normalisation): a level or microphone difference between speakers is a constant offset
per band, which this removes. Its batches hold windows of one length (`features/window`).
"""

from __future__ import annotations

import torch
from torch import nn

from emotion.models.layers import single_input
from emotion.models.network import Network


class SqueezeExcitation(nn.Module):
    """Channel weights from the clip's mean activation over time."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Conv1d(channels, bottleneck, 1), nn.ReLU(), nn.Conv1d(bottleneck, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=-1, keepdim=True))


class TDNNBlock(nn.Module):
    """Dilated convolution, 1x1 convolution, squeeze-excitation, and a residual connection."""

    def __init__(self, channels: int, dilation: int, bottleneck: int) -> None:
        super().__init__()
        self.dilated = nn.Sequential(
            nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation), nn.ReLU(), nn.BatchNorm1d(channels)
        )
        self.pointwise = nn.Sequential(nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.BatchNorm1d(channels))
        self.excite = SqueezeExcitation(channels, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.excite(self.pointwise(self.dilated(x))) + x


class AttentiveStatisticsPooling(nn.Module):
    """The attention-weighted mean and standard deviation over a clip's frames: (batch, 2 x channels)."""

    def __init__(self, channels: int, attention: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Conv1d(channels, attention, 1), nn.Tanh(), nn.Conv1d(attention, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.score(x).float().softmax(dim=-1)
        mean = (weights * x).sum(dim=-1)
        variance = (weights * x.float().pow(2)).sum(dim=-1) - mean.pow(2)
        return torch.cat([mean, variance.clamp_min(1e-6).sqrt()], dim=1)


class CompactTDNN(Network):
    """ECAPA-style TDNN: stem, dilated residual SE blocks, aggregation, attentive statistics pooling, head."""

    arch = "tdnn"

    def __init__(
        self,
        input_shapes: dict[str, tuple[int, ...]],
        num_classes: int = 6,
        channels: int = 160,
        dilations: tuple[int, ...] = (2, 3, 4),
        bottleneck: int = 48,
        aggregate: int = 256,
        attention: int = 64,
        embedding: int = 128,
        dropout: float = 0.3,
        utterance_mean_norm: bool = True,
    ) -> None:
        super().__init__()
        self.utterance_mean_norm = utterance_mean_norm
        self.input_name, (in_channels, frequency, _) = single_input(input_shapes, 3, "tdnn", "(1, frequency, frames)")
        self.stem = nn.Sequential(nn.Conv1d(in_channels * frequency, channels, 5, padding=2), nn.ReLU())
        self.stem_norm = nn.BatchNorm1d(channels)
        self.blocks = nn.ModuleList(TDNNBlock(channels, d, bottleneck) for d in dilations)
        self.aggregate = nn.Sequential(nn.Conv1d(channels * len(dilations), aggregate, 1), nn.ReLU())
        self.pool = AttentiveStatisticsPooling(aggregate, attention)
        self.head = nn.Sequential(
            nn.BatchNorm1d(2 * aggregate),
            nn.Dropout(dropout),
            nn.Linear(2 * aggregate, embedding),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(embedding, num_classes),
        )

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs[self.input_name].flatten(start_dim=1, end_dim=2).contiguous()  # (batch, frequency, frames)
        if self.utterance_mean_norm:
            x = x - x.mean(dim=-1, keepdim=True)
        x = self.stem_norm(self.stem(x))
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return self.head(self.pool(self.aggregate(torch.cat(outputs, dim=1))))
