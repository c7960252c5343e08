"""The command-line apps (`emotion-train`, `-promote`, `-predict`, `-evaluate`, `-runs`, `-profiles`, `-export`,
`-team`) and their shared error handling: a mistake is one `error:` line on standard error and exit status 1,
never a traceback.

No app imports another: what two share lives in the packages they call.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from emotion.errors import EmotionError

# MLflow draws a progress bar for every artifact it downloads (a checkpoint, a config): noise, not long work.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def fail(message: str) -> None:
    """Print `error: message` on standard error and exit with status 1."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1) from None


@contextmanager
def errors_as_one_line() -> Iterator[None]:
    """Turn an EmotionError raised inside the block into `fail(its message)`."""
    try:
        yield
    except EmotionError as exc:
        fail(str(exc))
