"""Reconcile Prefect with the app database: every task becomes one ``run-task`` deployment.

``svrctl sync`` (and the automatic sync after ``svrctl task add/edit/rm/enable/disable``)
compares what the app database says with what Prefect holds, and writes only the
difference:

* one deployment of the ``run-task`` flow per task, named after the task, with the
  parameters ``{"task_id": ID}``, the task's description, the tags ``svrctl``,
  ``server:NAME`` / ``servers:TAG`` / ``plugin:NAME``, the task's schedule translated
  exactly (:mod:`svrctl.schedules`) and active only while the task is enabled (the
  deployment is paused while it is disabled), the work pool of the task's server (else
  ``svrctl``) and its ``default`` queue, and a deployment concurrency limit of 1 whose
  collision strategy follows the task's overlap policy;
* one global concurrency limit ``svrctl-server-NAME`` per server with a
  ``max_concurrent`` setting, which the executor holds around each step on that server;
* the work pools those deployments need (type ``svrctl``), when they are missing;
* one Prefect automation per chained task (``svrctl task add B --after A --on ...``),
  which runs B's deployment when a run of A's deployment ends that way (see
  docs/chains.md). svrctl's automations carry the tag ``svrctl-chain`` and a name that
  starts with ``svrctl chain:``; no other automation is ever read into the plan.

Only deployments of ``run-task`` that carry the ``svrctl`` tag are managed: sync never
updates or deletes any other deployment, and refuses to create a deployment whose name
is taken by an unmanaged one. Nothing is written when nothing differs, so a re-sync keeps
every deployment id, schedule id, paused state and scheduled run. Every redeploy trap of
Prefect 3 is avoided on purpose: schedules carry the slug ``svrctl`` and are updated in
place (same id), ``active`` is always sent, and only changed fields are sent.

This module imports Prefect only inside the functions that talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from svrctl.db.engine import Database
from svrctl.db.models import ChainOn, OverlapPolicy, Server, Task, TaskKind
from svrctl.exceptions import BadInputError, SvrctlError
from svrctl.prefect_api import ApiTarget, find_api
from svrctl.schedules import PrefectScheduleSpec, to_prefect_schedule
from svrctl.settings import Settings

if TYPE_CHECKING:
    import httpx
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse

__all__ = [
    "CHAIN_EVENTS",
    "CHAIN_PREFIX",
    "CHAIN_TAG",
    "DEFAULT_WORK_POOL",
    "DEFAULT_WORK_QUEUE",
    "ENTRYPOINT",
    "FLOW_NAME",
    "MANAGED_TAG",
    "SCHEDULE_SLUG",
    "SERVER_LIMIT_PREFIX",
    "Action",
    "ApiTarget",
    "ChainSpec",
    "DeploymentSpec",
    "Desired",
    "LimitSpec",
    "PrefectUnreachableError",
    "Scope",
    "SyncReport",
    "chain_automation_name",
    "desired_state",
    "find_api",
    "require_api",
    "server_limit_name",
    "sync",
    "sync_all",
    "sync_async",
]

MANAGED_TAG = "svrctl"
FLOW_NAME = "run-task"
ENTRYPOINT = "svrctl.flows.run_task:run_task"
DEFAULT_WORK_POOL = "svrctl"
WORK_POOL_TYPE = "svrctl"
DEFAULT_WORK_QUEUE = "default"
SCHEDULE_SLUG = "svrctl"
SERVER_LIMIT_PREFIX = "svrctl-server-"
# A chain's automation: svrctl manages the automations with this tag whose name starts
# with this prefix, and no other.
CHAIN_TAG = "svrctl-chain"
CHAIN_PREFIX = "svrctl chain: "
# The flow-run state events (prefect.flow-run.<state name>) that end a run each way. A
# run skipped by its --only-if check ends Completed with the name Skipped
# (prefect.flow-run.Skipped): it starts no chain. A Cancelled run starts none either.
_SUCCESS_EVENTS = frozenset({"prefect.flow-run.Completed"})
_FAILURE_EVENTS = frozenset(
    {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
)
CHAIN_EVENTS: dict[str, frozenset[str]] = {
    ChainOn.SUCCESS.value: _SUCCESS_EVENTS,
    ChainOn.FAILURE.value: _FAILURE_EVENTS,
    ChainOn.ANY.value: _SUCCESS_EVENTS | _FAILURE_EVENTS,
}
# Rows per read request: Prefect's default and largest page (PREFECT_SERVER_API_DEFAULT_LIMIT).
PAGE_SIZE = 200
# Write requests in flight at once. Prefect's server (on SQLite above all) serialises
# writes anyway; a few in flight hide the round trips without piling up lock waits.
MAX_PARALLEL_WRITES = 4
# Retries of a request Prefect's server answered 503 (its database was busy).
BUSY_RETRIES = 8
BUSY_FIRST_WAIT = 0.05
BUSY_MAX_WAIT = 1.0

Op = Literal["create", "update", "delete"]
Kind = Literal["deployment", "concurrency-limit", "work-pool", "flow", "automation"]


class PrefectUnreachableError(SvrctlError):
    """No Prefect API answers, so nothing can be synced."""

    exit_code = 2


# --- where Prefect is --------------------------------------------------------------------


def require_api(settings: Settings) -> str:
    """Return the URL of a Prefect API that answers, or raise PrefectUnreachableError."""
    target = find_api(settings)
    if target.url is None:
        raise PrefectUnreachableError(
            f"cannot sync: {target.problem}. Start Prefect (`svrctl up`) or point "
            "PREFECT_API_URL at a running Prefect server, then run `svrctl sync` again."
        )
    return target.url


# --- what the app database wants ---------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What a partial sync may touch (the automatic sync after one command).

    Attributes:
        task_ids: Tasks whose deployments are reconciled.
        names: Deployment names to look at: current and former task names. A name
            that belongs to no task in the scope is deleted if svrctl manages it.
        deployment_ids: Deployment ids recorded for the tasks (found even after a rename).
        servers: Servers whose global concurrency limit is reconciled.
    """

    task_ids: frozenset[int] = frozenset()
    names: frozenset[str] = frozenset()
    deployment_ids: frozenset[str] = frozenset()
    servers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DeploymentSpec:
    """The deployment one task should have."""

    task_id: int
    name: str
    description: str
    tags: tuple[str, ...]
    schedule: PrefectScheduleSpec | None
    enabled: bool
    work_pool: str
    work_queue: str
    collision_strategy: str
    stored_id: str | None

    def summary(self) -> str:
        """Describe the deployment in one line for the plan."""
        if self.schedule is None:
            when = "no schedule"
        elif self.schedule.kind == "cron":
            when = f"cron '{self.schedule.cron}' ({self.schedule.timezone})"
        else:
            when = f"rrule ({self.schedule.timezone})"
        state = "" if self.enabled else ", paused"
        return f"{when}, pool {self.work_pool}, {self.collision_strategy.lower()}{state}"


