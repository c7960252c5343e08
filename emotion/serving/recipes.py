"""What a saved recipe may build: only the project's own classes, and those of packages the host names.

A trained model's checkpoint or skops file carries the recipe it is rebuilt from (`emotion.serving.recognizer`),
and Hydra would call whatever its `_target_`s name. Such a file is data someone else may have written: its
recipe could name `torch.load` or `os.system`. Every `_target_` is looked up and must be a class defined in the
`emotion` package (nets, feature sets, encoders) or in a package `EMOTION_TRUSTED_MODULES` names (your own
extensions: docs/extending.md); anything else is refused in one line, before anything is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import get_object

from emotion.errors import EmotionError

#: The variable naming packages (comma-separated) whose classes a saved recipe may build besides emotion's own.
TRUSTED_MODULES = "EMOTION_TRUSTED_MODULES"


class UnsafeRecipe(EmotionError):
    """A saved recipe that names something other than one of the project's classes: nothing of it is built."""


def check_saved_targets(config: Any, source: str) -> None:
    """UnsafeRecipe unless every `_target_` in a saved recipe is a class defined in a trusted package (each is
    looked up: `emotion.config.os.system` names a function of `os`, and is refused)."""
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None and not _is_trusted_class(target):
            raise UnsafeRecipe(
                f"{source}'s recipe names {target!r}, which is not one of emotion's classes (a package of yours: "
                f"{TRUSTED_MODULES}=its_name): not loaded"
            )
        for value in config.values():
            check_saved_targets(value, source)
    elif isinstance(config, Sequence) and not isinstance(config, str):
        for value in config:
            check_saved_targets(value, source)


def trusted_packages() -> set[str]:
    """`emotion` and the packages `EMOTION_TRUSTED_MODULES` names."""
    named = os.environ.get(TRUSTED_MODULES, "").replace(os.pathsep, ",").split(",")
    return {"emotion", *(name.strip() for name in named if name.strip())}


def _is_trusted_class(target: Any) -> bool:
    packages = trusted_packages()
    if not isinstance(target, str) or target.split(".")[0] not in packages:
        return False
    try:
        found = get_object(target)
    except Exception:  # a name that cannot be found, for whatever reason, is not built
        return False
    return isinstance(found, type) and found.__module__.split(".")[0] in packages
