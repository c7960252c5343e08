"""The database beneath the speaker profiles store (`emotion.serving.profiles.ProfileStore`), reached with SQLAlchemy.

It holds the tables (`clips_table`: one row per model, speaker and clip; `models_table`: each model key's label)
with their columns' widths (`check_key`); one engine per URL and process (`new_engine`; `ready_engine` once the
tables are made, on first use): an SQLite file in WAL whose writers queue for the file's lock, or PostgreSQL
(`postgresql://user@host/db`, psycopg 3 from `emotion[team]`) whose writers queue for an advisory lock (`writing`);
the caps' deletions (`trim`, `evict`); a database failure as a `ProfileStoreError` whose message says nothing of the
server (`failures`); a clip's `Moments` as float32 bytes (`encode`, `decode`) or JSON (`jsonable`); and the times
the database keeps, in UTC without their zone (`now`, `utc`, `cutoff`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    distinct,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from emotion.data.normalize import Moments
from emotion.errors import ConfigError, DataError, EmotionError

log = logging.getLogger(__name__)

MAX_SPEAKER_LENGTH = 64
#: The longest model key and clip digest.
MAX_KEY_LENGTH = 64
MAX_LABEL_LENGTH = 256
UNAVAILABLE = "the speaker profiles store is unavailable"
#: How long an SQLite writer waits for another to finish before it fails.
BUSY_TIMEOUT_MS = 30_000
#: Execution option of a transaction that writes (SQLite: BEGIN IMMEDIATE).
_WRITE = "emotion_profiles_write"
#: The PostgreSQL advisory lock the store's writers take in turn (its key: the same in every version of the store).
_WRITERS_LOCK = int.from_bytes(hashlib.sha256(b"emotion.serving.profiles").digest()[:8], "big", signed=True)
#: Each database's INSERT, with its ON CONFLICT clauses.
INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

metadata = MetaData()
clips_table = Table(
    "profile_clips",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),  # the order clips came in
    Column("model", String(MAX_KEY_LENGTH), nullable=False),
    Column("speaker", String(MAX_SPEAKER_LENGTH), nullable=False),
    Column("clip", String(MAX_KEY_LENGTH), nullable=False),
    Column("seen", DateTime, nullable=False),  # UTC
    Column("moments", LargeBinary, nullable=False),
    UniqueConstraint("model", "speaker", "clip"),
    Index("profile_clips_recent", "model", "speaker", "id"),
)
models_table = Table(
    "profile_models",
    metadata,
    Column("model", String(MAX_KEY_LENGTH), primary_key=True),
    Column("label", String(MAX_LABEL_LENGTH), nullable=False),
)


class ProfileStoreError(EmotionError):
    """The store failed; its message says nothing of the server (no SQL, URL, host, user, path). `detail`: the
    database's own words, for the server's log or the command line of whoever runs the store, never a client."""

    def __init__(self, detail: str) -> None:
        super().__init__(UNAVAILABLE)
        self.detail = detail


def check_key(what: str, key: str) -> None:
    """DataError unless `key` (a model's key, a clip's digest) is 1 to 64 characters."""
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise DataError(f"a {what} is 1 to {MAX_KEY_LENGTH} characters, not {len(key)}")


def engine_url(url: str) -> str:
    """The URL the store connects to: psycopg 3 for `postgresql://`; an SQLite file's `~` expanded and its
    folder made. ConfigError for a URL of neither, or a folder that cannot be made."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "the speaker profiles store is a file path, or a URL such as sqlite:///FILE or postgresql://USER@HOST/DB"
        ) from None
    if parsed.get_backend_name() not in INSERTS:
        raise ConfigError(f"the speaker profiles store is SQLite or PostgreSQL, not {parsed.get_backend_name()!r}")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot make the speaker profiles store's folder {path.parent}: {exc.strerror}"
            ) from None
        parsed = parsed.set(database=str(path))
    return parsed.render_as_string(hide_password=False)


@functools.cache
def new_engine(url: str, pid: int) -> Engine:
    """One engine per URL and process (`pid`: a forked process makes its own, never using its parent's
    connections). ConfigError if its driver is not installed."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except ImportError as exc:
        raise ConfigError(f"the speaker profiles store needs {exc.name} (pip install -e '.[team]')") from None
    if engine.dialect.name == "sqlite":
        _queue_sqlite_writers(engine)
    return engine


@functools.cache
def ready_engine(url: str, pid: int) -> Engine:
    """The engine, once the tables exist (made by one writer at a time)."""
    engine = new_engine(url, pid)
    with writing(engine) as connection:
        metadata.create_all(connection)
    return engine


def _queue_sqlite_writers(engine: Engine) -> None:
    """SQLAlchemy's pysqlite recipe: the store emits its own BEGIN, IMMEDIATE for writers, so that a writer waits
    for the file's lock up front (the busy timeout) rather than failing midway; readers go on meanwhile (WAL)."""

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN of its own
        dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        dbapi_connection.execute("PRAGMA synchronous = NORMAL")  # in WAL, safe: a power cut may lose the last clips
        _use_wal(dbapi_connection)

    @event.listens_for(engine, "begin")
    def begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "BEGIN")


