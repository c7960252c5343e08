"""A served model with a pretrained encoder: latency per request, and a bounded load test on loopback.

The benchmark makes its own model as a user would: `emotion-train experiment=whisper_base debug=tiny` (the
head's quality does not change the cost), `emotion-promote --with-upstream` (the encoder travels with the
model), then `mlflow models serve` (one uvicorn worker) on 127.0.0.1. Every request carries one clip of
`--seconds-of-audio` (cut from a real recording) as base64 bytes, as README step 7 sends it.

- latency: `--requests` requests one after another (after 3 warm-up requests): p50 and p95;
- load: `--clients` threads, each sending its next request as soon as the last is answered, for
  `--duration` seconds: requests per second, p50 and p99 latency, errors (any answer but HTTP 200, or none),
  and the peak resident memory of the server's process tree;
- batching: for each of `--clips-per-request` (1, 8, 32), `--requests` // 4 requests one after another, each
  carrying that many copies of the clip (the served model encodes a request's clips in batches of similar
  length): p50 latency, milliseconds per clip and requests per second.

`--precision` is the model's `features.precision` (fp32, bf16 or auto), recorded in its recipe and served.

python -m benchmarks.serving --encoder ../shared/models/whisper-base --clip ../shared/data/savee/DC_a01.wav
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.common import machine
from emotion.ops.team import wait_until_answering

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clip_of(path: Path, seconds: float, folder: Path) -> bytes:
    """The first `seconds` of a recording (looped if shorter), as WAV bytes."""
    samples, rate = sf.read(path, dtype="float32")
    wanted = int(seconds * rate)
    samples = np.tile(samples, -(-wanted // len(samples)))[:wanted]
    out = folder / "clip.wav"
    sf.write(out, samples, rate)
    return out.read_bytes()


def make_model(encoder: str, whisper_input: str, precision: str, folder: Path) -> str:
    """Train a quick whisper_base model and promote it with its encoder; returns the store's URI."""
    store = f"sqlite:///{folder / 'mlruns.db'}"
    env = {**os.environ, "EMOTION_CACHE_DIR": str(folder / "cache")}
    encoder = str(Path(encoder).resolve()) if Path(encoder).exists() else encoder  # training runs in `folder`
    train = [BIN / "emotion-train", "experiment=whisper_base", f"features.encoder={encoder}", "debug=tiny",
             f"features.whisper_input={whisper_input}", f"features.precision={precision}",
             f"logger.tracking_uri={store}", "+trainer.enable_progress_bar=false"]  # fmt: skip
    subprocess.run(train, cwd=folder, env=env, check=True, capture_output=True)
    promote = [BIN / "emotion-promote", "--tracking-uri", store, "--with-upstream"]
    print(subprocess.run(promote, cwd=folder, env=env, check=True, capture_output=True, text=True).stdout.strip())
    return store


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (from /proc)."""
    total, children = 0, {pid}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) in children or int(entry.name) == pid:
                children.add(int(entry.name))
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


class PeakMemory(threading.Thread):
    """Polls the server's resident memory every 0.2 s; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.2)


def request(url: str, body: bytes) -> tuple[float, bool]:
    """One request's latency (seconds) and whether it was answered with HTTP 200."""
    start = time.perf_counter()
    try:
        post = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=120) as answer:
            answer.read()
            ok = answer.status == 200
    except (urllib.error.URLError, OSError):
        ok = False
    return time.perf_counter() - start, ok


