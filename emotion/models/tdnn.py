"""A compact ECAPA-style TDNN over log-mel frames, with attentive statistics pooling over time.

The network of speaker-independent SER recipes (ECAPA-TDNN, as in SpeechBrain's emotion
recipes), made small (about 0.67 M parameters at the defaults, against the report's 0.83 M):
a 1D convolution over frequency-as-channels, residual dilated blocks with squeeze-excitation,
the blocks' outputs concatenated, then attentive statistics pooling (a learned weighting
of frames, whose weighted mean and standard deviation summarise the clip) and a small head.

Each clip's mean log-mel spectrum (over its real frames) is subtracted first, as speaker
recognisers do (cepstral mean normalisation): a level or microphone difference between
speakers is a constant offset per band, which this removes.

It takes clips of any length. A batch of clips padded to one length gives `lengths` (frames
per clip): every layer zeroes the padded frames, as a convolution's own zero padding would,
and the squeeze-excitation and pooling average over real frames only, so a clip's output
does not depend on how much padding its batch added.
"""

from __future__ import annotations

import torch
from torch import nn

from emotion.models.layers import single_input
from emotion.models.network import Network


def frame_mask(lengths: torch.Tensor | None, batch: int, frames: int, device: torch.device) -> torch.Tensor:
    """(batch, 1, frames): 1 on each clip's real frames, 0 on padding (all ones without `lengths`)."""
    if lengths is None:
        return torch.ones(batch, 1, frames, device=device)
    return (torch.arange(frames, device=device)[None, :] < lengths.to(device)[:, None]).unsqueeze(1).float()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time (last axis) of the real frames: (batch, channels, 1)."""
    return (x * mask).sum(dim=-1, keepdim=True) / mask.sum(dim=-1, keepdim=True).clamp_min(1.0)


class SqueezeExcitation(nn.Module):
    """Channel weights from the clip's mean activation over real frames."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Conv1d(channels, bottleneck, 1), nn.ReLU(), nn.Conv1d(bottleneck, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * self.gate(masked_mean(x, mask))


class TDNNBlock(nn.Module):
    """Dilated convolution, 1x1 convolution, squeeze-excitation, and a residual connection."""

    def __init__(self, channels: int, dilation: int, bottleneck: int) -> None:
        super().__init__()
        self.dilated = nn.Sequential(
            nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation), nn.ReLU(), nn.BatchNorm1d(channels)
        )
        self.pointwise = nn.Sequential(nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.BatchNorm1d(channels))
        self.excite = SqueezeExcitation(channels, bottleneck)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.dilated(x) * mask
        y = self.pointwise(y) * mask
        return (self.excite(y, mask) + x) * mask


class AttentiveStatisticsPooling(nn.Module):
    """The attention-weighted mean and standard deviation over a clip's real frames: (batch, 2 x channels)."""

    def __init__(self, channels: int, attention: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Conv1d(channels, attention, 1), nn.Tanh(), nn.Conv1d(attention, channels, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(x).float().masked_fill(mask == 0, float("-inf"))
        weights = scores.softmax(dim=-1)
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

    def forward(self, inputs: dict[str, torch.Tensor], lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = inputs[self.input_name].flatten(start_dim=1, end_dim=2).contiguous()  # (batch, frequency, frames)
        mask = frame_mask(lengths, x.shape[0], x.shape[-1], x.device)
        if self.utterance_mean_norm:
            x = x - masked_mean(x, mask)
        x = self.stem_norm(self.stem(x * mask)) * mask
        outputs = []
        for block in self.blocks:
            x = block(x, mask)
            outputs.append(x)
        x = self.aggregate(torch.cat(outputs, dim=1)) * mask
        return self.head(self.pool(x, mask))
