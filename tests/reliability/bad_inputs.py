"""Every bad input svrctl is given, and how it answers: one table, as data.

Each row names an entry point, the input (a command line, or the parameters of a
Custom run of the ``run-task`` flow), what must be set up first, the message
svrctl must answer with (``message``: what is wrong and why; ``hint``: what to do)
and the outcome: the CLI's exit code, or the flow run's final state.
``tests/reliability/test_bad_input.py`` runs every row; ``docs/bad-input.md`` is
made from the same rows::

    python -m tests.reliability.bad_inputs --markdown > docs/bad-input.md

In an input, ``$TMP`` stands for a scratch directory of the test and ``$TASK``
for the id of the task ``t1`` of the setup.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DOC_PATH", "ENTRY_POINTS", "ROWS", "Row", "markdown"]

DOC_PATH = "docs/bad-input.md"

# What each setup step makes (the test makes them with the CLI, or as noted).
SETUPS = {
    "s1": "server s1 (192.0.2.10, user admin)",
    "t1": "server s1 and task t1 on it (`true`)",
    "n1": "ntfy channel n1",
    "sshd": "server k1 on a real sshd, its key file at $TMP/key",
    "bad-config": "plugin task p1 (health) whose stored config is no longer valid",
}

ENTRY_POINTS = {
    "cli": "the `svrctl` command line",
    "server": "server fields (`svrctl server add/edit/test/rm`)",
    "task": "task fields (`svrctl task add/edit/run`)",
    "cron": "cron expressions (`--schedule`, `svrctl cron explain`)",
    "plugin": "plugin config (`--plugin`, `--config`, `svrctl plugin show`, a run)",
    "notify": "notification config (`svrctl notify ...`)",
    "flow": "the `run-task` flow's parameters, as Prefect's Custom run sends them",
}

HUGE = 100_000


@dataclass(frozen=True)
class Row:
    """One bad input and the answer svrctl must give."""

    id: str
    entry: str
    case: str
    message: str
    hint: str
    argv: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    exit_code: int | None = 2
    state: str | None = None
    key_file: str | None = None
    end_to_end: bool = False

    @property
    def outcome(self) -> str:
        """Say what the row ends with: an exit code or a flow run state."""
        if self.entry == "flow":
            return str(self.state)
        return f"exit {self.exit_code}"


def _cli(
    id: str,
    entry: str,
    case: str,
    argv: list[str],
    message: str,
    hint: str,
    *,
    setup: tuple[str, ...] = (),
    exit_code: int = 2,
    key_file: str | None = None,
    end_to_end: bool = False,
) -> Row:
    return Row(
        id=id,
        entry=entry,
        case=case,
        message=message,
        hint=hint,
        argv=tuple(argv),
        setup=setup,
        exit_code=exit_code,
        key_file=key_file,
        end_to_end=end_to_end,
    )


def _flow(
    id: str, case: str, params: dict[str, Any], state: str, message: str, hint: str, **kw: Any
) -> Row:
    return Row(
        id=id,
        entry="flow",
        case=case,
        message=message,
        hint=hint,
        params=params,
        setup=("t1", *kw.pop("setup", ())),
        exit_code=None,
        state=state,
        **kw,
    )


ADD = ["server", "add"]
NAME_RULE = "use 1-64 characters"
TASK = ["task", "add", "t2", "--server", "s1", "--command", "true"]
NTFY = ["notify", "add", "n2", "--kind", "ntfy", "--url", "http://127.0.0.1:9"]

ROWS: list[Row] = [
    # ------------------------------------------------------------------ the CLI itself
    _cli(
        "cli-unknown-command",
        "cli",
        "a command that does not exist",
        ["serverz", "list"],
        "No such command 'serverz'",
        "--help",
        end_to_end=True,
    ),
    _cli(
        "cli-unknown-option",
        "cli",
        "an option that does not exist",
        ["server", "list", "--colour"],
        "No such option '--colour'",
        "--help",
    ),
    _cli(
        "cli-missing-value",
        "cli",
        "an option without its value",
        ["server", "add", "s2", "--host"],
        "Option '--host' requires an argument",
        "requires an argument",
    ),
    _cli(
        "secret-bad-name",
        "cli",
        "a secret name Prefect cannot use",
        ["secret", "set", "Web 1"],
        "secret name 'Web 1' is not a Prefect block name",
        "use lowercase letters, digits and dashes",
    ),
    _cli(
        "metrics-bad-since",
        "cli",
        "a --since that is neither a length nor a time",
        ["metrics", "s1", "--since", "yesterday; rm -rf /"],
        "invalid --since 'yesterday; rm -rf /'",
        "give a length such as 30m",
    ),
    # ------------------------------------------------------------------ server fields
    _cli(
        "server-name-empty",
        "server",
        "an empty name",
        [*ADD, "", "--host", "h"],
        "name '' is not valid",
        NAME_RULE,
    ),
    _cli(
        "server-name-huge",
        "server",
        f"a name of {HUGE} characters",
        [*ADD, "x" * HUGE, "--host", "h"],
        "is not valid",
        NAME_RULE,
        end_to_end=True,
    ),
    _cli(
        "server-name-unicode",
        "server",
        "unicode in a name",
        [*ADD, "wéb-1", "--host", "h"],
        "name 'wéb-1' is not valid",
        NAME_RULE,
    ),
    _cli(
        "server-name-newline",
        "server",
        "a newline in a name",
        [*ADD, "web\n1", "--host", "h"],
        "name 'web\\n1' is not valid",
        NAME_RULE,
    ),
    _cli(
        "server-name-shell",
        "server",
        "shell metacharacters in a name",
        [*ADD, "web;reboot", "--host", "h"],
        "name 'web;reboot' is not valid",
        NAME_RULE,
    ),
    _cli(
        "server-duplicate",
        "server",
        "a name that is taken",
        [*ADD, "s1", "--host", "h"],
        "a server named 's1' already exists",
        "svrctl server edit s1",
        setup=("s1",),
    ),
    _cli(
        "server-host-empty",
        "server",
        "an empty host",
        [*ADD, "s2", "--host", ""],
        "host '' is not a host name or IP address",
        "letters, digits, '-', '_' and dots",
    ),
    _cli(
        "server-host-shell",
        "server",
        "command substitution in the host",
        [*ADD, "s2", "--host", "$(touch /tmp/x)"],
        "host '$(touch /tmp/x)' is not a host name or IP address",
        "letters, digits, '-', '_' and dots",
    ),
    _cli(
        "server-host-option",
        "server",
        "an ssh option as the host",
        [*ADD, "s2", "--host", "-oProxyCommand=sh"],
        "host '-oProxyCommand=sh' is not a host name",
        "it may not start with '-'",
        end_to_end=True,
    ),
    _cli(
        "server-host-newline",
        "server",
        "a newline in the host",
        [*ADD, "s2", "--host", "web-1\nevil"],
        "host 'web-1\\nevil' is not a host name",
        "letters, digits, '-', '_' and dots",
    ),
    _cli(
        "server-host-huge",
        "server",
        f"a host of {HUGE} characters",
        [*ADD, "s2", "--host", "a" * HUGE],
        f"({HUGE} characters) is not a host name",
        "letters, digits, '-', '_' and dots",
    ),
    _cli(
        "server-user-shell",
        "server",
        "shell metacharacters in the user",
        [*ADD, "s2", "--host", "h", "--user", "root;id"],
        "invalid username (--user): user 'root;id' is not a valid login name",
        "starting with a letter or '_'",
    ),
    _cli(
        "server-user-backticks",
        "server",
        "backticks in the user",
        [*ADD, "s2", "--host", "h", "--user", "`id`"],
        "user '`id`' is not a valid login name",
        "starting with a letter or '_'",
    ),
    _cli(
        "server-user-unicode",
        "server",
        "unicode in the user",
        [*ADD, "s2", "--host", "h", "--user", "rööt"],
        "user 'rööt' is not a valid login name",
        "starting with a letter or '_'",
    ),
    _cli(
        "server-port-zero",
        "server",
        "port 0",
        [*ADD, "s2", "--host", "h", "--port", "0"],
        "invalid port: Input should be greater than or equal to 1 (got 0)",
        "greater than or equal to 1",
    ),
    _cli(
        "server-port-high",
        "server",
        "port 70000",
        [*ADD, "s2", "--host", "h", "--port", "70000"],
        "Input should be less than or equal to 65535 (got 70000)",
        "less than or equal to 65535",
    ),
    _cli(
        "server-port-shell",
        "server",
        "shell metacharacters in the port",
        [*ADD, "s2", "--host", "h", "--port", "22;id"],
        "'22;id' is not a valid integer",
        "--help",
    ),
    _cli(
        "server-key-newline",
        "server",
        "a newline in the key path",
        [*ADD, "s2", "--host", "h", "--key", "/keys/a\nb"],
        "invalid key_path (--key): key path may not contain NUL or line breaks",
        "may not contain",
    ),
    _cli(
        "server-key-huge",
        "server",
        "a key path longer than 1024 characters",
        [*ADD, "s2", "--host", "h", "--key", "/" + "k" * 3000],
        "invalid key_path (--key): String should have at most 1024 characters",
        "at most 1024 characters",
    ),
    _cli(
        "server-tag-space",
        "server",
        "a space in a tag",
        [*ADD, "s2", "--host", "h", "--tag", "web servers"],
        "tag 'web servers' is not valid",
        NAME_RULE,
    ),
    _cli(
        "server-pool-shell",
        "server",
        "shell metacharacters in the work pool",
        [*ADD, "s2", "--host", "h", "--pool", "lab|sh"],
        "work pool 'lab|sh' is not valid",
        NAME_RULE,
    ),
    _cli(
        "server-jump-unknown",
        "server",
        "a jump host that does not exist",
        [*ADD, "s2", "--host", "h", "--jump", "bastion"],
        "no server named 'bastion'",
        "svrctl server list",
    ),
    _cli(
        "server-jump-self",
        "server",
        "a server as its own jump host",
        [*ADD, "s2", "--host", "h", "--jump", "s2"],
        "a server cannot be its own jump host",
        "name another server with --jump",
    ),
    _cli(
        "server-secret-name",
        "server",
        "a secret block name with spaces",
        [*ADD, "s2", "--host", "h", "--password-secret", "My Password"],
        "secret block name 'My Password' is not a Prefect block name",
        "use lowercase letters, digits and dashes",
    ),
    _cli(
        "server-timeout-zero",
        "server",
        "a connect timeout of 0",
        [*ADD, "s2", "--host", "h", "--connect-timeout", "0"],
        "invalid connect_timeout_seconds: Input should be greater than or equal to 1",
        "greater than or equal to 1",
    ),
    _cli(
        "server-max-concurrent-word",
        "server",
        "a word as --max-concurrent",
        [*ADD, "s2", "--host", "h", "--max-concurrent", "many"],
        "'many' is not a whole number of runs",
        "use '' or 0 to remove the limit",
    ),
    _cli(
        "server-description-huge",
        "server",
        f"a description of {HUGE} characters",
        [*ADD, "s2", "--host", "h", "--description", "d" * HUGE],
        "String should have at most 2000 characters (got 'dddd",
        "at most 2000 characters",
    ),
    _cli(
        "server-edit-unknown",
        "server",
        "editing a server that does not exist",
        ["server", "edit", "s9", "--port", "2222"],
        "no server named 's9'",
        "svrctl server list",
    ),
    _cli(
        "server-edit-shell",
        "server",
        "an edit that puts shell metacharacters in the host",
        ["server", "edit", "s1", "--host", "h && reboot"],
        "host 'h && reboot' is not a host name",
        "letters, digits, '-', '_' and dots",
        setup=("s1",),
    ),
    _cli(
        "server-rm-in-use",
        "server",
        "removing a server a task still targets",
        ["server", "rm", "s1"],
        "server 's1' is still the target of task(s) t1",
        "remove those tasks or point them at another server first",
        setup=("t1",),
        end_to_end=True,
    ),
    _cli(
        "server-key-malformed",
        "server",
        "a key file that is not a key",
        ["server", "test", "k1"],
        "cannot use the key $TMP/key for",
        "svrctl server edit NAME --key PATH",
        setup=("sshd",),
        exit_code=1,
        key_file="malformed",
    ),
    _cli(
        "server-key-open",
        "server",
        "a key file other users can read (0644)",
        ["server", "test", "k1"],
        "permissions 0644 are too open",
        "chmod 600 $TMP/key",
        setup=("sshd",),
        exit_code=1,
        key_file="open",
        end_to_end=True,
    ),
    _cli(
        "server-key-missing",
        "server",
        "a key file that does not exist",
        ["server", "test", "k1"],
        "cannot use the key $TMP/key for",
        "svrctl server edit NAME --key PATH",
        setup=("sshd",),
        exit_code=1,
        key_file="missing",
    ),
    # ------------------------------------------------------------------ task fields
    _cli(
        "task-name-empty",
        "task",
        "an empty name",
        ["task", "add", "", "--local", "--command", "true"],
        "name '' is not valid",
        NAME_RULE,
    ),
    _cli(
        "task-name-huge",
        "task",
        f"a name of {HUGE} characters",
        ["task", "add", "t" * HUGE, "--local", "--command", "true"],
        f"({HUGE} characters) is not valid",
        NAME_RULE,
    ),
    _cli(
        "task-name-unicode-newline",
        "task",
        "unicode and a newline in a name",
        ["task", "add", "sauvegarde\nété", "--local", "--command", "true"],
        "name 'sauvegarde\\nété' is not valid",
        NAME_RULE,
    ),
    _cli(
        "task-duplicate",
        "task",
        "a name that is taken",
        ["task", "add", "t1", "--local", "--command", "true"],
        "a task named 't1' already exists",
        "svrctl task edit t1",
        setup=("t1",),
    ),
    _cli(
        "task-no-target",
        "task",
        "no target",
        ["task", "add", "t2", "--command", "true"],
        "a task needs a target",
        "--server S or --tag T",
    ),
    _cli(
        "task-no-command",
        "task",
        "an ssh task without a command",
        ["task", "add", "t2", "--server", "s1"],
        "an ssh task needs a command",
        "give --command CMD",
        setup=("s1",),
    ),
    _cli(
        "task-empty-command",
        "task",
        "an empty command",
        ["task", "add", "t2", "--local", "--command", ""],
        "a local task needs a command",
        "give --command CMD",
    ),
    _cli(
        "task-command-huge",
        "task",
        "a command longer than 65536 characters",
        ["task", "add", "t2", "--local", "--command", "c" * HUGE],
        "invalid command: String should have at most 65536 characters",
        "at most 65536 characters",
    ),
    _cli(
        "task-deleted-server",
        "task",
        "a server that does not exist (or was removed)",
        ["task", "add", "t2", "--server", "gone", "--command", "true"],
        "no server named 'gone'",
        "svrctl server list",
        end_to_end=True,
    ),
    _cli(
        "task-unknown-tag",
        "task",
        "a tag no server has",
        ["task", "add", "t2", "--tag", "nosuch", "--command", "true"],
        "no server has the tag 'nosuch'",
        "svrctl server edit NAME --tag nosuch",
    ),
    _cli(
        "task-server-and-tag",
        "task",
        "both --server and --tag",
        ["task", "add", "t2", "--server", "s1", "--tag", "web", "--command", "true"],
        "give either --server or --tag, not both",
        "not both",
    ),
    _cli(
        "task-local-and-server",
        "task",
        "--local with a server",
        ["task", "add", "t2", "--local", "--server", "s1", "--command", "true"],
        "a --local task runs on the worker's host",
        "drop --server/--tag",
    ),
    _cli(
        "task-args-not-json",
        "task",
        "--args that is not JSON",
        [*TASK, "--args", "-v $(id)"],
        "--args is not valid JSON",
        "quote it for the shell",
        setup=("s1",),
    ),
    _cli(
        "task-args-wrong-type",
        "task",
        "--args of the wrong type (a number)",
        [*TASK, "--args", "5"],
        "args must be a JSON list (extra words) or object (--key value options), not int",
        "JSON list",
        setup=("s1",),
    ),
    _cli(
        "task-args-nested",
        "task",
        "an object inside an --args list",
        [*TASK, "--args", '["a", {"b": 1}]'],
        "args[1] must be a string or a number, not an object",
        "must be a string or a number",
        setup=("s1",),
    ),
    _cli(
        "task-args-nul",
        "task",
        "a NUL byte in --args",
        [*TASK, "--args", '["a\\u0000b"]'],
        "invalid args: args may not contain a NUL byte",
        "may not contain a NUL byte",
        setup=("s1",),
    ),
    _cli(
        "task-args-key",
        "task",
        "an --args option name with spaces",
        [*TASK, "--args", '{"a b": 1}'],
        "args key 'a b' must be a bare option name",
        "such as 'verbose'",
        setup=("s1",),
    ),
    _cli(
        "task-timeout-zero",
        "task",
        "a timeout of 0",
        [*TASK, "--timeout", "0"],
        "invalid timeout_seconds (--timeout): Input should be greater than 0 (got 0)",
        "greater than 0",
        setup=("s1",),
    ),
    _cli(
        "task-timeout-word",
        "task",
        "a word as the timeout",
        [*TASK, "--timeout", "5m"],
        "'5m' is not a valid integer",
        "--help",
        setup=("s1",),
    ),
    _cli(
        "task-retries-many",
        "task",
        "101 retries",
        [*TASK, "--retries", "101"],
        "invalid retries: Input should be less than or equal to 100",
        "less than or equal to 100",
        setup=("s1",),
    ),
    _cli(
        "task-timezone",
        "task",
        "a time zone that does not exist",
        [*TASK, "--timezone", "Mars/Olympus"],
        "unknown time zone 'Mars/Olympus'",
        "use an IANA name",
        setup=("s1",),
    ),
    _cli(
        "task-notify-unknown",
        "task",
        "a notification channel that does not exist",
        [*TASK, "--notify", "pager"],
        "no notification channel named 'pager'",
        "svrctl notify add",
        setup=("s1",),
    ),
    _cli(
        "task-after-unknown",
        "task",
        "chaining after a task that does not exist",
        [*TASK, "--after", "backup"],
        "no task named 'backup' to run after",
        "svrctl task list",
        setup=("s1",),
    ),
    _cli(
        "task-on-without-after",
        "task",
        "--on without --after",
        [*TASK, "--on", "failure"],
        "'on' applies to a chained task",
        "give the task it runs after",
        setup=("s1",),
    ),
    _cli(
        "task-edit-unknown",
        "task",
        "editing a task that does not exist",
        ["task", "edit", "t9", "--timeout", "10"],
        "no task named 't9'",
        "svrctl task list",
    ),
    _cli(
        "task-run-unknown",
        "task",
        "running a task that does not exist",
        ["task", "run", "t9"],
        "no task named 't9'",
        "svrctl task list",
        end_to_end=True,
    ),
    _cli(
        "task-run-tz-alone",
        "task",
        "--tz without --at",
        ["task", "run", "t1", "--tz", "UTC"],
        "--tz applies only with --at WHEN",
        "--at WHEN",
        setup=("t1",),
    ),
    _cli(
        "task-run-at-word",
        "task",
        "--at that is not a time",
        ["task", "run", "t1", "--at", "tomorrow"],
        "--at 'tomorrow' is not a time",
        "write 'YYYY-MM-DD HH:MM[:SS]'",
        setup=("t1",),
    ),
    _cli(
        "task-run-at-past",
        "task",
        "--at in the past",
        ["task", "run", "t1", "--at", "2000-01-01 00:00"],
        "--at '2000-01-01 00:00' is in the past",
        "give a future time",
        setup=("t1",),
    ),
    # ------------------------------------------------------------------ cron
    _cli(
        "cron-empty",
        "cron",
        "an empty expression",
        ["cron", "explain", ""],
        "invalid schedule: the expression is empty",
        "docs/cron.md",
    ),
    _cli(
        "cron-fields",
        "cron",
        "three fields",
        ["cron", "explain", "* * *"],
        "it has 3 fields",
        "expected 5 (minute hour day-of-month month day-of-week)",
    ),
    _cli(
        "cron-range",
        "cron",
        "minute 99",
        ["cron", "explain", "99 * * * *"],
        "field 1 (minute) value 99 is out of range 0-59",
        "out of range 0-59",
    ),
    _cli(
        "cron-step-zero",
        "cron",
        "a step of 0",
        ["cron", "explain", "*/0 * * * *"],
        "step 0 in '*/0' must be at least 1",
        "must be at least 1",
    ),
    _cli(
        "cron-never",
        "cron",
        "a day that never comes (31 February)",
        ["cron", "explain", "0 0 31 2 *"],
        "never matches: no month in field 4 (month) has such a day",
        "no month",
    ),
    _cli(
        "cron-newline",
        "cron",
        "two expressions on two lines",
        ["cron", "explain", "* * * * *\n0 * * * *"],
        "it has 10 fields",
        "expected 5",
    ),
    _cli(
        "cron-shell",
        "cron",
        "shell metacharacters",
        ["cron", "explain", "* * * * *; reboot"],
        "field 5 (month) value '*;' is not a number or a name",
        "docs/cron.md",
    ),
    _cli(
        "cron-huge",
        "cron",
        "an expression longer than 255 characters",
        ["cron", "explain", "1," * 50_000 + "1 * * * *"],
        "characters) is longer than 255 characters",
        "write it shorter",
    ),
    _cli(
        "cron-timezone",
        "cron",
        "a time zone that does not exist",
        ["cron", "explain", "* * * * *", "--tz", "Europe/Atlantis"],
        "unknown time zone 'Europe/Atlantis'",
        "use an IANA name",
    ),
    _cli(
        "cron-task-schedule",
        "cron",
        "a task schedule out of range",
        [*TASK, "--schedule", "0 25 * * *"],
        "invalid schedule: invalid cron expression '0 25 * * *'",
        "out of range 0-23",
        setup=("s1",),
    ),
    _cli(
        "cron-task-schedule-huge",
        "cron",
        "a task schedule longer than 255 characters",
        [*TASK, "--schedule", "*/5 " * 100],
        "invalid schedule: String should have at most 255 characters",
        "at most 255 characters",
        setup=("s1",),
    ),
    # ------------------------------------------------------------------ plugin config
    _cli(
        "plugin-unknown",
        "plugin",
        "a plugin that does not exist",
        ["task", "add", "p2", "--plugin", "nosuch"],
        "no plugin named 'nosuch'",
        "installed plugins: docker, echo, health",
        end_to_end=True,
    ),
    _cli(
        "plugin-show-unknown",
        "plugin",
        "showing a plugin that does not exist",
        ["plugin", "show", "nosuch"],
        "no plugin named 'nosuch'",
        "installed plugins:",
    ),
    _cli(
        "plugin-config-not-object",
        "plugin",
        "a config of the wrong type (a list)",
        ["task", "add", "p2", "--plugin", "health", "--config", "[90]"],
        "--config must be a JSON object",
        "svrctl plugin show NAME",
    ),
    _cli(
        "plugin-config-not-json",
        "plugin",
        "a config that is not JSON",
        ["task", "add", "p2", "--plugin", "health", "--config", "{cpu_percent: 90}"],
        "--config is not valid JSON",
        "quote it for the shell",
    ),
    _cli(
        "plugin-config-unknown-key",
        "plugin",
        "a setting the plugin does not have",
        ["task", "add", "p2", "--plugin", "health", "--config", '{"cpu": 90}'],
        "invalid config for plugin 'health': cpu: Extra inputs are not permitted",
        "svrctl plugin show health",
    ),
    _cli(
        "plugin-config-wrong-type",
        "plugin",
        "a setting of the wrong type",
        ["task", "add", "p2", "--plugin", "health", "--config", '{"cpu_percent": "high"}'],
        "cpu_percent: Input should be a valid number",
        "svrctl plugin show health",
    ),
    _cli(
        "plugin-config-range",
        "plugin",
        "a setting out of range",
        ["task", "add", "p2", "--plugin", "health", "--config", '{"cpu_percent": 150}'],
        "cpu_percent: Input should be less than or equal to 100",
        "svrctl plugin show health",
    ),
    _cli(
        "plugin-config-action-shell",
        "plugin",
        "shell metacharacters as an action",
        ["task", "add", "p2", "--plugin", "updates", "--config", '{"action": "check; reboot"}'],
        "action: Input should be 'check', 'apply' or 'cleanup'",
        "svrctl plugin show updates",
    ),
    _cli(
        "plugin-config-nul",
        "plugin",
        "a NUL byte in a config value",
        ["task", "add", "p2", "--plugin", "echo", "--config", '{"message": "a\\u0000b"}'],
        "the plugin config may not contain a NUL byte",
        "may not contain a NUL byte",
    ),
    _cli(
        "plugin-config-tag",
        "plugin",
        "a plugin on a tag",
        ["task", "add", "p2", "--plugin", "health", "--tag", "web"],
        "a plugin task takes --server (or none), not --tag",
        "not --tag",
    ),
    _cli(
        "plugin-stored-config-run",
        "plugin",
        "running a task whose stored config is no longer valid",
        ["task", "run", "p1"],
        "invalid config for plugin 'health': cpu_percent",
        "svrctl plugin show health",
        setup=("bad-config",),
        exit_code=1,
    ),
    # ------------------------------------------------------------------ notification config
    _cli(
        "notify-kind",
        "notify",
        "a kind that does not exist",
        ["notify", "add", "n2", "--kind", "email", "--url", "http://x"],
        "'email' is not one of 'gotify', 'ntfy', 'apprise'",
        "--help",
    ),
    _cli(
        "notify-name-unicode",
        "notify",
        "unicode and a space in a channel name",
        ["notify", "add", "ops ✉", "--kind", "ntfy", "--url", "http://x", "--topic", "a"],
        "channel name 'ops ✉' is not valid",
        NAME_RULE,
    ),
    _cli(
        "notify-name-newline",
        "notify",
        "a trailing newline in a channel name",
        ["notify", "add", "ops\n", "--kind", "ntfy", "--url", "http://x", "--topic", "a"],
        "channel name 'ops\\n' is not valid",
        NAME_RULE,
    ),
    _cli(
        "notify-duplicate",
        "notify",
        "a channel name that is taken",
        ["notify", "add", "n1", "--kind", "ntfy", "--url", "http://x", "--topic", "a"],
        "a notification channel named 'n1' exists already",
        "svrctl notify edit",
        setup=("n1",),
    ),
    _cli(
        "notify-url-empty",
        "notify",
        "an empty URL",
        ["notify", "add", "n2", "--kind", "ntfy", "--url", "", "--topic", "a"],
        "a ntfy channel needs --url",
        "--url",
    ),
    _cli(
        "notify-url-scheme",
        "notify",
        "a URL that is not http(s)",
        ["notify", "add", "n2", "--kind", "ntfy", "--url", "file:///etc/passwd", "--topic", "a"],
        "'file:///etc/passwd' is not an http:// or https:// address",
        "e.g. https://ntfy.example.org",
    ),
    _cli(
        "notify-url-credentials",
        "notify",
        "credentials in the URL",
        ["notify", "add", "n2", "--kind", "gotify", "--url", "https://u:p@h", "--token", "t"],
        "give the bare server address, without credentials",
        "pass the token with --token",
    ),
    _cli(
        "notify-url-newline",
        "notify",
        "a newline in the URL",
        ["notify", "add", "n2", "--kind", "ntfy", "--url", "http://h\n/x", "--topic", "a"],
        "contains spaces, line breaks or control characters",
        "give the bare server address",
    ),
    _cli(
        "notify-url-huge",
        "notify",
        "a URL longer than 2048 characters",
        ["notify", "add", "n2", "--kind", "ntfy", "--url", "http://" + "x." * 3000 + "org"],
        "is longer than 2048 characters",
        "give the bare address of the ntfy server",
    ),
    _cli(
        "notify-topic-missing",
        "notify",
        "an ntfy channel without a topic",
        NTFY,
        "an ntfy channel needs --topic",
        "--topic",
    ),
    _cli(
        "notify-topic-shell",
        "notify",
        "shell metacharacters in the topic",
        [*NTFY, "--topic", "alerts;$(id)"],
        "'alerts;$(id)': use 1-64 letters, digits, '-' or '_'",
        "use 1-64 letters",
    ),
    _cli(
        "notify-topic-newline",
        "notify",
        "a trailing newline in the topic",
        [*NTFY, "--topic", "alerts\n"],
        "'alerts\\n': use 1-64 letters, digits, '-' or '_'",
        "use 1-64 letters",
    ),
    _cli(
        "notify-token-missing",
        "notify",
        "a gotify channel without a token",
        ["notify", "add", "n2", "--kind", "gotify", "--url", "https://gotify.example.org"],
        "a gotify channel needs its app token",
        "--token",
    ),
    _cli(
        "notify-token-space",
        "notify",
        "a token with a newline",
        [*NTFY, "--topic", "a", "--token", "abc\nX-Evil: 1"],
        "the token contains spaces",
        "--token",
    ),
    _cli(
        "notify-priority",
        "notify",
        "a priority out of range",
        [*NTFY, "--topic", "a", "--priority", "9"],
        "9 is outside 1-5 for ntfy",
        "outside 1-5",
    ),
    _cli(
        "notify-apprise-url",
        "notify",
        "an apprise URL apprise cannot use",
        ["notify", "add", "n2", "--kind", "apprise", "--url", "nosuch://token@host"],
        "apprise cannot use this nosuch://… URL",
        "https://github.com/caronc/apprise/wiki",
    ),
    _cli(
        "notify-edit-unknown",
        "notify",
        "editing a channel that does not exist",
        ["notify", "edit", "pager", "--url", "http://x"],
        "no notification channel named 'pager'",
        "svrctl notify list",
    ),
    _cli(
        "notify-test-unknown",
        "notify",
        "testing a channel that does not exist",
        ["notify", "test", "pager"],
        "no notification channel named 'pager'",
        "svrctl notify list",
    ),
    # ------------------------------------------------------------------ the run-task flow
    _flow(
        "flow-task-missing",
        "a task_id that does not exist",
        {"task_id": 999_999},
        "Failed",
        "no task with id 999999",
        "svrctl task list",
    ),
    _flow(
        "flow-task-zero",
        "task_id 0",
        {"task_id": 0},
        "Failed",
        "invalid task_id: 0 is not the id of a task",
        "svrctl task show NAME --json",
    ),
    _flow(
        "flow-task-negative",
        "a negative task_id",
        {"task_id": -5},
        "Failed",
        "invalid task_id: -5 is not the id of a task",
        "svrctl task show NAME --json",
    ),
    _flow(
        "flow-task-huge",
        "a task_id beyond any database id",
        {"task_id": 2**70},
        "Failed",
        f"invalid task_id: {2**70} is not the id of a task",
        "svrctl task show NAME --json",
    ),
    _flow(
        "flow-task-string",
        "a task_id of the wrong type (text)",
        {"task_id": "backup; reboot"},
        "Refused",
        "'backup; reboot' is not of type 'integer'",
        "Validation failed for field 'task_id'",
    ),
    _flow(
        "flow-task-float",
        "a task_id of the wrong type (a fraction)",
        {"task_id": 1.5},
        "Refused",
        "1.5 is not of type 'integer'",
        "Validation failed for field 'task_id'",
    ),
    _flow(
        "flow-task-null",
        "a task_id of null",
        {"task_id": None},
        "Refused",
        "None is not of type 'integer'",
        "Validation failed for field 'task_id'",
    ),
    _flow(
        "flow-force-string",
        "force of the wrong type",
        {"task_id": "$TASK", "force": "yes"},
        "Refused",
        "'yes' is not of type 'boolean'",
        "Validation failed for field 'force'",
    ),
    _flow(
        "flow-stored-config",
        "a task whose stored plugin config is no longer valid",
        {"task_id": "$P1"},
        "Failed",
        "invalid config for plugin 'health': cpu_percent",
        "svrctl plugin show health",
        setup=("bad-config",),
    ),
]


def _short(word: str) -> str:
    """Shorten a long value to its start and its length."""
    return word if len(word) <= 40 else f"{word[:8]}…({len(word)} chars)"


def _code(text: str) -> str:
    """Render ``text`` as one inline code span that a Markdown table keeps whole."""
    text = text.replace("\n", "\\n").replace("\0", "\\0").replace("|", "\\|")
    ticks = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _input(row: Row) -> str:
    if row.entry == "flow":
        shown = ", ".join(f"{k}={_short(repr(v))}" for k, v in row.params.items())
        return _code(shown.replace("'$TASK'", "$TASK").replace("'$P1'", "$P1"))
    words = []
    for word in map(_short, row.argv):
        if not word or any(c in word for c in " \n;|&$`'\"<>(){}[]*\\"):
            word = "'" + word.replace("'", "'\\''") + "'"
        words.append(word)
    return _code("svrctl " + " ".join(words))


def markdown() -> str:
    """Return docs/bad-input.md, made from ROWS."""
    lines = [
        "# Bad input: every entry point, every answer",
        "",
        "<!-- Made from tests/reliability/bad_inputs.py by",
        "     `python -m tests.reliability.bad_inputs --markdown > docs/bad-input.md`;",
        "     tests/reliability/test_bad_input.py fails when this file and the table differ. -->",
        "",
        "svrctl checks every value it is given before it writes anything. A bad value is",
        "answered with one message that says what is wrong, why, and what to do; the",
        "command exits with code 2 (1 when the value is only found wrong when a run or a",
        "connection uses it: a key file, a stored plugin config), prints no Python",
        "traceback, and leaves the app database as it was: no half-created server, task",
        "or channel. The same checks (`svrctl/specs.py`) serve the command line and the",
        "`run-task` flow.",
        "",
        "A Custom run of a `run-task` deployment in Prefect's UI (or any flow run made",
        "through Prefect's API) with parameters of the wrong type is **Refused**: Prefect",
        "checks them against the deployment's parameter schema, which svrctl's sync",
        "enforces, and creates no flow run. A well-typed `task_id` that names no task",
        "ends the run **Failed**, with the reason as the state message and the run's one",
        "error log line; nothing else is recorded.",
        "",
        "Values that *are* meant to reach a shell are not bad input: a task's `--command`",
        "and `--only-if` are shell command lines, and `--args` words and plugin settings",
        "are passed quoted, as literal words (tests/reliability/test_security_injection.py",
        "proves it for every field with real runs).",
        "",
        "What each row sets up first:",
        "",
        *(f"- `{k}`: {v}" for k, v in SETUPS.items()),
        "",
        "In inputs, `$TMP` is a scratch directory, `$TASK` the id of task t1 and `$P1`",
        "the id of task p1; a long value is shown by its start and its length.",
    ]
    for entry, title in ENTRY_POINTS.items():
        rows = [r for r in ROWS if r.entry == entry and r.message]
        lines += ["", f"## {title[0].upper()}{title[1:]}", ""]
        lines += ["| case | input | setup | answer | message contains | says what to do |"]
        lines += ["|---|---|---|---|---|---|"]
        for r in rows:
            setup = ", ".join(r.setup) or "-"
            lines.append(
                f"| {r.case} | {_input(r)} | {setup} | {r.outcome} | {_code(r.message)} "
                f"| {_code(r.hint)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m tests.reliability.bad_inputs --markdown")
    sys.stdout.write(markdown())
