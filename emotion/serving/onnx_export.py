"""A trained model written as ONNX, to run with ONNX Runtime and numpy alone (`emotion-export`, docs/export.md).

    EmotionRecognizer (Whisper features + a scikit-learn head)
      -> encoder.onnx   Whisper's layers, each pooled over a clip's frames (`emotion.serving.onnx_encoder`)
      -> head.onnx      speaker normalisation, the head, its twin and the blend (`emotion.serving.onnx_head`)
      -> model.json     classes, the front end's and the log-mel's constants, the normalisation rule
      -> constants.npz  Whisper's mel filter bank, the training population's statistics

Only the recipe the issue names exports: Whisper features (`features=ssl`, a Whisper encoder) and a
scikit-learn head; anything else is refused in one line. The encoder's graph is checked against PyTorch on
random log-mels of two lengths before the folder is written, so an exporter that fixed the frame axis fails here,
not in a user's hands.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotion.data.ssl import SSLLayers
from emotion.encoders.huggingface import WhisperEncoderLayers
from emotion.errors import ConfigError, EmotionError
from emotion.models.estimator import EstimatorHead
from emotion.serving.onnx_encoder import PooledWhisperLayers, export_encoder
from emotion.serving.onnx_head import head_model
from emotion.serving.recognizer import SILENCE_DBFS, EmotionRecognizer

#: The version of the folder's layout (`model.json`'s `format`).
FORMAT = 1
#: The largest difference allowed between the encoder's graph and PyTorch on the check's random log-mels.
TOLERANCE = 1e-3
#: The (log-mel frames, clip's frames) the encoder's graph is checked at: a short and a long clip (`cut`), and a
#: clip in a longer log-mel (`pad30`); none is the traced length.
CHECKED_FRAMES = ((64, 64), (350, 350), (350, 120))
#: What the folder holds.
FILES = ("encoder.onnx", "head.onnx", "model.json", "constants.npz")


class ExportError(EmotionError):
    """A model that cannot be exported, or an export that does not answer as the model does."""


def checked_parts(recognizer: EmotionRecognizer) -> tuple[WhisperEncoderLayers, SSLLayers, EstimatorHead]:
    """The model's Whisper encoder, features and scikit-learn head; ExportError for any other recipe."""
    features, head = recognizer.features, recognizer.head
    encoder = getattr(features, "encoder", None)
    if not (isinstance(head, EstimatorHead) and isinstance(features, SSLLayers)):
        raise ExportError("only a model of Whisper features and a scikit-learn head (model=logreg|svm|heads) exports")
    if not isinstance(encoder, WhisperEncoderLayers):
        raise ExportError(f"only Whisper features export to ONNX, and this model's encoder is {encoder.source}")
    if features.window.trim_db is not None:
        raise ExportError("a model that trims silence (features.window.trim_db) does not export to ONNX")
    return encoder, features, head


