"""Getting to a server: jump hosts, every way a connection fails, and bounded fan-out.

All traffic stays on loopback, or inside network namespaces a test creates for
itself with ``unshare --net`` (the connect timeout and the unresolvable name):
those namespaces have no route out of the machine, so no packet and no DNS query
can leave it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Invoke
from fixtures.sshd import SshdFactory, SshdTarget
from helpers_auth import (
    SilentListener,
    bare_target,
    closed_port,
    is_root,
    json_out,
    log_lines,
    make_target,
    pin,
    wait_for_log,
)

from svrctl.exceptions import (
    BannerTimeoutError,
    ConnectionRefusedSshError,
    ConnectTimeoutError,
    SshConnectError,
)
from svrctl.ssh.connection import connect, fetch_host_key
from svrctl.ssh.fanout import run_on_many

# Runs in a private network namespace: connect to argv[1] with timeout argv[2] and
# print what happened as JSON, with the namespace's interfaces and what connecting
# to an outside address (TEST-NET-1) gives: ENETUNREACH means there is no route out.
NETNS_SNIPPET = r"""
import errno, json, socket, sys, time
from pathlib import Path
from svrctl.exceptions import SshError
from svrctl.ssh.connection import connect
from svrctl.ssh.target import SshTarget

host, timeout, work = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
try:
    socket.create_connection(("192.0.2.1", 9), timeout=1).close()
    outside = "reachable"
except OSError as exc:
    outside = errno.errorcode.get(exc.errno or 0, repr(exc))
target = SshTarget(
    name="far", host=host, port=22, key_dir=work, known_hosts=work / "known_hosts",
    user_known_hosts=None, connect_timeout=timeout, banner_timeout=timeout,
    auth_timeout=timeout,
)
started = time.monotonic()
try:
    connect(target).close()
    outcome = {"error_type": None, "message": ""}
except SshError as exc:
    outcome = {"error_type": type(exc).__name__, "message": exc.message}
outcome["elapsed"] = time.monotonic() - started
outcome["interfaces"] = sorted(name for _, name in socket.if_nameindex())
outcome["outside"] = outside
print(json.dumps(outcome))
"""

# Inside the namespace: a veth pair whose far end drops every frame (they are
# addressed to a MAC nobody has), so a SYN to 10.77.0.9 is never answered.
BLACKHOLE_SETUP = (
    "ip link set lo up; "
    "ip link add svt0 type veth peer name svt1; "
    "ip addr add 10.77.0.1/24 dev svt0; ip link set svt0 up; ip link set svt1 up; "
    "ip neigh add 10.77.0.9 lladdr 02:00:5e:00:53:09 dev svt0 nud permanent"
)


def _require_netns() -> None:
    if not is_root():
        pytest.skip("creating a network namespace (unshare --net) needs root")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip (iproute2) is not installed")
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "--", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")


def _in_netns(tmp_path: Path, setup: str, *args: str, mount: bool = False) -> dict[str, object]:
    """Run NETNS_SNIPPET in a new network namespace (and mount namespace) after ``setup``."""
    python = [sys.executable, "-c", NETNS_SNIPPET, *args, str(tmp_path)]
    argv = ["unshare", "--net", *(["--mount"] if mount else []), "--"]
    argv += ["sh", "-c", f'set -e; {setup}; exec "$@"', "sh", *python]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    outcome: dict[str, object] = json.loads(done.stdout)
    return outcome


# ------------------------------------------------------------------ jump hosts


def _socket_inodes(local_port: int, remote_port: int) -> set[str]:
    """Inodes of the TCP sockets from ``local_port`` to ``remote_port`` (this namespace)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
            if ports == (local_port, remote_port):
                inodes.add(inode)
    return inodes


