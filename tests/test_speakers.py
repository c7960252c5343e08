"""Speaker-adaptive models: each speaker normalised by their own clips' statistics (never their labels), in
training, prediction and serving alike; scikit-learn heads tracked, promoted, predicted and served like the
networks; their hyperparameters chosen without the test speakers."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression

from emotion.cli import evaluate, predict, runs
from emotion.data.corpora import read_corpus
from emotion.data.datamodule import EmotionDataModule
from emotion.data.features import MelMean, Spectral
from emotion.data.normalize import SpeakerNormalizer
from emotion.data.synthetic import SyntheticCorpusConfig, generate_corpus
from emotion.models.estimator import ScikitLearnHead
from emotion.pipeline.blend import CLIPS, DRAWS, WHOLE, Served, chosen_curve
from emotion.pipeline.build import build_datamodule, built
from emotion.pipeline.estimator import select_and_fit
from emotion.serving.recognizer import BLENDED, NO_SPEAKER, EmotionRecognizer
from tests.conftest import TINY_CORPUS
from tests.stores import Store

#: A scikit-learn head on cheap features, speaker-adaptive, blending by the (n / min_clips)^2 rule (no learned
#: curve); each tiny-corpus speaker has 12 clips.
SPEAKER_STAGE = ["features=mel_mean", "normalize=speaker", "normalize.min_clips=4"]
ADAPTIVE = ["model=logreg", "model.grid.C=[0.1,1]", *SPEAKER_STAGE]


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Store, str]:
    """A store holding one trained speaker-adaptive logistic regression, promoted as `adaptive@champion`."""
    store = Store(tmp_path_factory.mktemp("speakers"), cache_dir, model=())
    run_id = store.train("adaptive", *ADAPTIVE)
    store.promote("--name", "adaptive")
    return store, run_id


def speaker_of_the_test(store: Store, run_id: str, corpus: Path) -> tuple[str, list[Path]]:
    """The run's test speaker and their clips."""
    speaker = store.client.get_run(run_id).data.params["split.test_speakers"].split(",")[0]
    return speaker, sorted(Path(c.path) for c in read_corpus(corpus).clips if c.speaker == speaker)


def manifest_datamodule(folder: Path, rows: list[dict[str, str]], mode: str) -> EmotionDataModule:
    """The datamodule of a CSV manifest of `rows` (path, label, speaker), mean log-mel features, set up with
    `normalize.mode=mode` (at least 4 clips a speaker, no shrinkage: each speaker's own statistics)."""
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    features = MelMean(Spectral())
    datamodule = EmotionDataModule(
        features, folder / "cache", name="mine", root=str(folder / "labels.csv"), reader="manifest",
        normalize=SpeakerNormalizer(features.shapes(), mode=mode, min_clips=4, shrinkage=0),
    )  # fmt: skip
    datamodule.setup()
    return datamodule


def speaker_rows(clips: list, speaker: str) -> list[int]:
    """The rows of `speaker`'s clips."""
    return [i for i, clip in enumerate(clips) if clip.speaker == speaker]


