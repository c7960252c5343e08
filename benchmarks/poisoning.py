"""How far crafted clips sent under a speaker's name move that speaker's predictions, through the served model.

Each fold model of a leave-one-speaker-out cross-validation (a run of `normalize=speaker`) serves its held-out
speaker, the victim: the served model's class (`emotion.serving.pyfunc.EmotionModel`, a fresh profile store),
one clip a request, as a client sends them. `--enrolled` of the victim's clips are sent first (kept in their
profile); then `--scored` other clips of theirs are classified with `update_profile` false, before and after
1, 5 and 20 crafted clips are sent under their name:

- `silence`: 2 s of digital silence;     `noise`: 2 s of white noise at -20 dBFS (each clip its own);
- `clipped`: one of the victim's own clips at 60 dB of gain, clipped to full scale;
- `replay`: the victim's first enrolled clip with noise at -80 dBFS added (each clip its own noise);
- `impostor`: clips of another speaker of the corpus (real speech, as a client naming the wrong person sends).

With `EMOTION_PROFILES_READ_ONLY=1` the victim is enrolled as the model's operator enrols (`emotion-predict`),
and every request, the crafted ones included, only reads.

The figure is the share of scored predictions that changed (pooled over folds), and the pooled UAR before and
after. `--calibrate` measures instead what `emotion.serving.enrolment`'s thresholds are set from: each
held-out clip's distribution score (its mean squared z-score against its fold model's population), that of
crafted noise, silence and clipped clips, and the RMS distance (in population standard deviations) from each
clip to the nearest other clip of its speaker, against that of its replay with noise at -80 dBFS. The study
itself uses the served model's public interface only (`load_context`, `predict`), so the same script measures
an older version of the package (`PYTHONPATH=that/checkout`).

python -m benchmarks.poisoning --cv-run RUN_ID --tracking-uri sqlite:///mlruns.db --data ../shared/data/savee \
    --reader savee --label after
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import soundfile as sf
from mlflow.pyfunc import PythonModelContext
from tqdm.auto import tqdm

from benchmarks.common import machine
from emotion.data.corpora import EMOTIONS, Clip, read_corpus
from emotion.metrics import unweighted_average_recall
from emotion.serving.pyfunc import EmotionModel

KINDS = ("silence", "noise", "clipped", "replay", "impostor")
COUNTS = (1, 5, 20)
RATE = 16000
RESULTS = Path(__file__).with_suffix(".json")


def served(run: mlflow.entities.Run) -> EmotionModel:
    """The served model of a fold run's kept model file, loaded as the scoring server loads it."""
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/model.skops")
    model = EmotionModel()
    model.load_context(PythonModelContext(artifacts={"checkpoint": path}, model_config={}))
    return model


def emotion_of(model: EmotionModel, samples: np.ndarray, speaker: str, update: bool) -> str:
    """One clip as one request (samples and rate, a speaker, update_profile), and the emotion it gets."""
    row = {"waveform": samples.astype("float32").tolist(), "sample_rate": RATE, "speaker": speaker}
    return str(model.predict(None, pd.DataFrame([row | {"update_profile": update}]))["emotion"][0])


def crafted(kind: str, index: int, victim: list[np.ndarray], impostor: list[np.ndarray]) -> np.ndarray:
    """The `index`-th crafted clip of a kind (see the module's docstring)."""
    rng = np.random.default_rng(1000 + index)
    if kind == "silence":
        return np.zeros(2 * RATE)
    if kind == "noise":
        return rng.normal(scale=0.1, size=2 * RATE)
    if kind == "clipped":
        return np.clip(victim[index % len(victim)] * 1000, -1, 1)
    if kind == "replay":
        return victim[0] + rng.normal(scale=1e-4, size=len(victim[0]))
    return impostor[index % len(impostor)]


def figures(truths: list[str], before: list[str], after: list[str]) -> dict[str, float]:
    """The share of predictions that changed, and the UAR after."""
    changed = float(np.mean([a != b for a, b in zip(before, after, strict=True)]))
    return {"changed": round(changed, 4), "uar": round(uar(truths, after), 4)}


