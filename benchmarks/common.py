"""What every benchmark shares: the record it writes, the machine it ran on, timing and peak memory."""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import torch

from emotion.config import cpu_name
from emotion.data.synthetic import SyntheticCorpusConfig, generate_corpus


@dataclass
class Record:
    """One benchmark's result: ours against the peer a user would pick instead.

    `ratio` reads "how many times better ours is": peer/ours for costs (seconds, epochs,
    bytes), ours/peer for rates (samples per second).
    """

    name: str
    ours: float
    peer: float
    unit: str
    higher_is_better: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.peer if self.peer else float("inf")
        return self.peer / self.ours if self.ours else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


def machine() -> dict[str, Any]:
    """The facts that make a figure comparable: CPU, cores, threads, versions, accelerator."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "avx512_bf16": cpu_has_bf16(),
        "platform": platform.platform(),
    }


def fold_runs(client: mlflow.MlflowClient, cv_run: str) -> list[mlflow.entities.Run]:
    """The fold runs of a cross-validation's parent run, in fold order."""
    parent = client.get_run(cv_run)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{cv_run}'")
    return sorted(children, key=lambda run: int(run.data.tags["fold"]))


def cpu_has_bf16() -> bool:
    """Whether the CPU has AVX512-BF16 (training in bfloat16 is then about 2.3x faster)."""
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and " avx512_bf16" in cpuinfo.read_text()


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of `work()`, and what it returned."""
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux's VmHWM, not getrusage's ru_maxrss: a child's ru_maxrss starts at its parent's peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # other systems: an upper bound


def _call_and_report(queue: multiprocessing.Queue, work: Callable[..., Any], args: tuple) -> None:
    queue.put((work(*args), peak_rss_mb()))


def in_fresh_process(work: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Run `work(*args)` in a new process: its result and that process's peak RSS (MiB).

    A fresh process per measurement keeps one step's memory from hiding another's peak.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_call_and_report, args=(queue, work, args))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"benchmark process exited with {process.exitcode}")
    return result


def corpus(cache_dir: Path, n_speakers: int, n_sentences: int = 12) -> Path:
    """The embedded synthetic corpus at a given size (6 emotions x levels per speaker and sentence)."""
    return generate_corpus(SyntheticCorpusConfig(n_speakers=n_speakers, n_sentences=n_sentences), cache_dir)
