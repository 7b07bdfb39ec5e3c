"""Batched purges of old rows (history and metrics share them), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from svrctl.db.engine import Database
from svrctl.db.models import Task, TaskHistory, utcnow
from svrctl.db.purge import purge_before


@pytest.mark.parametrize("batch", [1, 2, 5, 1000])
def test_every_old_row_goes_in_batches_whatever_the_ties(database: Database, batch: int) -> None:
    now = utcnow()
    cutoff = now - timedelta(days=30)
    with database.write() as s:
        task = Task(name="t", kind="local", command="true", timezone="UTC")
        s.add(task)
        s.flush()
        # 4 rows at one instant, then one row a day; some still running; some recent
        when = [cutoff - timedelta(days=20)] * 4
        when += [cutoff - timedelta(days=d) for d in range(1, 11)]
        when += [cutoff, now - timedelta(days=1), now]
        for i, at in enumerate(when):
            status = "running" if i in (1, 7) else "success"
            s.add(TaskHistory(task_id=task.id, status=status, started_at=at, server_name=str(i)))
    removed = purge_before(
        database, TaskHistory.started_at, cutoff, TaskHistory.status != "running", batch=batch
    )
    assert removed == 12
    with database.read() as s:
        left = sorted(int(n or 0) for n in s.scalars(select(TaskHistory.server_name)))
    assert left == [1, 7, 14, 15, 16]  # the running ones, the one at the cutoff and the recent
    assert purge_before(database, TaskHistory.started_at, cutoff, batch=batch) == 2
