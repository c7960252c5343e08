"""`emotion-promote`: register the best finished run in the MLflow Model Registry as `emotion@champion`.

emotion-promote                                   # best val/uar_best of experiment "emotion"
emotion-promote --study cnn2d_logmel --dry-run    # the leaderboard of one study, and what would happen
emotion-promote --metric val/loss_best --mode min --name emotion-mfcc   # runs that monitored val/loss
emotion-promote --study whisper_adaptive --max-ms-per-clip 100  # the best whose inference costs at most 100 ms a clip
"""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING

from emotion.cli import errors_as_one_line
from emotion.config import logger_defaults
from emotion.errors import EmotionError
from emotion.tracking.names import COST_METRIC, OVERRIDES_TAG

if TYPE_CHECKING:  # MLflow is imported once the arguments are read: `--help` and typos answer at once
    import mlflow
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from emotion.serving.registry import Ranking

#: Aliases of `emotion.serving.registry`, repeated here so that the help text needs no MLflow import.
CHAMPION, PREVIOUS = "champion", "previous"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = logger_defaults()
    parser = argparse.ArgumentParser(
        prog="emotion-promote", description="Register the best finished run and give it the alias 'champion'."
    )
    parser.add_argument("--tracking-uri", default=defaults["tracking_uri"], help="default: %(default)s")
    parser.add_argument("--experiment", default=defaults["experiment_name"], help="default: %(default)s")
    parser.add_argument("--study", help="only the trials of this Optuna study (its MLflow tag `study`)")
    parser.add_argument(
        "--metric",
        default="val/uar_best",
        help="what 'best' means (default: %(default)s, the value of the checkpoint each run keeps)",
    )
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="default: %(default)s")
    parser.add_argument("--filter", help="an extra MLflow search filter, e.g. \"tags.split = 'speaker'\"")
    parser.add_argument(
        "--max-ms-per-clip",
        type=float,
        metavar="MS",
        help=f"only runs whose measured inference cost ({COST_METRIC}: sweep trials, runs of +cost.clips=N) is at "
        "most MS milliseconds per clip",
    )
    parser.add_argument("--name", default="emotion", help="registered model name (default: %(default)s)")
    parser.add_argument("--allow-leaky", action="store_true", help="promote a run of the report's leaky protocol")
    parser.add_argument(
        "--allow-new-classes",
        action="store_true",
        help="promote a run whose classes differ from the current champion's (the served columns change)",
    )
    parser.add_argument(
        "--allow-new-corpus",
        action="store_true",
        help="promote a run trained on another corpus than the current champion's (its scores are not comparable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the leaderboard and the plan, change nothing")
    parser.add_argument(
        "--require-eval",
        action="append",
        default=[],
        metavar="CORPUS",
        help="refuse unless the run was evaluated on CORPUS (emotion-evaluate); repeat for several",
    )
    parser.add_argument(
        "--with-upstream",
        action="store_true",
        help="features=ssl: put the encoder's weights into the model (tens to hundreds of MB), so serving needs "
        "neither the folder nor the hub cache",
    )
    parser.add_argument("--top", type=int, default=10, help="leaderboard rows to print (default: %(default)s)")
    return parser.parse_args(argv)


def format_leaderboard(runs: list[Run], metric: str) -> str:
    """The competing runs as a text table, best first, with the held-out UAR of each corpus they were evaluated on.

    Each row's run ID, score, classes, protocol and study trial come first; its full name ends the row.
    """
    from emotion.tracking.evaluations import evaluations, held_out_on

    corpora = sorted({e.corpus for run in runs for e in evaluations(run.data.tags)})
    columns = "".join(f"  {'eval ' + corpus:>11}" for corpus in corpora)
    header = f"{'#':>2}  {'run id':<32}  {metric:>9}  {'test/acc':>8}{columns}  {'corpus':<12} {'classes':<7}  "
    header += f"{'split':<8} {'leaky':<5}  {'study':<16} {'trial':>5}  run"
    lines = [header, "-" * len(header)]
    for rank, run in enumerate(runs, 1):
        metrics, tags = run.data.metrics, run.data.tags
        test_acc = f"{metrics['test/acc']:.4f}" if "test/acc" in metrics else "-"
        held_out = [held_out_on(tags, corpus) for corpus in corpora]
        scores = "".join(f"  {f'{e.uar:.4f}' if e else '-':>11}" for e in held_out)
        lines.append(
            f"{rank:>2}  {run.info.run_id:<32}  {metrics[metric]:>9.4f}  {test_acc:>8}{scores}  "
            f"{tags.get('data', '-'):<12} {len(run_classes(run)) or '-':<7}  "
            f"{tags.get('split', '-'):<8} {tags.get('leaky', '-'):<5}  "
            f"{tags.get('study', '-'):<16} {tags.get('trial_number', '-'):>5}  {run.info.run_name or ''}"
        )
    return "\n".join(lines)


