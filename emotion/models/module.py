"""The LightningModule shared by every architecture: loss, optimiser, scheduler and metrics.

It tracks accuracy, macro-F1 and unweighted average recall (UAR, the macro
mean of per-class recalls, the usual headline metric of emotion recognition
because it does not reward predicting the majority class).

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
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from emotion.data.windows import average_over_windows

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]
NetFactory = Callable[..., nn.Module]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]
#: The `model.loss` settings a config may leave out.
LOSS_DEFAULTS = {"label_smoothing": 0.0, "mixup_alpha": 0.0, "class_weighting": False}


def count_trainable_params(model: nn.Module) -> int:
    """Number of parameters the optimiser updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "uar": MulticlassRecall(num_classes, average="macro"),
        },
        prefix=prefix,
    )


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Standardizer(nn.Module):
    """Per-frequency-row standardisation of each input with training-set statistics, kept in the checkpoint."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.names = tuple(shapes)
        for name, shape in shapes.items():
            stats_shape = (shape[0], shape[1], *([1] * (len(shape) - 2)))
            self.register_buffer(f"{name}_mean", torch.zeros(stats_shape))
            self.register_buffer(f"{name}_std", torch.ones(stats_shape))

    @torch.no_grad()
    def fit(self, inputs: dict[str, torch.Tensor]) -> None:
        """Set the statistics from a (training) batch of every input: mean and std over examples and time."""
        for name in self.names:
            x = inputs[name]
            dims = [0, *range(3, x.dim())]  # keep (channel, frequency)
            getattr(self, f"{name}_mean").copy_(x.mean(dim=dims, keepdim=True)[0])
            getattr(self, f"{name}_std").copy_(x.std(dim=dims, keepdim=True)[0].clamp_min(1e-5))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std") for name, x in inputs.items()}


class EmotionClassifier(pl.LightningModule):
    """Trains any network of `emotion.models` on batches of (features, label): the `model` config group.

    `net` builds the network for the input shapes and the number of classes (a partial `_target_` of the
    config). Inputs are standardised per frequency row with the statistics given to `standardizer.fit` (the
    training partition's) before they reach the network. `loss`: `label_smoothing`, `mixup_alpha` (> 0: mixup
    of training batches, weights ~ Beta(alpha, alpha)) and `class_weighting` (true: the loss weighs each class
    by its inverse frequency in the datamodule's training partition).
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.loss_settings = {**LOSS_DEFAULTS, **(loss or {})}
        # Channels-last convolutions run faster on CPU (oneDNN) and on GPU tensor cores.
        self.model = net(input_shapes=input_shapes, num_classes=len(classes)).to(memory_format=torch.channels_last)
        self.standardizer = Standardizer(input_shapes)
        self.classes = tuple(classes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler or None  # `scheduler=none` composes to an empty node
        self.scheduler_monitor = scheduler_monitor
        self.loss = nn.CrossEntropyLoss(label_smoothing=self.loss_settings["label_smoothing"])
        alpha = self.loss_settings["mixup_alpha"]
        self.mixup = torch.distributions.Beta(alpha, alpha) if alpha > 0 else None
        self.train_metrics = _metrics(len(classes), "train/")
        self.val_metrics = _metrics(len(classes), "val/")
        self.test_metrics = _metrics(len(classes), "test/")
        self.test_predictions: list[torch.Tensor] = []
        self.test_targets: list[torch.Tensor] = []

    def setup(self, stage: str) -> None:
        """Before fitting with `model.loss.class_weighting`: weigh the loss by the training partition's class counts."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.loss_settings["class_weighting"] and datamodule is not None:
            weight = torch.tensor(datamodule.class_weights(), dtype=torch.float32)
            self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=self.loss_settings["label_smoothing"])

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model({name: _channels_last(x) for name, x in self.standardizer(inputs).items()})

    def clip_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits per clip; for windowed clips (`segments` given), the log of their windows' mean probabilities.

        (Softmax of that log gives back the mean probabilities, so the loss and argmax need no special case.)
        """
        if "segments" not in inputs:
            return self(inputs)
        features = {name: x for name, x in inputs.items() if name != "segments"}
        segments = inputs["segments"]
        probabilities = self(features).float().softmax(dim=1)
        return average_over_windows(probabilities, segments, int(segments.max()) + 1).clamp_min(1e-12).log()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        if self.mixup is None:
            logits = self(inputs)
            loss = self.loss(logits, targets)
        else:
            logits, loss = self._mixup_step(inputs, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at epoch {self.current_epoch}")
        self.train_metrics.update(logits, targets)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(targets))
        return loss

    def _mixup_step(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup: each example blended with another of the batch, the loss blended with the same weight."""
        weight = float(self.mixup.sample())
        partner = torch.randperm(len(targets), device=targets.device)
        logits = self({name: weight * x + (1 - weight) * x[partner] for name, x in inputs.items()})
        loss = weight * self.loss(logits, targets) + (1 - weight) * self.loss(logits, targets[partner])
        return logits, loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()
        if hasattr(self.model, "layer_weights"):  # an SSL head: which upstream layers it listens to
            self.log_dict({f"layer_weight/{i:02d}": w for i, w in enumerate(self.model.layer_weights().tolist())})

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, targets = batch
        logits = self.clip_logits(inputs)
        self.val_metrics.update(logits, targets)
        self.log("val/loss", self.loss(logits, targets), prog_bar=True, batch_size=len(targets))

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()
        self.log_dict(metrics, prog_bar=True)
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self.test_predictions.clear()
        self.test_targets.clear()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, targets = batch
        logits = self.clip_logits(inputs)
        self.test_metrics.update(logits, targets)
        self.log("test/loss", self.loss(logits, targets), batch_size=len(targets))
        self.test_predictions.append(logits.argmax(dim=1).cpu())
        self.test_targets.append(targets.cpu())

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
        # Under DDP each process tests a share of the clips: keep every process's predictions.
        self.test_predictions = [self.all_gather(torch.cat(self.test_predictions)).reshape(-1).cpu()]
        self.test_targets = [self.all_gather(torch.cat(self.test_targets)).reshape(-1).cpu()]

    def test_results(self) -> tuple[torch.Tensor, torch.Tensor]:
        """True and predicted class indices of the last test epoch."""
        return torch.cat(self.test_targets), torch.cat(self.test_predictions)

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities of a batch (labels, if the batch has them, are ignored)."""
        inputs, _ = batch
        return self.clip_logits(inputs).softmax(dim=1)

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
