"""`emotion-evaluate`: score a model on any labelled corpus, as an MLflow evaluation run linked to the model.

emotion-evaluate models:/emotion@champion data=savee data.root=../shared/data/savee
emotion-evaluate models:/emotion/3 data=emodb data.root=../shared/data/emodb/wav
emotion-evaluate runs:/RUN_ID data=savee data.root=../shared/data/savee   # a trained run, promoted or not

The corpus is given with the Hydra overrides of training (`data=...`, `data.root`, the reader's class
mapping, `data.on_bad_name` and `data.on_bad_file`). Clips of classes the model does not know are dropped
and counted; classes it knows that the corpus lacks are reported absent, and UAR and macro-F1 are taken over
the classes present (`emotion.metrics`). The evaluation run (experiment `evaluations`) holds acc, UAR,
macro-F1, the confusion matrix, the classification report and every clip's prediction (`predictions.csv`),
and is tagged with the model URI, version and source run. Its input dataset (MLflow's datasets) is the clips
scored: its digest keys the tags the version and the source run get, `eval.CORPUS.DIGEST.uar` and `.clips`
(and `.held_out`: false when some clips are of speakers the model trained or validated on, which is warned
of), so an evaluation on a subset never overwrites one on the whole corpus. `emotion-promote --require-eval
CORPUS` counts held-out evaluations only. `data.classes=[...]` narrows the classes scored.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion.cli import errors_as_one_line
from emotion.config import CONFIG_DIR, logger_defaults, register_resolvers
from emotion.errors import EmotionError
from emotion.tracking.names import EVALUATION_ROLE, ROLE_TAG

if TYPE_CHECKING:  # the heavy libraries load once the arguments are read
    import mlflow
    import pandas as pd
    from omegaconf import DictConfig

EXPERIMENT = "evaluations"
#: The evaluation run's artifact of every clip's prediction (the columns of `emotion-predict --format csv`).
PREDICTIONS_ARTIFACT = "predictions.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="emotion-evaluate",
        description="Score a model on a labelled corpus given by Hydra overrides (data=... data.root=...).",
    )
    parser.add_argument("model", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or runs:/RUN_ID")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the corpus, as for emotion-train")
    parser.add_argument("--tracking-uri", default=logger_defaults()["tracking_uri"], help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per forward pass (default: %(default)s)")
    return parser.parse_args(argv)


def corpus_config(overrides: list[str]) -> DictConfig:
    """The app's config composed with `overrides`, as `emotion-train` would compose it."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@dataclass
class Source:
    """What an evaluation is of: the model URI, its registered version (if any) and the run that trained it."""

    uri: str
    run_id: str
    name: str | None = None
    version: str | None = None


def resolve_source(client: mlflow.MlflowClient, uri: str) -> Source:
    """The version and source run behind a model URI."""
    if uri.startswith("models:/"):
        name, _, ref = uri.removeprefix("models:/").partition("@")
        if ref:
            version = client.get_model_version_by_alias(name, ref)
        else:
            name, _, number = name.partition("/")
            version = client.get_model_version(name, number)
        return Source(uri, version.run_id, name, version.version)
    if uri.startswith("runs:/"):
        return Source(uri, uri.removeprefix("runs:/").split("/")[0])
    raise EmotionError(f"{uri} is not a model URI: give models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID")


def heard_speakers(client: mlflow.MlflowClient, run_id: str, corpus: str, clips: list[Any]) -> int:
    """How many of `clips` are of speakers the run trained or validated on (its `split.json`)."""
    import mlflow

    run = client.get_run(run_id)
    split = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/split.json")
    heard = set()
    for partition in ("train", "val"):
        for speaker in split[partition]["speakers"]:
            owner, _, name = speaker.rpartition(":")  # data=mix names speakers CORPUS:SPEAKER
            heard.add((owner or run.data.params.get("data.name"), name))
    return sum((clip.corpus or corpus, clip.speaker.rpartition(":")[2]) in heard for clip in clips)


