"""Linux network namespaces for end-to-end tests: sites, veth links, a TCP forwarder.

A `Topology` builds one namespace per "site", each joined to the host (the
central side) by its own veth pair with a /30, and removes them again. Nothing
routes between sites: a site's namespace knows only its /30 and its own
loopback, so it reaches the host-side address of its link and nothing else;
addresses added to a site's loopback (where its servers listen) are reachable
only from inside that site.

Every name starts with a prefix that holds the creating process id and a random
token, so parallel runs do not clash and `remove_leftovers` can tell the
namespaces of crashed runs (dead pid) from those of running ones.

Run as a script, ``python netns.py forward LISTEN=TARGET ...`` is a small TCP
forwarder (used to let sites reach services that listen on 127.0.0.1 only); it
prints ``listening LISTEN_HOST LISTEN_PORT TARGET`` per listener, then ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IP = "ip"
NETNS_PREFIX = "svrctl-e2e-"
LINK_PREFIX = "sve"  # host-side veth ends: sve<token><index>, at most 15 characters
NETNS_DIR = Path("/run/netns")
# Site links are /30s in 10.213.N.0/24; site servers live on 10.214.N.0/24 (loopback
# addresses inside each site, never routed anywhere).
LINK_NET = "10.213"
SERVER_NET = "10.214"
COMMAND_TIMEOUT = 20.0

_NAME_RE = re.compile(rf"^{re.escape(NETNS_PREFIX)}(\d+)-([0-9a-f]{{6}})-")
_LINK_RE = re.compile(rf"^{LINK_PREFIX}([0-9a-f]{{6}})\d$")


class NetnsError(RuntimeError):
    """An `ip` command failed."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS...``; raise NetnsError with its stderr when it fails and ``check``."""
    result = subprocess.run(
        [IP, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if check and result.returncode != 0:
        raise NetnsError(
            f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def unavailable_reason() -> str | None:
    """Return why namespaces cannot be made here (not root, no `ip`), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (the test creates namespaces and veth pairs)"
    if shutil.which(IP) is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def netns_exec(ns: str, argv: Sequence[str]) -> list[str]:
    """Return the argv that runs ``argv`` inside namespace ``ns``.

    ``ip netns exec`` execs the command in place: the process it starts keeps the pid.
    """
    return [IP, "netns", "exec", ns, *argv]


def ns_popen(
    ns: str, argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``ns`` in its own session, stdout and stderr to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            netns_exec(ns, argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def tcp_connect_error(
    host: str, port: int, *, ns: str | None = None, timeout: float = 2.0
) -> str | None:
    """Try a TCP connection (inside ``ns``, else from here); return None or why it failed."""
    if ns is None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
    code = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout={timeout}).close()\n"
        "except OSError as exc:\n"
        "    print(f'{type(exc).__name__}: {exc}'); sys.exit(1)\n"
    )
    result = subprocess.run(
        netns_exec(ns, [sys.executable, "-I", "-c", code]),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout + COMMAND_TIMEOUT,
        check=False,
    )
    if result.returncode == 0:
        return None
    return (result.stdout + result.stderr).strip() or f"exit code {result.returncode}"


def netns_inode(ns: str) -> int:
    """Return the inode of a named namespace (compare with /proc/PID/ns/net)."""
    return (NETNS_DIR / ns).stat().st_ino


def process_netns_inode(pid: int) -> int:
    """Return the inode of the network namespace process ``pid`` lives in."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


@dataclass
class Site:
    """One site: a namespace linked to the host by a veth pair with a /30.

    Attributes:
        name: The site's name (``site-a``).
        ns: The namespace's name.
        host_link: The veth end on the host.
        host_addr: The host-side address of the link: what the site reaches the
            central services at.
        site_addr: The site-side address of the link (interface ``uplink``).
        server_addr: An address on the site's loopback, for its servers: the host
            and other sites have no route to it.
    """

    name: str
    ns: str
    host_link: str
    host_addr: str
    site_addr: str
    server_addr: str


@dataclass
class Topology:
    """Sites in namespaces, linked to the host only; `remove` undoes everything."""

    token: str = field(default_factory=lambda: secrets.token_hex(3))
    sites: dict[str, Site] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """Every namespace of this topology starts with this."""
        return f"{NETNS_PREFIX}{os.getpid()}-{self.token}-"

    def build(self, names: Sequence[str]) -> dict[str, Site]:
        """Create one linked namespace per site name; on error remove what was made."""
        subnet = _free_subnet()
        try:
            for index, name in enumerate(names):
                self._add_site(index, name, subnet)
        except BaseException:
            self.remove()
            raise
        return self.sites

    def _add_site(self, index: int, name: str, subnet: int) -> None:
        ns = self.prefix + name
        base = index * 4
        site = Site(
            name=name,
            ns=ns,
            host_link=f"{LINK_PREFIX}{self.token}{index}",
            host_addr=f"{LINK_NET}.{subnet}.{base + 1}",
            site_addr=f"{LINK_NET}.{subnet}.{base + 2}",
            server_addr=f"{SERVER_NET}.{subnet}.{10 * (index + 1)}",
        )
        ip("netns", "add", ns)
        self.sites[name] = site  # from here on, remove() deletes it
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{site.server_addr}/32", "dev", "lo")
        ip("link", "add", site.host_link, "type", "veth", "peer", "name", "uplink", "netns", ns)
        ip("addr", "add", f"{site.host_addr}/30", "dev", site.host_link)
        ip("link", "set", site.host_link, "up")
        ip("-n", ns, "addr", "add", f"{site.site_addr}/30", "dev", "uplink")
        ip("-n", ns, "link", "set", "uplink", "up")

    def remove(self) -> list[str]:
        """Kill what still runs in the namespaces, delete them and their links.

        Returns what could not be removed (empty when all is gone).
        """
        problems: list[str] = []
        for site in list(self.sites.values()):
            problems += remove_namespace(site.ns)
            if ip("link", "show", site.host_link, check=False).returncode == 0:
                result = ip("link", "del", site.host_link, check=False)
                if result.returncode != 0:
                    problems.append(f"link {site.host_link}: {result.stderr.strip()}")
            del self.sites[site.name]
        return problems


def remove_namespace(ns: str) -> list[str]:
    """Kill every process inside ``ns`` and delete it; return problems, if any."""
    problems: list[str] = []
    pids = ip("netns", "pids", ns, check=False)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while ip("netns", "pids", ns, check=False).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    result = ip("netns", "del", ns, check=False)
    if result.returncode != 0 and (NETNS_DIR / ns).exists():
        problems.append(f"namespace {ns}: {result.stderr.strip()}")
    return problems


def remove_leftovers() -> list[str]:
    """Remove namespaces and links of earlier runs whose process is gone; return their names.

    Only names with this module's prefixes are touched, and only those whose
    creating pid no longer runs (a parallel run's namespaces stay).
    """
    removed: list[str] = []
    alive_tokens: set[str] = set()
    for ns in _namespaces():
        match = _NAME_RE.match(ns)
        if match is None:
            continue
        pid, token = int(match.group(1)), match.group(2)
        if _pid_alive(pid):
            alive_tokens.add(token)
            continue
        remove_namespace(ns)
        removed.append(ns)
    links = ip("-o", "link", "show", "type", "veth", check=False).stdout
    for line in links.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0] if ":" in line else ""
        match = _LINK_RE.match(name)
        if match is None or match.group(1) in alive_tokens:
            continue
        if ip("link", "del", name, check=False).returncode == 0:
            removed.append(name)
    return removed


def _namespaces() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_subnet() -> int:
    """Pick N so that 10.213.N.0/24 is not used by any address or route on the host."""
    used: list[ipaddress.IPv4Network] = []
    for line in (
        ip("-4", "-o", "addr", "show").stdout + "\n" + ip("-4", "route", "show").stdout
    ).splitlines():
        for word in line.split():
            with contextlib.suppress(ValueError):
                if word[0].isdigit():
                    used.append(ipaddress.IPv4Network(word, strict=False))
    candidates = list(range(256))
    random.shuffle(candidates)
    for n in candidates:
        net = ipaddress.IPv4Network(f"{LINK_NET}.{n}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return n
    raise NetnsError(f"no free /24 in {LINK_NET}.0.0/16 on this host")


# ----------------------------------------------------------------------------- forwarder


@dataclass
class Forwarder:
    """A TCP forwarder process: each listener on the host relays to a target.

    Attributes:
        ports: ``(listen host, target)`` -> the port it listens on.
    """

    process: subprocess.Popen[str]
    log: Path
    ports: dict[tuple[str, str], int]

    def port(self, listen_host: str, target: str) -> int:
        """Return the port that relays ``listen_host`` to ``target`` (``HOST:PORT``)."""
        return self.ports[(listen_host, target)]

    def stop(self) -> None:
        """Stop the forwarder (and every relayed connection)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_forwarder(
    routes: Sequence[tuple[str, str]], log: Path, timeout: float = 20.0
) -> Forwarder:
    """Start a forwarder listening on each ``(listen host, target HOST:PORT)`` (free port)."""
    argv = [sys.executable, "-I", str(Path(__file__).resolve()), "forward"]
    argv += [f"{host}:0={target}" for host, target in routes]
    err = log.open("ab")
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        start_new_session=True,
    )
    err.close()
    forwarder = Forwarder(process, log, {})
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        if line.startswith("listening "):
            _, host, port, target = line.split()
            forwarder.ports[(host, target)] = int(port)
        elif line.strip() == "ready":
            return forwarder
        elif not line or time.monotonic() > deadline:
            forwarder.stop()
            raise NetnsError(
                f"the forwarder did not start:\n{log.read_text(errors='replace')[-2000:]}"
            )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()


async def _relay(
    target: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(*target)
    except OSError as exc:
        print(f"cannot reach {target}: {exc}", file=sys.stderr, flush=True)
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            w.close()


async def _forward(specs: Sequence[str]) -> None:
    servers = []
    for spec in specs:
        listen, _, target = spec.partition("=")
        host, _, port = listen.rpartition(":")
        t_host, _, t_port = target.rpartition(":")
        dest = (t_host, int(t_port))

        async def handle(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, dest: tuple[str, int] = dest
        ) -> None:
            await _relay(dest, r, w)

        server = await asyncio.start_server(handle, host, int(port), reuse_address=True)
        bound = server.sockets[0].getsockname()[1]
        print(f"listening {host} {bound} {target}", flush=True)
        servers.append(server)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    parent = os.getppid()
    # A test process that dies without stopping the forwarder does not leave it behind.
    while not stop.is_set() and os.getppid() == parent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    for server in servers:
        server.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "forward":
        asyncio.run(_forward(sys.argv[2:]))
    else:
        sys.exit(f"usage: {sys.argv[0]} forward LISTEN_HOST:PORT=TARGET_HOST:PORT ...")
