"""``svrctl sync`` and the automatic sync, end to end against a real Prefect server.

The ``prefect_server`` fixture is a real ``prefect server start`` with its scheduler,
shared by the whole session, so every test begins with a full sync of its own fresh
app database: that removes what earlier tests left (every deployment svrctl manages)
and nothing else. Schedules are checked against the runs Prefect's own scheduler
creates, and against ``svrctl.cron.next_fire_times``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import Result
from conftest import Invoke
from fixtures.prefect_server import PrefectServer
from fixtures.runenv import RunEnv, make_run_env
from fixtures.sshd import SshdTarget
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    DeploymentFilterTags,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import DeploymentResponse, GlobalConcurrencyLimitResponse

from svrctl.cron import next_fire_times, parse_cron
from svrctl.db.engine import Database
from svrctl.db.models import Task, utcnow

T = TypeVar("T")

# Most tests need no second database backend: the sync reads the app database through
# the same code on both, and test_deployment_ids_are_stored runs on both.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def api(prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point svrctl at the session's Prefect server."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    return prefect_server.api_url


@pytest.fixture
def sv(svrctl: Invoke, api: str) -> Invoke:
    """The CLI, with a first full sync done: Prefect holds nothing of earlier tests."""
    r = svrctl("sync")
    assert r.exit_code == 0, r.output
    return svrctl


def ok(sv: Invoke, *args: str) -> Result:
    """Run a command that must succeed."""
    r = sv(*args)
    assert r.exit_code == 0, r.output
    return r


def sync_json(sv: Invoke, *args: str) -> dict[str, Any]:
    """Run `svrctl sync --json` and return its report."""
    r = sv("sync", "--json", *args)
    assert r.exit_code == 0, r.output
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def prefect(api: str, job: Callable[[PrefectClient], Awaitable[T]]) -> T:
    """Run ``job`` with a client of the test's Prefect server."""

    async def run() -> T:
        async with PrefectClient(api) as client:
            return await job(client)

    return asyncio.run(run())


def managed(api: str) -> dict[str, DeploymentResponse]:
    """Every run-task deployment tagged svrctl, by name."""

    async def read(client: PrefectClient) -> dict[str, DeploymentResponse]:
        found = await client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["run-task"])),
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["svrctl"])),
        )
        return {d.name: d for d in found}

    return prefect(api, read)


def deployment(api: str, name: str) -> DeploymentResponse | None:
    """The run-task deployment called ``name``, managed or not."""

    async def read(client: PrefectClient) -> DeploymentResponse | None:
        found = await client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["run-task"])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
        )
        return found[0] if found else None

    return prefect(api, read)


def scheduled_runs(api: str, deployment_id: Any) -> dict[str, datetime]:
    """The deployment's Scheduled flow runs: id -> expected start time."""

    async def read(client: PrefectClient) -> dict[str, datetime]:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
            ),
            limit=200,
        )
        return {str(r.id): r.expected_start_time for r in runs if r.expected_start_time}

    return prefect(api, read)


def wait_runs(api: str, deployment_id: Any, at_least: int, timeout: float = 60) -> dict[str, Any]:
    """Wait until Prefect's scheduler has created ``at_least`` runs of the deployment."""
    deadline = time.monotonic() + timeout
    while True:
        runs = scheduled_runs(api, deployment_id)
        if len(runs) >= at_least:
            return runs
        assert time.monotonic() < deadline, f"only {len(runs)} scheduled runs after {timeout} s"
        time.sleep(0.5)


def limits(api: str) -> dict[str, GlobalConcurrencyLimitResponse]:
    """Every global concurrency limit, by name."""

    async def read(client: PrefectClient) -> dict[str, GlobalConcurrencyLimitResponse]:
        found = await client.read_global_concurrency_limits(limit=200)
        return {g.name: g for g in found}

    return prefect(api, read)


@dataclass(frozen=True)
class Snapshot:
    """What must not change in Prefect when nothing changed in svrctl."""

    deployments: dict[str, tuple[str, Any, bool, tuple[tuple[str, Any, bool], ...]]]
    limits: dict[str, tuple[str, Any, int]]
    automations: dict[str, dict[str, Any]]


