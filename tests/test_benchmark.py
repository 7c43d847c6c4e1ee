"""scripts/benchmark.py runs end to end and writes the table's numbers (not a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow  # ~17 s: the script trains two short runs in its own process
def test_benchmark_writes_both_throughputs_and_their_ratio(mnist_dir: Path, tmp_path: Path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--datasets", "mnist", "--recipes", "clean",
         "pgd", "--batch-size", "8", "--batches", "2", "--warmup", "1", "--rounds", "1",
         "--val-size", "16", "--data-dir", str(mnist_dir), "--skip-callback", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    rows = {row["recipe"]: row for row in summary["rows"]}
    assert set(rows) == {"clean", "pgd"}
    for row in rows.values():
        assert row["plain_img_s"] > 0 and row["advlab_img_s"] > 0
        # one round: the median of the per-round ratios is that round's ratio
        assert row["round_ratios"] == [row["advlab_rounds"][0] / row["plain_rounds"][0]]
        assert abs(row["ratio"] - row["advlab_img_s"] / row["plain_img_s"]) < 1e-9
    assert summary["mnist_pgd10_step_cost_vs_clean"] > 1.0  # 10 extra passes cannot be free
