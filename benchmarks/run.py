"""Run the benchmarks, print a table and write the records as JSON.

python -m benchmarks.run            # full: about 25 minutes on 2 CPU cores, writes benchmarks/results.json
python -m benchmarks.run --quick    # a few minutes, writes benchmarks/results-quick.json
python -m benchmarks.run --only features training
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import features, scaling, sweep, training
from benchmarks.common import Record, corpus, machine

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("features", "training", "sweep", "scaling")


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does."""

    speakers: int  # the default corpus: 24 speakers x 12 sentences x 6 = 1,728 clips
    sentences: int
    feature_clips: int
    train_batches: int
    repeats: int  # interleaved repeats of the feature and training measurements (medians reported)
    sweep_trials: int
    sweep_epochs: int
    scales: tuple[int, ...]


FULL = Sizes(24, 12, 1024, 12, 3, 16, 8, (1, 2, 4))
QUICK = Sizes(6, 2, 64, 2, 1, 2, 1, (1,))  # what the smoke test proves: every benchmark writes its records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small version that finishes in a few minutes")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--output", type=Path, help="default: benchmarks/results.json (results-quick.json)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("EMOTION_CACHE_DIR", "~/.cache/emotion")).expanduser(),
        help="where the synthetic corpora are generated (once); feature caches are temporary",
    )
    return parser.parse_args(argv)


def format_table(records: list[Record]) -> str:
    header = f"{'benchmark':<55} {'ours':>12} {'peer':>12} {'unit':<9} {'ratio':>8}"
    lines = [header, "-" * len(header)]
    for r in records:
        lines.append(f"{r.name:<55} {r.ours:>12.4g} {r.peer:>12.4g} {r.unit:<9} {r.ratio:>8.3g}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[Record]:
    sizes = QUICK if args.quick else FULL
    about = machine()
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="emotion-bench-") as work:
        if "features" in args.only:
            root = corpus(args.cache_dir, sizes.speakers, sizes.sentences)
            records += features.run(root, sizes.feature_clips, sizes.repeats, about)
        if "training" in args.only:
            records += training.run(
                args.cache_dir, sizes.speakers, sizes.sentences, sizes.train_batches, sizes.repeats, about
            )
        if "sweep" in args.only:
            corpus_size = (sizes.speakers, sizes.sentences)
            records += sweep.run(Path(work), args.cache_dir, sizes.sweep_trials, sizes.sweep_epochs, corpus_size, about)
        if "scaling" in args.only:
            records += scaling.run(args.cache_dir, sizes.speakers, sizes.sentences, sizes.scales, about)
    return records


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output = args.output or HERE / ("results-quick.json" if args.quick else "results.json")
    records = run(args)
    print(format_table(records))
    output.write_text(json.dumps([r.as_dict() for r in records], indent=2) + "\n")
    print(f"\nwrote {len(records)} records to {output}")


if __name__ == "__main__":
    main()
