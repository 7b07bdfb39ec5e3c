"""Chains (``--after OTHER --on success|failure|any``) as Prefect automations, end to end.

A real ``prefect server start`` with its services (the triggers service evaluates the
automations), svrctl's own sync, and for the end-to-end test a real svrctl worker
process serving the ``svrctl`` work pool that local tasks use. Each test starts with a
full sync of its own fresh app database, which deletes the deployments and chain
automations earlier tests left.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Invoke
from prefect.client.orchestration import PrefectClient
from prefect.events.actions import DoNothing
from prefect.events.schemas.automations import Automation, AutomationCore, EventTrigger
from test_sync import SQLITE_ONLY, api, closed_port, managed, ok, prefect, sv, sync_json
from test_worker import World, world

from svrctl.automations import ZOMBIE_AUTOMATION, ensure_zombie_automation
from svrctl.db.models import TaskHistory

__all__ = ["api", "sv", "world"]  # the fixtures, shared with test_sync.py and test_worker.py

SUCCESS = {"prefect.flow-run.Completed"}
FAILURE = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}


def automations(api: str) -> dict[str, Automation]:
    """Every automation in Prefect, by name."""

    async def read(client: PrefectClient) -> dict[str, Automation]:
        return {a.name: a for a in await client.read_automations()}

    return prefect(api, read)


def chains(api: str) -> dict[str, Automation]:
    """svrctl's chain automations, by name."""
    return {n: a for n, a in automations(api).items() if n.startswith("svrctl chain: ")}


def add(sv: Invoke, name: str, *options: str) -> None:
    ok(sv, "task", "add", name, "--local", "--command", "true", *options)


def check_chain(api: str, automation: Automation, task: str, after: str, expect: set[str]) -> None:
    """The automation runs ``task``'s deployment when ``after``'s deployment ends as expected."""
    found = managed(api)
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.posture.value == "Reactive" and trigger.threshold == 1
    assert trigger.expect == expect
    assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    assert trigger.match_related.model_dump() == {  # type: ignore[union-attr]
        "prefect.resource.id": f"prefect.deployment.{found[after].id}",
        "prefect.resource.role": "deployment",
    }
    (action,) = automation.actions
    assert action.type == "run-deployment"
    assert action.source == "selected"  # type: ignore[union-attr]
    assert action.deployment_id == found[task].id  # type: ignore[union-attr]
    assert action.parameters == found[task].parameters  # type: ignore[union-attr]
    assert automation.tags == ["svrctl-chain"]


# ----------------------------------------------------------------------------- sync


@SQLITE_ONLY
def test_sync_creates_one_automation_per_chain_for_each_on(sv: Invoke, api: str) -> None:
    add(sv, "a")
    # saved while Prefect is away, then synced at once: first a dry run
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{closed_port()}/api"
    add(sv, "ok-next", "--after", "a")
    add(sv, "bad-next", "--after", "a", "--on", "failure")
    add(sv, "any-next", "--after", "a", "--on", "any")
    os.environ["PREFECT_API_URL"] = api
    assert chains(api) == {}

    r = ok(sv, "sync", "--dry-run")
    lines = r.stdout.splitlines()
    assert (
        "  + automation 'svrctl chain: ok-next after a (success)' "
        "(runs ok-next when a run of a succeeds)"
    ) in lines
    assert (
        "  + automation 'svrctl chain: bad-next after a (failure)' "
        "(runs bad-next when a run of a fails, crashes or times out)"
    ) in lines
    assert "  + automation 'svrctl chain: any-next after a (any)' " in r.stdout
    assert "plan: 6 to create, 0 to update, 0 to delete, 1 unchanged" in lines
    report = sync_json(sv, "--dry-run")
    assert report["writes"] == 0
    assert sorted(
        (a["op"], a["kind"], a["task"]) for a in report["actions"] if a["kind"] == "automation"
    ) == [
        ("create", "automation", "any-next"),
        ("create", "automation", "bad-next"),
        ("create", "automation", "ok-next"),
    ]
    assert chains(api) == {}

    report = sync_json(sv)
    assert report["ok"] and all(a["done"] for a in report["actions"])
    found = chains(api)
    assert set(found) == {
        "svrctl chain: ok-next after a (success)",
        "svrctl chain: bad-next after a (failure)",
        "svrctl chain: any-next after a (any)",
    }
    check_chain(api, found["svrctl chain: ok-next after a (success)"], "ok-next", "a", SUCCESS)
    check_chain(api, found["svrctl chain: bad-next after a (failure)"], "bad-next", "a", FAILURE)
    check_chain(
        api, found["svrctl chain: any-next after a (any)"], "any-next", "a", SUCCESS | FAILURE
    )
    assert all(a.enabled for a in found.values())
    ids = {n: a.id for n, a in found.items()}
    created = {a["name"]: a["id"] for a in report["actions"] if a["kind"] == "automation"}
    assert {n: str(i) for n, i in ids.items()} == created

    # a no-op re-sync writes nothing: same automations, same ids
    for _ in range(2):
        report = sync_json(sv)
        assert (report["writes"], report["actions"], report["problems"]) == (0, [], [])
        assert report["counts"]["unchanged"] == 4 + 3
    after = chains(api)
    assert {n: a.id for n, a in after.items()} == ids
    assert {n: a.model_dump() for n, a in after.items()} == {
        n: a.model_dump() for n, a in found.items()
    }