def chain_automations(api: str) -> dict[str, dict[str, Any]]:
    """svrctl's chain automations (with their ids), by name."""

    async def read(client: PrefectClient) -> dict[str, dict[str, Any]]:
        found = await client.read_automations()
        return {
            a.name: a.model_dump()
            for a in found
            if a.name.startswith("svrctl chain: ") and "svrctl-chain" in a.tags
        }

    return prefect(api, read)


def snapshot(api: str) -> Snapshot:
    found = managed(api)
    return Snapshot(
        {
            name: (
                str(d.id),
                d.updated,
                d.paused,
                tuple((str(s.id), s.updated, s.active) for s in d.schedules),
            )
            for name, d in found.items()
        },
        {
            n: (str(g.id), g.updated, g.limit)
            for n, g in limits(api).items()
            if n.startswith("svrctl-")
        },
        chain_automations(api),
    )


def fire_times(expr: str, zone: str, after: datetime, count: int) -> list[datetime]:
    """svrctl's own fire times (``after`` may be one of Prefect's pendulum datetimes)."""
    plain = datetime.fromtimestamp(after.timestamp(), UTC)
    return next_fire_times(parse_cron(expr), plain, count, zone)


def task_row(database: Database, name: str) -> Task:
    from svrctl.tasks import get_task

    with database.read() as session:
        return get_task(session, name)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ----------------------------------------------------------------------------- creating


