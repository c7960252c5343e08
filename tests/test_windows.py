"""The window policy: silence trimming, windows covering whole clips, random training windows, averaging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from emotion.data.datamodule import EmotionDataModule
from emotion.data.features import EGeMAPS, LogMel, Spectral
from emotion.data.windows import TRIM_FRAME, Window, average_over_windows, covering_windows, trim_silence
from emotion.errors import ConfigError
from emotion.models.module import EmotionClassifier
from emotion.pipeline import train
from emotion.serving.recognizer import EmotionRecognizer
from tests.conftest import FEW_BATCHES

RATE = 16000


def tone(seconds: float, amplitude: float = 0.3) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    return amplitude * torch.sin(2 * torch.pi * 220 * t)


def test_trimming_cuts_leading_and_trailing_silence_to_within_a_frame_of_the_voice() -> None:
    silence = 1e-4 * torch.randn(RATE // 2)
    clip = torch.cat([silence, tone(1.0), silence])
    trimmed = trim_silence(clip, top_db=40)
    assert RATE <= trimmed.shape[0] <= RATE + 2 * TRIM_FRAME
    onset = int(torch.nonzero(trimmed.abs() > 0.01)[0])
    assert onset <= TRIM_FRAME


def test_windows_cover_every_sample_of_a_long_clip_and_the_last_ends_at_its_end() -> None:
    clip = torch.arange(5 * RATE, dtype=torch.float32)
    windows = covering_windows(clip, RATE, hop=0.5)
    assert windows.shape == (9, RATE)
    covered = torch.zeros(clip.shape[0], dtype=torch.bool)
    for window in windows:
        covered[window.long()] = True
    assert covered.all()
    assert windows[-1, -1] == clip[-1] and windows[0, 0] == clip[0]


def test_a_clip_shorter_than_the_window_is_one_padded_window() -> None:
    windows = covering_windows(torch.ones(100), 300, hop=0.5)
    assert windows.shape == (1, 300) and windows[0, 100:].abs().sum() == 0


def test_averaging_gives_each_clip_the_mean_of_its_windows() -> None:
    probabilities = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8]])
    mean = average_over_windows(probabilities, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(mean, torch.tensor([[0.5, 0.5], [0.2, 0.8]]))


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"mode": "whole"}, "features.window.mode"),
        ({"hop": 0}, "features.window.hop"),
        ({"trim_db": -3}, "features.window.trim_db"),
    ],
)
def test_a_bad_window_policy_is_named(window: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Window(**window)


def test_egemaps_refuses_the_utterance_policy_it_does_not_need() -> None:
    with pytest.raises(ConfigError, match="features/window=crop"):
        EGeMAPS(Spectral(), Window(mode="utterance"))


def utterance_datamodule(tiny_corpus: Path, tmp_path: Path) -> EmotionDataModule:
    features = LogMel(Spectral(), Window(mode="utterance", hop=0.5))
    datamodule = EmotionDataModule(features, tmp_path, root=str(tiny_corpus), batch_size=8)
    datamodule.setup()
    return datamodule


def test_training_reads_a_new_random_window_and_evaluation_every_window(tiny_corpus: Path, tmp_path: Path) -> None:
    datamodule = utterance_datamodule(tiny_corpus, tmp_path)
    n_samples = datamodule.features.n_samples
    longest = max(range(len(datamodule.datasets["train"])), key=lambda i: datamodule.datasets["train"].waves[i].numel())
    assert datamodule.datasets["train"].waves[longest].numel() > n_samples + RATE // 4
    reads = [datamodule.datasets["train"][longest][0]["waveform"] for _ in range(5)]
    assert all(r.shape == (n_samples,) for r in reads)
    assert len({float(r.sum()) for r in reads}) > 1  # not the same window every epoch

    inputs, labels = next(iter(datamodule.val_dataloader()))
    expected = [len(covering_windows(w, n_samples, 0.5)) for w in datamodule.datasets["val"].waves[: len(labels)]]
    assert inputs["waveform"].shape == (sum(expected), n_samples)
    assert torch.bincount(inputs["segments"]).tolist() == expected


def test_a_whole_utterance_run_predicts_the_mean_of_its_windows_from_its_checkpoint_alone(
    make_config, tmp_path: Path
) -> None:
    cfg = make_config(
        *FEW_BATCHES, "features/window=utterance", "features.window.trim_db=40", "model.net.channels=[8,8,8]"
    )
    train(cfg)
    (checkpoint,) = Path(cfg.paths.output_dir, "checkpoints").rglob("*.ckpt")
    recognizer = EmotionRecognizer.from_checkpoint(checkpoint)
    assert recognizer.features.window == Window(mode="utterance", hop=0.5, trim_db=40.0)

    clip = torch.cat([torch.zeros(RATE // 2), tone(4.0) * torch.linspace(0.2, 1.0, 4 * RATE), torch.zeros(RATE // 2)])
    windows = covering_windows(trim_silence(clip, 40), recognizer.features.n_samples, 0.5)
    assert len(windows) > 2
    module = EmotionClassifier.load_from_checkpoint(
        checkpoint, net=instantiate(cfg.model.net), weights_only=True
    ).eval()
    with torch.no_grad():
        expected = module(recognizer.features(windows)).softmax(dim=1).mean(dim=0)
    torch.testing.assert_close(recognizer.classify_waves([clip]).probabilities[0], expected, atol=1e-5, rtol=1e-5)
