"""What every network of `emotion.models` is to the rest of the code: `Network`."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class Network(nn.Module):
    """A classifier network: built from the feature set's `input_shapes` and `num_classes`, its `forward` takes
    the dict of named inputs (`logmel`, `mfcc`, `ssl`, ...) and returns logits.

    `arch` names it in run names and the `architecture` tag (`cnn2d`); `layer_weights` is for networks that
    learn weights over a pretrained encoder's layers, which each run logs and plots.
    """

    arch: ClassVar[str]

    def layer_weights(self) -> torch.Tensor | None:
        """The weights the network gives each layer of an encoder (summing to 1), or None if it has none."""
        return None


def architecture_name(net_class: type) -> str:
    """A network class's `arch`, else its class name (a network of your own that is a plain `nn.Module`)."""
    return net_class.arch if issubclass(net_class, Network) else net_class.__name__


def layer_weights_of(net: nn.Module) -> torch.Tensor | None:
    """`net.layer_weights()` for a `Network`, else None."""
    return net.layer_weights() if isinstance(net, Network) else None