def log_dataset(tracking_uri: str, run_id: str, corpus: str, clips: list[Any], classes: tuple[str, ...]) -> str:
    """The scored clips as the evaluation run's input dataset (MLflow's datasets: name, digest, source, rows);
    returns its digest, which keys the evaluation's tags."""
    import mlflow
    import pandas as pd

    frame = pd.DataFrame({"path": [c.path for c in clips], "speaker": [c.speaker for c in clips],
                          "emotion": [c.emotion for c in clips]})  # fmt: skip
    source = str(Path(clips[0].path).parent) if clips else corpus
    with warnings.catch_warnings():  # MLflow registers two local-file sources, and says so each time
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        dataset = mlflow.data.from_pandas(
            frame, source=source, name=f"{corpus} ({len(clips)} clips, {len(classes)} classes)"
        )
    mlflow.set_tracking_uri(tracking_uri)
    # MLflow's log_input works on the active run, which must belong to the active experiment.
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient(tracking_uri).get_run(run_id).info.experiment_id)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(dataset, context="evaluation", tags={"classes": ",".join(classes)})
    return dataset.digest


def labelled_clips(cfg: DictConfig, model_classes: tuple[str, ...]) -> tuple[list[Any], dict[str, int]]:
    """The corpus's clips of the model's classes that `data.classes` names, and how many clips of each other
    class were dropped.

    The corpus is read as training reads it: the datamodule of `cfg.data` (one corpus, `data=mix`, or the
    embedded one), asked for every class it knows so that the others can be counted.
    """
    from hydra.utils import instantiate

    from emotion.data.corpora import EMOTIONS, EXTRA_EMOTIONS

    every_class = [*EMOTIONS, *EXTRA_EMOTIONS]
    data = instantiate(cfg.data, features=instantiate(cfg.features), cache_dir=cfg.paths.cache_dir, classes=every_class)
    manifest = data.read_manifest()
    wanted = set(model_classes) & set(cfg.data.classes)
    kept = [clip for clip in manifest.clips if clip.emotion in wanted]
    dropped = Counter(clip.emotion for clip in manifest.clips if clip.emotion not in wanted)
    if not kept:
        raise EmotionError(f"no clip of the model's classes {list(model_classes)} under {data.corpus_root()}")
    return kept, dict(dropped)


def scored_predictions(
    predictions: pd.DataFrame, emotions: list[str], classes: tuple[str, ...]
) -> tuple[list[int], list[int], dict[str, float]]:
    """True and predicted class indices of predicted clips (`emotions`: each clip's label), and their scores
    (`eval/acc`, `eval/uar`, `eval/f1`: `emotion.metrics`). A silent clip counts with its most probable class."""
    from emotion.metrics import scores

    y_true = [classes.index(emotion) for emotion in emotions]
    y_pred = predictions[[f"prob_{c}" for c in classes]].to_numpy().argmax(axis=1).tolist()
    return y_true, y_pred, {f"eval/{name}": value for name, value in scores(y_true, y_pred).items()}