@SQLITE_ONLY
def test_sync_creates_one_deployment_per_task_with_every_field(
    sv: Invoke, api: str, database: Database
) -> None:
    ok(sv, "server", "add", "web-1", "--host", "h1", "--tag", "web", "--pool", "lab")
    ok(sv, "server", "add", "web-2", "--host", "h2", "--tag", "web", "--tag", "db")
    ok(sv, "server", "add", "db-1", "--host", "h3", "--tag", "db")
    # the database changes below are made without Prefect, then synced at once
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{closed_port()}/api"
    ok(
        sv,
        "task",
        "add",
        "disk",
        "--server",
        "web-1",
        "--command",
        "df -h",
        "--schedule",
        "0 */5 * * * *",
        "--timezone",
        "Europe/Berlin",
        "--description",
        "space",
    )
    ok(
        sv,
        "task",
        "add",
        "fleet",
        "--tag",
        "web",
        "--command",
        "uptime",
        "--schedule",
        "30 9 * * 1-5",
        "--timezone",
        "America/New_York",
        "--overlap",
        "queue",
    )
    ok(sv, "task", "add", "dbs", "--tag", "db", "--command", "true")
    ok(
        sv,
        "task",
        "add",
        "echo",
        "--plugin",
        "echo",
        "--server",
        "web-2",
        "--config",
        '{"message": "hi"}',
    )
    ok(
        sv,
        "task",
        "add",
        "off",
        "--local",
        "--command",
        "true",
        "--schedule",
        "@daily",
        "--disabled",
    )
    ok(
        sv,
        "task",
        "add",
        "years",
        "--local",
        "--command",
        "true",
        "--schedule",
        "0 0 12 1 * * 2030-2031",
        "--timezone",
        "UTC",
    )
    assert managed(api) == {}
    os.environ["PREFECT_API_URL"] = api

    r = ok(sv, "sync")
    assert r.stdout.count("  + deployment run-task/") == 6
    assert "0 to update, 0 to delete, 0 unchanged" in r.stdout
    assert "+ deployment run-task/disk (cron '*/5 * * * *' (UTC), pool lab, cancel_new)" in (
        r.stdout
    )
    assert "  + work pool lab (type svrctl)" in r.stdout
    found = managed(api)
    assert set(found) == {"disk", "fleet", "dbs", "echo", "off", "years"}
    ids = {n: task_row(database, n).id for n in found}
    for name, d in found.items():
        assert d.parameters == {"task_id": ids[name]}
        assert d.entrypoint == "svrctl.flows.run_task:run_task"
        assert not d.pull_steps and d.path is None
        assert d.work_queue_name == "default"
        assert d.global_concurrency_limit is not None
        assert d.global_concurrency_limit.limit == 1
        assert task_row(database, name).deployment_id == str(d.id)

    disk = found["disk"]
    assert disk.description == "space"
    assert sorted(disk.tags) == ["server:web-1", "svrctl"]
    assert disk.work_pool_name == "lab"
    assert disk.paused is False
    assert disk.concurrency_options is not None
    assert disk.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    (sched,) = disk.schedules
    assert (sched.slug, sched.active) == ("svrctl", True)
    assert sched.schedule.model_dump() == {
        "cron": "*/5 * * * *",
        "timezone": "UTC",
        "day_or": False,
    }

    fleet = found["fleet"]
    assert sorted(fleet.tags) == ["servers:web", "svrctl"]
    assert fleet.work_pool_name == "svrctl"  # web-1 and web-2 are in different pools
    assert fleet.concurrency_options is not None
    assert fleet.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert fleet.schedules[0].schedule.model_dump() == {
        "cron": "30 9 * * 1-5",
        "timezone": "America/New_York",
        "day_or": False,
    }
    assert found["dbs"].work_pool_name == "svrctl"
    assert found["dbs"].schedules == []
    assert sorted(found["echo"].tags) == ["plugin:echo", "server:web-2", "svrctl"]
    assert sorted(found["off"].tags) == ["svrctl"]
    assert found["off"].paused is True
    assert [s.active for s in found["off"].schedules] == [False]

    # The runs Prefect's scheduler creates fall exactly on svrctl's fire times.
    now = utcnow()
    runs = sorted(wait_runs(api, disk.id, 10).values())
    first = runs[0] - timedelta(seconds=1)
    assert runs == fire_times("0 */5 * * * *", "Europe/Berlin", first, len(runs))
    assert runs[0] > now - timedelta(minutes=5)
    runs = sorted(wait_runs(api, fleet.id, 3).values())
    assert runs == fire_times("30 9 * * 1-5", "America/New_York", now, len(runs))
    assert scheduled_runs(api, found["off"].id) == {}  # paused: no runs

    # The RRule of a year-limited schedule: Prefect's server-side schedule class gives
    # the same dates (its runs are years away, beyond what the scheduler plans).
    from prefect.server.schemas.schedules import RRuleSchedule

    stored = found["years"].schedules[0].schedule.model_dump()
    server_side = RRuleSchedule(**stored)
    dates = asyncio.run(server_side.get_dates(30, start=now))
    expected = fire_times("0 0 12 1 * * 2030-2031", "UTC", now, 30)
    assert [d.timestamp() for d in dates] == [t.timestamp() for t in expected]


@pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_deployment_ids_are_stored_and_task_json_shows_them(
    sv: Invoke, api: str, database: Database
) -> None:
    r = ok(
        sv, "task", "add", "t1", "--local", "--command", "true", "--schedule", "@hourly", "--json"
    )
    data = json.loads(r.stdout)
    d = deployment(api, "t1")
    assert d is not None
    assert data["deployment_id"] == str(d.id) == task_row(database, "t1").deployment_id
    # a wrong stored id is corrected by a sync, without touching Prefect
    with database.write() as session:
        session.get(Task, data["id"]).deployment_id = "0" * 36  # type: ignore[union-attr]
    report = sync_json(sv)
    assert (report["writes"], report["actions"]) == (0, [])
    assert task_row(database, "t1").deployment_id == str(d.id)


# ----------------------------------------------------------------------------- no-op


