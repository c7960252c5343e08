"""How long each command-line tool takes to answer `--help` and a mistyped argument, in fresh processes.

python -m benchmarks.cli_startup               # median of 5 runs of each command, the installed code
PYTHONPATH=/other/checkout python -m benchmarks.cli_startup   # the same commands on another checkout's code

Goal: under 2 s each; the tools read their arguments and compose their config before importing torch,
Lightning and MLflow.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import machine

COMMANDS = {
    "emotion-train --help": ["emotion.cli.train", "--help"],
    "emotion-train modle=cnn2d (bad override)": ["emotion.cli.train", "modle=cnn2d"],
    "emotion-train features.n_mfcc=abc --cfg job": ["emotion.cli.train", "features.n_mfcc=abc", "--cfg", "job"],
    "emotion-promote --help": ["emotion.promote", "--help"],
    "emotion-predict --help": ["emotion.predict", "--help"],
    "emotion-team --help": ["emotion.ops.team", "--help"],
}


def seconds(module_args: list[str]) -> float:
    start = time.perf_counter()
    # from a neutral folder, so that PYTHONPATH (or the installed package), not this folder, decides the code
    subprocess.run([sys.executable, "-m", *module_args], capture_output=True, check=False, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    facts = machine()
    print(f"{facts['cpu']}, {facts['cores']} cores, torch {facts['torch']}; median of {args.repeats} runs")
    print("| command | wall time (s) |\n|---|---|")
    for name, module_args in COMMANDS.items():
        print(f"| `{name}` | {statistics.median(seconds(module_args) for _ in range(args.repeats)):.2f} |")


if __name__ == "__main__":
    main()
