"""Sync: `svrctl sync` of 1,000 tasks (first sync, then a no-op) vs `prefect deploy --all`.

The baseline deploys an equivalent prefect.yaml: one entry per task with the same
name, entrypoint, parameters, description, tags, schedule (the exact Prefect schedule
svrctl computes), work pool and queue, and deployment concurrency limit. Each side
runs as a whole process against its own fresh Prefect server (SQLite), so neither
sees the other's deployments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Row

NOOP_GOAL_SECONDS = 5.0
SERVERS = 10
# Schedules drawn from a small set of common seconds-first ones (with their zones),
# and distinct standard ones: 1,000 tasks rarely have 1,000 different schedules, and
# svrctl translates each distinct (schedule, zone) once per sync.
SECONDS_FIRST = [
    "0 */5 * * * *",
    "0 */15 * * * *",
    "0 0 * * * *",
    "0 0 */6 * * *",
    "0 0 9 * * MON-FRI",
    "0 30 4 * * *",
    "0 0 12 * * MON",
    "0 15 6 1 * *",
    "*/30 * * * * *",
    "0 45 23 * * SUN",
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York"]


def _env(home: Path, api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVRCTL_", "PREFECT_"))}
    env |= {
        "SVRCTL_HOME": str(home / "svrctl"),
        "SVRCTL_TIMEZONE": "UTC",
        "PREFECT_HOME": str(home / "prefect-client"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    return env


def _task(i: int) -> dict[str, Any]:
    """The i-th benchmark task: a command on one of 10 servers, with a schedule."""
    if i % 2:
        schedule, zone = f"{i % 60} {(i // 60) % 24} * * *", ZONES[i % 3]
    else:
        schedule, zone = SECONDS_FIRST[(i // 2) % len(SECONDS_FIRST)], ZONES[(i // 20) % 3]
    return {
        "name": f"task-{i:04d}",
        "server": f"web-{i % SERVERS}",
        "schedule": schedule,
        "timezone": zone,
        "overlap_policy": "queue" if i % 5 == 0 else "skip",
        "description": f"benchmark task {i}",
    }


SEED = """
import json, sys
from svrctl.runtime import app_database, app_settings
from svrctl.db.migrate import upgrade
from svrctl.servers import add_server
from svrctl.specs import ServerSpec, TaskSpec
from svrctl.tasks import add_task
from svrctl.sync import desired_state
upgrade(app_settings().resolved_database_url)
tasks = json.loads(open(sys.argv[1]).read())
with app_database().write() as s:
    for n in range({servers}):
        add_server(s, ServerSpec(name=f"web-{{n}}", host=f"10.0.0.{{n + 1}}", tags=["web"]))
    for t in tasks:
        add_task(s, TaskSpec(kind="ssh", command="uptime", **t))
with app_database().read() as s:
    wanted = desired_state(s)
out = []
for name, d in sorted(wanted.deployments.items()):
    sched = d.schedule
    out.append({{"name": name, "task_id": d.task_id, "description": d.description,
                "tags": list(d.tags), "pool": d.work_pool, "queue": d.work_queue,
                "strategy": d.collision_strategy,
                "cron": sched.cron, "day_or": sched.day_or, "timezone": sched.timezone}})
