"""The LightningModule shared by every architecture: loss, optimiser, scheduler and metrics.

Each epoch it scores its clips with `emotion.metrics` (accuracy, and UAR and macro-F1 over the classes
present): the same definitions as cross-validation's pooled scores and evaluations.

Evaluation batches of whole utterances carry `segments` (the clip of each
window): the module then scores each clip by the mean of its windows' class
probabilities (see `emotion.data.windows`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from emotion.data.normalize import SpeakerNormalizer, Standardizer, saved_settings
from emotion.data.windows import average_over_windows
from emotion.metrics import scores
from emotion.models.network import layer_weights_of

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]
NetFactory = Callable[..., nn.Module]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]
#: The `model.loss` settings a config may leave out.
LOSS_DEFAULTS = {"label_smoothing": 0.0, "mixup_alpha": 0.0, "class_weighting": False}


def count_trainable_params(model: nn.Module) -> int:
    """Number of parameters the optimiser updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class EpochPredictions:
    """The true and predicted class indices of one stage's epoch, scored at its end by `emotion.metrics`."""

    def __init__(self) -> None:
        self.targets: list[torch.Tensor] = []
        self.predicted: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.targets.append(targets.detach().cpu())
        self.predicted.append(logits.detach().argmax(dim=1).cpu())

    def collect(self, module: pl.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        """(true, predicted) of the epoch, of every process under DDP; then empty for the next epoch."""
        y_true, y_pred = torch.cat(self.targets), torch.cat(self.predicted)
        self.targets, self.predicted = [], []
        if module.trainer.world_size > 1:  # each process saw a share of the clips
            y_true, y_pred = (module.all_gather(t.to(module.device)).reshape(-1).cpu() for t in (y_true, y_pred))
        return y_true, y_pred

    def __bool__(self) -> bool:
        return bool(self.targets)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class EmotionClassifier(pl.LightningModule):
    """Trains any network of `emotion.models` on batches of (features, label): the `model` config group.

    `net` builds the network for the input shapes and the number of classes (a partial `_target_` of the
    config). Inputs are standardised per frequency row with the statistics given to `standardizer.fit` (the
    training partition's) before they reach the network. `loss`: `label_smoothing`, `mixup_alpha` (> 0: mixup
    of training batches, weights ~ Beta(alpha, alpha)) and `class_weighting` (true: the loss weighs each class
    by its inverse frequency in the datamodule's training partition).

    `recipe`: how to build this model again for inference, in plain values (the net's and the features' configs
    with their `_target_`, the front end's duration limits, the `normalize` stage's settings:
    `emotion.pipeline.build.inference_recipe`). The inputs reach the module already through that stage
    (`normalizer`, kept here for the checkpoint; the datamodule and the recognizer apply it). It is
    saved with the checkpoint's hyperparameters, so that `emotion.serving.recognizer.EmotionRecognizer`
    restores the trained model from the checkpoint alone.
    """

    def __init__(
        self,
        net: NetFactory,
        classes: Sequence[str],
        input_shapes: dict[str, tuple[int, ...]],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        loss: Mapping[str, Any] | None = None,
        scheduler_monitor: str = "val/loss",
        recipe: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.loss_settings = {**LOSS_DEFAULTS, **(loss or {})}
        # Channels-last convolutions run faster on CPU (oneDNN) and on GPU tensor cores.
        self.model = net(input_shapes=input_shapes, num_classes=len(classes)).to(memory_format=torch.channels_last)
        self.standardizer = Standardizer(input_shapes)
        # The `normalize` stage the inputs went through before this module (its fallback statistics, trained state).
        self.normalizer = SpeakerNormalizer(input_shapes, **saved_settings((recipe or {}).get("normalize") or {}))
        self.classes = tuple(classes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler or None  # `scheduler=none` composes to an empty node
        self.scheduler_monitor = scheduler_monitor
        self.loss = nn.CrossEntropyLoss(label_smoothing=self.loss_settings["label_smoothing"])
        alpha = self.loss_settings["mixup_alpha"]
        self.mixup = torch.distributions.Beta(alpha, alpha) if alpha > 0 else None
        self.epoch_predictions = {stage: EpochPredictions() for stage in ("train", "val", "test")}
        self.last_test: tuple[torch.Tensor, torch.Tensor] | None = None

    def setup(self, stage: str) -> None:
        """Before fitting with `model.loss.class_weighting`: weigh the loss by the training partition's class counts."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.loss_settings["class_weighting"] and datamodule is not None:
            weight = torch.tensor(datamodule.class_weights(), dtype=torch.float32)
            self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=self.loss_settings["label_smoothing"])

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model({name: _channels_last(x) for name, x in self.standardizer(inputs).items()})

    def clip_log_probabilities(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log class probabilities per clip; for windowed clips (`segments` given), the log of the mean of their
        windows' probabilities. (Cross-entropy and argmax take them as they take logits.)"""
        if "segments" not in inputs:
            return self(inputs).float().log_softmax(dim=1)
        features = {name: x for name, x in inputs.items() if name != "segments"}
        segments = inputs["segments"]
        probabilities = self(features).float().softmax(dim=1)
        return average_over_windows(probabilities, segments, int(segments.max()) + 1).clamp_min(1e-12).log()

    def probabilities(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities per clip (windows averaged): what the trained model serves."""
        return self.clip_log_probabilities(inputs).exp()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        if self.mixup is None:
            logits = self(inputs)
            loss = self.loss(logits, targets)
        else:
            logits, loss = self._mixup_step(inputs, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at epoch {self.current_epoch}")
        self.epoch_predictions["train"].update(logits, targets)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(targets))
        return loss

    def _mixup_step(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup: each example blended with another of the batch, the loss blended with the same weight."""
        weight = float(self.mixup.sample())
        partner = torch.randperm(len(targets), device=targets.device)
        logits = self({name: weight * x + (1 - weight) * x[partner] for name, x in inputs.items()})
        loss = weight * self.loss(logits, targets) + (1 - weight) * self.loss(logits, targets[partner])
        return logits, loss

    def _log_epoch_scores(self, stage: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`STAGE/acc`, `STAGE/uar`, `STAGE/f1` of the epoch's clips (`emotion.metrics`); their (true, predicted)."""
        if not self.epoch_predictions[stage]:
            return None
        y_true, y_pred = self.epoch_predictions[stage].collect(self)
        epoch_scores = scores(y_true.numpy(), y_pred.numpy())
        self.log_dict({f"{stage}/{name}": value for name, value in epoch_scores.items()}, prog_bar=stage == "val")
        return y_true, y_pred

    def on_train_epoch_end(self) -> None:
        self._log_epoch_scores("train")
        weights = layer_weights_of(self.model)  # an SSL head: which upstream layers it listens to
        if weights is not None:
            self.log_dict({f"layer_weight/{i:02d}": w for i, w in enumerate(weights.tolist())})

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, targets = batch
        logits = self.clip_log_probabilities(inputs)
        self.epoch_predictions["val"].update(logits, targets)
        self.log("val/loss", self.loss(logits, targets), prog_bar=True, batch_size=len(targets))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_scores("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, targets = batch
        logits = self.clip_log_probabilities(inputs)
        self.epoch_predictions["test"].update(logits, targets)
        self.log("test/loss", self.loss(logits, targets), batch_size=len(targets))

    def on_test_epoch_end(self) -> None:
        self.last_test = self._log_epoch_scores("test")

    def test_results(self) -> tuple[torch.Tensor, torch.Tensor]:
        """True and predicted class indices of the last test epoch (of every process under DDP)."""
        if self.last_test is None:
            raise RuntimeError("no test epoch has run")
        return self.last_test

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities of a batch (labels, if the batch has them, are ignored)."""
        inputs, _ = batch
        return self.probabilities(inputs)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("EmotionClassifier was built for inference (no optimizer): it cannot be trained")
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.scheduler_monitor, "interval": "epoch"},
        }
