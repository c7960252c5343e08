"""The speaker profiles store: no clip lost or counted twice under writers at once (processes and threads, SQLite
and PostgreSQL), its caps, the rule for speakers' names, errors that say nothing of the server, `emotion-profiles`."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from functools import reduce
from operator import add
from pathlib import Path

import pytest
import sqlalchemy
import torch

from emotion.cli.profiles import main
from emotion.data.normalize import Moments
from emotion.errors import ConfigError, DataError
from emotion.ops.team import start_postgres, stop_postgres
from emotion.serving.profile_db import ProfileStoreError, clips_table
from emotion.serving.profiles import MAX_AGE_VARIABLE, MAX_CLIPS_VARIABLE, ProfileStore, open_profiles, speaker_name
from tests.postgres import postgres_folder

MODEL = "0123456789abcdef" * 2
#: Writers at once: processes (each its own engine) and threads of this process (sharing one).
PROCESSES, THREADS, CLIPS_EACH = 4, 2, 20


def moments(values: list[float]) -> Moments:
    """The moments of one clip whose input `x` is (1, len(values)): one frame of one channel."""
    return Moments.of({"x": torch.tensor([[values]], dtype=torch.float64)}, [0])


def clip_values(count: int, seed: int = 0) -> list[tuple[str, list[float]]]:
    """`count` clips (digest, values): small integers, so that float32 holds their sums exactly."""
    values = torch.randint(-8, 9, (count, 4), generator=torch.Generator().manual_seed(seed)).double()
    return [(f"clip{seed}-{i:03d}", row) for i, row in enumerate(values.tolist())]


def send(url: str, clips: list[tuple[str, list[float]]], barrier, results) -> None:
    """A writer (a process or a thread): adds its clips one at a time, twice (the second time, all are held)."""
    store = ProfileStore(url)
    counts = []
    for _ in range(2):
        barrier.wait(timeout=60)
        counts.append(sum(store.add(MODEL, [("ann", digest, moments(values))]) for digest, values in clips))
    results.put(counts)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL of its own (trusting local connections) in a temporary folder PostgreSQL's user can reach."""
    root = postgres_folder("emotion-profiles-")
    from tests.conftest import free_port  # here: the writers' process imports this module, and not MLflow

    port = free_port()
    try:
        start_postgres(root, "127.0.0.1", port, password=None)
        url = f"postgresql://emotion@127.0.0.1:{port}/mlflow"  # an empty database of the two it makes
        engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ALTER SYSTEM SET fsync = off")  # a server thrown away: quick to stop
            connection.exec_driver_sql("SELECT pg_reload_conf()")
        engine.dispose()
        yield url
    finally:
        stop_postgres(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store: an SQLite file of the test's own, or the module's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'profiles.db'}"
    url = request.getfixturevalue("postgres_url")
    store = ProfileStore(url)
    for entry in store.speakers():
        store.forget(entry.speaker)
    return url


def test_writers_at_once_lose_no_clip_and_count_none_twice(url: str) -> None:
    """Each writer sends its own clips and its neighbour's, interleaved: every clip is raced for by two writers."""
    writers = PROCESSES + THREADS
    own = [clip_values(CLIPS_EACH, seed) for seed in range(writers)]
    sent = [
        [clip for pair in zip(own[k], own[(k + 1) % writers], strict=True) for clip in pair] for k in range(writers)
    ]
    context = multiprocessing.get_context("forkserver")  # writers forked from a fresh process, no engine in it
    context.set_forkserver_preload([__name__])  # which imports torch once for all of them
    barrier, results = context.Barrier(writers), context.Queue()
    processes = [context.Process(target=send, args=(url, sent[k], barrier, results)) for k in range(PROCESSES)]
    threads = [threading.Thread(target=send, args=(url, sent[k], barrier, results)) for k in range(PROCESSES, writers)]
    for writer in [*processes, *threads]:
        writer.start()
    counts = [results.get(timeout=120) for _ in range(writers)]
    for writer in [*processes, *threads]:
        writer.join(timeout=30)
    assert all(process.exitcode == 0 for process in processes)

    every_clip = [clip for clips in own for clip in clips]
    assert sum(first for first, _ in counts) == len(every_clip)  # each clip new to exactly one writer
    assert [again for _, again in counts] == [0] * writers  # sent again: nothing added
    store = ProfileStore(url)
    assert store.clips_of(MODEL, "ann") == len(every_clip)
    held = store.held(MODEL, ["ann"])["ann"]
    assert sorted(digest for digest, _ in held) == sorted(digest for digest, _ in every_clip)
    total, expected = reduce(add, (m for _, m in held)), reduce(add, (moments(values) for _, values in every_clip))
    assert (total.clips, total.count) == (expected.clips, expected.count)
    assert torch.equal(total.sum["x"], expected.sum["x"]) and torch.equal(total.sumsq["x"], expected.sumsq["x"])
    assert total.sum["x"].dtype == torch.float64


