"""Prefect's UI in a real browser: `svrctl up`, a Quick run, and a task made in a form.

Debian's ``chromium`` (never a downloaded browser) is driven by Playwright against one
`svrctl up` on a fresh SVRCTL_HOME, shared by the module's tests:

- a task added with the CLI is Quick-run from its deployment's page (**Run → Quick
  run**); the run completes and its output artifact shows the command's output;
- a task is created through the ``task-add`` admin deployment's **Run → Custom run**
  form, filled as a user would; the task-add run completes, the task and its
  ``run-task`` deployment exist, and a Quick run of the new deployment shows its
  output. A form with a bad cron ends in a Failed run that says why.

A screenshot of each step goes to ``tests/artifacts/browser/`` (``failed.png`` too when
a step fails). The tasks have no schedule: the demo task's deployment runs every minute
and skips (cancels) a run that would overlap, so a Quick run of it could be cancelled.

Without chromium (or Playwright) the tests skip, unless CI is set: then they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from fixtures.processes import stop_groups
from sqlalchemy import select
from test_up import SVRCTL, Lines

from svrctl.db.engine import open_database
from svrctl.db.models import Task, TaskHistory
from svrctl.prefect_server import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
# A loaded 2-core machine: Prefect's first start, the UI's first load and a run
# waiting for the deployment's concurrency slot can each take a minute.
UP_TIMEOUT = 300.0
UI_TIMEOUT_MS = 120_000
RUN_TIMEOUT = 300.0

TASK = "browser-check"
# The output differs from the command's text: finding it proves the output is shown.
COMMAND = 'echo "svrctl-browser-$((20000 + 4242))"'
OUTPUT = "svrctl-browser-24242"

FORM_TASK = "browser-made"
FORM_COMMAND = "echo svrctl-form-$((4000+2))"
FORM_OUTPUT = "svrctl-form-4002"
REFUSED_TASK = "browser-refused"
BAD_CRON = "61 * * * *"


@dataclass
class Up:
    """A running `svrctl up`."""

    ui: str
    home: Path
    env: dict[str, str]
    lines: Lines

    @property
    def api(self) -> str:
        """The Prefect API URL (served on the UI's port)."""
        return f"{self.ui}/api"


def _need(reason: str) -> None:
    """Skip for a missing browser part, or fail when CI is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI is set")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The path of Debian's chromium."""
    path = shutil.which("chromium")
    if path is None:
        _need("Debian's chromium is not installed (scripts/test installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _need("the playwright package is not installed (pip install -e '.[dev]')")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def svrctl_up(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`svrctl up` on a fresh SVRCTL_HOME and a free port, for the whole module."""
    tmp_path = tmp_path_factory.mktemp("browser")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVRCTL_", "PREFECT_"))}
    env |= {
        "SVRCTL_HOME": str(home),
        "SVRCTL_TIMEZONE": "UTC",
        "HOME": str(tmp_path),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    process = subprocess.Popen(
        [SVRCTL, "up", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = Lines(process)
    try:
        ready = lines.wait_for("svrctl is up. Prefect UI: ", timeout=UP_TIMEOUT)
        found = re.search(r"Prefect UI: (http://\S+)", ready)
        assert found, ready
        yield Up(found.group(1), home, env, lines)
    finally:
        stop_groups([process], timeout=120)


@contextlib.contextmanager
def _browser(chromium: str, up: Up) -> Iterator[Page]:
    """A chromium page; on a failure, a screenshot and what the UI and svrctl up said."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.set_default_navigation_timeout(UI_TIMEOUT_MS)
        errors: list[str] = []  # what the UI got back from the API, shown on failure
        page.on(
            "response",
            lambda r: (
                errors.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None
            ),
        )
        page.on("requestfailed", lambda r: errors.append(f"failed {r.method} {r.url}: {r.failure}"))
        try:
            yield page
        except BaseException:
            with contextlib.suppress(Exception):
                _shot(page, "failed")
            print("API errors seen by the UI:", *errors, sep="\n  ")
            print("svrctl up:", *up.lines.lines, sep="\n  ")
            with contextlib.suppress(OSError):
                log = (up.home / "prefect" / "server.log").read_text(errors="replace")
                print("Prefect server log (end):", *log.splitlines()[-60:], sep="\n  ")
            raise
        finally:
            browser.close()


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _wait_final(api: str, run_id: str) -> dict[str, object]:
    """Poll the Prefect API until the flow run is final; return it."""
    deadline = time.monotonic() + RUN_TIMEOUT
    run: dict[str, object] = {}
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
        state = run.get("state") or {}
        assert isinstance(state, dict)
        if state.get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} not final after {RUN_TIMEOUT:g} s: {run}")


def _state(run: dict[str, object]) -> dict[str, object]:
    state = run["state"]
    assert isinstance(state, dict)
    return state


def _manual_runs(api: str, flow: str, deployment: str) -> list[str]:
    """Ids of the flow runs of a deployment that its schedule did not create."""
    found = httpx.post(
        f"{api}/flow_runs/filter",
        json={
            "flows": {"name": {"any_": [flow]}},
            "deployments": {"name": {"any_": [deployment]}},
        },
        timeout=30,
    )
    found.raise_for_status()
    return [str(r["id"]) for r in found.json() if not r["auto_scheduled"]]


def _create_run(page: Page, button: Locator, runs: Callable[[], list[str]], shot: str) -> str:
    """Click a button that creates a flow run, once more if the API failed with a 5xx; its id.

    The UI's generic "Oops. Something went wrong." toast was seen once here on a
    loaded machine, with the dialog still open: a server error with no run created
    is retried once; anything else fails the test.
    """
    before = runs()
    for attempt in (1, 2):
        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run")
        ) as created:
            button.click()
        status = created.value.status
        if status < 500 or attempt == 2:
            assert 200 <= status < 300, f"create_flow_run: HTTP {status} {created.value.text()}"
            return str(created.value.json()["id"])
        assert runs() == before, "a run was created despite the error"
        print(f"the API answered {status} to the first click; clicking again")
        _shot(page, shot)
    raise AssertionError("unreachable")


def _open_deployment(page: Page, ui: str, search: str, name: str, flow: str) -> Locator:
    """Search the deployments page for a deployment; return the link to its page."""
    page.goto(f"{ui}/deployments")
    page.get_by_role("searchbox", name=re.compile("Search deployments")).fill(search)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=flow, exact=True))
    link = row.get_by_role("link", name=name, exact=True)
    link.wait_for()
    return link


def _view_run(page: Page) -> str:
    """Follow the toast's View run link to the new flow run's page; return its id.

    Prefect's UI mounts its toast container twice: the same toast shows in both, and
    the later copy lies on top of the other one.
    """
    page.get_by_role("button", name="View run", exact=True).last.click()
    page.wait_for_url("**/runs/flow-run/**")
    return page.url.split("/runs/flow-run/")[1].split("?")[0]


def _quick_run(page: Page, up: Up, task: str, output: str, shots: tuple[str, ...]) -> str:
    """Quick-run a task's deployment in the UI, see its output artifact; return the run id."""
    api = up.api
    # 1. The deployments page lists the task's deployment.
    link = _open_deployment(page, up.ui, task, task, "run-task")
    _shot(page, shots[0])

    # 2. Its page has the Run menu; Quick run opens the run dialog.
    link.click()
    page.wait_for_url("**/deployments/deployment/**")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("button", name="Quick run", exact=True).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("task_id", exact=True).wait_for()
    _shot(page, shots[1])
    created = _create_run(
        page,
        dialog.get_by_role("button", name="Run", exact=True),
        lambda: _manual_runs(api, "run-task", task),
        f"{shots[1]}-error",
    )

    # 3. The toast links to the new flow run, the one run the click created.
    run_id = _view_run(page)
    _shot(page, shots[2])
    assert run_id == created
    assert _manual_runs(api, "run-task", task) == [run_id]

    # 4. The run completes (the worker of `svrctl up` runs it).
    run = _wait_final(api, run_id)
    assert _state(run)["type"] == "COMPLETED", ("\n".join(up.lines.lines), run)
    page.reload()
    page.get_by_text("Completed", exact=True).first.wait_for()
    # the run is named after its task and start time
    page.get_by_text(re.compile(rf"^{task}-\d{{8}}-\d{{6}}$")).first.wait_for()
    _shot(page, shots[3])

    # 5. The Artifacts tab lists the run's output artifact; it shows the output.
    page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
    # case-sensitive: not the card of the history artifact ("Latest 50 runs of …")
    page.get_by_role("link").filter(has_text=re.compile(f"Run of {task}")).click()
    page.wait_for_url("**/artifacts/artifact/**")
    page.get_by_text(f"✓ {task}: success").wait_for()
    page.get_by_text(output).first.wait_for()
    _shot(page, shots[4])
    return run_id


def _history(up: Up, run_id: str) -> list[TaskHistory]:
    """The app database's history rows of one flow run."""
    db = open_database(f"sqlite:///{up.home}/svrctl.db")
    try:
        with db.read() as s:
            return list(s.scalars(select(TaskHistory).where(TaskHistory.flow_run_id == run_id)))
    finally:
        db.dispose()


def _task_row(up: Up, name: str) -> dict[str, object] | None:
    """Some fields of a task's row in the app database, or None when it has none."""
    db = open_database(f"sqlite:///{up.home}/svrctl.db")
    try:
        with db.read() as s:
            row = s.scalar(select(Task).where(Task.name == name))
            if row is None:
                return None
            fields = ("id", "kind", "command", "schedule", "timezone", "deployment_id")
            return {f: getattr(row, f) for f in fields}
    finally:
        db.dispose()


def _check_history(up: Up, run_id: str, output: str) -> None:
    """The app database recorded the run as started through Prefect's API, with its output."""
    rows = _history(up, run_id)
    assert len(rows) == 1, rows
    assert rows[0].triggered_by == "api"
    assert rows[0].status == "success"
    assert output in rows[0].output


# ----------------------------------------------------------------------------- the form


def _field(page: Page, title: str) -> Locator:
    """The input area of the form field titled ``title``.

    Prefect's form renders each JSON-schema property as a label (the field's title,
    with " (Optional)" when it has a default) above its input; the label is not tied
    to the input for assistive technology, so the field is found by its label's text.
    """
    label = page.locator(":scope > .p-label__header .schema-form-property__label").filter(
        has_text=re.compile(rf"^{re.escape(title)}( \(Optional\))?$")
    )
    return (
        page.locator(".schema-form-property").filter(has=label).locator(":scope > .p-label__body")
    )


def _choose(page: Page, field: Locator, option: str) -> None:
    """Pick an option of a dropdown field (an enum such as the task kind)."""
    # The keyboard opens the dropdown: in headless chromium a mouse click opens it and
    # Prefect's pop-over closes it again at once (the focus moves to its search box).
    field.get_by_role("button").focus()
    page.keyboard.press("ArrowDown")
    page.get_by_role("listbox").get_by_role("option", name=option, exact=True).click()
    field.get_by_role("button", name=option, exact=True).wait_for()


def _fill_text(field: Locator, text: str) -> None:
    """Fill an optional text field, which starts as None: switch it to a string first."""
    field.get_by_role("button", name="str", exact=True).click()
    field.get_by_role("textbox").fill(text)


def _task_add_form(page: Page, up: Up, name: str, command: str, schedule: str) -> None:
    """Open task-add's Custom run form and fill in a local task."""
    _open_deployment(page, up.ui, "task-add", "svrctl", "task-add").click()
    page.wait_for_url("**/deployments/deployment/**")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("button", name="Custom run", exact=True).click()
    page.wait_for_url("**/deployments/deployment/*/run**")
    page.get_by_role("heading", name="Parameters").wait_for()
    _field(page, "Name").get_by_role("textbox").fill(name)
    _choose(page, _field(page, "Kind"), "local")
    _fill_text(_field(page, "Command"), command)
    _field(page, "Schedule").get_by_role("textbox").fill(schedule)
    # Time zone stays None: the worker's SVRCTL_TIMEZONE, as the CLI does.
    _field(page, "Time zone").get_by_role("button", name="None", exact=True).wait_for()


def _submit_task_add(page: Page, up: Up, shot: str) -> dict[str, object]:
    """Submit the form, follow View run to the task-add run; return the run once final."""
    created = _create_run(
        page,
        page.get_by_role("button", name="Submit", exact=True),
        lambda: _manual_runs(up.api, "task-add", "svrctl"),
        f"{shot}-error",
    )
    run_id = _view_run(page)
    assert run_id == created
    run = _wait_final(up.api, run_id)
    page.reload()
    return run


def test_quick_run_from_the_prefect_ui_shows_the_output_artifact(
    chromium: str, svrctl_up: Up
) -> None:
    api = svrctl_up.api
    # A manual-only task; the CLI finds the server of `svrctl up` and syncs its deployment.
    added = subprocess.run(
        [SVRCTL, "task", "add", TASK, "--local", "--command", COMMAND, "--schedule", ""],
        env=svrctl_up.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert httpx.get(f"{api}/deployments/name/run-task/{TASK}", timeout=30).status_code == 200
    # The UI served on this port calls the API on this port (not Prefect's default 4200).
    assert httpx.get(f"{svrctl_up.ui}/ui-settings", timeout=30).json()["api_url"] == api

    with _browser(chromium, svrctl_up) as page:
        run_id = _quick_run(
            page,
            svrctl_up,
            TASK,
            OUTPUT,
            (
                "01-deployments",
                "02-quick-run",
                "03-run-created",
                "04-run-completed",
                "05-output-artifact",
            ),
        )
    _check_history(svrctl_up, run_id, OUTPUT)


def test_task_made_in_the_task_add_form_runs_from_the_ui(chromium: str, svrctl_up: Up) -> None:
    api = svrctl_up.api
    with _browser(chromium, svrctl_up) as page:
        # 1. task-add's Custom run form, filled as a user would, then Submit.
        _task_add_form(page, svrctl_up, FORM_TASK, FORM_COMMAND, "")
        page.set_viewport_size({"width": 1400, "height": 2600})  # the whole form in one shot
        _field(page, "Name").scroll_into_view_if_needed()
        _shot(page, "06-task-add-form")
        page.set_viewport_size({"width": 1400, "height": 900})
        run = _submit_task_add(page, svrctl_up, "06-task-add-form")

        # 2. The task-add run completes; its log says what it did.
        assert _state(run)["type"] == "COMPLETED", ("\n".join(svrctl_up.lines.lines), run)
        # what the form sent: the typed values, and no time zone (None)
        sent = run["parameters"]
        assert isinstance(sent, dict)
        assert {
            k: sent["task"][k] for k in ("name", "kind", "command", "schedule", "timezone")
        } == {
            "name": FORM_TASK,
            "kind": "local",
            "command": FORM_COMMAND,
            "schedule": "",
            "timezone": None,
        }
        page.get_by_text("Completed", exact=True).first.wait_for()
        page.get_by_text(f"✓ added task {FORM_TASK} (local, manual)").first.wait_for()
        _shot(page, "07-task-add-completed")

        # The task is in the app database as typed, and its run-task deployment exists.
        task = _task_row(svrctl_up, FORM_TASK)
        assert task is not None
        assert (task["kind"], task["command"], task["schedule"]) == ("local", FORM_COMMAND, "")
        assert task["timezone"] == "UTC"  # the worker's SVRCTL_TIMEZONE
        found = httpx.get(f"{api}/deployments/name/run-task/{FORM_TASK}", timeout=30)
        assert found.status_code == 200, found.text
        deployment = found.json()
        assert deployment["id"] == task["deployment_id"]
        assert deployment["parameters"] == {"task_id": task["id"]}
        assert deployment["schedules"] == []

        # 3. The new deployment runs from the UI and shows the command's output.
        run_id = _quick_run(
            page,
            svrctl_up,
            FORM_TASK,
            FORM_OUTPUT,
            (
                "08-form-task-deployments",
                "09-form-task-quick-run",
                "10-form-task-run-created",
                "11-form-task-run-completed",
                "12-form-task-output-artifact",
            ),
        )

        # 4. A bad cron in the form: the task-add run fails and says why; nothing is added.
        _task_add_form(page, svrctl_up, REFUSED_TASK, FORM_COMMAND, BAD_CRON)
        refused = _submit_task_add(page, svrctl_up, "13-task-add-refused")
        state = _state(refused)
        assert state["type"] == "FAILED", refused
        message = str(state["message"])
        assert message.startswith(f"invalid schedule: invalid cron expression '{BAD_CRON}'")
        assert "value 61 is out of range 0-59" in message
        page.get_by_text("Failed", exact=True).first.wait_for()
        page.get_by_text(message).first.wait_for()
        _shot(page, "13-task-add-refused")
    _check_history(svrctl_up, run_id, FORM_OUTPUT)
    assert _task_row(svrctl_up, REFUSED_TASK) is None
    missing = httpx.get(f"{api}/deployments/name/run-task/{REFUSED_TASK}", timeout=30)
    assert missing.status_code == 404
