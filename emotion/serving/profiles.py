"""Speaker profiles: what a speaker-adaptive model has heard of each speaker, kept across requests and calls.

The store is an append-only log of clips: one row per (model, speaker, clip) holding that clip's own `Moments`
(float32), keyed by the model's identity (a digest of its parameters and recipe), the speaker's name (`speaker_name`)
and the clip's digest (`clip_digest`), so a clip sent twice counts once and writers at the same time lose nothing. A
profile is the sum of the speaker's most recent `max_clips` clips (`held`); a model keeps at most `max_speakers`
speakers (a new one beyond evicts the least recently seen), and a profile unseen for `max_age_days` is never read
again and is dropped by `prune`. Which clips may join is the caller's policy: the store only stores.

`open_profiles` opens the store a user names: SQLite (by default `DEFAULT_PROFILES`) or PostgreSQL, its database
reached through `emotion.serving.profile_db`. `emotion-profiles` lists, exports and forgets speakers.
"""

from __future__ import annotations

import hashlib
import math
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.engine import Engine

from emotion.config import DEFAULT_PROFILES, PROFILES_VARIABLE
from emotion.data.normalize import Moments
from emotion.errors import ConfigError, DataError
from emotion.serving.profile_db import (
    INSERTS,
    MAX_LABEL_LENGTH,
    MAX_SPEAKER_LENGTH,
    check_key,
    clips_table,
    cutoff,
    decode,
    encode,
    engine_url,
    evict,
    failures,
    jsonable,
    models_table,
    new_engine,
    now,
    ready_engine,
    trim,
    utc,
    writing,
)

#: What a speaker's name may hold besides letters and digits.
NAME_PUNCTUATION = " ._-'@+"
NAME_RULE = f"a speaker's name is at most {MAX_SPEAKER_LENGTH} letters, digits, spaces and . _ - ' @ +"
#: Variables that override the caps of the store `open_profiles` opens.
MAX_CLIPS_VARIABLE = "EMOTION_PROFILES_MAX_CLIPS"
MAX_SPEAKERS_VARIABLE = "EMOTION_PROFILES_MAX_SPEAKERS"
MAX_AGE_VARIABLE = "EMOTION_PROFILES_MAX_AGE_DAYS"


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
        self.url = engine_url(url)
        self.max_clips, self.max_speakers, self.max_age_days = max_clips, max_speakers, max_age_days
        new_engine(self.url, os.getpid())  # a driver not installed is a ConfigError now, not at the first request

    @classmethod
    def from_environment(cls) -> ProfileStore | None:
        """The store `EMOTION_PROFILES` names (`none`: no store), by default `DEFAULT_PROFILES`."""
        return open_profiles(None)

    def name_model(self, model: str, label: str) -> None:
        """Remember a human label for a model's key (a file name, `models:/emotion@champion`, a run id)."""
        check_key("model's key", model)
        label = label if len(label) <= MAX_LABEL_LENGTH else "…" + label[1 - MAX_LABEL_LENGTH :]
        with failures():
            engine = self._engine()
            with engine.connect() as connection:
                held = connection.execute(select(models_table.c.label).where(models_table.c.model == model)).scalar()
            if held == label:
                return
            upsert = INSERTS[engine.dialect.name](models_table).values(model=model, label=label)
            upsert = upsert.on_conflict_do_update(index_elements=[models_table.c.model], set_={"label": label})
            with writing(engine) as connection:
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
        with failures(), self._engine().connect() as connection:
            rows = connection.execute(query).all()
        grouped: dict[str, list] = {}
        for row in rows:
            grouped.setdefault(row.speaker, []).append(row)
        return {
            speaker: [(row.clip, decode(row.moments)) for row in clips]
            for speaker, clips in grouped.items()
            if self._fresh(clips[-1].seen)
        }

    def add(self, model: str, clips: Sequence[tuple[str, str, Moments]]) -> int:
        """Add (speaker, clip digest, moments) rows; a clip held already for that model and speaker is not added
        again. Keeps the caps; returns how many clips were new."""
        check_key("model's key", model)
        for speaker, clip, _ in clips:
            _check_speaker(speaker)
            check_key("clip's digest", clip)
        seen = now()
        rows = [
            {"model": model, "speaker": speaker, "clip": clip, "seen": seen, "moments": encode(m)}
            for speaker, clip, m in clips
        ]
        if not rows:
            return 0
        c = clips_table.c
        names = {row["speaker"] for row in rows}
        with failures(), writing(self._engine()) as connection:
            known = connection.execute(select(c.speaker).distinct().where(c.model == model, c.speaker.in_(names)))
            newcomers = names - set(known.scalars())
            insert = INSERTS[connection.dialect.name](clips_table).on_conflict_do_nothing().returning(c.id)
            added = {name: 0 for name in names}
            for row in rows:
                added[row["speaker"]] += connection.execute(insert, row).first() is not None
            for name in (name for name, count in added.items() if count):
                trim(connection, model, name, self.max_clips)
            if newcomers:
                evict(connection, model, self.max_speakers)
        return sum(added.values())

    def clips_of(self, model: str, speaker: str) -> int:
        """How many clips of `speaker` the profile of `model` holds (0: none, or unseen for `max_age_days`)."""
        c = clips_table.c
        query = select(func.count(), func.max(c.seen)).where(c.model == model, c.speaker == speaker)
        with failures(), self._engine().connect() as connection:
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
        with failures(), self._engine().connect() as connection:
            rows = connection.execute(query).all()
        return [
            SpeakerEntry(key, label, speaker, min(count, self.max_clips), utc(first), utc(last))
            for key, label, speaker, count, first, last in rows
        ]

    def forget(self, speaker: str, model: str | None = None) -> int:
        """Remove every clip of `speaker` (of one model's key, or of all); how many went."""
        where = clips_table.c.speaker == speaker
        if model is not None:
            where &= clips_table.c.model == model
        with failures(), writing(self._engine()) as connection:
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
        stale = select(c.model, c.speaker).group_by(c.model, c.speaker).having(func.max(c.seen) < cutoff(days))
        with failures(), writing(self._engine()) as connection:
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
        with failures(), self._engine().connect() as connection:
            rows = connection.execute(query).all()
        models: dict[str, dict] = {}
        for key, label, clip, seen, blob in rows:
            held = models.setdefault(key, {"model": key, "label": label, "clips": []})
            held["clips"].append({"clip": clip, "seen": utc(seen).isoformat(), "moments": jsonable(decode(blob))})
        return {"speaker": speaker, "exported": utc(now()).isoformat(), "models": list(models.values())}

    def _engine(self) -> Engine:
        return ready_engine(self.url, os.getpid())

    def _fresh(self, last_seen: datetime) -> bool:
        """Whether a profile last seen then is still read (seen within `max_age_days`)."""
        oldest = cutoff(self.max_age_days)
        return oldest is None or last_seen >= oldest


def _check_speaker(speaker: str) -> None:
    """DataError unless `speaker` is a name as `speaker_name` returns it."""
    if speaker_name(speaker) != speaker:
        raise DataError(f"speaker {str(speaker)[:20]!r}: give the store the name that speaker_name returns")
