"""Speaker profiles: what a speaker-adaptive model has heard of each speaker, kept across requests and calls.

A profile is the `Moments` (clip count, sums, sums of squares) of every clip of one speaker that one model has
classified, keyed by the model's version (a digest of its file) and the speaker's name; each clip counts once
(by a digest of its samples), however often it is sent. The served model and `emotion-predict` add each
request's clips to their speakers' profiles and normalise them by the whole profile, so one clip per request is
enough once a speaker has spoken a few times.

The store is a database reached with SQLAlchemy: by default an SQLite file that is created on first use
(`EMOTION_PROFILES` unset: `DEFAULT_PROFILES`), or any URL SQLAlchemy takes, PostgreSQL for a team's services
(`postgresql://user@host/db`, with psycopg 3 from `emotion[team]`; the same tables).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from emotion.config import DEFAULT_PROFILES, PROFILES_VARIABLE
from emotion.data.normalize import Moments
from emotion.errors import ConfigError

metadata = MetaData()
profiles_table = Table(
    "speaker_profiles",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("speaker", String(256), primary_key=True),
    Column("clips", Integer, nullable=False),
    Column("moments", LargeBinary, nullable=False),
)
clips_table = Table(
    "speaker_clips",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("speaker", String(256), primary_key=True),
    Column("clip", String(64), primary_key=True),
)


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


class ProfileStore:
    """Speaker profiles in a database (SQLite or PostgreSQL through SQLAlchemy), created on first use."""

    def __init__(self, url: str) -> None:
        if url.startswith("postgresql://"):  # the driver `emotion[team]` installs (psycopg 3), as Optuna's URLs
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(url)
        except Exception as exc:  # an unknown dialect, a driver not installed: one line
            raise ConfigError(f"cannot open the speaker profiles store {url}: {exc}") from None
        metadata.create_all(self.engine)
        self.url = url

    @classmethod
    def from_environment(cls) -> ProfileStore | None:
        """The store `EMOTION_PROFILES` names (`none`: no store), by default `DEFAULT_PROFILES`."""
        url = os.environ.get(PROFILES_VARIABLE) or f"sqlite:///{DEFAULT_PROFILES}"
        return None if url == "none" else cls(url)

    def profiles(
        self,
        model: str,
        speakers: Sequence[str | None],
        clips: Sequence[str],
        moments: Sequence[Moments],
        update: bool = True,
    ) -> dict[str, Moments]:
        """Each named speaker's profile with these clips in it (`clips`: their digests, `moments`: each clip's).

        A clip the profile already holds is not counted again. With `update`, the clips stay in the profile for
        later requests; without, the profile is read and left as it was.
        """
        grouped: dict[str, dict[str, Moments]] = {}
        for speaker, clip, clip_moments in zip(speakers, clips, moments, strict=True):
            if speaker is not None:
                grouped.setdefault(speaker, {})[clip] = clip_moments
        try:
            return self._profiles(model, grouped, update)
        except IntegrityError:  # another request added the same speaker's first clip meanwhile: read it again
            return self._profiles(model, grouped, update)

    def _profiles(self, model: str, grouped: Mapping[str, Mapping[str, Moments]], update: bool) -> dict[str, Moments]:
        result = {}
        with self.engine.begin() as connection:
            for speaker, new in grouped.items():
                where = (profiles_table.c.model == model) & (profiles_table.c.speaker == speaker)
                row = connection.execute(select(profiles_table.c.moments).where(where).with_for_update()).first()
                held = set(
                    connection.execute(
                        select(clips_table.c.clip).where(
                            (clips_table.c.model == model)
                            & (clips_table.c.speaker == speaker)
                            & clips_table.c.clip.in_(list(new))
                        )
                    ).scalars()
                )
                unseen = {clip: m for clip, m in new.items() if clip not in held}
                profile = Moments.from_bytes(row[0]) if row is not None else None
                for clip_moments in unseen.values():
                    profile = clip_moments if profile is None else profile + clip_moments
                assert profile is not None
                result[speaker] = profile
                if not update or not unseen:
                    continue
                values = {"clips": profile.clips, "moments": profile.to_bytes()}
                if row is None:
                    connection.execute(profiles_table.insert().values(model=model, speaker=speaker, **values))
                else:
                    connection.execute(profiles_table.update().where(where).values(**values))
                connection.execute(
                    clips_table.insert(), [{"model": model, "speaker": speaker, "clip": clip} for clip in unseen]
                )
        return result

    def clips_of(self, model: str, speaker: str) -> int:
        """How many clips of `speaker` the profile of `model` holds (0 when it has none)."""
        with self.engine.connect() as connection:
            where = (profiles_table.c.model == model) & (profiles_table.c.speaker == speaker)
            found = connection.execute(select(profiles_table.c.clips).where(where)).first()
        return int(found[0]) if found else 0


def clip_moments(inputs: Mapping[str, torch.Tensor]) -> list[Moments]:
    """Each clip's own moments (the rows of a batch of clips' inputs, one clip a row)."""
    count = len(next(iter(inputs.values())))
    return [Moments.of(inputs, [row]) for row in range(count)]
