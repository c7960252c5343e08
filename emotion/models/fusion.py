"""The report's fusion model: a log-mel 2D CNN branch and an MFCC 2D CNN branch.

Each branch is the 2D CNN up to its Dense embedding; the two embeddings are
concatenated into a head of two dense layers. `mode="end_to_end"` trains it
all; `mode="stacked"` (the report's) loads two trained branches from
checkpoint files (the pipeline fetches those of MLflow runs), freezes them and trains only the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from emotion.errors import ConfigError
from emotion.models.cnn2d import CNN2D
from emotion.models.layers import make_activation
from emotion.models.network import Network
from emotion.models.weights import network_state

BRANCH_INPUTS = ("logmel", "mfcc")


class Fusion(Network):
    """Two CNN2D branches (log-mel and MFCC) joined by a two-layer head."""

    arch = "fusion"

    def __init__(
        self,
        input_shapes: dict[str, tuple[int, ...]],
        num_classes: int = 6,
        branch: dict[str, Any] | None = None,
        hidden: int = 64,
        dropout: float = 0.3,
        activation: str = "relu",
        mode: Literal["end_to_end", "stacked"] = "end_to_end",
        branch_checkpoints: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if set(input_shapes) != set(BRANCH_INPUTS):
            given = ", ".join(f"{name} {tuple(shape)}" for name, shape in input_shapes.items())
            raise ConfigError(f"model fusion takes two inputs named logmel and mfcc, but the features give {given}")
        branch = dict(branch or {})
        self.branches = nn.ModuleDict(
            {name: CNN2D({name: input_shapes[name]}, num_classes, **branch) for name in BRANCH_INPUTS}
        )
        embedded = sum(b.embedding_size for b in self.branches.values())
        self.head = nn.Sequential(
            nn.Linear(embedded, hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.mode = mode
        if mode == "stacked":
            self._load_and_freeze_branches(branch_checkpoints)
        elif mode != "end_to_end":
            raise ConfigError(f"unknown fusion mode {mode!r}: choose 'end_to_end' or 'stacked'")
        for b in self.branches.values():  # the head replaces the branches' own classifiers
            b.classifier = nn.Identity()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([b.embed(inputs) for b in self.branches.values()], dim=1))

    def train(self, mode: bool = True) -> Fusion:
        """Frozen branches stay in eval mode, so their dropout is off and BatchNorm statistics stay fixed."""
        super().train(mode)
        if self.mode == "stacked":
            self.branches.eval()
        return self

    def _load_and_freeze_branches(self, sources: Sequence[str] | None) -> None:
        if not sources or len(sources) != 2:
            raise ConfigError(
                "fusion mode=stacked needs model.net.branch_checkpoints=[LOGMEL_SOURCE,MFCC_SOURCE]: "
                "checkpoint paths or MLflow run IDs of trained cnn2d runs"
            )
        for name, source in zip(BRANCH_INPUTS, sources, strict=True):
            branch = self.branches[name]
            state = network_state(source)
            try:
                branch.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(f"checkpoint {source} does not fit the fusion {name} branch: {exc}") from exc
            branch.requires_grad_(False)
        # Lightning keeps each submodule's own train/eval flag (it never calls .train() on the whole model),
        # so the frozen branches are put in eval mode here, and `train` below keeps them there.
        self.branches.eval()
