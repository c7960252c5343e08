"""What a saved recipe may build: only the project's own classes.

A trained model's checkpoint or skops file carries the recipe it is rebuilt from (`emotion.serving.recognizer`),
and Hydra would call whatever its `_target_`s name. Such a file is data someone else may have written: its
recipe could name `torch.load` or `os.system`. Every `_target_` is looked up and must be a class defined in the
`emotion` package (nets, feature sets, encoders); anything else is refused in one line, before anything is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import get_object

from emotion.errors import EmotionError


class UnsafeRecipe(EmotionError):
    """A saved recipe that names something other than one of the project's classes: nothing of it is built."""


def check_saved_targets(config: Any, source: str) -> None:
    """UnsafeRecipe unless every `_target_` in a saved recipe is a class defined in the `emotion` package (each
    is looked up: `emotion.config.os.system` names a function of `os`, and is refused)."""
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None and not _is_project_class(target):
            raise UnsafeRecipe(f"{source}'s recipe names {target!r}, which is not one of emotion's classes: not loaded")
        for value in config.values():
            check_saved_targets(value, source)
    elif isinstance(config, Sequence) and not isinstance(config, str):
        for value in config:
            check_saved_targets(value, source)


def _is_project_class(target: Any) -> bool:
    if not isinstance(target, str) or not target.startswith("emotion."):
        return False
    try:
        found = get_object(target)
    except Exception:  # a name that cannot be found, for whatever reason, is not built
        return False
    return isinstance(found, type) and found.__module__.split(".")[0] == "emotion"
