"""Classify WAV files with a model `emotion-export` wrote: ONNX Runtime, numpy and soundfile alone (docs/export.md).

python classify_onnx.py exported/ clip.wav other.wav        # speakers unknown: the non-adaptive twin answers
python classify_onnx.py exported/ alice/*.wav --speaker     # clips of one speaker: normalised by their statistics

Prints one JSON line per file: its emotion and every class's probability.
"""

from __future__ import annotations

import argparse
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf


class ExportedModel:
    """The exported folder: `model.json`, `constants.npz`, `encoder.onnx` and `head.onnx`."""

    def __init__(self, folder: str | Path, threads: int = 2) -> None:
        folder = Path(folder)
        self.config = json.loads((folder / "model.json").read_text())
        with np.load(folder / "constants.npz") as arrays:
            self.constants = {name: arrays[name] for name in arrays.files}
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
        self.head = ort.InferenceSession(str(folder / "head.onnx"), options, providers=["CPUExecutionProvider"])

    def read(self, path: str | Path) -> np.ndarray:
        """A file's samples, mono, at the model's rate; ValueError if it is too short or too long."""
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
        seconds = len(samples) / rate
        if not self.config["min_duration"] <= seconds <= self.config["max_duration"]:
            raise ValueError(f"{path} lasts {seconds:.2f} s, outside the model's {self.config['min_duration']} "
                             f"to {self.config['max_duration']} s")  # fmt: skip
        return resample(samples.mean(axis=1, dtype=np.float32), rate, self.config["sample_rate"])

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """Whisper's log-mel (mel_bins, frames) of up to 30 s, computed as for a clip padded to 30 s; `cut`: the
        clip's own frames only (an even number), else all 3000."""
        spec = self.config["log_mel"]
        n_fft, hop, chunk = spec["n_fft"], spec["hop_length"], spec["chunk_samples"]
        padded = np.pad(np.pad(wave, (0, chunk - len(wave))), n_fft // 2, mode="reflect")
        frames = input_frames(len(wave), hop) if self.config["whisper_input"] == "cut" else spec["chunk_frames"]
        heard = min(spec["chunk_frames"], (len(wave) + n_fft) // hop + 1)  # every frame that touches the clip
        windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][: max(frames, heard)]
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
        power = np.abs(np.fft.rfft(windows * hann, axis=1)) ** 2
        log_spec = np.log10(np.maximum(self.constants["mel_filters"].T @ power.T, 1e-10))
        log_spec = np.maximum(log_spec, log_spec.max() - spec["dynamic_range"])
        return ((log_spec[:, :frames] + 4.0) / 4.0).astype(np.float32)

    def features(self, wave: np.ndarray) -> np.ndarray:
        """The clip's pooled encoder layers (layers, width): 30 s windows pooled together, weighted by frames."""
        size = int(self.config["max_seconds"] * self.config["sample_rate"])
        sums = squares = count = 0.0
        for start in range(0, max(len(wave), 1), size):
            piece = wave[start : start + size]
            frames = input_frames(len(piece), self.config["log_mel"]["hop_length"])
            mean, std = self.encoder.run(None, {"log_mel": self.log_mel(piece)[None], "frames": np.array([frames])})
            mean, std, n = mean[0].astype(np.float64), std[0].astype(np.float64), frames // 2
            sums, squares, count = sums + n * mean, squares + n * (std**2 + mean**2), count + n
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        return (mean if self.config["pooling"] == "mean" else np.concatenate([mean, std], axis=-1)).astype(np.float32)

    def speaker_statistics(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """A speaker's mean and std from the features (clips, layers, width) of their clips: their own, shrunk
        toward the training population's by `shrinkage` clips' worth; and the weight their answer gets."""
        rule, clips = self.config["normalize"], len(features)
        own = clips / (clips + rule["shrinkage"])
        mean, var = features.astype(np.float64).mean(axis=0), features.astype(np.float64).var(axis=0)
        population_mean = self.constants["population_mean"].astype(np.float64)
        population_var = self.constants["population_std"].astype(np.float64) ** 2
        shrunk_mean = own * mean + (1 - own) * population_mean
        shrunk_std = np.maximum(np.sqrt(own * var + (1 - own) * population_var), 1e-5)
        return shrunk_mean.astype(np.float32), shrunk_std.astype(np.float32), blend_weight(rule, clips)

    def probabilities(self, features: np.ndarray, speaker: bool) -> np.ndarray:
        """Class probabilities (clips, classes); `speaker`: the clips are one speaker's (else unknown speakers)."""
        if not self.config["normalize"]["adaptive"]:
            return self.head.run(None, {"features": features})[0]
        if speaker:
            mean, std, weight = self.speaker_statistics(features)
        else:  # no speaker: the twin alone (weight 0); the statistics given are not used
            mean, std, weight = self.constants["population_mean"], self.constants["population_std"], 0.0
        inputs = {"features": features, "speaker_mean": np.broadcast_to(mean, features.shape).copy(),
                  "speaker_std": np.broadcast_to(std, features.shape).copy(),
                  "weight": np.full((len(features), 1), weight, dtype=np.float32)}  # fmt: skip
        return self.head.run(None, inputs)[0]


def blend_weight(rule: dict, clips: int) -> float:
    """How much the speaker-adaptive answer weighs against the twin's for a speaker of `clips` clips."""
    if clips < 1:
        return 0.0
    if rule["blend_curve"]:  # a curve the head learned: (clips, weight) points
        points = np.array(rule["blend_curve"], dtype=float)
        return float(np.interp(clips, points[:, 0], points[:, 1]))
    return min(1.0, clips / rule["min_clips"]) ** 2


def input_frames(samples: int, hop: int) -> int:
    """The log-mel frames of a clip of `samples`, rounded up to an even number (Whisper halves them)."""
    return 2 * math.ceil(math.ceil(samples / hop) / 2)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`wave` at `target` Hz: torchaudio's windowed-sinc resampler (Hann window, 6 zero crossings, rolloff 0.99)."""
    if rate == target:
        return wave
    ratio = Fraction(int(rate), int(target))
    orig, new = ratio.numerator, ratio.denominator
    base = min(orig, new) * 0.99
    width = math.ceil(6 * orig / base)
    t = (np.arange(0, -new, -1)[:, None] / new + np.arange(-width, width + orig)[None, :] / orig) * base
    t = np.clip(t, -6, 6)
    window = np.cos(t * np.pi / 12) ** 2
    kernels = np.where(t == 0, 1.0, np.sin(t * np.pi) / np.where(t == 0, 1.0, t * np.pi)) * window * base / orig
    padded = np.pad(wave, (width, width + orig))
    blocks = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1])[::orig]
    resampled = (blocks @ kernels.astype(np.float32).T).reshape(-1)
    return resampled[: math.ceil(new * len(wave) / orig)].astype(np.float32)


def is_silent(wave: np.ndarray, threshold_dbfs: float) -> bool:
    """A clip quieter than the threshold (its RMS level): nothing to judge an emotion from."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return rms == 0.0 or 20 * math.log10(rms) < threshold_dbfs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the folder emotion-export wrote")
    parser.add_argument("files", nargs="+", help="WAV (or FLAC, OGG) files")
    parser.add_argument("--speaker", action="store_true", help="the files are all one speaker's")
    args = parser.parse_args()
    model = ExportedModel(args.model)
    waves = [model.read(path) for path in args.files]
    probabilities = model.probabilities(np.stack([model.features(wave) for wave in waves]), args.speaker)
    classes = model.config["classes"]
    for path, wave, row in zip(args.files, waves, probabilities, strict=True):
        emotion = "silence" if is_silent(wave, model.config["silence_dbfs"]) else classes[int(row.argmax())]
        answer = dict(zip(classes, row.tolist(), strict=True))
        print(json.dumps({"file": path, "emotion": emotion, "probabilities": answer}))


if __name__ == "__main__":
    main()
