"""``svrctl worker``: run an svrctl worker for a work pool in the foreground."""

from __future__ import annotations

import click

from svrctl.cli.app import App, pass_app
from svrctl.exceptions import BadInputError, SvrctlError

__all__ = ["worker"]

# Exit code when the worker cannot start: no Prefect API, or no usable app database.
EXIT_NOT_READY = 2


@click.command("worker")
@click.option(
    "--pool", "pool", required=True, help="Work pool to serve; created, of type svrctl, if missing."
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Flow runs the worker runs at once.",
)
@click.option("--name", default=None, help="The worker's name in Prefect (default: random).")
@pass_app
def worker(app: App, pool: str, limit: int, name: str | None) -> None:  # fmt: skip
    """Run an svrctl worker for a work pool in the foreground (Ctrl-C stops it).

    The same as `prefect worker start --pool POOL --type svrctl`, after checking
    that the Prefect API (PREFECT_API_URL, else the server `svrctl up` runs)
    answers and that the app database (SVRCTL_DATABASE_URL) opens with the
    schema of this svrctl.
    """
    from svrctl.specs import check_name

    try:
        check_name(pool, "work pool")
    except ValueError as exc:
        raise BadInputError(str(exc), field="pool") from None
    api = _check_api(app)
    _check_database(app)
    click.echo(f"✓ Prefect API at {api}; app database ok")
    _serve(pool, limit, name)


def _not_ready(message: str) -> click.exceptions.Exit:
    click.echo(f"error: {message}", err=True)
    return click.exceptions.Exit(EXIT_NOT_READY)


def _check_api(app: App) -> str:
    """Return the Prefect API the worker will use; exit 2 if none answers."""
    from svrctl.prefect_api import choose_api, healthy, refusal

    notes: list[str] = []
    url = choose_api(app.settings, notes.append)
    if url is None:
        raise _not_ready(
            "no Prefect API to connect to: set PREFECT_API_URL to the Prefect server's API "
            "(for example http://HOST:4200/api), or run `svrctl up` on this machine"
        )
    if not healthy(url):
        raise _not_ready(
            f"the Prefect API at {url} does not answer: start that Prefect server, or point "
            "PREFECT_API_URL at one that runs (`svrctl up` runs one on this machine)"
        )
    problem = refusal(url)
    if problem is not None:
        raise _not_ready(f"the Prefect API at {url} refuses this worker: {problem}")
    return url


def _check_database(app: App) -> None:
    """Open the app database and check its schema; exit 2 if it is unusable."""
    from svrctl.runtime import app_database

    try:
        app_database(app.settings)
    except SvrctlError as exc:
        raise _not_ready(
            f"{exc.message} (the worker records runs in the app database named by "
            "SVRCTL_DATABASE_URL)"
        ) from None


def _serve(pool: str, limit: int, name: str | None) -> None:
    """Run the worker until Ctrl-C or SIGTERM; in-flight runs are cancelled cleanly."""
    from svrctl.cli.foreground import run_until_stopped
    from svrctl.worker import run_worker

    if run_until_stopped(lambda: run_worker(pool, limit=limit, name=name, printer=click.echo)):
        click.echo("✓ svrctl worker stopped")
