"""Schedule accuracy: 3 tasks every 10 s, run by a real `svrctl worker`, for 3 minutes.

Three local tasks (`true`) with the seconds-first schedule `*/10 * * * * *` are
synced to Prefect (`svrctl.sync`, as `svrctl sync` does), so Prefect's own
scheduler creates their flow runs, and a `svrctl worker` process serves their
pool (`svrctl`, created by the worker on the benchmark's fresh Prefect server).

The window starts at the first 10 s slot at least WARMUP seconds after the sync
(so Prefect has scheduled the runs and the worker prefetched them) and lasts
3 minutes (40 s with --quick). Every slot of the window is an expected instant
for every task. Read back from Prefect after the window, per flow run:
error = start_time - expected_start_time (Prefect's own timestamps). A slot with
no started run is *missing*; a slot with two runs is *doubled*. A run counts as
right only if it ended Completed and its history row in the app database is a
success with that flow run's id.

There is no baseline: the goal is absolute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Row, median, p95, stop_worker

TASKS = 3
SCHEDULE = "*/10 * * * * *"  # seconds-first: every 10 s
PERIOD = 10.0
WARMUP = 20.0
GOAL_P95 = 1.0
GOAL_EARLY = 1.0
POOL = "svrctl"  # where sync puts local tasks; fresh on the benchmark's Prefect server
BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def _worker_settings() -> dict[str, str]:
    """PREFECT_WORKER_* settings given to the benchmark, passed on to the worker."""
    return {k: v for k, v in os.environ.items() if k.startswith("PREFECT_WORKER_")}


def _env(work: Path, api: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SVRCTL_"))}
    return (
        env
        | _worker_settings()
        | {
            "HOME": str(work / "user"),
            "SVRCTL_HOME": str(work / "home"),
            "SVRCTL_TIMEZONE": "UTC",
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(work / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )


def _setup() -> list[str]:
    """Create the app database and the tasks; return their names."""
    from svrctl import runtime
    from svrctl.db.migrate import upgrade
    from svrctl.specs import TaskSpec
    from svrctl.tasks import add_task

    runtime.reset()
    settings = runtime.app_settings()
    upgrade(settings.resolved_database_url)
    settings.ensure_home()
    names = [f"bench-every-10s-{i}" for i in range(1, TASKS + 1)]
    with runtime.app_database().write() as s:
        for name in names:
            add_task(
                s,
                TaskSpec(
                    name=name,
                    kind="local",
                    command="true",
                    schedule=SCHEDULE,
                    timezone="UTC",
                ),
            )
    return names


def _start_worker(client: Any, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "svrctl"), "worker", "--pool", POOL],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.read_workers_for_work_pool(POOL) and "started!" in log.read_text():
                return process
        except (ObjectNotFound, PrefectHTTPStatusError):  # no pool yet: the worker creates it
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"svrctl worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _next_slot(after: float) -> datetime:
    """Return the first 10 s slot after ``after`` (a Unix time)."""
    return datetime.fromtimestamp((int(after // PERIOD) + 1) * PERIOD, UTC)


def _read_runs(client: Any, deployment_ids: list[Any], start: datetime, end: datetime) -> list[Any]:
    """Every flow run of the deployments expected in [start - 1 s, end), in any state."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
    )

    runs: list[Any] = []
    offset = 0
    while True:
        page = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids),
                expected_start_time=FlowRunFilterExpectedStartTime(
                    after_=start - timedelta(seconds=1), before_=end - timedelta(microseconds=1)
                ),
            ),
            limit=200,
            offset=offset,
        )
        runs += page
        offset += len(page)
        if len(page) < 200:
            return runs


def _rows_by_flow_run() -> dict[str, str]:
    from sqlalchemy import select

    from svrctl.db.models import TaskHistory
    from svrctl.runtime import app_database

    with app_database().read() as s:
        return {
            r.flow_run_id: r.status
            for r in s.scalars(select(TaskHistory).where(TaskHistory.flow_run_id.is_not(None)))
        }


def _measure(client: Any, env: dict[str, str], work: Path, duration: float) -> dict[str, Any]:
    from svrctl.runtime import app_database
    from svrctl.sync import sync

    names = _setup()
    worker = _start_worker(client, env, work / "worker.log")
    try:
        report = sync(app_database(), env["PREFECT_API_URL"])
        if not report.ok or set(report.deployment_ids) != set(names):
            raise RuntimeError(f"sync failed: {report.problems} {report.failed}")
        deployments = {report.deployment_ids[n]: n for n in names}
        start = _next_slot(time.time() + WARMUP)
        slots = [start + timedelta(seconds=PERIOD * k) for k in range(round(duration / PERIOD))]
        end = slots[-1] + timedelta(seconds=PERIOD)
        # wait for the window, then for its last runs to finish
        time.sleep(max(0.0, slots[-1].timestamp() - time.time()))
        deadline = time.monotonic() + 60
        while True:
            runs = _read_runs(client, list(deployments), start, end)
            due = [r for r in runs if r.expected_start_time <= slots[-1]]
            if all(r.state is not None and r.state.type.value in FINAL for r in due) and len(
                due
            ) >= len(slots) * len(names):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        load = os.getloadavg()
    finally:
        stop_worker(worker)
    return _analyse(runs, deployments, slots, load)


