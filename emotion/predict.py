"""`emotion-predict`: emotions of audio files with a registered model (default `models:/emotion@champion`).

emotion-predict clip.wav other.flac
emotion-predict recordings/ --format csv --output predictions.csv
emotion-predict recordings/ --model models:/emotion/3
emotion-predict recordings/ --on-bad-file error       # stop at the first unreadable or too short file
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from emotion.config import logger_defaults
from emotion.data.corpora import AUDIO_SUFFIXES
from emotion.errors import DataError, EmotionError

if TYPE_CHECKING:  # MLflow and pandas are imported once the arguments are read: `--help` answers at once
    import mlflow
    import pandas as pd

FORMATS = ("table", "csv", "json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emotion-predict", description="Predict the emotion of audio files.")
    parser.add_argument("paths", nargs="+", type=Path, help=f"audio files or folders (searched for {AUDIO_SUFFIXES})")
    parser.add_argument(
        "--model", default="models:/emotion@champion", help="any MLflow model URI (default: %(default)s)"
    )
    parser.add_argument("--tracking-uri", default=logger_defaults()["tracking_uri"], help="default: %(default)s")
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: %(default)s")
    parser.add_argument("--output", "-o", type=Path, help="write to this file instead of standard output")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per forward pass (default: %(default)s)")
    parser.add_argument(
        "--on-bad-file",
        choices=("skip", "error"),
        default="skip",
        help="skip: predict the other files, warn for each bad one and exit 1; error: stop at the first "
        "(default: %(default)s)",
    )
    return parser.parse_args(argv)


def audio_files(paths: Iterable[Path]) -> list[Path]:
    """The given files, and the audio files found under the given folders, in order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    return files


def load_model(uri: str, tracking_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """The pyfunc at `uri`; EmotionError saying what is missing when it cannot be loaded."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from emotion.tracking.registry import check_model_uri, require_store

    if re.fullmatch(r"runs:/[0-9a-f]{32}/?", uri):  # a run: the model it logged when it trained
        uri = uri.rstrip("/") + "/model"
    if uri.startswith(("models:/", "runs:/")):  # looked up in the store, which must exist
        require_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    check_model_uri(mlflow.MlflowClient(tracking_uri), uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise EmotionError(f"cannot load model {uri} from {tracking_uri}: {exc}") from None


def predict(
    model: mlflow.pyfunc.PyFuncModel, files: list[Path], batch_size: int, on_bad_file: str = "error"
) -> tuple[pd.DataFrame, list[str]]:
    """One row per readable file: `file`, then the model's columns; and one message per file skipped.

    A batch holding a bad file (undecodable, too short or too long) is predicted again file by file, so that
    under `on_bad_file="skip"` only the bad files are left out; under `"error"` the first one stops it.
    The model reads the files by path: the folders that hold them are the ones it is allowed to read.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from emotion.tracking.pyfunc import AUDIO_DIRS

    os.environ[AUDIO_DIRS] = os.pathsep.join(sorted({str(file.resolve().parent) for file in files}))

    frames: list[pd.DataFrame] = []
    skipped: list[str] = []
    with tqdm(total=len(files), unit="file", desc="predicting", disable=len(files) < 2, file=sys.stderr) as bar:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            try:
                frames.append(_predict_files(model, batch))
            except DataError:
                for file in batch:
                    try:
                        frames.append(_predict_files(model, [file]))
                    except DataError as exc:
                        if on_bad_file == "error":
                            made = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
                            raise PartialPredictions(f"{exc} ({len(made)} files predicted before it)", made) from None
                        skipped.append(str(exc))
                        tqdm.write(f"warning: skipped {file}: {exc}", file=sys.stderr)
            bar.update(len(batch))
    if not frames:
        raise DataError(f"no file could be predicted ({len(skipped)} skipped), e.g. {skipped[0]}")
    return pd.concat(frames, ignore_index=True), skipped


def _predict_files(model: mlflow.pyfunc.PyFuncModel, files: list[Path]) -> pd.DataFrame:
    """The model's predictions of `files`; DataError with the model's message if it refuses one."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        frame = model.predict(pd.DataFrame({"path": [str(p) for p in files]}))
    except MlflowException as exc:
        if exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
        raise DataError(exc.message) from None
    frame.insert(0, "file", [str(p) for p in files])
    return frame


class PartialPredictions(EmotionError):
    """Prediction stopped at a file (`--on-bad-file error`, or a failure); `predictions` holds those made before."""

    def __init__(self, message: str, predictions: pd.DataFrame) -> None:
        super().__init__(message)
        self.predictions = predictions


def check_writable(output: Path | None) -> None:
    """EmotionError before any work if `--output` cannot be written: its folder is missing, or is read-only."""
    if output is None:
        return
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise EmotionError(f"cannot write --output {output}: no folder {folder}")
    if output.is_dir() or not os.access(folder, os.W_OK):
        raise EmotionError(f"cannot write --output {output}: it is a folder, or its folder is read-only")


def write(text: str, output: Path | None, count: int) -> None:
    """The rendered predictions to standard output, or to `output`, saying how many."""
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text)
    print(f"wrote {count} predictions to {output}", file=sys.stderr)


def render(predictions: pd.DataFrame, fmt: str) -> str:
    """The predictions as an aligned text table, CSV or a JSON list of records."""
    if fmt == "csv":
        return predictions.to_csv(index=False, float_format="%.4f")
    if fmt == "json":
        return json.dumps(predictions.round(4).to_dict(orient="records"), indent=2) + "\n"
    return _text_table(predictions)


def _text_table(predictions: pd.DataFrame) -> str:
    """Text columns left-aligned, probabilities right-aligned with 3 decimals."""
    cells = [
        [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in predictions.itertuples(index=False)
    ]
    columns = list(predictions.columns)
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(columns)]
    numeric = [predictions[name].dtype.kind == "f" for name in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))

    return "\n".join(line(row).rstrip() for row in [columns, *cells]) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parse_args(argv)
    try:
        check_writable(args.output)
        files = audio_files(args.paths)
        model = load_model(args.model, args.tracking_uri)
        predictions, skipped = predict(model, files, args.batch_size, args.on_bad_file)
    except PartialPredictions as stopped:  # what was predicted before the failure is kept
        write(render(stopped.predictions, args.format), args.output, len(stopped.predictions))
        print(f"error: {stopped}", file=sys.stderr)
        raise SystemExit(1) from None
    except EmotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    write(render(predictions, args.format), args.output, len(predictions))
    if skipped:
        print(f"error: skipped {len(skipped)} of {len(files)} files (each named above)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
