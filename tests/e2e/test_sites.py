"""Two sites in network namespaces, each with its own sshd and its own svrctl worker (issue 8).

The topology, built by the test as root and removed afterwards:

- the central side is the host: the Prefect server (backed by PostgreSQL) and the
  app database (PostgreSQL), both listening on 127.0.0.1 only;
- ``site-a`` and ``site-b`` are network namespaces, each joined to the host by a
  veth pair with a /30 of its own (``10.213.N.0/30`` and ``10.213.N.4/30``); a TCP
  forwarder run by the test listens on the host-side address of each link and
  relays to the Prefect API and to PostgreSQL on 127.0.0.1, so each site's worker
  reaches the central services and nothing else of the host;
- each site's sshd listens on an address of its namespace's loopback
  (``10.214.N.10`` in site-a, ``10.214.N.20`` in site-b): the host has no route to
  it (only its default route, which leaves the machine), and the other site has no
  route at all (a site knows only its /30);
- a worker per site, started as users start one, inside the site's namespace:
  ``ip netns exec NS svrctl worker --pool site-a``.

Tasks are created with the svrctl CLI (servers carry ``--pool site-a`` / ``site-b``,
and the automatic sync puts their deployments in those pools), runs are triggered
through the Prefect API, and results are read from the app database and Prefect.

Without root or `ip`, the test skips; with SVRCTL_TEST_REQUIRE_NETNS=1 it fails instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner
from e2e import netns
from fixtures.postgres import PgDatabaseFactory
from fixtures.processes import kill_group, stop_groups
from fixtures.sshd import SSHD_BIN, SshdTarget, _render_config, make_key, public_key_text
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from sqlalchemy import select
from sqlalchemy.engine import make_url

from svrctl import runtime
from svrctl.db.engine import Database, open_database
from svrctl.db.models import TaskHistory
from svrctl.prefect_server import PrefectServer, start_prefect_server

pytestmark = [pytest.mark.sshd, pytest.mark.postgres]

REQUIRE_ENV = "SVRCTL_TEST_REQUIRE_NETNS"
SITES = ("site-a", "site-b")
SSH_PORT = 2222
STRAY_CONNECT_TIMEOUT = 3
BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
WORKER_START_TIMEOUT = 120.0
RUN_TIMEOUT = 60.0


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


# ----------------------------------------------------------------------------- the world


@dataclass
class SiteWorker:
    """One `svrctl worker` process inside a site's namespace."""

    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Sites:
    """The running topology: namespaces, sshds, the central services, the workers."""

    topology: netns.Topology
    logs: Path
    sshds: dict[str, SshdTarget] = field(default_factory=dict)
    forwarder: netns.Forwarder | None = None
    server: PrefectServer | None = None
    client: SyncPrefectClient | None = None
    app_db: Database | None = None
    app_url: str = ""
    pg_target: str = ""
    workers: dict[str, SiteWorker] = field(default_factory=dict)
    old_logs: list[Path] = field(default_factory=list)
    task_ids: dict[str, int] = field(default_factory=dict)

    @property
    def prefect(self) -> SyncPrefectClient:
        assert self.client is not None
        return self.client

    def site(self, name: str) -> netns.Site:
        return self.topology.sites[name]

    # ------------------------------------------------------------------ workers

    def worker_env(self, site: netns.Site) -> dict[str, str]:
        """What a worker on the site's network has: the central API and database, a home."""
        assert self.server is not None and self.forwarder is not None
        api_port = self.forwarder.port(site.host_addr, f"127.0.0.1:{self.server.port}")
        pg_port = self.forwarder.port(site.host_addr, self.pg_target)
        app = make_url(self.app_url).set(host=site.host_addr, port=pg_port)
        home = self.logs / site.name / "svrctl-home"
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SVRCTL_"))}
        return keep | {
            "HOME": str(self.logs / site.name),
            "PREFECT_HOME": str(self.logs / site.name / "prefect-home"),
            "PREFECT_API_URL": f"http://{site.host_addr}:{api_port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "SVRCTL_DATABASE_URL": app.render_as_string(hide_password=False),
            "SVRCTL_HOME": str(home),
            "SVRCTL_SSH_KEY_DIR": str(self.logs / site.name / "ssh"),
            "SVRCTL_TIMEZONE": "UTC",
        }

    def launch_worker(self, name: str) -> SiteWorker:
        """Start `svrctl worker --pool NAME` inside the site's namespace (no waiting)."""
        site = self.site(name)
        old = self.workers.get(name)
        if old is not None:
            self.old_logs.append(old.log)
        log = self.logs / f"worker-{name}-{len(self.old_logs)}.log"
        argv = [str(BIN / "svrctl"), "worker", "--pool", name, "--name", f"{name}-worker"]
        process = netns.ns_popen(site.ns, argv, log=log, env=self.worker_env(site))
        worker = SiteWorker(process, log)
        self.workers[name] = worker
        return worker

    def wait_worker(self, name: str, timeout: float = WORKER_START_TIMEOUT) -> None:
        """Wait until the site's worker has imported the flow and polls its pool."""
        worker = self.workers[name]
        deadline = time.monotonic() + timeout
        while "started!" not in worker.log.read_text(errors="replace"):
            assert worker.process.poll() is None, (
                f"{name}'s worker exited with {worker.process.returncode}:\n{self.tail(worker.log)}"
            )
            assert time.monotonic() < deadline, (
                f"{name}'s worker did not start within {timeout:g} s:\n{self.tail(worker.log)}"
            )
            time.sleep(0.2)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the site's worker (no clean stop: a crash or a power cut)."""
        kill_group(self.workers[name].process, timeout=10)

    def stop_workers(self) -> None:
        stop_groups((worker.process for worker in self.workers.values()), timeout=20)

    # ------------------------------------------------------------------ runs

    def trigger(self, task: str) -> UUID:
        """Create a flow run of the task's deployment now; return its id."""
        deployment = self.prefect.read_deployment_by_name(f"run-task/{task}")
        return self.prefect.create_flow_run_from_deployment(deployment.id).id

    def flow_run(self, run_id: UUID) -> FlowRun:
        return self.prefect.read_flow_run(run_id)

    def wait_final(self, run_id: UUID, timeout: float = RUN_TIMEOUT) -> FlowRun:
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run.state is not None and run.state.type.value in FINAL:
                return run
            assert time.monotonic() < deadline, (
                f"flow run {run.name} still {run.state_name} after {timeout:g} s\n{self.report()}"
            )
            time.sleep(0.1)

    def rows(self, task: str, run_id: UUID | None = None) -> list[TaskHistory]:
        assert self.app_db is not None
        query = select(TaskHistory).where(TaskHistory.task_id == self.task_ids[task])
        if run_id is not None:
            query = query.where(TaskHistory.flow_run_id == str(run_id))
        with self.app_db.read() as session:
            return list(session.scalars(query.order_by(TaskHistory.id)))

    def wait_row(self, task: str, run_id: UUID, *, started: bool = False) -> TaskHistory:
        """Wait for the run's history row to be finished (or only ``started``); return it."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            rows = self.rows(task, run_id)
            if rows and (started or rows[0].finished_at is not None):
                return rows[0]
            assert time.monotonic() < deadline, (
                f"no {'started' if started else 'finished'} row of {task} for run {run_id} after "
                f"{RUN_TIMEOUT:g} s: {[(r.status, r.error) for r in rows]}\n{self.report()}"
            )
            time.sleep(0.05)

    def ran_on(self, run: FlowRun) -> str:
        """Return the site whose worker process ran the flow run (by pid and namespace)."""
        assert run.infrastructure_pid, f"flow run {run.name} has no infrastructure pid"
        _, pid, run_id = run.infrastructure_pid.split(":")
        assert run_id == str(run.id)
        for name, worker in self.workers.items():
            if worker.process.pid == int(pid):
                # `ip netns exec` execs the worker in place: that pid lives in the namespace
                if worker.process.poll() is None:
                    inode = netns.process_netns_inode(int(pid))
                    assert inode == netns.netns_inode(self.site(name).ns)
                return name
        raise AssertionError(f"flow run {run.name} ran in pid {pid}, no site's worker")

    # ------------------------------------------------------------------ diagnostics

    @staticmethod
    def tail(path: Path, chars: int = 4000) -> str:
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def report(self) -> str:
        parts = []
        for log in [*self.old_logs, *(w.log for w in self.workers.values())]:
            parts.append(f"----- {log.name}\n{self.tail(log)}")
        for name, sshd in self.sshds.items():
            parts.append(f"----- sshd {name}\n{self.tail(sshd.log_path, 1500)}")
        if self.forwarder is not None:
            parts.append(f"----- forwarder\n{self.tail(self.forwarder.log, 1500)}")
        if self.server is not None:
            parts.append(f"----- prefect server\n{self.tail(self.server.log, 2000)}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def diagnosed(self) -> Iterator[None]:
        """Print every log when the block fails (pytest shows it with the failure)."""
        try:
            yield
        except BaseException:
            print(self.report())
            raise


def start_site_sshd(site: netns.Site, workdir: Path) -> SshdTarget:
    """Start sshd inside the site's namespace, on its loopback server address."""
    workdir.mkdir(parents=True)
    user_key = make_key(workdir / "user_key", comment=f"svrctl-e2e-{site.name}")
    host_key = make_key(workdir / "host_key", comment=f"svrctl-e2e-{site.name}-host")
    authorized = workdir / "authorized_keys"
    authorized.write_text(public_key_text(user_key) + "\n")
    authorized.chmod(0o600)
    target = SshdTarget(
        host=site.server_addr,
        port=SSH_PORT,
        username=pwd.getpwuid(os.geteuid()).pw_name,
        user_key=user_key,
        host_key=host_key,
        host_key_line="",
        workdir=workdir,
        sshd_config=workdir / "sshd_config",
        known_hosts=workdir / "known_hosts",
        authorized_keys=authorized,
        log_path=workdir / "sshd.log",
    )
    target.sshd_config.write_text(_render_config(target, []))
    target._refresh_host_key_line()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    argv = [str(SSHD_BIN), "-D", "-e", "-f", str(target.sshd_config)]
    target.process = netns.ns_popen(site.ns, argv, log=target.log_path)
    deadline = time.monotonic() + 15
    # sshd cannot be reached from here (that is the point): check inside the site
    while netns.tcp_connect_error(site.server_addr, SSH_PORT, ns=site.ns, timeout=1) is not None:
        if target.process.poll() is not None or time.monotonic() > deadline:
            target.stop()
            raise AssertionError(f"sshd in {site.name} did not start:\n{target.log_text()}")
        time.sleep(0.1)
    return target