@SQLITE_ONLY
def test_a_no_op_resync_changes_nothing_in_prefect(sv: Invoke, api: str) -> None:
    ok(sv, "server", "add", "s1", "--host", "h1", "--max-concurrent", "2")
    ok(
        sv,
        "task",
        "add",
        "daily",
        "--server",
        "s1",
        "--command",
        "true",
        "--schedule",
        "0 15 6 * * *",
        "--timezone",
        "Europe/Berlin",
    )
    ok(sv, "task", "add", "often", "--local", "--command", "true", "--schedule", "*/5 * * * *")
    ok(
        sv,
        "task",
        "add",
        "weekly",
        "--local",
        "--command",
        "true",
        "--schedule",
        "@weekly",
        "--disabled",
        "--overlap",
        "queue",
    )
    ok(sv, "task", "add", "manual", "--local", "--command", "true")
    # a chain: one automation, which a no-op sync leaves alone too
    ok(sv, "task", "add", "next", "--local", "--command", "true", "--after", "manual")
    ok(
        sv,
        "task",
        "add",
        "years",
        "--local",
        "--command",
        "true",
        "--schedule",
        "0 0 0 1 1 * 2031",
        "--timezone",
        "UTC",
    )
    found = managed(api)
    assert set(found) == {"daily", "often", "weekly", "manual", "next", "years"}
    daily_runs = wait_runs(api, found["daily"].id, 3)
    often_runs = wait_runs(api, found["often"].id, 10)
    time.sleep(6)  # let the scheduler's loop for recently changed deployments pass
    before = snapshot(api)
    daily_runs = scheduled_runs(api, found["daily"].id)
    often_runs = scheduled_runs(api, found["often"].id)
    assert "svrctl-server-s1" in before.limits
    assert list(before.automations) == ["svrctl chain: next after manual (success)"]

    for _ in range(2):
        report = sync_json(sv)
        assert (report["writes"], report["actions"], report["problems"]) == (0, [], [])
        # six deployments, one limit and one chain automation
        assert report["counts"]["unchanged"] == 8
        r = ok(sv, "sync")
        assert "✓ nothing to change" in r.stdout
    time.sleep(6)
    assert snapshot(api) == before
    assert scheduled_runs(api, found["daily"].id) == daily_runs
    # the scheduler may add runs as time passes, but none is replaced
    after = scheduled_runs(api, found["often"].id)
    assert set(often_runs) <= set(after)
    assert all(after[k] == v for k, v in often_runs.items())


# ----------------------------------------------------------------------------- changes


@SQLITE_ONLY
def test_editing_one_task_updates_only_its_deployment(sv: Invoke, api: str) -> None:
    for name in ("a", "b", "c"):
        ok(sv, "task", "add", name, "--local", "--command", "true", "--schedule", "0 7 * * *")
    found = managed(api)
    for d in found.values():
        wait_runs(api, d.id, 3)
    time.sleep(6)
    before = snapshot(api)
    runs_a = scheduled_runs(api, found["a"].id)

    r = ok(sv, "task", "edit", "b", "--description", "changed")
    assert r.stderr == ""
    after = snapshot(api)
    assert after.deployments["a"] == before.deployments["a"]
    assert after.deployments["c"] == before.deployments["c"]
    b0, b1 = before.deployments["b"], after.deployments["b"]
    assert b1[0] == b0[0] and b1[1] > b0[1]  # same deployment, updated
    assert b1[3] == b0[3]  # the schedule was not touched
    assert managed(api)["b"].description == "changed"
    assert scheduled_runs(api, found["a"].id) == runs_a

    # a new schedule keeps the schedule's id; the runs follow the new times
    ok(sv, "task", "edit", "b", "--schedule", "0 0 19 * * *", "--timezone", "Asia/Tokyo")
    b = managed(api)["b"]
    (sched,) = b.schedules
    assert str(sched.id) == b0[3][0][0]
    assert sched.schedule.model_dump() == {
        "cron": "0 19 * * *",
        "timezone": "Asia/Tokyo",
        "day_or": False,
    }
    deadline = time.monotonic() + 60
    now = utcnow()
    while True:
        runs = sorted(scheduled_runs(api, b.id).values())
        if len(runs) >= 3 and runs[:3] == fire_times("0 0 19 * * *", "Asia/Tokyo", now, 3):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)
    assert snapshot(api).deployments["a"] == before.deployments["a"]

    # removing the schedule deletes it; the deployment stays for manual runs
    ok(sv, "task", "edit", "b", "--schedule", "")
    assert managed(api)["b"].schedules == []
    assert str(managed(api)["b"].id) == b0[0]


