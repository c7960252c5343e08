"""What a speaker-adaptive model gives a new speaker, clip by clip, through the served model.

Each fold model of a leave-one-speaker-out cross-validation (a run of `normalize=speaker`) serves its own held-out
speaker: the served model's class (`emotion.serving.pyfunc.EmotionModel`, with a fresh profile store), one clip
per request.

- `--study clips` (the k-clip curve): k of the speaker's clips, drawn from all of theirs whatever their class
  (label-free), are sent first, one a request, and kept in the speaker's profile; then every other clip of theirs
  of the six classes is sent alone with `update_profile` false, so each is classified with a profile of k clips
  and itself. `all`: every clip enrolled first. Beside it, the same clips sent with no speaker: the non-adaptive
  model (the head's twin, selected and fitted as a `normalize=population` run of the same recipe would be).
  Each of `--draws` draws enrols other clips; the figures are each draw's UAR pooled over the folds, their mean
  and spread, and the worst draw's difference from the non-adaptive answer; `rule` and `blend_curves` say how
  each fold model weighs its two answers (its learned curve, `emotion.pipeline.blend`, or (n / min_clips)^2).
- `--study blend` (how to weigh a short profile): the same draws as `clips`, each scored clip's probabilities of
  the adaptive head alone and of the non-adaptive one recorded once, then each weighting of the two by the
  profile's n clips (`WEIGHTINGS`, with `--min-clips` as m) scored on them: the curve each would serve.
- `--study mix` (emotion-mix sensitivity): a profile of `--pool` clips drawn `random`ly, `balanced` over the six
  emotions, `neutral`-heavy (two thirds neutral) or `angry`-heavy (two thirds angry); then every other clip of
  the speaker is classified against it, for each shrinkage of `--shrinkage` (the served normaliser's, changed
  here: a remedy tried); the pooled UAR over every fold's scored clips, over `--draws` draws.

- `--study simulated` (cheap, no served path): each fold model's held-out speaker served as the blend's learning
  simulates it (`emotion.pipeline.blend.serve_speaker`: the served normaliser's statistics of a profile of k
  drawn clips and the scored one, on the cross-validation's cached features; no profile store or admission, which
  refuses no genuine clip of these corpora), both heads' probabilities recorded once, then per k and draw the UAR
  of the twin, the adaptive head alone, the model's learned curve and the (n / 10)^2 rule on the very same clips.
  Each fold's records go to `--records` (folds may run in separate processes: `--folds`), and the curve is
  computed over every fold recorded there. `--learn-blend` learns each fold model's curve now (a model trained
  before the curve existed: what its training would learn).

The other studies classify each clip's cached front-end output (`classify_inputs`: the served model's path after the
encoder, its profiles and enrolment included), so each clip is encoded once.

python -m benchmarks.speaker_clips --cv-run RUN_ID --tracking-uri sqlite:///mlruns.db --data ../shared/data/savee \
    --reader savee --study clips
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModelContext
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from benchmarks.common import fold_runs, machine
from emotion.config import PROFILES_VARIABLE
from emotion.data.cache import FeatureCache
from emotion.data.corpora import EMOTIONS, EXTRA_EMOTIONS, Clip, read_corpus
from emotion.metrics import unweighted_average_recall
from emotion.pipeline.blend import WHOLE, InnerClips, Served, serve_speaker
from emotion.pipeline.build import build_datamodule, built
from emotion.pipeline.estimator import inner_clips, learned_blend
from emotion.serving.pyfunc import EmotionModel
from emotion.serving.recognizer import is_silent

KS = (0, 1, 3, 5, 10, 20, "all")
MIXES = ("random", "balanced", "neutral", "angry")
RESULTS = Path(__file__).with_suffix(".json")


def served_model(run: mlflow.entities.Run, min_clips: int | None, learn_now: bool = False) -> EmotionModel:
    """The served model of a fold run's checkpoint (its skops file), loaded as the scoring server loads it
    (`min_clips`: instead of the model's own, as `emotion-predict --min-clips` does; with `--learn-blend`, the
    blend curve its training would learn now instead of the one it holds)."""
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/model.skops")
    model = EmotionModel()
    model.load_context(PythonModelContext(artifacts={"checkpoint": path}, model_config={}))
    if min_clips is not None:
        model.recognizer.normalizer.min_clips = min_clips
    if learn_now:
        model.recognizer.normalizer.blend_curve = learned_now(run, model.recognizer.head)
    return model


def fold_data(run: mlflow.entities.Run) -> Any:
    """A fold run's datamodule, set up from its logged config (its features read from the feature cache)."""
    cfg = OmegaConf.create(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml"))
    datamodule = build_datamodule(cfg, built(cfg.features))
    datamodule.setup()
    return cfg, datamodule


def learned_now(run: mlflow.entities.Run, head: Any) -> Any:
    """The blend curve a fold run's training learns (`emotion.pipeline.estimator.learned_blend`), learned now from
    its logged config and cached features, its own two heads' candidates refitted in its inner speaker folds."""
    cfg, datamodule = fold_data(run)
    chosen = datamodule.split.train + datamodule.split.val
    labels = np.array([head.classes.index(clip.emotion) for clip in datamodule.table.clips])[chosen]
    rows, raw = (head.rows({n: t.tensors[n][chosen] for n in head.input_names})
                 for t in (datamodule.table, datamodule.unnormalized))  # fmt: skip
    curve, said = learned_blend(cfg.model.inner_folds, head, inner_clips(datamodule, head, chosen, rows, raw, labels))
    print(f"  {run.data.params['split.test_speakers']}: {said}", flush=True)
    return curve


def uar(truths: list[str], guesses: list[str]) -> float:
    classes = sorted(set(truths))
    return unweighted_average_recall(
        np.array([classes.index(t) for t in truths]),
        np.array([classes.index(g) if g in classes else -1 for g in guesses]),
    )


def pool_of(clips: list[Clip], mix: str, size: int, rng: np.random.Generator) -> list[Clip]:
    """`size` of a speaker's clips drawn as `mix` says (two thirds of one emotion for `neutral` and `angry`)."""
    order = [clips[i] for i in rng.permutation(len(clips))]
    if mix == "random":
        return order[:size]
    if mix == "balanced":
        per_class = [[c for c in order if c.emotion == e] for e in EMOTIONS]
        return [c for round_ in range(size) for group in per_class for c in group[round_ : round_ + 1]][:size]
    heavy = [c for c in order if c.emotion == mix][: (2 * size) // 3]
    rest = [c for c in order if c.emotion != mix][: size - len(heavy)]
    return heavy + rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv-run", required=True, help="the parent run of a normalize=speaker cross-validation")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--data", type=Path, required=True, help="the corpus folder the cross-validation read")
    parser.add_argument("--reader", default="savee")
    parser.add_argument("--study", choices=tuple(STUDIES), default="clips")
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument(
        "--min-clips", type=int, help="the served normaliser's (default: the model's; a learned curve ignores it)"
    )
    parser.add_argument("--pool", type=int, default=12, help="--study mix: the clips of each profile")
    parser.add_argument("--shrinkage", type=float, nargs="+", default=[0.0, 2.0, 8.0], help="--study mix")
    parser.add_argument("--feature-cache", type=Path, help="read clips' features from this feature cache (no encoder)")
    parser.add_argument("--learn-blend", action="store_true", help="each fold model's blend curve learned now")
    parser.add_argument("--folds", type=int, nargs="*", help="--study simulated: only these folds (none: merge)")
    parser.add_argument("--records", type=Path, help="--study simulated: each fold's records saved here, all merged")
    args = parser.parse_args()
    mlflow.set_tracking_uri(args.tracking_uri)
    client = mlflow.MlflowClient(args.tracking_uri)
    runs = fold_runs(client, args.cv_run)
    everything = read_corpus(args.data, args.reader, classes=[*EMOTIONS, *EXTRA_EMOTIONS]).clips
    with tempfile.TemporaryDirectory() as folder:
        os.environ[PROFILES_VARIABLE] = f"sqlite:///{folder}/profiles.db"
        figures = STUDIES[args.study](runs, everything, args)
    result = {"study": args.study, "cv_run": args.cv_run, "corpus": args.reader, "folds": len(runs),
              "draws": args.draws, "min_clips": args.min_clips, **figures, "machine": machine(),
              "features": "read from the feature cache" if args.feature_cache else "encoded",
              "curves": "learned now (--learn-blend)" if args.learn_blend else "the model files'"}  # fmt: skip
    print(json.dumps(result, indent=2))
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    key = (args.study, args.reader, args.min_clips, result.get("rule", "square"))
    saved = [r for r in saved if (r.get("study"), r.get("corpus"), r.get("min_clips"), r.get("rule", "square")) != key]
    RESULTS.write_text(json.dumps([*saved, result], indent=2) + "\n")


def per_fold(
    runs: list[mlflow.entities.Run],
    everything: list[Clip],
    score: Callable[[Any, list[Clip], list[Clip]], None],
    min_clips: int | None,
    learn_now: bool,
) -> None:
    """`score(model, the held-out speaker's clips of every class, those of the six)` for each fold."""
    for run in tqdm(runs, desc="folds", unit="fold"):
        speaker = run.data.params["split.test_speakers"]
        clips = [c for c in everything if c.speaker == speaker]
        score(served_model(run, min_clips, learn_now), clips, [c for c in clips if c.emotion in EMOTIONS])


def clips_study(runs: list[mlflow.entities.Run], everything: list[Clip], args: argparse.Namespace) -> dict:
    """The k-clip curve of the adaptive model as served, one clip a request, and beside each k the non-adaptive
    answer on the very same clips (those not enrolled); each draw's UAR pooled over the folds, then their mean,
    spread and the worst draw's difference from the non-adaptive answer."""
    truths: dict[tuple[str, int], list[str]] = {}
    adaptive: dict[tuple[str, int], list[str]] = {}
    twin: dict[tuple[str, int], list[str]] = {}
    curves: dict[str, Any] = {}

    def score(model: EmotionModel, clips: list[Clip], scored: list[Clip]) -> None:
        recognizer = model.recognizer
        curves[scored[0].speaker] = rule_of(recognizer.normalizer)
        front = cached_front_end(recognizer, clips, args.feature_cache, args.data)
        unnamed = {c.path: said(recognizer, front[c.path], None, None, False) for c in scored}
        for k in KS:
            for draw in range(1 if k in (0, "all") else args.draws):
                rng = np.random.default_rng(draw)
                speaker = f"{scored[0].speaker}-{k}-{draw}"
                order = [clips[i] for i in rng.permutation(len(clips))]
                enrolled = order if k == "all" else order[: int(k)]
                for clip in enrolled:
                    said(recognizer, front[clip.path], speaker, model.profiles, True)
                left = scored if k == "all" else [c for c in scored if c.path not in {e.path for e in enrolled}]
                key = (str(k), draw)
                truths.setdefault(key, []).extend(c.emotion for c in left)
                adaptive.setdefault(key, []).extend(said(recognizer, front[c.path], speaker, model.profiles, False)
                                                    for c in left)  # fmt: skip
                twin.setdefault(key, []).extend(unnamed[c.path] for c in left)

    per_fold(runs, everything, score, args.min_clips, args.learn_blend)
    curve = {}
    for k in map(str, KS):
        draws = sorted(d for kk, d in truths if kk == k)
        own = [uar(truths[(k, d)], adaptive[(k, d)]) for d in draws]
        plain = [uar(truths[(k, d)], twin[(k, d)]) for d in draws]
        curve[k] = {"adaptive": round(float(np.mean(own)), 4), "adaptive_std": round(float(np.std(own)), 4),
                    "non_adaptive": round(float(np.mean(plain)), 4), "draws": len(draws),
                    "worst_draw_minus_non_adaptive": round(min(a - p for a, p in zip(own, plain, strict=True)), 4),
                    "scored_clips": len(truths[(k, draws[0])])}  # fmt: skip
        print(f"  k={k}: adaptive {curve[k]['adaptive']:.3f} ± {curve[k]['adaptive_std']:.3f} over {len(draws)} "
              f"draw(s), non-adaptive {curve[k]['non_adaptive']:.3f}", flush=True)  # fmt: skip
    learned = any(isinstance(rule, list) for rule in curves.values())
    return {"rule": "learned" if learned else "square", "blend_curves": curves, "curve": curve}


def rule_of(normalizer: Any) -> Any:
    """How a fold model weighs its adaptive answer: its learned curve's [clips, weight] points, or the rule."""
    if normalizer.blend_curve is not None:
        return [list(point) for point in normalizer.blend_curve]
    return f"(n / {normalizer.min_clips})^2"


#: Candidate weights of the adaptive answer for a profile of n clips (m: min_clips), `--study blend`.
WEIGHTINGS: dict[str, Callable[[int, int], float]] = {
    "cliff (n >= m)": lambda n, m: float(n >= m),
    "linear (n / m)": lambda n, m: min(1.0, n / m),
    "linear (n / 2m)": lambda n, m: min(1.0, n / (2 * m)),
    "square ((n / m)^2)": lambda n, m: min(1.0, n / m) ** 2,
    "square ((n / 2m)^2)": lambda n, m: min(1.0, n / (2 * m)) ** 2,
    "n / (n + m)": lambda n, m: n / (n + m),
}


def blend_study(runs: list[mlflow.entities.Run], everything: list[Clip], args: argparse.Namespace) -> dict:
    """The k-clip curve each weighting in `WEIGHTINGS` would give (see the module's docstring)."""
    m = args.min_clips or 10
    records: dict[tuple[str, int], list[tuple[str, int, np.ndarray, np.ndarray]]] = {}
    classes: list[str] = []

    def score(model: EmotionModel, clips: list[Clip], scored: list[Clip]) -> None:
        recognizer = model.recognizer
        recognizer.normalizer.min_clips, recognizer.normalizer.blend_curve = 1, None  # the adaptive answer alone
        front = cached_front_end(recognizer, clips, args.feature_cache, args.data)
        twin = {c.path: probabilities_of(recognizer, front[c.path], None, None, False) for c in scored}
        for k in KS:
            for draw in range(1 if k in (0, "all") else args.draws):
                speaker = f"{scored[0].speaker}-{k}-{draw}"
                order = [clips[i] for i in np.random.default_rng(draw).permutation(len(clips))]
                enrolled = order if k == "all" else order[: int(k)]
                for clip in enrolled:
                    probabilities_of(recognizer, front[clip.path], speaker, model.profiles, True)
                held = model.profiles.clips_of(recognizer.version, speaker)
                for c in scored if k == "all" else [c for c in scored if c not in enrolled]:
                    own = probabilities_of(recognizer, front[c.path], speaker, model.profiles, False)
                    n = held if k == "all" else held + 1  # the clip itself joins its own profile
                    records.setdefault((str(k), draw), []).append((c.emotion, n, own, twin[c.path]))
        classes[:] = recognizer.classes

    per_fold(runs, everything, score, None, args.learn_blend)
    curves = {}
    for name, weight in WEIGHTINGS.items():
        curve = {}
        for k in map(str, KS):
            draws = sorted(d for kk, d in records if kk == k)
            scores, plain = [], []
            for d in draws:
                rows = records[(k, d)]
                truths = [t for t, *_ in rows]
                blended = [weight(n, m) * own + (1 - weight(n, m)) * twin for _, n, own, twin in rows]
                scores.append(uar(truths, [classes[int(p.argmax())] for p in blended]))
                plain.append(uar(truths, [classes[int(twin.argmax())] for *_, twin in rows]))
            worst = min(a - p for a, p in zip(scores, plain, strict=True))
            curve[k] = {"adaptive": round(float(np.mean(scores)), 4), "adaptive_std": round(float(np.std(scores)), 4),
                        "non_adaptive": round(float(np.mean(plain)), 4),
                        "worst_draw_minus_non_adaptive": round(worst, 4)}  # fmt: skip
        curves[name] = curve
        print(name, {k: (v["adaptive"], v["worst_draw_minus_non_adaptive"]) for k, v in curve.items()}, flush=True)
    return {"weighting_m": m, "curves": curves}


def probabilities_of(recognizer: Any, front: tuple[Any, Any], speaker: str | None, profiles: Any, update: bool) -> Any:
    """The class probabilities the served model gives one clip sent alone (`classify_inputs`)."""
    wave, raw = front
    probabilities, _ = recognizer.classify_inputs(raw, [speaker], profiles, update, [wave], [is_silent(wave)])
    return probabilities[0].numpy()


def cached_front_end(
    recognizer: Any, clips: list[Clip], cache: Path | None, corpus: Path
) -> dict[str, tuple[Any, Any]]:
    """Each clip's decoded waveform and front-end output (the encoder runs once a clip; with `--feature-cache`, not
    at all: the outputs the cross-validation cached for the same feature set, read back)."""
    if cache is not None:
        table = FeatureCache(cache, corpus, recognizer.front_end).table(clips, "error")
        rows = {clip.path: row for row, clip in enumerate(table.clips)}
        view = {c.path: {name: x[rows[c.path]].unsqueeze(0) for name, x in table.tensors.items()} for c in clips}
        return {c.path: (recognizer.decode(c.path), view[c.path]) for c in clips}
    front = {}
    for clip in tqdm(clips, desc="encoding", unit="clip", leave=False):
        wave = recognizer.decode(clip.path)
        front[clip.path] = (wave, recognizer.front_end.inputs([recognizer.front_end.prepare(wave)]))
    return front


def said(recognizer: Any, front: tuple[Any, Any], speaker: str | None, profiles: Any, update: bool) -> str:
    """The emotion the served model gives one clip sent alone (its path after the encoder: `classify_inputs`)."""
    return recognizer.classes[int(probabilities_of(recognizer, front, speaker, profiles, update).argmax())]


def mix_study(runs: list[mlflow.entities.Run], everything: list[Clip], args: argparse.Namespace) -> dict:
    """UAR of each emotion mix of a speaker's profile, for each shrinkage (cached front-end outputs)."""
    keys = [(mix, shrink) for mix in MIXES for shrink in args.shrinkage]
    truths: dict[tuple[str, float], list[str]] = {key: [] for key in keys}
    guesses: dict[tuple[str, float], list[str]] = {key: [] for key in keys}

    def score(model: EmotionModel, clips: list[Clip], scored: list[Clip]) -> None:
        recognizer = model.recognizer
        front = cached_front_end(recognizer, clips, args.feature_cache, args.data)
        for (mix, shrink), draw in [(key, d) for key in keys for d in range(args.draws)]:
            recognizer.normalizer.shrinkage = shrink
            pool = pool_of(clips, mix, args.pool, np.random.default_rng(draw))
            speaker = f"{mix}-{shrink}-{draw}-{scored[0].speaker}"
            for c in pool:
                said(recognizer, front[c.path], speaker, model.profiles, True)
            pooled = {c.path for c in pool}
            for c in scored:
                if c.path in pooled:
                    continue
                truths[(mix, shrink)].append(c.emotion)
                guesses[(mix, shrink)].append(said(recognizer, front[c.path], speaker, model.profiles, False))

    per_fold(runs, everything, score, args.min_clips, args.learn_blend)
    table = {mix: {str(shrink): round(uar(truths[(mix, shrink)], guesses[(mix, shrink)]), 4)
                   for shrink in args.shrinkage} for mix in MIXES}  # fmt: skip
    return {"pool": args.pool, "shrinkage": args.shrinkage, "uar": table}


def simulated_study(runs: list[mlflow.entities.Run], everything: list[Clip], args: argparse.Namespace) -> dict:
    """The k-clip curve as the blend's learning simulates serving (`emotion.pipeline.blend.serve_speaker`: the
    served normaliser's statistics of k clips and the scored one, no profile store or admission), on the fold's
    cached features: per k and draw, the twin's, the adaptive head's alone, the learned curve's and the
    (n / min_clips)^2 rule's UAR on the same clips, pooled over the folds."""
    rules = {}
    chosen = [r for r in runs if args.folds is None or int(r.data.tags["fold"]) in args.folds]
    for run in tqdm(chosen, desc="folds", unit="fold"):
        served = Served()
        head = served_model(run, None, args.learn_blend).recognizer.head
        _, datamodule = fold_data(run)
        test = datamodule.split.test
        speaker = datamodule.table.clips[test[0]].speaker
        raw = {n: datamodule.unnormalized.tensors[n][test] for n in head.input_names}
        labels = np.array([head.classes.index(datamodule.table.clips[i].emotion) for i in test])
        pool = datamodule.pool
        extra = [i for i, c in enumerate(pool.clips) if c.speaker == speaker] if pool is not None else []
        clips = InnerClips(raw, head.rows(raw), head.rows(raw), labels, [speaker] * len(test),
                           np.ones(len(test), dtype=bool), {n: pool.tensors[n][extra] for n in head.input_names}
                           if extra else {}, [speaker] * len(extra))  # fmt: skip
        sizes = [int(k) + 1 for k in KS if k != "all"] + [WHOLE]
        serve_speaker(clips, speaker, np.arange(len(test)), head.normalizer, (head.estimator, head.fallback),
                      head.rows, len(head.classes), served, sizes, args.draws)  # fmt: skip
        learned = [head.normalizer.weight(n) for n in served.profile]
        args.records.mkdir(parents=True, exist_ok=True)
        np.savez(args.records / f"{speaker}.npz", **{k: np.array(v) for k, v in vars(served).items()},
                 learned=np.array(learned), rule=json.dumps(rule_of(head.normalizer)))  # fmt: skip
    saved = {path.stem: np.load(path) for path in sorted(args.records.glob("*.npz"))}
    merged = Served(*(np.concatenate([f[key] for f in saved.values()]).tolist() for key in vars(Served())))
    learned = np.concatenate([f["learned"] for f in saved.values()])
    rules = {speaker: json.loads(str(f["rule"])) for speaker, f in saved.items()}
    return {"rule": "learned", "blend_curves": rules, "curve": simulated_curve(merged, learned)}


def simulated_curve(served: Served, learned_weights: np.ndarray) -> dict:
    """Per k: each answer's UAR per draw pooled over the folds (mean, spread, worst draw against the twin)."""
    sizes, draws, labels = np.array(served.sizes), np.array(served.draws), np.array(served.labels)
    adaptive, twin, profile = np.array(served.adaptive), np.array(served.twin), np.array(served.profile)
    curve = {}
    for k, size in zip(KS, [int(k) + 1 for k in KS if k != "all"] + [WHOLE], strict=True):
        at = sizes == size
        answers = {"twin": twin[at], "adaptive alone": adaptive[at]}
        learned = learned_weights[at][:, None]
        square = np.minimum(1.0, profile[at] / 10.0)[:, None] ** 2
        capped = np.minimum(learned, square)  # a curve learned before the cap, capped as learning now caps it
        answers |= {"learned curve": learned * adaptive[at] + (1 - learned) * twin[at],
                    "learned, at most (n / 10)^2": capped * adaptive[at] + (1 - capped) * twin[at],
                    "(n / 10)^2": square * adaptive[at] + (1 - square) * twin[at]}  # fmt: skip
        row = {}
        for name, probabilities in answers.items():
            guesses = probabilities.argmax(axis=1)
            per_draw = [unweighted_average_recall(labels[at][draws[at] == d], guesses[draws[at] == d])
                        for d in sorted(set(draws[at].tolist()))]  # fmt: skip
            row[name] = per_draw
        plain = np.array(row["twin"])
        curve[str(k)] = {name: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4),
                                "worst_draw_minus_twin": round(float(np.min(np.array(v) - plain)), 4)}
                         for name, v in row.items()}  # fmt: skip
        print(f"  k={k}: " + ", ".join(f"{n} {v['mean']:.3f} ({v['worst_draw_minus_twin']:+.3f})"
                                       for n, v in curve[str(k)].items()), flush=True)  # fmt: skip
    return curve


STUDIES = {"clips": clips_study, "blend": blend_study, "mix": mix_study, "simulated": simulated_study}

if __name__ == "__main__":
    main()