def _cli(env: dict[str, str], *args: str) -> str:
    """Run the svrctl CLI in this process with ``env``; return stdout (must succeed)."""
    from svrctl.cli import cli

    runtime.reset()
    try:
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    finally:
        runtime.reset()
    assert result.exit_code == 0, f"svrctl {' '.join(args)}: {result.output}"
    return result.stdout


def _configure(sites: Sites, env: dict[str, str]) -> None:
    """Servers in both sites (plus one routed to the wrong pool) and their tasks."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    for name in SITES:
        sshd = sites.sshds[name]
        _cli(
            env, "server", "add", f"web-{name}", "--host", sshd.host, "--port", str(sshd.port),
            "--user", user, "--key", str(sshd.user_key), "--pool", name, "--connect-timeout", "5",
        )  # fmt: skip
        # The site's worker trusts its own sshd's host key (svrctl's pin file there).
        home = sites.logs / name / "svrctl-home"
        home.mkdir(mode=0o700, parents=True)
        (home / "known_hosts").write_text(sshd.host_key_line + "\n")
    # site-a's server, wrongly put in site-b's pool: site-b's worker gets its runs
    stray = sites.sshds["site-a"]
    _cli(
        env, "server", "add", "stray-site-a", "--host", stray.host, "--port", str(stray.port),
        "--user", user, "--key", str(stray.user_key), "--pool", "site-b",
        "--connect-timeout", str(STRAY_CONNECT_TIMEOUT),
    )  # fmt: skip
    tasks = {
        f"hello-{name}": ("--server", f"web-{name}", "--command", 'echo "$SSH_CONNECTION"')
        for name in SITES
    }
    tasks["slow-site-b"] = ("--server", "web-site-b", "--command", "sleep 5; echo slept")
    tasks["stray"] = ("--server", "stray-site-a", "--command", "echo unreachable")
    for task, options in tasks.items():
        data: dict[str, Any] = json.loads(_cli(env, "task", "add", task, *options, "--json"))
        sites.task_ids[task] = int(data["id"])
    _cli(env, "sync")


@pytest.fixture(scope="module")
def sites(
    tmp_path_factory: pytest.TempPathFactory,
    pg_admin_url: str,
    pg_template: str,
    pg_database_factory: PgDatabaseFactory,
) -> Iterator[Sites]:
    """Build the two-site topology with its central services and workers; tear it down."""
    reason = netns.unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    if not SSHD_BIN.exists():
        _unavailable(f"{SSHD_BIN} not found (install openssh-server; scripts/test does)")
    leftovers = netns.remove_leftovers()
    if leftovers:
        print(f"removed leftovers of earlier runs: {', '.join(leftovers)}")
    topology = netns.Topology()
    try:
        topology.build(SITES)
    except netns.NetnsError as exc:
        topology.remove()
        _unavailable(f"cannot create network namespaces here: {exc}")

    logs = tmp_path_factory.mktemp("sites")
    world = Sites(topology, logs)
    created_dbs: list[str] = []
    try:
        for name in SITES:
            world.sshds[name] = start_site_sshd(world.site(name), logs / name / "sshd")

        # Central side: Prefect on PostgreSQL, the app database on PostgreSQL.
        admin = make_url(pg_admin_url)
        world.pg_target = f"{admin.host or '127.0.0.1'}:{admin.port or 5432}"
        prefect_db = pg_database_factory()
        world.app_url = pg_database_factory(template=pg_template)
        created_dbs += [prefect_db, world.app_url]
        prefect_url = make_url(prefect_db).set(drivername="postgresql+asyncpg")
        started = time.monotonic()
        world.server = start_prefect_server(
            logs / "prefect-server",
            extra_env={
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_url.render_as_string(
                    hide_password=False
                )
            },
        )
        print(f"Prefect server on PostgreSQL healthy after {time.monotonic() - started:.1f} s")
        routes = []
        for name in SITES:
            host = world.site(name).host_addr
            routes += [(host, f"127.0.0.1:{world.server.port}"), (host, world.pg_target)]
        world.forwarder = netns.start_forwarder(routes, logs / "forwarder.log")
        world.client = SyncPrefectClient(world.server.api_url)
        world.client.__enter__()
        world.app_db = open_database(world.app_url)

        home = logs / "central-home"
        env = {
            "SVRCTL_HOME": str(home),
            "SVRCTL_DATABASE_URL": world.app_url,
            "SVRCTL_TIMEZONE": "UTC",
            "SVRCTL_SSH_KEY_DIR": str(logs / "central-ssh"),
            "PREFECT_API_URL": world.server.api_url,
        }
        _configure(world, env)
        for name in SITES:
            world.launch_worker(name)
        for name in SITES:
            world.wait_worker(name)
        yield world
    except BaseException:
        print(world.report())
        raise
    finally:
        problems = _teardown(world, pg_database_factory, created_dbs)
        assert not problems, f"could not clean up: {problems}"


def _teardown(world: Sites, factory: PgDatabaseFactory, dbs: list[str]) -> list[str]:
    """Stop everything the fixture started; return what is left behind."""
    problems: list[str] = []
    steps: list[Callable[[], object]] = [
        world.stop_workers,
        lambda: world.forwarder.stop() if world.forwarder else None,
        lambda: world.client.__exit__(None, None, None) if world.client else None,
        lambda: world.app_db.dispose() if world.app_db else None,
        lambda: world.server.stop() if world.server else None,
        *(sshd.stop for sshd in world.sshds.values()),
        *(functools.partial(factory.drop, db) for db in dbs),
    ]
    for step in steps:
        try:
            step()
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
    problems += world.topology.remove()
    left = [ns for ns in netns.ip("netns", "list").stdout.split() if world.topology.prefix in ns]
    links = netns.ip("-o", "link", "show").stdout
    left += [w for w in links.split() if w.startswith(netns.LINK_PREFIX + world.topology.token)]
    return problems + left


# ----------------------------------------------------------------------------- tests


def test_sites_reach_the_central_services_but_not_each_other(sites: Sites) -> None:
    assert sites.server is not None and sites.forwarder is not None
    with sites.diagnosed():
        for name, other in (("site-a", "site-b"), ("site-b", "site-a")):
            site, far = sites.site(name), sites.site(other)
            api = sites.forwarder.port(site.host_addr, f"127.0.0.1:{sites.server.port}")
            pg = sites.forwarder.port(site.host_addr, sites.pg_target)
            assert netns.tcp_connect_error(site.host_addr, api, ns=site.ns) is None
            assert netns.tcp_connect_error(site.host_addr, pg, ns=site.ns) is None
            assert netns.tcp_connect_error(site.server_addr, SSH_PORT, ns=site.ns) is None
            # the other site: no route to its servers, nor to its link
            for address in (far.server_addr, far.site_addr):
                error = netns.tcp_connect_error(address, SSH_PORT, ns=site.ns)
                assert error is not None and "unreachable" in error, (name, address, error)
            # the central side (the host): no route through any site link, no SSH banner
            route = netns.ip("route", "get", site.server_addr).stdout
            assert not any(s.host_link in route for s in sites.topology.sites.values()), route
            assert _ssh_banner(site.server_addr, SSH_PORT) is None


def _ssh_banner(host: str, port: int, timeout: float = 1.5) -> bytes | None:
    """Return the SSH banner a host serves at host:port from here, or None."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except OSError:
        return None
    return data if data.startswith(b"SSH-") else None


