"""The report's architectures: faithful sizes, clear errors on the wrong features."""

from __future__ import annotations

import itertools

import pytest
import torch

from emotion.data.features import MFCC, LogMel, LogMelMFCC, MelMean, Spectral
from emotion.errors import ConfigError
from emotion.models.cnn1d import CNN1D
from emotion.models.cnn2d import CNN2D
from emotion.models.fusion import Fusion
from emotion.models.module import count_trainable_params
from emotion.models.schedules import warmup_cosine_factor
from emotion.models.ssl_head import WeightedLayers
from emotion.models.tdnn import CompactTDNN

SPECTRAL = Spectral()


def test_cnn1d_has_the_reports_552486_trainable_parameters() -> None:
    model = CNN1D(MelMean(SPECTRAL).shapes())
    assert count_trainable_params(model) == 552_486
    buffers = sum(b.numel() for name, b in model.named_buffers() if "running" in name)
    assert count_trainable_params(model) + buffers == 553_894  # Keras's total counts BatchNorm's moving stats


def test_cnn2d_has_the_reports_830726_trainable_parameters() -> None:
    assert count_trainable_params(CNN2D(LogMel(SPECTRAL).shapes())) == 830_726


@pytest.mark.parametrize(
    ("model_class", "features"),
    [(CNN1D, MelMean(SPECTRAL)), (CNN2D, LogMel(SPECTRAL)), (CNN2D, MFCC(SPECTRAL)), (Fusion, LogMelMFCC(SPECTRAL))],
)
def test_each_model_maps_a_batch_of_its_features_to_class_logits(model_class, features) -> None:
    model = model_class(features.shapes(), num_classes=6).eval()
    logits = model(features(torch.randn(2, features.n_samples)))
    assert logits.shape == (2, 6)


def test_fusion_branches_are_the_2d_cnn_up_to_its_embedding() -> None:
    fusion = Fusion(LogMelMFCC(SPECTRAL, n_mfcc=40).shapes())
    mel_branch = count_trainable_params(fusion.branches["logmel"])
    assert mel_branch == 830_726 - (64 * 6 + 6)  # the 2D CNN without its last Dense layer
    head = (128 * 64 + 64) + (64 * 6 + 6)
    assert count_trainable_params(fusion) == mel_branch + count_trainable_params(fusion.branches["mfcc"]) + head


def test_sizes_and_choices_are_configurable() -> None:
    model = CNN2D(LogMel(SPECTRAL).shapes(), channels=(8, 16), kernel_size=5, dense=32, activation="elu")
    assert [m.out_channels for m in model.convs if isinstance(m, torch.nn.Conv2d)] == [8, 16]
    assert isinstance(model.convs[1], torch.nn.ELU)
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        CNN2D(LogMel(SPECTRAL).shapes(), activation="swish")


@pytest.mark.parametrize(
    ("model_class", "features", "message"),
    [
        (CNN1D, LogMel(SPECTRAL), r"cnn1d takes one input shaped \(channels, length\), but the features give logmel"),
        (CNN2D, MelMean(SPECTRAL), r"cnn2d takes one input shaped \(channels, height, width\).*mel_mean \(1, 128\)"),
        (CNN2D, LogMelMFCC(SPECTRAL), r"cnn2d takes one input.*logmel \(1, 128, 62\), mfcc \(1, 40, 62\)"),
        (Fusion, LogMel(SPECTRAL), r"fusion takes two inputs named logmel and mfcc"),
    ],
)
def test_a_model_given_the_wrong_features_says_so_at_construction(model_class, features, message) -> None:
    with pytest.raises(ConfigError, match=message):
        model_class(features.shapes())


def test_stacked_fusion_needs_two_branch_checkpoints() -> None:
    with pytest.raises(ConfigError, match=r"model.net.branch_checkpoints=\[LOGMEL_SOURCE,MFCC_SOURCE\]"):
        Fusion(LogMelMFCC(SPECTRAL).shapes(), mode="stacked")


def test_the_compact_tdnn_is_under_a_million_parameters_and_takes_any_number_of_frames() -> None:
    model = CompactTDNN(LogMel(SPECTRAL).shapes()).eval()
    assert count_trainable_params(model) == 683_350
    for frames in (7, 62, 400):
        assert model({"logmel": torch.randn(2, 1, 128, frames)}).shape == (2, 6)


def test_a_constant_offset_per_mel_band_a_gain_or_microphone_change_does_not_change_the_tdnns_output() -> None:
    torch.manual_seed(0)
    model = CompactTDNN(LogMel(SPECTRAL).shapes()).eval()
    clip = torch.randn(1, 1, 128, 80)
    offset = torch.linspace(-6.0, 6.0, 128).view(1, 1, 128, 1)  # dB per band: a louder, brighter microphone
    with torch.no_grad():
        torch.testing.assert_close(model({"logmel": clip + offset}), model({"logmel": clip}), atol=1e-5, rtol=1e-5)
        without = CompactTDNN(LogMel(SPECTRAL).shapes(), utterance_mean_norm=False).eval()
        assert not torch.allclose(without({"logmel": clip + offset}), without({"logmel": clip}), atol=1e-3)


def test_warmup_then_cosine_decay() -> None:
    factors = [warmup_cosine_factor(epoch, warmup_epochs=3, max_epochs=13) for epoch in range(14)]
    assert factors[:3] == [0.25, 0.5, 0.75] and factors[3] == 1.0
    assert factors[8] == pytest.approx(0.5) and factors[13] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))


def test_the_ssl_head_reads_the_weighted_sum_all_layers_side_by_side_or_one_layer() -> None:
    shapes = {"ssl": (7, 16)}
    layers = torch.randn(2, 7, 16)
    weighted, concat, one = (
        WeightedLayers(shapes, hidden=0, dropout=0.0, layers=x).eval() for x in ("weighted", "concat", 3)
    )
    assert count_trainable_params(weighted) == 7 + 16 * 6 + 6 and count_trainable_params(concat) == 7 * 16 * 6 + 6
    assert count_trainable_params(one) == 16 * 6 + 6 and one.layer_weights() is None
    changed = layers.clone()
    changed[:, 4] += 1.0  # another layer than the one it reads
    torch.testing.assert_close(one({"ssl": changed}), one({"ssl": layers}))
    assert concat({"ssl": layers}).shape == (2, 6)
    with pytest.raises(ConfigError, match=r"model\.net\.layers=7: choose weighted, concat or a layer from 0 to 6"):
        WeightedLayers(shapes, layers=7)