def add_clips(store: ProfileStore, speaker: str, count: int, seed: int = 0, model: str = MODEL) -> list[str]:
    clips = clip_values(count, seed)
    for digest, values in clips:
        store.add(model, [(speaker, digest, moments(values))])
    return [digest for digest, _ in clips]


def test_a_profile_keeps_its_most_recent_clips(url: str) -> None:
    store = ProfileStore(url, max_clips=3)
    digests = add_clips(store, "ann", 5)
    batch = clip_values(4, seed=1)
    assert store.add(MODEL, [("ann", digest, moments(values)) for digest, values in batch]) == 4

    held = store.held(MODEL, ["ann", "nobody"])
    assert list(held) == ["ann"]  # a speaker without clips is absent
    assert [digest for digest, _ in held["ann"]] == [digest for digest, _ in batch[1:]]  # oldest first
    assert store.clips_of(MODEL, "ann") == 3
    assert sum(len(model["clips"]) for model in store.export("ann")["models"]) == 3  # the older ones are gone
    assert store.add(MODEL, [("ann", digests[0], moments([1.0] * 4))]) == 1  # forgotten, so new again


def test_a_model_keeps_its_most_recently_seen_speakers(url: str) -> None:
    store = ProfileStore(url, max_speakers=2)
    add_clips(store, "dan", 1, model="another model")
    add_clips(store, "ann", 2)
    add_clips(store, "bob", 2, seed=1)
    add_clips(store, "ann", 1, seed=2)  # ann is seen again: bob is now the least recently seen
    add_clips(store, "cy", 1, seed=3)

    assert {(e.model, e.speaker) for e in store.speakers()} == {(MODEL, "ann"), (MODEL, "cy"), ("another model", "dan")}
    assert store.clips_of(MODEL, "ann") == 3 and store.clips_of(MODEL, "bob") == 0


def test_stale_profiles_are_not_read_and_prune_drops_them(url: str) -> None:
    store = ProfileStore(url, max_age_days=30)
    add_clips(store, "ann", 2)
    add_clips(store, "bob", 1, seed=1)
    add_clips(store, "bob", 1, seed=2, model="another model")
    set_seen(url, "ann", timedelta(days=40))
    set_seen(url, "bob", timedelta(days=20))

    assert list(store.held(MODEL, ["ann", "bob"])) == ["bob"]
    assert store.clips_of(MODEL, "ann") == 0 and store.clips_of(MODEL, "bob") == 1
    assert store.prune() == 2  # ann's two
    assert {e.speaker for e in store.speakers()} == {"bob"}
    assert store.prune(older_than_days=10) == 2  # bob's, of both models
    assert store.speakers() == []
    with pytest.raises(ConfigError):
        store.prune(older_than_days=-1)


def set_seen(url: str, speaker: str, ago: timedelta) -> None:
    """Make a speaker's clips `ago` old."""
    seen = datetime.now(timezone.utc).replace(tzinfo=None) - ago
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(clips_table.update().where(clips_table.c.speaker == speaker).values(seen=seen))
    engine.dispose()