@pytest.mark.parametrize("name", SITES)
def test_each_sites_tasks_run_on_its_own_worker(sites: Sites, name: str) -> None:
    with sites.diagnosed():
        task = f"hello-{name}"
        run_id = sites.trigger(task)
        run = sites.wait_final(run_id)
        assert run.state is not None and run.state.type.value == "COMPLETED", run.state
        assert run.work_pool_name == name
        assert sites.ran_on(run) == name
        row = sites.wait_row(task, run_id)
        assert (row.status, row.exit_code, row.server_name) == ("success", 0, f"web-{name}")
        # $SSH_CONNECTION: client ip, client port, server ip, server port
        server_ip, server_port = row.output.split()[2:4]
        assert (server_ip, int(server_port)) == (sites.site(name).server_addr, SSH_PORT)


def test_task_routed_to_the_wrong_pool_fails_fast_with_a_connect_error(sites: Sites) -> None:
    with sites.diagnosed():
        started = time.monotonic()
        run_id = sites.trigger("stray")
        run = sites.wait_final(run_id, timeout=STRAY_CONNECT_TIMEOUT + 30)
        took = time.monotonic() - started
        assert run.state is not None and run.state.type.value == "FAILED", run.state
        assert sites.ran_on(run) == "site-b"
        row = sites.wait_row("stray", run_id)
        address = f"{sites.site('site-a').server_addr}:{SSH_PORT}"
        assert row.status == "failed" and row.error is not None, (row.status, row.error)
        assert f"cannot connect to {address}" in row.error, row.error
        assert "unreachable" in row.error, row.error
        assert row.duration_ms is not None and row.duration_ms <= STRAY_CONNECT_TIMEOUT * 1000
        print(f"\nwrong pool: failed in {row.duration_ms} ms ({took:.1f} s trigger -> final)")
        print(f"error: {row.error}")


