"""Running commands over SSH against a real sshd on loopback: no mocks of paramiko.

Covers the result of a command, live lines, timeouts that really stop the remote
processes, bounded output (500 MB with flat memory), quoting of args, and sudo
prompts answered through a pty or stdin without the password ever showing.
Processes on the "server" are checked with the OpenSSH client (``sshd.run``), not
with svrctl, and every timeout test uses its own ``sleep`` durations so tests
cannot see each other's processes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.local_users import remove_user, run_root
from fixtures.sshd import REQUIRE_ENV, SshdTarget, make_key, start_sshd
from helpers_auth import BackgroundThread

from svrctl.exceptions import ChannelClosedError, CommandTimedOutError
from svrctl.shellwords import build_command
from svrctl.ssh.connection import SshSession, connect
from svrctl.ssh.fanout import run_command
from svrctl.ssh.remote import SUDO_PROMPT
from svrctl.ssh.target import SshTarget

pytestmark = pytest.mark.sshd

TIMEOUT = 1.5
# A timed-out command must be gone, and run() must return, within this much after TIMEOUT.
STOP_GRACE = 3.0
MARKER_BYTE = "\x1e"

# ------------------------------------------------------------------------- helpers


def _target(sshd: SshdTarget, workdir: Path, **changes: object) -> SshTarget:
    """An SshTarget for ``sshd``: pinned host key, the fixture's key, no ~/.ssh."""
    known_hosts = workdir / "known_hosts"
    if not known_hosts.exists():
        sshd.write_known_hosts(known_hosts)
    target = SshTarget(
        name="exec-test",
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_path=sshd.user_key,
        key_dir=workdir,
        known_hosts=known_hosts,
        user_known_hosts=None,
    )
    return target.with_changes(**changes) if changes else target


@pytest.fixture(scope="module")
def target(sshd: SshdTarget, tmp_path_factory: pytest.TempPathFactory) -> SshTarget:
    """A target for the shared sshd."""
    return _target(sshd, tmp_path_factory.mktemp("exec-target"))


@pytest.fixture
def session(target: SshTarget) -> Iterator[SshSession]:
    """An open connection to the shared sshd, closed after the test."""
    with connect(target) as opened:
        yield opened


class Lines:
    """An on_line callback that records (stream, line, monotonic time)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()

    def __call__(self, stream: str, line: str) -> None:
        with self._lock:
            self.seen.append((stream, line, time.monotonic()))

    def of(self, stream: str) -> list[str]:
        """Return the lines of one stream, in order."""
        return [line for s, line, _ in self.seen if s == stream]

    @property
    def text(self) -> str:
        """Return every line of every stream, joined."""
        return "\n".join(line for _, line, _ in self.seen)


def _remote_procs(sshd: SshdTarget, pattern: str) -> list[str]:
    """Return ``pid cmdline`` of the server's processes whose command line matches."""
    # Anchored patterns never match the shell that runs pgrep itself.
    result = sshd.run(f"pgrep -a -f {shlex.quote(pattern)}")
    assert result.returncode in (0, 1), f"pgrep failed: {result.stderr}"
    return result.stdout.splitlines()


def _wait_gone(sshd: SshdTarget, pattern: str, within: float = STOP_GRACE) -> list[str]:
    """Poll until no process matches; return what is still there after ``within``."""
    deadline = time.monotonic() + within
    while True:
        left = _remote_procs(sshd, pattern)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _kill_leftovers(sshd: SshdTarget, pattern: str) -> None:
    """Kill, by pid, what a failed test left running (so later tests start clean)."""
    pids = [line.split()[0] for line in _remote_procs(sshd, pattern)]
    if pids:
        sshd.run("kill -KILL " + " ".join(pids))


class ProcessWatch(BackgroundThread):
    """While a command runs, poll until processes with the given command lines show up.

    Proves the processes a timeout test expects to be killed really existed. The
    server is this machine (loopback), so this polls with a local pgrep, which is
    quick enough to poll often within a short timeout; the check that they are
    gone afterwards goes through the OpenSSH client.
    """

    join_timeout = 30.0

    def __init__(self, pattern: str, expected: set[str]) -> None:
        super().__init__()
        self.pattern = pattern
        self.expected = expected
        self.seen: set[str] = set()

    def _run(self) -> None:
        while not self._stop.is_set() and not self.expected <= self.seen:
            found = subprocess.run(
                ["pgrep", "-a", "-f", self.pattern], capture_output=True, text=True, check=False
            )
            for line in found.stdout.splitlines():
                self.seen.add(line.split(maxsplit=1)[1])
            self._stop.wait(0.05)


