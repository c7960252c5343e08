"""Reading a request to the served model (`emotion.serving.pyfunc`): its rows checked, or refused in one line.

It holds the columns a row may hold (`INPUT_COLUMNS`; a timeline's: `TIMELINE_COLUMNS`) and the limits its host
sets (`MAX_ROWS`, `AUDIO_DIRS`); the request's rows checked (`checked_rows`); a row's values read: an audio file's
bytes from base64 (`decode_base64`), a file on the host under its allowed folders (`readable_path`), whether the clip
joins its speaker's profile (`update_flag`); and a refusal in one line (`Refusal`, `refusal`: INVALID_PARAMETER_VALUE,
HTTP 400 when served).
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from emotion.errors import DataError

#: Folders (separated by os.pathsep) whose files the model may read from a `path` column; unset or empty: none.
AUDIO_DIRS = "EMOTION_AUDIO_DIRS"
#: The most rows a request may hold (default DEFAULT_MAX_ROWS).
MAX_ROWS = "EMOTION_MAX_ROWS"
DEFAULT_MAX_ROWS = 64

#: The columns a request's rows may hold (each row: `audio`, or `path`, or `waveform` with `sample_rate`).
INPUT_COLUMNS = ("audio", "path", "waveform", "sample_rate", "speaker", "update_profile")
#: The columns a row of a timeline request (`params={"timeline": true}`) may hold: a recording as a file, and a
#: diarization (`segments`); it reads and adds to no speaker profile.
TIMELINE_COLUMNS = ("audio", "path", "speaker", "segments")
#: The parameters a request may set (its `params`, beside its rows), each a JSON boolean.
PARAMS = ("timeline",)
#: What a request looks like, as a refusal says it.
REQUEST_SHAPE = '{"dataframe_records": [{"audio": "<a file\'s bytes, base64>"}]}'


class Refusal(MlflowException):
    """An input the model will not take: one line for the caller (MLflow's INVALID_PARAMETER_VALUE: HTTP 400).

    MLflow's scoring server puts "Failed to predict data '<the whole input>'" before the message of an
    MlflowException by assigning to its `message`; this one keeps its own line, and carries no stack trace.
    """

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


def refusal(message: str) -> Refusal:
    """An input the model will not take, said in one line (HTTP 400 when served)."""
    return Refusal(" ".join(message.split()), error_code=INVALID_PARAMETER_VALUE)


def checked_rows(model_input: Any, columns: tuple[str, ...] = INPUT_COLUMNS) -> list[dict[str, Any]]:
    """The request's rows; Refusal if it has none, too many (`EMOTION_MAX_ROWS`) or a column not in `columns`."""
    if not isinstance(model_input, pd.DataFrame):
        raise refusal(f"send a table of rows (dataframe_records) with the columns {list(columns)}")
    unknown = sorted(str(c) for c in model_input.columns if c not in columns)
    if "segments" in unknown and columns == INPUT_COLUMNS:
        raise refusal('`segments` are read by a timeline only: send them with "params": {"timeline": true}')
    if unknown:
        raise refusal(f"unknown column(s) {unknown}: each row takes {list(columns)}")
    if model_input.empty:
        raise refusal("the request holds no rows: send one row per clip")
    limit = int(os.environ.get(MAX_ROWS) or DEFAULT_MAX_ROWS)
    if len(model_input) > limit:
        raise refusal(f"{len(model_input)} rows in one request, more than the {limit} this model takes ({MAX_ROWS})")
    return model_input.to_dict("records")


def check_params(body: Any) -> None:
    """Refusal, in one line, for a request body (decoded JSON) whose `params` the model does not take.

    MLflow checks them against the signature too, but refuses a bad one with the whole request quoted back.
    """
    params = body.get("params") if isinstance(body, dict) else None
    if params is None:
        return
    if not isinstance(params, dict):
        raise refusal('`params` must be an object, e.g. {"timeline": true}')
    unknown = sorted(str(name) for name in params if name not in PARAMS)
    if unknown:
        raise refusal(f"unknown parameter(s) {unknown}: the model takes {list(PARAMS)}")
    for name in PARAMS:
        if name in params and not isinstance(params[name], bool):
            raise refusal(f"`params.{name}` must be true or false (a JSON boolean)")


def decode_base64(text: Any) -> bytes:
    """The bytes of a base64 string; DataError if it is not one."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("`audio` is not valid base64 (send the file's bytes, base64-encoded)") from None


def allowed_folders() -> list[Path]:
    """The folders whose files a `path` may name (`EMOTION_AUDIO_DIRS`), symbolic links resolved."""
    return [Path(folder).resolve() for folder in os.environ.get(AUDIO_DIRS, "").split(os.pathsep) if folder]


def readable_path(path: str) -> Path:
    """`path` resolved, if it names a file under an allowed folder.

    A file outside them gets the same message as a missing one, so a client learns nothing of the host's files.
    """
    folders = allowed_folders()
    if not folders:
        raise DataError(
            f"this model reads no files by `path` here (its host allows no folders: {AUDIO_DIRS}); "
            "send the file's bytes, base64-encoded, in `audio`"
        )
    resolved = Path(path).resolve()
    if resolved.is_file() and any(resolved.is_relative_to(folder) for folder in folders):
        return resolved
    raise DataError(f"no audio file {path!r} in the folders this model may read")


def given(value: Any) -> bool:
    """Whether a row's `audio` or `path` holds something (a string, not empty)."""
    return isinstance(value, str) and bool(value)


def update_flag(value: Any) -> bool:
    """A row's `update_profile`: true (or left out) keeps its clip in its speaker's profile, false only reads the
    profile; DataError for anything but a boolean."""
    if missing(value):
        return True
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise DataError("`update_profile` must be true or false (a JSON boolean), or left out (true)")


def missing(value: Any) -> bool:
    """Whether a row's value is left out (None, or NaN where a table's other rows hold it)."""
    return value is None or (isinstance(value, float) and math.isnan(value))