def _analyse(
    runs: list[Any],
    deployments: dict[str, str],
    slots: list[datetime],
    load: tuple[float, float, float],
) -> dict[str, Any]:
    rows = _rows_by_flow_run()
    per_slot: Counter[tuple[str, float]] = Counter()
    started: set[tuple[str, float]] = set()
    slot_times = {s.timestamp() for s in slots}
    errors: list[float] = []
    wrong: list[str] = []
    by_task: dict[str, list[float]] = defaultdict(list)
    off_slot = 0
    for run in runs:
        task = deployments[str(run.deployment_id)]
        expected = run.expected_start_time
        if expected.timestamp() not in slot_times:
            off_slot += 1  # not a slot of the schedule: counted as doubled below
            continue
        key = (task, expected.timestamp())
        per_slot[key] += 1
        state = run.state.type.value if run.state is not None else "?"
        if state != "COMPLETED" or rows.get(str(run.id)) != "success":
            message = (run.state.message or "")[:160] if run.state is not None else ""
            wrong.append(
                f"{task} {expected:%H:%M:%S}: {state} ({message}), row {rows.get(str(run.id))}"
            )
        # a slot is run by a run that started; one cancelled before it started is not
        if run.start_time is None or state in ("CANCELLED", "SCHEDULED", "PENDING", "?"):
            continue
        started.add(key)
        error = (run.start_time - expected).total_seconds()
        errors.append(error)
        by_task[task].append(error)
    expected_keys = {(t, s) for t in deployments.values() for s in slot_times}
    missing = sorted(
        f"{t} {datetime.fromtimestamp(s, UTC):%H:%M:%S}" for t, s in expected_keys - started
    )
    doubled = sum(n - 1 for n in per_slot.values() if n > 1) + off_slot
    absolute = [abs(e) for e in errors] or [float("inf")]
    return {
        "slots": len(slots),
        "window": f"{slots[0]:%H:%M:%S}-{slots[-1]:%H:%M:%S} UTC",
        "expected_runs": len(expected_keys),
        "runs_started": len(errors),
        "missing": missing,
        "doubled": doubled,
        "wrong": wrong,
        "p50": median(absolute),
        "p95": p95(absolute),
        "max_abs": max(absolute),
        "max_early": max([*(-e for e in errors), 0.0]),
        "max_late": max([*errors, 0.0]),
        "errors_ms": [round(e * 1000) for e in errors],
        "median_by_task_ms": {t: round(median(v) * 1000) for t, v in sorted(by_task.items())},
        "load_avg_after": [round(x, 2) for x in load],
    }


def run(quick: bool, api_url: str) -> Row:
    """Sync the tasks, serve them with a svrctl worker, and measure the window's runs."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    duration = 40.0 if quick else 180.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "user").mkdir()
        env = _env(work, api_url)
        saved = {k: os.environ.get(k) for k in ("HOME", "SVRCTL_HOME", "SVRCTL_TIMEZONE")}
        for key in ("HOME", "SVRCTL_HOME", "SVRCTL_TIMEZONE", "PREFECT_API_URL"):
            os.environ[key] = env[key]
        os.environ.pop("SVRCTL_DATABASE_URL", None)
        try:
            with (
                temporary_settings(updates={PREFECT_API_URL: api_url}),
                get_client(sync_client=True) as client,
            ):
                m = _measure(client, env, work, duration)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            from svrctl import runtime

            runtime.reset()
    met = (
        m["p95"] <= GOAL_P95
        and m["max_early"] <= GOAL_EARLY
        and not m["missing"]
        and m["doubled"] == 0
        and not m["wrong"]
    )
    return Row(
        name=f"3 schedule accuracy ({TASKS} tasks every 10 s, {duration:g} s)",
        baseline="none (absolute)",
        ours=f"|error| p50 {m['p50']:.2f} s, p95 {m['p95']:.2f} s",
        figure=(
            f"max early {m['max_early']:.2f} s, missing {len(m['missing'])}, "
            f"doubled {m['doubled']}, {m['runs_started']}/{m['expected_runs']} runs"
        ),
        goal="p95 |error| <= 1 s, none > 1 s early, none missing or doubled",
        met=met,
        details={
            "measured": "per flow run: Prefect start_time - expected_start_time",
            "schedule": SCHEDULE,
            "duration_s": duration,
            "worker_settings": _worker_settings(),
            **m,
        },
    )