# -------------------------------------------------------------------------- basics


def test_stdout_stderr_exit_code_and_duration(session: SshSession) -> None:
    command = "echo out; echo err >&2; sleep 0.3; printf 'no newline'"
    started = time.monotonic()
    result = session.run(command, timeout=10)
    elapsed = time.monotonic() - started

    assert result.server == "exec-test"
    assert result.command == command  # what the user asked for, not the wrapped text
    assert result.stdout == "out\nno newline"
    assert result.stderr == "err\n"  # the session-id marker line is gone
    assert (result.stdout_bytes, result.stderr_bytes) == (14, 4)
    assert not result.stdout_truncated and not result.stderr_truncated
    assert result.exit_code == 0
    assert result.error is None and not result.timed_out
    assert result.success and result.status == "success"
    assert 300 <= result.duration_ms <= elapsed * 1000 + 50


def test_nonzero_exit_is_a_failure_not_an_error(session: SshSession) -> None:
    result = session.run("echo partial; echo 'bad thing' >&2; exit 7", timeout=10)
    assert result.exit_code == 7
    assert result.stdout == "partial\n" and result.stderr == "bad thing\n"
    assert result.error is None and not result.timed_out
    assert not result.success and result.status == "failed"


def test_a_command_killed_by_a_signal_has_no_exit_code(session: SshSession) -> None:
    result = session.run("echo before; kill -KILL $$", timeout=10)
    assert result.stdout == "before\n"
    assert result.exit_code is None
    assert isinstance(result.error, ChannelClosedError)
    assert result.status == "failed" and not result.timed_out


def test_byte_counts_are_bytes_not_characters(session: SshSession) -> None:
    result = session.run("printf 'h\\303\\251\\n'", timeout=10)  # "hé\n": 4 bytes, 3 chars
    assert result.stdout == "hé\n"
    assert result.stdout_bytes == 4


def test_the_same_connection_runs_commands_one_after_another(session: SshSession) -> None:
    outputs = [session.run(f"echo {i}", timeout=10).stdout for i in range(5)]
    assert outputs == [f"{i}\n" for i in range(5)]


def test_run_command_connects_runs_and_closes(target: SshTarget) -> None:
    result = run_command(target, "id -un; exit 3", timeout=10)
    assert result.stdout == f"{target.username}\n"
    assert result.exit_code == 3


def test_lines_arrive_while_the_command_runs(session: SshSession) -> None:
    lines = Lines()
    result = session.run(
        "echo first; sleep 1; echo second >&2; echo third", timeout=10, on_line=lines
    )
    returned = time.monotonic()

    # Each stream keeps its order (the two streams are read independently).
    assert lines.of("stdout") == ["first", "third"]
    assert lines.of("stderr") == ["second"]
    first_at = next(at for s, _, at in lines.seen if s == "stdout")
    second_at = next(at for s, _, at in lines.seen if s == "stderr")
    # "first" was delivered while the command still had a second to run.
    assert returned - first_at >= 0.8, f"first line came {returned - first_at:.2f}s before the end"
    assert second_at - first_at >= 0.8
    assert result.stdout == "first\nthird\n" and result.stderr == "second\n"


def test_lines_keep_their_order_and_the_last_unterminated_line(session: SshSession) -> None:
    lines = Lines()
    result = session.run("seq 1 20000; printf 'tail'", timeout=30, on_line=lines)
    expected = [str(i) for i in range(1, 20001)] + ["tail"]
    assert lines.of("stdout") == expected
    assert result.stdout == "\n".join(expected)
    assert lines.of("stderr") == []  # the marker line is not a line of output


def test_stdin_is_not_a_terminal_without_pty(session: SshSession) -> None:
    result = session.run("[ -t 0 ] && echo tty || echo notty", timeout=10)
    assert result.stdout == "notty\n"


def test_pty_gives_a_terminal_and_merges_stderr(session: SshSession) -> None:
    lines = Lines()
    result = session.run(
        "[ -t 0 ] && echo tty || echo notty; echo err >&2", timeout=10, pty=True, on_line=lines
    )
    assert result.exit_code == 0
    # The pid marker travels through the pty too (with \r\n) and is removed there.
    assert result.stdout.replace("\r\n", "\n") == "tty\nerr\n"
    assert result.stderr == ""
    assert lines.of("stdout") == ["tty", "err"]


