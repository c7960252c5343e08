"""Speaker profiles: what a speaker-adaptive model has heard of each speaker, kept across requests and calls.

The store is an append-only log of clips: one row per (model, speaker, clip) holding that clip's own `Moments`
(float32), keyed by the model's version (a digest of its file), the speaker's name (`speaker_name`) and a digest
of the clip's samples, so a clip sent twice counts once and writers at the same time lose nothing. A profile is
the sum of the speaker's most recent `max_clips` clips (`held`); a model keeps at most `max_speakers` speakers (a
new one beyond evicts the least recently seen), and a profile unseen for `max_age_days` is never read again and
is dropped by `prune`. Which clips may join is the caller's policy: the store only stores.

The store is a database reached with SQLAlchemy: an SQLite file (by default `DEFAULT_PROFILES`, made on first
use; WAL, writers queue for the file's lock), or PostgreSQL for a team's services (`postgresql://user@host/db`,
psycopg 3 from `emotion[team]`; writers queue for an advisory lock). `emotion-profiles` lists, exports and
forgets speakers. A database failure is a `ProfileStoreError` whose message says nothing of the server.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
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
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from emotion.config import DEFAULT_PROFILES, PROFILES_VARIABLE
from emotion.data.normalize import Moments
from emotion.errors import ConfigError, DataError, EmotionError

log = logging.getLogger(__name__)

MAX_SPEAKER_LENGTH = 64
#: The longest model key and clip digest.
MAX_KEY_LENGTH = 64
MAX_LABEL_LENGTH = 256
#: What a speaker's name may hold besides letters and digits.
NAME_PUNCTUATION = " ._-'@+"
NAME_RULE = f"a speaker's name is at most {MAX_SPEAKER_LENGTH} letters, digits, spaces and . _ - ' @ +"
#: Variables that override the caps of the store `open_profiles` opens.
MAX_CLIPS_VARIABLE = "EMOTION_PROFILES_MAX_CLIPS"
MAX_SPEAKERS_VARIABLE = "EMOTION_PROFILES_MAX_SPEAKERS"
MAX_AGE_VARIABLE = "EMOTION_PROFILES_MAX_AGE_DAYS"
UNAVAILABLE = "the speaker profiles store is unavailable"
#: How long an SQLite writer waits for another to finish before it fails.
BUSY_TIMEOUT_MS = 30_000
#: Execution option of a transaction that writes (SQLite: BEGIN IMMEDIATE).
_WRITE = "emotion_profiles_write"
#: The PostgreSQL advisory lock the store's writers take in turn.
_WRITERS_LOCK = int.from_bytes(hashlib.sha256(b"emotion.serving.profiles").digest()[:8], "big", signed=True)
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

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


@dataclass
class SpeakerEntry:
    """One speaker's profile for one model (a row of `ProfileStore.speakers`); times in UTC."""

    model: str
    label: str
    speaker: str
    clips: int
    first_seen: datetime
    last_seen: datetime


def speaker_name(value: object) -> str | None:
    """The speaker a value names (None: none), stripped and NFC-normalised; DataError if it is not a name."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, str):
        raise DataError(f"a speaker's name must be text, not {type(value).__name__} ({NAME_RULE})")
    name = unicodedata.normalize("NFC", str(value).strip())
    if not name:
        return None
    if len(name) > MAX_SPEAKER_LENGTH:
        raise DataError(f"a speaker's name of {len(name)} characters is too long ({NAME_RULE})")
    refused = next((char for char in name if not (char.isalnum() or char in NAME_PUNCTUATION)), None)
    if refused is not None:
        raise DataError(f"speaker {name[:20]!r} holds {refused!r} ({NAME_RULE})")
    return name


def clip_digest(wave: torch.Tensor) -> str:
    """The identity of a clip: a digest of its samples (the same audio sent twice counts once)."""
    return hashlib.sha256(wave.detach().float().contiguous().numpy().tobytes()).hexdigest()[:32]


def model_version(path: str | Path) -> str:
    """The key of a trained model's profiles: a digest of its file (another model, other profiles)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def clip_moments(inputs: Mapping[str, torch.Tensor]) -> list[Moments]:
    """Each clip's own moments (the rows of a batch of clips' inputs, one clip a row)."""
    count = len(next(iter(inputs.values())))
    return [Moments.of(inputs, [row]) for row in range(count)]