@dataclass(frozen=True)
class LimitSpec:
    """The global concurrency limit one server should have."""

    name: str
    server: str
    limit: int


@dataclass(frozen=True)
class ChainSpec:
    """The automation of one chained task: run ``task`` when a run of ``after`` ends ``on``."""

    task_id: int
    task: str
    after: str
    on: str
    enabled: bool

    @property
    def name(self) -> str:
        """Return the automation's name."""
        return chain_automation_name(self.task, self.after, self.on)

    def summary(self) -> str:
        """Describe the automation in one line for the plan."""
        state = "" if self.enabled else ", disabled"
        return f"runs {self.task} when a run of {self.after} {_ON_TEXT[self.on]}{state}"


_ON_TEXT = {
    ChainOn.SUCCESS.value: "succeeds",
    ChainOn.FAILURE.value: "fails, crashes or times out",
    ChainOn.ANY.value: "succeeds or fails",
}


def chain_automation_name(task: str, after: str, on: str) -> str:
    """Return the name of the automation that runs ``task`` after ``after`` (``on``)."""
    return f"{CHAIN_PREFIX}{task} after {after} ({on})"


@dataclass
class Desired:
    """Everything the app database wants in Prefect (or in the scope of a partial sync).

    Attributes:
        chains: The automations wanted, by the id of the chained task.
        chain_scope: The task ids whose automations are reconciled (None: all of them,
            and every automation svrctl manages that no task wants is deleted).
        related: Names of tasks outside ``deployments`` whose deployment ids the chains
            need: they are read, never changed.
    """

    deployments: dict[str, DeploymentSpec]
    limits: dict[str, LimitSpec] | None
    problems: list[str]
    keep: set[str]
    scope: Scope | None
    task_names: frozenset[str]
    chains: dict[int, ChainSpec] = field(default_factory=dict)
    chain_scope: frozenset[int] | None = None
    related: frozenset[str] = frozenset()


def server_limit_name(server: str) -> str:
    """Return the name of a server's global concurrency limit in Prefect."""
    return f"{SERVER_LIMIT_PREFIX}{server}"


def desired_state(session: Session, scope: Scope | None = None) -> Desired:
    """Read the app database and describe the deployments and limits it wants.

    Args:
        session: An open app database session.
        scope: Limit the answer to some tasks and servers; None means everything.

    Returns:
        The wanted deployments by name, the wanted limits by name (None when limits
        are out of scope), and problems: tasks whose schedule Prefect cannot run
        exactly, whose current deployment (in ``keep``) is then left as it is.
    """
    servers = list(session.scalars(select(Server)))
    by_id = {s.id: s for s in servers}
    query = select(Task)
    if scope is not None:
        query = query.where(or_(Task.id.in_(scope.task_ids), Task.name.in_(scope.names)))
    deployments: dict[str, DeploymentSpec] = {}
    problems: list[str] = []
    keep: set[str] = set()
    translated: dict[tuple[str, str], PrefectScheduleSpec | str] = {}
    for task in session.scalars(query.order_by(Task.name)):
        schedule: PrefectScheduleSpec | None = None
        if task.schedule:
            key = (task.schedule, task.timezone)
            if key not in translated:
                try:
                    translated[key] = to_prefect_schedule(task.schedule, task.timezone)
                except BadInputError as exc:
                    translated[key] = exc.message
            found = translated[key]
            if isinstance(found, str):
                problems.append(
                    f"task {task.name} was not synced: {found} "
                    f"(change it with `svrctl task edit {task.name} --schedule ...`)"
                )
                keep.add(task.name)
                continue
            schedule = found
        server = by_id.get(task.server_id) if task.server_id is not None else None
        deployments[task.name] = DeploymentSpec(
            task_id=task.id,
            name=task.name,
            description=task.description or "",
            tags=_tags(task, server),
            schedule=schedule,
            enabled=task.enabled,
            work_pool=_work_pool(task, server, servers),
            work_queue=DEFAULT_WORK_QUEUE,
            collision_strategy=(
                "ENQUEUE" if task.overlap_policy == OverlapPolicy.QUEUE.value else "CANCEL_NEW"
            ),
            stored_id=task.deployment_id,
        )
    limits: dict[str, LimitSpec] | None = None
    if scope is None or scope.servers:
        limits = {}
        for s in servers:
            if s.max_concurrent and (scope is None or s.name in scope.servers):
                name = server_limit_name(s.name)
                limits[name] = LimitSpec(name, s.name, s.max_concurrent)
    names = frozenset(session.scalars(select(Task.name))) if scope is not None else frozenset()
    chains, chain_scope = _chains(session, scope)
    wanted_names = {c.task for c in chains.values()} | {c.after for c in chains.values()}
    related = frozenset(wanted_names - set(deployments))
    return Desired(deployments, limits, problems, keep, scope, names, chains, chain_scope, related)


def _chains(
    session: Session, scope: Scope | None
) -> tuple[dict[int, ChainSpec], frozenset[int] | None]:
    """Read the chained tasks (in a partial sync: the scope's tasks and those run after them)."""
    if scope is None:
        chained = list(session.scalars(select(Task).where(Task.after_task_id.is_not(None))))
        chain_scope = None
    else:
        in_scope = set(scope.task_ids) | set(
            session.scalars(select(Task.id).where(Task.name.in_(scope.names)))
        )
        # a task run after a task of the scope needs that task's (maybe new) deployment id
        chained = list(
            session.scalars(
                select(Task).where(
                    or_(Task.id.in_(in_scope), Task.after_task_id.in_(in_scope)),
                    Task.after_task_id.is_not(None),
                )
            )
        )
        chain_scope = frozenset(in_scope | {t.id for t in chained})
    others = {t.after_task_id for t in chained}
    names: dict[int | None, str] = {
        task_id: name
        for task_id, name in session.execute(select(Task.id, Task.name).where(Task.id.in_(others)))
    }
    chains = {
        t.id: ChainSpec(
            task_id=t.id,
            task=t.name,
            after=names[t.after_task_id],
            on=t.after_on or ChainOn.SUCCESS.value,
            enabled=t.enabled,
        )
        for t in chained
        if t.after_task_id in names
    }
    return chains, chain_scope


def _tags(task: Task, server: Server | None) -> tuple[str, ...]:
    """Tags: svrctl, server:NAME (one server), servers:TAG (a tag), plugin:NAME."""
    tags = {MANAGED_TAG}
    if server is not None:
        tags.add(f"server:{server.name}")
    if task.server_tag:
        tags.add(f"servers:{task.server_tag}")
    if task.kind == TaskKind.PLUGIN.value and task.plugin:
        tags.add(f"plugin:{task.plugin}")
    return tuple(sorted(tags))


