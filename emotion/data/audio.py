"""Decoding audio files into mono waveforms at one sample rate.

Files are decoded with soundfile (torchaudio.load needs TorchCodec) and
resampled with torchaudio.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF

from emotion.errors import DataError


def load_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Decode `path` to a mono float32 waveform at `sample_rate`; DataError naming the file if it cannot."""
    try:
        samples, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"cannot decode audio file {path}: {exc}") from exc
    if samples.shape[0] == 0:
        raise DataError(f"audio file has no samples: {path}")
    waveform = torch.from_numpy(samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1))
    if file_rate != sample_rate:
        waveform = AF.resample(waveform, file_rate, sample_rate)
    return waveform


def fit_length(waveform: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Centre-crop a longer waveform, or zero-pad a shorter one at the end, to exactly `n_samples`.

    Centre-cropping keeps the middle of the utterance, where acted emotion is
    strongest and leading/trailing silence is dropped; padding at the end keeps
    the onset aligned across clips.
    """
    length = waveform.shape[-1]
    if length >= n_samples:
        start = (length - n_samples) // 2
        return waveform[..., start : start + n_samples]
    return torch.nn.functional.pad(waveform, (0, n_samples - length))
