"""Augmentation: what each transform does, and that it reaches the training partition only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emotion.data.augment import Augmentation, SpecAugment, WaveAugment, pitch_shift
from emotion.data.corpora import read_corpus
from emotion.data.datamodule import EmotionDataModule
from emotion.data.datasets import FeatureDataset, WaveformDataset
from emotion.data.features import LogMel, Spectral
from emotion.data.splits import ClipHoldOut, SpeakerHoldOut, Split, check_no_leakage
from emotion.errors import ConfigError, DataError
from tests.conftest import TINY_CORPUS

SR = 16000
NOISE_ONLY = {"wave": {"noise": {"kind": "white", "snr_db": [10, 10]}}}


def tone(seconds: float = 1.0, hz: float = 220.0) -> torch.Tensor:
    return torch.sin(2 * torch.pi * hz * torch.arange(int(SR * seconds)) / SR)


def peak_hz(wave: torch.Tensor) -> float:
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    return float(np.fft.rfftfreq(wave.shape[-1], 1 / SR)[spectrum.argmax()])


@pytest.mark.parametrize("kind", ["white", "pink"])
def test_noise_is_added_at_the_drawn_snr(kind: str) -> None:
    clean = tone()
    noisy = WaveAugment(SR, noise={"kind": kind, "snr_db": [10, 10]})(clean, np.random.default_rng(0))
    snr = 10 * torch.log10(clean.pow(2).mean() / (noisy - clean).pow(2).mean())
    assert abs(float(snr) - 10) < 0.1


def test_noise_can_come_from_a_folder_of_recordings(tmp_path: Path) -> None:
    sf.write(tmp_path / "cafe.wav", np.random.default_rng(1).standard_normal(4000).astype(np.float32), SR)
    augment = WaveAugment(SR, noise={"kind": "files", "folder": str(tmp_path), "snr_db": [20, 20]})
    clean = tone()
    noisy = augment(clean, np.random.default_rng(0))
    assert abs(float(10 * torch.log10(clean.pow(2).mean() / (noisy - clean).pow(2).mean())) - 20) < 0.1


def test_a_missing_noise_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"augment\.noise\.folder"):
        WaveAugment(SR, noise={"kind": "files", "folder": str(tmp_path / "none")})


def test_pitch_shift_moves_the_pitch_and_keeps_the_length() -> None:
    up = pitch_shift(tone(2.0, 220.0), 12)
    assert up.shape == (2 * SR,)
    assert peak_hz(up) == pytest.approx(440.0, abs=2)
    assert peak_hz(pitch_shift(tone(2.0, 220.0), -2)) == pytest.approx(196.0, abs=2)


def test_speed_changes_the_length_and_gain_the_level() -> None:
    faster = WaveAugment(SR, speed=[1.25, 1.25])(tone(), np.random.default_rng(0))
    assert faster.shape[-1] == pytest.approx(SR / 1.25, abs=2)
    louder = WaveAugment(SR, gain_db=[6, 6])(tone(), np.random.default_rng(0))
    assert float(louder.abs().max() / tone().abs().max()) == pytest.approx(10 ** (6 / 20), rel=1e-4)


def test_time_shift_moves_the_signal_and_fills_with_silence() -> None:
    impulse = torch.zeros(SR)
    impulse[SR // 2] = 1.0
    shifted = WaveAugment(SR, shift=0.25)(impulse, np.random.default_rng(3))
    assert shifted.sum() == 1.0 and shifted.argmax() != SR // 2


def test_a_fragment_is_a_contiguous_piece_of_the_clip_between_two_quiet_pauses() -> None:
    ramp = torch.arange(1, SR + 1, dtype=torch.float32)  # each sample says where it was
    piece = WaveAugment(SR, fragment=[0.5, 0.5])(ramp, np.random.default_rng(1))
    assert piece.shape[-1] == SR // 2 and piece[0] > 1  # starts elsewhere than the clip's start
    assert torch.equal(piece, torch.arange(piece[0], piece[0] + SR // 2))
    padded = WaveAugment(SR, pause=[0.1, 0.3])(ramp, np.random.default_rng(1))
    before = int((padded == 1).nonzero())
    after = padded.shape[-1] - before - SR
    assert torch.equal(padded[before : before + SR], ramp)
    assert before != after and all(0.1 * SR <= n <= 0.3 * SR for n in (before, after))  # each pause drawn alone
    pause_rms_db = 20 * torch.log10(padded[:before].square().mean().sqrt())
    assert -71 < pause_rms_db < -49  # quiet noise, -70 to -50 dBFS


def test_the_same_copy_of_a_clip_is_the_same_fragment_every_time() -> None:
    augment = WaveAugment(SR, fragment=[0.2, 1.0], pause=[0.0, 0.4])
    first = augment(tone(), augment.rng_for("/corpus/03a01Fa.wav", 3))
    assert torch.equal(first, augment(tone(), augment.rng_for("/corpus/03a01Fa.wav", 3)))


def test_a_fragment_range_outside_the_clip_or_a_negative_pause_is_refused() -> None:
    with pytest.raises(ConfigError, match="fragment"):
        WaveAugment(SR, fragment=[0.5, 1.5])
    with pytest.raises(ConfigError, match="pause"):
        WaveAugment(SR, pause=[-0.1, 0.4])
    with pytest.raises(ConfigError, match="low, high"):
        WaveAugment(SR, pause=[0.4])


def test_presets_without_fragments_keep_the_cache_keys_of_their_copies() -> None:
    noise = WaveAugment(SR, noise={"kind": "white", "snr_db": [10, 30], "p": 1.0, "folder": None})
    assert noise.key() == "c4b97bd6bcf2"  # augment=noise's copies, as cached before fragments and pauses existed


def test_each_copy_of_a_clip_draws_the_same_augmentation_every_time() -> None:
    augment = WaveAugment(SR, noise={"snr_db": [5, 30]}, gain_db=[-6, 6], seed=7)
    first = augment(tone(), augment.rng_for("/corpus/1001_IEO_ANG_MD.wav", 1))
    again = augment(tone(), augment.rng_for("/corpus/1001_IEO_ANG_MD.wav", 1))
    other = augment(tone(), augment.rng_for("/corpus/1001_IEO_ANG_MD.wav", 2))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_spec_augment_masks_rows_and_columns_with_the_mean() -> None:
    batch = {"logmel": torch.randn(4, 1, 32, 20) + 5}
    masked = SpecAugment(freq_mask=8, time_mask=5, n_masks=2)(batch)["logmel"]
    changed = masked != batch["logmel"]
    assert changed.any()
    assert changed.any(dim=3).any(dim=2).all()  # every example got at least one mask


def policy(options: dict | None) -> Augmentation | None:
    """The augmentation policy of `augment` options, with the waveform chain at 16 kHz."""
    if options is None:
        return None
    return Augmentation(**{**options, "wave": WaveAugment(16000, **options["wave"])})


def datamodule(cache_dir: Path, augment: dict | None, strategy: str = "speaker") -> EmotionDataModule:
    module = EmotionDataModule(
        LogMel(Spectral(n_mels=32)),
        cache_dir,
        synthetic=TINY_CORPUS,
        augment=policy(augment),
        split={"speaker": SpeakerHoldOut(seed=0), "clip": ClipHoldOut(seed=0)}[strategy],
    )
    module.setup()
    return module


def test_cached_copies_touch_only_the_training_partition(cache_dir: Path) -> None:
    plain = datamodule(cache_dir, None)
    augmented = datamodule(cache_dir, {**NOISE_ONLY, "mode": "copies", "copies": 2})
    for partition in ("val", "test"):
        assert torch.equal(plain.datasets[partition].tensors["logmel"], augmented.datasets[partition].tensors["logmel"])
        assert all(augmented.clips[i].copy == 0 for i in augmented.split.partition(partition))
    assert len(augmented.datasets["train"]) == 3 * len(plain.datasets["train"])
    train_sources = {augmented.clips[i].path for i in augmented.split.train if augmented.clips[i].copy == 0}
    copies = [augmented.clips[i] for i in augmented.split.train if augmented.clips[i].copy]
    assert {c.path for c in copies} == train_sources and len(copies) == 2 * len(train_sources)
    assert torch.equal(plain.clean_train_features()["logmel"], augmented.clean_train_features()["logmel"])


def test_on_the_fly_augmentation_draws_anew_for_training_only(cache_dir: Path) -> None:
    plain = datamodule(cache_dir, None)
    module = datamodule(cache_dir, {**NOISE_ONLY, "mode": "on_the_fly"})
    assert isinstance(module.datasets["train"], WaveformDataset)
    assert isinstance(module.datasets["val"], FeatureDataset) and isinstance(module.datasets["test"], FeatureDataset)
    assert torch.equal(plain.datasets["test"].tensors["logmel"], module.datasets["test"].tensors["logmel"])
    first, second = module.datasets["train"][0][0]["waveform"], module.datasets["train"][0][0]["waveform"]
    assert not torch.equal(first, second)
    inputs, labels = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    assert inputs["logmel"].shape == (32, 1, 32, 62) and labels.shape == (32,)


def test_the_reports_protocol_augments_before_splitting_and_is_leaky(cache_dir: Path) -> None:
    module = datamodule(cache_dir, {**NOISE_ONLY, "copies": 1, "before_split": True}, strategy="clip")
    assert module.leaky
    test_copies = [module.clips[i] for i in module.split.test if module.clips[i].copy]
    assert test_copies  # augmented data reaches the test set
    train_paths = {module.clips[i].path for i in module.split.train}
    assert any(module.clips[i].path in train_paths for i in module.split.test)  # and copies of test clips train


def test_augmenting_before_a_speaker_split_keeps_copies_with_their_speaker(cache_dir: Path) -> None:
    module = datamodule(cache_dir, {**NOISE_ONLY, "copies": 1, "before_split": True}, strategy="speaker")
    assert not module.leaky
    check_no_leakage(module.clips, module.split)


def test_the_leakage_guard_fires_on_a_copy_of_a_test_clip_in_training(tiny_corpus: Path) -> None:
    clips = read_corpus(tiny_corpus).clips
    with_copy = [*clips, clips[0].augmented(1)]
    leaky = Split(train=[len(clips)], val=[], test=[0])
    with pytest.raises(DataError, match=r"leak: speaker 1001 is in both the train and test partitions"):
        check_no_leakage(with_copy, leaky)
    # Same speaker allowed in both (for the sake of the test): the source clip still trips the guard.
    relabelled = [*clips, type(clips[0])(clips[0].path, "9999", "angry", "IEO", "MD", copy=1)]
    with pytest.raises(DataError, match=r"leak: source clip .*1001_IEO_ANG_MD\.wav is in both"):
        check_no_leakage(relabelled, Split(train=[len(clips)], val=[], test=[0]))


def test_a_clip_shorter_than_min_duration_is_named(tiny_corpus: Path, tmp_path: Path) -> None:
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    sf.write(corpus / "1002_IEO_SAD_LO.wav", np.zeros(800, dtype=np.float32), SR)  # 0.05 s
    with pytest.raises(DataError, match=r"clip is 0.050 s long, shorter than data.min_duration=0.25 s: .*1002_IEO"):
        EmotionDataModule(
            LogMel(Spectral(n_mels=32)), tmp_path / "cache", root=str(corpus), on_bad_file="error"
        ).setup()
    skipping = EmotionDataModule(LogMel(Spectral(n_mels=32)), tmp_path / "cache", root=str(corpus))
    skipping.setup()
    assert skipping.table is not None and skipping.table.skipped == [str(corpus / "1002_IEO_SAD_LO.wav")]


def test_before_split_needs_cached_copies() -> None:
    with pytest.raises(ConfigError, match="before_split=true"):
        policy({**NOISE_ONLY, "mode": "on_the_fly", "before_split": True})
