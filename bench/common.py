"""Shared pieces of the benchmarks: result rows, timing, the table, the JSON file, workers."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # the real sshd fixture code


@dataclass
class Row:
    """One benchmark's figures."""

    name: str
    baseline: str
    ours: str
    figure: str
    goal: str
    met: bool
    details: dict[str, object] = field(default_factory=dict)


def median(values: list[float]) -> float:
    """Return the median."""
    return statistics.median(values)


def p95(values: list[float]) -> float:
    """Return the 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Run ``fn`` ``repeat`` times; return the wall times in seconds."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def machine() -> dict[str, object]:
    """Describe the machine the figures come from."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": git,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def print_table(rows: list[Row]) -> None:
    """Print the results table."""
    headers = ["benchmark", "baseline", "ours", "ratio / figure", "goal", "met"]
    cells = [[r.name, r.baseline, r.ours, r.figure, r.goal, "yes" if r.met else "NO"] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def write_json(rows: list[Row], quick: bool, path: Path | None = None) -> Path:
    """Write the table as JSON (bench/results/latest.json by default)."""
    path = path or RESULTS / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), "quick": quick, "results": [asdict(r) for r in rows]}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def in_process_home(home: Path, prefect_api: str, host_key_line: str) -> Path:
    """Point this process's svrctl at a fresh, migrated home that trusts one sshd.

    Returns the home's known_hosts file.
    """
    os.environ |= {
        "SVRCTL_HOME": str(home),
        "SVRCTL_TIMEZONE": "UTC",
        "PREFECT_API_URL": prefect_api,
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    os.environ.pop("SVRCTL_DATABASE_URL", None)
    from svrctl import runtime
    from svrctl.db.migrate import upgrade

    runtime.reset()
    settings = runtime.app_settings()
    upgrade(settings.resolved_database_url)
    settings.ensure_home()
    known_hosts = home / "known_hosts"
    known_hosts.write_text(host_key_line + "\n")
    return known_hosts


def raw_ssh_true(host: str, port: int, user: str, key: Path, known_hosts: Path) -> int:
    """Connect with plain paramiko, run ``true``, close; return its exit code (the baseline)."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.connect(host, port=port, username=user, key_filename=str(key),
                   look_for_keys=False, allow_agent=False)  # fmt: skip
    try:
        _, stdout, _ = client.exec_command("true")
        return int(stdout.channel.recv_exit_status())
    finally:
        client.close()


BIN = Path(sys.executable).parent
RUN_TASK_ENTRYPOINT = "svrctl.flows.run_task:run_task"


def child_env(work: Path, api: str) -> dict[str, str]:
    """Return the environment of a worker or CLI process: a home in ``work``, this Prefect API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SVRCTL_"))}
    return env | {
        "HOME": str(work / "user"),
        "SVRCTL_HOME": str(work / "home"),
        "SVRCTL_TIMEZONE": "UTC",
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def use_env(env: dict[str, str]) -> None:
    """Point this process's svrctl at the home and Prefect API of a ``child_env``."""
    for key in ("HOME", "SVRCTL_HOME", "SVRCTL_TIMEZONE", "PREFECT_API_URL"):
        os.environ[key] = env[key]
    os.environ.pop("SVRCTL_DATABASE_URL", None)


def setup_ssh_task(sshd: Any, name: str, command: str) -> int:
    """Create the app database, a server pointing at the sshd and an SSH task; return its id.

    The task's overlap policy is ``queue``: its runs may overlap.
    """
    from svrctl import runtime
    from svrctl.db.migrate import upgrade
    from svrctl.db.models import OverlapPolicy, TaskKind
    from svrctl.servers import add_server
    from svrctl.specs import ServerSpec, TaskSpec
    from svrctl.tasks import add_task

    runtime.reset()
    settings = runtime.app_settings()
    upgrade(settings.resolved_database_url)
    settings.ensure_home()
    (settings.home / "known_hosts").write_text(sshd.host_key_line + "\n")
    with runtime.app_database().write() as s:
        add_server(
            s,
            ServerSpec(
                name="bench",
                host=sshd.host,
                port=sshd.port,
                username=sshd.username,
                key_path=str(sshd.user_key),
            ),
        )
        spec = TaskSpec(
            name=name,
            kind=TaskKind.SSH,
            server="bench",
            command=command,
            timezone="UTC",
            overlap_policy=OverlapPolicy.QUEUE,
        )
        return int(add_task(s, spec).id)


def deploy_run_task(client: Any, pool: str, pool_type: str, task_id: int, name: str) -> str:
    """Create the work pool (type ``svrctl`` or ``process``) and a run-task deployment on it.

    Returns the deployment's id.
    """
    import asyncio

    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    from svrctl.worker import ensure_work_pool

    if pool_type == "svrctl":
        asyncio.run(ensure_work_pool(pool))
    else:
        client.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
    deployment_id = client.create_deployment(
        flow_id=client.create_flow_from_name("run-task"),
        name=name,
        entrypoint=RUN_TASK_ENTRYPOINT,
        parameters={"task_id": task_id},
        work_pool_name=pool,
    )
    return str(deployment_id)


def start_worker(
    client: Any, pool: str, argv: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start a worker process in its own session; return once it has registered with ``pool``."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while not client.read_workers_for_work_pool(pool):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker started by ``start_worker`` (SIGINT to its session, SIGKILL after 60 s)."""
    from fixtures.processes import stop_groups

    stop_groups([process], timeout=60)
