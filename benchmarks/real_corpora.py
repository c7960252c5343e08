"""The results table on real speech: the report's setups, the whole-utterance policy and the eGeMAPS baseline.

Each row is one `emotion-train` command (printed, and run as a user would run it) on Emo-DB and SAVEE
(six classes), cross-validated leave-one-speaker-out unless the row says otherwise; the wall time is the
command's. Results are appended to the JSON file as each command ends, so an interrupted table resumes
where it stopped (rows already there are skipped).

python -m benchmarks.real_corpora --data ../shared/data                  # every row (hours on 2 CPU cores)
python -m benchmarks.real_corpora --data ../shared/data --only egemaps_linear --corpora savee
python -m benchmarks.real_corpora --data ../shared/data --only report_fusion --overrides trainer=gpu   # on a GPU
python -m benchmarks.real_corpora --data ../shared/data --corpora mix   # the cross-corpus rows (both corpora at once)
python -m benchmarks.real_corpora --table --docs docs/results.md   # print them, write them into the page, plot them
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from pathlib import Path

import mlflow

from benchmarks.common import machine
from benchmarks.results_tables import MIX, cross_corpus_table, plot_best_per_family, table, write_into

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "real_corpora.json"
EXPERIMENT = "real-corpora"

#: Where each corpus lies under `--data`, and its reader; `mix` is both at once (data=mix).
CORPORA = {"emodb": "emodb/wav", "savee": "savee"}

#: Row name -> (what it measures, overrides). `split=speaker` rows are single runs.
ROWS: dict[str, tuple[str, list[str]]] = {
    "egemaps_linear": ("eGeMAPS (88 functionals) + softmax regression", ["experiment=egemaps_linear", "split=loso"]),
    "report_cnn1d_mel": ("report 1D CNN, mean log-mel, centre crop", ["experiment=report_cnn1d_mel", "split=loso"]),
    "report_cnn2d_mel": ("report 2D CNN, log-mel, centre crop", ["experiment=report_cnn2d_mel", "split=loso"]),
    "cnn2d_mel_utterance": (
        "report 2D CNN, log-mel, whole utterance",
        ["experiment=report_cnn2d_mel", "features/window=utterance", "split=loso"],
    ),
    "report_protocol_cnn2d_mel": (
        "report 2D CNN, log-mel, the report's protocol: noise copies, then a random clip split (leaky)",
        ["experiment=report_cnn2d_mel", "split=clip", "augment=noise", "augment.before_split=true"],
    ),
    "report_cnn2d_mfcc": ("report 2D CNN, MFCC, centre crop", ["experiment=report_cnn2d_mfcc", "split=loso"]),
    "report_fusion": ("report fusion (log-mel + MFCC), centre crop", ["experiment=report_fusion", "split=loso"]),
    "compact_tdnn": (
        "compact TDNN (0.68 M), log-mel minus its clip mean, whole utterance",
        ["experiment=compact_tdnn", "split=loso"],
    ),
    "compact_tdnn_crop": (
        "compact TDNN (0.68 M), log-mel minus its clip mean, centre crop",
        ["experiment=compact_tdnn", "features/window=crop", "split=loso"],
    ),
    "compact_tdnn_tuned": (
        "compact TDNN (0.68 M), log-mel minus its clip mean, whole utterance, tuned on SAVEE (sweep=compact_tdnn)",
        [
            "experiment=compact_tdnn",
            "model.optimizer.lr=0.0015",
            "model.optimizer.weight_decay=0.0047",
            "model.net.dropout=0.49",
            "model.loss.mixup_alpha=0",
            "augment.spec.freq_mask=8",
            "split=loso",
        ],
    ),
    "ssl_wavlm_base_plus": (
        "frozen WavLM Base+ (pretrained), every layer mean-pooled, weighted sum and small head",
        ["features=ssl", "features.encoder=WAVLM_BASE_PLUS", "model=ssl_head", "split=loso"],
    ),
    "whisper_base_cut": (
        "frozen Whisper base (pretrained), its 7 layers mean-pooled (cut input), weighted sum, softmax regression",
        [
            "experiment=whisper_base",
            "features.encoder={models}/whisper-base",
            "features.whisper_input=cut",
            "split=loso",
        ],
    ),
    "whisper_base_pad30": (
        "frozen Whisper base (pretrained), its 7 layers mean-pooled (30 s input), weighted sum, softmax regression",
        [
            "experiment=whisper_base",
            "features.encoder={models}/whisper-base",
            "features.whisper_input=pad30",
            "split=loso",
        ],
    ),
    "whisper_base_heads": (
        "frozen Whisper base (cut input), each layer's mean over the clip, population statistics, head chosen per "
        "fold (logistic regression on all layers or their mean, or an RBF SVM on their mean; model=heads)",
        [
            "experiment=whisper_base_adaptive",
            "features.encoder={models}/whisper-base",
            "normalize=population",
            "model=heads",
            "features.whisper_input=cut",
            "split=loso",
        ],
    ),
    "whisper_base_adaptive": (
        "frozen Whisper base (cut input), each layer's mean over the clip, **each speaker standardised on their own "
        "clips**, head chosen per fold (model=heads)",
        [
            "experiment=whisper_base_adaptive",
            "features.encoder={models}/whisper-base",
            "model=heads",
            "features.whisper_input=cut",
            "split=loso",
        ],
    ),
    "whisper_base_adaptive_pad30": (
        "the same, speaker-adaptive, 30 s input (pad30): the recipe, experiment=whisper_base_adaptive",
        [
            "experiment=whisper_base_adaptive",
            "features.encoder={models}/whisper-base",
            "model=heads",
            "features.whisper_input=pad30",
            "split=loso",
        ],
    ),
    "whisper_base_adaptive_svm": (
        "frozen Whisper base (cut input), mean of the layers, **speaker-adaptive**, RBF SVM (model=svm)",
        [
            "experiment=whisper_base_adaptive",
            "features.encoder={models}/whisper-base",
            "model=svm",
            "features.whisper_input=cut",
            "split=loso",
        ],
    ),
    "whisper_base_adaptive_logreg_all": (
        "frozen Whisper base (cut input), all layers side by side, **speaker-adaptive**, logistic regression",
        [
            "experiment=whisper_base_adaptive",
            "features.encoder={models}/whisper-base",
            "model=logreg",
            "model.layers=all",
            "features.whisper_input=cut",
            "split=loso",
        ],
    ),
    "egemaps_linear_adaptive": (
        "eGeMAPS + softmax regression, **each speaker standardised on their own clips**",
        ["experiment=egemaps_linear", "normalize=speaker", "split=loso"],
    ),
    "compact_tdnn_raw": (
        "compact TDNN (0.68 M), log-mel, whole utterance",
        ["experiment=compact_tdnn", "model.net.utterance_mean_norm=false", "split=loso"],
    ),
    "compact_tdnn_raw_crop": (
        "compact TDNN (0.68 M), log-mel, centre crop",
        ["experiment=compact_tdnn", "model.net.utterance_mean_norm=false", "features/window=crop", "split=loso"],
    ),
}

#: Rows of both corpora at once (`--corpora mix`): the cross-corpus table.
MIX_ROWS: dict[str, tuple[str, list[str]]] = {
    "egemaps_linear_loco": (
        "eGeMAPS + softmax regression, trained on the other corpus (leave one corpus out)",
        ["experiment=egemaps_linear", "split=loco"],
    ),
    "egemaps_linear_mixed": (
        "eGeMAPS + softmax regression, trained on both (5 speaker folds over both corpora)",
        ["experiment=egemaps_linear", "split=kfold", "split.n_folds=5"],
    ),
}

#: Every row, by name.
ALL_ROWS = {**ROWS, **MIX_ROWS}


def data_overrides(corpus: str, data: Path) -> list[str]:
    """`data=...` and its folder(s): one corpus, or both (`mix`)."""
    if corpus == MIX:
        return ["data=mix", *(f"data.roots.{name}={(data / folder).resolve()}" for name, folder in CORPORA.items())]
    return [f"data={corpus}", f"data.root={(data / CORPORA[corpus]).resolve()}"]


def command(row: str, corpus: str, folders: Folders, tracking_uri: str, overrides: list[str]) -> list[str]:
    """The `emotion-train` command of one row on one corpus (`overrides` after the row's, e.g. `trainer=gpu`)."""
    data, models = folders
    return [
        "emotion-train",
        *(override.replace("{models}", str(models.resolve())) for override in ALL_ROWS[row][1]),
        *data_overrides(corpus, data),
        *overrides,
        f"logger.tracking_uri={tracking_uri}",
        f"logger.experiment_name={EXPERIMENT}",
        f"logger.run_name=table-{row}",
        "+trainer.enable_progress_bar=false",
    ]


def measured(run: mlflow.entities.Run) -> dict[str, float]:
    """The row's figures from its run: the CV parent's aggregates, or a single run's test metrics."""
    metrics = run.data.metrics
    if run.data.tags.get("role") == "cv":
        keys = ("test/uar_mean", "test/uar_std", "test/uar_pooled", "test/acc_mean", "test/acc_std", "val/uar")
        per_corpus = {key: value for key, value in metrics.items() if "_pooled/" in key}
        folds = len(json.loads(_artifact(run, "cv_folds.json")))
        adaptive = {"speaker_adaptive": run.data.tags.get("speaker_adaptive") == "true"}
        return {key: metrics[key] for key in keys} | per_corpus | {"folds": folds} | adaptive
    return {"test/uar": metrics["test/uar"], "test/acc": metrics["test/acc"], "val/uar": metrics["val/uar"]}


def _artifact(run: mlflow.entities.Run, path: str) -> str:
    return Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=path)).read_text()