def test_a_scikit_learn_head_is_tracked_like_a_network_with_its_protocol_said(adaptive, capsys) -> None:
    store, run_id = adaptive
    run = store.client.get_run(run_id)
    assert run.data.tags["architecture"] == "logreg" and run.data.tags["speaker_adaptive"] == "true"
    assert run.data.params["normalize.mode"] == "speaker" and run.data.params["normalize.min_clips"] == "4"
    assert run.data.params["selected"] in ("C=0.1", "C=1")
    assert 0.0 <= run.data.metrics["test/uar"] <= 1.0 and "val/uar_best" in run.data.metrics
    artifacts = {a.path for a in store.client.list_artifacts(run_id)}
    assert {"checkpoints", "confusion_matrix.png"} <= artifacts
    assert [a.path for a in store.client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/model.skops"]
    version = store.client.get_model_version_by_alias("adaptive", "champion")
    assert version.run_id == run_id
    capsys.readouterr()
    runs.main(["--tracking-uri", store.uri])
    (line,) = [line for line in capsys.readouterr().out.splitlines() if run_id in line]
    assert "speaker, speaker-adaptive" in line


def test_a_speaker_adaptive_head_and_its_twin_chosen_from_one_grid_are_two_fitted_estimators() -> None:
    grid = {"estimator": [LogisticRegression(max_iter=500)], "layers": ["mean"], "C": [1.0]}
    spec = ScikitLearnHead(LogisticRegression(), ("a", "b"), {"x": (2, 4)}, grid=grid, inner_folds="loso", n_jobs=1)
    rng = np.random.default_rng(0)
    labels, speakers = np.arange(48) % 2, [f"s{i % 3}" for i in range(48)]
    adaptive_rows, raw_rows = rng.standard_normal((48, 8)), rng.standard_normal((48, 8)) * 5 + 2
    _, adaptive = select_and_fit(spec, adaptive_rows, labels, speakers, True, "val/uar")
    alone = adaptive.predict_proba(adaptive_rows)
    _, twin = select_and_fit(spec, raw_rows, labels, speakers, True, "val/uar")
    assert adaptive.steps[-1][1] is not twin.steps[-1][1]
    np.testing.assert_array_equal(adaptive.predict_proba(adaptive_rows), alone)  # the twin's fit changed nothing


def test_predict_and_the_served_model_normalise_a_speakers_clips_together_and_agree(
    adaptive, tiny_corpus: Path, tmp_path: Path
) -> None:
    store, run_id = adaptive
    speaker, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    manifest = tmp_path / "clips.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker"])
        writer.writerows([str(w), speaker] for w in wavs)
    predict.main(["--tracking-uri", store.uri, "--model", "models:/adaptive@champion", "--format", "csv",
                  "-o", str(tmp_path / "p.csv"), "--manifest", str(manifest)])  # fmt: skip
    predicted = pd.read_csv(tmp_path / "p.csv", dtype={"speaker": str})

    mlflow.set_tracking_uri(store.uri)
    samples = [sf.read(w, dtype="float32")[0].tolist() for w in wavs]
    request = pd.DataFrame({"waveform": samples, "sample_rate": 16000, "speaker": speaker})
    served = mlflow.pyfunc.load_model("models:/adaptive@champion").predict(request)

    assert predicted["file"].tolist() == [str(w) for w in wavs] and set(predicted["speaker"]) == {speaker}
    assert set(predicted["normalization"]) == set(served["normalization"]) == {"speaker"}
    np.testing.assert_allclose(served.filter(like="prob_"), predicted.filter(like="prob_"), atol=1e-4)  # CSV: 4 dp
    # the speaker's profile is kept: one clip sent alone later is normalised by all 12 of theirs, as before
    alone = mlflow.pyfunc.load_model("models:/adaptive@champion").predict(request.iloc[:1])
    assert alone["normalization"][0] == "speaker"
    np.testing.assert_allclose(alone.filter(like="prob_"), served.filter(like="prob_")[:1], atol=1e-6)
    # a speaker never heard: one clip of theirs weighs 1 / min_clips (4) against the non-adaptive answer
    newcomer = mlflow.pyfunc.load_model("models:/adaptive@champion").predict(request.iloc[:1].assign(speaker="new"))
    assert newcomer["normalization"][0] == BLENDED


def test_a_speaker_with_fewer_clips_than_the_minimum_gets_the_adaptive_and_non_adaptive_answers_blended_by_count(
    adaptive, tiny_corpus: Path, tmp_path: Path
) -> None:
    store, run_id = adaptive
    speaker, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    given = [str(w) for w in wavs[:3]]
    args = ["--tracking-uri", store.uri, "--model", "models:/adaptive@champion", "--format", "csv", "--read-only"]
    predict.main([*args, "-o", str(tmp_path / "few.csv"), "--speaker", speaker, *given])
    predict.main([*args, "-o", str(tmp_path / "none.csv"), *given])
    predict.main([*args, "-o", str(tmp_path / "three.csv"), "--speaker", speaker, "--min-clips", "3", *given])
    few, none, three = (pd.read_csv(tmp_path / f"{name}.csv") for name in ("few", "none", "three"))

    assert few["normalization"].tolist() == [BLENDED] * 3  # 3 clips of the model's minimum of 4
    assert none["normalization"].tolist() == [NO_SPEAKER] * 3
    assert three["normalization"].tolist() == ["speaker"] * 3  # --min-clips 3: their own statistics, fully
    weight = (3 / 4) ** 2  # (n / min_clips)^2: no cliff at the minimum
    blend = weight * three.filter(like="prob_") + (1 - weight) * none.filter(like="prob_")
    np.testing.assert_allclose(few.filter(like="prob_"), blend, atol=2e-4)  # CSV: 4 decimals


