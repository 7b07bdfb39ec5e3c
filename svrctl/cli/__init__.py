"""The ``svrctl`` command line."""

from __future__ import annotations

import click

from svrctl.cli.app import App, SvrctlGroup
from svrctl.cli.blocks import blocks
from svrctl.cli.cron import cron
from svrctl.cli.db import db
from svrctl.cli.metrics import metrics
from svrctl.cli.notify import notify
from svrctl.cli.plugin import plugin
from svrctl.cli.secret import secret
from svrctl.cli.server import server
from svrctl.cli.sync import sync
from svrctl.cli.task import task
from svrctl.cli.up import up
from svrctl.cli.worker import worker

__all__ = ["cli", "main"]


@click.group(cls=SvrctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svrctl")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run commands and checks on your servers, on a schedule or on demand."""
    app = ctx.ensure_object(App)
    ctx.call_on_close(app.close)


cli.add_command(db)
cli.add_command(secret)
cli.add_command(server)
cli.add_command(task)
cli.add_command(plugin)
cli.add_command(metrics)
cli.add_command(notify)
cli.add_command(blocks)
cli.add_command(sync)
cli.add_command(cron)
cli.add_command(up)
cli.add_command(worker)


def main() -> None:
    """Entry point of the ``svrctl`` console script."""
    cli(prog_name="svrctl")
