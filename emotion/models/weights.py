"""Trained weights from a Lightning checkpoint file, loaded safely (`weights_only`): no MLflow here.

(`emotion.tracking.checkpoints.resolve_checkpoint` turns an MLflow run into such a file.)
"""

from __future__ import annotations

from pathlib import Path

import torch

#: Where the LightningModule (`EmotionClassifier`) keeps its network's weights in a checkpoint's state.
NETWORK_PREFIX = "model."


def load_state(path: str | Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The entries of a Lightning checkpoint's `state_dict` under `prefixes`."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefixes)}


def network_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's weights of a checkpoint file, keyed as the network's own `state_dict`."""
    return {k[len(NETWORK_PREFIX) :]: v for k, v in load_state(path, (NETWORK_PREFIX,)).items()}
