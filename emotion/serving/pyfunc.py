"""The MLflow pyfunc model of a trained run: raw audio in, emotions out, with nothing else to install.

Input: a DataFrame with one row per clip (read by `emotion.serving.requests`): `audio` (an audio file's bytes,
base64-encoded: WAV, FLAC or OGG), a `waveform` (mono samples) with its `sample_rate`, or a `path` to a file on the
model's host, read only under the folders its host allows (`EMOTION_AUDIO_DIRS`), and optionally the clip's
`speaker` (a name: `emotion.serving.profiles.speaker_name`; blank: none): a speaker-adaptive model keeps each
speaker's profile (`emotion.serving.profiles`), growing with the clips of every request that
`emotion.serving.enrolment` admits, and blends its speaker-adaptive answer with its non-adaptive one by the
profile's clips (`normalization` says which). `update_profile` (a boolean, per row) false: read the profile, add
nothing; `EMOTION_PROFILES_READ_ONLY` set: no request adds anything. At most `EMOTION_MAX_ROWS` rows (default 64),
clips no longer than the training's `data.max_duration`, rates of 4 to 384 kHz; anything else, and any failure, is
refused in one line (INVALID_PARAMETER_VALUE: HTTP 400 when served), and the server goes on.
Output: `emotion`, `confidence`, `silent`, `normalization` and one `prob_<class>` column per class; a clip quieter than
`emotion.serving.recognizer.SILENCE_DBFS` (-60 dB RMS) has `silent` true and the emotion `silence`, at confidence 0.
A request with `params={"timeline": true}` sends recordings of any length instead, up to its own bounds, and gets
one row per segment of speech (`emotion.serving.served_timeline`).
The model (`EmotionModel`, logged into its run by `log_pyfunc`) carries the trained model's checkpoint (restored
alone by `EmotionRecognizer.from_checkpoint`: the same object `emotion-predict` and `emotion-evaluate` classify
with), optionally its encoder, and the `emotion` package.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

import emotion
from emotion.errors import DataError, EmotionError
from emotion.serving.profile_db import ProfileStoreError
from emotion.serving.profiles import ProfileStore, speaker_name
from emotion.serving.recognizer import EmotionRecognizer
from emotion.serving.requests import (
    REQUEST_SHAPE,
    TIMELINE_COLUMNS,
    Refusal,
    check_params,
    checked_rows,
    decode_base64,
    given,
    missing,
    readable_path,
    refusal,
    update_flag,
)
from emotion.serving.served_timeline import served_timeline

#: Packages the model imports, pinned to the versions it was logged with (and those of its feature set).
REQUIREMENTS = (
    "torch",
    "torchaudio",
    "lightning",
    "hydra-core",
    "soundfile",
    "numpy",
    "pandas",
    "scikit-learn",
    "skops",
    "silero-vad",
)
FEATURE_REQUIREMENTS = {"egemaps": ("opensmile",), "ssl": ("transformers", "safetensors", "huggingface-hub")}

#: Set (1, true): the served model reads speaker profiles and adds nothing to them (enrol with emotion-predict).
READ_ONLY = "EMOTION_PROFILES_READ_ONLY"
#: The artifacts of a model logged before checkpoints carried their recipe (refused at load: `StaleModel`).
STALE_ARTIFACTS = ("config", "weights")


log = logging.getLogger(__name__)


class StaleModel(EmotionError):
    """A model logged as `config.yaml` + `weights.pt`, before the trained model was one restorable object."""


class EmotionModel(mlflow.pyfunc.PythonModel):
    """Decode, resample, crop or pad, featurise and classify: the whole pipeline of a trained run."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        artifacts = context.artifacts
        if "checkpoint" not in artifacts and set(STALE_ARTIFACTS) <= set(artifacts):
            raise StaleModel(
                "this model was logged by an older emotion (config.yaml and weights.pt, rebuilt from the config); "
                "train its run again (its `overrides` tag holds the emotion-train arguments) and promote the new run"
            )
        self.recognizer = EmotionRecognizer.from_checkpoint(artifacts["checkpoint"], artifacts.get("upstream"))
        self.profiles = ProfileStore.from_environment() if self.recognizer.adaptive else None
        self.read_only = os.environ.get(READ_ONLY, "").lower() in ("1", "true", "yes")
        if self.profiles is not None and self.recognizer.version is not None:
            try:  # a label for emotion-profiles; a store down now refuses each request instead, in one line
                self.profiles.name_model(self.recognizer.version, served_label(Path(artifacts["checkpoint"])))
            except ProfileStoreError:
                log.warning("the speaker profiles store is unavailable: requests naming speakers will be refused")
        refuse_bad_json_in_one_line()

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """The request's clips classified (`params` {"timeline": true}: its recordings' segments); any failure is
        one line (HTTP 400 when served), never a stack trace."""
        try:
            if (params or {}).get("timeline"):
                return served_timeline(self.recognizer, checked_rows(model_input, TIMELINE_COLUMNS))
            return self._classified(model_input)
        except Refusal:
            raise
        except EmotionError as exc:  # one line about the request or a service, naming nothing of the host
            raise refusal(f"the request could not be classified: {exc}") from None
        except Exception:  # whatever else failed: the caller gets one line, the host's log the details
            log.exception("a request could not be classified")
            raise refusal("the request could not be classified: an error on the model's host (see its log)") from None

    def _classified(self, model_input: pd.DataFrame) -> pd.DataFrame:
        rows = checked_rows(model_input)
        waveforms = []
        for number, row in enumerate(rows):
            try:
                waveforms.append(self._waveform(row))
            except DataError as exc:
                raise refusal(f"row {number}: {exc}" if len(rows) > 1 else str(exc)) from None
        speakers, updates = [], []
        for number, row in enumerate(rows):
            try:
                speakers.append(speaker_name(row.get("speaker")))
                updates.append(update_flag(row.get("update_profile")) and not self.read_only)
            except DataError as exc:
                raise refusal(f"row {number}: {exc}" if len(rows) > 1 else str(exc)) from None
        return self.recognizer.classify_waves(waveforms, speakers, self.profiles, updates).frame()

    def _waveform(self, row: dict[str, Any]) -> torch.Tensor:
        audio, path, waveform, rate = row.get("audio"), row.get("path"), row.get("waveform"), row.get("sample_rate")
        if given(audio):
            return self.recognizer.decode(decode_base64(audio), name="the audio file sent in `audio`")
        if audio == "":  # an empty file, base64-encoded
            raise DataError("`audio` is empty: the file sent holds no bytes")
        if given(path):
            return self.recognizer.decode(readable_path(path))
        if waveform is not None and not missing(rate):
            if not isinstance(rate, int | float) or isinstance(rate, bool):
                raise DataError("`sample_rate` must be a number of samples a second")
            return self.recognizer.from_samples(waveform, rate)
        raise DataError(
            "each input row needs `audio` (a file's bytes, base64), a `waveform` with its `sample_rate`, or a `path`"
        )


