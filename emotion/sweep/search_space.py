"""Search spaces: Hydra's override grammar or an explicit form, turned into Optuna distributions.

Override grammar (as on the command line or under `hydra.sweeper.params`):

    model.optimizer.lr: tag(log, interval(1e-4, 1e-2))    # FloatDistribution(log=True)
    model.net.dropout: interval(0.1, 0.5)               # FloatDistribution
    model.net.kernel_size: tag(int, interval(3, 7))     # IntDistribution
    model.net.dense: range(32, 129, step=32)            # IntDistribution(step=32)
    data.batch_size: choice(16, 32, 64)             # CategoricalDistribution

Explicit form (under `hydra.sweeper.search_space`):

    model.optimizer.lr: {type: float, low: 1e-4, high: 1e-2, log: true}
    model.net.dense: {type: int, low: 32, high: 128, step: 32}
    model.net.activation: {type: categorical, choices: [relu, elu, gelu]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from emotion.errors import ConfigError


def distribution_from_override(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (`interval`, `range`, `choice`, with `tag(log, ...)`)."""
    value = override.value()
    log = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([_plain(v) for v in value.list])
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step or 1
        if all(isinstance(x, int) for x in (start, stop, step)):
            last = stop - 1 if (stop - start) % step == 0 else stop - (stop - start) % step
            return IntDistribution(int(start), int(last), log=log, step=1 if log else int(step))
        return CategoricalDistribution(list(value))
    if isinstance(value, IntervalSweep):  # Hydra parses interval bounds as floats: tag(int, ...) asks for ints
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{override.key_or_group} is not a sweep: use choice(...), range(...) or interval(...)")


def distribution_from_spec(name: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """The Optuna distribution of one explicit entry: {type: int|float|categorical, low, high, log, step, choices}."""
    kind = spec.get("type")
    if kind == "categorical":
        return CategoricalDistribution([_plain(v) for v in spec["choices"]])
    if kind in ("int", "float"):
        cls = IntDistribution if kind == "int" else FloatDistribution
        options = {k: spec[k] for k in ("log", "step") if spec.get(k) is not None}
        return cls(spec["low"], spec["high"], **options)
    raise ConfigError(f"search_space.{name}: type must be int, float or categorical, not {kind!r}")


def parse_search_space(
    params: Mapping[str, str] | None, explicit: Mapping[str, Mapping[str, Any]] | None, arguments: list[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Distributions of every swept key, and the fixed overrides every trial gets.

    `params` and command-line `arguments` use the override grammar; a sweep on the
    command line replaces the same key's entry of `params`. Plain overrides pass through.
    """
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    space: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for override in parser.parse_overrides(lines):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution_from_override(override)
        else:
            fixed.append(override.input_line)
    for name, spec in (explicit or {}).items():
        space[name] = distribution_from_spec(name, spec)
    if not space:
        raise ConfigError("the sweep has no search space: set hydra.sweeper.params or hydra.sweeper.search_space")
    return space, fixed


def _plain(value: Any) -> Any:
    """Hydra parses `choice(a, b)` items as strings, numbers or bools; Optuna needs plain ones."""
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
