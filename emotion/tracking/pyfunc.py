"""The MLflow pyfunc model of a trained run: raw audio in, emotions out, with nothing else to install.

Input: a DataFrame with one row per clip, either a `path` (an audio file the
model's host can read) or a `waveform` (mono samples) with its `sample_rate`.
Output: `emotion`, `confidence` and one `prob_<class>` column per class.
The model carries the run's config, its weights and the `emotion` package.
"""

from __future__ import annotations

import math
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

import emotion
from emotion.errors import DataError
from emotion.inference import Predictor, inference_state

#: Packages the model imports, pinned to the versions it was logged with (and those of its feature set).
REQUIREMENTS = ("torch", "torchaudio", "lightning", "torchmetrics", "hydra-core", "soundfile", "numpy", "pandas")
FEATURE_REQUIREMENTS = {"egemaps": ("opensmile",)}

INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "path", required=False),
        ColSpec(Array("double"), "waveform", required=False),
        ColSpec("long", "sample_rate", required=False),
    ]
)


class EmotionModel(mlflow.pyfunc.PythonModel):
    """Decode, resample, crop or pad, featurise and classify: the whole pipeline of a trained run."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = Predictor.from_files(context.artifacts["config"], context.artifacts["weights"])

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        waveforms = [self._waveform(row) for row in model_input.to_dict("records")]
        return predictions_frame(self.predictor.predict_proba(waveforms), self.predictor.classes)

    def _waveform(self, row: dict[str, Any]) -> torch.Tensor:
        path, waveform, rate = row.get("path"), row.get("waveform"), row.get("sample_rate")
        if isinstance(path, str) and path:
            return self.predictor.load(path)
        if waveform is not None and not _missing(rate):
            return self.predictor.resample(waveform, int(rate))
        raise DataError("each input row needs a `path`, or a `waveform` with its `sample_rate`")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def predictions_frame(probabilities: torch.Tensor, classes: tuple[str, ...]) -> pd.DataFrame:
    """One row per clip: the most probable emotion, its probability, and every class's probability."""
    probs = probabilities.double().numpy()
    frame = pd.DataFrame({"emotion": [classes[i] for i in probs.argmax(axis=1)], "confidence": probs.max(axis=1)})
    for index, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, index]
    return frame


def signature(classes: tuple[str, ...]) -> ModelSignature:
    outputs = [ColSpec("string", "emotion"), ColSpec("double", "confidence")]
    return ModelSignature(INPUT_SCHEMA, Schema(outputs + [ColSpec("double", f"prob_{c}") for c in classes]))


def input_example(sample_rate: int) -> pd.DataFrame:
    """A quarter-second 220 Hz tone: an input that works on any host (a path would not)."""
    t = np.arange(sample_rate // 4, dtype=np.float32) / sample_rate
    tone = (0.1 * np.sin(2 * np.pi * 220.0 * t)).round(5)
    return pd.DataFrame({"waveform": [tone.tolist()], "sample_rate": [sample_rate]})


def log_pyfunc(run_id: str, checkpoint: Path, config: Path) -> str:
    """Log the pyfunc of a run's checkpoint and config into that run; returns the model URI.

    Only the network and standardisation weights are kept (no optimiser state), saved
    with `torch.save` so that loading them needs no pickled code (`weights_only=True`).
    """
    # MLflow 3 creates the logged model in the *active* experiment, not the run's: without this, its files
    # would land in the Default experiment's artifact folder (`./mlruns/0` of whichever folder made the store).
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "weights.pt"
        torch.save(inference_state(checkpoint), weights)
        predictor = Predictor.from_files(config, weights)  # fails here, before logging, if they do not fit
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            run_id=run_id,  # into the finished run as it is, without reopening it
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),  # models from code: nothing unpickled
            artifacts={"config": str(config), "weights": str(weights)},
            code_paths=[str(Path(emotion.__file__).parent)],
            signature=signature(predictor.classes),
            input_example=input_example(predictor.sample_rate),
            pip_requirements=[
                f"{name}=={version(name)}"
                for name in (*REQUIREMENTS, *FEATURE_REQUIREMENTS.get(predictor.features.name, ()))
            ],
        )
    return info.model_uri