def _work_pool(task: Task, server: Server | None, servers: list[Server]) -> str:
    """The server's pool; for a tag, the pool all its enabled servers share; else the default."""
    if server is not None:
        return server.work_pool or DEFAULT_WORK_POOL
    if task.server_tag:
        pools = {s.work_pool for s in servers if s.enabled and task.server_tag in (s.tags or [])}
        if len(pools) == 1:
            (pool,) = pools
            return pool or DEFAULT_WORK_POOL
    return DEFAULT_WORK_POOL


# --- the plan ----------------------------------------------------------------------------


@dataclass
class Action:
    """One change to Prefect.

    Attributes:
        op: create, update or delete.
        kind: deployment, concurrency-limit, work-pool, flow or automation.
        name: The object's name.
        task: The task a deployment or chain automation belongs to (None for other
            objects, or one whose task is gone).
        id: The object's id in Prefect, when it exists.
        changes: For an update, the fields that differ.
        detail: A short description for the plan.
        error: Why applying it failed (None: not applied yet, or applied).
        done: Whether it was applied.
    """

    op: Op
    kind: Kind
    name: str
    task: str | None = None
    id: str | None = None
    changes: list[str] = field(default_factory=list)
    detail: str = ""
    error: str | None = None
    done: bool = False
    spec: DeploymentSpec | None = field(default=None, repr=False)
    limit: int | None = field(default=None, repr=False)
    update: dict[str, Any] = field(default_factory=dict, repr=False)
    drop_schedules: list[str] = field(default_factory=list, repr=False)
    body: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the action as JSON-ready data."""
        return {
            "op": self.op,
            "kind": self.kind,
            "name": self.name,
            "task": self.task,
            "id": self.id,
            "changes": self.changes,
            "detail": self.detail,
            "done": self.done,
            "error": self.error,
        }

    def line(self) -> str:
        """Return the action as one line of the plan."""
        sign = {"create": "+", "update": "~", "delete": "-"}[self.op]
        what = {
            "deployment": f"deployment {FLOW_NAME}/{self.name}",
            "concurrency-limit": f"concurrency limit {self.name}",
            "work-pool": f"work pool {self.name}",
            "flow": f"flow {self.name}",
            "automation": f"automation '{self.name}'",
        }[self.kind]
        extra = f": {', '.join(self.changes)}" if self.changes else ""
        detail = f" ({self.detail})" if self.detail else ""
        text = f"{sign} {what}{extra}{detail}"
        if self.error:
            text += f"  FAILED: {self.error}"
        return text


@dataclass
class SyncReport:
    """What a sync found and did.

    Attributes:
        api_url: The Prefect API.
        dry_run: True when nothing was written.
        actions: The changes, in the order they were planned.
        unchanged: Deployments, limits and chain automations that already matched.
        problems: Tasks that could not be synced, and why.
        reads: Read requests sent to Prefect.
        writes: Write requests sent to Prefect (0 for a dry run or a no-op).
        seconds: Wall time of the whole sync.
        deployment_ids: The deployment id of each task's deployment, by name.
    """

    api_url: str
    dry_run: bool
    actions: list[Action]
    unchanged: int
    problems: list[str]
    reads: int = 0
    writes: int = 0
    seconds: float = 0.0
    deployment_ids: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[Action]:
        """Return the actions that could not be applied."""
        return [a for a in self.actions if a.error]

    @property
    def ok(self) -> bool:
        """True when every task was synced and every action applied."""
        return not self.problems and not self.failed

    def summary(self) -> str:
        """Return the outcome in a few words, such as '2 created, 1 updated, 0 deleted'."""
        done = {"create": 0, "update": 0, "delete": 0}
        for a in self.actions:
            if a.done or self.dry_run:
                done[a.op] += 1
        verbs = (
            ("to create", "to update", "to delete")
            if self.dry_run
            else (
                "created",
                "updated",
                "deleted",
            )
        )
        text = ", ".join(f"{n} {v}" for n, v in zip(done.values(), verbs, strict=True))
        text += f", {self.unchanged} unchanged"
        problems = len(self.failed) + len(self.problems)
        return text + (f", {problems} not synced (run `svrctl sync`)" if problems else "")

    def counts(self) -> dict[str, int]:
        """Count the actions by operation."""
        out = {"create": 0, "update": 0, "delete": 0}
        for a in self.actions:
            out[a.op] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "api_url": self.api_url,
            "dry_run": self.dry_run,
            "counts": self.counts() | {"unchanged": self.unchanged},
            "actions": [a.to_dict() for a in self.actions],
            "problems": self.problems,
            "reads": self.reads,
            "writes": self.writes,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
        }


# --- talking to Prefect ------------------------------------------------------------------


@dataclass(frozen=True)
class _Deployment:
    """A deployment as Prefect's API returns it, as JSON.

    Not validated into Prefect's models: 1,000 of them take about half a second to
    validate, and sync compares only a few fields.
    """

    raw: dict[str, Any]

    @property
    def id(self) -> str:
        """Return the deployment id."""
        return str(self.raw["id"])

    @property
    def name(self) -> str:
        """Return the deployment name."""
        return str(self.raw["name"])

    @property
    def flow_id(self) -> str:
        """Return the flow id."""
        return str(self.raw["flow_id"])

    @property
    def tags(self) -> list[str]:
        """Return the tags."""
        return list(self.raw.get("tags") or [])

    @property
    def schedules(self) -> list[dict[str, Any]]:
        """Return the schedules (id, slug, active, parameters, schedule)."""
        return list(self.raw.get("schedules") or [])

    @property
    def limit_name(self) -> str | None:
        """Return the name of the deployment's own concurrency limit, if it has one."""
        gcl = self.raw.get("global_concurrency_limit")
        return str(gcl["name"]) if gcl else None


@dataclass
class _Current:
    """What Prefect holds.

    ``automations`` are svrctl's chain automations by the id of the task they run
    (several when duplicated), ``stray`` those of them that run no task at all; both
    are None when automations were not read.
    """

    deployments: dict[str, _Deployment]
    limits: dict[str, GlobalConcurrencyLimitResponse] | None
    duplicates: list[_Deployment] = field(default_factory=list)
    automations: dict[int, list[dict[str, Any]]] | None = None
    stray: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Counter:
    """Counts the HTTP requests a client sends, split into reads and writes."""

    reads: int = 0
    writes: int = 0
    log: list[str] = field(default_factory=list)

    async def hook(self, request: httpx.Request) -> None:
        """Count one request (an httpx request hook)."""
        path = request.url.path
        read = request.method == "GET" or path.endswith(("/filter", "/count"))
        if read:
            self.reads += 1
        else:
            self.writes += 1
            self.log.append(f"{request.method} {path}")


