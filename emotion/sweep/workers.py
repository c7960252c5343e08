"""Several sweep workers on one study: a lock around the steps that must not interleave, and heartbeats.

Workers share nothing but the study storage and the MLflow server. Two steps must
not interleave between workers: counting the study's trials before asking for one
(else two workers both take the last trial of the budget) and creating the study's
parent MLflow run (else each creates one). Both run under `study_lock`: a PostgreSQL
advisory lock on a PostgreSQL storage (the database is the one thing every worker
shares), a file lock beside a SQLite storage, nothing on other storages.

A worker that dies mid-trial leaves the trial RUNNING. On its own host, other workers
see its process is gone. Across hosts, Optuna's heartbeats tell: with
`hydra.sweeper.heartbeat_interval` set, each worker records a heartbeat for its running
trials, and any worker marks FAIL the trials whose heartbeat is older than the grace period.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
from sqlalchemy import text

from emotion.errors import ConfigError
from emotion.tracking.logger import redacted

SQLITE_PREFIX = "sqlite:///"

log = logging.getLogger(__name__)


@contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Hold a lock that every worker of `study_name` on this storage contends for."""
    rdb = _rdb(storage)
    url = str(rdb.engine.url) if rdb is not None else ""
    if url.startswith("postgresql"):
        key = zlib.crc32(f"emotion-study:{study_name}".encode())
        with rdb.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    elif url.startswith(SQLITE_PREFIX) and url != SQLITE_PREFIX + ":memory:":
        with Path(url[len(SQLITE_PREFIX) :] + ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def _rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a cache
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def make_storage(url: str, heartbeat_interval: int | None, grace_period: int | None) -> optuna.storages.BaseStorage:
    """The study storage at `url`, recording heartbeats when `heartbeat_interval` (seconds) is set.

    A URL with a password is refused (it would reach logs and every trial's overrides: the database driver's
    variable, PGPASSWORD for PostgreSQL, carries it instead); a refused connection is one line naming the database.
    """
    if redacted(url) != url:
        raise ConfigError(
            f"hydra.sweeper.storage {redacted(url)} holds a password: give it to the database driver instead "
            "(PostgreSQL: PGPASSWORD), since the URL is logged and passed to every trial"
        )
    try:
        if heartbeat_interval is None or not url.startswith(("postgresql", "mysql", "sqlite")):
            return optuna.storages.get_storage(url)
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[-1]
        raise ConfigError(f"the study storage {url} refused the connection: {reason}") from None


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between heartbeats of `storage`, or None when it records none."""
    return storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage) else None


@contextmanager
def heartbeats(storage: optuna.storages.BaseStorage, trials: Sequence[optuna.Trial]) -> Iterator[None]:
    """Record a heartbeat for each of `trials` every interval while the block runs (if the storage keeps them)."""
    interval = heartbeat_interval(storage)
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                storage.record_heartbeat(trial._trial_id)  # Optuna keys heartbeats by trial ID
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


WORKER_ATTR = "worker"


def worker_of(trial: optuna.trial.FrozenTrial) -> tuple[str, str]:
    """(host, process ID) of the worker that took `trial`."""
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    return host, pid


def fail_interrupted_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process on this host is gone; their numbers."""
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, pid = worker_of(trial)
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial.number)
    if failed:
        log.warning("trials %s of study %s were interrupted: marked FAIL", failed, study.study_name)
    return failed


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose heartbeat is too old (heartbeats on only); their numbers."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        # experimental in Optuna, so it warns on every call (before every trial); nothing for the user to act on
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = sorted(
        t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running
    )
    if failed:
        log.warning("trials %s of study %s stopped sending heartbeats: marked FAIL", failed, study.study_name)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