def test_predict_reads_each_files_speaker_from_its_folder(adaptive, tiny_corpus: Path, tmp_path: Path) -> None:
    store, run_id = adaptive
    speaker, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    (tmp_path / "recordings" / speaker).mkdir(parents=True)
    (tmp_path / "recordings" / "someone").mkdir()
    for wav in wavs[:4]:
        shutil.copy(wav, tmp_path / "recordings" / speaker / wav.name)
    shutil.copy(wavs[4], tmp_path / "recordings" / "someone" / wavs[4].name)
    predict.main(["--tracking-uri", store.uri, "--model", "models:/adaptive@champion", "--format", "csv",
                  "-o", str(tmp_path / "p.csv"), "--speaker-folders", str(tmp_path / "recordings")])  # fmt: skip
    predicted = pd.read_csv(tmp_path / "p.csv", dtype={"speaker": str}).set_index("speaker")
    assert predicted.loc[speaker, "normalization"].tolist() == ["speaker"] * 4
    assert predicted.loc["someone", "normalization"] == BLENDED  # 1 clip


def test_a_test_speakers_statistics_come_from_their_own_clips_only_never_from_labels(tmp_path: Path) -> None:
    corpus = generate_corpus(SyntheticCorpusConfig(**TINY_CORPUS), tmp_path, workers=1)
    clips = read_corpus(corpus).clips
    test_speaker = clips[0].speaker

    def normalised(rows: list[dict[str, str]], mode: str) -> tuple[EmotionDataModule, dict[str, torch.Tensor]]:
        datamodule = manifest_datamodule(tmp_path, rows, mode)
        assert datamodule.table is not None
        own = speaker_rows(datamodule.table.clips, test_speaker)
        return datamodule, {n: t[own] for n, t in datamodule.table.tensors.items()}

    rows = [{"path": c.path, "label": c.emotion, "speaker": c.speaker} for c in clips]
    _, raw = normalised(rows, "population")  # the datamodule leaves the features as cached
    adaptive, adapted = normalised(rows, "speaker")
    emotions = sorted({row["label"] for row in rows})
    relabelled = [row | {"label": emotions[(emotions.index(row["label"]) + 1) % 6]} for row in rows]
    others_fewer = [row for i, row in enumerate(relabelled) if row["speaker"] == test_speaker or i % 2 == 0]
    _, changed = normalised(others_fewer, "speaker")  # every label changed, other speakers' clips halved

    own = raw["mel_mean"].double()  # (without shrinkage) the z-scores of the speaker's own clips
    torch.testing.assert_close(adapted["mel_mean"], ((own - own.mean(0)) / own.std(0, correction=0)).float())
    torch.testing.assert_close(changed["mel_mean"], adapted["mel_mean"])
    assert adaptive.split is not None and adaptive.table is not None
    for partition in ("train", "val", "test"):  # what the network trains and is tested on went through the stage
        rows_of = adaptive.split.partition(partition)
        served = adaptive.datasets[partition].tensors["mel_mean"]
        torch.testing.assert_close(served, adaptive.table.tensors["mel_mean"][rows_of])


