"""The admin deployments, through the Prefect API, run by a real `svrctl worker`.

A real `prefect server start`, the admin deployments created as `svrctl up` creates
them, a private app database, and `svrctl worker` as a subprocess. Each test creates
flow runs of the deployments with JSON parameters, as Prefect's Custom run form sends
them, and checks the app database, Prefect (deployments, Secret blocks, stored
parameters), the flow's logs and its markdown artifact. Refused inputs must end the
run Failed with the CLI's own message as the flow's first log line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fixtures.notify_listener import NotifyListener
from fixtures.prefect import PREFECT_DB_ENV, prefect_api_pointed_at
from fixtures.processes import stop_groups
from fixtures.sshd import SshdTarget
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import LogSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from sqlalchemy import select

from svrctl.db.engine import Database, open_database
from svrctl.db.migrate import upgrade
from svrctl.db.models import Server, Task
from svrctl.exceptions import BadInputError
from svrctl.flows.maintenance import ADMIN_DEPLOYMENTS, ADMIN_TAG, ensure_maintenance_deployments
from svrctl.notify.channels import add_channel
from svrctl.plugin import plugin_names
from svrctl.specs import CRON_HINT, ServerSpec, validate
from svrctl.worker import ensure_work_pool

pytestmark = pytest.mark.sshd

BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
SECRET = "s3cr3t-sudo-Pw-" + uuid.uuid4().hex[:6]


@dataclass
class World:
    """The Prefect server, the admin deployments in a private pool, a worker, an app DB."""

    client: SyncPrefectClient
    db: Database
    home: Path
    log: Path
    worker: subprocess.Popen[bytes]

    def run(self, flow: str, parameters: dict[str, Any]) -> FlowRun:
        """Create a run of ``flow/svrctl`` with JSON parameters; wait for its end."""
        deployment = self.client.read_deployment_by_name(f"{flow}/svrctl")
        run = self.client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        deadline = time.monotonic() + 120
        while True:
            run = self.client.read_flow_run(run.id)
            if run.state is not None and run.state.type.value in FINAL:
                return run
            assert self.worker.poll() is None, f"the worker exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"still {run.state_name}:\n{self.tail()}"
            time.sleep(0.2)

    def ok(self, flow: str, parameters: dict[str, Any]) -> FlowRun:
        """Run a flow that must complete."""
        run = self.run(flow, parameters)
        assert run.state is not None
        assert run.state.type.value == "COMPLETED", (run.state, self.lines(run.id), self.tail())
        return run

    def refused(self, flow: str, parameters: dict[str, Any]) -> str:
        """Run a flow that must be refused; check state, first log line and artifact."""
        run = self.run(flow, parameters)
        assert run.state is not None
        assert run.state.type.value == "FAILED", (run.state, self.lines(run.id))
        reason = self.lines(run.id)[0]
        assert run.state.message == reason
        [artifact] = self.artifacts(run.id)
        assert artifact.type == "markdown"
        assert reason in str(artifact.data)
        assert f"## {flow}: refused" in str(artifact.data) or f"## {flow}: failed" in str(
            artifact.data
        )
        return reason

    def lines(self, run_id: UUID) -> list[str]:
        """The flow's own log lines (not the worker's or the engine's), oldest first."""
        deadline = time.monotonic() + 30
        while True:
            logs = self.client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                sort=LogSort.TIMESTAMP_ASC,
            )
            own = [entry.message for entry in logs if entry.name == "prefect.flow_runs"]
            if any(m.startswith("Finished in state") for m in own):
                # Prefect's engine opens with "Beginning flow run ..." and closes with
                # "Finished in state ..."; what lies between is the flow's own.
                assert own[0].startswith("Beginning flow run"), own
                return [m for m in own[1:] if not m.startswith("Finished in state")]
            assert time.monotonic() < deadline, own
            time.sleep(0.2)

    def artifacts(self, run_id: UUID) -> list[Any]:
        """The artifacts the flow run created."""
        return list(
            self.client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        )

    def everything_said(self, run_id: UUID) -> str:
        """Logs, artifacts, state message and stored parameters of a run, as one text."""
        run = self.client.read_flow_run(run_id)
        logs = self.client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        )
        parts = [entry.message for entry in logs]
        parts += [str(a.data) + str(a.description) for a in self.artifacts(run_id)]
        parts += [str(run.state.message if run.state else ""), str(run.parameters)]
        return "\n".join(parts)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def _delete_admin(client: SyncPrefectClient) -> None:
    for spec in ADMIN_DEPLOYMENTS:
        try:
            found = client.read_deployment_by_name(spec.full_name)
        except ObjectNotFound:
            continue
        client.delete_deployment(found.id)


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sshd: SshdTarget,
) -> Iterator[World]:
    backend = os.environ.get(PREFECT_DB_ENV) or "sqlite"
    server = request.getfixturevalue(f"prefect_server_{backend}")
    tmp = tmp_path_factory.mktemp("admin")
    home = tmp / "home"
    home.mkdir(mode=0o700)
    url = f"sqlite:///{home / 'svrctl.db'}"
    upgrade(url)
    pool = f"admin-{uuid.uuid4().hex[:8]}"
    with prefect_api_pointed_at(server.api_url), get_client(sync_client=True) as client:
        asyncio.run(ensure_work_pool(pool))
        _delete_admin(client)
        created = asyncio.run(ensure_maintenance_deployments(pool))
        assert {s.full_name for s in ADMIN_DEPLOYMENTS} <= set(created)
        for name in created:  # only the admin ones: no scheduled runs in this pool
            if not name.startswith(tuple(s.flow_name + "/" for s in ADMIN_DEPLOYMENTS)):
                client.delete_deployment(client.read_deployment_by_name(name).id)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SVRCTL_"))}
        env |= {
            "HOME": str(tmp),
            "PREFECT_API_URL": server.api_url,
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "SVRCTL_HOME": str(home),
            "SVRCTL_DATABASE_URL": url,
            "SVRCTL_TIMEZONE": "UTC",
        }
        log = tmp / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [str(BIN / "svrctl"), "worker", "--pool", pool, "--name", pool],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        db = open_database(url)
        world = World(client, db, home, log, worker)
        deadline = time.monotonic() + 60
        while "started!" not in log.read_text():
            assert worker.poll() is None, world.tail()
            assert time.monotonic() < deadline, world.tail()
            time.sleep(0.1)
        try:
            yield world
        finally:
            stop_groups([worker], timeout=60)
            _delete_admin(client)
            db.dispose()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _server_row(db: Database, name: str) -> Server | None:
    with db.read() as session:
        return session.scalar(select(Server).where(Server.name == name))


