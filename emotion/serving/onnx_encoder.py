"""Whisper's encoder as an ONNX graph: one clip's log-mel in, every layer pooled over the clip's frames out.

    log_mel (clips, 80, frames)  frames (clips,)  ->  mean, std (clips, layers, width)

The graph is `emotion.encoders.huggingface.cut_whisper_layers` (the package's own forward, traced) on the whole
log-mel given, followed by the pooling `Encoder.pooled_statistics` does: each layer's mean and standard
deviation over the clip's own output frames (half its `frames`). `whisper_input=cut` gives the clip's own
frames (`frames` of them), `pad30` all 3000 of its 30 s log-mel: either way the encoder attends to every frame
given, so one run holds one clip (or clips of one length).

Exported by torch's TorchScript exporter: the dynamo exporter (torch 2.14's default) cannot trace
`cut_whisper_layers`, which branches on whether a batch is padded (a test of the frame counts' values); traced
unpadded, the branch is the one a lone clip takes. `emotion.serving.onnx_export` checks the graph against
PyTorch at frame counts other than the traced one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from emotion.encoders.base import frame_mask
from emotion.encoders.huggingface import WhisperEncoderLayers, cut_whisper_layers

#: The opset of the exported graphs (ONNX Runtime 1.17 and later run it).
OPSET = 18
#: The frames of the log-mel the encoder is traced on (any other count runs as well: the axis is dynamic).
TRACED_FRAMES = 200


class PooledWhisperLayers(nn.Module):
    """Whisper's encoder layers on log-mels of the clips' own length, each layer pooled over each clip's frames."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, log_mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended = torch.full_like(frames, log_mel.shape[-1])  # every frame given: no padding to mask
        states = torch.stack(cut_whisper_layers(self.encoder, log_mel, attended), dim=1)  # (clips, layers, t, w)
        real = frame_mask(frames // 2, states.shape[2]).to(states.dtype)[:, None, :, None]
        count = (frames // 2).to(states.dtype)[:, None, None]
        mean = (states * real).sum(dim=2) / count
        variance = ((states - mean[:, :, None]).square() * real).sum(dim=2) / count
        return mean, variance.sqrt()


def export_encoder(encoder: WhisperEncoderLayers, path: Path) -> None:
    """`encoder` (the model's Whisper, frozen, in fp32) written to `path` as one ONNX file."""
    module = PooledWhisperLayers(encoder.model.float().cpu().eval())
    log_mel = torch.zeros(1, int(encoder.extractor.feature_size), TRACED_FRAMES)
    frames = torch.tensor([TRACED_FRAMES])
    axes = {"log_mel": {0: "clips", 2: "frames"}, "frames": {0: "clips"}, "mean": {0: "clips"}, "std": {0: "clips"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice, and the trace's note on the branch
        torch.onnx.export(module, (log_mel, frames), str(path), input_names=["log_mel", "frames"],
                          output_names=["mean", "std"], dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)  # fmt: skip
