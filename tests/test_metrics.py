"""Each score is defined once (`emotion.metrics`): the LightningModule's epoch scores, cross-validation's pooled
scores and evaluations give the same UAR, over the classes present in the true labels."""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from emotion.cli.evaluate import scored_predictions
from emotion.metrics import scores
from emotion.models.linear import SoftmaxRegression
from emotion.models.module import EmotionClassifier
from emotion.pipeline.crossval import summarize
from emotion.tracking.cv import FoldResult

CLASSES = ("angry", "happy", "sad")
#: A test speaker without clips of the third class, one of whose clips is predicted as that class.
TARGETS = [0, 0, 1, 1]
PREDICTED = [0, 2, 1, 1]
#: Recall of class 0 is 1/2, of class 1 is 2/2; class 2 has no clip, so it does not count: (0.5 + 1) / 2.
UAR_OVER_PRESENT_CLASSES = 0.75


def test_uar_averages_the_recall_of_the_classes_present_only() -> None:
    assert scores(np.array(TARGETS), np.array(PREDICTED))["uar"] == UAR_OVER_PRESENT_CLASSES


def test_the_lightning_modules_test_uar_is_the_same_quantity() -> None:
    """A module whose net passes one-hot inputs through, so it predicts `PREDICTED`, tested by a real Trainer."""
    module = EmotionClassifier(partial(SoftmaxRegression), CLASSES, input_shapes={"x": (1, len(CLASSES))})
    with torch.no_grad():
        module.model.head[-1].weight.copy_(torch.eye(len(CLASSES)))
        module.model.head[-1].bias.zero_()
    inputs = torch.nn.functional.one_hot(torch.tensor(PREDICTED), len(CLASSES)).float()[:, None, :]
    batches = DataLoader(list(zip([{"x": x} for x in inputs], torch.tensor(TARGETS), strict=True)), batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (logged,) = trainer.test(module, batches)
    assert logged["test/uar"] == pytest.approx(UAR_OVER_PRESENT_CLASSES)
    y_true, y_pred = module.test_results()
    assert (y_true.tolist(), y_pred.tolist()) == (TARGETS, PREDICTED)


def test_pooled_cross_validation_scores_and_fold_scores_are_the_same_quantity() -> None:
    fold = FoldResult(0, "run", {"test/uar": UAR_OVER_PRESENT_CLASSES, "test/acc": 0.75, "test/f1": 0.0,
                                 "val/uar": 0.5}, np.array(TARGETS), np.array(PREDICTED), {"test": ["s1"]})  # fmt: skip
    summary = summarize([fold], "val/uar", len(CLASSES))
    assert summary["test/uar_pooled"] == summary["test/uar_mean"] == UAR_OVER_PRESENT_CLASSES


def test_an_evaluation_scores_the_same_quantity() -> None:
    probabilities = np.eye(len(CLASSES))[PREDICTED]
    predictions = pd.DataFrame({f"prob_{c}": probabilities[:, i] for i, c in enumerate(CLASSES)})
    emotions = [CLASSES[i] for i in TARGETS]
    _, _, result = scored_predictions(predictions, emotions, CLASSES)
    assert result["eval/uar"] == UAR_OVER_PRESENT_CLASSES