@SQLITE_ONLY
def test_disable_pauses_and_enable_resumes(sv: Invoke, api: str) -> None:
    ok(sv, "task", "add", "t", "--local", "--command", "true", "--schedule", "0 0 3 * * *")
    d = managed(api)["t"]
    wait_runs(api, d.id, 3)
    schedule_id = d.schedules[0].id

    assert ok(sv, "task", "disable", "t").output.strip() == "✓ disabled task t"
    d = managed(api)["t"]
    assert d.paused is True
    assert [(s.id, s.active) for s in d.schedules] == [(schedule_id, False)]
    time.sleep(6)
    assert scheduled_runs(api, d.id) == {}
    assert sync_json(sv)["writes"] == 0

    ok(sv, "task", "enable", "t")
    d = managed(api)["t"]
    assert d.paused is False
    assert [(s.id, s.active) for s in d.schedules] == [(schedule_id, True)]
    runs = sorted(wait_runs(api, d.id, 3).values())
    assert runs[:3] == fire_times("0 0 3 * * *", "UTC", utcnow(), 3)


@SQLITE_ONLY
def test_task_rm_deletes_the_deployment(sv: Invoke, api: str) -> None:
    ok(sv, "task", "add", "gone", "--local", "--command", "true", "--schedule", "@hourly")
    ok(sv, "task", "add", "stays", "--local", "--command", "true")
    d = managed(api)["gone"]
    r = ok(sv, "task", "rm", "gone")
    assert r.output.strip() == "✓ removed task gone"
    assert set(managed(api)) == {"stays"}
    assert scheduled_runs(api, d.id) == {}


@SQLITE_ONLY
def test_overlap_policy_sets_the_collision_strategy(sv: Invoke, api: str) -> None:
    ok(sv, "task", "add", "s", "--local", "--command", "true")
    ok(sv, "task", "add", "q", "--local", "--command", "true", "--overlap", "queue")
    found = managed(api)
    for name, strategy in (("s", "CANCEL_NEW"), ("q", "ENQUEUE")):
        assert found[name].global_concurrency_limit is not None
        assert found[name].global_concurrency_limit.limit == 1
        assert found[name].concurrency_options is not None
        assert found[name].concurrency_options.collision_strategy.value == strategy
    ok(sv, "task", "edit", "s", "--overlap", "queue")
    s = managed(api)["s"]
    assert s.concurrency_options is not None
    assert s.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert s.id == found["s"].id


# ----------------------------------------------------------------------------- boundaries


@SQLITE_ONLY
def test_deployments_svrctl_does_not_manage_are_never_touched(sv: Invoke, api: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    foreign, other_flow = f"foreign-{suffix}", f"other-flow-{suffix}"

    async def create(client: PrefectClient) -> None:
        run_task_flow = await client.create_flow_from_name("run-task")
        await client.create_deployment(
            flow_id=run_task_flow, name=foreign, tags=["ops"], parameters={"task_id": 1}
        )
        other = await client.create_flow_from_name(other_flow)
        await client.create_deployment(flow_id=other, name="x", tags=["svrctl"])

    prefect(api, create)
    before = deployment(api, foreign)
    assert before is not None
    r = ok(sv, "sync")
    assert "nothing to change" in r.stdout
    after = deployment(api, foreign)
    assert after is not None and after.updated == before.updated

    # a task with the same name is refused, and the foreign deployment left as it is
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{closed_port()}/api"
    ok(sv, "task", "add", foreign, "--local", "--command", "true")
    os.environ["PREFECT_API_URL"] = api
    r = sv("sync")
    assert r.exit_code == 1, r.output
    assert f"task {foreign} was not synced: a deployment run-task/{foreign} exists" in r.stdout
    after = deployment(api, foreign)
    assert after is not None and after.updated == before.updated and after.tags == ["ops"]
    r = sv("task", "edit", foreign, "--description", "x")
    assert r.exit_code == 0 and "was not synced" in r.stderr
    ok(sv, "task", "rm", foreign)
    assert deployment(api, foreign) is not None

    async def other_deployments(client: PrefectClient) -> list[str]:
        found = await client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[other_flow]))
        )
        return [d.name for d in found]

    assert prefect(api, other_deployments) == ["x"]