# ------------------------------------------------------------------------ timeouts

TIMEOUT_CASES = [
    pytest.param("trap '' HUP; sleep 7301", "^sleep 7301$", {"sleep 7301"}, id="ignores-sighup"),
    pytest.param(
        "sleep 7302 | sleep 7303 | cat",
        "^sleep 730[23]$",
        {"sleep 7302", "sleep 7303"},
        id="pipeline",
    ),
    pytest.param(
        "nohup sleep 7304 & sleep 7305",
        "^sleep 730[45]$",
        {"sleep 7304", "sleep 7305"},
        id="nohup-child",
    ),
    pytest.param(
        "setsid sleep 7306 & sleep 7307",
        "^sleep 730[67]$",
        {"sleep 7306", "sleep 7307"},
        id="setsid-child",
    ),
    pytest.param(
        "exec >&- 2>&-; sleep 7308", "^sleep 7308$", {"sleep 7308"}, id="closed-stdout-stderr"
    ),
]


@pytest.mark.parametrize(("command", "pattern", "expected"), TIMEOUT_CASES)
def test_timeout_stops_every_process_of_the_command(
    sshd: SshdTarget, session: SshSession, command: str, pattern: str, expected: set[str]
) -> None:
    clean = False
    try:
        with ProcessWatch(pattern, expected) as watch:
            started = time.monotonic()
            result = session.run(command, timeout=TIMEOUT)
            elapsed = time.monotonic() - started
        assert watch.seen == expected, "the command's processes never showed up on the server"

        assert result.timed_out and result.status == "timed_out"
        assert not result.success and result.exit_code is None
        assert isinstance(result.error, CommandTimedOutError)
        assert result.error.command == command
        assert TIMEOUT <= elapsed < TIMEOUT + STOP_GRACE, f"returned after {elapsed:.2f}s"
        assert abs(result.duration_ms / 1000 - elapsed) < 0.5

        left = _wait_gone(sshd, pattern)
        assert left == [], f"still running on the server after the timeout: {left}"
        clean = True
        # The connection itself survives a timeout.
        assert session.run("echo still-here", timeout=10).stdout == "still-here\n"
    finally:
        if not clean:
            _kill_leftovers(sshd, pattern)


def test_timeout_with_a_pty_stops_the_command(sshd: SshdTarget, session: SshSession) -> None:
    pattern = "^sleep 731[23]$"
    clean = False
    try:
        with ProcessWatch(pattern, {"sleep 7312", "sleep 7313"}) as watch:
            result = session.run(
                "trap '' HUP; setsid sleep 7312 & sleep 7313", timeout=TIMEOUT, pty=True
            )
        assert watch.seen == {"sleep 7312", "sleep 7313"}
        assert result.timed_out and isinstance(result.error, CommandTimedOutError)
        assert MARKER_BYTE not in result.stdout
        assert _wait_gone(sshd, pattern) == []
        clean = True
    finally:
        if not clean:
            _kill_leftovers(sshd, pattern)


def test_output_before_a_timeout_is_kept(sshd: SshdTarget, session: SshSession) -> None:
    lines = Lines()
    clean = False
    try:
        result = session.run(
            "echo before; echo oops >&2; sleep 7311", timeout=TIMEOUT, on_line=lines
        )
        assert result.timed_out
        assert result.stdout == "before\n" and result.stderr == "oops\n"
        assert lines.of("stdout") == ["before"] and lines.of("stderr") == ["oops"]
        assert _wait_gone(sshd, "^sleep 7311$") == []
        clean = True
    finally:
        if not clean:
            _kill_leftovers(sshd, "^sleep 7311$")


def test_timeout_holds_while_output_floods_a_slow_consumer(
    sshd: SshdTarget, session: SshSession
) -> None:
    """Endless output faster than on_line handles it must not keep run() past its timeout."""
    pattern = "^yes svrctl-7309$"
    count = 0

    def slow(stream: str, line: str) -> None:
        nonlocal count
        count += 1
        if count % 200 == 0:
            time.sleep(0.001)

    outcome: dict[str, object] = {}

    def work() -> None:
        started = time.monotonic()
        outcome["result"] = session.run(
            "yes svrctl-7309", timeout=TIMEOUT, output_limit=10_000, on_line=slow
        )
        outcome["elapsed"] = time.monotonic() - started

    runner = threading.Thread(target=work, daemon=True)
    clean = False
    try:
        runner.start()
        runner.join(TIMEOUT + 15)
        assert not runner.is_alive(), "run() kept reading past its timeout"
        result = outcome["result"]
        elapsed = outcome["elapsed"]
        assert isinstance(elapsed, float)
        assert elapsed < TIMEOUT + STOP_GRACE + 1, f"returned after {elapsed:.2f}s"
        assert getattr(result, "timed_out", False)
        assert getattr(result, "stdout_truncated", False)
        assert count > 1000
        assert _wait_gone(sshd, pattern) == []
        clean = True
    finally:
        if not clean:
            _kill_leftovers(sshd, pattern)  # also lets a stuck run() see the end of its output
            runner.join(30)