@SQLITE_ONLY
def test_auto_sync_creates_updates_and_deletes_the_automation(sv: Invoke, api: str) -> None:
    add(sv, "a")
    add(sv, "b")
    add(sv, "c", "--after", "a")  # the automatic sync of `task add`
    (auto,) = chains(api).values()
    assert auto.name == "svrctl chain: c after a (success)"
    check_chain(api, auto, "c", "a", SUCCESS)

    ok(sv, "task", "edit", "c", "--on", "failure")
    (edited,) = chains(api).values()
    assert edited.id == auto.id  # updated in place
    assert edited.name == "svrctl chain: c after a (failure)"
    check_chain(api, edited, "c", "a", FAILURE)

    ok(sv, "task", "edit", "c", "--after", "b", "--on", "any")
    (moved,) = chains(api).values()
    assert moved.id == auto.id
    check_chain(api, moved, "c", "b", SUCCESS | FAILURE)

    # a disabled task's automation is disabled, and enabled again with the task
    ok(sv, "task", "disable", "c")
    (off,) = chains(api).values()
    assert (off.id, off.enabled) == (auto.id, False)
    report = sync_json(sv)
    assert (report["writes"], report["actions"]) == (0, [])
    ok(sv, "task", "enable", "c")
    assert next(iter(chains(api).values())).enabled is True

    # OTHER's deployment deleted in Prefect: the auto-sync of `task edit b` recreates it
    # (a new id), and the automation of c, run after b, follows it
    old_b = managed(api)["b"].id

    async def delete_b(client: PrefectClient) -> None:
        await client.delete_deployment(old_b)

    prefect(api, delete_b)
    ok(sv, "task", "edit", "b", "--description", "new")
    assert managed(api)["b"].id != old_b
    (followed,) = chains(api).values()
    assert followed.id == auto.id
    check_chain(api, followed, "c", "b", SUCCESS | FAILURE)
    assert sync_json(sv)["writes"] == 0

    # unchained: the automation goes
    ok(sv, "task", "edit", "c", "--after", "")
    assert chains(api) == {}
    assert sync_json(sv)["writes"] == 0

    # task rm of a chained task deletes its automation too
    add(sv, "d", "--after", "a", "--on", "any")
    assert set(chains(api)) == {"svrctl chain: d after a (any)"}
    ok(sv, "task", "rm", "d")
    assert chains(api) == {}
    assert sync_json(sv)["writes"] == 0


@SQLITE_ONLY
def test_automations_svrctl_does_not_manage_are_untouched(sv: Invoke, api: str) -> None:
    import asyncio

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        created_zombie = asyncio.run(ensure_zombie_automation())

    def user_automation(name: str, tags: list[str]) -> AutomationCore:
        return AutomationCore(
            name=name,
            tags=tags,
            trigger=EventTrigger(expect={"prefect.flow-run.Completed"}),
            actions=[DoNothing()],
        )

    async def create(client: PrefectClient) -> None:
        await client.create_automation(user_automation("mine", []))
        # the tag alone (or the name alone) does not make an automation svrctl's
        await client.create_automation(user_automation("tagged", ["svrctl-chain"]))
        await client.create_automation(user_automation("svrctl chain: look-alike", []))

    prefect(api, create)
    try:
        check_untouched(sv, api)
    finally:  # the Prefect server is shared by the session: leave no look-alikes behind

        async def delete(client: PrefectClient) -> None:
            names = ["mine", "tagged", "svrctl chain: look-alike"]
            for name in names + ([ZOMBIE_AUTOMATION] if created_zombie else []):
                for found in await client.read_automations_by_name(name):
                    await client.delete_automation(found.id)

        prefect(api, delete)


