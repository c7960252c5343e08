"""Speaker profiles as served: one clip per request builds a speaker's statistics across requests; a speaker with
too few clips gets the non-adaptive twin's answer; statistics are label-free and shrunk toward the population;
the inner selection's folds; and what a saved model or a request may not do."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from emotion.cli import predict
from emotion.data.audio import MAX_RATIO_TERMS, resample
from emotion.data.corpora import read_corpus
from emotion.data.datamodule import EmotionDataModule
from emotion.data.normalize import SpeakerNormalizer
from emotion.data.synthetic import SyntheticCorpusConfig, generate_corpus
from emotion.errors import DataError
from emotion.pipeline.estimator import speaker_folds
from emotion.serving.profiles import ProfileStore
from emotion.serving.pyfunc import READ_ONLY
from emotion.serving.recognizer import BLENDED, NO_SPEAKER, EmotionRecognizer
from emotion.serving.requests import Refusal
from tests.conftest import TINY_CORPUS
from tests.stores import Store
from tests.test_speakers import ADAPTIVE, manifest_datamodule, speaker_of_the_test, speaker_rows


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Store, str, str]:
    """A speaker-adaptive logistic regression promoted as `adaptive@champion`, and the same recipe's
    non-adaptive run (`normalize=population`)."""
    store = Store(tmp_path_factory.mktemp("profiles"), cache_dir, model=())
    adaptive = store.train("adaptive", *ADAPTIVE)
    store.promote("--name", "adaptive")
    population = store.train("population", *ADAPTIVE, "normalize=population")
    return store, adaptive, population


def checkpoint(store: Store, run_id: str) -> Path:
    return Path(store.configs[run_id].paths.output_dir) / "model.skops"


def one_request(model: mlflow.pyfunc.PyFuncModel, wav: Path, speaker: str, **row: object) -> pd.DataFrame:
    samples, rate = sf.read(wav, dtype="float32")
    return model.predict(pd.DataFrame([{"waveform": samples.tolist(), "sample_rate": rate, "speaker": speaker, **row}]))


def served(store: Store) -> mlflow.pyfunc.PyFuncModel:
    mlflow.set_tracking_uri(store.uri)
    return mlflow.pyfunc.load_model("models:/adaptive@champion")


def test_one_clip_per_request_builds_the_speakers_profile_across_requests(twins, tiny_corpus: Path) -> None:
    store, run_id, _ = twins
    speaker, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    model = served(store)

    said = [one_request(model, wav, "alice")["normalization"][0] for wav in wavs]

    assert said[:3] == [BLENDED] * 3  # 1, 2 and 3 clips of a minimum of 4: blended with the non-adaptive answer
    assert said[3:] == ["speaker"] * (len(wavs) - 3)  # from the 4th request on, alice's own statistics
    version = model.unwrap_python_model().recognizer.version  # a digest of what the served model is
    profiles = ProfileStore.from_environment()
    assert profiles is not None and profiles.clips_of(version, "alice") == len(wavs)
    one_request(model, wavs[0], "alice")  # the same clip again counts once
    assert profiles.clips_of(version, "alice") == len(wavs)
    other = sorted(Path(c.path) for c in read_corpus(tiny_corpus).clips if c.speaker != speaker)[0]
    one_request(model, other, "alice", update_profile=False)  # read against the profile, not kept
    assert profiles.clips_of(version, "alice") == len(wavs)
    assert profiles.clips_of("another model", "alice") == 0  # profiles are the model's own
    # the last clip, alone, is classified as the whole group sent at once (the same profile)
    samples = [sf.read(w, dtype="float32")[0].tolist() for w in wavs]
    group = model.predict(pd.DataFrame({"waveform": samples, "sample_rate": 16000, "speaker": "bob"}))
    last = one_request(model, wavs[-1], "alice")
    np.testing.assert_allclose(last.filter(like="prob_"), group.filter(like="prob_").iloc[-1:], atol=1e-5)


def test_a_clip_of_no_speaker_gets_exactly_the_non_adaptive_runs_answer_and_few_clips_a_blend_of_both(
    twins, tiny_corpus: Path
) -> None:
    store, adaptive_run, population_run = twins
    _, wavs = speaker_of_the_test(store, adaptive_run, tiny_corpus)
    adaptive = EmotionRecognizer.from_checkpoint(checkpoint(store, adaptive_run))
    population = EmotionRecognizer.from_checkpoint(checkpoint(store, population_run))

    unnamed = adaptive.classify_files(wavs)
    plain = population.classify_files(wavs)
    alone = torch.cat([adaptive.classify_files([wav], ["carol"]).probabilities for wav in wavs])
    adaptive.normalizer.min_clips = 1  # the same clip, its own statistics fully
    own = torch.cat([adaptive.classify_files([wav], ["carol"]).probabilities for wav in wavs])

    assert set(unnamed.normalization) == {NO_SPEAKER}
    torch.testing.assert_close(unnamed.probabilities, plain.probabilities)  # the twin: the population run's head
    weight = (1 / 4) ** 2  # 1 clip of a minimum of 4: (n / min_clips)^2
    torch.testing.assert_close(alone, own * weight + plain.probabilities * (1 - weight))
    run = store.client.get_run(adaptive_run).data.params
    assert run["fallback_selected"] == store.client.get_run(population_run).data.params["selected"]


def test_a_speakers_statistics_shrink_toward_the_population_by_their_clip_count() -> None:
    population = {"x": torch.randn(50, 2, 3) * 2 + 1}
    normalizer = SpeakerNormalizer({"x": (2, 3)}, mode="speaker", min_clips=1, shrinkage=2.0)
    normalizer.fit(population)
    clip = {"x": torch.randn(1, 2, 3) + 5}

    (normalized, ways) = normalizer(clip, ["dave"])

    mean, std = population["x"].double().mean(0), population["x"].double().std(0)
    shrunk_mean = (1 * clip["x"][0].double() + 2 * mean) / 3  # one clip weighs 1 / (1 + 2)
    shrunk_std = ((0 + 2 * std.square()) / 3).sqrt()  # a single clip has no spread of its own
    assert ways == ["speaker"]
    torch.testing.assert_close(normalized["x"][0], ((clip["x"][0] - shrunk_mean) / shrunk_std).float())


def test_clips_of_other_classes_join_their_speakers_statistics_and_nothing_else(tmp_path: Path) -> None:
    corpus = generate_corpus(SyntheticCorpusConfig(**TINY_CORPUS), tmp_path, workers=1)
    clips = read_corpus(corpus).clips
    speaker = clips[0].speaker
    rows = [{"path": c.path, "label": c.emotion, "speaker": c.speaker} for c in clips]
    surprised = [row | {"label": "surprise"} for row in rows if row["speaker"] == speaker and row["label"] == "fear"]
    kept = [row for row in rows if not (row["speaker"] == speaker and row["label"] == "fear")]

    def speakers_features(manifest_rows: list[dict[str, str]]) -> tuple[EmotionDataModule, torch.Tensor]:
        datamodule = manifest_datamodule(tmp_path, manifest_rows, "speaker")
        assert datamodule.table is not None
        return datamodule, datamodule.table.tensors["mel_mean"][speaker_rows(datamodule.table.clips, speaker)]

    with_surprise, normalized = speakers_features(kept + surprised)
    _, without = speakers_features(kept)

    assert all(c.emotion != "surprise" for c in with_surprise.clips)  # never trained or tested on
    assert with_surprise.pool is not None and len(with_surprise.pool.clips) == len(surprised)
    assert with_surprise.unnormalized is not None
    own = with_surprise.unnormalized.tensors["mel_mean"][speaker_rows(with_surprise.clips, speaker)].double()
    every = torch.cat([own, with_surprise.pool.tensors["mel_mean"].double()])
    expected = (own - every.mean(0)) / every.std(0, correction=0)
    torch.testing.assert_close(normalized, expected.float())
    assert not torch.allclose(normalized, without)


def test_the_inner_selection_leaves_one_speaker_out_for_few_speakers_and_folds_many() -> None:
    few = [f"s{i % 6}" for i in range(60)]
    many = [f"s{i % 40}" for i in range(400)]

    loso, folded, three = speaker_folds("auto", few), speaker_folds("auto", many), speaker_folds(3, many)

    assert len(loso) == 6 and len(folded) == 5 and len(three) == 3
    assert [sorted({few[i] for i in test}) for _, test in loso] == [[f"s{i}"] for i in range(6)]
    for train, test in folded + three:  # no speaker on both sides, every speaker held out once
        assert not {many[i] for i in train} & {many[i] for i in test}
    assert sorted(i for _, test in folded for i in test) == list(range(400))


def test_any_sample_rate_in_bounds_resamples_in_bounded_memory_and_others_are_refused_in_one_line(
    twins, tmp_path: Path
) -> None:
    store, run_id, _ = twins
    shutil.copy(checkpoint(store, run_id), tmp_path / "model.skops")
    recognizer = EmotionRecognizer.from_checkpoint(tmp_path / "model.skops")
    clip = np.sin(np.arange(13230) / 7).astype("float32")  # 0.3 s at 44.1 kHz

    assert MAX_RATIO_TERMS < 44101 * 16000  # 44101:16000 cannot be reduced: approximated, not gigabytes
    wave = recognizer.from_samples(clip, 44101)
    exact = resample(torch.from_numpy(clip), 44100, 16000)  # 441:160, exact as before
    assert abs(wave.numel() - 4800) <= 1 and exact.numel() == 4800 and torch.isfinite(wave).all()
    for rate, said in ((44100.5, "44100.5 Hz"), (10**9, r"1e\+09 Hz"), (100, "100 Hz")):
        with pytest.raises(DataError, match=f"the waveform has a sample rate of {said}: give a whole number of Hz"):
            recognizer.from_samples(clip, rate)


def test_every_failure_of_a_request_is_one_line_for_the_caller_naming_nothing_of_the_server(
    twins, tiny_corpus: Path, speaker_profiles
) -> None:
    store, run_id, _ = twins
    _, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    speaker_profiles.write_bytes(b"not a database")  # the profiles store is broken
    model = served(store)

    with pytest.raises(Refusal) as refused:
        one_request(model, wavs[1], "erin")

    message = refused.value.message
    assert message == "the request could not be classified: the speaker profiles store is unavailable"
    assert refused.value.get_http_status_code() == 400


@pytest.fixture(scope="module")
def refusing_model(twins) -> mlflow.pyfunc.PyFuncModel:
    """The served model, loaded once for the requests it refuses (before any profile is read)."""
    return served(twins[0])


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("update_profile", "no", "`update_profile` must be true or false"),
        ("update_profile", 0, "`update_profile` must be true or false"),
        ("speaker", 42, "a speaker's name must be text, not int"),
        ("speaker", True, "a speaker's name must be text, not bool"),
        ("speaker", ["a"], "a speaker's name must be text, not list"),
        ("speaker", "x" * 100_000, "a speaker's name of 100000 characters is too long"),
        ("speaker", "a\nb", "holds '\\n'"),
    ],
)
def test_a_requests_speaker_and_update_profile_are_typed_and_bounded(
    refusing_model: mlflow.pyfunc.PyFuncModel, twins, tiny_corpus: Path, field: str, value: object, said: str
) -> None:
    store, run_id, _ = twins
    _, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    row = {"speaker": "dana", field: value}
    with pytest.raises(Refusal) as refused:
        one_request(refusing_model, wavs[0], **row)
    message = refused.value.message
    assert said in message and "\n" not in message and len(message) < 300
    assert refused.value.get_http_status_code() == 400


def test_a_blank_speaker_is_none_and_update_profile_holds_for_its_own_row_only(twins, tiny_corpus: Path) -> None:
    store, run_id, _ = twins
    _, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    model = served(store)
    samples = [sf.read(w, dtype="float32")[0].tolist() for w in wavs[:2]]
    rows = [{"waveform": samples[0], "sample_rate": 16000, "speaker": "fay", "update_profile": False},
            {"waveform": samples[1], "sample_rate": 16000, "speaker": "fay", "update_profile": True}]  # fmt: skip

    blank = one_request(model, wavs[0], "  ")
    model.predict(pd.DataFrame(rows))

    assert blank["normalization"][0] == NO_SPEAKER
    profiles = ProfileStore.from_environment()
    version = model.unwrap_python_model().recognizer.version
    assert profiles.clips_of(version, "fay") == 1 and [e.speaker for e in profiles.speakers()] == ["fay"]


def test_a_read_only_served_model_adds_nothing_and_predict_enrols(
    twins, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, run_id, _ = twins
    _, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    monkeypatch.setenv(READ_ONLY, "1")
    model = served(store)
    version = model.unwrap_python_model().recognizer.version
    profiles = ProfileStore.from_environment()

    said = [one_request(model, wav, "gus")["normalization"][0] for wav in wavs[:6]]
    assert said == [BLENDED] * 6 and profiles.clips_of(version, "gus") == 0  # each clip read with itself only
    predict.main(["--tracking-uri", store.uri, "--model", "models:/adaptive@champion", "--speaker", "gus",
                  *map(str, wavs[:6])])  # fmt: skip
    assert (
        profiles.clips_of(version, "gus") == 6 and one_request(model, wavs[6], "gus")["normalization"][0] == "speaker"
    )


def test_silent_clipped_noise_and_replayed_clips_do_not_join_a_profile(twins, tiny_corpus: Path) -> None:
    store, run_id, _ = twins
    _, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    model = served(store)
    version = model.unwrap_python_model().recognizer.version
    profiles = ProfileStore.from_environment()
    for wav in wavs[:4]:
        one_request(model, wav, "hal")
    clip, rate = sf.read(wavs[0], dtype="float32")
    noise = np.random.default_rng(0).normal(scale=0.3, size=len(clip)).astype("float32")
    crafted = {
        "silent": np.zeros_like(clip),
        "clipped": np.clip(clip * 1000, -1, 1),
        "noise": noise,
        "replayed with 1e-4 noise": clip + noise / 3000,
    }
    for name, samples in crafted.items():
        row = {"waveform": samples.tolist(), "sample_rate": rate, "speaker": "hal"}
        model.predict(pd.DataFrame([row]))
        assert profiles.clips_of(version, "hal") == 4, name


def test_the_same_model_saved_again_keeps_its_speakers_profiles(twins, tmp_path: Path) -> None:
    store, run_id, _ = twins
    model = served(store)
    run_file = EmotionRecognizer.from_checkpoint(checkpoint(store, run_id))  # as `emotion-predict --model runs:/ID`
    run_file.save(tmp_path / "again.skops")
    saved_again = EmotionRecognizer.from_checkpoint(tmp_path / "again.skops")

    assert run_file.version == model.unwrap_python_model().recognizer.version == saved_again.version
