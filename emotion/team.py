"""`emotion-team`: the shared services of a team's sweeps, on this machine: PostgreSQL and an MLflow server.

emotion-team up --root /srv/emotion            # start both (PostgreSQL initialised on first use)
emotion-team env --root /srv/emotion           # the variables every worker needs
emotion-team down --root /srv/emotion          # stop both

PostgreSQL holds two databases: `optuna` (the studies) and `mlflow` (the tracking store).
The MLflow server stores artifacts under ROOT/artifacts and serves them to the workers
(`--artifacts-destination`), so workers need only its URL. Both listen on --host (default
127.0.0.1; give an address the workers can reach, and mind that authentication is `trust`).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from emotion.errors import EmotionError

DATABASES = ("optuna", "mlflow")
USER = "emotion"


def postgres_tool(name: str) -> str:
    """A PostgreSQL server program (Debian keeps them out of PATH, under /usr/lib/postgresql/VERSION/bin)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise EmotionError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found


def _as_database_owner(command: list[str], data: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user, who then owns its folder."""
    if os.geteuid() != 0:
        return command
    shutil.chown(data, "postgres")
    return ["runuser", "-u", "postgres", "--", *command]


def database_url(host: str, port: int, database: str) -> str:
    return f"postgresql://{USER}@{host}:{port}/{database}"


def start_postgres(root: Path, host: str, port: int) -> None:
    """Initialise (once) and start PostgreSQL with its data in ROOT/postgres; create the databases."""
    data = root / "postgres"
    if not (data / "PG_VERSION").is_file():
        data.mkdir(parents=True, exist_ok=True)
        initdb = [postgres_tool("initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"]
        _run(_as_database_owner(initdb, data))
    options = f"-h {host} -p {port} -k {data}"
    start = [postgres_tool("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-o", options, "-w", "start"]
    _run(_as_database_owner(start, data))
    for name in DATABASES:
        exists = subprocess.run(
            [postgres_tool("psql"), "-h", host, "-p", str(port), "-U", USER, "-d", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if not exists:
            _run([postgres_tool("createdb"), "-h", host, "-p", str(port), "-U", USER, name])
    # Create Optuna's tables now, so workers that start together do not race to create them.
    import optuna  # here: `emotion-team --help` should not wait for Optuna to load

    optuna.storages.RDBStorage(database_url(host, port, "optuna"))


def stop_postgres(root: Path) -> None:
    data = root / "postgres"
    if (data / "postmaster.pid").is_file():
        _run(_as_database_owner([postgres_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], data))


def start_mlflow(root: Path, host: str, port: int, database_port: int) -> str:
    """Start `mlflow server` on the `mlflow` database in the background; its URL once it answers."""
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", database_url(host, database_port, "mlflow"),
        "--artifacts-destination", str(root / "artifacts"),
        "--host", host, "--port", str(port), "--workers", "2",
    ]  # fmt: skip
    with (root / "mlflow.log").open("a") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True, env=venv_environment())
    (root / "mlflow.pid").write_text(str(server.pid))
    url = f"http://{host}:{port}"
    wait_until_answering(f"{url}/health", server, root / "mlflow.log")
    return url


def venv_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this environment) as in an activated venv: MLflow's servers start `uvicorn` from PATH."""
    base = dict(os.environ if base is None else base)
    return {**base, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"}


def wait_until_answering(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll `url` until it answers; EmotionError with the end of `log` if the server exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise EmotionError(f"the server exited; the end of {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise EmotionError(f"no answer from {url} within {timeout:.0f} s; the end of {log}:\n{log.read_text()[-3000:]}")


def stop_mlflow(root: Path) -> None:
    pid_file = root / "mlflow.pid"
    if pid_file.is_file():
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()


def worker_environment(host: str, mlflow_port: int, database_port: int) -> dict[str, str]:
    """What each worker needs: where the runs go and where the studies live."""
    return {
        "MLFLOW_TRACKING_URI": f"http://{host}:{mlflow_port}",
        "EMOTION_STUDY_STORAGE": database_url(host, database_port, "optuna"),
    }


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise EmotionError(f"{Path(command[0]).name} failed: {(result.stderr or result.stdout).strip()[-2000:]}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emotion-team", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("up", "down", "env"))
    parser.add_argument("--root", type=Path, required=True, help="folder for the database and the artifacts")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--database-port", type=int, default=5433)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parse_args(argv)
    root = args.root.expanduser().resolve()
    try:
        if args.action == "up":
            start_postgres(root, args.host, args.database_port)
            start_mlflow(root, args.host, args.mlflow_port, args.database_port)
        elif args.action == "down":
            stop_mlflow(root)
            stop_postgres(root)
            return
    except EmotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    for name, value in worker_environment(args.host, args.mlflow_port, args.database_port).items():
        print(f"export {name}={value}")


if __name__ == "__main__":
    main()
