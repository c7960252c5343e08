"""`emotion-team`: the shared services of a team's sweeps, on this machine: PostgreSQL and an MLflow server.

emotion-team up --root /srv/emotion            # start both (PostgreSQL initialised on first use)
emotion-team env --root /srv/emotion           # the variables every worker needs, credentials included
emotion-team down --root /srv/emotion          # stop both

What they are and how they are secured: `emotion.ops.team`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emotion.cli import errors_as_one_line
from emotion.ops.team import (
    INSECURE_WARNING,
    load_secrets,
    start_mlflow,
    start_postgres,
    stop_mlflow,
    stop_postgres,
    worker_environment,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emotion-team", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("up", "down", "env"))
    parser.add_argument("--root", type=Path, required=True, help="folder for the database and the artifacts")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--database-port", type=int, default=5433)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no passwords: PostgreSQL trusts every connection, MLflow asks for no login (a single laptop only)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parse_args(argv)
    root = args.root.expanduser().resolve()
    passwords = None if args.insecure else load_secrets(root) if args.action != "down" else None
    with errors_as_one_line():
        if args.action == "up":
            if args.insecure:
                print(INSECURE_WARNING.format(host=args.host), file=sys.stderr)
            start_postgres(root, args.host, args.database_port, passwords and passwords["postgres"])
            start_mlflow(root, args.host, args.mlflow_port, args.database_port, passwords)
        elif args.action == "down":
            stop_mlflow(root)
            stop_postgres(root)
            return
    variables = worker_environment(args.host, args.mlflow_port, args.database_port, passwords)
    if args.action == "env":
        print("\n".join(f"export {name}={value}" for name, value in variables.items()))
        return
    hidden = {name: "..." if name.endswith("PASSWORD") else value for name, value in variables.items()}
    print("\n".join(f"export {name}={value}" for name, value in hidden.items()))
    if passwords:
        print(f"# passwords: {root / 'secrets.json'} (owner only); `emotion-team env --root {root}` prints them")


if __name__ == "__main__":
    main()
