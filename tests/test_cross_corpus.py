"""Across corpora, on the real Emo-DB and SAVEE: evaluation of one corpus's model on the other, training on both
at once with per-corpus scores, and leave-one-corpus-out.

Each evaluation is an MLflow run linked to the model version it scored, and promotion can require one.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from emotion.cli import evaluate, promote, runs
from emotion.data.corpora import read_corpora
from emotion.data.splits import PARTITIONS, LeaveOneCorpusOut
from emotion.pipeline import train
from emotion.tracking.evaluations import evaluations, held_out_on
from tests.conftest import FEW_BATCHES, compose_config
from tests.test_real_corpora import EMODB, SAVEE

pytestmark = pytest.mark.skipif(not EMODB.is_dir() or not SAVEE.is_dir(), reason=f"no real corpora in {EMODB.parent}")

ROOTS = {"emodb": EMODB, "savee": SAVEE}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict:
    """A small CNN trained on each corpus (a few batches), each promoted as the champion of a model of its own."""
    folder = tmp_path_factory.mktemp("cross-corpus")
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    runs = {}
    for corpus, root in ROOTS.items():
        overrides = [
            f"data={corpus}",
            f"data.root={root}",
            "model.net.channels=[8,8,8]",
            "model.net.dense=16",
            *FEW_BATCHES,
        ]
        overrides.append(f"logger.run_name=on-{corpus}")
        cfg = compose_config(
            *overrides, cache_dir=cache_dir, output_dir=folder / corpus, tracking_uri=uri,
            artifact_location=folder / "mlartifacts", corpus={},
        )  # fmt: skip
        train(cfg)
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("emotion").experiment_id
        (run,) = client.search_runs([experiment], f"attributes.run_name = 'on-{corpus}'")
        runs[corpus] = run.info.run_id
        promote.main(
            ["--tracking-uri", uri, "--name", f"from-{corpus}", "--filter", f"attributes.run_name = 'on-{corpus}'"]
        )
    return {"uri": uri, "runs": runs, "client": mlflow.MlflowClient(uri)}


def test_emotion_runs_compares_the_runs_of_each_corpus_in_a_table_of_its_own(store: dict, capsys) -> None:
    runs.main(["--tracking-uri", store["uri"]])
    blocks = capsys.readouterr().out.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == ["emodb (1 runs)", "savee (1 runs)"]
    for block, corpus in zip(blocks, ("emodb", "savee"), strict=True):
        run = store["client"].get_run(store["runs"][corpus])
        (row,) = block.splitlines()[3:]
        assert row.split()[:2] == [f"{run.data.metrics['val/uar_best']:.4f}", f"{run.data.metrics['test/uar']:.4f}"]
        assert row.split()[-1] == f"on-{corpus}"


@pytest.mark.parametrize(
    ("trained_on", "tested_on", "dropped"), [("emodb", "savee", "surprise"), ("savee", "emodb", "boredom")]
)
def test_a_model_of_one_corpus_is_evaluated_on_the_other_as_a_run_linked_to_its_version(
    store: dict, capsys, trained_on: str, tested_on: str, dropped: str
) -> None:
    client = store["client"]
    model = f"models:/from-{trained_on}@champion"
    evaluate.main([model, f"data={tested_on}", f"data.root={ROOTS[tested_on]}", "--tracking-uri", store["uri"]])
    out = capsys.readouterr().out
    assert f"{model} (version 1, run {store['runs'][trained_on]}) on {tested_on}:" in out
    assert f"dropped clips of classes the model does not know: {{'{dropped}':" in out

    (run,) = client.search_runs(
        [client.get_experiment_by_name("evaluations").experiment_id], f"tags.model_uri = '{model}'"
    )
    assert run.info.status == "FINISHED"
    assert (run.data.tags["model_version"], run.data.tags["source_run"]) == ("1", store["runs"][trained_on])
    assert run.data.tags["corpus"] == tested_on
    assert {"eval/acc", "eval/uar", "eval/f1"} <= set(run.data.metrics)
    matrix = json.loads(Path(client.download_artifacts(run.info.run_id, "confusion_matrix.json")).read_text())
    assert sum(map(sum, matrix["counts"])) == int(run.data.params["clips"])  # every evaluated clip, once
    assert {"confusion_matrix.png", "classification_report.txt"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }

    version = client.get_model_version(f"from-{trained_on}", "1")
    (evaluation,) = [e for e in evaluations(version.tags) if e.corpus == tested_on]
    assert evaluation.uar == pytest.approx(run.data.metrics["eval/uar"], abs=1e-4)
    assert (evaluation.clips, evaluation.held_out, evaluation.run_id) == (int(run.data.params["clips"]), True,
                                                                          run.info.run_id)  # fmt: skip
    (scored,) = client.get_run(run.info.run_id).inputs.dataset_inputs  # the clips it scored, as an MLflow dataset
    assert scored.dataset.digest == evaluation.digest and f"({run.data.params['clips']} clips" in scored.dataset.name


def test_promotion_can_require_an_evaluation_on_a_corpus(store: dict, capsys) -> None:
    on_emodb = ["--tracking-uri", store["uri"], "--name", "gated", "--filter", "attributes.run_name = 'on-emodb'"]
    with pytest.raises(SystemExit):
        promote.main([*on_emodb, "--require-eval", "ravdess"])
    err = capsys.readouterr().err
    first = f"emotion-evaluate runs:/{store['runs']['emodb']}"
    assert "has no held-out evaluation on ravdess (--require-eval; one on speakers it trained on does not count)" in err
    assert f"evaluate it first, e.g. {first}" in err
    assert store["client"].search_registered_models("name = 'gated'") == []

    evaluate.main(
        [f"runs:/{store['runs']['emodb']}", "data=savee", f"data.root={SAVEE}", "--tracking-uri", store["uri"]]
    )
    promote.main([*on_emodb, "--require-eval", "savee"])
    out = capsys.readouterr().out
    assert "eval savee" in out  # the leaderboard shows the evaluation column
    assert store["client"].get_model_version_by_alias("gated", "champion").run_id == store["runs"]["emodb"]


def test_an_evaluation_on_the_models_own_speakers_warns_and_does_not_satisfy_require_eval(store: dict, capsys) -> None:
    own = ["--tracking-uri", store["uri"], "--name", "own", "--filter", "attributes.run_name = 'on-savee'"]
    evaluate.main(["models:/from-savee@champion", "data=savee", f"data.root={SAVEE}", "--tracking-uri", store["uri"]])
    err = capsys.readouterr().err
    assert "clips are of speakers the model was trained or validated on: this is no held-out score" in err
    tags = store["client"].get_run(store["runs"]["savee"]).data.tags
    assert [e.held_out for e in evaluations(tags) if e.corpus == "savee"] == [False]
    with pytest.raises(SystemExit):
        promote.main([*own, "--require-eval", "savee"])
    assert "has no held-out evaluation on savee" in capsys.readouterr().err


def test_an_evaluation_of_other_clips_never_overwrites_another_and_data_classes_narrows_the_scored_classes(
    store: dict, capsys
) -> None:
    model, run_id = "models:/from-emodb@champion", store["runs"]["emodb"]
    corpus = ["data=savee", f"data.root={SAVEE}"]
    evaluate.main([model, *corpus, "--tracking-uri", store["uri"]])
    evaluate.main([model, *corpus, "data.classes=[angry,sad]", "--tracking-uri", store["uri"]])
    out = capsys.readouterr().out
    assert "on savee: 120 clips" in out  # 4 speakers x 15 clips of each of the two classes
    found = {e.clips: e for e in evaluations(store["client"].get_run(run_id).data.tags) if e.corpus == "savee"}
    assert 120 in found and 420 in found and found[120].digest != found[420].digest
    assert held_out_on(store["client"].get_run(run_id).data.tags, "savee") == found[420]


def test_leave_one_corpus_out_tests_on_a_whole_corpus_and_trains_on_the_other_speakers_only() -> None:
    clips = read_corpora(ROOTS).clips
    assert {c.speaker.split(":")[0] for c in clips} == {"emodb", "savee"}  # speakers kept apart per corpus
    for fold, corpus in enumerate(sorted(ROOTS)):
        split = LeaveOneCorpusOut().split(clips, fold)
        assert {clips[i].corpus for i in split.test} == {corpus}
        assert len(split.test) == sum(c.corpus == corpus for c in clips)
        assert {clips[i].corpus for i in split.train + split.val} == set(ROOTS) - {corpus}
        speakers = {name: {clips[i].speaker for i in split.partition(name)} for name in PARTITIONS}
        assert not (speakers["train"] & speakers["val"]) and not (
            speakers["test"] & (speakers["train"] | speakers["val"])
        )


#: Both corpora at once, a small CNN, a few training batches and the whole test partition (per-corpus scores).
MIXED = ["data=mix", f"data.roots.emodb={EMODB}", f"data.roots.savee={SAVEE}", "model.net.channels=[8,8,8]",
         "model.net.dense=16", *(o for o in FEW_BATCHES if "limit_test" not in o)]  # fmt: skip


def train_mixed(tmp_path: Path, cache_dir: Path, *overrides: str) -> mlflow.MlflowClient:
    """Train on both corpora with `overrides`, in a store of the test's own; its client."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = compose_config(
        *MIXED, *overrides, cache_dir=cache_dir, output_dir=tmp_path / "out", tracking_uri=uri,
        artifact_location=tmp_path / "mlartifacts", corpus={},
    )  # fmt: skip
    train(cfg)
    return mlflow.MlflowClient(uri)