def export_model(
    recognizer: EmotionRecognizer, folder: Path, int8: bool = False, encoder_file: Path | None = None
) -> Path:
    """Write the model's ONNX folder (`FILES`) into `folder` (new or empty). `int8`: the encoder's weights
    quantised to 8 bits (ONNX Runtime's dynamic quantisation), smaller and faster, answers a little apart.
    `encoder_file`: an `encoder.onnx` already exported from the same encoder, linked instead of exported again
    (the fold models of a cross-validation share theirs)."""
    encoder, features, head = checked_parts(recognizer)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty: give a new folder for the exported model")
    folder.mkdir(parents=True, exist_ok=True)
    if encoder_file is not None:
        (folder / "encoder.onnx").symlink_to(encoder_file.resolve())
    else:
        write_encoder(encoder, folder / "encoder.onnx", int8)
    layers, width = features.shapes()["ssl"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's on the attributes skl2onnx reads
        (folder / "head.onnx").write_bytes(head_model(head, (layers, width)).SerializeToString())
    np.savez(folder / "constants.npz", **constants(encoder, head))
    description = model_description(recognizer, encoder, features, head) | {"int8": int8}
    (folder / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    return folder


def write_encoder(encoder: WhisperEncoderLayers, path: Path, int8: bool) -> None:
    """The encoder's fp32 graph at `path` (whatever precision the model encodes in here: `features.precision=auto`
    is bf16 on some CPUs), checked against PyTorch in fp32 (then quantised, with `int8`)."""
    encoder.precision = "fp32"
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        exported = Path(scratch) / "encoder.onnx"
        export_encoder(encoder, exported)
        check_encoder(encoder, exported)
        if int8:
            quantized(exported, path)
        else:
            shutil.move(exported, path)


def check_encoder(encoder: WhisperEncoderLayers, path: Path) -> None:
    """ExportError unless the graph at `path` gives PyTorch's pooled layers on random log-mels (`CHECKED_FRAMES`)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = PooledWhisperLayers(encoder.model)
    generator = torch.Generator().manual_seed(0)
    for total, clip in CHECKED_FRAMES:
        log_mel = torch.rand(1, int(encoder.extractor.feature_size), total, generator=generator) - 0.5
        frames = torch.tensor([clip])
        with torch.no_grad():
            expected = module(log_mel, frames)
        answered = session.run(None, {"log_mel": log_mel.numpy(), "frames": frames.numpy()})
        worst = max(float(np.abs(a - e.numpy()).max()) for a, e in zip(answered, expected, strict=True))
        if not worst <= TOLERANCE:
            raise ExportError(f"the exported encoder is {worst:.2g} away from PyTorch's (more than {TOLERANCE:g})")


def quantized(source: Path, target: Path) -> None:
    """`source`'s graph with its weights quantised to int8 (ONNX Runtime's `quantize_dynamic`) at `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)


def constants(encoder: WhisperEncoderLayers, head: EstimatorHead) -> dict[str, np.ndarray]:
    """The arrays the example needs: Whisper's mel filter bank, and the population's statistics when adaptive."""
    arrays = {"mel_filters": np.asarray(encoder.extractor.mel_filters, dtype=np.float32)}
    population = head.normalizer.population
    if population is not None:
        arrays["population_mean"] = population.ssl_mean.numpy().astype(np.float32)
        arrays["population_std"] = population.ssl_std.numpy().astype(np.float32)
    return arrays


def model_description(
    recognizer: EmotionRecognizer, encoder: WhisperEncoderLayers, features: SSLLayers, head: EstimatorHead
) -> dict[str, Any]:
    """`model.json`: what turns a WAV file into the graphs' inputs, and their outputs into an answer."""
    extractor, normalizer, limits = encoder.extractor, head.normalizer, recognizer.recipe["front_end"]
    layers, width = features.shapes()["ssl"]
    return {
        "format": FORMAT,
        "model_version": recognizer.version,
        "classes": list(head.classes),
        "sample_rate": encoder.sample_rate,
        "min_duration": limits["min_duration"],
        "max_duration": limits["max_duration"],
        "silence_dbfs": SILENCE_DBFS,
        "log_mel": {
            "n_fft": int(extractor.n_fft),
            "hop_length": int(extractor.hop_length),
            "mel_bins": int(extractor.feature_size),
            "chunk_samples": int(extractor.n_samples),
            "chunk_frames": int(extractor.nb_max_frames),
            "dynamic_range": 8.0,
        },
        "whisper_input": encoder.whisper_input,
        "max_seconds": encoder.max_seconds,
        "pooling": features.pooling,
        "features_shape": [layers, width],
        "normalize": {
            "adaptive": normalizer.adaptive,
            "scale": normalizer.scale,
            "min_clips": normalizer.min_clips,
            "shrinkage": normalizer.shrinkage,
            "blend_curve": [list(point) for point in normalizer.blend_curve or ()] or None,
            "blend": "no clip: 0; else blend_curve interpolated linearly in clips (flat past its ends), or with no "
            "curve min(1, clips / min_clips) ** 2",
        },
    }