def test_selection_never_reads_the_test_speakers_clips(tmp_path: Path, cache_dir: Path, tiny_corpus: Path) -> None:
    """The same run with the test speaker's audio replaced by noise chooses and fits the same model."""
    store = Store(tmp_path, cache_dir, model=())
    first = store.train("first", *ADAPTIVE)
    params = store.client.get_run(first).data.params
    test_speaker = params["split.test_speakers"]
    noisy = tmp_path / "noisy"
    shutil.copytree(tiny_corpus, noisy)
    rng = np.random.default_rng(0)
    for clip in read_corpus(noisy).clips:
        if clip.speaker == test_speaker:
            wav = Path(clip.path)
            samples, rate = sf.read(wav, dtype="float32")
            sf.write(wav, rng.normal(0, 0.3, len(samples)).astype("float32"), rate)
    second = store.train("second", *ADAPTIVE, f"data.root={noisy}")  # the synthetic reader, read from a folder

    one, two = (store.client.get_run(r).data for r in (first, second))
    assert two.params["split.test_speakers"] == test_speaker and two.params["selected"] == one.params["selected"]
    assert two.metrics["val/uar_best"] == one.metrics["val/uar_best"]
    models = [EmotionRecognizer.from_checkpoint(Path(store.configs[r].paths.output_dir) / "model.skops") for r in
              (first, second)]  # fmt: skip
    coefficients = [m.head.estimator[-1].coef_ for m in models]
    np.testing.assert_array_equal(*coefficients)
    assert one.metrics["test/uar"] != two.metrics["test/uar"]  # the noise did reach the test


def test_evaluate_scores_speaker_adaptively_and_says_so(adaptive, capsys) -> None:
    store, run_id = adaptive
    cfg = store.configs[run_id]
    corpus = [f"paths.cache_dir={cfg.paths.cache_dir}", *(f"data.synthetic.{k}={v}" for k, v in TINY_CORPUS.items())]
    evaluate.main(["models:/adaptive@champion", *corpus, "--tracking-uri", store.uri])
    out = capsys.readouterr().out
    assert "normalised: speaker-adaptive: 72 clip(s) by their own speaker's statistics, 0 by the training" in out
    (run,) = store.client.search_runs([store.client.get_experiment_by_name(evaluate.EXPERIMENT).experiment_id])
    assert run.data.tags["speaker_adaptive"] == "true" and run.data.params["normalization"].startswith("speaker")


def test_speaker_normalisation_refuses_what_it_cannot_normalise(tmp_path: Path, cache_dir: Path) -> None:
    store = Store(tmp_path, cache_dir, model=())
    cfg = store.config("normalize=speaker", "features/window=utterance")
    with pytest.raises(Exception, match="normalize=speaker normalises cached features: use features/window=crop"):
        build_datamodule(cfg, built(cfg.features)).setup()


def test_an_svm_head_restored_from_its_skops_file_alone_predicts_the_test_speaker_as_its_run_did(
    tmp_path: Path, cache_dir: Path, tiny_corpus: Path
) -> None:
    store = Store(tmp_path, cache_dir, model=())
    run_id = store.train("svm", "model=svm", "model.grid.C=[1,10]", *SPEAKER_STAGE)
    alone = tmp_path / "alone" / "model.skops"
    alone.parent.mkdir()
    shutil.copy(Path(store.configs[run_id].paths.output_dir) / "model.skops", alone)

    recognizer = EmotionRecognizer.from_checkpoint(alone)  # its calibrated SVM: scikit-learn's own types only
    speaker, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    classified = recognizer.classify_files(wavs, [speaker] * len(wavs))
    assert classified.normalization == ["speaker"] * len(wavs)
    predicted = [recognizer.classes[i] for i in classified.probabilities.argmax(dim=1).tolist()]
    emotion_of = {Path(clip.path): clip.emotion for clip in read_corpus(tiny_corpus).clips}
    accuracy = np.mean([guess == emotion_of[wav] for guess, wav in zip(predicted, wavs, strict=True)])
    assert accuracy == pytest.approx(store.client.get_run(run_id).data.metrics["test/acc"])