# ------------------------------------------------------------------ bounded output


def _seq_bytes(n: int) -> bytes:
    return "".join(f"{i}\n" for i in range(1, n + 1)).encode()


def test_output_over_the_limit_keeps_head_and_tail_and_counts_every_byte(
    session: SshSession,
) -> None:
    limit = 100_000
    full = _seq_bytes(700_000)  # about 4.9 MB, head and tail differ
    counts = {"stdout": 0, "stderr": 0}
    last = {"stdout": "", "stderr": ""}

    def count(stream: str, line: str) -> None:
        counts[stream] += 1
        last[stream] = line

    result = session.run(
        "seq 1 700000; seq 1 700000 >&2", timeout=60, output_limit=limit, on_line=count
    )
    assert result.exit_code == 0
    for text, truncated, total in [
        (result.stdout, result.stdout_truncated, result.stdout_bytes),
        (result.stderr, result.stderr_truncated, result.stderr_bytes),
    ]:
        assert truncated
        assert total == len(full)
        head, tail = full[: limit // 2].decode(), full[-(limit - limit // 2) :].decode()
        assert text.startswith(head)
        assert text.endswith(tail)
        middle = text[len(head) : len(text) - len(tail)]
        assert f"{len(full) - limit} bytes omitted" in middle
        assert len(middle) < 200
    # The live lines are not cut by the capture limit: every line was seen.
    assert counts == {"stdout": 700_000, "stderr": 700_000}
    assert last == {"stdout": "700000", "stderr": "700000"}


def test_repeated_output_over_the_limit(session: SshSession) -> None:
    result = session.run("yes abcdefghi | head -c 5000000", timeout=60, output_limit=100_000)
    assert result.stdout_truncated and result.stdout_bytes == 5_000_000
    assert result.stdout.startswith("abcdefghi\n" * 5000)
    assert result.stdout.endswith("abcdefghi\n" * 5000)
    assert "4900000 bytes omitted" in result.stdout
    assert 100_000 <= len(result.stdout) < 100_200


def test_output_at_the_limit_is_kept_whole(session: SshSession) -> None:
    full = _seq_bytes(1000)
    result = session.run("seq 1 1000", timeout=10, output_limit=len(full))
    assert result.stdout == full.decode()
    assert not result.stdout_truncated and result.stdout_bytes == len(full)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from svrctl.ssh.fanout import run_command
    from svrctl.ssh.target import SshTarget

    host, port, user, key, known, command = sys.argv[1:7]
    target = SshTarget(
        name="memory", host=host, port=int(port), username=user, key_path=Path(key),
        key_dir=Path(key).parent, known_hosts=Path(known), user_known_hosts=None,
    )
    started = time.monotonic()
    result = run_command(target, command, timeout=120, output_limit=1024 * 1024)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
    # (pytest) across exec, VmHWM is this process's own peak.
    status = Path("/proc/self/status").read_text()
    peak_kb = int(status.split("VmHWM:")[1].split()[0])
    print(json.dumps({
        "exit_code": result.exit_code,
        "stdout_bytes": result.stdout_bytes,
        "kept_chars": len(result.stdout),
        "truncated": result.stdout_truncated,
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }))
    """
)


def _measure(target: SshTarget, command: str) -> dict[str, float]:
    assert target.key_path is not None and target.known_hosts is not None
    argv = [sys.executable, "-c", _MEMORY_SCRIPT, target.host, str(target.port)]
    argv += [target.username, str(target.key_path), str(target.known_hosts), command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def test_500_mb_of_output_with_flat_memory(target: SshTarget) -> None:
    baseline = _measure(target, "echo tiny")
    big = _measure(target, "head -c 500000000 /dev/zero")
    print(f"\npeak RSS: baseline {baseline['peak_rss_mb']} MB, 500 MB run {big['peak_rss_mb']} MB")
    print(f"500 MB run: {big}")

    assert baseline["stdout_bytes"] == 5
    assert big["exit_code"] == 0
    assert big["stdout_bytes"] == 500_000_000
    assert big["truncated"]
    assert big["kept_chars"] < 1024 * 1024 + 200
    assert big["peak_rss_mb"] < 150, big
    assert big["peak_rss_mb"] - baseline["peak_rss_mb"] < 60, (baseline, big)


def test_output_that_is_not_utf8_is_kept_with_replacement_characters(
    session: SshSession,
) -> None:
    lines = Lines()
    result = session.run(
        "printf '\\377\\376 ok\\n'; printf 'bad \\303 end\\n' >&2", timeout=10, on_line=lines
    )
    assert result.exit_code == 0
    assert result.stdout == "\ufffd\ufffd ok\n"
    assert result.stderr == "bad \ufffd end\n"
    assert (result.stdout_bytes, result.stderr_bytes) == (6, 10)
    assert lines.of("stdout") == ["\ufffd\ufffd ok"]
    assert lines.of("stderr") == ["bad \ufffd end"]


# ------------------------------------------------------------------------- quoting

# Were any word run as shell code, it would create this file.
PWNED = Path("/tmp/svrctl-test-exec-pwned")
HOSTILE = [
    "a b",
    f"; touch {PWNED}",
    f"$(touch {PWNED})",
    f"`touch {PWNED}`",
    "it's",
    "'single'",
    '"double"',
    "line1\nline2",
    "*",
    "~",
    "",
    "$HOME",
    "back\\slash",
    "tab\there",
    "-n",
    "%s%d",
    "ünïcødé",
    f"a && b || c > {PWNED}",
]


def test_list_args_reach_the_remote_command_as_literal_words(session: SshSession) -> None:
    PWNED.unlink(missing_ok=True)
    result = session.run(build_command("printf '%s\\0'", HOSTILE), timeout=10)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split("\0")[:-1] == HOSTILE
    assert result.stdout.endswith("\0")
    assert not PWNED.exists()


def test_object_args_reach_the_remote_command_as_literal_options(session: SshSession) -> None:
    PWNED.unlink(missing_ok=True)
    args: dict[str, object] = {"opt": HOSTILE, "flag": True, "off": False, "none": None, "n": 3}
    result = session.run(build_command("printf '%s\\0'", args), timeout=10)
    assert result.exit_code == 0, result.stderr
    expected = [w for word in HOSTILE for w in ("--opt", word)] + ["--flag", "--n", "3"]
    assert result.stdout.split("\0")[:-1] == expected
    assert not PWNED.exists()


# ---------------------------------------------------------------------------- sudo

SUDO_USER = "svrctl-sudo"
SUDOERS_DROPIN = Path("/etc/sudoers.d/svrctl-test")
SUDO_BIN = Path("/usr/bin/sudo")
# The user and drop-in are machine-wide: a second test run at the same time waits here.
SUDO_LOCK = Path("/run/lock/svrctl-sudo-test.lock")


@dataclass
class SudoHost:
    """An sshd where SUDO_USER can log in with a key and sudo only with its password."""

    sshd: SshdTarget
    target: SshTarget
    password: str


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} and {REQUIRE_ENV}=1")
    pytest.skip(reason)


def _ensure_sudo() -> None:
    if SUDO_BIN.exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "sudo"]
    for step in ([install], [["apt-get", "update", "-qq"], install]):
        for argv in step:
            subprocess.run(argv, env=env, capture_output=True, timeout=300, check=False)
        if SUDO_BIN.exists():
            return
    _unavailable(f"{SUDO_BIN} is missing and apt-get could not install sudo")


@pytest.fixture(scope="module")
def sudo_host(sshd: SshdTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SudoHost]:
    """A user with a password and a sudo rule that requires it, reachable over SSH.

    Needs root: creates the user and an /etc/sudoers.d drop-in, and removes both after.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user with a sudo rule")
    _ensure_sudo()
    workdir = tmp_path_factory.mktemp("sudo")
    SUDO_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with SUDO_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _sudo_host(workdir)


def _sudo_host(workdir: Path) -> Iterator[SudoHost]:
    remove_user(SUDO_USER, SUDOERS_DROPIN)  # a previous run that was killed may have left it
    password = "pw-" + secrets.token_urlsafe(18)
    server: SshdTarget | None = None
    try:
        run_root(["useradd", "--create-home", "--shell", "/bin/bash", SUDO_USER])
        run_root(["chpasswd"], input=f"{SUDO_USER}:{password}\n")
        rule = workdir / "sudoers"
        rule.write_text(f"{SUDO_USER} ALL=(ALL) ALL\n")
        run_root(["visudo", "-c", "-q", "-f", str(rule)])
        shutil.copyfile(rule, SUDOERS_DROPIN)
        SUDOERS_DROPIN.chmod(0o440)
        run_root(["visudo", "-c", "-q"])

        # The fixture sshd's AuthorizedKeysFile is a root-only file in its workdir and
        # sshd reads it as the user logging in, so this user gets its own file.
        key = make_key(workdir / "sudo_user_key", comment="svrctl-test-sudo")
        user = pwd.getpwnam(SUDO_USER)
        ssh_dir = Path(user.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(key.with_name(key.name + ".pub").read_text())
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, user.pw_uid, user.pw_gid)
        server = start_sshd(
            workdir / "sshd",
            extra_config=[f"Match User {SUDO_USER}", "    AuthorizedKeysFile .ssh/authorized_keys"],
        )
        target = _target(server, workdir, username=SUDO_USER, key_path=key, sudo_password=password)
        check = run_command(target, "id -un", timeout=10)
        assert check.stdout == f"{SUDO_USER}\n", check
        yield SudoHost(server, target, password)
    finally:
        if server is not None:
            server.stop()
        remove_user(SUDO_USER, SUDOERS_DROPIN)


def _assert_secret_absent(secret: str, texts: list[str]) -> None:
    for text in texts:
        assert secret not in text
        assert "********" not in text  # never echoed in the first place, not just masked
        assert MARKER_BYTE not in text
        assert SUDO_PROMPT not in text and "svrctl-sudo-prompt" not in text


def test_sudo_with_pty_answers_the_prompt(
    sudo_host: SudoHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # paramiko's debug log too
    lines = Lines()
    result = run_command(
        sudo_host.target, "sudo -k; sudo id -u", timeout=20, pty=True, on_line=lines
    )
    assert result.exit_code == 0, result
    assert "0" in [line.strip() for line in result.stdout.splitlines()]
    _assert_secret_absent(
        sudo_host.password, [result.stdout, result.stderr, lines.text, caplog.text]
    )


def test_sudo_with_pty_answers_every_prompt(sudo_host: SudoHost) -> None:
    result = run_command(
        sudo_host.target, "sudo -k; sudo id -u; sudo -k; sudo id -un", timeout=20, pty=True
    )
    assert result.exit_code == 0, result
    words = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert words[-2:] == ["0", "root"]
    _assert_secret_absent(sudo_host.password, [result.stdout, result.stderr])


def test_sudo_without_pty_reads_the_password_from_stdin(
    sudo_host: SudoHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    lines = Lines()
    result = run_command(sudo_host.target, "sudo -S -k id -u", timeout=20, on_line=lines)
    assert result.exit_code == 0, result
    assert result.stdout == "0\n"
    _assert_secret_absent(
        sudo_host.password, [result.stdout, result.stderr, lines.text, caplog.text]
    )


def test_sudo_without_pty_and_without_s_needs_a_terminal(sudo_host: SudoHost) -> None:
    result = run_command(sudo_host.target, "sudo -k; sudo id -u", timeout=20)
    assert result.exit_code == 1
    assert "terminal" in result.stderr
    _assert_secret_absent(sudo_host.password, [result.stdout, result.stderr])


@pytest.mark.parametrize(
    ("command", "pty"),
    [
        pytest.param("sudo -k; sudo id -u", True, id="pty"),
        pytest.param("sudo -S -k id -u", False, id="stdin"),
    ],
)
def test_sudo_without_a_password_fails_quickly(
    sudo_host: SudoHost, caplog: pytest.LogCaptureFixture, command: str, pty: bool
) -> None:
    target = sudo_host.target.with_changes(sudo_password=None)
    started = time.monotonic()
    result = run_command(target, command, timeout=30, pty=pty)
    elapsed = time.monotonic() - started
    assert not result.timed_out, f"sudo hung until the timeout: {result}"
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert result.exit_code == 1
    assert "0" not in [line.strip() for line in result.stdout.splitlines()]
    assert "names no sudo secret" in caplog.text
    _assert_secret_absent(sudo_host.password, [result.stdout, result.stderr])
