"""Worker memory: the whole process tree of a worker with 10 flow runs in flight, svrctl vs process.

Called from ``bench/__main__.py`` as
``rows.append(worker_memory.run(args.quick, server.api_url))``.

One SSH task (over a local sshd) whose command holds until the benchmark
releases it (``while [ ! -e RELEASE ]; do sleep 0.1; done; echo held``) is
deployed twice: on a work pool of type ``svrctl``, served by ``svrctl worker
--limit 10``, and on a pool of type ``process``, served by Prefect's stock
``prefect worker start --type process --limit 10`` (the baseline: the worker
plus one Python subprocess per flow run). For each worker, a round creates 10
flow runs of its deployment at once through the API (as ``prefect deployment
run`` does) and samples, every 0.1 s, the memory of the worker's process tree
(the worker and all its descendants, found through ``/proc``): the sum of
``Rss`` and the sum of ``Pss`` from each process's ``/proc/PID/smaps_rollup``,
and how many of the round's history rows are in flight (started, not
finished). Once all 10 are in flight the benchmark holds them for a few
seconds, then releases them and waits for all 10 to finish.

The figure is the peak total RSS over the samples that saw all 10 runs in
flight (RSS counts a page shared by two processes twice; PSS splits it, and is
reported beside it). The goal is on RSS. A round counts only if its 10 history
rows are right (success, the output ``held``, exit code 0, triggered by
``api``, one row per flow run) and its 10 flow runs are Completed. Full mode
runs 3 rounds on each worker (the worker keeps running between them, so growth
from round to round shows), --quick one round with a shorter hold.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.common import (
    BIN,
    Row,
    child_env,
    deploy_run_task,
    setup_ssh_task,
    start_worker,
    stop_worker,
    use_env,
)

RUNS = 10
GOAL_RATIO = 0.5
SAMPLE_SECONDS = 0.1
ROUND_TIMEOUT = 300.0
OUTPUT = "held\n"


@dataclass
class Sample:
    """The memory of a worker's process tree at one instant, and the runs in flight."""

    at: float
    rss_kib: int
    pss_kib: int
    processes: dict[int, tuple[str, int, int]]  # pid -> (command, Rss KiB, Pss KiB)
    in_flight: int
    finished: int


def _children() -> dict[int, list[int]]:
    """Return every process's children, from /proc/PID/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """Return ``root`` and all its descendants."""
    children = _children()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def memory_kib(pid: int) -> tuple[str, int, int] | None:
    """Return a process's command line, Rss and Pss in KiB; None once it is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    values = {}
    for line in rollup.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0])
    if "Rss" not in values:  # a zombie has no memory left
        return None
    command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return command, values["Rss"], values["Pss"]


def _rows_state(run_ids: list[UUID]) -> tuple[int, int]:
    """Return how many of these flow runs' history rows are in flight and finished."""
    from sqlalchemy import func, select

    from svrctl.db.models import TaskHistory
    from svrctl.runtime import app_database

    ids = [str(r) for r in run_ids]
    with app_database().read() as s:
        query = select(TaskHistory.finished_at.is_(None), func.count()).where(
            TaskHistory.flow_run_id.in_(ids)
        )
        counts = dict(s.execute(query.group_by(TaskHistory.finished_at.is_(None))).all())
    return int(counts.get(True, 0)), int(counts.get(False, 0))


def sample(root: int, run_ids: list[UUID]) -> Sample:
    """Take one sample of the tree under ``root`` and of the runs' history rows."""
    processes = {}
    for pid in process_tree(root):
        found = memory_kib(pid)
        if found is not None:
            processes[pid] = found
    in_flight, finished = _rows_state(run_ids) if run_ids else (0, 0)
    return Sample(
        at=time.monotonic(),
        rss_kib=sum(p[1] for p in processes.values()),
        pss_kib=sum(p[2] for p in processes.values()),
        processes=processes,
        in_flight=in_flight,
        finished=finished,
    )


def _pace(started: float) -> None:
    """Sleep the rest of one sampling period."""
    time.sleep(max(0.0, SAMPLE_SECONDS - (time.monotonic() - started)))


def _wait_for_lone_worker(worker: int) -> None:
    """Wait until the worker's subprocesses of an earlier round have exited."""
    deadline = time.monotonic() + 120
    while len(process_tree(worker)) > 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker still has subprocesses: {process_tree(worker)}")
        time.sleep(SAMPLE_SECONDS)


