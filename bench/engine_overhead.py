"""Engine overhead: the run-task flow running `true` over SSH vs raw paramiko, one warm process."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import Row, in_process_home, median, raw_ssh_true

GOAL = 2.0


def _raw(host: str, port: int, user: str, key: Path, known_hosts: Path) -> float:
    start = time.perf_counter()
    assert raw_ssh_true(host, port, user, key, known_hosts) == 0
    return time.perf_counter() - start


def run(quick: bool, prefect_api: str) -> Row:
    """Measure both in this process, interleaved, after a warm-up of each."""
    from fixtures.sshd import start_sshd

    repeat = 5 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sshd = start_sshd(work / "sshd")
        try:
            known_hosts = in_process_home(work / "home", prefect_api, sshd.host_key_line)
            from svrctl import runtime
            from svrctl.servers import add_server
            from svrctl.specs import ServerSpec, TaskSpec
            from svrctl.tasks import add_task

            with runtime.app_database().write() as s:
                spec = ServerSpec(
                    name="bench",
                    host=sshd.host,
                    port=sshd.port,
                    username=sshd.username,
                    key_path=str(sshd.user_key),
                )
                add_server(s, spec)
                task_id = add_task(
                    s,
                    TaskSpec(
                        name="bench-true",
                        kind="ssh",
                        server="bench",
                        command="true",
                        timezone="UTC",
                        overlap_policy="queue",
                    ),
                ).id
            from svrctl.flows.run_task import run_task

            async def flow_once() -> float:
                start = time.perf_counter()
                state = await run_task(task_id=task_id, return_state=True)
                elapsed = time.perf_counter() - start
                result = await state.aresult(raise_on_failure=False)
                assert getattr(result, "success", False), result
                return elapsed

            from svrctl.ssh.pool import default_pool

            def raw_once() -> float:
                return _raw(sshd.host, sshd.port, sshd.username, sshd.user_key, known_hosts)

            async def measure() -> tuple[list[float], list[float], list[float]]:
                await flow_once()  # warm-up: imports, first API calls
                raw_once()
                flows, cold, raws = [], [], []
                for _ in range(repeat):
                    flows.append(await flow_once())  # reuses the pooled connection
                    default_pool.close_idle()
                    cold.append(await flow_once())  # connects afresh
                    raws.append(raw_once())
                return flows, cold, raws

            flows, cold, raws = asyncio.run(measure())
            with runtime.app_database().read() as s:
                from sqlalchemy import func, select

                from svrctl.db.models import TaskHistory

                rows = s.scalar(select(func.count()).select_from(TaskHistory))
        finally:
            sshd.stop()
    ratio = median(flows) / median(raws)
    correct = rows == 2 * repeat + 1
    return Row(
        name="1 engine overhead (run-task `true` over SSH)",
        baseline=f"raw paramiko {median(raws) * 1000:.0f} ms",
        ours=f"{median(flows) * 1000:.0f} ms",
        figure=f"{ratio:.2f}x",
        goal=f"<= {GOAL}x",
        met=ratio <= GOAL and correct,
        details={
            "repeat": repeat,
            "history_rows": rows,
            "flow_ms": [round(f * 1000) for f in flows],
            "flow_new_connection_ms": [round(c * 1000) for c in cold],
            "ratio_new_connection": round(median(cold) / median(raws), 2),
            "raw_ms": [round(r * 1000) for r in raws],
        },
    )