def test_forget_removes_a_speakers_clips_of_one_model_or_all(url: str) -> None:
    store = ProfileStore(url)
    add_clips(store, "ann", 2)
    add_clips(store, "ann", 3, model="another model")
    add_clips(store, "bob", 1)
    assert store.forget("ann", model="another model") == 3
    assert store.clips_of(MODEL, "ann") == 2
    assert store.forget("ann") == 2
    assert [e.speaker for e in store.speakers()] == ["bob"]
    assert store.export("ann")["models"] == []


def test_a_model_is_known_by_its_latest_label_and_old_tables_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "profiles.db"
    with closing(sqlite3.connect(path)) as old:  # the tables of earlier versions, in the same file
        old.execute("CREATE TABLE speaker_profiles (model TEXT, speaker TEXT, clips INTEGER, moments BLOB)")
        old.execute("CREATE TABLE speaker_clips (model TEXT, speaker TEXT, clip TEXT)")
    store = open_profiles(str(path))
    add_clips(store, "ann", 1)
    store.name_model(MODEL, "best.ckpt")
    store.name_model(MODEL, "models:/emotion@champion")
    store.name_model(MODEL, "x" * 1000)  # kept, shortened
    store.name_model(MODEL, "models:/emotion@champion")
    assert [(e.model, e.label, e.speaker, e.clips) for e in store.speakers()] == [
        (MODEL, "models:/emotion@champion", "ann", 1)
    ]


@pytest.mark.parametrize(
    ("value", "name"),
    [("ann", "ann"), ("  Ana María ", "Ana María"), ("o'neil.j-2@lab+x", "o'neil.j-2@lab+x"), ("x" * 64, "x" * 64),
     ("李雷", "李雷"), ("Ana Mari\u0301a", "Ana María"), (None, None), (float("nan"), None), ("", None), ("  ", None)],
)  # fmt: skip
def test_speaker_names_accepted(value: object, name: str | None) -> None:
    assert speaker_name(value) == name


@pytest.mark.parametrize("value", [42, 4.5, True, ["a"], {"a": 1}, "x" * 65, "y" * 10_000, "a\nb", "a\x00b", "a/b"])
def test_speaker_names_refused_in_one_short_line(value: object) -> None:
    with pytest.raises(DataError) as refused:
        speaker_name(value)
    message = str(refused.value)
    assert "\n" not in message and len(message) < 200
    assert "at most 64 letters, digits" in message


def test_the_store_takes_only_names_as_speaker_name_makes_them(tmp_path: Path) -> None:
    store = ProfileStore(f"sqlite:///{tmp_path / 'p.db'}")
    for name in (" ann", "a\nb", "x" * 65):
        with pytest.raises(DataError):
            store.add(MODEL, [(name, "clip", moments([0.0] * 4))])
    for model, clip in (("k" * 65, "clip"), ("", "clip"), (MODEL, "d" * 65)):
        with pytest.raises(DataError):
            store.add(model, [("ann", clip, moments([0.0] * 4))])
    assert store.speakers() == []


def test_a_broken_store_fails_without_saying_where_or_how(tmp_path: Path) -> None:
    path = tmp_path / "profiles.db"
    path.write_bytes(b"not a database, " * 100)
    store = open_profiles(str(path))
    for call in (
        lambda: store.held(MODEL, ["ann"]),
        lambda: store.add(MODEL, [("ann", "clip", moments([0.0] * 4))]),
        lambda: store.clips_of(MODEL, "ann"),
        lambda: store.speakers(),
        lambda: store.forget("ann"),
        lambda: store.export("ann"),
    ):
        with pytest.raises(ProfileStoreError) as failed:
            call()
        message = str(failed.value)
        assert "SELECT" not in message.upper() and str(tmp_path) not in message and "sqlite" not in message.lower()


