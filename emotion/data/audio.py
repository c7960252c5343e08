"""Decoding audio files into mono waveforms at one sample rate.

Files are decoded with soundfile (torchaudio.load needs TorchCodec) and
resampled with torchaudio. A file longer than the caller's limit is refused
from its header, before any of it is decoded.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from emotion.errors import DataError

#: The longest clip read by default (seconds): longer ones are refused unread (config: `data.max_duration`).
MAX_DURATION = 300.0


def load_audio(
    source: str | Path | bytes, sample_rate: int, max_duration: float = MAX_DURATION, name: str | None = None
) -> torch.Tensor:
    """Decode a file (path, or its bytes) to a mono float32 waveform at `sample_rate`.

    DataError naming it (`name`: what it is, in words; else `audio file PATH`) if it cannot be decoded, or if its
    header says it lasts longer than `max_duration` seconds (then nothing of it is decoded).
    """
    name = name or f"audio file {source}"
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as audio:
            check_not_longer(audio.frames / audio.samplerate, max_duration, name)
            samples, file_rate = audio.read(dtype="float32", always_2d=True), audio.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        reason = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "it", str(exc))  # no Python object in the message
        raise DataError(f"cannot decode {name}: {reason}") from exc
    if samples.shape[0] == 0:
        raise DataError(f"{name} has no samples")
    if not np.isfinite(samples).all():
        raise DataError(f"{name} holds samples that are not finite numbers (NaN or infinity)")
    waveform = torch.from_numpy(samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1))
    if file_rate != sample_rate:
        waveform = AF.resample(waveform, file_rate, sample_rate)
    return waveform


def check_not_longer(seconds: float, max_duration: float, name: str) -> None:
    """DataError if a clip of `seconds` is longer than `max_duration` (`data.max_duration`)."""
    if seconds > max_duration:
        raise DataError(f"{name} is {seconds:.1f} s long, longer than data.max_duration={max_duration:g} s")


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
