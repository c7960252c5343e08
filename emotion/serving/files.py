"""Predicting audio files with a trained model (`emotion-predict`, `emotion-evaluate`): find the files, restore the
model (`EmotionRecognizer`) from a URI, classify in batches and keep going past bad files (or stop at the first,
keeping what was predicted)."""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emotion.data.corpora.base import audio_files as folder_audio_files
from emotion.errors import DataError, EmotionError

if TYPE_CHECKING:  # torch, MLflow and pandas load only when a model is loaded: the CLIs' `--help` answers at once
    import pandas as pd

    from emotion.serving.profiles import ProfileStore
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


def manifest_files(manifest: Path) -> tuple[list[Path], list[str | None]]:
    """The files a CSV or TSV manifest lists (column `path`, relative to the manifest's folder or absolute) and
    their speakers (column `speaker`, if it has one); DataError naming what is missing."""
    import csv

    if not manifest.is_file():
        raise DataError(f"no manifest file {manifest}")
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t" if manifest.suffix == ".tsv" else ","))
    if not rows or "path" not in rows[0]:
        raise DataError(f"{manifest} needs a header with a `path` column (and `speaker`, to normalise by speaker)")
    files = [manifest.parent / row["path"] for row in rows]
    speakers = [row.get("speaker") or None for row in rows]
    return files, speakers


def folder_speakers(files: Sequence[Path]) -> list[str | None]:
    """Each file's speaker named by its folder (`recordings/alice/1.wav`: alice)."""
    return [file.parent.name for file in files]


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
    recognizer: EmotionRecognizer,
    files: list[Path],
    batch_size: int,
    on_bad_file: str = "error",
    speakers: Sequence[str | None] | None = None,
    profiles: ProfileStore | None = None,
    update: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per readable file, in the order given: `file`, `speaker` (when given), then the served model's
    columns; and one message per file skipped (undecodable, too short or too long: under `on_bad_file="error"` the
    first one stops it, keeping the rows made before).

    `speakers`: the speaker of each file (None: unknown). A speaker-adaptive model classifies each speaker's files
    together, normalised by their own statistics (blended with the non-adaptive answer below `min_clips`; with a
    `profiles` store, counting the clips of theirs it kept from earlier calls, and keeping these unless `update`
    is false; the `normalization` column says which way each row went); other files go in batches of
    `batch_size`.
    """
    from tqdm.auto import tqdm

    speakers = list(speakers) if speakers is not None else [None] * len(files)
    frames: list[pd.DataFrame] = []
    skipped: list[str] = []
    groups = file_groups(speakers, batch_size, whole_speakers=recognizer.adaptive)
    with tqdm(total=len(files), unit="file", desc="predicting", disable=len(files) < 2, file=sys.stderr) as bar:
        for group in groups:
            waves, kept = [], []
            for index in group:
                try:
                    waves.append(recognizer.decode(files[index]))
                    kept.append(index)
                except DataError as exc:
                    if on_bad_file == "error":  # the files decoded before it are predicted, and kept
                        frames += [_frame(recognizer, waves, kept, files, speakers, profiles, update)] if kept else []
                        made = _in_given_order(frames)
                        raise PartialPredictions(f"{exc} ({len(made)} files predicted before it)", made) from None
                    skipped.append(str(exc))
                    tqdm.write(f"warning: skipped {files[index]}: {exc}", file=sys.stderr)
            if kept:
                frames.append(_frame(recognizer, waves, kept, files, speakers, profiles, update))
            bar.update(len(group))
    if not frames:
        raise DataError(f"no file could be predicted ({len(skipped)} skipped), e.g. {skipped[0]}")
    return _in_given_order(frames), skipped


def _frame(
    recognizer: EmotionRecognizer,
    waves: list,
    kept: list[int],
    files: list[Path],
    speakers: Sequence[str | None],
    profiles: ProfileStore | None,
    update: bool,
) -> pd.DataFrame:
    """The predictions of the decoded files `kept` (indices into `files`), indexed by them: `file`, `speaker` (when
    any file has one), then the served model's columns."""
    frame = recognizer.classify_waves(waves, [speakers[i] for i in kept], profiles, update).frame()
    if any(speaker is not None for speaker in speakers):
        frame.insert(0, "speaker", [speakers[i] or "" for i in kept])
    frame.insert(0, "file", [str(files[i]) for i in kept])
    return frame.set_axis(kept)


def file_groups(speakers: Sequence[str | None], batch_size: int, whole_speakers: bool) -> list[list[int]]:
    """The indices of the files classified together: each named speaker's files (all at once when
    `whole_speakers`, else in batches), then the files of no speaker in batches of `batch_size`."""
    by_speaker: dict[str | None, list[int]] = {}
    for index, speaker in enumerate(speakers):
        by_speaker.setdefault(speaker, []).append(index)
    groups: list[list[int]] = []
    for speaker, indices in sorted(by_speaker.items(), key=lambda item: item[0] is None):
        size = len(indices) if whole_speakers and speaker is not None else batch_size
        groups += [indices[start : start + size] for start in range(0, len(indices), size)]
    return groups


def _in_given_order(frames: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(frames).sort_index().reset_index(drop=True) if frames else pd.DataFrame()


class PartialPredictions(EmotionError):
    """Prediction stopped at a file (`--on-bad-file error`, or a failure); `predictions` holds those made before."""

    def __init__(self, message: str, predictions: pd.DataFrame) -> None:
        super().__init__(message)
        self.predictions = predictions