def latest_run(tracking_uri: str, row: str, corpus: str) -> mlflow.entities.Run:
    """The newest top-level run of `row` on `corpus` (the CV parent, or the single run)."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        f"tags.data = '{corpus}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    top = [r for r in runs if r.info.run_name.startswith(f"table-{row}") and "mlflow.parentRunId" not in r.data.tags]
    return top[0]


class RowFailed(RuntimeError):
    """A row's command ended in error: the other rows still run."""


#: The folders of the corpora (`--data`) and of pretrained models (`--models`), as the user gave them.
Folders = tuple[Path, Path]


def as_given(cmd: list[str], folders: Folders) -> str:
    """The command as a user types it from the project's folder: the folders as given, not resolved."""
    text = shlex.join(cmd)
    for folder in folders:
        text = text.replace(str(folder.resolve()), str(folder))
    return text


def run_row(row: str, corpus: str, folders: Folders, workdir: Path, overrides: list[str]) -> dict:
    tracking_uri = f"sqlite:///{(workdir / 'mlruns.db').resolve()}"
    cmd = command(row, corpus, folders, tracking_uri, overrides)
    print("$", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    log_path = workdir / f"{row}-{corpus}.log"
    with log_path.open("w") as log:
        finished = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    if finished.returncode:
        last = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise RowFailed(f"row {row} on {corpus} failed: {last[0]} (whole log: {log_path})")
    wall = time.perf_counter() - start
    return {
        "row": row,
        "corpus": corpus,
        "what": ALL_ROWS[row][0],
        "command": as_given(cmd[:-4], folders) + " ...",
        "wall_s": round(wall, 1),
        **measured(latest_run(tracking_uri, row, corpus)),
        "machine": machine(),
    }


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding emodb/ and savee/")
    parser.add_argument("--models", type=Path, default=Path("../shared/models"), help="folder of pretrained models")
    parser.add_argument("--workdir", type=Path, default=Path("real-corpora"), help="MLflow store, logs, outputs")
    parser.add_argument("--only", nargs="+", choices=sorted(ALL_ROWS), help="default: every row")
    parser.add_argument("--corpora", nargs="+", choices=[*sorted(CORPORA), MIX], default=["savee", "emodb"])
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides added to every command")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file rows are read from and added to")
    parser.add_argument("--table", action="store_true", help="only print the table of the results file")
    parser.add_argument("--docs", type=Path, help="also write the tables between this page's markers, and the plot")
    args = parser.parse_args()
    results = load_results(args.results)
    failures: list[str] = []
    if not args.table:
        args.workdir.mkdir(parents=True, exist_ok=True)
        done = {(r["row"], r["corpus"]) for r in results}
        for corpus in args.corpora:
            rows = MIX_ROWS if corpus == MIX else ROWS
            for row in [r for r in (args.only or rows) if r in rows]:
                if (row, corpus) in done:
                    continue
                try:
                    results.append(run_row(row, corpus, (args.data, args.models), args.workdir, args.overrides))
                except RowFailed as failure:
                    failures.append(str(failure))
                    print(failure, flush=True)
                    continue
                args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, list(ROWS)), cross_corpus_table(results), sep="\n\n")
    if args.docs:
        write_into(args.docs, "real-corpora-table", table(results, list(ROWS)))
        write_into(args.docs, "cross-corpus-table", cross_corpus_table(results))
        plot_best_per_family(results, args.docs.with_suffix(".png"))
    if failures:
        raise SystemExit(f"{len(failures)} row(s) failed:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
