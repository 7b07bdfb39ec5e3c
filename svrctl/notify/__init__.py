"""Notifications: what a notice is, and the result of delivering it to one channel.

- ``svrctl.notify.channels``: channel specs, add/list/remove, secrets in Prefect blocks.
- ``svrctl.notify.deliver``: send a notice to channels (Gotify, ntfy, Apprise) with a
  short timeout, and record every attempt in the notification log.
- ``svrctl.notify.policy``: decide which notices a finished run deserves.
- ``svrctl.notify.messages``: build the text of run notices and summaries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["DeliveryResult", "Event", "Notice"]


class Event(enum.StrEnum):
    """Why a notice is sent."""

    FAILURE = "failure"
    STILL_FAILING = "still_failing"
    RECOVERY = "recovery"
    SUCCESS = "success"
    FINDING = "finding"
    MISSED = "missed"
    SUMMARY = "summary"
    TEST = "test"


@dataclass
class Notice:
    """One message to send: a title, a markdown body and a priority from 1 to 10."""

    event: Event
    title: str
    body: str
    priority: int = 5
    task_id: int | None = None
    task_name: str | None = None
    status: str | None = None
    flow_run_id: str | None = None
    # Prefect UI link of the flow run ("View run" action in ntfy, a link elsewhere)
    run_url: str | None = None


@dataclass
class DeliveryResult:
    """How sending one notice to one channel went."""

    channel: str
    ok: bool
    error: str | None = None
    duration_ms: int = 0