print(json.dumps(out))
"""


def _seed(env: dict[str, str], count: int) -> list[dict[str, Any]]:
    """Fill the app database; return each task's deployment as svrctl wants it."""
    tasks = Path(env["SVRCTL_HOME"]).parent / "tasks.json"
    tasks.parent.mkdir(parents=True, exist_ok=True)
    tasks.write_text(json.dumps([_task(i) for i in range(count)]))
    done = subprocess.run(
        [sys.executable, "-c", SEED.format(servers=SERVERS), str(tasks)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wanted: list[dict[str, Any]] = json.loads(done.stdout)
    return wanted


def _prefect_yaml(wanted: list[dict[str, Any]]) -> str:
    """Write the equivalent prefect.yaml (JSON is valid YAML)."""
    deployments = [
        {
            "name": w["name"],
            "entrypoint": "svrctl.flows.run_task:run_task",
            "parameters": {"task_id": w["task_id"]},
            "description": w["description"],
            "tags": w["tags"],
            "schedules": [
                {
                    "cron": w["cron"],
                    "timezone": w["timezone"],
                    "day_or": w["day_or"],
                    "active": True,
                    "slug": "svrctl",
                }
            ],
            "work_pool": {"name": w["pool"], "work_queue_name": w["queue"]},
            "concurrency_limit": {"limit": 1, "collision_strategy": w["strategy"]},
        }
        for w in wanted
    ]
    project = {
        "name": "svrctl-bench",
        "prefect-version": "3.9.1",
        "build": None,
        "push": None,
        "pull": None,
        "deployments": deployments,
    }
    return json.dumps(project, indent=1)


def _timed(args: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, done.stdout


def _count_deployments(api_url: str) -> int:
    import httpx

    response = httpx.post(f"{api_url}/deployments/count", json={}, timeout=30)
    response.raise_for_status()
    count: int = response.json()
    return count


def run(quick: bool) -> Row:
    """Measure the baseline and both syncs, each against its own fresh Prefect server."""
    from svrctl.prefect_server import start_prefect_server

    count = 50 if quick else 1000
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # baseline: prefect deploy --all on server A
        print(f"  5: seeding {count} tasks ...", file=sys.stderr)
        server = start_prefect_server(work / "server-a")
        try:
            env = _env(work / "a", server.api_url)
            wanted = _seed(env, count)
            project = work / "project"
            project.mkdir()
            (project / "prefect.yaml").write_text(_prefect_yaml(wanted))
            subprocess.run(
                [str(bin_dir / "prefect"), "work-pool", "create", "svrctl", "--type", "svrctl"],
                env=env,
                check=True,
                capture_output=True,
            )
            print("  5: prefect deploy --all ...", file=sys.stderr)
            # Prefect's server on SQLite answers 503 when busy; with its default 5
            # retries a deploy of 1,000 entries sometimes gives up halfway.
            base_env = env | {"PREFECT_CLIENT_MAX_RETRIES": "10"}
            base, _ = _timed(
                [str(bin_dir / "prefect"), "--no-prompt", "deploy", "--all"], base_env, cwd=project
            )
            base_count = _count_deployments(server.api_url)
        finally:
            server.stop()
        # ours: svrctl sync twice on server B
        server = start_prefect_server(work / "server-b")
        try:
            env = _env(work / "b", server.api_url)
            _seed(env, count)
            svrctl = str(bin_dir / "svrctl")
            print("  5: svrctl sync (first) ...", file=sys.stderr)
            first, out = _timed([svrctl, "sync", "--json"], env)
            first_report = json.loads(out)
            print("  5: svrctl sync (no-op) ...", file=sys.stderr)
            noop, out = _timed([svrctl, "sync", "--json"], env)
            noop_report = json.loads(out)
            ours_count = _count_deployments(server.api_url)
        finally:
            server.stop()
    noop_writes = noop_report["writes"]
    correct = base_count == count and ours_count == count and first_report["ok"]
    met = correct and first <= base and noop <= NOOP_GOAL_SECONDS and noop_writes == 0
    return Row(
        name=f"5 sync ({count:,} tasks)",
        baseline=f"prefect deploy --all {base:.1f} s",
        ours=f"first {first:.1f} s, no-op {noop:.1f} s ({noop_writes} writes)",
        figure=f"{first / base:.2f}x",
        goal=f"first <= baseline; no-op <= {NOOP_GOAL_SECONDS:g} s, 0 writes",
        met=met,
        details={
            "tasks": count,
            "baseline_s": round(base, 2),
            "first_s": round(first, 2),
            "first_writes": first_report["writes"],
            "first_reads": first_report["reads"],
            "first_sync_internal_s": first_report["seconds"],
            "noop_s": round(noop, 2),
            "noop_writes": noop_writes,
            "noop_reads": noop_report["reads"],
            "noop_sync_internal_s": noop_report["seconds"],
            "deployments_baseline": base_count,
            "deployments_ours": ours_count,
        },
    )
