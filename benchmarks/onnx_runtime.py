"""ONNX Runtime against PyTorch for the recipe's model: time per clip, peak memory, and the same answers.

`--study timing`: one fold model (the first of `--cv-run`) classifies the same seeded subset of a corpus's clips,
one clip a call, four ways, interleaved round-robin (each clip goes to every way in turn, the order rotating):

- `transformers`: transformers' own Whisper encoder, eager fp32, on the clip's 30 s log-mel (its only input),
  each layer mean-pooled (features only: the peer of the encoder's cost, as benchmarks/ssl_cost.py measures it);
- `pytorch`: the package's path, `EmotionRecognizer.classify_waves` (log-mel, cut encoder, pooling, head);
- `onnx_fp32` and `onnx_int8`: docs/examples/classify_onnx.py on the exported folder (numpy log-mel, the encoder
  graph, the head graph), fp32, and with the encoder's weights quantised to int8 (dynamic quantisation).

Each way runs in its own process (its peak RSS is its own; the ONNX ways' cannot import torch or emotion),
torch and ONNX Runtime on 2 threads. Speakers are
not given (the twin answers). Figures: seconds per clip (median and mean; and the process's CPU seconds, less
swayed by other jobs on a shared machine), peak RSS, the largest probability
difference from PyTorch's and the clips whose emotion differs.

`--study uar`: every fold model of `--cv-run` exported (the encoder once, fp32 and int8; a head per fold),
each classifying its held-out speaker's clips with that speaker's statistics (all their clips, those of
emotions outside the model's classes too, as the cross-validation had them), the model's classes scored; the
pooled UAR of PyTorch's path, ONNX fp32 and ONNX int8, and how far fp32's probabilities are from PyTorch's on
every clip.

python -m benchmarks.onnx_runtime --study timing --cv-run 9c9eae9e87be4192a6842b8bdeedd2dd \
    --tracking-uri sqlite:////tmp/bench/mlruns.db --data ../shared/data/savee --reader savee --clips 120
python -m benchmarks.onnx_runtime --study uar --cv-run 9c9eae9e87be4192a6842b8bdeedd2dd \
    --tracking-uri sqlite:////tmp/bench/mlruns.db --data ../shared/data/savee --reader savee
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import soundfile as sf
import torch

from benchmarks.common import fold_runs, machine, peak_rss_mb
from emotion.data.corpora import EMOTIONS, EXTRA_EMOTIONS, read_corpus
from emotion.metrics import unweighted_average_recall
from emotion.serving.onnx_export import export_model, quantized
from emotion.serving.recognizer import EmotionRecognizer

RESULTS = Path(__file__).with_suffix(".json")
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "classify_onnx.py"
WAYS = ("transformers", "pytorch", "onnx_fp32", "onnx_int8")
THREADS = 2
WARMUP = 2


def model_file(run: Any) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/model.skops"))


def exported_folders(model: Path, work: Path) -> dict[str, Path]:
    """The model exported with an fp32 encoder and with an int8 one (the same head)."""
    recognizer = EmotionRecognizer.from_checkpoint(model)
    fp32 = export_model(recognizer, work / "onnx_fp32")
    quantized(fp32 / "encoder.onnx", work / "encoder_int8.onnx")
    int8 = export_model(recognizer, work / "onnx_int8", encoder_file=work / "encoder_int8.onnx")
    return {"onnx_fp32": fp32, "onnx_int8": int8}


#: The ONNX ways' worker: the example alone, where torch and emotion cannot be imported (its memory is its own).
ONNX_WORKER = """
import sys, json, runpy, time
sys.modules.update(dict.fromkeys(["torch", "emotion", "transformers", "sklearn"]))
import soundfile
example = runpy.run_path(sys.argv[1])
model = example["ExportedModel"](sys.argv[2], threads=int(sys.argv[3]))
waves = [soundfile.read(path, dtype="float32")[0] for path in open(sys.argv[4]).read().split(chr(10))]

def classify(wave):
    return model.probabilities(model.features(wave)[None], speaker=False)[0].tolist()

for wave in waves[:2]:
    classify(wave)
print("@@ ready", flush=True)
for line in sys.stdin:
    if line.strip() == "end":
        status = open("/proc/self/status").read().split(chr(10))
        peak = [int(l.split()[1]) / 1024 for l in status if l.startswith("VmHWM:")][0]
        print("@@ " + json.dumps(peak), flush=True)
        break
    wave = waves[int(line)]
    start, cpu = time.perf_counter(), time.process_time()
    answer = classify(wave)
    print("@@ " + json.dumps([time.perf_counter() - start, time.process_time() - cpu, answer]), flush=True)
