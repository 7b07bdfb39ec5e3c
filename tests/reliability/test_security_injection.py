"""Command injection: no field a person types can add a command to a command line.

Every payload tries to create a marker file (``touch``) by way of shell
metacharacters, command substitution, backticks, a newline, or an OpenSSH option
(``-oProxyCommand=``). Each field either refuses the value with a message that
names it, or hands it to the command literally; the marker never appears. Runs go
over the real sshd on loopback, and locally with bash.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fixtures.runenv import RunEnv

pytestmark = pytest.mark.sshd

# Prints its arguments as one JSON list: what the command really received.
ECHO_ARGS = "python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"


def payloads(marker: Path) -> list[str]:
    """Values that would create ``marker`` if a shell or ssh ever interpreted them."""
    touch = f"touch {marker}"
    return [
        f"; {touch}",
        f"x && {touch}",
        f"| {touch}",
        f"$({touch})",
        f"`{touch}`",
        f"x\n{touch}",
        f"'; {touch}; '",
        f'"; {touch}; "',
        f"${{IFS}}$({touch})",
        f"-oProxyCommand={touch}",
        f"-o ProxyCommand={touch}",
    ]


@pytest.fixture
def marker() -> Path:
    """A marker file in /tmp that only an injected command would create."""
    path = Path("/tmp") / f"PWNED-{uuid.uuid4().hex[:12]}"
    yield path
    path.unlink(missing_ok=True)


def _refused(env: RunEnv, needle: str, *args: str) -> str:
    result = env.svrctl(*args)
    assert result.exit_code == 2, (args, result.output)
    assert needle in result.stderr, (args, result.stderr)
    return result.stderr


# ------------------------------------------------------------------ server fields


@pytest.mark.parametrize("field", ["--host", "--user"])
def test_host_and_user_refuse_every_payload(run_env: RunEnv, marker: Path, field: str) -> None:
    what = {"--host": "is not a host name or IP address", "--user": "is not a valid login name"}
    run_env.add_server("good")
    for value in payloads(marker):
        base = {"--host": run_env.sshd.host, "--user": run_env.sshd.username} | {field: value}
        _refused(
            run_env, what[field],
            "server", "add", "bad", "--host", base["--host"], "--user", base["--user"],
        )  # fmt: skip
        _refused(run_env, what[field], "server", "edit", "good", field, value)
    assert json.loads(run_env.ok("server", "list", "--json"))[0]["name"] == "good"
    shown = json.loads(run_env.ok("server", "show", "good", "--json"))
    assert (shown["host"], shown["username"]) == (run_env.sshd.host, run_env.sshd.username)
    # The untouched server still works, and nothing ran.
    task_id = run_env.add_task("t", "--server", "good", "--command", "echo fine")
    assert run_env.run(task_id).success
    assert not marker.exists()


@pytest.mark.parametrize("option", ["name", "--jump", "--tag", "--pool"])
def test_names_used_in_paths_and_deployments_refuse_every_payload(
    run_env: RunEnv, marker: Path, option: str
) -> None:
    run_env.add_server("good")
    for value in payloads(marker):
        if option == "name":
            args = ["server", "add", "--host", run_env.sshd.host, "--", value]
        else:
            args = ["server", "add", "other", "--host", run_env.sshd.host, option, value]
        _refused(run_env, "is not valid", *args)
    assert [s["name"] for s in json.loads(run_env.ok("server", "list", "--json"))] == ["good"]
    assert not marker.exists()


# ------------------------------------------------------------------------- task args


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_task_args_reach_the_command_literally(run_env: RunEnv, marker: Path, where: str) -> None:
    run_env.add_server("good")
    words = payloads(marker)
    target = ["--server", "good"] if where == "ssh" else ["--local"]
    listed = run_env.add_task(
        "as-list", *target, "--command", ECHO_ARGS, "--args", json.dumps(words)
    )
    result = run_env.run(listed)
    assert result.success, result.error
    assert json.loads(result.output) == words

    options = {f"opt{i}": word for i, word in enumerate(words)}
    as_object = run_env.add_task(
        "as-object", *target, "--command", ECHO_ARGS, "--args", json.dumps(options)
    )
    result = run_env.run(as_object)
    assert result.success, result.error
    expected = [part for i, word in enumerate(words) for part in (f"--opt{i}", word)]
    assert json.loads(result.output) == expected
    assert not marker.exists()


def test_arg_option_names_are_refused_or_passed_literally(run_env: RunEnv, marker: Path) -> None:
    run_env.add_server("good")
    for key in (f"x; touch {marker}", f"-o ProxyCommand={marker}", "a=b", "", f"x\ntouch {marker}"):
        _refused(
            run_env, "must be a bare option name",
            "task", "add", "k", "--server", "good", "--command", ECHO_ARGS,
            "--args", json.dumps({key: "v"}),
        )  # fmt: skip
    # No whitespace, so it is a name; it still reaches the command as one literal word.
    key = f"$(touch${{IFS}}{marker})`touch${{IFS}}{marker}`"
    task_id = run_env.add_task(
        "k", "--server", "good", "--command", ECHO_ARGS, "--args", json.dumps({key: True})
    )
    result = run_env.run(task_id)
    assert result.success, result.error
    assert json.loads(result.output) == [f"--{key}"]
    assert not marker.exists()


# --------------------------------------------------------------------- plugin config


def test_plugin_config_reaches_the_command_literally_or_is_refused(
    run_env: RunEnv, marker: Path
) -> None:
    run_env.add_server("good")
    for i, word in enumerate(payloads(marker)):
        task_id = run_env.add_task(
            f"echo-{i}", "--plugin", "echo", "--server", "good",
            "--config", json.dumps({"message": word}),
        )  # fmt: skip
        result = run_env.run(task_id)
        assert result.success, result.error
        assert result.output.startswith(f"good said: {word}"), result.output
    # Fields that become part of a command are typed: a payload is not a number or a choice.
    for plugin, config, field in (
        ("speedtest", {"server_id": f"1; touch {marker}"}, "server_id"),
        ("updates", {"manager": f"apt; touch {marker}"}, "manager"),
        ("updates", {"action": f"$(touch {marker})"}, "action"),
        ("health", {"sample_seconds": f"1; touch {marker}"}, "sample_seconds"),
        ("docker", {"action": f"`touch {marker}`"}, "action"),
    ):
        _refused(
            run_env, f"invalid config for plugin '{plugin}': {field}:",
            "task", "add", f"bad-{plugin}", "--plugin", plugin, "--server", "good",
            "--config", json.dumps(config),
        )  # fmt: skip
    assert not marker.exists()
