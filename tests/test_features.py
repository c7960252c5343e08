"""Features: shapes, decoding, crop/pad policy, and the on-disk cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.transforms as T

from emotion.data.audio import fit_length, load_audio
from emotion.data.cache import FeatureCache
from emotion.data.corpora import read_corpus
from emotion.data.features import MFCC, EGeMAPS, LogMel, LogMelMFCC, MelMean, Spectral
from emotion.data.frontend import AudioFrontEnd
from emotion.errors import DataError

SPECTRAL = Spectral()


@pytest.mark.parametrize(
    ("features", "shapes"),
    [
        (LogMel(SPECTRAL), {"logmel": (1, 128, 62)}),
        (MelMean(SPECTRAL), {"mel_mean": (1, 128)}),
        (MFCC(SPECTRAL, n_mfcc=40), {"mfcc": (1, 40, 62)}),
        (LogMelMFCC(SPECTRAL, n_mfcc=20), {"logmel": (1, 128, 62), "mfcc": (1, 20, 62)}),
    ],
)
def test_feature_sets_produce_the_shapes_they_declare(features, shapes) -> None:
    assert features.shapes() == shapes
    batch = features(torch.randn(3, features.n_samples))
    assert {name: tuple(t.shape[1:]) for name, t in batch.items()} == shapes
    assert all(t.shape[0] == 3 and torch.isfinite(t).all() for t in batch.values())


def test_log_mel_clamps_each_clip_to_its_own_dynamic_range() -> None:
    loud, quiet = torch.randn(SPECTRAL.n_samples), 1e-4 * torch.randn(SPECTRAL.n_samples)
    together = LogMel(SPECTRAL)(torch.stack([loud, quiet]))["logmel"]
    alone = LogMel(SPECTRAL)(quiet[None])["logmel"]
    assert torch.allclose(together[1], alone[0], atol=1e-4)


def test_window_is_exactly_n_frames() -> None:
    assert SPECTRAL.n_samples == 512 * 61
    assert fit_length(torch.ones(100), 300).shape == (300,)
    assert fit_length(torch.ones(100), 300)[100:].abs().sum() == 0  # short clips are zero-padded at the end
    assert torch.equal(fit_length(torch.arange(10.0), 4), torch.tensor([3.0, 4.0, 5.0, 6.0]))  # centre crop


def test_audio_is_decoded_to_mono_at_the_requested_rate(tmp_path: Path) -> None:
    stereo = np.stack([np.sin(np.linspace(0, 100, 44100)), np.zeros(44100)], axis=1).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", stereo, 44100)
    wave = load_audio(tmp_path / "stereo.wav", 16000)
    assert wave.shape == (16000,)
    assert wave.dtype == torch.float32


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "cannot decode audio file"), (b"RIFF not really a wav file", "cannot decode audio file")],
)
def test_undecodable_files_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "1001_IEO_ANG_MD.wav"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{message} {path}"):
        load_audio(path, 16000)


def test_zero_length_audio_is_named(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=f"audio file {path} has no samples"):
        load_audio(path, 16000)


def test_second_read_computes_nothing(tiny_corpus: Path, tmp_path: Path) -> None:
    clips = read_corpus(tiny_corpus).clips
    first = FeatureCache(tmp_path, tiny_corpus, AudioFrontEnd(LogMel(SPECTRAL))).table(clips)
    second = FeatureCache(tmp_path, tiny_corpus, AudioFrontEnd(LogMel(SPECTRAL))).table(clips)
    assert (first.computed, first.cached) == (72, 0)
    assert (second.computed, second.cached) == (0, 72)
    assert torch.equal(first.tensors["logmel"], second.tensors["logmel"])


def test_cache_is_keyed_by_feature_parameters(tiny_corpus: Path, tmp_path: Path) -> None:
    clips = read_corpus(tiny_corpus).clips
    FeatureCache(tmp_path, tiny_corpus, AudioFrontEnd(LogMel(SPECTRAL))).table(clips)
    other = FeatureCache(tmp_path, tiny_corpus, AudioFrontEnd(LogMel(Spectral(n_mels=64)))).table(clips)
    assert other.computed == 72
    assert other.tensors["logmel"].shape == (72, 1, 64, 62)


def test_only_missing_clips_are_computed_after_an_interrupted_run(tiny_corpus: Path, tmp_path: Path) -> None:
    clips = read_corpus(tiny_corpus).clips
    cache = FeatureCache(tmp_path, tiny_corpus, AudioFrontEnd(LogMel(SPECTRAL)), shard_size=16)
    cache.table(clips[:40])  # a run that died after caching 40 clips
    (cache.folder / ".shard-dead.pt.partial").write_bytes(b"half-written")  # what a kill mid-write leaves
    resumed = cache.table(clips)
    assert (resumed.computed, resumed.cached) == (32, 40)
    assert resumed.tensors["logmel"].shape[0] == 72


def test_undecodable_clips_are_skipped_and_counted(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    (corpus / "1001_IEO_ANG_MD.wav").write_bytes(b"garbage")
    clips = read_corpus(corpus).clips
    table = FeatureCache(tmp_path, corpus, AudioFrontEnd(LogMel(SPECTRAL))).table(clips, on_bad_file="skip")
    assert table.skipped == [str(corpus / "1001_IEO_ANG_MD.wav")]
    assert len(table.clips) == 71 and table.tensors["logmel"].shape[0] == 71


def test_skipped_clips_are_counted_by_reason_and_named(tiny_corpus: Path, tmp_path: Path, caplog) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for wav in sorted(tiny_corpus.glob("*.wav"))[:3]:
        shutil.copy(wav, corpus / wav.name)
    (corpus / "1001_IEO_ANG_HI.wav").write_bytes(b"garbage")
    sf.write(corpus / "1001_IEO_ANG_LO.wav", np.full(800, 0.1, dtype=np.float32), 16000)  # 0.05 s: decodes fine
    clips = read_corpus(corpus).clips
    front_end = AudioFrontEnd(LogMel(SPECTRAL), min_duration=0.25)
    with caplog.at_level("WARNING"):
        table = FeatureCache(tmp_path, corpus, front_end).table(clips, on_bad_file="skip")
    assert len(table.skipped) == 2 and len(table.clips) == 3
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped "))
    assert summary == (
        "skipped 2 clip(s): 1 could not be decoded (1001_IEO_ANG_HI.wav); "
        "1 shorter than data.min_duration (1001_IEO_ANG_LO.wav)"
    )


def test_undecodable_clips_stop_the_run_under_the_error_policy(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    (corpus / "1001_IEO_ANG_MD.wav").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"1001_IEO_ANG_MD\.wav"):
        FeatureCache(tmp_path, corpus, AudioFrontEnd(LogMel(SPECTRAL))).table(
            read_corpus(corpus).clips, on_bad_file="error"
        )


def test_a_clip_longer_than_max_duration_is_refused_from_its_header(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for wav in sorted(tiny_corpus.glob("*.wav"))[:3]:
        shutil.copy(wav, corpus / wav.name)
    sf.write(corpus / "1001_IEO_ANG_HI.wav", np.zeros(16000 * 12, dtype=np.float32), 16000)  # 12 s of silence
    clips = read_corpus(corpus).clips
    table = FeatureCache(tmp_path, corpus, AudioFrontEnd(LogMel(SPECTRAL), max_duration=10)).table(
        clips, on_bad_file="skip"
    )
    assert table.skipped == [str(corpus / "1001_IEO_ANG_HI.wav")] and len(table.clips) == 3
    with pytest.raises(DataError, match=r"1001_IEO_ANG_HI\.wav is 12\.0 s long, longer than data.max_duration=10 s"):
        FeatureCache(tmp_path / "again", corpus, AudioFrontEnd(LogMel(SPECTRAL), max_duration=10)).table(
            clips, on_bad_file="error"
        )


def test_log_mel_and_mfcc_equal_torchaudios_transforms() -> None:
    spectral = Spectral()
    waves = torch.randn(4, spectral.n_samples) * torch.tensor([[0.01], [0.1], [0.5], [1.0]])
    to_db = T.AmplitudeToDB("power", top_db=spectral.top_db)
    mel = T.MelSpectrogram(sample_rate=16000, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
    mfcc = T.MFCC(sample_rate=16000, n_mfcc=40, log_mels=False, melkwargs={"n_fft": 1024, "hop_length": 512})
    mfcc.amplitude_to_DB = to_db

    torch.testing.assert_close(LogMel(spectral)(waves)["logmel"], to_db(mel(waves.unsqueeze(1))), atol=1e-4, rtol=0)
    both = LogMelMFCC(spectral)(waves)
    torch.testing.assert_close(both["mfcc"], mfcc(waves.unsqueeze(1)), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(MFCC(spectral)(waves)["mfcc"], both["mfcc"])


def test_egemaps_gives_the_88_functionals_of_each_whole_clip_and_caches_them(tiny_corpus: Path, tmp_path: Path) -> None:
    features = EGeMAPS(SPECTRAL)
    clips = read_corpus(tiny_corpus).clips[:4]
    first = FeatureCache(tmp_path, tiny_corpus, AudioFrontEnd(features)).table(clips)
    assert first.tensors["egemaps"].shape == (4, 1, 88) and torch.isfinite(first.tensors["egemaps"]).all()
    assert first.computed == 4
    again = FeatureCache(tmp_path, tiny_corpus, AudioFrontEnd(EGeMAPS(SPECTRAL))).table(clips)
    assert (again.computed, again.cached) == (0, 4)
    torch.testing.assert_close(again.tensors["egemaps"], first.tensors["egemaps"])
    # a whole clip, not a window: the functionals of a clip differ from those of its centre second
    wave = load_audio(clips[0].path, 16000)
    centre = features(fit_length(wave, 16000).unsqueeze(0))["egemaps"][0]
    assert not torch.allclose(centre, first.tensors["egemaps"][0])
