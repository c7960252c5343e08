"""Feature extraction: our batched torchaudio pipeline (cold, then from the warm cache) vs librosa per clip."""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Record, timed
from emotion.data.audio import fit_length
from emotion.data.cache import FeatureCache
from emotion.data.corpora import read_corpus
from emotion.data.features import LogMel, Spectral
from emotion.data.frontend import AudioFrontEnd


def librosa_logmel(path: Path, spectral: Spectral) -> np.ndarray:
    """What a user would write with librosa: load, crop or pad, log-mel with the same parameters as ours."""
    import librosa

    samples, _ = librosa.load(path, sr=spectral.sample_rate)
    samples = fit_length(torch.from_numpy(samples), spectral.n_samples).numpy()
    power = librosa.feature.melspectrogram(
        y=samples,
        sr=spectral.sample_rate,
        n_fft=spectral.n_fft,
        hop_length=spectral.hop_length,
        n_mels=spectral.n_mels,
        fmin=spectral.f_min,
        fmax=spectral.f_max,
        power=2.0,
        center=True,
        pad_mode="reflect",  # torchaudio's, like htk mels without area normalisation below
        htk=True,
        norm=None,
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=spectral.top_db)


def _ours_cold_and_warm(corpus_root: Path, clips: list, features: LogMel) -> tuple[float, float, np.ndarray]:
    """Seconds to fill an empty cache, then to read it back whole; and the features."""
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-features-"))
    try:
        cold_seconds, table = timed(lambda: FeatureCache(cache_dir, corpus_root, AudioFrontEnd(features)).table(clips))
        warm_seconds, _ = timed(lambda: FeatureCache(cache_dir, corpus_root, AudioFrontEnd(features)).table(clips))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return cold_seconds, warm_seconds, table.tensors["logmel"][:, 0].numpy()


def run(corpus_root: Path, n_clips: int, repeats: int, machine: dict) -> list[Record]:
    """Cold and warm extraction of `n_clips` clips' log-mels against librosa; medians of interleaved repeats."""
    spectral = Spectral()
    features = LogMel(spectral)
    clips = read_corpus(corpus_root, "crema_d").clips[:n_clips]
    _ours_cold_and_warm(corpus_root, clips[:1], features)  # torch's first-call set-up: not counted
    librosa_logmel(clips[0].path, spectral)  # librosa's first call compiles with numba: not counted
    cold, warm, peer = [], [], []
    for _ in range(repeats):
        cold_seconds, warm_seconds, ours = _ours_cold_and_warm(corpus_root, clips, features)
        peer_seconds, theirs = timed(lambda: [librosa_logmel(c.path, spectral) for c in clips])
        cold.append(cold_seconds)
        warm.append(warm_seconds)
        peer.append(peer_seconds)
    difference = float(np.abs(ours - np.stack(theirs)).max())
    parameters = {
        "clips": len(clips),
        "features": "logmel 128 x 62",
        "repeats": repeats,
        "max_abs_difference_db": round(difference, 4),
        "ours_cold_runs": [round(x, 3) for x in cold],
        "ours_warm_runs": [round(x, 4) for x in warm],
        "librosa_runs": [round(x, 3) for x in peer],
    }
    common = {"parameters": parameters, "machine": machine}
    return [
        Record(
            "features: cold, ours vs librosa",
            statistics.median(cold),
            statistics.median(peer),
            "s",
            **common,
            notes="ours: decode (one thread ahead), batched torchaudio on 64 clips, write cache shards",
        ),
        Record(
            "features: warm cache, ours vs librosa",
            statistics.median(warm),
            statistics.median(peer),
            "s",
            **common,
            notes="ours: read cache shards; librosa recomputes (it has no cache)",
        ),
    ]
