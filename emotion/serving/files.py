"""Predicting audio files with a trained model (`emotion-predict`, `emotion-evaluate`): find the files, restore the
model (`EmotionRecognizer`) from a URI, classify in batches and keep going past bad files (or stop at the first,
keeping what was predicted)."""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from emotion.data.corpora.base import audio_files as folder_audio_files
from emotion.errors import DataError, EmotionError

if TYPE_CHECKING:  # torch, MLflow and pandas load only when a model is loaded: the CLIs' `--help` answers at once
    import pandas as pd

    from emotion.serving.recognizer import EmotionRecognizer


def audio_files(paths: Iterable[Path]) -> list[Path]:
    """The given files, and the audio files found under the given folders (`emotion.data.corpora.audio_files`),
    in order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(folder_audio_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    return files


def load_recognizer(uri: str, tracking_uri: str) -> EmotionRecognizer:
    """The trained model at `uri`; EmotionError saying what is missing when it cannot be loaded.

    `runs:/ID`: the run's kept checkpoint (promoted or not); any other MLflow model URI (`models:/NAME@ALIAS`,
    `models:/NAME/VERSION`, `runs:/ID/model`, a folder): the model logged there, as the server loads it.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from emotion.serving.recognizer import EmotionRecognizer
    from emotion.serving.registry import check_model_uri, download_checkpoint, require_store

    if uri.startswith(("models:/", "runs:/")):  # looked up in the store, which must exist
        require_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    run = re.fullmatch(r"runs:/(?P<run_id>[0-9a-f]{32})/?", uri)
    try:
        if run:
            with tempfile.TemporaryDirectory() as folder:
                return EmotionRecognizer.from_checkpoint(download_checkpoint(client, run["run_id"], Path(folder)))
        check_model_uri(client, uri)
        return mlflow.pyfunc.load_model(uri).unwrap_python_model().recognizer
    except (MlflowException, OSError) as exc:
        raise EmotionError(f"cannot load model {uri} from {tracking_uri}: {exc}") from None


def predict(
    recognizer: EmotionRecognizer, files: list[Path], batch_size: int, on_bad_file: str = "error"
) -> tuple[pd.DataFrame, list[str]]:
    """One row per readable file: `file`, then the served model's columns; and one message per file skipped.

    A batch holding a bad file (undecodable, too short or too long) is predicted again file by file, so that
    under `on_bad_file="skip"` only the bad files are left out; under `"error"` the first one stops it.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    frames: list[pd.DataFrame] = []
    skipped: list[str] = []
    with tqdm(total=len(files), unit="file", desc="predicting", disable=len(files) < 2, file=sys.stderr) as bar:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            try:
                frames.append(_predict_files(recognizer, batch))
            except DataError:
                for file in batch:
                    try:
                        frames.append(_predict_files(recognizer, [file]))
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


def _predict_files(recognizer: EmotionRecognizer, files: list[Path]) -> pd.DataFrame:
    """The model's predictions of `files`, a row each; DataError naming a file it cannot take."""
    frame = recognizer.classify_files(files).frame()
    frame.insert(0, "file", [str(p) for p in files])
    return frame


class PartialPredictions(EmotionError):
    """Prediction stopped at a file (`--on-bad-file error`, or a failure); `predictions` holds those made before."""

    def __init__(self, message: str, predictions: pd.DataFrame) -> None:
        super().__init__(message)
        self.predictions = predictions