"""


class Way:
    """One way of classifying a clip in its own process, answering one clip index a line (see `torch_worker`)."""

    def __init__(self, way: str, model: Path, folder: Path | None, paths_file: Path) -> None:
        if way.startswith("onnx"):
            command = [sys.executable, "-c", ONNX_WORKER, str(EXAMPLE), str(folder), str(THREADS), str(paths_file)]
        else:
            command = [sys.executable, "-m", "benchmarks.onnx_runtime", "--worker", way, "--model", str(model),
                       "--paths", str(paths_file)]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.answer()  # ready: loaded and warmed up

    def answer(self) -> Any:
        """The worker's next answer (its other output skipped)."""
        for line in self.process.stdout:
            if line.startswith("@@ "):
                return None if line.strip() == "@@ ready" else json.loads(line[3:])
        raise RuntimeError(f"a worker ended early ({self.process.wait()})")

    def classify(self, index: int) -> tuple[float, float, list[float] | None]:
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        return tuple(self.answer())

    def close(self) -> float:
        """Its peak RSS (MiB), once it has ended."""
        self.process.stdin.write("end\n")
        self.process.stdin.flush()
        peak = self.answer()
        self.process.wait()
        return peak


def torch_worker(way: str, model: Path, paths_file: Path) -> None:
    """A PyTorch way's worker: `transformers` (features only) or `pytorch` (the package's path)."""
    torch.set_num_threads(THREADS)
    waves = [sf.read(path, dtype="float32")[0] for path in paths_file.read_text().split("\n")]
    recognizer = EmotionRecognizer.from_checkpoint(model)
    if way == "transformers":
        from emotion.encoders import load_encoder

        encoder = load_encoder(str(recognizer.features.encoder.folder), whisper_input="pad30")

    @torch.no_grad()
    def classify(wave: np.ndarray) -> list[float] | None:
        if way == "pytorch":
            return recognizer.classify_waves([torch.from_numpy(wave)]).probabilities[0].tolist()
        log_mel = encoder.extractor(wave, sampling_rate=16000, return_tensors="pt").input_features
        layers = encoder.model(log_mel, output_hidden_states=True).hidden_states
        torch.stack([layer[0].mean(dim=0) for layer in layers])
        return None

    for wave in waves[:WARMUP]:
        classify(wave)
    print("@@ ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "end":
            print(f"@@ {json.dumps(peak_rss_mb())}", flush=True)
            return
        wave = waves[int(line)]
        start, cpu = time.perf_counter(), time.process_time()
        answer = classify(wave)
        print(f"@@ {json.dumps([time.perf_counter() - start, time.process_time() - cpu, answer])}", flush=True)


def timing_study(args: argparse.Namespace, runs: list[Any], clips: list[Any], work: Path) -> dict[str, Any]:
    """Seconds per clip, peak RSS and answers of every way (see the module's docstring)."""
    chosen = sorted(np.random.default_rng(args.seed).choice(len(clips), size=args.clips, replace=False))
    paths = [clips[i].path for i in chosen]
    (work / "paths.txt").write_text("\n".join(paths))
    model = model_file(runs[0])
    folders = exported_folders(model, work)
    ways = {way: Way(way, model, folders.get(way), work / "paths.txt") for way in WAYS}
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    cpu_seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    answers: dict[str, list[Any]] = {way: [] for way in WAYS}
    load_before = os.getloadavg()
    for index in range(len(paths)):
        for way in WAYS[index % len(WAYS) :] + WAYS[: index % len(WAYS)]:
            took, cpu, answer = ways[way].classify(index)
            seconds[way].append(took)
            cpu_seconds[way].append(cpu)
            answers[way].append(answer)
    load_after = os.getloadavg()
    peaks = {way: ways[way].close() for way in WAYS}
    reference = np.array(answers["pytorch"])
    figures = {}
    for way in WAYS:
        figures[way] = {
            "s_per_clip_median": statistics.median(seconds[way]),
            "s_per_clip_mean": statistics.mean(seconds[way]),
            "cpu_s_per_clip_median": statistics.median(cpu_seconds[way]),
            "peak_rss_mb": peaks[way],
        }
        if way.startswith("onnx"):
            ours = np.array(answers[way])
            figures[way]["max_prob_diff_vs_pytorch"] = float(np.abs(ours - reference).max())
            figures[way]["emotions_differing"] = int((ours.argmax(1) != reference.argmax(1)).sum())
    seconds_of_audio = sum(sf.info(path).duration for path in paths)
    return {"clips": len(paths), "audio_seconds": seconds_of_audio, "seed": args.seed, "model_run": runs[0].info.run_id,
            "ways": figures, "loadavg_before": load_before, "loadavg_after": load_after}  # fmt: skip


def uar_study(args: argparse.Namespace, runs: list[Any], clips: list[Any], work: Path) -> dict[str, Any]:
    """Pooled LOSO UAR of PyTorch's path and of every fold model exported, fp32 and int8: each held-out speaker
    normalised by the statistics of all their clips (those of emotions outside the model's classes too, as the
    cross-validation had them), the clips of the model's classes scored."""
    load_before = os.getloadavg()
    truths: list[str] = []
    guesses: dict[str, list[str]] = {"pytorch": [], "onnx_fp32": [], "onnx_int8": []}
    worst, differing = 0.0, 0
    shared: dict[str, Path] = {}
    example = runpy.run_path(str(EXAMPLE))
    torch.set_num_threads(THREADS)
    for fold, run in enumerate(runs):
        speaker = run.data.params["split.test_speakers"]
        held_out = [clip for clip in clips if clip.speaker == speaker]
        recognizer = EmotionRecognizer.from_checkpoint(model_file(run))
        classes = recognizer.classes
        scored = np.array([clip.emotion in classes for clip in held_out])
        said = recognizer.classify_files([c.path for c in held_out], [speaker] * len(held_out))
        expected = said.probabilities.numpy()[scored]
        truths += [clip.emotion for clip, kept in zip(held_out, scored, strict=True) if kept]
        guesses["pytorch"] += [classes[i] for i in expected.argmax(axis=1)]
        for way in ("onnx_fp32", "onnx_int8"):
            folder = fold_folder(recognizer, work / f"fold{fold}_{way}", way, shared, work)
            model = example["ExportedModel"](folder, threads=THREADS)
            features = np.stack([model.features(model.read(clip.path)) for clip in held_out])
            probabilities = model.probabilities(features, speaker=True)[scored]
            guesses[way] += [classes[i] for i in probabilities.argmax(axis=1)]
            if way == "onnx_fp32":
                worst = max(worst, float(np.abs(probabilities - expected).max()))
                differing += int((probabilities.argmax(axis=1) != expected.argmax(axis=1)).sum())
    truth = np.array(truths)
    pooled = {way: unweighted_average_recall(truth, np.array(said)) for way, said in guesses.items()}
    return {
        "folds": len(runs),
        "clips_scored": len(truths),
        "pooled_uar": pooled,
        "fp32_max_prob_diff_vs_pytorch": worst,
        "fp32_emotions_differing": differing,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def fold_folder(recognizer: EmotionRecognizer, folder: Path, way: str, shared: dict[str, Path], work: Path) -> Path:
    """A fold's exported folder: the encoder exported (and quantised) at the first fold, linked at the others."""
    if way not in shared:
        if way == "onnx_fp32":
            export_model(recognizer, folder)
            shared[way] = folder / "encoder.onnx"
            return folder
        quantized(shared["onnx_fp32"], work / "encoder_int8.onnx")
        shared[way] = work / "encoder_int8.onnx"
    return export_model(recognizer, folder, encoder_file=shared[way])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=("timing", "uar"))
    parser.add_argument("--cv-run", help="the parent run of a normalize=speaker cross-validation")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--data", type=Path, help="the corpus folder the cross-validation read")
    parser.add_argument("--reader", default="savee")
    parser.add_argument("--clips", type=int, default=120, help="--study timing: the seeded subset's size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=WAYS[:2], help=argparse.SUPPRESS)  # a timing study's own processes
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--paths", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch_worker(args.worker, args.model, args.paths)
        return
    if not (args.study and args.cv_run and args.tracking_uri and args.data):
        parser.error("give --study, --cv-run, --tracking-uri and --data")
    mlflow.set_tracking_uri(args.tracking_uri)
    runs = fold_runs(mlflow.MlflowClient(args.tracking_uri), args.cv_run)
    with tempfile.TemporaryDirectory() as work:
        if args.study == "timing":
            figures = timing_study(args, runs, read_corpus(args.data, args.reader, classes=EMOTIONS).clips, Path(work))
        else:
            every = read_corpus(args.data, args.reader, classes=[*EMOTIONS, *EXTRA_EMOTIONS]).clips
            figures = uar_study(args, runs, every, Path(work))
    result = {"study": args.study, "cv_run": args.cv_run, "corpus": args.reader, **figures, "machine": machine(),
              "threads": THREADS, "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    print(json.dumps(result, indent=2))
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    saved = [r for r in saved if (r.get("study"), r.get("corpus")) != (args.study, args.reader)]
    RESULTS.write_text(json.dumps([*saved, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