@SQLITE_ONLY
def test_dry_run_prints_the_plan_and_writes_nothing(
    sv: Invoke, api: str, database: Database
) -> None:
    ok(sv, "task", "add", "keep", "--local", "--command", "true", "--schedule", "@daily")
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{closed_port()}/api"
    ok(sv, "task", "add", "new", "--local", "--command", "true", "--schedule", "@hourly")
    ok(sv, "task", "edit", "keep", "--disabled")
    ok(sv, "server", "add", "s1", "--host", "h", "--max-concurrent", "1")
    os.environ["PREFECT_API_URL"] = api
    before = snapshot(api)

    r = ok(sv, "sync", "--dry-run")
    lines = r.stdout.splitlines()
    assert "  + deployment run-task/new (cron '0 * * * *' (UTC), pool svrctl, cancel_new)" in lines
    assert "  ~ deployment run-task/keep: paused, schedule inactive" in lines
    assert "  + concurrency limit svrctl-server-s1 (1 at once on s1)" in lines
    assert "plan: 2 to create, 1 to update, 0 to delete, 0 unchanged" in lines
    assert lines[-1] == "dry run: nothing was changed"
    report = sync_json(sv, "--dry-run")
    assert (report["dry_run"], report["writes"]) == (True, 0)
    assert [(a["op"], a["kind"], a["name"], a["done"]) for a in report["actions"]] == [
        ("update", "deployment", "keep", False),
        ("create", "deployment", "new", False),
        ("create", "concurrency-limit", "svrctl-server-s1", False),
    ]
    assert snapshot(api) == before
    assert task_row(database, "new").deployment_id is None

    report = sync_json(sv)
    assert [a["done"] for a in report["actions"]] == [True, True, True]
    assert report["writes"] == 3
    assert sync_json(sv)["writes"] == 0


@SQLITE_ONLY
def test_per_server_limits_are_created_updated_and_removed(sv: Invoke, api: str) -> None:
    async def stale(client: PrefectClient) -> None:
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

        for name in ("svrctl-server-ghost", "someone-elses-limit"):
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=4)
            )

    prefect(api, stale)
    ok(sv, "server", "add", "s1", "--host", "h", "--max-concurrent", "2")
    assert limits(api)["svrctl-server-s1"].limit == 2
    ok(sv, "server", "edit", "s1", "--max-concurrent", "1")
    limit = limits(api)["svrctl-server-s1"]
    assert (limit.limit, limit.active) == (1, True)
    report = sync_json(sv)  # a full sync removes limits of servers svrctl does not know
    assert [(a["op"], a["name"]) for a in report["actions"]] == [("delete", "svrctl-server-ghost")]
    assert "svrctl-server-ghost" not in limits(api)
    assert "someone-elses-limit" in limits(api)
    ok(sv, "server", "edit", "s1", "--max-concurrent", "")
    assert "svrctl-server-s1" not in limits(api)
    ok(sv, "server", "edit", "s1", "--max-concurrent", "3")
    ok(sv, "server", "rm", "s1")
    assert "svrctl-server-s1" not in limits(api)
    r = sv("server", "edit", "nope", "--max-concurrent", "x")
    assert r.exit_code == 2


# ----------------------------------------------------------------------------- no Prefect