def test_killed_worker_leaves_the_other_site_running_and_resumes_on_restart(
    sites: Sites,
) -> None:
    with sites.diagnosed():
        slow = sites.trigger("slow-site-b")
        sites.wait_row("slow-site-b", slow, started=True)
        sites.kill_worker("site-a")
        killed = time.monotonic()
        # site-b's run was going when site-a's worker died
        assert [r.status for r in sites.rows("slow-site-b", slow)] == ["running"]

        waiting = sites.trigger("hello-site-a")  # while site-a has no worker
        hello_b = sites.trigger("hello-site-b")
        for run_id, task in ((slow, "slow-site-b"), (hello_b, "hello-site-b")):
            run = sites.wait_final(run_id)
            assert run.state is not None and run.state.type.value == "COMPLETED", run.state
            assert sites.ran_on(run) == "site-b"
            assert sites.wait_row(task, run_id).status == "success"
        assert sites.rows("slow-site-b", slow)[0].output == "slept\n"

        # Nobody else takes site-a's run: it waits in its pool.
        while time.monotonic() - killed < 3:
            time.sleep(0.2)
        run = sites.flow_run(waiting)
        assert run.state is not None and run.state.type.value == "SCHEDULED", run.state
        assert not sites.rows("hello-site-a", waiting)

        restarted = time.monotonic()
        sites.launch_worker("site-a")
        sites.wait_worker("site-a")
        run = sites.wait_final(waiting)
        assert run.state is not None and run.state.type.value == "COMPLETED", run.state
        assert sites.ran_on(run) == "site-a"
        assert sites.wait_row("hello-site-a", waiting).status == "success"
        print(
            f"\nsite-a's waiting run completed {time.monotonic() - restarted:.1f} s after restart"
        )
