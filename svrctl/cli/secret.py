"""``svrctl secret``: store passphrases, passwords and tokens as Prefect Secret blocks."""

from __future__ import annotations

import sys

import click

from svrctl.cli.app import SvrctlGroup
from svrctl.exceptions import BadInputError

__all__ = ["secret"]


@click.group(cls=SvrctlGroup)
def secret() -> None:
    """Store secrets in Prefect Secret blocks (svrctl keeps only their names)."""


@secret.command("set")
@click.argument("name")
@click.option(
    "--stdin", "from_stdin", is_flag=True, help="Read the value from standard input (scripts)."
)
def set_cmd(name: str, from_stdin: bool) -> None:
    """Create or replace the Secret block NAME; the value is asked for, never echoed."""
    from svrctl.secrets import save_prefect_secret
    from svrctl.specs import check_block_name

    try:
        check_block_name(name, "secret name")
    except ValueError as exc:
        raise BadInputError(str(exc), field="name") from None
    if from_stdin:
        value = sys.stdin.read().rstrip("\n")
    else:
        value = click.prompt("Value", hide_input=True, confirmation_prompt=True, err=True)
    if not value:
        raise BadInputError("the secret value is empty", field="value")
    save_prefect_secret(name, value)
    click.echo(f"✓ saved Secret block {name}")
