"""The benchmark command end to end in its quick mode: every benchmark writes its records (timings not checked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"name", "ours", "peer", "ratio", "unit", "parameters", "machine"}


def test_quick_benchmarks_write_one_record_per_measurement(tmp_path: Path, cache_dir: Path) -> None:
    output = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(output), "--cache-dir", str(cache_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    records = json.loads(output.read_text())
    names = [r["name"] for r in records]
    assert {n.split(":")[0] for n in names} == {"features", "training", "sweep", "scaling"}
    assert sum(n.startswith("training:") for n in names) == 3  # one per architecture
    assert sum(n.startswith("scaling:") for n in names) == 4  # 4 measures at 1x
    for record in records:
        assert set(record) >= FIELDS, record["name"]
        assert math.isfinite(record["ours"]) and record["ours"] >= 0, record["name"]
        assert math.isfinite(record["peer"]) and record["peer"] >= 0, record["name"]
        assert record["machine"]["cores"] >= 1
    features = next(r for r in records if r["name"].startswith("features: cold"))
    assert features["parameters"]["max_abs_difference_db"] < 0.1  # ours and librosa compute the same log-mels
    assert "benchmark" in result.stdout and f"wrote {len(records)} records" in result.stdout