def _client(url: str, counter: _Counter) -> PrefectClient:
    """A Prefect client that counts its requests and retries 'database busy' answers quickly."""
    import httpx
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    client = PrefectClient(
        url,
        api_key=api.key.get_secret_value() if api.key else None,
        auth_string=api.auth_string.get_secret_value() if api.auth_string else None,
        httpx_settings={"event_hooks": {"request": [counter.hook]}},
    )
    # Prefect's client waits 2, 4, 8 ... s before it retries a 503, which its server
    # answers when SQLite is busy (often, while its scheduler inserts runs). Such a
    # request was rolled back and succeeds milliseconds later: retry it below the
    # client, with Prefect's own transport (TLS, HTTP/2, limits) kept as it is.
    http = getattr(client, "_client", None)
    inner = getattr(http, "_transport", None)
    if isinstance(inner, httpx.AsyncBaseTransport):
        http._transport = _BusyRetry(inner)  # type: ignore[union-attr]
    return client


class _BusyRetry:
    """An httpx transport that retries 503 answers a few times, with short waits."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send the request; resend it while the server answers 503, up to BUSY_RETRIES."""
        import random

        delay = BUSY_FIRST_WAIT
        for _ in range(BUSY_RETRIES):
            response = await self._inner.handle_async_request(request)
            if response.status_code != 503:
                return response
            await response.aclose()
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 (jitter)
            delay = min(delay * 2, BUSY_MAX_WAIT)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()

    async def __aenter__(self) -> _BusyRetry:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)


def sync(
    db: Database,
    api_url: str,
    *,
    dry_run: bool = False,
    scope: Scope | None = None,
    max_parallel: int = MAX_PARALLEL_WRITES,
) -> SyncReport:
    """Make Prefect match the app database, writing only what differs.

    Args:
        db: The app database.
        api_url: A Prefect API that answers (see :func:`require_api`).
        dry_run: Plan only: read Prefect, write nothing anywhere.
        scope: Reconcile only these tasks and servers (None: everything, and
            delete every managed deployment and limit that no task or server wants).
        max_parallel: Write requests in flight at once.

    Returns:
        The plan, what was applied, and what failed.
    """
    return asyncio.run(
        sync_async(db, api_url, dry_run=dry_run, scope=scope, max_parallel=max_parallel)
    )


async def sync_async(
    db: Database,
    api_url: str,
    *,
    dry_run: bool = False,
    scope: Scope | None = None,
    max_parallel: int = MAX_PARALLEL_WRITES,
) -> SyncReport:
    """Do what :func:`sync` does, from async code; the app database is used in a thread."""
    started = time.monotonic()

    def read() -> Desired:
        with db.read() as session:
            return desired_state(session, scope)

    desired, report = await _sync(read, scope, api_url, dry_run=dry_run, max_parallel=max_parallel)
    if not dry_run:
        await asyncio.to_thread(_remember_ids, db, desired, report)
    report.seconds = time.monotonic() - started
    return report


async def sync_all(db: Database, api_url: str | None = None) -> SyncReport:
    """Sync everything against ``api_url``, else the API Prefect's settings point at.

    For ``svrctl up``, which has just started (or found) the Prefect server.

    Raises:
        PrefectUnreachableError: No API URL is given or configured.
    """
    if api_url is None:
        from prefect.settings import get_current_settings

        configured = get_current_settings().api.url
        if not configured:
            raise PrefectUnreachableError("cannot sync: PREFECT_API_URL is not set")
        api_url = str(configured)
    return await sync_async(db, api_url)


async def _sync(
    read: Callable[[], Desired],
    scope: Scope | None,
    url: str,
    *,
    dry_run: bool,
    max_parallel: int,
) -> tuple[Desired, SyncReport]:
    counter = _Counter()
    async with _client(url, counter) as client:
        if scope is None:
            # Read the app database (and translate the schedules) while Prefect answers.
            reading = asyncio.ensure_future(asyncio.to_thread(read))
            try:
                current = await _read_current(client, None, set())
            finally:
                desired = await reading
        else:
            desired = await asyncio.to_thread(read)
            current = await _read_current(
                client,
                scope,
                set(desired.deployments) | desired.related,
                automations=bool(desired.chain_scope),
            )
        actions, unchanged = _plan(desired, current)
        creates = [a.name for a in actions if a.kind == "deployment" and a.op == "create"]
        problems = list(desired.problems)
        if creates:
            taken = await _unmanaged_names(client, creates)
            for name in sorted(taken):
                problems.append(
                    f"task {name} was not synced: a deployment {FLOW_NAME}/{name} exists that "
                    f"svrctl does not manage (it has no '{MANAGED_TAG}' tag); rename the task, "
                    "or delete that deployment in Prefect"
                )
            actions = [a for a in actions if not (a.op == "create" and a.name in taken)]
        flow_id = _flow_id(current)
        needs_flow = any(a.kind == "deployment" and a.op == "create" for a in actions)
        if needs_flow and flow_id is None:
            flow_id = await _read_flow_id(client)
            if flow_id is None:
                actions.insert(0, Action("create", "flow", FLOW_NAME))
        pools = await _missing_pools(client, actions)
        actions[:0] = [
            Action("create", "work-pool", p, detail=f"type {WORK_POOL_TYPE}") for p in pools
        ]
        report = SyncReport(url, dry_run, actions, unchanged, problems)
        report.deployment_ids = {
            name: str(d.id)
            for name, d in current.deployments.items()
            if name in desired.deployments
        }
        if not dry_run and actions:
            await _apply(client, actions, flow_id, max_parallel)
            report.deployment_ids |= {
                a.name: a.id
                for a in actions
                if a.kind == "deployment" and a.op == "create" and a.done and a.id
            }
        # Chains last: their automations need the ids of the deployments just created.
        ids = _deployment_ids_after(current, actions, dry_run)
        chain_actions, chain_unchanged, chain_problems = _plan_chains(desired, current, ids)
        report.actions += chain_actions
        report.unchanged += chain_unchanged
        report.problems += chain_problems
        if not dry_run and chain_actions:
            await _apply_automations(client, chain_actions, max_parallel)
    report.reads, report.writes = counter.reads, counter.writes
    return desired, report


async def _read_current(
    client: PrefectClient, scope: Scope | None, wanted: set[str], *, automations: bool = True
) -> _Current:
    if automations:
        reading = asyncio.ensure_future(_read_chain_automations(client))
        try:
            current = await _read_current_deployments(client, scope, wanted)
        finally:
            current_automations, stray = await reading
        current.automations, current.stray = current_automations, stray
        return current
    return await _read_current_deployments(client, scope, wanted)