def check_untouched(sv: Invoke, api: str) -> None:
    before = {n: a.model_dump() for n, a in automations(api).items()}
    assert {"mine", "tagged", "svrctl chain: look-alike", ZOMBIE_AUTOMATION} <= set(before)

    add(sv, "a")
    add(sv, "b", "--after", "a")
    ok(sv, "task", "edit", "b", "--on", "any")
    report = sync_json(sv)
    assert (report["writes"], report["actions"]) == (0, [])
    ok(sv, "task", "rm", "b")
    # a full sync with a stale svrctl automation: deletes it, and only it
    add(sv, "c", "--after", "a")

    async def stale(client: PrefectClient) -> None:
        found = await client.read_automations_by_name("svrctl chain: c after a (success)")
        copy = AutomationCore.model_validate(found[0].model_dump())
        copy.name = "svrctl chain: gone after a (success)"
        copy.actions = [a.model_copy(update={"parameters": {"task_id": 999}}) for a in copy.actions]
        await client.create_automation(copy)

    prefect(api, stale)
    report = sync_json(sv)
    assert [(a["op"], a["kind"], a["name"]) for a in report["actions"]] == [
        ("delete", "automation", "svrctl chain: gone after a (success)")
    ]
    now = {n: a.model_dump() for n, a in automations(api).items()}
    assert set(now) == set(before) | {"svrctl chain: c after a (success)"}
    assert all(now[n] == before[n] for n in before)


# ----------------------------------------------------------------------------- end to end


def wait_rows(w: World, task_id: int, count: int, timeout: float = 90.0) -> list[TaskHistory]:
    """Wait until the task has ``count`` finished history rows; say what is missing if not."""
    deadline = time.monotonic() + timeout
    while True:
        done = [r for r in w.env.rows(task_id) if r.finished_at is not None]
        if len(done) >= count:
            return done
        assert time.monotonic() < deadline, (
            f"task {task_id}: {len(done)} of {count} finished runs after {timeout} s "
            f"(is the chain automation firing?)\n{w.worker_log()}"
        )
        time.sleep(0.2)


@pytest.mark.sshd
@SQLITE_ONLY
def test_a_chain_fires(world: World, tmp_path: Path) -> None:
    env = world.env
    world.pool = "svrctl"  # local tasks run on the svrctl pool
    env.ok("sync")  # a fresh start: nothing of earlier tests is left in Prefect
    marker = tmp_path / "marker"
    a = env.add_task("a", "--local", "--command", "true")
    b = env.add_task("b", "--local", "--command", f"echo chained >> {marker}", "--after", "a")
    c = env.add_task("c", "--local", "--command", "true", "--after", "a", "--on", "failure")
    world.start_worker()

    def run_a() -> Any:
        deployment_id = env.task(a).deployment_id
        assert deployment_id
        return world.wait_final(world.trigger(deployment_id))

    # A succeeds: B runs, triggered by the chain; C does not
    first = run_a()
    assert first.state is not None and first.state.type.value == "COMPLETED"
    (row,) = wait_rows(world, b, 1)
    assert row.triggered_by == "chain", row.triggered_by
    assert row.flow_run_id and row.status == "success"
    assert marker.read_text() == "chained\n"
    flow_run = world.flow_run(uuid.UUID(row.flow_run_id))
    assert flow_run.created_by is not None and flow_run.created_by.type == "AUTOMATION"
    assert flow_run.created_by.display_value == "svrctl chain: b after a (success)"
    time.sleep(5)  # C's automation had the time to fire, if it were wrong
    assert env.rows(c) == []

    # A fails: C runs, B does not
    env.ok("task", "edit", "a", "--command", "false")
    second = run_a()
    assert second.state is not None and second.state.type.value == "FAILED"
    (row,) = wait_rows(world, c, 1)
    assert (row.triggered_by, row.status) == ("chain", "success")
    assert row.flow_run_id
    time.sleep(5)
    assert len(env.rows(b)) == 1
    assert marker.read_text() == "chained\n"
