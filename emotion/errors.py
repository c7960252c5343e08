"""Errors the user can act on: the CLIs print them as one line instead of a traceback."""


class EmotionError(Exception):
    """A problem with the user's data or configuration, described in one line."""


class DataError(EmotionError):
    """The corpus cannot be read as configured (missing folder, bad file, bad name)."""


class ConfigError(EmotionError):
    """The configuration is inconsistent (for example a model given features it cannot take)."""


class UnsafeRecipe(EmotionError):
    """A saved model whose recipe is not plain, bounded data of the registered classes: nothing of it is built."""