async def _read_chain_automations(
    client: PrefectClient,
) -> tuple[dict[int, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Read svrctl's chain automations: by the task id they run, and those that run none."""
    body = {"automations": {"tags": {"all_": [CHAIN_TAG]}}, "sort": "NAME_ASC"}
    rows: list[dict[str, Any]] = []
    while True:
        response = await client.request(
            "POST", "/automations/filter", json=body | {"limit": PAGE_SIZE, "offset": len(rows)}
        )
        page: list[dict[str, Any]] = response.json()
        rows += page
        if len(page) < PAGE_SIZE:
            break
    by_task: dict[int, list[dict[str, Any]]] = {}
    stray: list[dict[str, Any]] = []
    for row in rows:
        if not str(row.get("name", "")).startswith(CHAIN_PREFIX):
            continue  # tagged by someone else: not svrctl's
        task_id = _chain_task_id(row)
        if task_id is None:
            stray.append(row)
        else:
            by_task.setdefault(task_id, []).append(row)
    return by_task, stray


def _chain_task_id(row: dict[str, Any]) -> int | None:
    """Return the task id a chain automation runs (its run-deployment action's task_id)."""
    for action in row.get("actions") or []:
        if isinstance(action, dict) and action.get("type") == "run-deployment":
            task_id = (action.get("parameters") or {}).get("task_id")
            if isinstance(task_id, int) and not isinstance(task_id, bool):
                return task_id
    return None


async def _read_current_deployments(
    client: PrefectClient, scope: Scope | None, wanted: set[str]
) -> _Current:
    limits: dict[str, GlobalConcurrencyLimitResponse] | None = None
    if scope is None:
        found = await _read_deployments(client, None, wanted)
        # Every managed deployment owns a limit named 'deployment:ID', which sorts before
        # every 'svrctl-server-*' name: reading from that offset skips them all.
        owned = sum(1 for d in found if (d.limit_name or "").startswith("deployment:"))
        limits = await _read_server_limits(client, owned)
    elif scope.servers:
        names = [server_limit_name(s) for s in sorted(scope.servers)]
        found, limits = await asyncio.gather(
            _read_deployments(client, scope, wanted), _read_limits(client, names)
        )
    else:
        found = await _read_deployments(client, scope, wanted)
    by_name: dict[str, _Deployment] = {}
    duplicates: list[_Deployment] = []
    for d in found:
        if d.name in by_name:
            duplicates.append(d)  # cannot happen in Prefect (unique per flow), but be safe
        else:
            by_name[d.name] = d
    return _Current(by_name, limits, duplicates)


async def _read_deployments(
    client: PrefectClient, scope: Scope | None, wanted: set[str]
) -> list[_Deployment]:
    """Read the managed deployments (all of them, or those a scope names)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        DeploymentFilterName,
        DeploymentFilterTags,
        FlowFilter,
        FlowFilterName,
        Operator,
    )
    from prefect.client.schemas.sorting import DeploymentSort

    flows = FlowFilter(name=FlowFilterName(any_=[FLOW_NAME]))
    if scope is None:
        dfilter = DeploymentFilter(tags=DeploymentFilterTags(all_=[MANAGED_TAG]))
    else:
        ids = sorted(scope.deployment_ids)
        dfilter = DeploymentFilter(  # type: ignore[call-arg]
            operator=Operator.or_,
            name=DeploymentFilterName(any_=sorted(scope.names | wanted)),
            id=DeploymentFilterId(any_=ids) if ids else None,  # type: ignore[arg-type]
        )

    body = {"flows": flows.model_dump(mode="json"), "deployments": dfilter.model_dump(mode="json")}

    async def page(offset: int) -> list[_Deployment]:
        # the same request as client.read_deployments, without validating ~1,000 models
        response = await client.request(
            "POST",
            "/deployments/filter",
            json=body
            | {"sort": DeploymentSort.NAME_ASC.value, "limit": PAGE_SIZE, "offset": offset},
        )
        return [_Deployment(row) for row in response.json()]

    # Count first, then read every page at once: Prefect's server prepares one page
    # while this process parses the previous one.
    response = await client.request("POST", "/deployments/count", json=body)
    total = int(response.json())
    pages = await asyncio.gather(*(page(o) for o in range(0, total, PAGE_SIZE)))
    out = [d for p in pages for d in p]
    while pages and len(pages[-1]) == PAGE_SIZE:  # more were added since the count
        pages = [await page(len(out))]
        out += pages[0]
    return [d for d in out if MANAGED_TAG in d.tags]


async def _read_server_limits(
    client: PrefectClient, skip: int
) -> dict[str, GlobalConcurrencyLimitResponse]:
    """Read every 'svrctl-server-*' global concurrency limit.

    Prefect lists limits by name; the first ``skip`` names are known to sort before
    'svrctl-server-' (see the caller), so the listing starts there. Only svrctl's
    limits are parsed.
    """
    from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse

    out: dict[str, GlobalConcurrencyLimitResponse] = {}
    offset = max(0, skip - 1)
    while True:
        response = await client.request(
            "POST", "/v2/concurrency_limits/filter", json={"limit": PAGE_SIZE, "offset": offset}
        )
        rows: list[dict[str, Any]] = response.json()
        offset += len(rows)
        for row in rows:
            if str(row.get("name", "")).startswith(SERVER_LIMIT_PREFIX):
                limit = GlobalConcurrencyLimitResponse.model_validate(row)
                out[limit.name] = limit
        if len(rows) < PAGE_SIZE:
            return out


async def _read_limits(
    client: PrefectClient, names: list[str]
) -> dict[str, GlobalConcurrencyLimitResponse]:
    from prefect.exceptions import ObjectNotFound

    async def one(name: str) -> GlobalConcurrencyLimitResponse | None:
        try:
            return await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None

    found = await asyncio.gather(*(one(n) for n in names))
    return {g.name: g for g in found if g is not None}


async def _unmanaged_names(client: PrefectClient, names: list[str]) -> set[str]:
    """Return the names among ``names`` that unmanaged run-task deployments already use."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
    )

    taken: set[str] = set()
    for start in range(0, len(names), PAGE_SIZE):
        chunk = names[start : start + PAGE_SIZE]
        found = await client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=chunk)),
            limit=PAGE_SIZE,
        )
        taken |= {d.name for d in found if MANAGED_TAG not in d.tags}
    return taken


def _flow_id(current: _Current) -> str | None:
    for d in current.deployments.values():
        return str(d.flow_id)
    return None


