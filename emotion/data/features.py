"""Acoustic features computed in batches with torchaudio.

A feature set turns a batch of fixed-length waveforms into one or more named
tensors (`logmel`, `mfcc`, ...). Every clip is first cropped or padded to the
samples that make exactly `n_frames` STFT frames, or cut into such windows (the
`window` policy, see `emotion.data.windows`). `egemaps` is the exception: the
openSMILE functionals summarise a whole clip, whatever its length.
Models check the shapes a feature set declares before training starts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T

from emotion.data.audio import fit_length
from emotion.data.windows import Window, trim_silence
from emotion.errors import ConfigError


@dataclass(frozen=True)
class Spectral:
    """STFT and mel settings shared by all feature sets (defaults: the report's 128 mels x 62 frames)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    n_frames: int = 62
    f_min: float = 0.0
    f_max: float | None = None
    top_db: float = 80.0

    @property
    def n_samples(self) -> int:
        """Waveform length that a centred STFT turns into exactly `n_frames` frames."""
        return self.hop_length * (self.n_frames - 1)

    def mel_spectrogram(self) -> MelPower:
        return MelPower(self)


class MelPower(torch.nn.Module):
    """Mel power spectrogram, as torchaudio's MelSpectrogram computes it, but faster on CPU.

    The STFT and the mel filters are torchaudio's; the power is re² + im² of the complex STFT,
    which is cheaper than MelSpectrogram's |z|^2 (a square root, then a square) and equal to it
    up to float rounding. See benchmarks/features.py.
    """

    def __init__(self, spectral: Spectral) -> None:
        super().__init__()
        self.stft = T.Spectrogram(n_fft=spectral.n_fft, hop_length=spectral.hop_length, power=None)
        self.mel_scale = T.MelScale(
            spectral.n_mels, spectral.sample_rate, spectral.f_min, spectral.f_max, n_stft=spectral.n_fft // 2 + 1
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        z = self.stft(waveforms)
        return self.mel_scale(z.real.square() + z.imag.square())


class FeatureSet:
    """Base of the feature sets: named outputs with known shapes, the window policy, and a cache key."""

    name: str = "features"
    #: True for features of a whole clip (functionals): no window, no crop.
    whole_clip: bool = False
    #: False where computing dwarfs decoding (a neural upstream): then torch keeps every core while caching.
    cheap_to_compute: bool = True

    def __init__(self, spectral: Spectral, window: Window | None = None) -> None:
        self.spectral = spectral
        self.window = window or Window()

    @property
    def sample_rate(self) -> int:
        return self.spectral.sample_rate

    @property
    def n_samples(self) -> int:
        return self.spectral.n_samples

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one example of each output, without the batch dimension."""
        raise NotImplementedError

    def params(self) -> dict:
        """Everything that changes the output; part of the cache key."""
        return {"name": self.name, **asdict(self.spectral), **self._trim_params()}

    def _trim_params(self) -> dict:
        """The silence trim, part of the cache key only when set (so untrimmed caches keep their keys)."""
        return {"trim_db": self.window.trim_db} if self.window.trim_db is not None else {}

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.params(), sort_keys=True).encode()).hexdigest()[:12]

    def prepare(self, waveform: torch.Tensor) -> torch.Tensor:
        """A decoded clip as the policy wants it before windowing: silence trimmed when `window.trim_db` is set."""
        return trim_silence(waveform, self.window.trim_db) if self.window.trim_db is not None else waveform

    def of_clips(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Features of prepared clips of any length, one row each: each clip centre-cropped or padded to the window."""
        return self(torch.stack([fit_length(w, self.n_samples) for w in waveforms]))

    def stored_of_clips(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the feature cache keeps of each clip (by default, its features); `view` turns it into features."""
        return self.of_clips(waveforms)

    def stored_names(self) -> tuple[str, ...]:
        """The names of the tensors `stored_of_clips` returns."""
        return tuple(self.shapes())

    def view(self, stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The features of what the cache keeps (by default, the same tensors)."""
        return stored

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of a batch of waveforms shaped (batch, n_samples)."""
        raise NotImplementedError


class LogMel(FeatureSet):
    """Log-mel spectrogram in dB, shaped (1, n_mels, n_frames): an image for the 2D CNN."""

    name = "logmel"

    def __init__(self, spectral: Spectral, window: Window | None = None) -> None:
        super().__init__(spectral, window)
        self._mel = spectral.mel_spectrogram()
        self._db = T.AmplitudeToDB("power", top_db=spectral.top_db)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"logmel": (1, self.spectral.n_mels, self.spectral.n_frames)}

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, 1, n_mels, n_frames) in dB; the channel dimension makes `top_db` clamp each clip alone."""
        return self._db(self._mel.to(waveforms.device)(waveforms.unsqueeze(1)))

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logmel": self.log_mel(waveforms)}


class MelMean(LogMel):
    """Log-mel averaged over time, shaped (1, n_mels): the report's input of the 1D CNN."""

    name = "mel_mean"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"mel_mean": (1, self.spectral.n_mels)}

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mel_mean": self.log_mel(waveforms).mean(dim=-1)}


class MFCC(FeatureSet):
    """MFCCs (orthonormal DCT-II of the log-mel spectrogram, as torchaudio's MFCC), shaped (1, n_mfcc, n_frames)."""

    name = "mfcc"

    def __init__(self, spectral: Spectral, n_mfcc: int = 40, window: Window | None = None) -> None:
        super().__init__(spectral, window)
        if n_mfcc > spectral.n_mels:
            raise ValueError(f"n_mfcc ({n_mfcc}) cannot exceed n_mels ({spectral.n_mels})")
        self.n_mfcc = n_mfcc
        self._logmel = LogMel(spectral)
        self._dct = AF.create_dct(n_mfcc, spectral.n_mels, norm="ortho")

    def params(self) -> dict:
        return {**super().params(), "n_mfcc": self.n_mfcc}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"mfcc": (1, self.n_mfcc, self.spectral.n_frames)}

    def from_log_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        """MFCCs of log-mel spectrograms shaped (..., n_mels, n_frames)."""
        return torch.matmul(log_mel.transpose(-1, -2), self._dct.to(log_mel.device)).transpose(-1, -2)

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mfcc": self.from_log_mel(self._logmel.log_mel(waveforms))}


class LogMelMFCC(FeatureSet):
    """Both the log-mel spectrogram and the MFCCs (computed from it): the inputs of the fusion model."""

    name = "logmel_mfcc"

    def __init__(self, spectral: Spectral, n_mfcc: int = 40, window: Window | None = None) -> None:
        super().__init__(spectral, window)
        self._logmel = LogMel(spectral)
        self._mfcc = MFCC(spectral, n_mfcc)

    def params(self) -> dict:
        return {**super().params(), "n_mfcc": self._mfcc.n_mfcc}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {**self._logmel.shapes(), **self._mfcc.shapes()}

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        log_mel = self._logmel.log_mel(waveforms)
        return {"logmel": log_mel, "mfcc": self._mfcc.from_log_mel(log_mel)}


class EGeMAPS(FeatureSet):
    """The 88 eGeMAPSv02 functionals of openSMILE over each whole (trimmed) clip, shaped (1, 88).

    The field's classical baseline (Eyben et al., 2016). openSMILE runs on one clip at a
    time, on the CPU; the cache computes each clip once.
    """

    name = "egemaps"
    whole_clip = True
    N_FUNCTIONALS = 88

    def __init__(self, spectral: Spectral, window: Window | None = None) -> None:
        super().__init__(spectral, window)
        if self.window.whole_utterance:
            raise ConfigError(
                "features=egemaps already summarises each whole clip: use features/window=crop (trim_db still applies)"
            )
        import opensmile  # imported here: it loads pandas and audformat, which only this feature set needs

        self._version = opensmile.__version__
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )

    def params(self) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "opensmile": self._version, **self._trim_params()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"egemaps": (1, self.N_FUNCTIONALS)}

    def of_clips(self, waveforms: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = [self._smile.process_signal(w.numpy(), self.sample_rate).to_numpy(dtype="float32") for w in waveforms]
        return {"egemaps": torch.from_numpy(np.stack(rows))}

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.of_clips(list(waveforms.cpu()))
