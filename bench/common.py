"""Shared pieces of the benchmarks: result rows, timing, the table and the JSON file."""

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
        return stdout.channel.recv_exit_status()
    finally:
        client.close()