def load_test(url: str, body: bytes, clients: int, duration: float) -> tuple[list[float], int]:
    """`clients` threads posting back to back for `duration` seconds: every latency, and the errors."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def client() -> None:
        while time.perf_counter() < deadline:
            seconds, ok = request(url, body)
            with lock:
                latencies.append(seconds)
                errors[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def serve_and_measure(store: str, clip: bytes, args: argparse.Namespace, folder: Path) -> dict:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    serve = [BIN / "mlflow", "models", "serve", "-m", "models:/emotion@champion", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    log = (folder / "serve.log").open("w")
    server = subprocess.Popen(serve, env=env, cwd=folder, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/ping", server, folder / "serve.log")
        url = f"http://127.0.0.1:{port}/invocations"
        body = request_body(clip, 1)
        idle = tree_rss(server.pid)
        for _ in range(3):
            request(url, body)
        sequential = [request(url, body) for _ in range(args.requests)]
        memory = PeakMemory(server.pid)
        memory.start()
        start = time.perf_counter()
        latencies, errors = load_test(url, body, args.clients, args.duration)
        elapsed = time.perf_counter() - start
        memory.running = False
        memory.join()
        batching = [batched_requests(url, clip, count, max(3, args.requests // 4)) for count in args.clips_per_request]
    finally:
        with contextlib.suppress(ProcessLookupError):  # a server that failed to start is gone already
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return {
        "latency_p50_ms": round(percentile([s for s, _ in sequential], 50), 1),
        "latency_p95_ms": round(percentile([s for s, _ in sequential], 95), 1),
        "sequential_errors": sum(not ok for _, ok in sequential),
        "load_clients": args.clients,
        "load_seconds": round(elapsed, 1),
        "load_requests": len(latencies),
        "load_throughput_rps": round(len(latencies) / elapsed, 2),
        "load_p50_ms": round(percentile(latencies, 50), 1),
        "load_p99_ms": round(percentile(latencies, 99), 1),
        "load_errors": errors,
        "server_rss_idle_mb": round(idle / 1e6, 1),
        "server_rss_peak_mb": round(memory.peak / 1e6, 1),
        "batching": batching,
    }


def request_body(clip: bytes, count: int) -> bytes:
    """An /invocations body of `count` rows, each the clip's bytes in base64."""
    audio = base64.b64encode(clip).decode()
    return json.dumps({"dataframe_records": [{"audio": audio}] * count}).encode()


def batched_requests(url: str, clip: bytes, count: int, requests: int) -> dict:
    """`requests` sequential requests of `count` clips each (after one warm-up): p50, ms per clip, requests/s."""
    body = request_body(clip, count)
    request(url, body)
    start = time.perf_counter()
    answered = [request(url, body) for _ in range(requests)]
    elapsed = time.perf_counter() - start
    p50 = percentile([s for s, _ in answered], 50)
    return {"clips_per_request": count, "requests": requests, "p50_ms": round(p50, 1),
            "ms_per_clip": round(p50 / count, 1), "requests_per_s": round(requests / elapsed, 2),
            "errors": sum(not ok for _, ok in answered)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="openai/whisper-base", help="a hub id or folder (features.encoder)")
    parser.add_argument("--clip", type=Path, required=True, help="a recording the request's clip is cut from")
    parser.add_argument("--whisper-input", choices=("cut", "pad30"), default="cut", help="Whisper's input policy")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32", help="features.precision")
    parser.add_argument("--clips-per-request", type=int, nargs="+", default=[1, 8, 32], help="the batching sizes")
    parser.add_argument("--seconds-of-audio", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=40, help="sequential requests for the latency")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--output", type=Path, default=HERE / "serving.json", help="results are added to it")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        store = make_model(args.encoder, args.whisper_input, args.precision, folder)
        figures = serve_and_measure(store, clip_of(args.clip, args.seconds_of_audio, folder), args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"encoder": args.encoder, "whisper_input": args.whisper_input, "precision": args.precision,
              "audio_seconds": args.seconds_of_audio, "date": time.strftime("%Y-%m-%d"),
              "command": "python -m benchmarks.serving " + " ".join(sys.argv[1:])}  # fmt: skip
    result |= figures | {"loadavg": [round(x, 2) for x in os.getloadavg()], "machine": machine()}
    for key, value in figures.items():
        print(f"{key:<22} {value}")
    earlier = json.loads(args.output.read_text()) if args.output.is_file() else []
    args.output.write_text(json.dumps([*earlier, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