def open_profiles(location: str | None) -> ProfileStore | None:
    """The store a user names: `none` (no store), a URL (sqlite:///FILE, postgresql://...) or a file path (an
    SQLite file there); without one, `$EMOTION_PROFILES`, else `DEFAULT_PROFILES`. Its caps are the defaults
    unless EMOTION_PROFILES_MAX_CLIPS, _MAX_SPEAKERS or _MAX_AGE_DAYS set them. ConfigError if it cannot be opened."""
    location = location or os.environ.get(PROFILES_VARIABLE) or str(DEFAULT_PROFILES)
    if location.strip() == "none":
        return None
    url = location if "://" in location else f"sqlite:///{Path(location).expanduser().absolute()}"
    return ProfileStore(url, **_environment_caps())


def _environment_caps() -> dict[str, float]:
    """The caps the environment sets; ConfigError for a value that is not a number."""
    caps: dict[str, float] = {}
    for name, variable, kind in (
        ("max_clips", MAX_CLIPS_VARIABLE, int),
        ("max_speakers", MAX_SPEAKERS_VARIABLE, int),
        ("max_age_days", MAX_AGE_VARIABLE, float),
    ):
        text = os.environ.get(variable, "").strip()
        if not text:
            continue
        try:
            caps[name] = kind(text)
        except ValueError:
            raise ConfigError(
                f"{variable}={text[:20]!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
    return caps


class ProfileStore:
    """Speaker profiles in a database (SQLite or PostgreSQL through SQLAlchemy), its tables made on first use."""

    def __init__(
        self, url: str, max_clips: int = 200, max_speakers: int = 10_000, max_age_days: float | None = None
    ) -> None:
        if max_clips < 1 or max_speakers < 1:
            raise ConfigError(
                f"speaker profiles keep 1 clip and 1 speaker at least, not max_clips={max_clips}, "
                f"max_speakers={max_speakers} ({MAX_CLIPS_VARIABLE}, {MAX_SPEAKERS_VARIABLE})"
            )
        if max_age_days is not None and not 0 < max_age_days < math.inf:
            raise ConfigError(f"max_age_days={max_age_days}: a positive number of days ({MAX_AGE_VARIABLE})")
        self.url = _engine_url(url)
        self.max_clips, self.max_speakers, self.max_age_days = max_clips, max_speakers, max_age_days
        _new_engine(self.url, os.getpid())  # a driver not installed is a ConfigError now, not at the first request

    @classmethod
    def from_environment(cls) -> ProfileStore | None:
        """The store `EMOTION_PROFILES` names (`none`: no store), by default `DEFAULT_PROFILES`."""
        return open_profiles(None)

    def name_model(self, model: str, label: str) -> None:
        """Remember a human label for a model's key (a file name, `models:/emotion@champion`, a run id)."""
        _check_key("model's key", model)
        label = label if len(label) <= MAX_LABEL_LENGTH else "…" + label[1 - MAX_LABEL_LENGTH :]
        with _failures():
            engine = self._engine()
            with engine.connect() as connection:
                held = connection.execute(select(models_table.c.label).where(models_table.c.model == model)).scalar()
            if held == label:
                return
            upsert = _INSERTS[engine.dialect.name](models_table).values(model=model, label=label)
            upsert = upsert.on_conflict_do_update(index_elements=[models_table.c.model], set_={"label": label})
            with _writing(engine) as connection:
                connection.execute(upsert)

    def held(self, model: str, speakers: Iterable[str]) -> dict[str, list[tuple[str, Moments]]]:
        """Each named speaker's most recent `max_clips` clips (digest, moments), oldest first; a speaker with
        none, or unseen for `max_age_days`, is absent."""
        names = sorted(set(speakers))
        if not names:
            return {}
        c = clips_table.c
        newest_first = func.row_number().over(partition_by=c.speaker, order_by=c.id.desc()).label("rank")
        ranked = select(c.speaker, c.clip, c.seen, c.moments, newest_first)
        ranked = ranked.where(c.model == model, c.speaker.in_(names)).subquery()
        query = select(ranked).where(ranked.c.rank <= self.max_clips).order_by(ranked.c.speaker, ranked.c.rank.desc())
        with _failures(), self._engine().connect() as connection:
            rows = connection.execute(query).all()
        grouped: dict[str, list] = {}
        for row in rows:
            grouped.setdefault(row.speaker, []).append(row)
        return {
            speaker: [(row.clip, _decode(row.moments)) for row in clips]
            for speaker, clips in grouped.items()
            if self._fresh(clips[-1].seen)
        }

    def add(self, model: str, clips: Sequence[tuple[str, str, Moments]]) -> int:
        """Add (speaker, clip digest, moments) rows; a clip held already for that model and speaker is not added
        again. Keeps the caps; returns how many clips were new."""
        _check_key("model's key", model)
        for speaker, clip, _ in clips:
            _check_speaker(speaker)
            _check_key("clip's digest", clip)
        now = _now()
        rows = [
            {"model": model, "speaker": speaker, "clip": clip, "seen": now, "moments": _encode(m)}
            for speaker, clip, m in clips
        ]
        if not rows:
            return 0
        c = clips_table.c
        names = {row["speaker"] for row in rows}
        with _failures(), _writing(self._engine()) as connection:
            known = connection.execute(select(c.speaker).distinct().where(c.model == model, c.speaker.in_(names)))
            newcomers = names - set(known.scalars())
            insert = _INSERTS[connection.dialect.name](clips_table).on_conflict_do_nothing().returning(c.id)
            added = {name: 0 for name in names}
            for row in rows:
                added[row["speaker"]] += connection.execute(insert, row).first() is not None
            for name in (name for name, count in added.items() if count):
                self._trim(connection, model, name)
            if newcomers:
                self._evict(connection, model)
        return sum(added.values())

    def clips_of(self, model: str, speaker: str) -> int:
        """How many clips of `speaker` the profile of `model` holds (0: none, or unseen for `max_age_days`)."""
        c = clips_table.c
        query = select(func.count(), func.max(c.seen)).where(c.model == model, c.speaker == speaker)
        with _failures(), self._engine().connect() as connection:
            count, last_seen = connection.execute(query).one()
        return min(count, self.max_clips) if count and self._fresh(last_seen) else 0

    def speakers(self, model: str | None = None) -> list[SpeakerEntry]:
        """Every profile held (of one model's key, or of all), by model and speaker."""
        c, m = clips_table.c, models_table.c
        query = (
            select(c.model, func.coalesce(m.label, ""), c.speaker, func.count(), func.min(c.seen), func.max(c.seen))
            .join_from(clips_table, models_table, c.model == m.model, isouter=True)
            .group_by(c.model, m.label, c.speaker)
            .order_by(c.model, c.speaker)
        )
        if model is not None:
            query = query.where(c.model == model)
        with _failures(), self._engine().connect() as connection:
            rows = connection.execute(query).all()
        return [
            SpeakerEntry(key, label, speaker, min(count, self.max_clips), _utc(first), _utc(last))
            for key, label, speaker, count, first, last in rows
        ]

    def forget(self, speaker: str, model: str | None = None) -> int:
        """Remove every clip of `speaker` (of one model's key, or of all); how many went."""
        where = clips_table.c.speaker == speaker
        if model is not None:
            where &= clips_table.c.model == model
        with _failures(), _writing(self._engine()) as connection:
            return connection.execute(delete(clips_table).where(where)).rowcount

    def prune(self, older_than_days: float | None = None) -> int:
        """Drop the profiles unseen for `older_than_days` (default: `max_age_days`; neither: none); how many
        clips went."""
        days = self.max_age_days if older_than_days is None else older_than_days
        if days is None:
            return 0
        if not days >= 0:
            raise ConfigError(f"prune profiles older than {days} days: a number of days, 0 or more")
        c = clips_table.c
        stale = select(c.model, c.speaker).group_by(c.model, c.speaker).having(func.max(c.seen) < _cutoff(days))
        with _failures(), _writing(self._engine()) as connection:
            return connection.execute(delete(clips_table).where(tuple_(c.model, c.speaker).in_(stale))).rowcount

    def export(self, speaker: str) -> dict:
        """Everything held of `speaker`, JSON-serialisable: per model (key and label) each clip's digest, time
        (UTC, ISO 8601) and moments (lists of floats)."""
        c, m = clips_table.c, models_table.c
        query = (
            select(c.model, func.coalesce(m.label, ""), c.clip, c.seen, c.moments)
            .join_from(clips_table, models_table, c.model == m.model, isouter=True)
            .where(c.speaker == speaker)
            .order_by(c.model, c.id)
        )
        with _failures(), self._engine().connect() as connection:
            rows = connection.execute(query).all()
        models: dict[str, dict] = {}
        for key, label, clip, seen, blob in rows:
            held = models.setdefault(key, {"model": key, "label": label, "clips": []})
            held["clips"].append({"clip": clip, "seen": _utc(seen).isoformat(), "moments": _jsonable(_decode(blob))})
        return {"speaker": speaker, "exported": _utc(_now()).isoformat(), "models": list(models.values())}

    def _engine(self) -> Engine:
        return _ready_engine(self.url, os.getpid())

    def _fresh(self, last_seen: datetime) -> bool:
        """Whether a profile last seen then is still read (seen within `max_age_days`)."""
        cutoff = _cutoff(self.max_age_days)
        return cutoff is None or last_seen >= cutoff

    def _trim(self, connection: Connection, model: str, speaker: str) -> None:
        """Delete the clips of a profile beyond its most recent `max_clips`."""
        c = clips_table.c
        mine = (c.model == model) & (c.speaker == speaker)
        newest_dropped = select(c.id).where(mine).order_by(c.id.desc()).offset(self.max_clips).limit(1)
        last = connection.execute(newest_dropped).scalar()
        if last is not None:
            connection.execute(delete(clips_table).where(mine, c.id <= last))

    def _evict(self, connection: Connection, model: str) -> None:
        """Delete the least recently seen speakers of `model` beyond `max_speakers`."""
        c = clips_table.c
        count = connection.execute(select(func.count(distinct(c.speaker))).where(c.model == model)).scalar_one()
        if count <= self.max_speakers:
            return
        least_recent = select(c.speaker).where(c.model == model).group_by(c.speaker).order_by(func.max(c.id))
        evicted = least_recent.limit(count - self.max_speakers)
        connection.execute(delete(clips_table).where(c.model == model, c.speaker.in_(evicted)))


def _engine_url(url: str) -> str:
    """The URL the store connects to: psycopg 3 for `postgresql://`; an SQLite file's `~` expanded and its
    folder made. ConfigError for a URL of neither, or a folder that cannot be made."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "the speaker profiles store is a file path, or a URL such as sqlite:///FILE or postgresql://USER@HOST/DB"
        ) from None
    if parsed.get_backend_name() not in _INSERTS:
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
def _new_engine(url: str, pid: int) -> Engine:
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
def _ready_engine(url: str, pid: int) -> Engine:
    """The engine, once the tables exist (made by one writer at a time)."""
    engine = _new_engine(url, pid)
    with _writing(engine) as connection:
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
def _writing(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes, one at a time per store (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
    lock), so that the caps' counts and deletions see every earlier write."""
    with engine.execution_options(**{_WRITE: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_WRITERS_LOCK)))
        yield connection


