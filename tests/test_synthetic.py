"""The embedded synthetic corpus: deterministic, in CREMA-D naming, and learnable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotion.data.corpora import read_corpus
from emotion.data.corpora.crema_d import CremaD
from emotion.data.synthetic import SyntheticCorpusConfig, clip_specs, generate_corpus, render_clip
from emotion.pipeline import train


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.wav"))}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    cfg = SyntheticCorpusConfig(n_speakers=3, n_sentences=1)
    first = generate_corpus(cfg, tmp_path / "a", workers=1)
    second = generate_corpus(cfg, tmp_path / "b", workers=2)
    assert digest(first) == digest(second)
    assert len(digest(first)) == 3 * 1 * 6


def test_seed_changes_the_audio() -> None:
    spec = clip_specs(SyntheticCorpusConfig(n_speakers=1, n_sentences=1))[0]
    a = render_clip(SyntheticCorpusConfig(seed=0), spec)
    b = render_clip(SyntheticCorpusConfig(seed=1), spec)
    assert a.shape != b.shape or not np.allclose(a, b)


def test_clips_are_16k_mono_wavs_named_like_crema_d(tiny_corpus: Path) -> None:
    files = sorted(tiny_corpus.glob("*.wav"))
    assert len(files) == 6 * 2 * 6
    for path in files:
        assert CremaD().clip(path).speaker == path.name[:4]
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (16000, 1)
        assert 1.5 <= info.duration <= 3.0
    codes = {path.stem.split("_")[2] for path in files}
    assert codes == set(CremaD.labels)


def test_each_speaker_acts_every_emotion_of_every_sentence(tiny_corpus: Path) -> None:
    clips = read_corpus(tiny_corpus).clips
    assert {(c.speaker, c.sentence, c.emotion) for c in clips} == {
        (f"{s:04d}", sentence, emotion)
        for s in range(1001, 1007)
        for sentence in ("IEO", "TIE")
        for emotion in CremaD.labels.values()
    }


def test_generating_again_reuses_the_corpus(tmp_path: Path) -> None:
    cfg = SyntheticCorpusConfig(n_speakers=3, n_sentences=1)
    folder = generate_corpus(cfg, tmp_path, workers=1)
    stamp = (folder / "corpus.json").stat().st_mtime_ns
    assert generate_corpus(cfg, tmp_path, workers=1) == folder
    assert (folder / "corpus.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_labels_are_learnable_on_unseen_speakers(make_config, tracking_uri: str) -> None:
    """The classical baseline (softmax regression on eGeMAPS functionals) beats chance (1/6) by a wide margin on
    held-out speakers, whatever the CPU's precision: the emotions carry cues that speakers share.

    (A few epochs of a small CNN on 48 test clips are no proof either way: their score swings with the seed and
    with bfloat16 by more than any margin over chance a bar could set.)
    """
    from tests.conftest import finished_runs

    cfg = make_config(
        "experiment=egemaps_linear",
        "+trainer.enable_progress_bar=false",
        corpus={"n_speakers": 12, "n_sentences": 4},
    )
    train(cfg)
    (run,) = finished_runs(tracking_uri)
    assert run.data.tags["split"] == "speaker"
    assert run.data.metrics["test/acc"] > 0.6, run.data.metrics
    assert run.data.metrics["test/uar"] > 0.6, run.data.metrics