def test_open_profiles_takes_a_path_a_url_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    store = open_profiles("~/deep/folder/profiles.db")
    add_clips(store, "ann", 1)
    assert (tmp_path / "deep" / "folder" / "profiles.db").is_file()  # `~` expanded, folders made
    assert open_profiles(f"sqlite:///{tmp_path / 'deep/folder/profiles.db'}").clips_of(MODEL, "ann") == 1
    assert open_profiles("none") is None
    monkeypatch.setenv("EMOTION_PROFILES", "none")
    assert open_profiles(None) is None and ProfileStore.from_environment() is None

    monkeypatch.setenv(MAX_CLIPS_VARIABLE, "5")
    assert open_profiles(str(tmp_path / "p.db")).max_clips == 5
    for variable, value in ((MAX_CLIPS_VARIABLE, "many"), (MAX_CLIPS_VARIABLE, "0")):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError):
            open_profiles(str(tmp_path / "p.db"))
    monkeypatch.delenv(MAX_CLIPS_VARIABLE)
    with pytest.raises(ConfigError, match="SQLite or PostgreSQL") as refused:
        open_profiles("mysql://user:secret@host/db")
    assert "secret" not in str(refused.value)


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A store (a plain path) holding ann (3 clips) and bob (1) of a model labelled `model.ckpt`."""
    path = tmp_path / "profiles.db"
    store = open_profiles(str(path))
    store.name_model(MODEL, "model.ckpt")
    add_clips(store, "ann", 3)
    add_clips(store, "bob", 1, seed=1)
    return path


def test_the_cli_lists_shows_and_exports(filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["list", "--profiles", str(filled)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "speaker", "clips", "last", "seen"]
    assert [line.split()[:3] for line in lines[1:]] == [["model.ckpt", "ann", "3"], ["model.ckpt", "bob", "1"]]
    main(["list", "--model", "other.ckpt", "--profiles", str(filled)])
    assert capsys.readouterr().out.strip() == "no speaker profiles of model other.ckpt"

    main(["show", "ann", "--profiles", str(filled)])
    assert MODEL in capsys.readouterr().out

    main(["export", "ann", "--profiles", str(filled)])
    exported = json.loads(capsys.readouterr().out)
    assert exported["speaker"] == "ann" and [m["label"] for m in exported["models"]] == ["model.ckpt"]
    assert len(exported["models"][0]["clips"]) == 3
    main(["export", "ann", "-o", str(tmp_path / "ann.json"), "--profiles", str(filled)])
    assert json.loads((tmp_path / "ann.json").read_text()) | {"exported": ""} == exported | {"exported": ""}


def test_the_cli_forgets_and_prunes(filled: Path, capsys: pytest.CaptureFixture) -> None:
    main(["forget", "ann", "--model", "model.ckpt", "--profiles", str(filled)])
    assert capsys.readouterr().out.strip() == "removed 3 clips of ann (model model.ckpt)"
    store = open_profiles(str(filled))
    assert store.clips_of(MODEL, "ann") == 0 and store.export("ann")["models"] == []
    with closing(sqlite3.connect(filled)) as database:  # the rows themselves are gone
        assert database.execute("SELECT count(*) FROM profile_clips WHERE speaker = 'ann'").fetchone() == (0,)

    main(["prune", "--older-than", "0", "--profiles", str(filled)])
    assert capsys.readouterr().out.strip() == "removed 1 clips of profiles unseen for 0 days"
    assert store.speakers() == []


@pytest.mark.parametrize("command", [["list"], ["show", "ann"], ["forget", "ann"], ["prune", "--older-than", "1"]])
def test_the_cli_says_a_broken_store_in_one_line(command: list[str], tmp_path: Path, capsys) -> None:
    path = tmp_path / "profiles.db"
    path.write_bytes(b"garbage " * 200)
    with pytest.raises(SystemExit) as exited:
        main([*command, "--profiles", str(path)])
    assert exited.value.code == 1
    assert capsys.readouterr().err == "error: the speaker profiles store is unavailable (file is not a database)\n"


def test_the_cli_refuses_a_bad_name_and_prune_without_an_age(filled: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv(MAX_AGE_VARIABLE, raising=False)
    for command in (["show", "a\nb"], ["prune"]):
        with pytest.raises(SystemExit) as exited:
            main([*command, "--profiles", str(filled)])
        assert exited.value.code == 1
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
