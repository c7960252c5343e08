"""`emotion-runs`: the finished runs and cross-validations of an experiment side by side, by corpus.

emotion-runs                                   # experiment "emotion"
emotion-runs --study whisper_head              # the trials of one study
emotion-runs --filter "tags.split = 'loso'"    # any MLflow search filter

A run shows its test UAR and accuracy; a cross-validation the mean ± std over its folds and the UAR of
every fold's clips pooled. The protocol says `speaker-adaptive` where test speakers were standardised by their
own clips (`normalize=speaker`). Each corpus is a table of its own (their scores do not compare), best
validation UAR first.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import TYPE_CHECKING

from emotion.cli import errors_as_one_line
from emotion.config import logger_defaults
from emotion.errors import EmotionError
from emotion.tracking.names import CV_ROLE, CV_TAG, FOLD_TAG, ROLE_TAG, STUDY_ROLE

if TYPE_CHECKING:  # MLflow is imported once the arguments are read: `--help` answers at once
    from mlflow.entities import Run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = logger_defaults()
    parser = argparse.ArgumentParser(prog="emotion-runs", description=__doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--tracking-uri", default=defaults["tracking_uri"], help="default: %(default)s")
    parser.add_argument("--experiment", default=defaults["experiment_name"], help="default: %(default)s")
    parser.add_argument("--study", help="only the trials of this Optuna study (its MLflow tag `study`)")
    parser.add_argument("--filter", help="an extra MLflow search filter, e.g. \"tags.architecture = 'tdnn'\"")
    parser.add_argument("--top", type=int, default=20, help="rows per corpus (default: %(default)s)")
    return parser.parse_args(argv)


def compared_runs(args: argparse.Namespace) -> list[Run]:
    """The FINISHED runs and cross-validations in scope: no fold, no study's parent run."""
    import mlflow

    from emotion.serving.registry import Ranking, require_store

    require_store(args.tracking_uri)
    client = mlflow.MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise EmotionError(f"no experiment {args.experiment!r} in {args.tracking_uri}")
    scope = Ranking(args.experiment, study=args.study, filter=args.filter).filter_string()
    found = client.search_runs([experiment.experiment_id], scope, max_results=5000)
    return [r for r in found if FOLD_TAG not in r.data.tags and r.data.tags.get(ROLE_TAG) != STUDY_ROLE]


def row(run: Run) -> tuple[float, str]:
    """(validation UAR for ordering, the row's text)."""
    metrics, tags = run.data.metrics, run.data.tags
    val = metrics.get("val/uar_best", float("nan"))
    if tags.get(ROLE_TAG) == CV_ROLE:
        kind = f"{tags.get(CV_TAG, 'cv')}, {run.data.params.get('folds', '?')} folds"
        uar = f"{_score(metrics, 'test/uar_mean')} ± {_score(metrics, 'test/uar_std')}"
        pooled, acc = _score(metrics, "test/uar_pooled"), _score(metrics, "test/acc_mean")
    else:
        kind, uar, pooled, acc = tags.get("split", "run"), _score(metrics, "test/uar"), "", _score(metrics, "test/acc")
    kind += ", speaker-adaptive" if tags.get("speaker_adaptive") == "true" else ""
    text = f"{val:>7.4f}  {uar:>15}  {pooled:>6}  {acc:>6}  {kind:<32}  {run.info.run_id}  {run.info.run_name or ''}"
    return (-val if val == val else float("inf")), text


def _score(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "-"


def format_tables(runs: list[Run], top: int) -> str:
    """One table per corpus, best validation UAR first."""
    by_corpus: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_corpus[run.data.tags.get("data", "?")].append(run)
    header = f"{'val UAR':>7}  {'test UAR':>15}  {'pooled':>6}  {'acc':>6}  {'protocol':<32}  {'run id':<32}  run"
    blocks = []
    for corpus, members in sorted(by_corpus.items()):
        rows = [text for _, text in sorted(row(run) for run in members)][:top]
        blocks.append("\n".join([f"{corpus} ({len(members)} runs)", header, "-" * len(header), *rows]))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parse_args(argv)
    with errors_as_one_line():
        runs = compared_runs(args)
        if not runs:
            raise EmotionError(f"no FINISHED run in experiment {args.experiment!r} matches")
    print(format_tables(runs, args.top))


if __name__ == "__main__":
    main()
