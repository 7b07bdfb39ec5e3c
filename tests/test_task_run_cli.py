"""``svrctl task run NAME`` through the real Prefect API, and how it picks that API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from fixtures.runenv import RunEnv
from fixtures.sshd import free_port
from prefect import get_client

from svrctl import prefect_api as api
from svrctl.settings import Settings

pytestmark = pytest.mark.sshd


@pytest.fixture
def env(prefect_api: str, run_env: RunEnv) -> RunEnv:
    """``run_env`` with the session's Prefect test server up (``PREFECT_API_URL`` set)."""
    return run_env


def flow_run_state(flow_run_id: str) -> str:
    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(flow_run_id))
        assert run.state is not None
        return run.state.type.value

    return asyncio.run(read())


# ----------------------------------------------------------------------------- task run


def test_run_prints_success_and_output(env: RunEnv) -> None:
    env.add_server("s1")
    marker = env.scratch / "ran"
    task_id = env.add_task(
        "greet", "--server", "s1", "--command", f"echo hello; echo world; touch {marker}"
    )
    result = env.svrctl("task", "run", "greet")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"✓ success in \d+ ms", lines[0]), lines
    assert lines[1:] == ["hello", "world"]
    assert result.stderr == ""  # no warning: PREFECT_API_URL answers
    assert marker.exists()
    (row,) = env.rows(task_id)
    assert (row.status, row.triggered_by, row.server_name) == ("success", "manual", "s1")
    assert row.flow_run_id is not None
    assert flow_run_state(row.flow_run_id) == "COMPLETED"
    assert env.task(task_id).run_count == 1


def test_run_failure_exits_1(env: RunEnv) -> None:
    env.add_server("s1")
    task_id = env.add_task("bad", "--server", "s1", "--command", "echo half; echo nope >&2; exit 3")
    result = env.svrctl("task", "run", "bad")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"✗ failed after \d+ ms: exit code 3: nope\nnope", "\n".join(lines[:2]))
    assert lines[2:] == ["half"]
    (row,) = env.rows(task_id)
    assert (row.status, row.exit_code) == ("failed", 3)
    assert row.flow_run_id is not None
    assert flow_run_state(row.flow_run_id) == "FAILED"


