"""Whisper's log-mel front end on only the audio its encoder reads.

`WhisperFeatureExtractor` pads every clip to 30 s before its short-time Fourier transform, even when the
encoder then reads only the clip's frames (`whisper_input=cut`). `WhisperLogMel` gives the same numbers for
those frames from the clip alone: each frame's window sees the same samples (the clip, then zeros), and the
clip's maximum, from which Whisper floors the log-mel 8 decades down, is taken over every frame that touches
the clip (the 30 s input's other frames are silence, the lowest value there is). On 30 s it is the extractor.
"""

from __future__ import annotations

from typing import Any

import torch


class WhisperLogMel:
    """Whisper's log-mel spectrogram (`WhisperFeatureExtractor`'s numbers) of a padded batch, on its first frames."""

    def __init__(self, extractor: Any) -> None:
        self.n_fft, self.hop_length = int(extractor.n_fft), int(extractor.hop_length)
        self.max_samples, self.max_frames = int(extractor.n_samples), int(extractor.nb_max_frames)
        self.window = torch.hann_window(self.n_fft)
        self.filters = torch.from_numpy(extractor.mel_filters).float().T.contiguous()  # (mels, frequencies)

    def samples_read(self, frames: int) -> int:
        """Audio (samples, zero-padded) whose transform gives `frames` frames and every frame touching the clip."""
        return min(self.max_samples, (frames + 2) * self.hop_length + self.n_fft)

    def __call__(self, waves: torch.Tensor, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        """(batch, mels, frames): each clip's first `frames` log-mel frames, as in its 30 s input; in float32
        (outside any autocast: `features.precision=bf16` is for the network)."""
        with torch.autocast(waves.device.type, enabled=False):
            return self._log_mel(waves, lengths, frames)

    def _log_mel(self, waves: torch.Tensor, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        samples = self.samples_read(frames)
        audio = waves[:, :samples].float()
        audio = audio * (torch.arange(audio.shape[1], device=audio.device)[None, :] < lengths[:, None])
        audio = torch.nn.functional.pad(audio, (0, samples - audio.shape[1]))
        window, filters = self.window.to(audio.device), self.filters.to(audio.device)
        spectrum = torch.stft(audio, self.n_fft, self.hop_length, window=window, return_complex=True)
        power = (spectrum[..., : self.max_frames].abs() ** 2).contiguous()
        log_mel = (filters @ power).clamp_min(1e-10).log10()
        floor = log_mel.amax(dim=(1, 2), keepdim=True) - 8.0
        return ((torch.maximum(log_mel, floor) + 4.0) / 4.0)[..., :frames]