@SQLITE_ONLY
def test_auto_sync_says_so_when_prefect_is_unreachable(
    svrctl: Invoke, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = f"http://127.0.0.1:{closed_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", down)
    r = svrctl("task", "add", "t", "--local", "--command", "true", "--schedule", "@daily", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["name"] == "t"  # stdout is still pure JSON
    assert f"the Prefect API at {down} does not answer" in r.stderr
    assert "run `svrctl sync` once Prefect is reachable" in r.stderr
    assert task_row(database, "t").deployment_id is None
    for args in (
        ["task", "disable", "t"],
        ["task", "edit", "t", "--retries", "2"],
        ["task", "rm", "t"],
    ):
        r = svrctl(*args)
        assert r.exit_code == 0 and "run `svrctl sync`" in r.stderr, r.output
    r = svrctl("sync")
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr.startswith(f"error: cannot sync: the Prefect API at {down} does not answer")
    assert "`svrctl up`" in r.stderr


@SQLITE_ONLY
def test_without_any_prefect_api_only_a_waiting_schedule_gets_a_note(
    svrctl: Invoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr("svrctl.prefect_api._profile_api_url", lambda: None)
    r = svrctl("task", "add", "t", "--local", "--command", "true", "--schedule", "@daily")
    assert r.exit_code == 0
    assert "no Prefect API is configured" in r.stderr and "svrctl sync" in r.stderr
    r = svrctl("task", "add", "m", "--local", "--command", "true")
    assert (r.exit_code, r.stderr) == (0, "")
    assert svrctl("task", "disable", "t").stderr == ""


@SQLITE_ONLY
def test_a_schedule_prefect_cannot_run_exactly_is_refused_at_task_add(
    svrctl: Invoke, database: Database
) -> None:
    r = svrctl(
        "task",
        "add",
        "t",
        "--local",
        "--command",
        "true",
        "--schedule",
        "0 30 2 * * *",
        "--timezone",
        "Europe/Berlin",
    )
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr.startswith("error: invalid schedule: schedule '0 30 2 * * *' cannot run")
    assert "'30 2 * * *'" in r.stderr
    assert svrctl("task", "list", "--json").stdout.strip() == "[]"
    assert svrctl("task", "add", "t", "--local", "--command", "true").exit_code == 0
    r = svrctl("task", "edit", "t", "--schedule", "0 30 1 * * *", "--timezone", "America/New_York")
    assert r.exit_code == 2 and "01:30 happens twice" in r.stderr
    assert task_row(database, "t").schedule == ""


# ----------------------------------------------------------------------------- the limit at work


@pytest.fixture
def limited_env(
    svrctl: Invoke,
    svrctl_env: Path,
    database: Database,
    sshd: SshdTarget,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    api: str,
) -> Iterator[RunEnv]:
    """A run environment whose flows, and their step threads, use the test's Prefect server."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    refresh_global_settings_context()  # step threads read the global settings
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield from make_run_env(svrctl, svrctl_env, database, sshd, monkeypatch, tmp_path)
    finally:
        # send the runs' logs and events while the server still listens
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
        monkeypatch.undo()
        refresh_global_settings_context()


@pytest.mark.sshd
@SQLITE_ONLY
def test_max_concurrent_one_keeps_runs_of_different_tasks_apart(
    limited_env: RunEnv, api: str
) -> None:
    from svrctl.flows.run_task import run_task

    env = limited_env
    env.add_server("s1")
    env.ok("server", "edit", "s1", "--max-concurrent", "1")
    assert limits(api)["svrctl-server-s1"].limit == 1
    log = env.scratch / "log"
    step = f"echo start $(date +%s.%N) >> {log}; sleep 1.5; echo end $(date +%s.%N) >> {log}"
    ids = [env.add_task(f"t{i}", "--server", "s1", "--command", step) for i in range(3)]

    async def together() -> list[Any]:
        return list(await asyncio.gather(*(run_task(task_id=i, return_state=True) for i in ids)))

    states = asyncio.run(together())
    assert all(s.is_completed() for s in states), [s.message for s in states]
    events = [line.split() for line in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["start", "end"] * 3  # one at a time
    assert limits(api)["svrctl-server-s1"].active_slots == 0

    # Without the limit in Prefect the step refuses to run unguarded.
    async def drop(client: PrefectClient) -> None:
        await client.delete_global_concurrency_limit_by_name("svrctl-server-s1")

    prefect(api, drop)
    state = asyncio.run(run_task(task_id=ids[0], return_state=True))
    result = state.result(raise_on_failure=False)
    assert result.status == "failed"
    assert "no usable global concurrency limit svrctl-server-s1" in result.error
    assert "run `svrctl sync`" in result.error