def test_run_json(env: RunEnv) -> None:
    env.add_server("s1")
    task_id = env.add_task("greet", "--server", "s1", "--command", "echo hi")
    result = env.svrctl("task", "run", "greet", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (row,) = env.rows(task_id)
    assert {k: data[k] for k in ("task_id", "success", "output", "error", "exit_code")} == {
        "task_id": task_id,
        "success": True,
        "output": "hi\n",
        "error": None,
        "exit_code": 0,
    }
    assert data["status"] == "success"
    assert isinstance(data["duration_ms"], int) and data["duration_ms"] > 0
    assert data["history_ids"] == [row.id]
    assert env.task(task_id).last_duration_ms == data["duration_ms"]


def test_run_json_failure(env: RunEnv) -> None:
    env.add_server("s1")
    task_id = env.add_task("bad", "--server", "s1", "--command", "exit 5")
    result = env.svrctl("task", "run", "bad", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert (data["task_id"], data["success"], data["status"], data["exit_code"]) == (
        task_id,
        False,
        "failed",
        5,
    )
    assert data["error"] == "exit code 5"


def test_run_unknown_task_exits_2(env: RunEnv) -> None:
    result = env.svrctl("task", "run", "nope")
    assert result.exit_code == 2
    assert "error: no task named 'nope'" in result.stderr
    assert result.stdout == ""


def test_run_disabled_task_needs_force(env: RunEnv) -> None:
    env.add_server("s1")
    marker = env.scratch / "ran"
    task_id = env.add_task("off", "--server", "s1", "--disabled", "--command", f"touch {marker}")
    refused = env.svrctl("task", "run", "off")
    assert refused.exit_code == 1
    assert re.match(r"✗ cancelled after \d+ ms: task off is disabled", refused.stdout)
    assert "--force" in refused.stdout or "force" in refused.stdout
    assert not marker.exists()

    forced = env.svrctl("task", "run", "off", "--force")
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.startswith("✓ success in ")
    assert marker.exists()
    assert [r.status for r in env.rows(task_id)] == ["cancelled", "success"]


def test_run_local_task(env: RunEnv) -> None:
    env.add_task("here", "--local", "--command", "echo local")
    result = env.svrctl("task", "run", "here")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == ["local"]


# ----------------------------------------------------------------------------- choose_api


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "svrctl-home", database_url="sqlite://")


class Warnings(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/api"


def test_choose_api_uses_a_healthy_prefect_api_url(
    prefect_api: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    api.remember_api(settings, dead_url())  # not even looked at
    warnings = Warnings()
    assert api.choose_api(settings, warnings) == prefect_api
    assert warnings == []


def test_choose_api_uses_the_remembered_server(
    prefect_api: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(api, "_profile_api_url", lambda: None)
    api.remember_api(settings, prefect_api)
    assert api.api_state_file(settings).stat().st_mode & 0o777 == 0o600
    warnings = Warnings()
    assert api.choose_api(settings, warnings) == prefect_api
    assert warnings == []
    assert os.environ["PREFECT_API_URL"] == prefect_api


def test_choose_api_prefers_remembered_over_a_dead_prefect_api_url(
    prefect_api: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = dead_url()
    monkeypatch.setenv("PREFECT_API_URL", dead)
    api.remember_api(settings, prefect_api)
    warnings = Warnings()
    assert api.choose_api(settings, warnings) == prefect_api
    assert warnings == [f"the Prefect API at {dead} (PREFECT_API_URL) does not answer"]
    assert os.environ["PREFECT_API_URL"] == prefect_api


def test_choose_api_keeps_a_dead_prefect_api_url_when_nothing_else_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = dead_url()
    monkeypatch.setenv("PREFECT_API_URL", dead)
    warnings = Warnings()
    assert api.choose_api(settings, warnings) == dead
    assert warnings == [f"the Prefect API at {dead} (PREFECT_API_URL) does not answer"]


def test_choose_api_warns_before_falling_back_to_ephemeral(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(api, "_profile_api_url", lambda: None)
    warnings = Warnings()
    assert api.choose_api(settings, warnings) is None
    (message,) = warnings
    assert "falling back to a temporary in-process Prefect API" in message
    assert "svrctl up" in message and "PREFECT_API_URL" in message
    assert "PREFECT_API_URL" not in os.environ


def test_choose_api_warns_about_a_dead_remembered_server(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(api, "_profile_api_url", lambda: None)
    dead = dead_url()
    api.remember_api(settings, dead)
    warnings = Warnings()
    assert api.choose_api(settings, warnings) is None
    assert len(warnings) == 2
    assert warnings[0] == f"the Prefect server that `svrctl up` started ({dead}) does not answer"
    assert "temporary in-process Prefect API" in warnings[1]
    assert "PREFECT_API_URL" not in os.environ


def test_choose_api_ignores_a_broken_state_file(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(api, "_profile_api_url", lambda: None)
    settings.ensure_home()
    api.api_state_file(settings).write_text("{not json")
    warnings = Warnings()
    assert api.choose_api(settings, warnings) is None
    assert len(warnings) == 1


def test_task_run_uses_the_remembered_server_in_a_fresh_process(
    env: RunEnv, prefect_api: str, tmp_path: Path
) -> None:
    """The real command, as a user runs it: no PREFECT_API_URL, `svrctl up`'s server running."""
    env.add_server("s1")
    task_id = env.add_task("greet", "--server", "s1", "--command", "echo remembered")
    api.remember_api(env.settings, prefect_api)
    child_env = dict(os.environ)
    child_env.pop("PREFECT_API_URL")
    child_env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # default profile: no API URL
    svrctl_bin = Path(sys.executable).with_name("svrctl")
    done = subprocess.run(
        [str(svrctl_bin), "task", "run", "greet"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr
    assert "temporary server" not in done.stdout + done.stderr
    assert done.stdout.splitlines()[1:] == ["remembered"]
    (row,) = env.rows(task_id)
    assert row.flow_run_id is not None
    # the run is known to the server `svrctl up` runs, not to a throw-away API
    assert flow_run_state(row.flow_run_id) == "COMPLETED"
