"""A folder a test's own PostgreSQL can run from (light: the profile store's writer processes import it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from emotion.errors import EmotionError
from emotion.ops.team import postgres_tool


def postgres_folder(prefix: str) -> Path:
    """A new temporary folder PostgreSQL's user can reach; the test is skipped where PostgreSQL is absent."""
    try:
        postgres_tool("initdb")
    except EmotionError as exc:
        pytest.skip(f"{exc}; .ci/run installs it")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user when we are root: it must reach its folder
    return root
