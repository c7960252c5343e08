"""Pieces shared by the architectures: activations and the input-shape check."""

from __future__ import annotations

from torch import nn

from emotion.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """A new activation layer by name (relu, elu, gelu, leaky_relu, silu, tanh)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)}") from None


def single_input(shapes: dict[str, tuple[int, ...]], ndim: int, model: str, layout: str) -> tuple[str, tuple[int, ...]]:
    """The one input of a single-input model, checked to have `ndim` dimensions (without batch)."""
    if len(shapes) != 1 or len(next(iter(shapes.values()))) != ndim:
        given = ", ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())
        raise ConfigError(f"model {model} takes one input shaped {layout}, but the features give {given}")
    return next(iter(shapes.items()))
