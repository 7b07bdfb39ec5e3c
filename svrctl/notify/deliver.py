"""Send a notice to channels, in parallel and within a short timeout, and log every attempt.

Every kind goes through the ``apprise`` library:

- **Gotify**: apprise's ``gotify`` plugin posts ``{"title", "message", "priority",
  "extras"}`` to ``<url>/message`` with the token in the ``X-Gotify-Key`` header, and
  adds ``extras.client::display.contentType = text/markdown`` for markdown channels.
  It cannot add ``client::notification.click``, so the run link goes at the end of
  the message.
- **ntfy**: apprise's ``ntfy`` plugin posts ``{"topic", "title", "message"}`` as JSON
  to the server root and the rest as headers, which ntfy merges into the message:
  ``Authorization: Bearer <token>``, ``X-Priority``, ``X-Markdown: yes``, ``X-Click``
  and ``X-Actions: view, View run, <url>`` (the "View run" button). So no
  hand-written HTTP is needed.
- **Apprise URL**: any target apprise knows; the run link goes at the end of the body.

A channel that is down or hangs costs the caller at most ``notify_timeout_seconds``
(plus a moment): each channel runs in a daemon thread, and the caller stops waiting
at the deadline. A failure never raises: it is logged on ``svrctl.notify`` and
recorded in the notification log with its error, secrets redacted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from svrctl.db.engine import Database
from svrctl.db.models import ChannelKind, NotificationLog, NotifyChannel, utcnow
from svrctl.notify import DeliveryResult, Event, Notice
from svrctl.notify.channels import ChannelInfo, redact, remember_secret
from svrctl.settings import Settings

__all__ = [
    "deliver",
    "deliver_to",
    "gotify_priority",
    "ntfy_priority",
    "render",
    "run_url",
]

log = logging.getLogger("svrctl.notify")

# How long past the timeout the caller waits for a channel's thread to report.
_GRACE_SECONDS = 0.5
_ERROR_LIMIT = 2000


def run_url(settings: Settings, flow_run_id: str | None) -> str | None:
    """Return the Prefect UI address of a flow run, or None when it cannot be told.

    The UI is ``settings.prefect_ui_url``, else Prefect's ``PREFECT_API_URL`` without
    its trailing ``/api``.
    """
    if not flow_run_id:
        return None
    base = settings.prefect_ui_url
    if not base:
        from prefect.settings import PREFECT_API_URL

        api = PREFECT_API_URL.value()
        if not api:
            return None
        base = str(api).rstrip("/").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def ntfy_priority(priority: int) -> int:
    """Map a notice priority 1-10 onto ntfy's 1 (min) to 5 (max): two steps per level."""
    return min(5, max(1, (priority + 1) // 2))


def gotify_priority(priority: int) -> int:
    """Map a notice priority 1-10 onto Gotify's 0-10 (the same number).

    apprise's Gotify plugin then rounds it down onto Gotify's named levels:
    1-2 → 0 (low), 3-4 → 3, 5-7 → 5 (normal), 8-9 → 8 (high), 10 → 10 (emergency).
    """
    return min(10, max(0, priority))


def _notify_type(notice: Notice) -> str:
    """Apprise's message type (colour and icon on Slack, Discord, ...)."""
    if notice.event in (Event.FAILURE, Event.STILL_FAILING):
        return "failure"
    if notice.event in (Event.RECOVERY, Event.SUCCESS):
        return "success"
    if notice.event in (Event.MISSED, Event.FINDING) or notice.priority >= 8:
        return "warning"
    return "info"


@dataclass(frozen=True)
class Rendered:
    """A notice as one channel gets it."""

    title: str
    body: str
    markdown: bool
    # plugin arguments for apprise.Apprise.instantiate (gotify, ntfy), or None (apprise URL)
    plugin: dict[str, Any] | None


def render(channel: ChannelInfo, notice: Notice, secret: str | None, timeout: float) -> Rendered:
    """Build what ``channel`` is sent for ``notice``; ``secret`` is its token or URL."""
    body = notice.body
    kind = channel.kind
    if notice.run_url and kind is not ChannelKind.NTFY:
        link = f"[View run]({notice.run_url})" if channel.markdown else notice.run_url
        body = f"{body}\n\n{link}" if body else link
    if kind is ChannelKind.APPRISE:
        return Rendered(notice.title, body, True, None)
    split = urlsplit(channel.url or "")
    common: dict[str, Any] = {
        "host": split.hostname,
        "port": split.port,
        "secure": split.scheme == "https",
        "format": "markdown" if channel.markdown else "text",
        "cto": timeout,
        "rto": timeout,
    }
    if kind is ChannelKind.GOTIFY:
        priority = channel.priority if channel.priority is not None else notice.priority
        plugin = {
            **common,
            "schema": "gotifys" if common["secure"] else "gotify",
            "fullpath": split.path.rstrip("/") + "/",
            "token": secret,
            "priority": str(gotify_priority(priority)),
        }
        return Rendered(notice.title, body, channel.markdown, plugin)
    level = channel.priority if channel.priority is not None else ntfy_priority(notice.priority)
    plugin = {
        **common,
        "schema": "ntfys" if common["secure"] else "ntfy",
        "mode": "private",
        "targets": [channel.topic],
        "priority": str(level),
        "include_image": False,
    }
    if secret:
        plugin |= {"auth": "token", "token": secret}
    if notice.run_url:
        plugin |= {"click": notice.run_url, "actions": f"view, View run, {notice.run_url}"}
    return Rendered(notice.title, body, channel.markdown, plugin)


def _send(channel: ChannelInfo, notice: Notice, timeout: float) -> str | None:
    """Send one notice to one channel; return None on success, else the error."""
    import apprise

    from svrctl.secrets import prefect_secret

    started = time.monotonic()
    secret = prefect_secret(channel.secret) if channel.secret else None
    remember_secret(secret)
    left = max(0.5, timeout - (time.monotonic() - started))
    rendered = render(channel, notice, secret, left)
    # apprise sends in this (daemon) thread, bounded by its socket timeouts: with a
    # deadline of its own it would use its process-wide pool of cores + 4 threads, which
    # a few hanging channels fill, so that every other channel's notice timed out too.
    asset = apprise.AppriseAsset(service_timeout=0)
    service = apprise.Apprise.instantiate(
        rendered.plugin if rendered.plugin is not None else (secret or ""),
        asset=asset,
        suppress_exceptions=True,
    )
    if service is None:
        return f"apprise cannot use this {channel.kind} channel's settings"
    service.socket_connect_timeout = service.socket_read_timeout = left
    sender = apprise.Apprise(asset=asset)
    sender.add(service)
    result = sender.notify(
        body=rendered.body,
        title=rendered.title,
        body_format="markdown",
        notify_type=_notify_type(notice),
    )
    if result:
        return None
    messages = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
    return "; ".join(dict.fromkeys(messages)) or f"not delivered ({result.status.name.lower()})"


@dataclass
class _Attempt:
    channel: ChannelInfo
    started: float
    error: str | None = None
    done: bool = False


def _run(attempt: _Attempt, notice: Notice, timeout: float, finished: threading.Event) -> None:
    try:
        attempt.error = _send(attempt.channel, notice, timeout)
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc)
        attempt.error = f"{exc.__class__.__name__}: {message}"
    finally:
        attempt.done = True
        finished.set()


def deliver_to(
    db: Database, settings: Settings, notice: Notice, channels: Sequence[ChannelInfo]
) -> list[DeliveryResult]:
    """Send ``notice`` to exactly these channels in parallel; log and record each attempt."""
    timeout = settings.notify_timeout_seconds
    attempts: list[_Attempt] = []
    events: list[threading.Event] = []
    for channel in channels:
        attempt, finished = _Attempt(channel, time.monotonic()), threading.Event()
        thread = threading.Thread(
            target=_run,
            args=(attempt, notice, timeout, finished),
            name=f"svrctl-notify-{channel.name}",
            daemon=True,
        )
        thread.start()
        attempts.append(attempt)
        events.append(finished)
    deadline = time.monotonic() + timeout + _GRACE_SECONDS
    for finished in events:
        finished.wait(max(0.0, deadline - time.monotonic()))
    results = []
    for attempt in attempts:
        elapsed = int((time.monotonic() - attempt.started) * 1000)
        if not attempt.done:
            error: str | None = f"no answer within {timeout:g} s (timed out)"
        else:
            error = attempt.error
        results.append(_result(attempt.channel.name, error, elapsed))
    _record(db, notice, results)
    return results


def _result(name: str, error: str | None, elapsed_ms: int) -> DeliveryResult:
    if error is None:
        return DeliveryResult(channel=name, ok=True, duration_ms=elapsed_ms)
    error = redact(error) or error
    if len(error) > _ERROR_LIMIT:
        error = error[: _ERROR_LIMIT - 1] + "…"
    log.warning("notification to channel %s failed: %s", name, error)
    return DeliveryResult(channel=name, ok=False, error=error, duration_ms=elapsed_ms)


def _record(db: Database, notice: Notice, results: list[DeliveryResult]) -> None:
    """Write one notification log row per attempt; a database error is logged, not raised."""
    if not results:
        return
    try:
        with db.write() as session:
            now = utcnow()
            for result in results:
                session.add(
                    NotificationLog(
                        channel=result.channel,
                        task_id=notice.task_id,
                        task_name=notice.task_name,
                        event=str(notice.event),
                        status=notice.status,
                        ok=result.ok,
                        error=result.error,
                        flow_run_id=notice.flow_run_id,
                        time=now,
                    )
                )
    except Exception as exc:
        log.warning("cannot record notifications in the notification log: %s", redact(str(exc)))


def deliver(
    db: Database,
    settings: Settings,
    notice: Notice,
    channels: list[str] | None,
    *,
    summaries: bool = False,
) -> list[DeliveryResult]:
    """Send ``notice`` and return one result per channel tried; never raises for a failure.

    Args:
        db: The app database (channels are read from it, attempts written to it).
        settings: Process settings (``notify_timeout_seconds``).
        notice: What to send.
        channels: Channel names; None means the default set (default and enabled).
            Disabled channels are skipped; a name with no channel is recorded as failed.
        summaries: Send to the channels marked for summaries instead (``channels`` is
            ignored).
    """
    try:
        with db.read() as session:
            query = select(NotifyChannel).order_by(NotifyChannel.name)
            if summaries:
                query = query.where(NotifyChannel.summaries.is_(True))
            elif channels is None:
                query = query.where(NotifyChannel.is_default.is_(True))
            else:
                query = query.where(NotifyChannel.name.in_(channels))
            rows = [ChannelInfo.of(r) for r in session.scalars(query)]
    except Exception as exc:
        log.warning("cannot read notification channels: %s", redact(str(exc)))
        return []
    chosen = [r for r in rows if r.enabled]
    missing: list[DeliveryResult] = []
    if channels is not None and not summaries:
        known = {r.name for r in rows}
        for name in dict.fromkeys(channels):
            if name not in known:
                missing.append(_result(name, "no notification channel of that name", 0))
        _record(db, notice, missing)
    return missing + deliver_to(db, settings, notice, chosen)