def refuse_bad_json_in_one_line() -> None:
    """In MLflow's scoring server, a request body that is not JSON, or whose `params` the model does not take
    (`check_params`), is refused in one line, without echoing it.

    The server answers such a body with the decoder's exception (or the parameter check's) and the whole body
    quoted back (a 3 MB body, a 4 MB answer), and offers no hook for it: its decoding function is wrapped here,
    once, when the model loads in the server. Elsewhere (emotion-predict, a notebook) nothing changes.
    """
    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    decode = getattr(server, "_decode_json_input", None)
    if decode is None or getattr(decode, "refuses_in_one_line", False):
        return

    def decode_or_refuse(json_input: Any) -> Any:
        try:
            decoded = decode(json_input)
        except MlflowException as exc:
            cause = exc.__cause__
            if isinstance(cause, json.JSONDecodeError):
                where = f"line {cause.lineno}, column {cause.colno}: {cause.msg}"
                raise refusal(f"the request body is not valid JSON ({where}); send {REQUEST_SHAPE}") from None
            if isinstance(cause, UnicodeDecodeError):
                raise refusal(f"the request body is not UTF-8 text; send {REQUEST_SHAPE}") from None
            raise
        check_params(decoded)
        return decoded

    decode_or_refuse.refuses_in_one_line = True  # type: ignore[attr-defined]
    server._decode_json_input = decode_or_refuse


