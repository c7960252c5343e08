"""The Optuna sweeper behind `hydra/sweeper=optuna`: ask Optuna for trials, launch them as Hydra jobs, tell results.

Why our own and not hydra-optuna-sweeper: its PyPI release (1.3.0) needs optuna<3
and cannot prune, because a job only returns its final value. Here each job
reattaches to its trial through the study storage (see `emotion.sweep.trial`) and
reports every epoch's validation metric, so pruners work, also for jobs that a
launcher runs in other processes or on other machines.

The study is created with load-if-exists, so rerunning the same command resumes
it: trials its dead sweep left RUNNING are marked FAIL, and the sweep runs until
`n_trials` trials of the study have finished (complete, pruned or failed).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from emotion.errors import ConfigError
from emotion.sweep.search_space import parse_search_space
from emotion.sweep.workers import (
    WORKER_ATTR,
    fail_interrupted_trials,
    fail_stale_trials,
    heartbeat_interval,
    heartbeats,
    make_storage,
    study_lock,
    worker_of,
)
from emotion.tracking import study as study_run
from emotion.tracking.logger import check_server_access
from emotion.tracking.names import COST_METRIC

log = logging.getLogger(__name__)

#: Seconds between looks at other workers' running trials, once this worker's share of the budget is done.
WAIT_SECONDS = 5
FINISHED_OR_RUNNING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


class StudySweep:
    """One sweep over one Optuna study; `launch` runs a batch of overrides as Hydra jobs."""

    def __init__(self, sweeper: DictConfig, config: DictConfig) -> None:
        self.options = sweeper
        self.config = config
        self.objectives, self.directions = objectives_and_directions(sweeper, config.monitor)

    def run(self, arguments: list[str], launch: Any) -> list[JobReturn]:
        space, fixed = parse_search_space(self.options.params, self.options.search_space, arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        check_server_access(self.config.logger.tracking_uri)  # a refused login: one line, before any trial
        storage_url = self.options.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        storage = make_storage(storage_url, self.options.get("heartbeat_interval"), self.options.get("grace_period"))
        sampler = self._sampler(space)
        pruner = self._pruner()
        study = optuna.create_study(
            study_name=self.options.study_name or sweep_dir.name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=self.directions,
            load_if_exists=True,
        )
        logger = self.config.logger
        with study_lock(storage, study.study_name):
            self._fail_dead_trials(study)
            parent = study_run.open_study_run(
                logger.tracking_uri,
                logger.experiment_name,
                logger.artifact_location,
                study,
                study_run.settings_params(study, sampler, pruner, space),
            )
        link = {"storage": storage_url, "study_name": study.study_name, "parent_run_id": parent}
        results: list[JobReturn] = []
        while trials := self._ask(study, storage, space):
            batch = [[*fixed, *param_overrides(trial.params), *link_overrides(link, trial.number)] for trial in trials]
            with heartbeats(storage, trials):
                returns = launch(batch, trials[0].number)
            for trial, job in zip(trials, returns, strict=True):
                self._tell(study, trial, job)
            results.extend(returns)
            study_run.log_study_progress(logger.tracking_uri, parent, study, self.objectives)
            if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
                break
        self._wait_for_other_workers(study, storage)
        study_run.log_study_plots(logger.tracking_uri, parent, study, self.objectives)
        trial_runs = study_run.trial_run_ids(logger.tracking_uri, logger.experiment_name, study.study_name)
        study_run.log_pareto_front(logger.tracking_uri, parent, study, self.objectives, trial_runs)
        study_run.close_study_run(logger.tracking_uri, parent)
        report = final_report(study, self.objectives, self.directions, trial_runs)
        if instantiate(self.config.split).cross_validates:  # each trial is a cross-validation
            report = report.rsplit("\n", 1)[0] + (
                "\neach trial is a cross-validation, whose parent run holds no model: train the best params once "
                "with split=speaker and promote that run (docs/real_speech.md)"
            )
        log.info("%s", report)
        return results

    def _ask(
        self, study: optuna.Study, storage: optuna.storages.BaseStorage, space: dict[str, BaseDistribution]
    ) -> list[optuna.Trial]:
        """The next trials of the budget (none once it is used), taken under the lock other workers share."""
        with study_lock(storage, study.study_name):
            self._fail_dead_trials(study)
            remaining = self.options.n_trials - count_trials(study, FINISHED_OR_RUNNING)
            study.sampler = self._sampler(space, trials_before=len(study.trials))
            trials = [study.ask(space) for _ in range(min(self.options.n_jobs, max(remaining, 0)))]
            for trial in trials:
                trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        return trials

    def _fail_dead_trials(self, study: optuna.Study) -> None:
        """Mark FAIL, with their MLflow runs, the trials whose worker died (on this host, or stale heartbeats)."""
        failed = fail_interrupted_trials(study) + fail_stale_trials(study)
        logger = self.config.logger
        study_run.fail_orphaned_trial_runs(logger.tracking_uri, logger.experiment_name, study.study_name, failed)

    def _wait_for_other_workers(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        """Once the budget is taken, wait for other workers' running trials, failing those whose worker died.

        Only trials whose death this worker can see are waited for: those on this host, or all of them when
        heartbeats are on. A trial on another host without heartbeats is left to its own worker.
        """
        heartbeat = heartbeat_interval(storage)
        host = socket.gethostname()
        while True:
            self._fail_dead_trials(study)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            watched = [t for t in running if heartbeat or worker_of(t)[0] == host]
            if not watched:
                return
            log.info("waiting for trials %s of other workers", [t.number for t in watched])
            time.sleep(min(heartbeat or WAIT_SECONDS, WAIT_SECONDS))

    def _sampler(self, space: dict[str, BaseDistribution], trials_before: int = 0) -> optuna.samplers.BaseSampler:
        """The configured sampler, its seed offset by the trials the study already holds.

        Optuna does not store a sampler with its study: seeded alike at every start, a resumed sweep's (or a
        second worker's) sampler would draw the first trials' parameters again. Offset at each ask, every trial
        draws from its own stream, so a study stays reproducible from its seed and a resumed one goes on. Not the
        grid sampler's: its seed orders the grid, and trial N runs point N of that order, so every ask must see
        one order (offset, two asks could run one point twice).
        """
        options = self.options.sampler
        if str(options.get("_target_", "")).endswith("GridSampler"):
            return instantiate(options, search_space=grid_of(space))
        seed = {"seed": int(options.seed) + trials_before} if options.get("seed") is not None else {}
        return instantiate(options, **seed)

    def _pruner(self) -> optuna.pruners.BasePruner:
        if len(self.directions) > 1:
            if self.options.pruner and not str(self.options.pruner.get("_target_", "")).endswith("NopPruner"):
                log.info(
                    "pruning is off: Optuna prunes single-objective studies only, and this one has %d objectives",
                    len(self.directions),
                )
            return optuna.pruners.NopPruner()
        return instantiate(self.options.pruner) if self.options.pruner else optuna.pruners.NopPruner()

    def _tell(self, study: optuna.Study, trial: optuna.Trial, job: JobReturn) -> None:
        if job.status == JobStatus.COMPLETED:
            values = [float(job.return_value[name]) for name in self.objectives]
            if all(math.isfinite(v) for v in values):
                _tell(study, trial, values=values)
                return
            log.warning("trial %d returned %s: marked FAIL", trial.number, values)
        elif isinstance(job._return_value, optuna.TrialPruned):
            _tell(study, trial, state=TrialState.PRUNED)
            return
        else:
            log.warning("trial %d failed: %r", trial.number, job._return_value)
        _tell(study, trial, state=TrialState.FAIL)


def _tell(study: optuna.Study, trial: optuna.Trial, **result: Any) -> None:
    try:
        study.tell(trial, **result)
    except RuntimeError as exc:
        # GridSampler.after_trial calls study.stop() once its grid is exhausted, which Optuna allows only inside
        # study.optimize(); the trial's result is stored before that (optuna/study/_tell.py, `finally`).
        if "Study.stop" not in str(exc):
            raise


def objectives_and_directions(sweeper: DictConfig, monitor: str) -> tuple[list[str], list[str]]:
    """What each trial returns and which way each improves: `objectives` as a mapping (`{val/uar: maximize,
    cost/ms_per_clip: minimize}`), or a list beside `direction` (one direction, or a list of as many)."""
    objectives = sweeper.objectives
    if isinstance(objectives, Mapping):
        names, directions = [str(name) for name in objectives], [str(d) for d in objectives.values()]
    else:
        names = list(objectives or [monitor])  # default: what every run follows
        direction = sweeper.direction
        directions = [direction] if isinstance(direction, str) else list(direction)
    if len(names) != len(directions):
        raise ConfigError(f"hydra.sweeper.objectives {names} and direction {directions} differ in length")
    if unknown := [d for d in directions if d not in ("maximize", "minimize")]:
        raise ConfigError(f"hydra.sweeper objectives' directions must be maximize or minimize, not {unknown}")
    return names, directions


def param_overrides(params: dict[str, Any]) -> list[str]:
    """Hydra overrides that set each sampled parameter (strings quoted)."""
    return [f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}" for name, value in params.items()]


def link_overrides(link: dict[str, str], number: int) -> list[str]:
    """`+trial.*` overrides that let a job find its trial in the study storage and its parent MLflow run."""
    return [f"+trial.{key}='{value}'" for key, value in link.items()] + [f"+trial.number={number}"]


def grid_of(space: dict[str, BaseDistribution]) -> dict[str, Sequence[Any]]:
    """The grid of a search space: choices of categorical and every value of stepped int distributions."""
    grid: dict[str, Sequence[Any]] = {}
    for name, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            grid[name] = distribution.choices
        elif isinstance(distribution, IntDistribution) and not distribution.log:
            grid[name] = list(range(distribution.low, distribution.high + 1, distribution.step))
        else:
            raise ConfigError(f"the grid sampler needs choice(...) or range(...) for {name}, not {distribution}")
    return grid


def count_trials(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def summary(study: optuna.Study) -> dict[str, int]:
    return {
        state.name: count_trials(study, [state]) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }


def final_report(study: optuna.Study, objectives: list[str], directions: list[str], trial_runs: dict[int, str]) -> str:
    """What a sweep ends with: trial counts, the best trial (its value, params and MLflow run), how to promote it."""
    counts = ", ".join(f"{n} {state.lower()}" for state, n in summary(study).items())
    lines = [f"study {study.study_name}: {counts}"]
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return "\n".join([*lines, "no trial completed: nothing to promote"])
    best = study.best_trials if len(directions) > 1 else [study.best_trial]
    for trial in best:
        values = ", ".join(f"{name}={value:.4f}" for name, value in zip(objectives, trial.values, strict=True))
        params = ", ".join(
            f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
            for name, value in trial.params.items()
        )
        lines.append(f"best trial {trial.number}: {values} ({params}); MLflow run {trial_runs.get(trial.number, '?')}")
    if len(directions) > 1:
        lines.insert(1, f"{len(best)} trials on the Pareto front (the study's run: pareto_front.md, plots/):")
    mode = "max" if directions[0] == "maximize" else "min"
    budget = " --max-ms-per-clip MS" if COST_METRIC in objectives else ""
    lines.append(
        f"promote it with: emotion-promote --study {study.study_name} --metric {objectives[0]}_best --mode {mode}"
        + budget
    )
    return "\n".join(lines)