def evaluate(args: argparse.Namespace) -> tuple[str, dict[str, float], str]:
    """Score the model on the corpus and log the evaluation run; (run ID, scores, printable summary)."""
    import mlflow

    from emotion.config import artifacts_beside, check_data_folders
    from emotion.serving.files import load_recognizer, predict
    from emotion.serving.registry import require_store
    from emotion.tracking.evaluations import Evaluation
    from emotion.tracking.logger import ensure_experiment, experiment_artifact_location
    from emotion.tracking.reports import log_test_report

    cfg = corpus_config(args.overrides)
    check_data_folders(cfg.data)  # a missing or wrong folder is said as emotion-train says it
    if args.model.startswith(("models:/", "runs:/")):
        require_store(args.tracking_uri)
    client = mlflow.MlflowClient(args.tracking_uri)
    recognizer = load_recognizer(args.model, args.tracking_uri)  # first: it says in one line what is missing
    source = resolve_source(client, args.model)
    classes = recognizer.classes
    clips, dropped = labelled_clips(cfg, classes)
    by_path = {str(Path(c.path)): c for c in clips}
    speakers = [clip.speaker for clip in clips]  # a speaker-adaptive model normalises each speaker's clips together
    files = [Path(c.path) for c in clips]
    predictions, skipped = predict(recognizer, files, args.batch_size, cfg.data.on_bad_file, speakers)
    scored = [by_path[f] for f in predictions["file"]]
    y_true, y_pred, result = scored_predictions(predictions, [clip.emotion for clip in scored], classes)
    absent = [c for i, c in enumerate(classes) if i not in set(y_true)]
    heard = heard_speakers(client, source.run_id, cfg.data.name, scored)
    if heard:
        print(
            f"warning: {heard} of the {len(scored)} clips are of speakers the model was trained or validated on: "
            "this is no held-out score, and emotion-promote --require-eval does not count it",
            file=sys.stderr,
        )
    # MLflow's own `mlflow.models.evaluate` (classifier) logs accuracy and weighted/per-class scores but not
    # UAR over the classes present, and scores one model output column; the report and matrix are ours, as in
    # training runs, so an evaluation reads like a test report.
    corpus = cfg.data.name
    tags = {ROLE_TAG: EVALUATION_ROLE, "corpus": corpus, "model_uri": source.uri, "source_run": source.run_id}
    tags |= {"speaker_adaptive": str(recognizer.adaptive).lower()}
    tags |= {"model_name": source.name, "model_version": source.version} if source.version else {}
    # artifacts beside the store, as training runs keep theirs (MLflow's default is ./mlruns of the current folder)
    location = experiment_artifact_location(args.tracking_uri, artifacts_beside(args.tracking_uri))
    ensure_experiment(args.tracking_uri, EXPERIMENT, location)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    run = client.create_run(experiment_id, run_name=f"{source.uri} on {corpus}", tags=tags)
    run_id = run.info.run_id
    for name, value in result.items():
        client.log_metric(run_id, name, value)
    params = {"clips": len(y_true), "skipped": len(skipped), "dropped": dropped or "none", "absent": absent or "none"}
    params |= {"silent": int(predictions["silent"].sum()) if "silent" in predictions else 0, "heard_clips": heard}
    params |= {"normalization": normalization_said(predictions["normalization"], recognizer.adaptive)}
    for name, value in params.items():
        client.log_param(run_id, name, str(value))
    digest = log_dataset(tracking_uri=args.tracking_uri, run_id=run_id, corpus=corpus, clips=scored, classes=classes)
    log_test_report(client, run_id, y_true, y_pred, classes)
    client.log_text(run_id, predictions.to_csv(index=False), PREDICTIONS_ARTIFACT)
    client.set_terminated(run_id)
    record = Evaluation(corpus, digest, result["eval/uar"], len(y_true), held_out=not heard, run_id=run_id)
    for name, value in record.tags().items():
        client.set_tag(source.run_id, name, value)
        if source.version:
            client.set_model_version_tag(source.name, source.version, name, value)
    summary = summary_text(source, corpus, result, len(y_true), dropped, absent, skipped)
    return run_id, result, summary + "\n  normalised: " + params["normalization"]


def normalization_said(ways: pd.Series, adaptive: bool) -> str:
    """How the clips were normalised, in words: by their speaker's statistics or the training population's."""
    if not adaptive:
        return "by the training population's statistics (the model is not speaker-adaptive)"
    by_speaker = int((ways == "speaker").sum())
    return (
        f"speaker-adaptive: {by_speaker} clip(s) by their own speaker's statistics, "
        f"{len(ways) - by_speaker} by the training population's (speakers with too few clips)"
    )


def summary_text(
    source: Source, corpus: str, result: dict[str, float], clips: int, dropped: dict, absent: list, skipped: list
) -> str:
    """The evaluation as the user reads it: one line of scores, then what was left out and why."""
    version = f" (version {source.version}, run {source.run_id})" if source.version else f" (run {source.run_id})"
    from emotion.metrics import METRICS

    lines = [
        f"{source.uri}{version} on {corpus}: {clips} clips",
        "  " + "   ".join(f"{metric.label} {result[f'eval/{metric.key}']:.3f}" for metric in METRICS),
    ]
    if absent:
        lines.append(f"  classes absent from {corpus}: {', '.join(absent)} (UAR and F1 over the classes present)")
    if dropped:
        lines.append(f"  dropped clips of classes the model does not know: {dropped}")
    if skipped:
        lines.append(f"  skipped {len(skipped)} unreadable file(s), each named above")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parse_args(argv)
    with errors_as_one_line():
        run_id, _, summary = evaluate(args)
    print(summary)
    print(f"  evaluation run {run_id} (experiment {EXPERIMENT!r})")


if __name__ == "__main__":
    main()