def _task_row(db: Database, name: str) -> Task | None:
    with db.read() as session:
        return session.scalar(select(Task).where(Task.name == name))


def _deployment(world: World, name: str) -> Any:
    try:
        return world.client.read_deployment_by_name(f"run-task/{name}")
    except ObjectNotFound:
        return None


# ----------------------------------------------------------------------------- schemas


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a ``$ref`` (or a one-item ``allOf``) to its definition."""
    if "allOf" in node and len(node["allOf"]) == 1:
        node = node["allOf"][0]
    ref = node.get("$ref")
    if ref:
        return dict(schema["definitions"][ref.rsplit("/", 1)[-1]])
    return node


def test_the_stored_parameter_schemas_make_typed_forms(world: World) -> None:
    schemas = {}
    for spec in ADMIN_DEPLOYMENTS:
        d = world.client.read_deployment_by_name(spec.full_name)
        assert d.tags == [ADMIN_TAG]
        assert d.schedules == []
        assert d.enforce_parameter_schema
        schemas[spec.flow_name] = d.parameter_openapi_schema
    assert set(schemas) == {
        "server-add", "server-edit", "server-remove", "server-test", "server-trust",
        "task-add", "task-edit", "task-remove", "task-enable", "task-disable",
        "plugin-configure", "notify-test",
    }  # fmt: skip

    add = schemas["server-add"]
    assert add["required"] == ["server"]
    server = _resolve(add, add["properties"]["server"])
    assert server["required"] == ["name", "host"]
    assert server["properties"]["port"]["type"] == "integer"
    assert server["properties"]["port"]["default"] == 22
    assert server["properties"]["host"]["title"] == "Host"
    assert server["properties"]["host"]["description"]
    policy = _resolve(add, server["properties"]["host_key_policy"])
    assert policy["enum"] == ["strict", "accept-new"]
    assert server["properties"]["host_key_policy"]["default"] == "strict"
    for secret in ("key_passphrase", "password", "sudo_password"):
        prop = add["properties"][secret]
        assert {"format": "password", "type": "string", "writeOnly": True} in prop["anyOf"]
        assert prop["description"]

    edit = schemas["server-edit"]
    changes = _resolve(edit, edit["properties"]["changes"])
    assert changes.get("required", []) == []  # every field optional: empty means unchanged
    assert "host_key_policy" in changes["properties"]

    trust = schemas["server-trust"]["properties"]
    assert trust["confirm"] == {**trust["confirm"], "type": "boolean", "default": False}

    task = schemas["task-add"]
    form = _resolve(task, task["properties"]["task"])
    assert set(form["required"]) == {"name", "kind"}
    kind = _resolve(task, form["properties"]["kind"])
    assert kind["enum"] == ["ssh", "local", "plugin"]
    zones = next(
        _resolve(task, option)
        for option in form["properties"]["timezone"]["anyOf"]
        if option.get("type") != "null"
    )
    assert "Europe/Berlin" in zones["enum"]
    assert "UTC" in zones["enum"]
    assert "Not/AZone" not in zones["enum"]
    overlap = _resolve(task, form["properties"]["overlap_policy"])
    assert overlap["enum"] == ["skip", "queue"]

    plugin = schemas["plugin-configure"]
    assert plugin["required"] == ["task", "plugin"]
    options = [_resolve(plugin, o) for o in plugin["properties"]["plugin"]["anyOf"]]
    assert [o["title"] for o in options] == plugin_names()
    for option in options:
        assert option["properties"]["plugin"]["const"] == option["title"]
        assert option["additionalProperties"] is False
    health = next(o for o in options if o["title"] == "health")
    assert health["properties"]["cpu_percent"]["description"]
    weather = next(o for o in options if o["title"] == "weather")
    assert set(_resolve(plugin, weather["properties"]["units"])["enum"]) == {
        "standard",
        "metric",
        "imperial",
    }
    assert {"format": "password", "type": "string", "writeOnly": True} in plugin["properties"][
        "secret"
    ]["anyOf"]
    assert schemas["notify-test"]["required"] == ["channel"]


def test_the_api_refuses_parameters_that_do_not_fit_the_form(world: World) -> None:
    deployment = world.client.read_deployment_by_name("server-add/svrctl")
    bad = {"server": {"name": "x", "host": "h", "host_key_policy": "trust-everyone"}}
    with pytest.raises(PrefectHTTPStatusError) as info:
        world.client.create_flow_run_from_deployment(deployment.id, parameters=bad)
    assert info.value.response.status_code in (409, 422)
    assert "trust-everyone" in info.value.response.text

    plugin = world.client.read_deployment_by_name("plugin-configure/svrctl")
    wrong = {"task": "t", "plugin": {"plugin": "health", "cpu_percent": "very high"}}
    with pytest.raises(PrefectHTTPStatusError):
        world.client.create_flow_run_from_deployment(plugin.id, parameters=wrong)


# ----------------------------------------------------------------------------- servers


def test_servers_are_added_trusted_tested_edited_and_removed(
    world: World, sshd: SshdTarget
) -> None:
    name = unique("web")
    form = {
        "name": name,
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "key_path": str(sshd.user_key),
        "tags": ["admin-flows"],
        "connect_timeout_seconds": 5,
    }
    run = world.ok("server-add", {"server": form, "sudo_password": SECRET})
    row = _server_row(world.db, name)
    assert row is not None
    assert (row.host, row.port, row.username, row.tags) == (
        sshd.host,
        sshd.port,
        sshd.username,
        ["admin-flows"],
    )
    assert row.host_key_policy == "strict"
    block = row.sudo_password_secret
    assert block is not None
    from prefect.blocks.system import Secret

    assert Secret.load(block, _sync=True).get() == SECRET  # type: ignore[union-attr]
    said = world.everything_said(run.id)
    assert SECRET not in said  # not in logs, artifacts, state or the stored parameters
    assert world.client.read_flow_run(run.id).parameters["sudo_password"] == "**********"
    assert world.lines(run.id)[0].startswith(f"✓ added server {name} (")

    # the same name again: refused with the CLI's message
    reason = world.refused("server-add", {"server": form})
    assert reason == (
        f"a server named {name!r} already exists: pick another name, "
        f"or change it with `svrctl server edit {name}`"
    )
    # a value the form lets through but svrctl refuses: the same message as the CLI's
    bad = form | {"name": unique("bad"), "host": "-oProxyCommand=x"}
    with pytest.raises(BadInputError) as expected:
        validate(ServerSpec, bad)
    assert world.refused("server-add", {"server": bad}) == expected.value.message

    # the host key is not pinned yet: the test is refused with the trust hint
    reason = world.refused("server-test", {"server": name})
    assert "is not known yet" in reason
    assert f"svrctl server trust {name}" in reason

    known_hosts = world.home / "known_hosts"
    run = world.ok("server-trust", {"server": name})
    shown = world.lines(run.id)[0]
    assert "not pinned: run again with confirm on" in shown
    fingerprint = shown.split(" presents ", 1)[1].split(";")[0].split()[1]
    assert fingerprint.startswith("SHA256:")
    assert fingerprint in str(world.artifacts(run.id)[0].data)
    assert not known_hosts.exists() or sshd.host_key_line.split()[-1] not in known_hosts.read_text()

    reason = world.refused(
        "server-trust", {"server": name, "confirm": True, "fingerprint": "SHA256:not-it"}
    )
    assert "not the fingerprint 'SHA256:not-it' you gave; nothing was pinned" in reason
    run = world.ok("server-trust", {"server": name, "confirm": True, "fingerprint": fingerprint})
    assert ": pinned in " in world.lines(run.id)[0]
    assert sshd.host_key_line.split()[-1] in known_hosts.read_text()

    run = world.ok("server-test", {"server": name})
    assert world.lines(run.id)[0].startswith(f"✓ {name}: connected to ")
    row = _server_row(world.db, name)
    assert row is not None
    assert row.last_seen is not None
    assert row.os_type

    world.ok("server-edit", {"server": name, "changes": {"description": "edited", "port": None}})
    row = _server_row(world.db, name)
    assert row is not None
    assert (row.description, row.port) == ("edited", sshd.port)  # empty fields stay
    reason = world.refused("server-edit", {"server": name, "changes": {}})
    assert reason == "nothing to change: fill in at least one field"
    reason = world.refused("server-edit", {"server": name, "changes": {"port": 70000}})
    assert reason.startswith("invalid port:")

    task = unique("uses-web")
    world.ok("task-add", {"task": {"name": task, "kind": "ssh", "server": name, "command": "id"}})
    reason = world.refused("server-remove", {"server": name})
    assert reason.startswith(f"server {name!r} is still the target of task(s) {task}")
    world.ok("task-remove", {"task": task})
    world.ok("server-remove", {"server": name})
    assert _server_row(world.db, name) is None
    assert world.refused("server-remove", {"server": name}) == (
        f"no server named {name!r}: see `svrctl server list`"
    )


# ----------------------------------------------------------------------------- tasks


def test_tasks_are_added_edited_disabled_enabled_and_removed_with_their_deployment(
    world: World,
) -> None:
    name = unique("nightly")
    form = {
        "name": name,
        "kind": "local",
        "command": "echo hi",
        "schedule": "0 3 * * *",
        "timezone": "Europe/Berlin",
    }
    run = world.ok("task-add", {"task": form})
    row = _task_row(world.db, name)
    assert row is not None
    assert (row.kind, row.command, row.schedule, row.timezone) == (
        "local",
        "echo hi",
        "0 3 * * *",
        "Europe/Berlin",
    )
    assert world.lines(run.id)[0] == (
        f"✓ added task {name} (local, schedule '0 3 * * *' (Europe/Berlin))"
    )
    deployment = _deployment(world, name)
    assert deployment is not None
    assert str(deployment.id) == row.deployment_id
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 3 * * *", "Europe/Berlin")
    assert schedule.active

    # the time zone left empty: the worker's SVRCTL_TIMEZONE, as the CLI uses its own
    other = unique("manual")
    world.ok("task-add", {"task": {"name": other, "kind": "local", "command": "true"}})
    other_row = _task_row(world.db, other)
    assert other_row is not None
    assert other_row.timezone == "UTC"

    world.ok("task-edit", {"task": name, "changes": {"schedule": "30 4 * * *"}})
    row = _task_row(world.db, name)
    assert row is not None
    assert (row.schedule, row.command) == ("30 4 * * *", "echo hi")
    [schedule] = _deployment(world, name).schedules
    assert schedule.schedule.cron == "30 4 * * *"

    world.ok("task-disable", {"task": name})
    row = _task_row(world.db, name)
    assert row is not None
    assert not row.enabled
    assert not _deployment(world, name).schedules[0].active
    world.ok("task-enable", {"task": name})
    row = _task_row(world.db, name)
    assert row is not None
    assert row.enabled
    assert _deployment(world, name).schedules[0].active

    reason = world.refused(
        "task-add", {"task": form | {"name": unique("bad"), "schedule": "61 * * * *"}}
    )
    assert reason.startswith("invalid schedule:")
    assert reason.endswith(CRON_HINT)
    reason = world.refused(
        "task-add", {"task": {"name": unique("bad"), "kind": "ssh", "command": "id"}}
    )
    assert reason == (
        "an ssh task needs exactly one of a server or a server tag: give --server NAME or --tag TAG"
    )
    reason = world.refused("task-edit", {"task": name, "changes": {"after": name}})
    assert "a task cannot run after itself" in reason
    assert world.refused("task-enable", {"task": "no-such-task"}) == (
        "no task named 'no-such-task': see `svrctl task list`"
    )

    world.ok("task-remove", {"task": name})
    world.ok("task-remove", {"task": other})
    assert _task_row(world.db, name) is None
    assert _deployment(world, name) is None


# ----------------------------------------------------------------------------- plugins


def test_plugin_configure_creates_then_updates_the_task_and_its_deployment(world: World) -> None:
    name = unique("echo-check")
    params = {
        "task": name,
        "plugin": {"plugin": "echo", "message": "first"},
        "schedule": "15 2 * * *",
        "timezone": "UTC",
    }
    run = world.ok("plugin-configure", params)
    assert world.lines(run.id)[0].startswith(f"✓ added task {name} (plugin, ")
    row = _task_row(world.db, name)
    assert row is not None
    first_id = row.id
    assert (row.kind, row.plugin, row.plugin_config, row.server_id) == (
        "plugin",
        "echo",
        {"message": "first"},
        None,
    )
    assert _deployment(world, name).schedules[0].schedule.cron == "15 2 * * *"

    run = world.ok("plugin-configure", params | {"plugin": {"plugin": "echo", "message": "second"}})
    assert world.lines(run.id)[0].startswith(f"✓ updated task {name} (plugin, ")
    row = _task_row(world.db, name)
    assert row is not None
    assert (row.id, row.plugin_config) == (first_id, {"message": "second"})

    # a secret for a plugin whose settings name a Secret block: saved there, never shown
    key = "owm-" + uuid.uuid4().hex
    block = unique("owm-key")
    weather = {
        "task": unique("weather"),
        "plugin": {"plugin": "weather", "api_key_secret": block, "location": "Berlin,DE"},
        "secret": key,
    }
    run = world.run("plugin-configure", weather)
    assert key not in world.everything_said(run.id)
    from prefect.blocks.system import Secret

    assert run.state is not None
    assert run.state.type.value == "COMPLETED", world.lines(run.id)
    assert Secret.load(block, _sync=True).get() == key  # type: ignore[union-attr]

    reason = world.refused("plugin-configure", params | {"secret": key})
    assert reason.startswith("invalid secret: the plugin 'echo' names no Secret block")
    assert key not in reason
    reason = world.refused("plugin-configure", params | {"server": "no-such-server"})
    assert reason == "no server named 'no-such-server': see `svrctl server list`"
    world.ok("task-remove", {"task": name})


# ----------------------------------------------------------------------------- channels


def test_notify_test_sends_to_the_channel(world: World, notify_listener: NotifyListener) -> None:
    name = unique("ops")
    add_channel(world.db, name=name, kind="ntfy", url=notify_listener.url, topic="admin")
    run = world.ok("notify-test", {"channel": name})
    assert world.lines(run.id)[0].startswith(f"✓ {name}: delivered in ")
    [request] = notify_listener.wait_for(1)
    assert "svrctl test notification" in (request.text + str(request.headers))

    notify_listener.fail()
    reason = world.refused("notify-test", {"channel": name})
    assert reason.startswith(f"✗ {name}: not delivered: ")
    assert world.refused("notify-test", {"channel": "nobody"}) == (
        "no notification channel named 'nobody': see `svrctl notify list`"
    )
