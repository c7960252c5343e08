"""The README's section "Speakers it never heard" runs as written, on real speech (SAVEE and Whisper base from
`../shared`), in a fresh copy of the project set up as step 1 says (`tests/test_readme.py`'s helpers).

A file of its own, apart from the README's main path: each walk takes minutes, and `make test`'s xdist
(`--dist loadfile`) runs two files on its two workers at once, where one file's two walks ran one after the other.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import pytest

from emotion.config import PROJECT_ROOT

from .test_readme import EMODB, fresh_copy, path_commands, venv_seeing_these_packages, without_comment

SPEAKERS = "## Speakers it never heard"
SHARED = PROJECT_ROOT.parent / "shared"


@pytest.mark.slow
@pytest.mark.skipif(
    not (EMODB.is_dir() and (SHARED / "models" / "whisper-base").is_dir()), reason="no real corpora or Whisper base"
)
def test_the_readmes_speaker_adaptive_path_runs_as_written_on_real_speech(tmp_path: Path) -> None:
    """The section's commands on SAVEE and Whisper base, as written (`../shared` beside the project's copy), after
    the set-up of step 1 (`make install`, `source .venv/bin/activate`): the runs go to the copy's own store."""
    commands = path_commands((PROJECT_ROOT / "README.md").read_text(), SPEAKERS)
    assert [c for c in commands if c.startswith("emotion-predict") and "--speaker" in c]
    project = fresh_copy(tmp_path / "emotion")
    venv_seeing_these_packages(project)
    (tmp_path / "shared").symlink_to(SHARED)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))}
    environment |= {"EMOTION_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    set_up = ["make install >/dev/null", "source .venv/bin/activate"]
    script = "set -euo pipefail\n" + "\n".join([*set_up, *(without_comment(command) for command in commands)])
    finished = subprocess.run(
        ["bash", "-c", script], cwd=project, env=environment, capture_output=True, text=True, timeout=900
    )
    assert finished.returncode == 0, f"the section failed:\n{script}\n--- output ---\n{finished.stderr[-6000:]}"

    rows = [line.split() for line in finished.stdout.splitlines() if "/savee/JE_" in line]
    assert len(rows) == 120 and all(row[1] == "JE" and row[5] == "speaker" for row in rows)
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlruns.db'}")
    champion = client.get_model_version_by_alias("savee-adaptive", "champion")
    run = client.get_run(champion.run_id)
    assert run.data.tags["speaker_adaptive"] == "true" and run.data.params["split.test_speakers"] == "JE"