def _use_wal(dbapi_connection: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so). A switch that fails at once, as it does while another process writes,
    is left to a later connection: the store is as safe without WAL, its readers only wait for writers."""
    if dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        with suppress(sqlite3.OperationalError):
            dbapi_connection.execute("PRAGMA journal_mode = WAL")


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes, one at a time per store (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
    lock), so that the caps' counts and deletions see every earlier write."""
    with engine.execution_options(**{_WRITE: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_WRITERS_LOCK)))
        yield connection


def trim(connection: Connection, model: str, speaker: str, max_clips: int) -> None:
    """Delete the clips of a profile beyond its most recent `max_clips`."""
    c = clips_table.c
    mine = (c.model == model) & (c.speaker == speaker)
    newest_dropped = select(c.id).where(mine).order_by(c.id.desc()).offset(max_clips).limit(1)
    last = connection.execute(newest_dropped).scalar()
    if last is not None:
        connection.execute(delete(clips_table).where(mine, c.id <= last))


def evict(connection: Connection, model: str, max_speakers: int) -> None:
    """Delete the least recently seen speakers of `model` beyond `max_speakers`."""
    c = clips_table.c
    count = connection.execute(select(func.count(distinct(c.speaker))).where(c.model == model)).scalar_one()
    if count <= max_speakers:
        return
    least_recent = select(c.speaker).where(c.model == model).group_by(c.speaker).order_by(func.max(c.id))
    evicted = least_recent.limit(count - max_speakers)
    connection.execute(delete(clips_table).where(c.model == model, c.speaker.in_(evicted)))


@contextmanager
def failures() -> Iterator[None]:
    """A database error as a ProfileStoreError that says nothing of the server (the detail goes to the log)."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc if isinstance(exc, sqlite3.Error) else None
        detail = " ".join(str(cause).split()) if cause is not None else type(exc).__name__  # one line, no SQL
        log.warning("the speaker profiles store failed: %s", detail)
        log.debug("the speaker profiles store's error", exc_info=True)
        raise ProfileStoreError(detail) from None


def encode(moments: Moments) -> bytes:
    """One clip's moments, compactly and quick to read back: the length of a JSON header (clips, and per input
    its count and shape), the header, then each input's sums and sums of squares as float32 (enough for a clip)."""
    inputs = [[name, moments.count[name], list(moments.sum[name].shape)] for name in moments.sum]
    header = json.dumps({"clips": moments.clips, "inputs": inputs}).encode()
    tensors = (x for name in moments.sum for x in (moments.sum[name], moments.sumsq[name]))
    arrays = (x.detach().cpu().numpy().astype("<f4").tobytes() for x in tensors)
    return len(header).to_bytes(4, "little") + header + b"".join(arrays)


def decode(data: bytes) -> Moments:
    """The moments `encode` wrote, in float64 (ready to be summed)."""
    size = int.from_bytes(data[:4], "little")
    header = json.loads(data[4 : 4 + size])
    values = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=4 + size).astype(np.float64))
    count, sums, squares, start = {}, {}, {}, 0
    for name, clip_count, shape in header["inputs"]:
        length = math.prod(shape)
        sums[name] = values[start : start + length].view(shape)
        squares[name] = values[start + length : start + 2 * length].view(shape)
        count[name], start = clip_count, start + 2 * length
    return Moments(header["clips"], count, sums, squares)


def jsonable(moments: Moments) -> dict:
    """One clip's moments as JSON-serialisable lists of floats (for an export)."""
    return {
        "clips": moments.clips,
        "count": moments.count,
        "sum": {name: x.tolist() for name, x in moments.sum.items()},
        "sumsq": {name: x.tolist() for name, x in moments.sumsq.items()},
    }


def now() -> datetime:
    """The time now in UTC, without its zone (as the database keeps it)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def utc(stored: datetime) -> datetime:
    """A time the database kept, in UTC with its zone."""
    return stored.replace(tzinfo=timezone.utc)


def cutoff(days: float | None) -> datetime | None:
    """The time before which a profile last seen is `days` old (None: no age limit)."""
    return None if days is None else now() - timedelta(days=min(days, 36_500))
