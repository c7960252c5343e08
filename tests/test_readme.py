"""The README's path from clone to served model runs as written.

The commands come from the bash blocks of the README's section "From clone to served model", so a
change of the README changes what runs here. They run in order, in one shell, in a fresh copy of the
project, with two documented changes of budget only: `debug=tiny` after each `emotion-train`, and
free ports for the two servers (`make ui UI_PORT=...`, the port of `mlflow models serve`).

Set-up runs `make install` for real in the copy, into a `.venv` that sees this environment's packages
(a `.pth` file), so pip installs the project's copy and finds every dependency already there: a
few seconds instead of a 6 GB download. The user's own audio (`recordings/`, `clip.wav`) is
made of clips of the tiny corpus.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import mlflow
import pytest
import soundfile as sf

from emotion.config import PROJECT_ROOT

from .conftest import free_port

SECTION = "## From clone to served model"
SERVERS = {"make ui": "/", "mlflow models serve": "/ping"}  # a command that keeps running, and what answers


def path_commands(readme: str, title: str = SECTION) -> list[str]:
    """The shell commands of the section's bash blocks, in order, each with its continuation lines joined."""
    section = readme.split(title, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    return [command for block in blocks for command in re.sub(r"\\\n\s*", "", block).splitlines() if command.strip()]


def without_comment(command: str) -> str:
    """`command` without a trailing `# comment` (a `#` outside quotes, after a space)."""
    quote = None
    for i, char in enumerate(command):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and i > 0 and command[i - 1].isspace():
            return command[:i].rstrip()
    return command


def on_a_tiny_budget(command: str, ui_port: int, serve_port: int) -> str:
    """`command` as the test runs it: `debug=tiny` for training, free ports, servers in the background."""
    command = without_comment(command).replace("5001", str(serve_port))
    if command.startswith("emotion-train"):
        return f"{command} debug=tiny"
    if command.startswith("make ui"):
        command = f"{command} UI_PORT={ui_port}"
    for server, probe in SERVERS.items():
        if command.startswith(server):
            port = ui_port if server == "make ui" else serve_port
            log = server.replace(" ", "-") + ".log"
            return f"{command} >{log} 2>&1 &\nwait_until_answering http://127.0.0.1:{port}{probe} $! {log}"
    return command


WAIT_FUNCTION = """
wait_until_answering() {  # URL PID LOG: wait up to 3 minutes for a server, show its log if it never answers
  for _ in $(seq 360); do
    curl -fs -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.5
  done
  echo "no answer from $1"; cat "$3"; return 1
}
"""


def fresh_copy(destination: Path) -> Path:
    """The project's files as a fresh clone would hold them (tracked and not ignored), under `destination`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, copy = PROJECT_ROOT / name, destination / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy2(source, copy)
    return destination


def venv_seeing_these_packages(project: Path) -> None:
    """A `.venv` in `project` whose Python imports this environment's packages, with their commands (`mlflow`)."""
    venv = project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python*/site-packages")
    (purelib / "_reuse_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for command in Path(sys.executable).parent.iterdir():
        if not (venv / "bin" / command.name).exists() and not command.name.startswith(("emotion-", "activate")):
            shutil.copy2(command, venv / "bin" / command.name)  # copies: pip must not write through to ours


#: Real recordings (../shared/data); the README serves the longest Emo-DB clip (8.98 s), where they are.
EMODB = PROJECT_ROOT.parent / "shared" / "data" / "emodb" / "wav"


def users_audio(project: Path, corpus: Path) -> Path:
    """The `recordings/` folder and `clip.wav` the README predicts: clips of the tiny corpus, and a real clip
    over 5 s (its base64 is over the 128 KB a shell argument may hold) where the shared corpora are."""
    clips = sorted(corpus.glob("*.wav"))
    (project / "recordings").mkdir()
    for clip in clips[:3]:
        shutil.copy(clip, project / "recordings" / clip.name)
    real = sorted(EMODB.glob("*.wav"), key=lambda p: p.stat().st_size)[-1:] if EMODB.is_dir() else []
    shutil.copy(real[0] if real else clips[3], project / "clip.wav")
    return project / "clip.wav"


@pytest.mark.slow
def test_the_readmes_path_from_set_up_to_a_served_model_runs_as_written(
    tmp_path: Path, cache_dir: Path, tiny_corpus: Path
) -> None:
    commands = path_commands((PROJECT_ROOT / "README.md").read_text())
    assert [c for c in commands if c.startswith(("make install", "emotion-train --multirun", "mlflow models serve"))]
    project = fresh_copy(tmp_path / "emotion")
    venv_seeing_these_packages(project)
    served_clip = users_audio(project, tiny_corpus)
    if EMODB.is_dir():
        samples, rate = sf.read(served_clip)
        assert len(samples) / rate > 5 and len(base64.b64encode(served_clip.read_bytes())) > 128 * 1024
    ui_port, serve_port = free_port(), free_port()
    script = (
        "set -euo pipefail\n"
        + WAIT_FUNCTION
        + "\n".join(on_a_tiny_budget(command, ui_port, serve_port) for command in commands)
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))}
    environment["EMOTION_CACHE_DIR"] = str(cache_dir)  # the tiny corpus, synthesised once per session
    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=project,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = shell.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the two servers, still running in the background
            os.killpg(shell.pid, signal.SIGTERM)
    assert shell.returncode == 0, f"the README's path failed:\n{script}\n--- output ---\n{output[-6000:]}"

    (answer,) = [line for line in output.splitlines() if line.startswith('{"predictions"')]
    (prediction,) = json.loads(answer)["predictions"]
    classes = ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    assert prediction["emotion"] in classes
    assert sum(prediction[f"prob_{name}"] for name in classes) == pytest.approx(1.0, abs=1e-4)
    assert "promote it with: emotion-promote --study cnn2d_logmel" in output
    for clip in ["clip.wav", *(p.name for p in (project / "recordings").iterdir())]:
        assert clip in output, f"emotion-predict did not list {clip}"

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlruns.db'}")
    champion = client.get_model_version_by_alias("emotion", "champion")
    assert client.get_run(champion.run_id).data.tags.get("study") == "cnn2d_logmel"
