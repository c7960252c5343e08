"""What a trained model costs to serve: `cost/ms_per_clip`, measured on its whole inference path.

The cost is the median wall-clock milliseconds per clip of the path a served model runs for one request: decode,
front end and features (the encoder included), normalisation and head, through `EmotionRecognizer` restored from
the run's model file, one clip a call, the clip's speaker given. It is timed on a fixed sample of the run's corpus,
`cost.clips` clips evenly spaced in path order (the same clips for every run of that corpus), after one untimed
call (the model's first-call set-up), on one thread: the cost of a request on one core, as a server that answers
requests in parallel pays it, and a figure that other work on the machine distorts far less than several threads
waiting on each other. Training time says nothing of it: a sweep's trials read cached features.

Which runs measure: every trial of a sweep (16 clips unless `cost.clips` says otherwise), and any run given
`+cost.clips=N`. A cross-validation measures once, on its first fold's model. In a study, one inference path (the
`features` config and a network's `model.net`, not a scikit-learn head, whose share is far below the timing's
noise) is measured once per CPU, by the first trial that runs it; later trials of the same path reuse that value,
so they tie on cost and the Pareto front is not decided by timing noise. The run's params say where and how it
was measured: `cost.cpu`, `cost.avx512_bf16`, `cost.threads`, `cost.clips`, `cost.clip_seconds` (the sample's
median duration) and `cost.measured_by` (the trial that timed it, or `this run`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from emotion.config import cpu_name, native_bf16
from emotion.data.corpora import Clip
from emotion.serving.recognizer import EmotionRecognizer
from emotion.sweep.trial import SweepTrial
from emotion.tracking.names import COST_METRIC

#: Clips a sweep's trial times when its config says nothing (`cost.clips`).
TRIAL_CLIPS = 16
#: Threads the inference path is timed on.
THREADS = 1

log = logging.getLogger(__name__)


def clips_to_time(cfg: DictConfig, trial: SweepTrial | None) -> int:
    """How many clips this run times: `cost.clips` if set, else `TRIAL_CLIPS` for a sweep's trial, else none."""
    configured = (cfg.get("cost") or {}).get("clips")
    if configured is not None:
        return int(configured)
    return TRIAL_CLIPS if trial is not None else 0


def cost_sample(clips: Sequence[Clip], count: int) -> list[Clip]:
    """`count` of the corpus's original clips, evenly spaced in path order: the same for every run of a corpus."""
    ordered = sorted({clip.path: clip for clip in clips if clip.copy == 0}.values(), key=lambda clip: clip.path)
    count = min(count, len(ordered))
    return [ordered[i * len(ordered) // count] for i in range(count)]


def inference_path_key(cfg: DictConfig) -> str:
    """A digest of what decides the inference path's cost: the features' config and a network's, if any."""
    parts = {
        "features": OmegaConf.to_container(cfg.features, resolve=True),
        "net": OmegaConf.to_container(cfg.model.net, resolve=True) if cfg.model.get("net") is not None else None,
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def ms_per_clip(checkpoint: str | Path, clips: Sequence[Clip]) -> tuple[float, float]:
    """The median milliseconds per clip of the served model in `checkpoint` on `clips` (one a call, on `THREADS`
    threads), and the clips' median duration in seconds."""
    recognizer = EmotionRecognizer.from_checkpoint(checkpoint)
    seconds = [recognizer.decode(clip.path).shape[-1] / recognizer.sample_rate for clip in clips]
    timings = []
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        for clip in (clips[0], *clips):  # the first call is untimed: the model's first-call set-up
            start = time.perf_counter()
            recognizer.classify_files([clip.path], speakers=[clip.speaker])
            timings.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1000 * float(np.median(timings[1:])), float(np.median(seconds))


def measure_cost(
    cfg: DictConfig, trial: SweepTrial | None, checkpoint: str | Path, clips: Sequence[Clip]
) -> dict[str, Any]:
    """The run's cost as params (`cost.*`, where it was measured) and `COST_METRIC`; empty if it measures none.

    A sweep's trial reuses the value its study recorded for the same inference path on this CPU, or records its own.
    """
    count = clips_to_time(cfg, trial)
    if count <= 0 or not checkpoint or not clips:
        return {}
    machine = {"cost.cpu": cpu_name(), "cost.avx512_bf16": native_bf16(), "cost.threads": THREADS}
    key = f"cost:{inference_path_key(cfg)}:{hashlib.sha1(str(machine).encode()).hexdigest()[:8]}"
    known = trial.shared(key) if trial is not None else None
    if known is not None:
        return known
    sample = cost_sample(clips, count)
    milliseconds, seconds = ms_per_clip(checkpoint, sample)
    measured_by = f"trial {trial.number}" if trial is not None else "this run"
    record = machine | {"cost.clips": len(sample), "cost.clip_seconds": round(seconds, 3)}
    record |= {"cost.measured_by": measured_by, COST_METRIC: milliseconds}
    log.info("inference path costs %.1f ms per clip (median of %d clips)", milliseconds, len(sample))
    if trial is not None:
        trial.share(key, record)
    return record


def log_cost(logger: Any, record: dict[str, Any]) -> dict[str, float]:
    """Log a `measure_cost` record on the run (its params and metric); the metric, to add to the run's results."""
    if not record:
        return {}
    logger.log_hyperparams({name: value for name, value in record.items() if name != COST_METRIC})
    logger.log_metrics({COST_METRIC: record[COST_METRIC]})
    return {COST_METRIC: float(record[COST_METRIC])}