async def _read_flow_id(client: PrefectClient) -> str | None:
    import httpx
    from prefect.exceptions import ObjectNotFound

    try:
        flow = await client.read_flow_by_name(FLOW_NAME)
    except ObjectNotFound:
        return None
    except httpx.HTTPStatusError as exc:  # read_flow_by_name raises this on a 404
        if exc.response.status_code == 404:
            return None
        raise
    return str(flow.id)


async def _missing_pools(client: PrefectClient, actions: list[Action]) -> list[str]:
    """Return the work pools that created or moved deployments need and Prefect lacks."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    needed = sorted(
        {
            a.spec.work_pool
            for a in actions
            if a.spec is not None and (a.op == "create" or "work_pool" in a.changes)
        }
    )
    if not needed:
        return []
    pools = await client.read_work_pools(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=needed))
    )
    existing = {p.name for p in pools}
    return [p for p in needed if p not in existing]


# --- comparing ---------------------------------------------------------------------------


def _plan(desired: Desired, current: _Current) -> tuple[list[Action], int]:
    """Compare and return the actions (deletes, then creates and updates) and the unchanged."""
    actions: list[Action] = []
    unchanged = 0
    for name, d in sorted(current.deployments.items()):
        if name in desired.deployments or name in desired.keep:
            continue
        if desired.scope is not None and name in desired.task_names:
            continue  # another task's deployment, outside this partial sync
        actions.append(Action("delete", "deployment", name, id=str(d.id), detail="no such task"))
    for d in current.duplicates:
        actions.append(Action("delete", "deployment", d.name, id=str(d.id), detail="duplicate"))
    for name, spec in desired.deployments.items():
        existing = current.deployments.get(name)
        if existing is None:
            actions.append(
                Action("create", "deployment", name, task=name, detail=spec.summary(), spec=spec)
            )
            continue
        update, drop, changes = _deployment_changes(spec, existing)
        if not changes:
            unchanged += 1
            continue
        actions.append(
            Action(
                "update",
                "deployment",
                name,
                task=name,
                id=str(existing.id),
                changes=changes,
                spec=spec,
                update=update,
                drop_schedules=drop,
            )
        )
    if desired.limits is not None and current.limits is not None:
        for name, g in sorted(current.limits.items()):
            if name not in desired.limits:
                actions.append(
                    Action("delete", "concurrency-limit", name, id=str(g.id), detail="no limit set")
                )
        for name, want in sorted(desired.limits.items()):
            have = current.limits.get(name)
            if have is None:
                actions.append(
                    Action(
                        "create",
                        "concurrency-limit",
                        name,
                        detail=f"{want.limit} at once on {want.server}",
                        limit=want.limit,
                    )
                )
            elif have.limit != want.limit or not have.active:
                changes = (
                    [f"limit {have.limit} -> {want.limit}"] if have.limit != want.limit else []
                )
                changes += [] if have.active else ["active"]
                actions.append(
                    Action(
                        "update",
                        "concurrency-limit",
                        name,
                        id=str(have.id),
                        changes=changes,
                        limit=want.limit,
                    )
                )
            else:
                unchanged += 1
    return actions, unchanged


def _deployment_ids_after(
    current: _Current, actions: list[Action], dry_run: bool
) -> dict[str, str | None]:
    """Each task's deployment id once the actions are applied (None: created by a dry run)."""
    ids: dict[str, str | None] = {name: d.id for name, d in current.deployments.items()}
    for a in actions:
        if a.kind != "deployment" or not (a.done or dry_run):
            continue
        if a.op == "delete" and a.detail != "duplicate":
            ids.pop(a.name, None)
        elif a.op == "create":
            ids[a.name] = a.id if not dry_run else None
    return ids


# A deployment id that a dry run does not know yet (the deployment would be created).
_NEW_DEPLOYMENT = "00000000-0000-0000-0000-000000000000"


def _plan_chains(
    desired: Desired, current: _Current, ids: dict[str, str | None]
) -> tuple[list[Action], int, list[str]]:
    """Compare the chain automations: return the actions, the unchanged count and problems."""
    if current.automations is None:
        return [], 0, []
    actions: list[Action] = []
    problems: list[str] = []
    unchanged = 0
    if desired.chain_scope is None:
        task_ids = set(current.automations) | set(desired.chains)
        for row in current.stray:
            actions.append(_delete_automation_action(row, None, "runs no task"))
    else:
        task_ids = set(desired.chain_scope)
    for task_id in sorted(task_ids):
        have = current.automations.get(task_id, [])
        want = desired.chains.get(task_id)
        if want is None:
            actions += [_delete_automation_action(row, None, "no such chain") for row in have]
            continue
        lacking = [name for name in (want.after, want.task) if name not in ids]
        if lacking:
            problems.append(
                f"the chain of task {want.task} was not synced: task {lacking[0]} has no "
                "deployment in Prefect (run `svrctl sync`)"
            )
            continue
        body = _automation_body(
            want, ids[want.after] or _NEW_DEPLOYMENT, ids[want.task] or _NEW_DEPLOYMENT
        )
        actions += [_delete_automation_action(row, want.task, "duplicate") for row in have[1:]]
        if not have:
            actions.append(
                Action(
                    "create",
                    "automation",
                    want.name,
                    task=want.task,
                    detail=want.summary(),
                    body=body,
                )
            )
            continue
        changes = _automation_changes(want, body, _automation_key(have[0]))
        if not changes:
            unchanged += 1
            continue
        only_enabled = changes in (["enabled"], ["disabled"])
        actions.append(
            Action(
                "update",
                "automation",
                want.name,
                task=want.task,
                id=str(have[0]["id"]),
                changes=changes,
                body=None if only_enabled else body,
                update={"enabled": want.enabled} if only_enabled else {},
            )
        )
    return actions, unchanged, problems


def _delete_automation_action(row: dict[str, Any], task: str | None, why: str) -> Action:
    return Action(
        "delete", "automation", str(row.get("name")), task=task, id=str(row["id"]), detail=why
    )


def _automation_body(chain: ChainSpec, after_id: str, task_id: str) -> dict[str, Any]:
    """The chain's automation as JSON, in the form :func:`_automation_key` gives."""
    from datetime import timedelta
    from uuid import UUID

    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    on_text = _ON_TEXT[chain.on]
    automation = AutomationCore(
        name=chain.name,
        description=(
            f"Runs the svrctl task {chain.task} (deployment {FLOW_NAME}/{chain.task}) when a "
            f"run of the task {chain.after} ({FLOW_NAME}/{chain.after}) {on_text}: "
            f"`svrctl task edit {chain.task} --after {chain.after} --on {chain.on}`. Kept "
            "by `svrctl sync`, which undoes changes made here."
        ),
        enabled=chain.enabled,
        tags=[CHAIN_TAG],
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {
                    "prefect.resource.id": f"prefect.deployment.{after_id}",
                    "prefect.resource.role": "deployment",
                }
            ),
            after=set(),
            expect=set(CHAIN_EVENTS[chain.on]),
            for_each=set(),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=UUID(task_id),
                parameters={"task_id": chain.task_id},
                job_variables=None,
            )
        ],
        actions_on_trigger=[],
        actions_on_resolve=[],
    )
    return _automation_key(automation.model_dump(mode="json"))


