"""Fan-out: one command on 50 servers vs 50 raw paramiko connect+exec in a bounded pool."""

from __future__ import annotations

import asyncio
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import Row, in_process_home, median, raw_ssh_true

GOAL = 1.3
SERVERS = 50


def run(quick: bool, prefect_api: str) -> Row:
    """Run the tag task and the raw baseline alternately; every run connects afresh."""
    from fixtures.sshd import start_sshd

    from svrctl.execution.engine import MAX_PARALLEL

    repeat = 2 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sshd = start_sshd(work / "sshd", extra_config=["MaxStartups 200:30:400"])
        try:
            known_hosts = in_process_home(work / "home", prefect_api, sshd.host_key_line)
            from svrctl import runtime
            from svrctl.servers import add_server
            from svrctl.specs import ServerSpec, TaskSpec
            from svrctl.tasks import add_task

            with runtime.app_database().write() as s:
                for i in range(SERVERS):
                    add_server(
                        s,
                        ServerSpec(
                            name=f"fan-{i:02d}",
                            host=sshd.host,
                            port=sshd.port,
                            username=sshd.username,
                            key_path=str(sshd.user_key),
                            tags=["fan"],
                        ),
                    )
                task_id = add_task(
                    s,
                    TaskSpec(
                        name="fan-true",
                        kind="ssh",
                        tag="fan",
                        command="true",
                        timezone="UTC",
                        overlap_policy="queue",
                    ),
                ).id
            from svrctl.flows.run_task import run_task
            from svrctl.ssh.pool import default_pool

            async def ours() -> tuple[float, int]:
                default_pool.close_idle()  # connect afresh, like the baseline
                start = time.perf_counter()
                state = await run_task(task_id=task_id, return_state=True)
                elapsed = time.perf_counter() - start
                result = await state.aresult(raise_on_failure=False)
                ok = getattr(result, "output", "").count(": success ==")
                return elapsed, ok

            def raw() -> tuple[float, int]:
                start = time.perf_counter()
                with ThreadPoolExecutor(max_workers=MAX_PARALLEL) as pool:
                    codes = list(
                        pool.map(
                            lambda _: raw_ssh_true(
                                sshd.host, sshd.port, sshd.username, sshd.user_key, known_hosts
                            ),
                            range(SERVERS),
                        )
                    )
                return time.perf_counter() - start, codes.count(0)

            async def measure() -> tuple[list[float], list[float], list[int], list[int]]:
                await ours()  # warm-up
                raw()
                mine, base, ok_mine, ok_base = [], [], [], []
                for _ in range(repeat):
                    t, ok = await ours()
                    mine.append(t)
                    ok_mine.append(ok)
                    t, ok = raw()
                    base.append(t)
                    ok_base.append(ok)
                return mine, base, ok_mine, ok_base

            mine, base, ok_mine, ok_base = asyncio.run(measure())
            with runtime.app_database().read() as s:
                from sqlalchemy import func, select

                from svrctl.db.models import TaskHistory

                rows = s.scalar(
                    select(func.count())
                    .select_from(TaskHistory)
                    .where(TaskHistory.status == "success")
                )
        finally:
            sshd.stop()
    ratio = median(mine) / median(base)
    recorded = rows == SERVERS * (repeat + 1) and all(ok == SERVERS for ok in ok_mine)
    return Row(
        name=f"4 fan-out (`true` on {SERVERS} servers, bound {MAX_PARALLEL})",
        baseline=f"raw paramiko pool {median(base) * 1000:.0f} ms",
        ours=f"{median(mine) * 1000:.0f} ms",
        figure=f"{ratio:.2f}x",
        goal=f"<= {GOAL}x, every host recorded",
        met=ratio <= GOAL and recorded,
        details={
            "repeat": repeat,
            "servers": SERVERS,
            "bound": MAX_PARALLEL,
            "ours_ms": [round(t * 1000) for t in mine],
            "baseline_ms": [round(t * 1000) for t in base],
            "hosts_ok_ours": ok_mine,
            "hosts_ok_baseline": ok_base,
            "success_rows": rows,
        },
    )