def served_as(adaptive_wrong: dict[int, int], whole_clips: int) -> Served:
    """Simulated serving of 20 clips a size and draw (labels 0, 1, ...): the twin wrong on 2 of them, the adaptive
    head wrong on `adaptive_wrong[size]` (others: none) and surer when wrong, all of a speaker's clips
    `whole_clips`."""
    served = Served()
    for size in (*CLIPS, WHOLE):
        for draw in range(DRAWS):
            for clip in range(20):
                label, twin_right, adaptive_right = clip % 2, clip >= 2, clip >= adaptive_wrong.get(size, 0)
                served.sizes.append(size)
                served.profile.append(whole_clips if size == WHOLE else size)
                served.draws.append(draw)
                served.labels.append(label)
                served.twin.append(np.roll([0.6, 0.4], label if twin_right else 1 - label))
                served.adaptive.append(np.roll([0.6, 0.4] if adaptive_right else [0.1, 0.9], label))
    return served


def test_a_blend_curve_follows_the_training_speakers_evidence_up_to_all_their_clips() -> None:
    worse_until_whole = {size: 4 for size in CLIPS}  # the adaptive head loses to the twin until it has every clip
    curve, said = chosen_curve(served_as(worse_until_whole, whole_clips=53), min_clips=10)
    assert curve == (*((clips, 0.0) for clips in CLIPS), (53, 1.0))  # a point at the speakers' whole count
    assert said["53"]["adaptive"] > said["53"]["twin"] and said["4"]["adaptive"] < said["4"]["twin"]

    better_from_8 = {size: 4 for size in CLIPS if size < 8}
    curve, _ = chosen_curve(served_as(better_from_8, whole_clips=20), min_clips=10)
    assert [clips for clips, _ in curve] == list(CLIPS)  # speakers of 20 clips: the size of 32 served them whole
    assert [weight for _, weight in curve] == [0.0] * 5 + [0.64, 1.0, 1.0, 1.0]  # the (n / 10)^2 rule caps it


def test_a_scikit_learn_head_learns_its_blend_curve_keeps_it_in_its_file_and_serves_by_it(
    tmp_path: Path, cache_dir: Path, tiny_corpus: Path
) -> None:
    store = Store(tmp_path, cache_dir, model=())
    run_id = store.train(
        "learned",
        "model=svm",
        "model.grid.C=[1]",
        "features=mel_mean",
        "normalize=speaker",
        "normalize.learn_blend=true",
    )
    recognizer = EmotionRecognizer.from_checkpoint(Path(store.configs[run_id].paths.output_dir) / "model.skops")

    curve = recognizer.normalizer.blend_curve  # learned on the training speakers, read back from the file
    assert curve is not None and [clips for clips, _ in curve][: len(CLIPS)] == list(CLIPS)
    weights = [weight for _, weight in curve]
    assert weights == sorted(weights) and all(0 <= w <= 1 for w in weights)
    logged = store.client.get_run(run_id).data.params["blend_curve"]
    assert logged == " ".join(f"{clips}:{weight}" for clips, weight in curve)
    assert [tuple(point) for point in recognizer.recipe["normalize"]["blend_curve"]] == list(curve)

    # served, a speaker of n clips gets w(n) * the adaptive answer + (1 - w(n)) * the twin's
    speaker, wavs = speaker_of_the_test(store, run_id, tiny_corpus)
    plain = recognizer.classify_files(wavs[:3]).probabilities
    recognizer.normalizer.blend_curve = ((1, 1.0),)
    own = recognizer.classify_files(wavs[:3], [speaker] * 3).probabilities
    recognizer.normalizer.blend_curve = ((1, 0.0), (2, 0.2), (4, 0.6), (8, 1.0))  # 3 clips: halfway from 2 to 4
    blended = recognizer.classify_files(wavs[:3], [speaker] * 3)
    assert recognizer.normalizer.weight(3) == pytest.approx(0.4)
    torch.testing.assert_close(blended.probabilities, 0.4 * own + 0.6 * plain)
    assert blended.normalization == [BLENDED] * 3
    assert [recognizer.normalizer.weight(n) for n in (0, 1, 8, 500)] == [0.0, 0.0, 1.0, 1.0]  # flat past the ends