def _check_round(client: Any, run_ids: list[UUID]) -> list[str]:
    """Return what is wrong with a round's history rows and flow runs (empty when right)."""
    from sqlalchemy import select

    from svrctl.db.models import TaskHistory
    from svrctl.runtime import app_database

    ids = {str(r) for r in run_ids}
    with app_database().read() as s:
        rows = list(s.scalars(select(TaskHistory).where(TaskHistory.flow_run_id.in_(ids))))
    problems = []
    if sorted(r.flow_run_id or "" for r in rows) != sorted(ids):
        problems.append(f"{len(rows)} history rows for {len(ids)} flow runs")
    for r in rows:
        seen = (r.status, r.output, r.exit_code, r.triggered_by)
        if seen != ("success", OUTPUT, 0, "api"):
            problems.append(f"row {r.id} of flow run {r.flow_run_id}: {seen}")
    deadline = time.monotonic() + 60
    for run_id in run_ids:
        while True:
            state = client.read_flow_run(run_id).state
            if (state is not None and state.is_final()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if state is None or not state.is_completed():
            problems.append(f"flow run {run_id}: {state.type if state else None}")
    return problems


def _round(
    client: Any, worker: int, deployment_id: str, release: Path, hold: float
) -> dict[str, Any]:
    """Start 10 runs at once, sample until all are over; return the round's figures."""
    release.unlink(missing_ok=True)
    _wait_for_lone_worker(worker)
    idle = []
    for _ in range(10):
        started = time.monotonic()
        idle.append(sample(worker, []))
        _pace(started)
    created = time.monotonic()
    run_ids = [client.create_flow_run_from_deployment(UUID(deployment_id)).id for _ in range(RUNS)]
    samples: list[Sample] = []
    all_in_flight_at: float | None = None
    while True:
        started = time.monotonic()
        current = sample(worker, run_ids)
        samples.append(current)
        if current.in_flight == RUNS and all_in_flight_at is None:
            all_in_flight_at = current.at
        if all_in_flight_at is not None and current.at - all_in_flight_at >= hold:
            release.touch()
        if current.finished == RUNS:
            break
        if started - created > ROUND_TIMEOUT:
            release.touch()
            raise RuntimeError(
                f"after {ROUND_TIMEOUT:.0f} s: {current.in_flight} runs in flight, "
                f"{current.finished} finished; all {RUNS} in flight once: "
                f"{all_in_flight_at is not None}"
            )
        _pace(started)
    full = [s for s in samples if s.in_flight == RUNS]
    if not full:
        raise RuntimeError(f"no sample saw all {RUNS} runs in flight")
    peak = max(full, key=lambda s: s.rss_kib)
    return {
        "problems": _check_round(client, run_ids),
        "samples": len(samples),
        "samples_all_in_flight": len(full),
        "seconds_to_all_in_flight": round((all_in_flight_at or created) - created, 1),
        "seconds_to_all_finished": round(samples[-1].at - created, 1),
        "idle_rss_mib": round(max(s.rss_kib for s in idle) / 1024, 1),
        "peak_rss_mib": round(peak.rss_kib / 1024, 1),
        "peak_pss_mib": round(max(s.pss_kib for s in full) / 1024, 1),
        "peak_rss_whole_round_mib": round(max(s.rss_kib for s in samples) / 1024, 1),
        "processes_at_peak": len(peak.processes),
        "at_peak_rss_mib": sorted(
            (round(rss / 1024, 1), command[:160]) for command, rss, _ in peak.processes.values()
        )[::-1],
    }


def _measure(
    client: Any,
    kind: str,
    task_id: int,
    env: dict[str, str],
    work: Path,
    rounds: int,
    hold: float,
) -> list[dict[str, Any]]:
    """Run ``rounds`` rounds on one worker of ``kind`` (svrctl or process)."""
    pool = f"bench-memory-{kind}"
    deployment_id = deploy_run_task(client, pool, kind, task_id, f"memory-{kind}")
    limit = ["--limit", str(RUNS)]
    if kind == "svrctl":
        argv = [str(BIN / "svrctl"), "worker", "--pool", pool, *limit]
    else:
        argv = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", kind, *limit]
    worker = start_worker(client, pool, argv, env, work / f"{kind}-memory-worker.log")
    try:
        time.sleep(2.0)  # let it settle after registering
        return [
            _round(client, worker.pid, deployment_id, work / "release", hold) for _ in range(rounds)
        ]
    finally:
        (work / "release").touch()
        stop_worker(worker)


def run(quick: bool, prefect_api: str) -> Row:
    """Measure the svrctl worker, then the process worker, with 10 runs in flight."""
    from fixtures.sshd import start_sshd
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    rounds, hold = (1, 3.0) if quick else (3, 10.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "user").mkdir()
        env = child_env(work, prefect_api)
        use_env(env)
        release = work / "release"
        command = f"while [ ! -e {release} ]; do sleep 0.1; done; echo held"
        sshd = start_sshd(work / "sshd")
        try:
            task_id = setup_ssh_task(sshd, "bench-memory", command)
            with (
                temporary_settings(updates={PREFECT_API_URL: prefect_api}),
                get_client(sync_client=True) as client,
            ):
                ours = _measure(client, "svrctl", task_id, env, work, rounds, hold)
                base = _measure(client, "process", task_id, env, work, rounds, hold)
        finally:
            sshd.stop()
    ours_rss = max(r["peak_rss_mib"] for r in ours)
    base_rss = max(r["peak_rss_mib"] for r in base)
    ours_pss = max(r["peak_pss_mib"] for r in ours)
    base_pss = max(r["peak_pss_mib"] for r in base)
    ratio = ours_rss / base_rss
    correct = not any(r["problems"] for r in ours + base)
    return Row(
        name="7 worker memory (10 runs in flight, process tree)",
        baseline=f"process worker + subprocesses: RSS {base_rss:.0f} MiB (PSS {base_pss:.0f})",
        ours=f"svrctl worker: RSS {ours_rss:.0f} MiB (PSS {ours_pss:.0f})",
        figure=f"{ratio:.2f}x",
        goal=f"peak total RSS <= {GOAL_RATIO}x, {RUNS} runs right",
        met=ratio <= GOAL_RATIO and correct,
        details={
            "rounds": rounds,
            "hold_seconds": hold,
            "sample_seconds": SAMPLE_SECONDS,
            "measured": "peak of the summed Rss (and Pss) of /proc/PID/smaps_rollup over the "
            "worker's process tree, over samples with all runs in flight",
            "pss_ratio": round(ours_pss / base_pss, 3),
            "svrctl": ours,
            "process": base,
        },
    )
