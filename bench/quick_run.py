"""Quick run latency: `prefect deployment run` to a finished history row, svrctl vs process worker.

The same task (`echo quick` over SSH to a local sshd) is deployed twice: on a
work pool of type `svrctl`, served by `prefect worker start --type svrctl`, and
on a pool of type `process`, served by Prefect's stock process worker (the
baseline). Each run is triggered with `prefect deployment run` and timed from
the flow run's creation (when the run exists in Prefect, as after a click on
Quick run in the UI) to its history row's `finished_at`; the wall time from
invoking the CLI is kept in the details. A run counts only if its row is right:
success, the output, exit code 0, triggered by `api`, and the flow run's id.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.common import (
    BIN,
    Row,
    child_env,
    deploy_run_task,
    median,
    p95,
    setup_ssh_task,
    start_worker,
    stop_worker,
    use_env,
)

GOAL_SECONDS = 2.0
GOAL_RATIO = 0.25


def _one_run(client: Any, deployment: str, env: dict[str, str]) -> tuple[float, float, bool]:
    """Trigger one run with the CLI; return (created->row s, CLI->row s, row is right)."""
    from sqlalchemy import select

    from svrctl.db.models import TaskHistory
    from svrctl.runtime import app_database

    invoked = time.time()
    out = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", f"run-task/{deployment}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    match = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout)
    if match is None:
        raise RuntimeError(f"no flow run id in:\n{out.stdout}")
    run_id = UUID(match.group(1))
    deadline = time.monotonic() + 120
    while True:
        with app_database().read() as s:
            row = s.scalar(select(TaskHistory).where(TaskHistory.flow_run_id == str(run_id)))
        if row is not None and row.finished_at is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"flow run {run_id} has no finished row after 120 s")
        time.sleep(0.02)
    created = client.read_flow_run(run_id).created
    latency = (row.finished_at - created).total_seconds()
    wall = row.finished_at.timestamp() - invoked
    right = (row.status, row.output, row.exit_code, row.triggered_by) == (
        "success",
        "quick\n",
        0,
        "api",
    )
    return latency, wall, right


def _measure(
    client: Any, pool_type: str, task_id: int, env: dict[str, str], work: Path, repeat: int
) -> dict[str, Any]:
    pool = f"bench-{pool_type}"
    deployment = f"quick-{pool_type}"
    deploy_run_task(client, pool, pool_type, task_id, deployment)
    argv = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", pool_type]
    worker = start_worker(client, pool, argv, env, work / f"{pool_type}-worker.log")
    try:
        _one_run(client, deployment, env)  # warm-up: the first run after start-up
        latencies, walls, right = [], [], 0
        for _ in range(repeat):
            latency, wall, ok = _one_run(client, deployment, env)
            latencies.append(latency)
            walls.append(wall)
            right += ok
    finally:
        stop_worker(worker)
    return {"latency": latencies, "wall": walls, "right": right}


def run(quick: bool, prefect_api: str) -> Row:
    """Measure the svrctl worker, then the process worker, on the same task."""
    from fixtures.sshd import start_sshd
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repeat = 3 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "user").mkdir()
        env = child_env(work, prefect_api)
        use_env(env)
        sshd = start_sshd(work / "sshd")
        try:
            task_id = setup_ssh_task(sshd, "bench-quick", "echo quick")
            with (
                temporary_settings(updates={PREFECT_API_URL: prefect_api}),
                get_client(sync_client=True) as client,
            ):
                ours = _measure(client, "svrctl", task_id, env, work, repeat)
                base = _measure(client, "process", task_id, env, work, repeat)
        finally:
            sshd.stop()
    ours_median, base_median = median(ours["latency"]), median(base["latency"])
    ratio = ours_median / base_median
    correct = ours["right"] == repeat and base["right"] == repeat
    return Row(
        name="2 quick run latency (deployment run -> finished row)",
        baseline=f"process worker {base_median:.1f} s",
        ours=f"{ours_median:.2f} s (p95 {p95(ours['latency']):.2f} s)",
        figure=f"{ratio:.2f}x",
        goal=f"<= {GOAL_SECONDS:g} s and <= {GOAL_RATIO}x",
        met=ours_median <= GOAL_SECONDS and ratio <= GOAL_RATIO and correct,
        details={
            "repeat": repeat,
            "measured_from": "flow run created (server time) to history row finished_at",
            "rows_right": {"svrctl": ours["right"], "process": base["right"]},
            "svrctl_ms": [round(v * 1000) for v in ours["latency"]],
            "process_ms": [round(v * 1000) for v in base["latency"]],
            "svrctl_from_cli_invoked_ms": [round(v * 1000) for v in ours["wall"]],
            "process_from_cli_invoked_ms": [round(v * 1000) for v in base["wall"]],
        },
    )
