"""The benchmark suite still runs: a ``--quick`` smoke run of benchmarks 6 and 8.

Only whether it runs and answers right is checked here; its goals are timings,
which the benchmark measures (docs/performance.md) and tests do not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
def test_quick_benchmarks_run_and_answer_right(tmp_path: Path, pg_admin_url: str) -> None:
    out = tmp_path / "latest.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SVRCTL_"))}
    env |= {"SVRCTL_BENCH_PG_URL": pg_admin_url, "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "6", "8", "--output", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["quick"] is True
    rows = {row["name"]: row for row in report["results"]}
    assert sorted(rows) == [
        "6 history at 50,000 rows (PostgreSQL)",
        "6 history at 50,000 rows (SQLite)",
        "8 CLI start-up (task list, 100 tasks)",
    ], done.stderr
    for name, row in rows.items():
        details = row["details"]
        if name.startswith("6"):
            phases = ("baseline", "full", "after_purge", "purge")
            assert all(details[phase]["right"] for phase in phases), (name, details)
            assert details["purge"]["removed"] == 45_000
        else:
            assert details["listed_all"] is True and details["heavy_imports"] == []
    assert "met" in done.stdout  # the table was printed