def served_label(checkpoint: Path) -> str:
    """What the profiles store calls a served model: its run (`run RUN_ID`), from the MLmodel beside its files."""
    try:
        run_id = Model.load(str(checkpoint.parents[1] / "MLmodel")).run_id
    except Exception:  # a model folder laid out otherwise: named by its file
        run_id = None
    return f"run {run_id}" if run_id else checkpoint.name


def signature(classes: tuple[str, ...]) -> ModelSignature:
    """The outputs' schema (a clip's row), and the one parameter a request may set: `timeline` (a boolean, default
    false). The inputs have none here: MLflow would refuse a bad request with its own message (a stack trace,
    Python objects); `checked_rows` and the recognizer refuse it in one line instead."""
    outputs = [ColSpec("string", "emotion"), ColSpec("double", "confidence"), ColSpec("boolean", "silent")]
    outputs.append(ColSpec("string", "normalization"))
    return ModelSignature(
        outputs=Schema(outputs + [ColSpec("double", f"prob_{c}") for c in classes]),
        params=ParamSchema([ParamSpec("timeline", "boolean", False)]),
    )


def input_example(sample_rate: int) -> pd.DataFrame:
    """A quarter-second 220 Hz tone: an input that works on any host (a path would not)."""
    t = np.arange(sample_rate // 4, dtype=np.float32) / sample_rate
    tone = (0.1 * np.sin(2 * np.pi * 220.0 * t)).round(5)
    return pd.DataFrame({"waveform": [tone.tolist()], "sample_rate": [sample_rate]})


def carry_encoder(recognizer: EmotionRecognizer, folder: Path) -> str:
    """Save the model's encoder into `folder`, saying how large it is; returns the folder."""
    folder.mkdir()
    recognizer.features.save_encoder(folder)
    megabytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    print(f"the model carries the weights of its encoder {recognizer.features.encoder.source}: {megabytes:.1f} MB")
    return str(folder)


def log_pyfunc(run_id: str, checkpoint: Path, with_upstream: bool = False) -> str:
    """Log the pyfunc of a run's trained model (its checkpoint, or an estimator's skops file) into that run;
    returns the model URI.

    The model carries the file `EmotionRecognizer.save` writes (the network and the standardisation with the
    recipe, no optimiser state; or the estimator's skops file), so loading it unpickles no code.
    An SSL model names its encoder (in its recipe); `with_upstream` adds the encoder itself as the
    artifact folder `upstream`, and says how large it is.
    """
    # MLflow 3 creates the logged model in the *active* experiment, not the run's: without this, its files
    # would land in the Default experiment's artifact folder (`./mlruns/0` of whichever folder made the store).
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
    recognizer = EmotionRecognizer.from_checkpoint(checkpoint)  # fails here, before logging, if it cannot load
    with tempfile.TemporaryDirectory() as folder:
        model_file = Path(folder) / recognizer.file_name
        recognizer.save(model_file)
        artifacts = {"checkpoint": str(model_file)}
        if with_upstream and hasattr(recognizer.features, "save_encoder"):
            artifacts["upstream"] = carry_encoder(recognizer, Path(folder) / "upstream")
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            run_id=run_id,  # into the finished run as it is, without reopening it
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),  # models from code: nothing unpickled
            artifacts=artifacts,
            code_paths=[str(Path(emotion.__file__).parent)],
            signature=signature(recognizer.classes),
            input_example=input_example(recognizer.sample_rate),
            pip_requirements=[
                f"{name}=={version(name)}"
                for name in (*REQUIREMENTS, *FEATURE_REQUIREMENTS.get(recognizer.features.name, ()))
            ],
        )
    return info.model_uri
