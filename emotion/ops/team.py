"""The shared services of a team's sweeps, on this machine: PostgreSQL and an MLflow server (`emotion-team`).

PostgreSQL holds two databases: `optuna` (the studies) and `mlflow` (the tracking store).
The MLflow server stores artifacts under ROOT/artifacts and serves them to the workers
(`--artifacts-destination`), so workers need only its URL. Both listen on --host (default
127.0.0.1; give an address the workers can reach).

Both ask for a password: PostgreSQL (scram-sha-256, every connection) and the MLflow server (MLflow's
`basic-auth` app: an admin, and a `worker` user for the workers). The passwords are generated on
first use into ROOT/secrets.json (mode 0600), and reach workers as PGPASSWORD and
MLFLOW_TRACKING_USERNAME/PASSWORD, never inside a URL. `--insecure` keeps the old behaviour
(`trust`, no MLflow login) for a single laptop.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from emotion.errors import EmotionError

DATABASES = ("optuna", "mlflow")
USER = "emotion"
WORKER = "worker"
ADMIN = "admin"
INSECURE_WARNING = (
    "warning: --insecure: PostgreSQL trusts every connection and the MLflow server asks for no password: "
    "anyone who can reach {host} can read, change or drop every study, run and model"
)


def load_secrets(root: Path) -> dict[str, str]:
    """The services' passwords, generated once into ROOT/secrets.json, readable by its owner only (0600)."""
    path = root / "secrets.json"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        names = ("postgres", "mlflow_admin", "mlflow_worker", "mlflow_secret_key")
        generated = {name: secrets.token_urlsafe(24) for name in names}
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            json.dump(generated, file)
    return json.loads(path.read_text())


def write_private(path: Path, text: str) -> None:
    """`text` into `path`, readable and writable by its owner only (0600) from the moment it exists."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)


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


def start_postgres(root: Path, host: str, port: int, password: str | None) -> None:
    """Initialise (once) and start PostgreSQL with its data in ROOT/postgres; create the databases.

    With a `password`, every connection must give it (scram-sha-256); without, every connection is trusted.
    """
    data = root / "postgres"
    if not (data / "PG_VERSION").is_file():
        data.mkdir(parents=True, exist_ok=True)
        _initdb(data, password)
    elif password is not None and "trust" in _authentication_methods(data):
        raise EmotionError(
            f"{data} was made by `emotion-team up --insecure` and trusts every connection: "
            "start it with --insecure again, or remove that folder to start over with passwords"
        )
    options = f"-h {host} -p {port} -k {data}"
    start = [postgres_tool("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-o", options, "-w", "start"]
    _run(_as_database_owner(start, data))
    env = {**os.environ, "PGPASSWORD": password} if password else None
    for name in DATABASES:
        exists = subprocess.run(
            [postgres_tool("psql"), "-h", host, "-p", str(port), "-U", USER, "-d", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            capture_output=True, text=True, check=True, env=env,
        ).stdout.strip()  # fmt: skip
        if not exists:
            _run([postgres_tool("createdb"), "-h", host, "-p", str(port), "-U", USER, name], env=env)
    # Create Optuna's tables now, so workers that start together do not race to create them.
    import optuna  # here: `emotion-team --help` should not wait for Optuna to load

    with _environment(env):
        optuna.storages.RDBStorage(database_url(host, port, "optuna"))


def _initdb(data: Path, password: str | None) -> None:
    """A new database cluster owned by USER: with a password (scram-sha-256 for every connection), or trusting all."""
    command = [postgres_tool("initdb"), "-D", str(data), "-U", USER, "-E", "UTF8"]
    if password is None:
        _run(_as_database_owner([*command, "--auth=trust"], data))
        return
    password_file = data.parent / ".initdb-password"
    write_private(password_file, password)
    try:
        owned = _as_database_owner([*command, "--auth=scram-sha-256", f"--pwfile={password_file}"], data)
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres")
        _run(owned)
    finally:
        password_file.unlink()


def _authentication_methods(data: Path) -> set[str]:
    """The methods named in the cluster's pg_hba.conf."""
    lines = (line.split() for line in (data / "pg_hba.conf").read_text().splitlines())
    return {fields[-1] for fields in lines if fields and not fields[0].startswith("#")}


@contextlib.contextmanager
def _environment(values: dict[str, str] | None) -> Iterator[None]:
    """`values` as this process's environment for a while (libpq reads PGPASSWORD from it)."""
    saved = dict(os.environ)
    os.environ.update(values or {})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def stop_postgres(root: Path) -> None:
    data = root / "postgres"
    if (data / "postmaster.pid").is_file():
        _run(_as_database_owner([postgres_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], data))


def start_mlflow(root: Path, host: str, port: int, database_port: int, passwords: dict[str, str] | None) -> str:
    """Start `mlflow server` on the `mlflow` database in the background; its URL once it answers.

    With `passwords`, the server runs MLflow's `basic-auth` app (users in ROOT/mlflow-auth.db) and the
    workers' user is created; without, it asks for no password.
    """
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", database_url(host, database_port, "mlflow"),
        "--artifacts-destination", str(root / "artifacts"),
        "--host", host, "--port", str(port), "--workers", "2",
    ]  # fmt: skip
    env = venv_environment() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runners: CPU kept
    if passwords:
        command += ["--app-name", "basic-auth"]
        env |= {"MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(root, passwords["mlflow_admin"])),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": passwords["mlflow_secret_key"],  # its CSRF protection
                "PGPASSWORD": passwords["postgres"]}  # fmt: skip
    with (root / "mlflow.log").open("a") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True, env=env)
    (root / "mlflow.pid").write_text(str(server.pid))
    url = f"http://{host}:{port}"
    wait_until_answering(f"{url}/health", server, root / "mlflow.log")
    if passwords:
        _create_worker_user(url, passwords)
    return url


def _auth_config(root: Path, admin_password: str) -> Path:
    """MLflow's basic-auth settings (admin credentials, user database), readable by the owner only."""
    path = root / "mlflow-auth.ini"
    text = (
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'mlflow-auth.db'}\n"
        f"admin_username = {ADMIN}\nadmin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    write_private(path, text)
    return path


def _create_worker_user(url: str, passwords: dict[str, str]) -> None:
    """The workers' MLflow user (once): it owns, and so may change, what the workers create."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    admin = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": passwords["mlflow_admin"]}
    with _environment(admin), contextlib.suppress(MlflowException):  # it exists: an earlier `up` made it
        AuthServiceClient(url).create_user(WORKER, passwords["mlflow_worker"])


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


def worker_environment(
    host: str, mlflow_port: int, database_port: int, passwords: dict[str, str] | None
) -> dict[str, str]:
    """What each worker needs: where the runs go and where the studies live, and the credentials of both."""
    where = {
        "MLFLOW_TRACKING_URI": f"http://{host}:{mlflow_port}",
        "EMOTION_STUDY_STORAGE": database_url(host, database_port, "optuna"),
    }
    if not passwords:
        return where
    return where | {
        "MLFLOW_TRACKING_USERNAME": WORKER,
        "MLFLOW_TRACKING_PASSWORD": passwords["mlflow_worker"],
        "PGPASSWORD": passwords["postgres"],
    }


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise EmotionError(f"{Path(command[0]).name} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
