"""Args become quoted words: nothing in them can change the command line's meaning."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from svrctl.exceptions import BadInputError
from svrctl.shellwords import build_command

NASTY = ["a b", "; rm -rf /", "$(id)", "`id`", "'quoted'", '"dq"', "line1\nline2", "*", "~", ""]


def test_no_args() -> None:
    assert build_command("uptime", None) == "uptime"
    assert build_command("uptime", []) == "uptime"
    assert build_command("uptime", {}) == "uptime"


def test_list_args_are_quoted_words() -> None:
    assert build_command("echo", ["a b", 3, 1.5]) == "echo 'a b' 3 1.5"


def test_object_args_become_options() -> None:
    cmd = build_command("tool", {"level": 3, "name": "x y", "verbose": True, "dry": False,
                                 "skip": None, "tag": ["a", "b"]})  # fmt: skip
    assert cmd == "tool --level 3 --name 'x y' --verbose --tag a --tag b"


def test_hostile_words_reach_the_command_literally() -> None:
    cmd = build_command("printf '%s\\0'", NASTY)
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [w.encode() for w in NASTY]


def test_hostile_option_values_reach_the_command_literally() -> None:
    cmd = build_command("printf '%s\\0'", {"opt": NASTY})
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, check=True).stdout
    words = out.split(b"\0")[:-1]
    assert words[1::2] == [w.encode() for w in NASTY]
    assert set(words[0::2]) == {b"--opt"}


def test_the_command_itself_is_the_user_s_shell_text() -> None:
    # The command is what the user typed; only args are quoted.
    assert shlex.split(build_command("ls -la | wc -l", ["x"]))[-1] == "x"


@pytest.mark.parametrize(
    "args",
    ["text", 5, [True], [None], [[1]], [{"a": 1}], {"-v": 1}, {"a b": 1}, {"a=b": 1},
     {"k": {"x": 1}}, {"k": [[1]]}],
)  # fmt: skip
def test_bad_args(args: object) -> None:
    with pytest.raises(BadInputError) as info:
        build_command("x", args)  # type: ignore[arg-type]
    assert info.value.field == "args"