def budget_filter(args: argparse.Namespace) -> str | None:
    """`--filter` and `--max-ms-per-clip` as one MLflow search filter (None: neither given)."""
    budget = f"metrics.`{COST_METRIC}` <= {args.max_ms_per_clip}" if args.max_ms_per_clip is not None else None
    return " and ".join(clause for clause in (args.filter, budget) if clause) or None


def over_budget(candidates: list[Run], metric: str, budget: float) -> str:
    """Why none of `candidates` fits `--max-ms-per-clip`: the cheapest cost seen, or that none was measured."""
    measured = [run for run in candidates if COST_METRIC in run.data.metrics]
    if not measured:
        return (
            f"no run that logged {metric} measured {COST_METRIC}, so none fits --max-ms-per-clip {budget:g} "
            "(sweep trials measure it; train a run with +cost.clips=16)"
        )
    cheapest = min(measured, key=lambda run: run.data.metrics[COST_METRIC])
    return (
        f"no run costs at most {budget:g} ms per clip: the cheapest of the {len(measured)} that measured it costs "
        f"{cheapest.data.metrics[COST_METRIC]:.1f} (run {cheapest.info.run_name}, {cheapest.info.run_id})"
    )


def run_classes(run: Run) -> list[str]:
    """The classes a run was trained on (its `data.classes` param), in order."""
    text = run.data.params.get("data.classes", "")
    return [c.strip(" '\"") for c in text.strip("[]").split(",") if c.strip(" '\"")]


def check_same_classes(best: Run, champion_run: Run | None, allowed: bool) -> None:
    """PromotionError if `best` has other classes than the champion's run, unless `allowed`."""
    from emotion.serving.registry import PromotionError

    if champion_run is None or allowed or not run_classes(best) or run_classes(best) == run_classes(champion_run):
        return
    raise PromotionError(
        f"run {best.info.run_name} ({best.info.run_id}) predicts {run_classes(best)}, the champion "
        f"{run_classes(champion_run)}: promoting it would change the served columns. Pass "
        "--allow-new-classes to promote it anyway, or --filter to rank runs of the champion's classes"
    )


def retrain_hint(client: mlflow.MlflowClient, ranking: Ranking) -> str | None:
    """For a study whose trials are cross-validations, the command that trains its best trial once on a speaker
    split (`split=speaker`)."""
    from emotion.serving.registry import best_cross_validation

    parent = best_cross_validation(client, ranking)
    if parent is None:
        return None
    tags = parent.data.tags
    overrides = [
        o
        for o in shlex.split(tags.get(OVERRIDES_TAG, ""))
        if not o.startswith(("split=", "split.", "cv=", "cv.", "+trial."))
    ]
    clips = parent.data.params.get("cost.clips")  # the trial measured its cost: the run measures its own too
    command = shlex.join(["emotion-train", *overrides, "split=speaker", f"+logger.tags.study={ranking.study}",
                          f"+logger.tags.trial_number={tags.get('trial_number', '')}",
                          *([f"+cost.clips={clips}"] if clips else [])])  # fmt: skip
    return (
        f"study {ranking.study!r}'s trials are cross-validations, whose parent runs hold no model (their folds "
        f"do, each trained on a subset of the speakers). Its best is trial {tags.get('trial_number', '?')} "
        f"({ranking.metric}={parent.data.metrics[ranking.metric]:.4f}, run {parent.info.run_id}): train it once "
        f"on a speaker split, as a run of the study, then promote that run:\n  {command}\n  "
        f"emotion-promote --study {ranking.study}"
    )


def check_same_corpus(best: Run, champion_run: Run | None, allowed: bool) -> None:
    """PromotionError if `best` was trained on another corpus than the champion's run (both known), unless
    `allowed`."""
    from emotion.serving.registry import PromotionError

    corpus, champions = best.data.tags.get("data"), champion_run.data.tags.get("data") if champion_run else None
    if allowed or not corpus or not champions or corpus == champions:
        return
    raise PromotionError(
        f"run {best.info.run_name} ({best.info.run_id}) was trained on {corpus}, the champion on {champions}: "
        "their validation scores are not comparable. Pass --allow-new-corpus to promote it anyway, or "
        f"--filter \"tags.data = '{champions}'\" to rank runs of the champion's corpus"
    )


def unranked_cross_validations(client: mlflow.MlflowClient, ranking: Ranking) -> str | None:
    """Why the cross-validations in the leaderboard's scope are absent from it, if there are any."""
    from emotion.serving.registry import cross_validation_parents

    parents = cross_validation_parents(client, ranking)
    if not parents:
        return None
    return (
        f"not ranked: {len(parents)} cross-validation(s) (their parent runs hold no model, and each fold's model "
        "trained on a subset of the speakers); train the chosen setup once with split=speaker and promote that run"
    )