@contextmanager
def _failures() -> Iterator[None]:
    """A database error as a ProfileStoreError that says nothing of the server (the detail goes to the log)."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc if isinstance(exc, sqlite3.Error) else None
        detail = " ".join(str(cause).split()) if cause is not None else type(exc).__name__  # one line, no SQL
        log.warning("the speaker profiles store failed: %s", detail)
        log.debug("the speaker profiles store's error", exc_info=True)
        raise ProfileStoreError(detail) from None


def _check_key(what: str, key: str) -> None:
    """DataError unless `key` (a model's key, a clip's digest) is 1 to 64 characters."""
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise DataError(f"a {what} is 1 to {MAX_KEY_LENGTH} characters, not {len(key)}")


def _check_speaker(speaker: str) -> None:
    """DataError unless `speaker` is a name as `speaker_name` returns it."""
    if speaker_name(speaker) != speaker:
        raise DataError(f"speaker {str(speaker)[:20]!r}: give the store the name that speaker_name returns")


def _encode(moments: Moments) -> bytes:
    """One clip's moments, compactly and quick to read back: the length of a JSON header (clips, and per input
    its count and shape), the header, then each input's sums and sums of squares as float32 (enough for a clip)."""
    inputs = [[name, moments.count[name], list(moments.sum[name].shape)] for name in moments.sum]
    header = json.dumps({"clips": moments.clips, "inputs": inputs}).encode()
    tensors = (x for name in moments.sum for x in (moments.sum[name], moments.sumsq[name]))
    arrays = (x.detach().cpu().numpy().astype("<f4").tobytes() for x in tensors)
    return len(header).to_bytes(4, "little") + header + b"".join(arrays)


def _decode(data: bytes) -> Moments:
    """The moments `_encode` wrote, in float64 (ready to be summed)."""
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


def _jsonable(moments: Moments) -> dict:
    return {
        "clips": moments.clips,
        "count": moments.count,
        "sum": {name: x.tolist() for name, x in moments.sum.items()},
        "sumsq": {name: x.tolist() for name, x in moments.sumsq.items()},
    }


def _now() -> datetime:
    """The time now in UTC, without its zone (as the database keeps it)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _utc(stored: datetime) -> datetime:
    return stored.replace(tzinfo=timezone.utc)


def _cutoff(days: float | None) -> datetime | None:
    """The time before which a profile last seen is `days` old (None: no age limit)."""
    return None if days is None else _now() - timedelta(days=min(days, 36_500))
