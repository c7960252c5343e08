"""Promotion to the Model Registry: ranking, aliases and refusals, on real runs in a real SQLite store.

The runs are trained for a few batches, so their scores are near chance and may tie; each test that
needs a known ranking logs the runs' `val/uar_best` itself, which is the one thing it does not train for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotion.cli import predict, promote
from emotion.serving.registry import Ranking, leaderboard
from tests.stores import Store, run_id_of, trained_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Store:
    """A store of this module's own: its tests score, promote and add runs that would outrank a shared champion."""
    return trained_store(tmp_path_factory.mktemp("promotion"), cache_dir)


def test_promote_registers_the_best_finished_run_and_moves_the_aliases(store: Store, capsys) -> None:
    a, b, c = (run_id_of(store, n) for n in "abc")
    for run_id, value in ((a, 0.50), (b, 0.70), (c, 0.40)):
        store.score(run_id, value)

    store.promote("--name", "ser")
    first = store.client.get_model_version_by_alias("ser", "champion")
    assert first.run_id == b
    assert first.tags["source_run_id"] == b
    assert first.tags["metric"] == "val/uar_best" and first.tags["metric_value"] == "0.7"
    assert first.tags["split"] == "speaker" and first.tags["leaky"] == "false"
    assert json.loads(first.tags["features"])["_target_"] == "emotion.data.features.LogMel"
    assert json.loads(first.tags["data"])["name"] == "synthetic"
    assert "registered run b" in capsys.readouterr().out

    store.promote("--name", "ser")  # the same winner: nothing moves, no new version
    assert len(store.client.search_model_versions("name = 'ser'")) == 1
    assert "already ser@champion" in capsys.readouterr().out

    store.score(c, 0.80)
    store.promote("--name", "ser")
    champion = store.client.get_model_version_by_alias("ser", "champion")
    previous = store.client.get_model_version_by_alias("ser", "previous")
    assert (champion.run_id, str(champion.version)) == (c, "2")
    assert (previous.run_id, str(previous.version)) == (b, "1")


def test_runs_are_ranked_by_their_kept_checkpoints_value_not_their_last_epochs(store: Store) -> None:
    a, b = run_id_of(store, "a"), run_id_of(store, "b")
    store.score(a, 0.90)  # its best epoch, kept as its checkpoint ...
    store.client.log_metric(a, "val/uar", 0.20, step=20_000)  # ... then a last epoch that fell back
    store.score(b, 0.85)
    store.client.log_metric(b, "val/uar", 0.85, step=20_000)
    ranked = leaderboard(store.client, Ranking("emotion"))
    assert [r.info.run_id for r in ranked[:2]] == [a, b]


def test_dry_run_prints_the_leaderboard_and_changes_nothing(store: Store, capsys) -> None:
    for name, value in (("a", 0.55), ("b", 0.45), ("c", 0.35)):
        store.score(run_id_of(store, name), value)
    store.promote("--name", "dry", "--dry-run")
    out = capsys.readouterr().out
    header, _, *rows = out.splitlines()[:5]
    assert header.split()[:5] == ["#", "run", "id", "val/uar_best", "test/acc"]
    assert header.split()[-4:] == ["leaky", "study", "trial", "run"]
    names = [row.split()[-1] for row in rows]
    assert names == ["a", "b", "c"]  # the failed, pruned, fold and parent runs (0.99) are not competing
    assert [row.split()[1] for row in rows] == [run_id_of(store, n) for n in "abc"]
    assert all(row.split()[4:6] == ["synthetic", "6"] for row in rows)  # the corpus, six classes each
    assert "dry run: would register run a" in out
    assert store.client.search_registered_models("name = 'dry'") == []


def test_a_cost_budget_promotes_the_best_run_it_affords_and_refuses_one_that_no_run_meets(store: Store, capsys) -> None:
    for name, value, milliseconds in (("a", 0.80, 900.0), ("b", 0.70, 40.0), ("c", 0.60, 30.0)):
        store.score(run_id_of(store, name), value)
        store.client.log_metric(run_id_of(store, name), "cost/ms_per_clip", milliseconds)  # as a sweep's trial logs it

    store.promote("--name", "budget", "--max-ms-per-clip", "50")
    assert store.client.get_model_version_by_alias("budget", "champion").run_id == run_id_of(store, "b")
    assert "within --max-ms-per-clip 50 (cost/ms_per_clip: #1 40.0, #2 30.0)" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exited:
        store.promote("--name", "budget", "--max-ms-per-clip", "20")
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "no run costs at most 20 ms per clip: the cheapest of the 3 that measured it costs 30.0 (run c," in err
    assert store.client.get_model_version_by_alias("budget", "champion").run_id == run_id_of(store, "b")


def test_a_leaky_run_is_refused_unless_forced(store: Store, capsys) -> None:
    leaky = store.train("leaky", "augment=noise", "augment.before_split=true", "split=clip")
    assert store.client.get_run(leaky).data.tags["leaky"] == "true"
    store.score(leaky, 0.999)

    with pytest.raises(SystemExit) as exited:
        store.promote("--name", "careful")
    assert exited.value.code == 1
    assert "leaky=true" in capsys.readouterr().err
    assert store.client.search_registered_models("name = 'careful'") == []

    store.promote("--name", "careful", "--filter", "tags.leaky = 'false'")
    assert store.client.get_model_version_by_alias("careful", "champion").run_id != leaky

    store.promote("--name", "careful", "--allow-leaky")
    assert store.client.get_model_version_by_alias("careful", "champion").run_id == leaky
    store.client.log_metric(leaky, "val/uar_best", 0.0, step=20_000)  # out of the other tests' way