def _holders(inodes: set[str]) -> set[int]:
    """Pids of the processes that have one of these sockets open."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if links & wanted:
            pids.add(int(proc.name))
    return pids


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def test_jump_host_tunnel_is_used(sshd_factory: SshdFactory, tmp_path: Path) -> None:
    jump = sshd_factory(extra_config=["LogLevel DEBUG1"])
    inner = sshd_factory()
    known = pin(inner, pin(jump, tmp_path / "known_hosts"))
    hop = make_target(jump, tmp_path, name="hop", known_hosts=known)
    target = make_target(inner, tmp_path, name="inner", known_hosts=known, jump=hop)

    with connect(target) as session:
        assert session.via is not None
        assert session.via.target.name == "hop"
        result = session.run("echo $SSH_CONNECTION", timeout=10)
        assert result.success, result
        _, peer_port, _, server_port = result.stdout.split()
        assert int(server_port) == inner.port
        # The inner sshd's peer is a socket held by the jump host's sshd, not by us.
        holders = _holders(_socket_inodes(int(peer_port), inner.port))
        assert holders
        assert all(jump.pid in _ancestors(pid) for pid in holders), holders
        assert os.getpid() not in holders
    assert wait_for_log(jump, f"target {inner.host} port {inner.port}")
    assert wait_for_log(inner, "Accepted publickey")


def test_jump_host_without_forwarding_fails_fast(sshd_factory: SshdFactory, tmp_path: Path) -> None:
    jump = sshd_factory(extra_config=["AllowTcpForwarding no"])
    inner = sshd_factory()
    known = pin(inner, pin(jump, tmp_path / "known_hosts"))
    hop = make_target(jump, tmp_path, name="hop", known_hosts=known)
    target = make_target(inner, tmp_path, name="inner", known_hosts=known, jump=hop)
    reached_before = log_lines(inner, "Connection from")

    started = time.monotonic()
    with pytest.raises(SshConnectError) as info:
        connect(target)
    elapsed = time.monotonic() - started
    assert type(info.value) is SshConnectError
    assert "jump host hop" in info.value.message
    assert f"{inner.host}:{inner.port}" in info.value.message
    assert (info.value.host, info.value.port) == (inner.host, inner.port)
    assert elapsed < 5
    assert wait_for_log(jump, "Accepted publickey")  # the jump host itself let us in
    assert log_lines(inner, "Connection from") == reached_before


def test_jump_host_cannot_reach_the_target(sshd_factory: SshdFactory, tmp_path: Path) -> None:
    jump = sshd_factory()
    known = pin(jump, tmp_path / "known_hosts")
    hop = make_target(jump, tmp_path, name="hop", known_hosts=known)
    port = closed_port()
    target = bare_target(tmp_path, "127.0.0.1", port, name="inner", jump=hop)
    with pytest.raises(SshConnectError) as info:
        connect(target)
    assert f"jump host hop could not reach 127.0.0.1:{port}" in info.value.message


def test_server_behind_a_jump_host_via_the_cli(
    svrctl: Invoke,
    svrctl_env: Path,
    sshd_factory: SshdFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    jump = sshd_factory(extra_config=["LogLevel DEBUG1"])
    inner = sshd_factory()
    for name, server, extra in (("hop", jump, ()), ("inner", inner, ("--jump", "hop"))):
        added = svrctl(
            "server", "add", name, "--host", server.host, "--port", str(server.port),
            "--user", server.username, "--key", str(server.user_key), *extra,
        )  # fmt: skip
        assert added.exit_code == 0, added.output
    for name in ("hop", "inner"):  # the inner key is fetched through the jump host
        trusted = svrctl("server", "trust", name, "--yes")
        assert trusted.exit_code == 0, trusted.output
    known = (svrctl_env / "known_hosts").read_text().splitlines()
    assert sorted(known) == sorted([jump.host_key_line, inner.host_key_line])

    tested = svrctl("server", "test", "inner", "--json")
    assert tested.exit_code == 0, tested.output
    report = json_out(tested)
    assert report["ok"] is True
    assert report["where"] == f"{inner.username}@{inner.host}:{inner.port}"
    shown = json_out(svrctl("server", "show", "inner", "--json"))
    assert shown["jump"] == "hop"
    assert shown["last_seen"] is not None
    # Both the trust and the test went through the jump host's tunnel.
    assert len(wait_for_log(jump, f"target {inner.host} port {inner.port}")) >= 2


# ------------------------------------------------------------ failing to connect


def test_closed_port_is_refused_quickly(tmp_path: Path) -> None:
    port = closed_port()
    target = bare_target(tmp_path, "127.0.0.1", port, connect_timeout=10.0)
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedSshError) as info:
        connect(target)
    assert time.monotonic() - started < 2
    assert f"connection refused by 127.0.0.1:{port}" in info.value.message
    assert info.value.port == port


def test_no_ssh_banner(tmp_path: Path) -> None:
    banner_timeout = 1.0
    with SilentListener() as listener:
        target = bare_target(
            tmp_path, "127.0.0.1", listener.port, connect_timeout=5.0,
            banner_timeout=banner_timeout,
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(BannerTimeoutError) as info:
            connect(target)
        elapsed = time.monotonic() - started
        assert len(listener.accepted) == 1  # TCP was fine; only the banner never came
        with pytest.raises(BannerTimeoutError):
            fetch_host_key(target)  # what `svrctl server trust` uses
    assert banner_timeout <= elapsed < banner_timeout + 5
    assert f"127.0.0.1:{listener.port} accepted the connection but sent no SSH banner" in (
        info.value.message
    )


@pytest.mark.parametrize(
    "greeting",
    [b"", b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 400 Bad Request\r\n\r\n"],
    ids=["nothing", "ssh-banner", "http"],
)
def test_server_that_hangs_up_during_the_handshake(greeting: bytes, tmp_path: Path) -> None:
    # Like sshd over MaxStartups or behind TCP wrappers: it closes at once. That is
    # not a banner timeout, and `server trust` (fetch_host_key) says so too.
    with SilentListener(hang_up=True, greeting=greeting) as listener:
        target = bare_target(
            tmp_path, "127.0.0.1", listener.port, connect_timeout=5.0, banner_timeout=5.0
        )
        started = time.monotonic()
        with pytest.raises(SshConnectError) as info:
            connect(target)
        elapsed = time.monotonic() - started
        with pytest.raises(SshConnectError) as fetched:
            fetch_host_key(target)
    for err in (info.value, fetched.value):
        assert type(err) is SshConnectError
        assert f"127.0.0.1:{listener.port} closed the connection during the SSH handshake" in (
            err.message
        )
    assert elapsed < 5


def test_connect_timeout_when_the_accept_queue_is_full(tmp_path: Path) -> None:
    if Path("/proc/sys/net/ipv4/tcp_abort_on_overflow").read_text().strip() != "0":
        pytest.skip("tcp_abort_on_overflow is set: a full queue answers with a reset")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        # One connection fills the queue (nothing accepts); later SYNs are dropped.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            with pytest.raises(TimeoutError):  # checked without svrctl first
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            target = bare_target(tmp_path, "127.0.0.1", port, connect_timeout=1.0)
            started = time.monotonic()
            with pytest.raises(ConnectTimeoutError) as info:
                connect(target)
            elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 6
    assert f"no answer from 127.0.0.1:{port} within 1 s" in info.value.message


def test_connect_timeout_in_a_private_network_namespace(tmp_path: Path) -> None:
    _require_netns()
    outcome = _in_netns(tmp_path, BLACKHOLE_SETUP, "10.77.0.9", "1.5")
    assert outcome["interfaces"] == ["lo", "svt0", "svt1"]
    assert outcome["outside"] == "ENETUNREACH"  # no route out of the namespace
    assert outcome["error_type"] == "ConnectTimeoutError", outcome
    assert "no answer from 10.77.0.9:22 within 1.5 s" in str(outcome["message"])
    elapsed = outcome["elapsed"]
    assert isinstance(elapsed, float)
    assert 1.5 <= elapsed < 1.5 + 5


def test_unresolvable_name_without_any_dns_traffic(tmp_path: Path) -> None:
    _require_netns()
    # A namespace with only a loopback that is down: no route anywhere, so the
    # resolver's query cannot leave the machine (it fails at once). A private
    # nsswitch.conf (in a private mount namespace) keeps the lookup to /etc/hosts
    # and DNS: no NSS module can hand it to a daemon outside, such as systemd-resolved.
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("hosts: files dns\n")
    host = "svrctl-test-no-such-host.invalid"
    setup = f"mount --bind {shlex.quote(str(nsswitch))} /etc/nsswitch.conf"
    outcome = _in_netns(tmp_path, setup, host, "5", mount=True)
    assert outcome["interfaces"] == ["lo"]
    assert outcome["outside"] == "ENETUNREACH"
    assert outcome["error_type"] == "NameNotResolvedError", outcome
    assert f"cannot resolve host name {host!r}" in str(outcome["message"])
    elapsed = outcome["elapsed"]
    assert isinstance(elapsed, float)
    assert elapsed < 5


# ----------------------------------------------------------------------- fan-out


def _peak_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = running = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start (+1)
        running += step
        peak = max(peak, running)
    return peak


def test_fan_out_to_twenty_servers_with_a_bound(sshd: SshdTarget, tmp_path: Path) -> None:
    known = pin(sshd, tmp_path / "known_hosts")
    targets = [
        make_target(sshd, tmp_path, name=f"host-{i:02d}", known_hosts=known) for i in range(20)
    ]
    dead_port = closed_port()
    targets.insert(7, bare_target(tmp_path, "127.0.0.1", dead_port, name="dead"))
    command = "date +%s.%N; sleep 0.5; date +%s.%N"

    started = time.monotonic()
    outcomes = run_on_many(targets, command, timeout=30, max_parallel=5)
    elapsed = time.monotonic() - started

    assert [o.target.name for o in outcomes] == [t.name for t in targets]
    dead = outcomes[7]
    assert isinstance(dead.error, ConnectionRefusedSshError)
    assert dead.error.port == dead_port
    assert dead.result is None
    assert not dead.success
    intervals = []
    for outcome in outcomes[:7] + outcomes[8:]:
        assert outcome.success, (outcome.target.name, outcome.error, outcome.result)
        assert outcome.result is not None
        assert outcome.result.server == outcome.target.name
        begin, end = (float(v) for v in outcome.result.stdout.split())
        assert end - begin >= 0.5
        intervals.append((begin, end))
    assert len(intervals) == 20
    peak = _peak_overlap(intervals)
    assert 2 <= peak <= 5, peak
    assert elapsed < 20 * 0.5  # one at a time would take 10 s
