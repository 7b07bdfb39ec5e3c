"""Plugin runs through the engine and the flow: metrics stored, action chosen, UI artifact."""

from __future__ import annotations

import json

import pytest
from fixtures.runenv import RunEnv
from sqlalchemy import select
from test_run_task import flow_run_id, read_artifacts, run_flow, unique

from svrctl.db.models import MetricRow
from svrctl.local import local_host_name
from svrctl.plugin import action_of, get_plugin, validate_config


@pytest.fixture
def env(prefect_api: str, run_env: RunEnv) -> RunEnv:
    """``run_env`` with the session's Prefect test server up."""
    return run_env


def _metrics(env: RunEnv, task_id: int) -> list[MetricRow]:
    with env.db.read() as session:
        return list(session.scalars(select(MetricRow).where(MetricRow.task_id == task_id)))


def test_health_run_stores_its_metrics_per_server(run_env: RunEnv) -> None:
    run_env.add_server("box")
    config = json.dumps({"sample_seconds": 0.2})
    task_id = run_env.add_task("h", "--plugin", "health", "--server", "box", "--config", config)
    result = run_env.run(task_id, flow_run_id="00000000-0000-0000-0000-000000000001")
    assert result.success, result.error
    rows = _metrics(run_env, task_id)
    names = {r.name for r in rows}
    assert {"cpu_percent", "memory_percent", "load_1", "uptime", "disk_percent"} <= names
    assert {(r.server, r.plugin) for r in rows} == {("box", "health")}
    assert {r.flow_run_id for r in rows} == {"00000000-0000-0000-0000-000000000001"}
    assert len({r.time for r in rows}) == 1  # one reading, one time
    # the run's result carries them too, each with its server
    assert {m["name"] for m in result.metrics} == names
    assert all(m["server"] == "box" for m in result.metrics)
    shown = json.loads(run_env.ok("metrics", "box", "--name", "memory_percent", "--json"))
    assert len(shown) == 1 and shown[0]["unit"] == "%"


def test_a_local_plugin_records_under_the_host_name(run_env: RunEnv) -> None:
    task_id = run_env.add_task("h", "--plugin", "health", "--config", '{"sample_seconds": 0.1}')
    assert run_env.run(task_id).success
    assert {r.server for r in _metrics(run_env, task_id)} == {local_host_name()}


def test_a_crossed_threshold_asks_to_notify(run_env: RunEnv) -> None:
    config = json.dumps({"sample_seconds": 0.1, "memory_percent": 0.001})
    task_id = run_env.add_task("h", "--plugin", "health", "--config", config)
    result = run_env.run(task_id)
    assert not result.success
    assert result.notify and result.priority == 8
    assert _metrics(run_env, task_id), "a failed check still records what it measured"


def test_the_action_comes_from_the_config() -> None:
    updates = get_plugin("updates")
    assert action_of(updates, validate_config(updates, {})) == "check"
    assert action_of(updates, validate_config(updates, {"action": "cleanup"})) == "cleanup"
    echo = get_plugin("echo")
    assert action_of(echo, validate_config(echo, {})) == "check"


def test_plugin_run_artifact_shows_findings_and_metrics(env: RunEnv) -> None:
    name = unique("health")
    task_id = env.add_task(name, "--plugin", "health", "--config", '{"sample_seconds": 0.1}')
    state, result = run_flow(task_id)
    assert result.success, result.error
    (markdown,) = [
        a for a in read_artifacts(flow_run_id(state)) if a.type == "markdown" and a.key is None
    ]
    body = str(markdown.data)
    assert f"{name}: success" in body
    assert "| memory |" in body  # the plugin's own markdown, not fenced as output
    assert "~~~~" not in body
    assert "| server | metric | value | unit | labels |" in body
    assert "| memory_percent |" in body and "mount=/" in body
