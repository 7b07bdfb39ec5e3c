"""Which Prefect API to talk to: PREFECT_API_URL, else the server `svrctl up` runs, else say so."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from svrctl.settings import Settings

__all__ = [
    "ApiTarget",
    "api_state_file",
    "choose_api",
    "find_api",
    "healthy",
    "refusal",
    "reload_prefect_settings",
    "remember_api",
]

HEALTH_TIMEOUT_SECONDS = 2.0


def api_state_file(settings: Settings) -> Path:
    """Return the file where `svrctl up` writes the address of the server it runs."""
    return settings.home / "prefect-api.json"


def remember_api(settings: Settings, url: str) -> None:
    """Record the API address of the server `svrctl up` started."""
    path = api_state_file(settings)
    settings.ensure_home()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


def _remembered(settings: Settings) -> str | None:
    try:
        data = json.loads(api_state_file(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return url if isinstance(url, str) and url else None


def _auth_headers() -> dict[str, str]:
    """Basic auth from PREFECT_API_AUTH_STRING, as Prefect's own client sends it."""
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if not auth:
        return {}
    import base64

    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def refusal(url: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> str | None:
    """Say why a Prefect API that is up refuses this client (e.g. its auth), or None.

    The health check needs no credentials, so a missing or wrong
    PREFECT_API_AUTH_STRING shows only on a request that does.
    """
    import httpx

    try:
        response = httpx.get(
            url.rstrip("/") + "/admin/version", timeout=timeout, headers=_auth_headers()
        )
    except httpx.HTTPError:
        return None  # reachability is the health check's business
    if response.status_code == 401:
        given = "a wrong" if os.environ.get("PREFECT_API_AUTH_STRING") else "no"
        return (
            f"it asks for a user and password, and this machine sends {given} one: set "
            "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING (USER:PASSWORD)"
        )
    if response.status_code >= 400:
        return f"it answers HTTP {response.status_code} to an API request"
    return None


def healthy(url: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> bool:
    """Tell whether a Prefect API answers its health check."""
    import httpx

    headers = _auth_headers()
    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout, headers=headers)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@dataclass(frozen=True)
class ApiTarget:
    """The Prefect API to sync with, or why there is none.

    Attributes:
        url: The API URL that answered its health check, or None.
        problem: Why there is no URL (None when there is one).
        configured: False when no API is configured at all (no PREFECT_API_URL, no
            Prefect profile URL and no server started by ``svrctl up``).
    """

    url: str | None
    problem: str | None
    configured: bool


def _configured() -> str | None:
    """PREFECT_API_URL from the environment, else from the active Prefect profile."""
    return os.environ.get("PREFECT_API_URL") or _profile_api_url()


def find_api(settings: Settings) -> ApiTarget:
    """Find a Prefect API that answers: PREFECT_API_URL, else the one `svrctl up` runs.

    The same order as :func:`choose_api`, but it changes nothing in this process and
    never falls back to a temporary in-process API (deployments written there would
    vanish): for `svrctl sync` and the automatic sync.

    Args:
        settings: svrctl's settings (for the file where `svrctl up` records its server).

    Returns:
        The API to use, or the reason there is none.
    """
    candidates = [u for u in (_configured(), _remembered(settings)) if u]
    candidates = list(dict.fromkeys(candidates))
    for url in candidates:
        if healthy(url):
            return ApiTarget(url, None, True)
    if not candidates:
        return ApiTarget(
            None,
            "no Prefect API is configured (set PREFECT_API_URL, or start one with `svrctl up`)",
            False,
        )
    where = " or ".join(candidates)
    return ApiTarget(None, f"the Prefect API at {where} does not answer", True)


def choose_api(settings: Settings, warn: Callable[[str], None]) -> str | None:
    """Point this process at a reachable Prefect API and return it; None means ephemeral.

    The order is PREFECT_API_URL (the environment or the active Prefect profile),
    then the server `svrctl up` runs. With neither reachable, ``warn`` is told
    before Prefect's slow, temporary in-process API is used.
    """
    configured = _configured()
    if configured:
        if healthy(configured):
            return configured
        warn(f"the Prefect API at {configured} (PREFECT_API_URL) does not answer")
    remembered = _remembered(settings)
    if remembered and remembered != configured:
        if healthy(remembered):
            os.environ["PREFECT_API_URL"] = remembered
            reload_prefect_settings()
            return remembered
        warn(f"the Prefect server that `svrctl up` started ({remembered}) does not answer")
    if configured:
        # Keep the user's choice: Prefect will report the connection error itself.
        return configured
    warn(
        "no Prefect server is reachable (PREFECT_API_URL is not set and `svrctl up` is not "
        "running): falling back to a temporary in-process Prefect API, which takes about "
        "20 s to start. Run `svrctl up` or set PREFECT_API_URL to avoid this."
    )
    return None


def _profile_api_url() -> str | None:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def reload_prefect_settings() -> None:
    """Make an already imported Prefect read PREFECT_API_URL again.

    Prefect fixes its settings from the environment when it is first imported (as
    ``_profile_api_url`` does); without a refresh, a changed PREFECT_API_URL is
    ignored and runs go to a temporary in-process API instead.
    """
    import sys

    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
