"""CLI start-up: whole-process `svrctl task list` with 1,000 tasks vs `import prefect`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Row, median

GOAL = 0.7


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVRCTL_")}
    env |= {"SVRCTL_HOME": str(home), "SVRCTL_TIMEZONE": "UTC"}
    return env


def _seed(home: Path, count: int) -> None:
    """Create the database with ``count`` tasks through svrctl's own code."""
    code = f"""
from svrctl.runtime import app_database, app_settings
from svrctl.db.migrate import upgrade
from svrctl.specs import TaskSpec
from svrctl.tasks import add_task
upgrade(app_settings().resolved_database_url)
db = app_database()
with db.write() as s:
    for i in range({count}):
        add_task(s, TaskSpec(name=f"task-{{i:04d}}", kind="local", command="true",
                             schedule="0 */5 * * * *", timezone="UTC"))
"""
    subprocess.run([sys.executable, "-c", code], env=_env(home), check=True)


def _wall(args: list[str], env: dict[str, str], repeat: int) -> list[float]:
    import time

    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - start)
    return out


def run(quick: bool) -> Row:
    """Measure both, interleaved, and check what `task list` imports."""
    repeat = 3 if quick else 10
    tasks = 100 if quick else 1000
    svrctl = str(Path(sys.executable).parent / "svrctl")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        _seed(home, tasks)
        env = _env(home)
        ours: list[float] = []
        base: list[float] = []
        for _ in range(repeat):  # interleaved, so machine noise hits both alike
            ours += _wall([svrctl, "task", "list"], env, 1)
            base += _wall([sys.executable, "-c", "import prefect"], env, 1)
        listed = subprocess.run(
            [svrctl, "task", "list", "--json"], env=env, capture_output=True, text=True
        ).stdout
        correct = listed.count('"name": "task-') == tasks
        probe = subprocess.run(
            [sys.executable, "-X", "importtime", "-c",
             "from svrctl.cli import main; import sys; sys.argv=['svrctl','task','list'];\n"
             "try: main()\nexcept SystemExit: pass"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
    heavy = sorted(
        {
            line.split("|")[-1].strip().split(".")[0]
            for line in probe.stderr.splitlines()
            if line.startswith("import time:")
        }
        & {"prefect", "paramiko"}
    )
    ratio = median(ours) / median(base)
    return Row(
        name=f"8 CLI start-up (task list, {tasks} tasks)",
        baseline=f"import prefect {median(base) * 1000:.0f} ms",
        ours=f"{median(ours) * 1000:.0f} ms",
        figure=f"{ratio:.2f}x",
        goal=f"<= {GOAL}x, no prefect/paramiko import",
        met=ratio <= GOAL and not heavy and correct,
        details={"heavy_imports": heavy, "listed_all": correct, "repeat": repeat},
    )
