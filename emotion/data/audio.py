"""Decoding audio files into mono waveforms at one sample rate.

Files are decoded with soundfile (torchaudio.load needs TorchCodec) and
resampled with torchaudio (`resample`). A file longer than the caller's limit is refused
from its header, before any of it is decoded; so is one whose sample rate is out of bounds.
"""

from __future__ import annotations

import io
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from emotion.errors import DataError

#: The longest clip read by default (seconds): longer ones are refused unread (config: `data.max_duration`).
MAX_DURATION = 300.0
#: The sample rates a clip may have (Hz): any rate between them is resampled.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000
#: The most (reduced numerator x denominator) of a resampling ratio taken exactly: torchaudio's kernel has about
#: that many taps, so a ratio like 44101:16000 would need gigabytes. Larger ratios are approximated.
MAX_RATIO_TERMS = 4_000_000


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
            check_sample_rate(audio.samplerate, name)
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
    return resample(waveform, file_rate, sample_rate)


def check_sample_rate(rate: float, name: str) -> None:
    """DataError unless `rate` is a whole number of samples a second within the bounds this project resamples."""
    if not float(rate).is_integer() or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise DataError(
            f"{name} has a sample rate of {rate:g} Hz: give a whole number of Hz "
            f"from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}"
        )


def resample(waveform: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """`waveform` at `rate` Hz resampled to `target` Hz, in bounded memory whatever the two rates.

    torchaudio's windowed-sinc resampler builds a kernel of (reduced ratio's numerator x denominator) taps: exact
    for the usual rates (44100:16000 is 441:160), but 44101:16000 would take gigabytes. Such a ratio is replaced by
    the nearest one with at most `MAX_RATIO_TERMS` (off by a few millionths: far below what anyone hears).
    """
    if rate == target:
        return waveform
    ratio = Fraction(int(rate), int(target))
    if ratio.numerator * ratio.denominator > MAX_RATIO_TERMS:
        ratio = ratio.limit_denominator(math.isqrt(int(MAX_RATIO_TERMS / ratio)))
    return AF.resample(waveform, ratio.numerator, ratio.denominator)


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