def test_a_run_of_other_classes_than_the_champions_is_refused_unless_allowed(store: Store, capsys) -> None:
    for name, value in (("a", 0.55), ("b", 0.45), ("c", 0.35)):
        store.score(run_id_of(store, name), value)
    store.promote("--name", "columns")
    four = store.train("four", "data.classes=[angry,happy,neutral,sad]")
    store.score(four, 0.98)  # a 4-class UAR (chance 0.25) outranks the 6-class runs (chance 0.167)

    with pytest.raises(SystemExit):
        store.promote("--name", "columns")
    err = capsys.readouterr().err
    assert "predicts ['angry', 'happy', 'neutral', 'sad'], the champion ['angry', 'disgust'," in err
    assert "--allow-new-classes" in err
    assert store.client.get_model_version_by_alias("columns", "champion").run_id == run_id_of(store, "a")

    store.promote("--name", "columns", "--allow-new-classes")
    assert store.client.get_model_version_by_alias("columns", "champion").run_id == four
    store.client.log_metric(four, "val/uar_best", 0.0, step=20_000)  # out of the other tests' way


def test_a_run_of_another_corpus_is_refused_unless_allowed_and_the_leaderboard_names_each_runs_corpus(
    store: Store, capsys
) -> None:
    for name, value in (("a", 0.55), ("b", 0.45), ("c", 0.35)):
        store.score(run_id_of(store, name), value)
    store.promote("--name", "corpora")
    other = store.train("elsewhere", "data.name=othercorpus")  # the embedded clips, under another corpus's name
    store.score(other, 0.97)
    capsys.readouterr()

    with pytest.raises(SystemExit):
        store.promote("--name", "corpora")
    out, err = capsys.readouterr()
    board = [line.split() for line in out.splitlines()[2:]]
    assert board[0][1] == other and "othercorpus" in board[0] and all("synthetic" in row for row in board[1:])
    assert f"({other}) was trained on othercorpus, the champion on synthetic" in err and "--allow-new-corpus" in err
    assert store.client.get_model_version_by_alias("corpora", "champion").run_id == run_id_of(store, "a")

    store.promote("--name", "corpora", "--allow-new-corpus")
    assert store.client.get_model_version_by_alias("corpora", "champion").run_id == other
    store.client.log_metric(other, "val/uar_best", 0.0, step=20_000)  # out of the other tests' way


def test_the_leaderboard_says_why_cross_validations_are_absent(store: Store, capsys) -> None:
    experiment_id = store.client.get_experiment_by_name("emotion").experiment_id
    parent = store.client.create_run(experiment_id, run_name="a loso", tags={"role": "cv", "cv": "loso"})
    store.client.log_metric(parent.info.run_id, "val/uar_best", 0.99)
    store.client.set_terminated(parent.info.run_id)

    store.promote("--dry-run")
    out = capsys.readouterr().out
    assert parent.info.run_id not in out
    assert "not ranked: 1 cross-validation(s)" in out and "split=speaker" in out


def test_a_study_that_does_not_exist_is_named_with_those_that_do(store: Store, capsys) -> None:
    with pytest.raises(SystemExit):
        store.promote("--study", "cnn2d-logmel")
    assert "error: no study 'cnn2d-logmel' in experiment 'emotion' (its studies: ['s'])" in capsys.readouterr().err


def test_commands_that_need_a_store_never_create_one(tmp_path: Path, tiny_corpus: Path, capsys) -> None:
    missing = tmp_path / "nowhere" / "mlruns.db"
    clip = str(next(tiny_corpus.glob("*.wav")))
    for command in (promote.main, predict.main):
        args = ["--tracking-uri", f"sqlite:///{missing}"] + ([clip] if command is predict.main else [])
        with pytest.raises(SystemExit) as exited:
            command(args)
        assert exited.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: no MLflow store at {missing}") and "--tracking-uri or MLFLOW_TRACKING_URI" in err
    assert not missing.exists() and not missing.parent.exists()


def test_a_failed_promotion_leaves_the_aliases_where_they_were(store: Store, capsys) -> None:
    store.score(run_id_of(store, "a"), 0.60)
    store.promote("--name", "safe")
    before = store.client.get_model_version_by_alias("safe", "champion")

    experiment_id = store.client.get_experiment_by_name("emotion").experiment_id
    empty = store.client.create_run(experiment_id, run_name="no-checkpoint")
    store.client.log_metric(empty.info.run_id, "val/uar_best", 0.98)
    store.client.set_terminated(empty.info.run_id, "FINISHED")
    with pytest.raises(SystemExit):
        store.promote("--name", "safe")
    assert "lacks its checkpoint" in capsys.readouterr().err
    assert store.client.get_model_version_by_alias("safe", "champion").run_id == before.run_id
    assert len(store.client.search_model_versions("name = 'safe'")) == 1
    store.client.delete_run(empty.info.run_id)
