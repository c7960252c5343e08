"""docs/extending.md's examples run as written: its files are written, its commands run, their runs checked.

The files are the page's code blocks that start with `# FILE: PATH`; the commands are its bash blocks, run in
order in one shell in a temporary folder, each `emotion-train` on the budget `debug=tiny` (72 clips, one
batch an epoch). The corpus of the last example is a tree of clips of the tiny corpus at `/path/to/my_corpus`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from emotion.config import PROJECT_ROOT
from tests.conftest import finished_runs

PAGE = PROJECT_ROOT / "docs" / "extending.md"
FOLDER_OF = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu", "SAD": "sad"}


def page_files(page: str) -> dict[str, str]:
    """The code blocks that name their file on their first line, by file."""
    blocks = re.findall(r"^```(?:python|yaml)\n# FILE: (\S+)\n(.*?)^```", page, flags=re.MULTILINE | re.DOTALL)
    return dict(blocks)


def page_commands(page: str) -> list[str]:
    blocks = re.findall(r"^```bash\n(.*?)^```", page, flags=re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def speaker_emotion_tree(corpus: Path, destination: Path) -> Path:
    """Clips of the tiny corpus (`1001_IEO_ANG_HI.wav`) as SPEAKER/EMOTION/TAKE.wav."""
    for clip in sorted(corpus.glob("*.wav")):
        speaker, sentence, emotion, level = clip.stem.split("_")
        target = destination / f"spk{speaker}" / FOLDER_OF[emotion] / f"{sentence}_{level}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, target)
    return destination


@pytest.mark.slow
def test_the_extending_pages_model_encoder_and_corpus_train_as_written(
    tmp_path: Path, cache_dir: Path, tiny_corpus: Path
) -> None:
    page = PAGE.read_text()
    files = page_files(page)
    assert set(files) == {
        "my_extensions/nets.py",
        "my_extensions/encoders.py",
        "my_extensions/corpora.py",
        "my_conf/model/mean_pool_mlp.yaml",
        "my_conf/data/my_corpus.yaml",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    corpus = speaker_emotion_tree(tiny_corpus, tmp_path / "my_corpus")
    commands = [
        f"{c.replace('/path/to/my_corpus', str(corpus))} debug=tiny" if c.startswith("emotion-train") else c
        for c in page_commands(page)
    ]
    assert sum(c.startswith("emotion-train") for c in commands) == 3
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    environment = {**os.environ, "EMOTION_CACHE_DIR": str(cache_dir), "MLFLOW_TRACKING_URI": store}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"  # emotion-train
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join(commands)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{commands}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    runs = finished_runs(store)
    tags = [(r.data.tags["architecture"], r.data.tags["features"], r.data.tags["data"]) for r in runs]
    assert ("mean_pool_mlp", "logmel", "synthetic") in tags
    assert ("ssl_head", "ssl", "synthetic") in tags
    ssl_run = next(r for r in runs if r.data.tags["features"] == "ssl")
    assert ssl_run.data.params["features.encoder"] == "my_extensions.encoders.LogMelDeltas"
    assert ssl_run.data.params["trainable_params"] == str(2 + 32 * 6 + 6)  # 2 layer weights, softmax regression on 32
    (parent,) = [r for r in runs if r.data.tags.get("role") == "cv"]
    assert parent.data.tags["data"] == "my_corpus" and parent.data.tags["cv"] == "loso"
    folds = mlflow.MlflowClient(store).search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(f.data.params["split.test_speakers"] for f in folds) == [f"spk100{i}" for i in range(1, 7)]
