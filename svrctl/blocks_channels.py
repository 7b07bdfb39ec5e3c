"""Notification channel blocks (``svrctl-notify-channel``): apply them, export them.

Part of :mod:`svrctl.blocks_sync`, which holds the rules. A channel block is applied
through ``add_channel``/``update_channel``, as ``svrctl notify add/edit`` do; its
token moves into the channel's Secret block and the export clears it in the block.
An Apprise channel's URL is its secret: the block's URL shows only its scheme, and a
new Apprise URL is typed into the token field.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from svrctl.blocks_sync import (
    CHANNEL_BLOCK_TYPE,
    EXPORT_MARK,
    BlockAction,
    BlockProblem,
    BlocksReport,
    block_document_name,
    delete_left_over,
    left_over,
    named_in,
    newer,
    read_docs,
    write_doc,
)
from svrctl.db.engine import Database
from svrctl.db.models import ChannelKind, NotifyChannel
from svrctl.exceptions import BadInputError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = ["apply_channels", "export_channels"]

_CHANNEL_FIELDS = (
    "kind",
    "url",
    "topic",
    "priority",
    "markdown",
    "summaries",
    "enabled",
    "is_default",
)
_CHANNEL_DEFAULTS: dict[str, Any] = {
    "markdown": True,
    "summaries": False,
    "enabled": True,
    "is_default": False,
}
_ELLIPSIS = "://…"
# update_channel arguments whose block field has another name
_FIELD_OF_ARG = {"clear_priority": "priority", "default": "is_default"}


def _channel_data(row: NotifyChannel) -> dict[str, Any]:
    """Return a channel row as block data: no token (it lives in the Secret block)."""
    return {
        "name": row.name,
        "kind": row.kind,
        "url": row.url,
        "topic": row.topic,
        "token": None,
        "priority": row.priority,
        "markdown": bool(row.markdown),
        "summaries": bool(row.summaries),
        "enabled": bool(row.enabled),
        "is_default": bool(row.is_default),
    }


def _channel_rows(db: Database) -> dict[str, tuple[dict[str, Any], datetime]]:
    from svrctl.notify.channels import list_channels

    with db.read() as session:
        return {r.name: (_channel_data(r), r.updated) for r in list_channels(session)}


def _channel_normal(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data.get(k, _CHANNEL_DEFAULTS.get(k)) for k in _CHANNEL_FIELDS}


def _token(data: dict[str, Any]) -> str | None:
    """Return the token typed into a channel block, if any."""
    token = data.get("token")
    if token is None or token == "":
        return None
    return str(token)


def _channel_changes(data: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """Return the ``update_channel`` arguments that turn ``row`` into block ``data``."""
    want = _channel_normal(data)
    token = _token(data)
    changes: dict[str, Any] = {}
    if want["kind"] != row["kind"]:
        raise BadInputError(
            f"invalid kind: a channel's kind cannot change ({row['kind']} to {want['kind']}): "
            "remove the channel (`svrctl notify rm`) and add it again",
            field="kind",
        )
    if row["kind"] == ChannelKind.APPRISE.value:
        url = want["url"]
        secret_url = token or (url if url and url != row["url"] and _ELLIPSIS not in url else None)
        if secret_url:
            changes["url"] = secret_url
    else:
        if want["url"] != row["url"]:
            changes["url"] = want["url"] or ""
        if token:
            changes["token"] = token
    if want["topic"] != row["topic"]:
        changes["topic"] = want["topic"] or ""
    if want["priority"] != row["priority"]:
        if want["priority"] is None:
            changes["clear_priority"] = True
        else:
            changes["priority"] = want["priority"]
    for key, arg in (
        ("markdown", "markdown"),
        ("summaries", "summaries"),
        ("enabled", "enabled"),
        ("is_default", "default"),
    ):
        if want[key] != row[key]:
            changes[arg] = want[key]
    return changes


def _add_channel(db: Database, data: dict[str, Any]) -> None:
    """Add a channel from block data through ``add_channel``, as ``svrctl notify add`` does."""
    from svrctl.notify.channels import add_channel, update_channel

    want = _channel_normal(data)
    token = _token(data)
    name = str(data["name"]).strip()
    apprise = want["kind"] == ChannelKind.APPRISE.value
    add_channel(
        db,
        name=name,
        kind=str(want["kind"]),
        url=(token or want["url"]) if apprise else want["url"],
        topic=want["topic"],
        token=None if apprise else token,
        priority=want["priority"],
        markdown=bool(want["markdown"]),
        default=bool(want["is_default"]),
        summaries=bool(want["summaries"]),
    )
    if not want["enabled"]:
        update_channel(db, name, enabled=False)


def apply_channels(
    db: Database, client: SyncPrefectClient, report: BlocksReport, dry_run: bool
) -> None:
    """Write to the database each channel block edited after its row (or without one)."""
    from svrctl.notify.channels import redact, remember_secret, update_channel

    docs = read_docs(client, CHANNEL_BLOCK_TYPE)
    rows = _channel_rows(db)
    for doc in sorted(docs.values(), key=lambda d: d.name):
        remember_secret(_token(doc.data))
        name = named_in(doc, "channel", report)
        if name is None or left_over(doc, "channel", name, name in rows, report):
            continue
        row = rows.get(name)
        try:
            if row is None:
                _channel_kind(doc.data)
                action = BlockAction("channel", name, doc.name, "add")
                report.actions.append(action)
                if not dry_run:
                    _add_channel(db, doc.data)
                    action.done = True
                continue
            differs = _channel_normal(doc.data) != _channel_normal(row[0]) or _token(doc.data)
            if not differs:
                report.unchanged += 1
                continue
            if not newer(doc, row[1]):
                report.notes.append(
                    f"channel {name}: the database changed after block {doc.name}; the "
                    "database wins (the export rewrites the block)"
                )
                continue
            changes = _channel_changes(doc.data, row[0])
            fields = sorted({_FIELD_OF_ARG.get(k, k) for k in changes})
            action = BlockAction("channel", name, doc.name, "update", fields)
            report.actions.append(action)
            if not dry_run:
                update_channel(db, name, **changes)
                action.done = True
        except BadInputError as exc:
            if report.actions and report.actions[-1].block == doc.name:
                report.actions.pop()
            reason = redact(exc.message) or exc.message
            report.problems.append(BlockProblem("channel", doc.name, name, exc.field, reason))


def _channel_kind(data: dict[str, Any]) -> ChannelKind:
    kind = data.get("kind")
    try:
        return ChannelKind(str(kind))
    except ValueError:
        raise BadInputError(
            f"invalid kind: {kind!r}: use gotify, ntfy or apprise", field="kind"
        ) from None


def export_channels(db: Database, client: SyncPrefectClient, report: BlocksReport) -> None:
    """Write each channel row to its block, token cleared, unless the block is newer."""
    from svrctl.blocks import SvrctlNotifyChannel

    docs = read_docs(client, CHANNEL_BLOCK_TYPE)
    rows = _channel_rows(db)
    for name, (data, updated) in rows.items():
        block = block_document_name(name)
        doc = docs.get(block)
        edited = doc is not None and (
            _channel_normal(doc.data) != _channel_normal(data) or bool(_token(doc.data))
        )
        if doc is not None and not edited and doc.data.get(EXPORT_MARK):
            report.unchanged += 1
            continue
        if doc is not None and edited and newer(doc, updated):
            report.notes.append(
                f"block {block} holds an edit of channel {name} newer than the database: "
                "`svrctl blocks apply` applies it (the export leaves it)"
            )
            continue
        changed: list[str] = []
        if doc is not None:
            have = _channel_normal(doc.data)
            changed = [k for k in _CHANNEL_FIELDS if have[k] != data[k]]
            changed += ["token"] if _token(doc.data) else []
        action = BlockAction(
            "channel", name, block, "create" if doc is None else "rewrite", changed
        )
        report.actions.append(action)
        write_doc(client, SvrctlNotifyChannel, block, data, doc)
        action.done = True
    delete_left_over(client, docs, "channel", set(rows), report)