def _automation_key(raw: dict[str, Any]) -> dict[str, Any]:
    """Normalise an automation (as JSON) for comparing, and for sending to Prefect.

    Drops what Prefect sets itself (ids, timestamps, the owner) and sorts the sets.
    """
    from prefect.events.schemas.automations import AutomationCore

    try:
        data: dict[str, Any] = AutomationCore.model_validate(raw).model_dump(mode="json")
    except ValueError:  # not an automation svrctl could have written: it differs
        return dict(raw)
    data.pop("owner_resource", None)
    data["tags"] = sorted(data.get("tags") or [])
    trigger = data.get("trigger")
    if isinstance(trigger, dict):
        trigger.pop("id", None)
        for key in ("after", "expect", "for_each"):
            if isinstance(trigger.get(key), list):
                trigger[key] = sorted(trigger[key])
    return data


def _automation_changes(chain: ChainSpec, want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """Name what differs between the wanted and the current automation."""
    changes: list[str] = []
    for key in sorted(set(want) | set(have)):
        if want.get(key) == have.get(key):
            continue
        if key == "enabled":
            changes.append("enabled" if chain.enabled else "disabled")
        elif key == "trigger":
            wt, ht = want.get(key) or {}, have.get(key) or {}
            for part in sorted(set(wt) | set(ht)):
                if wt.get(part) != ht.get(part):
                    changes.append(
                        {
                            "expect": f"on {chain.on}",
                            "match_related": f"deployment of {chain.after}",
                        }.get(part, f"trigger {part}")
                    )
        elif key == "actions":
            changes.append(f"run deployment of {chain.task}")
        else:
            changes.append(key)
    return changes


def _parameter_schema() -> dict[str, Any]:
    """The run-task flow's parameter schema, as `prefect deploy` would store it."""
    global _SCHEMA
    if _SCHEMA is None:
        from prefect.utilities.callables import parameter_schema

        from svrctl.flows.run_task import run_task

        _SCHEMA = parameter_schema(run_task).model_dump_for_openapi()
    return _SCHEMA


_SCHEMA: dict[str, Any] | None = None


def _wanted_fields(spec: DeploymentSpec) -> dict[str, Any]:
    """The deployment fields svrctl owns, in the form Prefect returns them."""
    return {
        "description": spec.description,
        "tags": list(spec.tags),
        "parameters": {"task_id": spec.task_id},
        "paused": not spec.enabled,
        "work_pool": (spec.work_pool, spec.work_queue),
        "concurrency": (1, spec.collision_strategy),
        "entrypoint": ENTRYPOINT,
        "path": None,
        "pull_steps": None,
        "job_variables": {},
        "enforce_parameter_schema": True,
        "parameter_openapi_schema": _parameter_schema(),
    }


def _current_fields(d: _Deployment) -> dict[str, Any]:
    raw = d.raw
    gcl = raw.get("global_concurrency_limit") or {}
    options = raw.get("concurrency_options") or {}
    return {
        "description": raw.get("description") or "",
        "tags": sorted(d.tags),
        "parameters": raw.get("parameters"),
        "paused": raw.get("paused"),
        "work_pool": (raw.get("work_pool_name"), raw.get("work_queue_name")),
        "concurrency": (gcl.get("limit"), options.get("collision_strategy")),
        "entrypoint": raw.get("entrypoint"),
        "path": raw.get("path") or None,
        "pull_steps": raw.get("pull_steps") or None,
        "job_variables": raw.get("job_variables") or {},
        "enforce_parameter_schema": raw.get("enforce_parameter_schema"),
        "parameter_openapi_schema": raw.get("parameter_openapi_schema"),
    }


def _update_payload(key: str, spec: DeploymentSpec, wanted: dict[str, Any]) -> dict[str, Any]:
    """Return the DeploymentUpdate fields that set one compared field."""
    from prefect.client.schemas.objects import ConcurrencyOptions

    if key == "work_pool":
        return {"work_pool_name": spec.work_pool, "work_queue_name": spec.work_queue}
    if key == "concurrency":
        return {
            "concurrency_limit": 1,
            "concurrency_options": ConcurrencyOptions(
                collision_strategy=spec.collision_strategy  # type: ignore[arg-type]
            ),
        }
    return {key: wanted[key]}


def _wanted_schedule(spec: DeploymentSpec) -> Any:
    """Return the DeploymentScheduleCreate for a task's schedule, as Prefect normalises it."""
    assert spec.schedule is not None
    return _schedule_create(spec.schedule, spec.enabled)[0]


@lru_cache(maxsize=4096)
def _schedule_create(schedule: PrefectScheduleSpec, active: bool) -> tuple[Any, str]:
    """Build (and remember: many tasks share a schedule) a DeploymentScheduleCreate.

    Returns:
        The schedule to send, and its comparison key (its schedule as JSON text).
    """
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    create = DeploymentScheduleCreate(
        schedule=schedule.to_prefect(), active=active, slug=SCHEDULE_SLUG
    )
    return create, json.dumps(_schedule_key(create.schedule), sort_keys=True)


def _schedule_key(schedule: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = schedule.model_dump(mode="json")
    return dumped


def _deployment_changes(
    spec: DeploymentSpec, d: _Deployment
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Return (DeploymentUpdate fields, schedule ids to delete, changed field names)."""
    wanted, have = _wanted_fields(spec), _current_fields(d)
    update: dict[str, Any] = {}
    changes: list[str] = []
    for key, value in wanted.items():
        if have[key] != value:
            changes.append(key)
            update |= _update_payload(key, spec, wanted)
    ours: dict[str, Any] | None = None
    drop: list[str] = []
    for s in d.schedules:
        if s.get("slug") == SCHEDULE_SLUG and ours is None:
            ours = s
        else:
            drop.append(str(s["id"]))  # added by hand in Prefect: svrctl owns the schedule
    if spec.schedule is None:
        if ours is not None:
            drop.append(str(ours["id"]))
    else:
        want, want_key = _schedule_create(spec.schedule, spec.enabled)
        same = ours is not None and json.dumps(ours.get("schedule"), sort_keys=True) == want_key
        active = ours is not None and ours.get("active") == want.active
        if ours is None or not same or not active or ours.get("parameters"):
            from prefect.client.schemas.actions import DeploymentScheduleUpdate

            update["schedules"] = [
                DeploymentScheduleUpdate(
                    schedule=want.schedule, active=want.active, parameters={}, slug=SCHEDULE_SLUG
                )
            ]
            if ours is None:
                changes.append("schedule")
            elif not active and same:
                changes.append("schedule active" if want.active else "schedule inactive")
            else:
                changes.append("schedule")
    if drop:
        changes.append(f"drop {len(drop)} schedule(s)")
    return update, drop, changes


# --- applying ----------------------------------------------------------------------------


async def _apply(
    client: PrefectClient, actions: list[Action], flow_id: str | None, max_parallel: int
) -> None:
    """Apply the actions: flow and pools first, then the rest with a bounded concurrency."""
    from uuid import UUID

    from prefect.client.schemas.actions import WorkPoolCreate

    for a in actions:
        if a.kind == "flow":
            await _guard(a, lambda: client.create_flow_from_name(FLOW_NAME))
            flow_id = a.id
        elif a.kind == "work-pool":
            pool = WorkPoolCreate(name=a.name, type=WORK_POOL_TYPE)
            await _guard(a, lambda: _create_pool(client, pool))  # noqa: B023 (awaited here)
    gate = asyncio.Semaphore(max_parallel)

    async def run(a: Action) -> None:
        async with gate:
            if a.kind == "deployment":
                if a.op == "create":
                    if flow_id is None:
                        a.error = f"the flow {FLOW_NAME} could not be created"
                        return
                    fid = UUID(flow_id)
                    await _guard(a, lambda: _create_deployment(client, a, fid))
                elif a.op == "update":
                    await _guard(a, lambda: _update_deployment(client, a))
                else:
                    await _guard(a, lambda: _delete_deployment(client, a))
            else:
                await _guard(a, lambda: _apply_limit(client, a))

    await asyncio.gather(
        *(run(a) for a in actions if a.kind in ("deployment", "concurrency-limit"))
    )


async def _apply_automations(
    client: PrefectClient, actions: list[Action], max_parallel: int
) -> None:
    """Apply the chain automation actions, a few at a time."""
    gate = asyncio.Semaphore(max_parallel)

    async def run(a: Action) -> None:
        async with gate:
            await _guard(a, lambda: _apply_automation(client, a))

    await asyncio.gather(*(run(a) for a in actions))


async def _apply_automation(client: PrefectClient, a: Action) -> str | None:
    import httpx

    if a.op == "create":
        response = await client.request("POST", "/automations/", json=a.body)
        return str(response.json()["id"])
    assert a.id is not None
    path_params = {"id": a.id}
    if a.op == "update":
        if a.update:
            await client.request(
                "PATCH", "/automations/{id}", path_params=path_params, json=a.update
            )
        else:
            await client.request("PUT", "/automations/{id}", path_params=path_params, json=a.body)
        return None
    try:
        await client.request("DELETE", "/automations/{id}", path_params=path_params)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 404:  # already gone: that is what was wanted
            raise
    return None


async def _guard(action: Action, call: Callable[[], Awaitable[Any]]) -> None:
    """Run one action's requests; record success or a short error."""
    try:
        result = await call()
    except Exception as exc:
        action.error = _error_text(exc)
        return
    action.done = True
    if (
        action.op == "create"
        and action.kind in ("deployment", "flow", "automation")
        and result is not None
    ):
        action.id = str(result)


def _error_text(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        try:
            detail = exc.response.json().get("detail")
        except ValueError:
            detail = None
        return f"HTTP {exc.response.status_code}: {detail or exc.response.text[:300]}"
    return f"{type(exc).__name__}: {exc}"


async def _create_deployment(client: PrefectClient, a: Action, flow_id: Any) -> Any:
    from prefect.client.schemas.objects import ConcurrencyOptions

    spec = a.spec
    assert spec is not None
    return await client.create_deployment(
        flow_id=flow_id,
        name=spec.name,
        parameters={"task_id": spec.task_id},
        description=spec.description,
        tags=list(spec.tags),
        work_pool_name=spec.work_pool,
        work_queue_name=spec.work_queue,
        entrypoint=ENTRYPOINT,
        schedules=[_wanted_schedule(spec)] if spec.schedule is not None else [],
        paused=not spec.enabled,
        concurrency_limit=1,
        concurrency_options=ConcurrencyOptions(
            collision_strategy=spec.collision_strategy  # type: ignore[arg-type]
        ),
        enforce_parameter_schema=True,
        parameter_openapi_schema=_parameter_schema(),
        job_variables={},
    )


async def _update_deployment(client: PrefectClient, a: Action) -> None:
    from uuid import UUID

    from prefect.client.schemas.actions import DeploymentUpdate

    assert a.id is not None
    deployment_id = UUID(a.id)
    for schedule_id in a.drop_schedules:
        await client.delete_deployment_schedule(deployment_id, UUID(schedule_id))
    if a.update:
        await client.update_deployment(deployment_id, DeploymentUpdate(**a.update))


async def _delete_deployment(client: PrefectClient, a: Action) -> None:
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound

    assert a.id is not None
    with contextlib.suppress(ObjectNotFound):  # already gone: that is what was wanted
        await client.delete_deployment(UUID(a.id))


async def _create_pool(client: PrefectClient, pool: Any) -> None:
    from prefect.exceptions import ObjectAlreadyExists

    with contextlib.suppress(ObjectAlreadyExists):  # another svrctl created it meanwhile
        await client.create_work_pool(pool)


async def _apply_limit(client: PrefectClient, a: Action) -> None:
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    if a.op == "create":
        assert a.limit is not None
        try:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=a.name, limit=a.limit, active=True)
            )
        except ObjectAlreadyExists:  # another svrctl created it meanwhile
            await client.update_global_concurrency_limit(
                a.name, GlobalConcurrencyLimitUpdate(limit=a.limit, active=True)
            )
    elif a.op == "update":
        await client.update_global_concurrency_limit(
            a.name, GlobalConcurrencyLimitUpdate(limit=a.limit, active=True)
        )
    else:
        with contextlib.suppress(ObjectNotFound):
            await client.delete_global_concurrency_limit_by_name(a.name)


def _remember_ids(db: Database, desired: Desired, report: SyncReport) -> None:
    """Store each task's deployment id in tasks.deployment_id, writing only what changed."""
    changed = {
        spec.task_id: report.deployment_ids[name]
        for name, spec in desired.deployments.items()
        if name in report.deployment_ids and report.deployment_ids[name] != spec.stored_id
    }
    if not changed:
        return
    with db.write() as session:
        for task_id, deployment_id in changed.items():
            task = session.get(Task, task_id)
            if task is not None:
                task.deployment_id = deployment_id