def check_evaluated(run: Run, corpora: list[str]) -> None:
    """PromotionError unless `run` was evaluated (`emotion-evaluate`) on unheard speakers of each of `corpora`."""
    from emotion.serving.registry import PromotionError
    from emotion.tracking.evaluations import held_out_on

    missing = [corpus for corpus in corpora if held_out_on(run.data.tags, corpus) is None]
    if missing:
        raise PromotionError(
            f"run {run.info.run_name} ({run.info.run_id}) has no held-out evaluation on {', '.join(missing)} "
            f"(--require-eval; one on speakers it trained on does not count): evaluate it first, e.g. "
            f"emotion-evaluate runs:/{run.info.run_id} data={missing[0]} data.root=PATH"
        )


def dry_run_plan(best: Run, what: str, args: argparse.Namespace, old: ModelVersion | None) -> str:
    """What a real promotion would do, said without doing it."""
    from emotion.serving.registry import UPSTREAM_TAG, PromotionError, check_promotable

    try:
        check_promotable(best, args.allow_leaky)
    except PromotionError as exc:
        return f"would refuse: {exc}"
    carried = old is not None and old.tags.get(UPSTREAM_TAG) == "true"
    if old is not None and old.run_id == best.info.run_id and (carried or not args.with_upstream):
        return f"{what} is already {args.name}@{CHAMPION} (version {old.version}): nothing would change"
    now = f"version {old.version} (run {old.run_id}), which would become @{PREVIOUS}" if old else "none"
    return f"would register {what} as a new version of {args.name} with alias @{CHAMPION}; current champion: {now}"


def nothing_to_promote(client: mlflow.MlflowClient, ranking: Ranking, args: argparse.Namespace) -> str:
    """Why no run competes: no such study, a study of cross-validations to train once, a cost budget that none
    meets, or no run at all."""
    from emotion.serving.registry import Ranking, cross_validation_parents, leaderboard, study_names

    if args.study and args.study not in (studies := study_names(client, args.experiment)):
        return f"no study {args.study!r} in experiment {args.experiment!r} (its studies: {studies or 'none'})"
    if args.study and (hint := retrain_hint(client, ranking)):
        return hint
    if args.max_ms_per_clip is not None:
        unbudgeted = Ranking(args.experiment, args.metric, args.mode, args.study, args.filter)
        if candidates := leaderboard(client, unbudgeted, limit=1000) or cross_validation_parents(client, unbudgeted):
            return over_budget(candidates, args.metric, args.max_ms_per_clip)
    scope = f"study {args.study!r}" if args.study else f"experiment {args.experiment!r}"
    return f"no FINISHED run of {scope} logged {args.metric}: nothing to promote"


def run(args: argparse.Namespace) -> None:
    import mlflow

    from emotion.serving.registry import Ranking, current_champion, leaderboard, promote, require_store

    require_store(args.tracking_uri)
    client = mlflow.MlflowClient(args.tracking_uri)
    ranking = Ranking(args.experiment, args.metric, args.mode, args.study, budget_filter(args))
    runs = leaderboard(client, ranking, limit=args.top)
    if not runs:
        raise EmotionError(nothing_to_promote(client, ranking, args))
    print(format_leaderboard(runs, args.metric))
    if args.max_ms_per_clip is not None:
        costs = ", ".join(f"#{rank} {run.data.metrics[COST_METRIC]:.1f}" for rank, run in enumerate(runs, 1))
        print(f"within --max-ms-per-clip {args.max_ms_per_clip:g} ({COST_METRIC}: {costs})")
    if note := unranked_cross_validations(client, ranking):
        print(note)
    best = runs[0]
    old = current_champion(client, args.name)
    what = f"run {best.info.run_name} ({best.info.run_id}, {args.metric}={best.data.metrics[args.metric]:.4f})"
    if args.dry_run:
        print(f"\ndry run: {dry_run_plan(best, what, args, old)}")
        return
    check_evaluated(best, args.require_eval)
    champion_run = client.get_run(old.run_id) if old is not None else None
    check_same_corpus(best, champion_run, args.allow_new_corpus)
    check_same_classes(best, champion_run, args.allow_new_classes)
    version, previous = promote(
        args.tracking_uri, best, args.name, args.metric, args.allow_leaky, with_upstream=args.with_upstream
    )
    if previous is None and old is not None and old.version == version.version:
        print(f"\n{what} is already {args.name}@{CHAMPION} (version {version.version}): nothing changed")
        return
    print(f"\nregistered {what} as {args.name} version {version.version}, alias @{CHAMPION}")
    if previous is not None:
        print(f"version {previous.version} is now @{PREVIOUS}")
    print(f"predict with: emotion-predict --model models:/{args.name}@{CHAMPION} PATH...")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parse_args(argv)
    with errors_as_one_line():
        run(args)


if __name__ == "__main__":
    main()