def uar(truths: list[str], guesses: list[str]) -> float:
    classes = sorted(set(truths))
    guessed = [classes.index(g) if g in classes else -1 for g in guesses]  # `silence`: no class
    return unweighted_average_recall(np.array([classes.index(t) for t in truths]), np.array(guessed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv-run", required=True, help="the parent run of a normalize=speaker cross-validation")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--reader", default="savee")
    parser.add_argument("--label", required=True, help="what this measures (before, after, read-only ...)")
    parser.add_argument("--enrolled", type=int, default=10)
    parser.add_argument("--scored", type=int, default=40)
    parser.add_argument("--calibrate", action="store_true", help="measure the enrolment thresholds instead")
    args = parser.parse_args()
    mlflow.set_tracking_uri(args.tracking_uri)
    client = mlflow.MlflowClient(args.tracking_uri)
    parent = client.get_run(args.cv_run)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{args.cv_run}'")
    clips = read_corpus(args.data, args.reader).clips
    truths: dict[str, list[str]] = {}
    guesses: dict[tuple[str, int], list[str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["EMOTION_PROFILES"] = f"sqlite:///{folder}/profiles.db"
        folds = sorted(runs, key=lambda r: int(r.data.tags["fold"]))
        if args.calibrate:
            print(json.dumps(calibration(folds, clips) | {"corpus": args.reader, "machine": machine()}, indent=2))
            return
        for run in tqdm(folds, desc="folds", unit="fold"):
            victim_name = run.data.params["split.test_speakers"]
            measure_fold(served(run), victim_name, clips, args, truths, guesses)
    table = {kind: {str(count): figures(truths[kind], guesses[(kind, 0)], guesses[(kind, count)])
                    for count in (0, *COUNTS)} for kind in KINDS}  # fmt: skip
    result = {"label": args.label, "corpus": args.reader, "cv_run": args.cv_run, "folds": len(runs),
              "enrolled": args.enrolled, "scored_per_fold": args.scored, "table": table,
              "read_only": os.environ.get("EMOTION_PROFILES_READ_ONLY", ""), "machine": machine()}  # fmt: skip
    print(json.dumps(result, indent=2))
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    saved = [r for r in saved if (r["label"], r["corpus"]) != (args.label, args.reader)]
    RESULTS.write_text(json.dumps([*saved, result], indent=2) + "\n")


def measure_fold(
    model: EmotionModel,
    victim_name: str,
    clips: list[Clip],
    args: argparse.Namespace,
    truths: dict[str, list[str]],
    guesses: dict[tuple[str, int], list[str]],
) -> None:
    """For each kind of crafted clip: a fresh profile of the victim, their scored clips before and after each
    count of crafted clips (the counts cumulative)."""
    rng = np.random.default_rng(0)
    own = [clips[i] for i in rng.permutation(len(clips)) if clips[i].speaker == victim_name]
    enrolled, scored = own[: args.enrolled], [c for c in own[args.enrolled :] if c.emotion in EMOTIONS][: args.scored]
    others = sorted({c.speaker for c in clips} - {victim_name})
    impostor = [read(c) for c in clips if c.speaker == others[0]][: max(COUNTS)]
    victim = [read(c) for c in enrolled]
    for kind in KINDS:
        speaker = f"{victim_name}-{kind}"
        enrol(model, victim, speaker)
        truths.setdefault(kind, []).extend(c.emotion for c in scored)
        sent = 0
        for count in (0, *COUNTS):
            while sent < count:
                emotion_of(model, crafted(kind, sent, victim, impostor), speaker, update=True)
                sent += 1
            guesses.setdefault((kind, count), []).extend(emotion_of(model, read(c), speaker, False) for c in scored)


def calibration(folds: list[mlflow.entities.Run], clips: list[Clip]) -> dict:
    """Quantiles of the held-out clips' distribution scores and of crafted clips', and of the distance from each
    clip to its speaker's nearest other clip against its replay's (see the module's docstring)."""
    import torch

    from emotion.serving.enrolment import z_scores

    speech, crafted_scores, nearest, replayed = [], {k: [] for k in ("silence", "noise", "clipped")}, [], []
    for run in tqdm(folds, desc="folds", unit="fold"):
        recognizer = served(run).recognizer
        own = [c for c in clips if c.speaker == run.data.params["split.test_speakers"]]

        def flat_z(samples: np.ndarray, recognizer: Any = recognizer) -> torch.Tensor:
            wave = recognizer.from_samples(samples, RATE)
            raw = recognizer.front_end.inputs([recognizer.front_end.prepare(wave)])
            return torch.cat([x[0].flatten() for x in z_scores(recognizer.normalizer, raw).values()])

        zs = [flat_z(read(c)) for c in tqdm(own, desc="clips", unit="clip", leave=False)]
        speech += [float(z.square().mean()) for z in zs]
        for index, kind in enumerate(crafted_scores):
            for n in range(3):
                crafted_scores[kind].append(float(flat_z(crafted(kind, n + index, [read(own[n])], [])).square().mean()))
        stacked = torch.stack(zs)
        distances = torch.cdist(stacked, stacked) / stacked.shape[1] ** 0.5
        distances.fill_diagonal_(float("inf"))
        nearest += distances.min(dim=1).values.tolist()
        for n, clip in enumerate(own[:10]):
            replay = read(clip) + np.random.default_rng(n).normal(scale=1e-4, size=len(read(clip)))
            replayed.append(float((flat_z(replay) - zs[n]).square().mean().sqrt()))

    def quantiles(values: list[float]) -> dict[str, float]:
        return {q: round(float(np.quantile(values, float(q))), 4) for q in ("0", "0.5", "0.99", "1")}

    return {
        "speech_score": quantiles(speech),
        "crafted_score": {kind: quantiles(values) for kind, values in crafted_scores.items()},
        "nearest_other_clip_distance": quantiles(nearest),
        "replay_distance": quantiles(replayed),
    }


def enrol(model: EmotionModel, victim: list[np.ndarray], speaker: str) -> None:
    """The victim's clips sent one a request; where the served model's profiles are read-only
    (`EMOTION_PROFILES_READ_ONLY`), added as its operator adds them (`emotion-predict --speaker`)."""
    if not os.environ.get("EMOTION_PROFILES_READ_ONLY"):
        for samples in victim:
            emotion_of(model, samples, speaker, update=True)
        return
    recognizer = model.recognizer
    waves = [recognizer.from_samples(samples, RATE) for samples in victim]
    recognizer.classify_waves(waves, [speaker] * len(waves), model.profiles, update=True)


def read(clip: Clip) -> np.ndarray:
    samples, rate = sf.read(clip.path, dtype="float32")
    assert rate == RATE, f"{clip.path}: {rate} Hz"
    return samples


if __name__ == "__main__":
    main()
