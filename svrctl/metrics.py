"""Metrics that plugins measure: record them, and read a server's figures over time."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from svrctl.db.models import MetricRow, utcnow
from svrctl.exceptions import BadInputError

if TYPE_CHECKING:
    from svrctl.db.engine import Database
    from svrctl.plugin import Metric

__all__ = ["metric_to_dict", "parse_since", "purge_metrics", "read_metrics", "record_metrics"]

_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """Turn ``30m``, ``12h``, ``1d``, ``2w`` or an ISO time into the UTC start of a window."""
    now = now or utcnow()
    match = _SINCE_RE.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInputError(
            f"invalid --since {text!r}: give a length such as 30m, 12h, 1d or 2w, "
            "or a time such as 2026-11-20T08:00+00:00",
            field="since",
        ) from None
    if when.tzinfo is None:
        raise BadInputError(
            f"invalid --since {text!r}: a time needs its UTC offset (e.g. +00:00)", field="since"
        )
    return when


def record_metrics(
    db: Database,
    *,
    server: str,
    plugin: str,
    metrics: Sequence[Metric],
    task_id: int | None = None,
    flow_run_id: str | None = None,
    at: datetime | None = None,
) -> int:
    """Store the figures of one plugin run in one transaction; return how many."""
    if not metrics:
        return 0
    when = at or utcnow()
    with db.write() as session:
        session.add_all(
            MetricRow(
                server=server,
                plugin=plugin,
                name=m.name,
                value=float(m.value),
                unit=m.unit,
                labels=dict(m.labels),
                time=when,
                task_id=task_id,
                flow_run_id=flow_run_id,
            )
            for m in metrics
        )
    return len(metrics)


def read_metrics(
    session: Session,
    server: str,
    *,
    name: str | None = None,
    since: datetime | None = None,
    limit: int = 10_000,
) -> list[MetricRow]:
    """Return a server's figures (one metric, or all) since a time, oldest first."""
    query = select(MetricRow).where(MetricRow.server == server)
    if name is not None:
        query = query.where(MetricRow.name == name)
    if since is not None:
        query = query.where(MetricRow.time >= since)
    query = query.order_by(MetricRow.time.desc(), MetricRow.id.desc()).limit(limit)
    return list(reversed(list(session.scalars(query))))


def purge_metrics(db: Database, retention_days: int, batch: int = 50_000) -> int:
    """Delete figures older than ``retention_days``, in batches; return how many."""
    from svrctl.db.purge import purge_before

    return purge_before(db, MetricRow.time, utcnow() - timedelta(days=retention_days), batch=batch)


def metric_to_dict(row: MetricRow) -> dict[str, Any]:
    """Return a metric row as plain JSON-ready data."""
    return {
        "server": row.server,
        "plugin": row.plugin,
        "name": row.name,
        "value": row.value,
        "unit": row.unit,
        "labels": row.labels,
        "time": row.time.isoformat(),
        "task_id": row.task_id,
        "flow_run_id": row.flow_run_id,
    }
