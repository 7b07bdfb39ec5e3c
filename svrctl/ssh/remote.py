"""The shell text svrctl sends around a user's command, so a timeout can stop all of it.

sshd starts every exec request in a new session whose leader is the user's
login shell. Two lines put in front of the command make that shell print its
pid (the session id) on stderr behind a marker and set sudo's prompt; then the
same shell runs the command, exactly as a plain ``ssh host CMD`` would. The
login shell must be POSIX-like (sh, bash, dash, zsh, ksh). On a timeout,
:func:`kill_script` freezes and kills every process in that session and every
descendant of it, including children that ignore SIGHUP or left the process
group, so nothing the command started keeps running.
"""

from __future__ import annotations

import re
import shlex

__all__ = ["PID_MARKER", "SUDO_PROMPT", "kill_script", "parse_pid_line", "wrap_command"]

PID_MARKER = b"\x1esvrctl-pid "
# sudo prints this instead of "[sudo] password for ...", so svrctl knows when to answer.
SUDO_PROMPT = "\x1esvrctl-sudo-prompt\x1e"
_PID_LINE = re.compile(rb"\x1esvrctl-pid (\d+)\r?\n")


def wrap_command(command: str) -> str:
    """Return the remote command text: report the session id, set sudo's prompt, run it."""
    return (
        "printf '\\036svrctl-pid %s\\n' \"$$\" >&2\n"
        f"SUDO_PROMPT={shlex.quote(SUDO_PROMPT)}; export SUDO_PROMPT\n"
        f"{command}"
    )


def parse_pid_line(data: bytes) -> tuple[int | None, bytes]:
    """Find the pid marker line at the start of ``data``; return (pid, data without it)."""
    match = _PID_LINE.search(data)
    if match is None:
        return None, data
    return int(match.group(1)), data[: match.start()] + data[match.end() :]


def kill_script(session_id: int) -> str:
    """Return a shell script that stops every process of a session and its descendants."""
    sid = int(session_id)
    # ps prints pid, ppid and sid; awk collects the session, then every descendant.
    collect = (
        f"ps -e -o pid= -o ppid= -o sid= | awk -v s={sid} -v me=$$ '"
        "{ pid[NR]=$1; ppid[NR]=$2; if ($3 == s) hit[$1]=1 } "
        "END { do { more=0; for (i in pid) if (!(pid[i] in hit) && (ppid[i] in hit)) "
        "{ hit[pid[i]]=1; more=1 } } while (more); "
        "for (p in hit) if (p != me) print p }'"
    )
    return (
        f"pids=$({collect}); "
        '[ -n "$pids" ] || exit 0; '
        "kill -STOP $pids 2>/dev/null; kill -KILL $pids 2>/dev/null; "
        "sleep 0.2; "
        f"pids=$({collect}); "
        '[ -z "$pids" ] || kill -KILL $pids 2>/dev/null; exit 0'
    )