def test_a_run_on_both_corpora_logs_each_corpus_test_scores_and_keeps_their_speakers_apart(
    tmp_path: Path, cache_dir: Path
) -> None:  # every test batch: per-corpus scores need the whole test partition
    client = train_mixed(tmp_path, cache_dir)
    (run,) = client.search_runs([client.get_experiment_by_name("emotion").experiment_id])
    assert {f"test/{m}/{c}" for m in ("acc", "uar", "f1") for c in ROOTS} <= set(run.data.metrics)
    split = json.loads(Path(client.download_artifacts(run.info.run_id, "split.json", str(tmp_path))).read_text())
    for partition in PARTITIONS:  # stratified by corpus: every partition holds both corpora
        assert {s.split(":")[0] for s in split[partition]["speakers"]} == set(ROOTS)


def test_a_leave_one_corpus_out_cross_validation_scores_each_corpus_by_a_model_of_the_other(
    tmp_path: Path, cache_dir: Path
) -> None:
    client = train_mixed(tmp_path, cache_dir, "split=loco")
    runs = client.search_runs([client.get_experiment_by_name("emotion").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("role") == "cv"]
    folds = json.loads(Path(client.download_artifacts(parent.info.run_id, "cv_folds.json", str(tmp_path))).read_text())
    for fold, corpus in zip(folds, sorted(ROOTS), strict=True):  # fold i tests the i-th corpus, trains on the other
        assert {s.split(":")[0] for s in fold["speakers"]["test"]} == {corpus}
        assert {s.split(":")[0] for s in fold["speakers"]["train"] + fold["speakers"]["val"]} == set(ROOTS) - {corpus}
        assert parent.data.metrics[f"test/uar_pooled/{corpus}"] == pytest.approx(fold["metrics"]["test/uar"], abs=1e-4)


def test_a_model_is_evaluated_on_both_corpora_at_once(store: dict, capsys) -> None:
    roots = [f"data.roots.{corpus}={root}" for corpus, root in ROOTS.items()]
    evaluate.main(["models:/from-savee@champion", "data=mix", *roots, "--tracking-uri", store["uri"]])
    out = capsys.readouterr().out
    clips = len(read_corpora(ROOTS).clips)  # six classes of both corpora
    assert f"on mix: {clips} clips" in out and "{'boredom': 81, 'surprise': 60}" in out
