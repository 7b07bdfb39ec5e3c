"""``task add/edit --after/--on/--only-if``: what is stored, and every refusal."""

from __future__ import annotations

import json

import pytest
from conftest import Invoke


@pytest.fixture
def tasks(svrctl: Invoke) -> Invoke:
    for name in ("a", "b", "c"):
        r = svrctl("task", "add", name, "--local", "--command", "true")
        assert r.exit_code == 0, r.output
    return svrctl


def _show(svrctl: Invoke, name: str) -> dict[str, object]:
    r = svrctl("task", "show", name, "--json")
    assert r.exit_code == 0, r.output
    data: dict[str, object] = json.loads(r.output)
    return data


def test_after_defaults_to_success_and_shows_both_ways(tasks: Invoke) -> None:
    r = tasks("task", "edit", "b", "--after", "a")
    assert r.exit_code == 0, r.output
    assert "after a (success)" in r.output
    b = _show(tasks, "b")
    assert (b["after"], b["after_on"]) == ("a", "success")
    assert _show(tasks, "a")["chained_after"] == ["b"]
    listing = tasks("task", "list")
    assert "after a" in listing.output
    rows = {t["name"]: t for t in json.loads(tasks("task", "list", "--json").output)}
    assert rows["b"]["after"] == "a" and rows["a"]["after"] is None


@pytest.mark.parametrize("on", ["success", "failure", "any"])
def test_add_with_after_and_on(tasks: Invoke, on: str) -> None:
    r = tasks("task", "add", "d", "--local", "--command", "true", "--after", "a", "--on", on)
    assert r.exit_code == 0, r.output
    assert _show(tasks, "d")["after_on"] == on


def test_unchaining_drops_the_condition(tasks: Invoke) -> None:
    assert tasks("task", "edit", "b", "--after", "a", "--on", "failure").exit_code == 0
    r = tasks("task", "edit", "b", "--after", "")
    assert r.exit_code == 0, r.output
    b = _show(tasks, "b")
    assert (b["after"], b["after_on"]) == (None, None)


def test_on_without_after_is_refused(tasks: Invoke) -> None:
    r = tasks("task", "edit", "b", "--on", "failure")
    assert r.exit_code == 2
    assert "give the task it runs after" in r.output
    assert _show(tasks, "b")["after_on"] is None


def test_after_an_unknown_task(tasks: Invoke) -> None:
    r = tasks("task", "edit", "b", "--after", "nope")
    assert r.exit_code != 0
    assert "no task named 'nope' to run after" in r.output
    assert _show(tasks, "b")["after"] is None


def test_a_task_cannot_run_after_itself(tasks: Invoke) -> None:
    r = tasks("task", "edit", "a", "--after", "a")
    assert r.exit_code == 2
    assert "cannot run after itself" in r.output


def test_a_loop_is_refused_naming_it(tasks: Invoke) -> None:
    assert tasks("task", "edit", "b", "--after", "a").exit_code == 0
    assert tasks("task", "edit", "c", "--after", "b").exit_code == 0
    r = tasks("task", "edit", "a", "--after", "c")
    assert r.exit_code == 2
    assert "makes a loop (a after c after b after a)" in r.output
    assert _show(tasks, "a")["after"] is None


def test_a_task_others_run_after_cannot_be_removed(tasks: Invoke) -> None:
    assert tasks("task", "edit", "b", "--after", "a").exit_code == 0
    r = tasks("task", "rm", "a")
    assert r.exit_code != 0
    assert "b runs after it" in r.output and "svrctl task edit b --after ''" in r.output
    assert _show(tasks, "a")["name"] == "a"
    assert tasks("task", "edit", "b", "--after", "").exit_code == 0
    assert tasks("task", "rm", "a").exit_code == 0


def test_only_if_is_stored_and_cleared(tasks: Invoke) -> None:
    r = tasks("task", "edit", "a", "--only-if", "test -e /etc/hostname")
    assert r.exit_code == 0, r.output
    assert "only if `test -e /etc/hostname` succeeds" in r.output
    assert _show(tasks, "a")["only_if"] == "test -e /etc/hostname"
    assert tasks("task", "edit", "a", "--only-if", "").exit_code == 0
    assert _show(tasks, "a")["only_if"] is None


def test_only_if_with_a_nul_byte_is_refused(tasks: Invoke) -> None:
    r = tasks("task", "edit", "a", "--only-if", "true\0false")
    assert r.exit_code == 2
    assert "NUL" in r.output
