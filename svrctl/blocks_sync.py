"""Servers and notification channels as Prefect blocks: register, apply, export, delete.

The app database is the source of truth; runs read only the database. Blocks of the
types ``svrctl-server`` and ``svrctl-notify-channel`` are a second way to edit it:

* :func:`apply_blocks` reads every block of both types and writes to the database
  those whose content differs from their row *and* whose document was saved after
  the row last changed (``updated``). Each block is validated by the code path of
  the CLI (:class:`~svrctl.specs.ServerSpec` with ``add_server``/``update_server``;
  ``add_channel``/``update_channel``); a block that fails is reported (block, field,
  reason) and changes nothing. A block older than its row is left for the export.
* :func:`export_blocks` writes every row to its block, unless the block holds an
  edit newer than the row (which the next apply takes), and deletes the blocks it
  wrote (:data:`EXPORT_MARK`) whose row is gone; the apply never adds those back.
* :func:`delete_block` removes the block of a server or channel svrctl removed.

A block document is named after its server or channel (:func:`block_document_name`);
the real name is its ``name`` field. A channel block's token never stays in the
block: apply stores it in the channel's Secret block (as ``svrctl notify add`` does)
and the export clears the field. Prefect is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from svrctl.db.engine import Database
from svrctl.db.models import Server
from svrctl.exceptions import BadInputError, NotFoundError
from svrctl.specs import ServerSpec, validate
from svrctl.views import artifact_slug

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from sqlalchemy.orm import Session

    from svrctl.settings import Settings

__all__ = [
    "CHANNEL_BLOCK_TYPE",
    "EXPORT_MARK",
    "SERVER_BLOCK_TYPE",
    "BlockAction",
    "BlockDoc",
    "BlockProblem",
    "BlocksReport",
    "apply_blocks",
    "block_document_name",
    "delete_block",
    "delete_left_over",
    "export_blocks",
    "forget_block",
    "left_over",
    "named_in",
    "newer",
    "read_docs",
    "register_block_types",
    "sync_blocks",
    "up_blocks",
    "write_doc",
]

SERVER_BLOCK_TYPE = "svrctl-server"
CHANNEL_BLOCK_TYPE = "svrctl-notify-channel"
PAGE_SIZE = 200
# A data key (not a form field) in every block the export writes. A block without it
# was made by a person; a block with it whose server or channel is gone is left over
# from a removal (or from another app database): the apply skips it, the export
# deletes it.
EXPORT_MARK = "svrctl_exported"

Kind = Literal["server", "channel"]
Op = Literal["add", "update", "create", "rewrite", "delete"]
_TYPE_OF: dict[Kind, str] = {"server": SERVER_BLOCK_TYPE, "channel": CHANNEL_BLOCK_TYPE}


def block_document_name(name: str) -> str:
    """Return the block document name of server or channel ``name``.

    Lowercase letters, digits and dashes (Prefect's rule). A name that does not map
    onto one unchanged gets a short hash, so two names never share a block.
    """
    slug = artifact_slug(name)
    if slug == name:
        return slug
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


# --------------------------------------------------------------------------- report


@dataclass
class BlockAction:
    """One write, to the database (apply) or to a block (export, delete)."""

    kind: Kind
    name: str
    block: str
    op: Op
    fields: list[str] = field(default_factory=list)
    done: bool = False

    def line(self) -> str:
        """Return the action as one line for people."""
        sign = {"add": "+", "create": "+", "update": "~", "rewrite": "~", "delete": "-"}[self.op]
        what = {
            "add": f"add {self.kind} {self.name} from block {self.block}",
            "update": f"update {self.kind} {self.name} from block {self.block}",
            "create": f"create block {self.block} of {self.kind} {self.name}",
            "rewrite": f"rewrite block {self.block} from {self.kind} {self.name}",
            "delete": f"delete block {self.block} of {self.kind} {self.name}",
        }[self.op]
        extra = f": {', '.join(self.fields)}" if self.fields else ""
        return f"{sign} {what}{extra}"

    def to_dict(self) -> dict[str, Any]:
        """Return the action as JSON-ready data."""
        return {
            "kind": self.kind,
            "name": self.name,
            "block": self.block,
            "op": self.op,
            "fields": self.fields,
            "done": self.done,
        }


@dataclass(frozen=True)
class BlockProblem:
    """A block that could not be applied: which, which field, and why."""

    kind: Kind
    block: str
    name: str | None
    field: str | None
    reason: str

    def line(self) -> str:
        """Return the problem as one line for people."""
        named = f" ({self.kind} {self.name})" if self.name else ""
        where = f", field {self.field}" if self.field else ""
        return f"! {self.kind} block {self.block}{named}{where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """Return the problem as JSON-ready data."""
        return {
            "kind": self.kind,
            "block": self.block,
            "name": self.name,
            "field": self.field,
            "reason": self.reason,
        }


@dataclass
class BlocksReport:
    """What an apply and/or export did, what it left alone and why, and what failed."""

    api_url: str
    dry_run: bool = False
    actions: list[BlockAction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[BlockProblem] = field(default_factory=list)
    unchanged: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when every block could be applied and written."""
        return not self.problems and self.error is None

    def changed(self, kind: Kind) -> bool:
        """Tell whether the apply wrote a ``kind`` row to the database."""
        return any(a.kind == kind and a.op in ("add", "update") and a.done for a in self.actions)

    def summary(self) -> str:
        """Return one line: how many writes, notes and problems."""
        applied = sum(a.op in ("add", "update") for a in self.actions)
        exported = sum(a.op in ("create", "rewrite") for a in self.actions)
        text = f"{applied} applied to the database, {exported} written to blocks"
        text += f", {self.unchanged} unchanged"
        if self.problems:
            text += f", {len(self.problems)} refused"
        return text

    def lines(self) -> list[str]:
        """Return the actions, notes and problems, one line each."""
        out = [a.line() for a in self.actions]
        out += [f"= {note}" for note in self.notes]
        out += [p.line() for p in self.problems]
        out += [f"! {self.error}"] if self.error else []
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "api_url": self.api_url,
            "dry_run": self.dry_run,
            "actions": [a.to_dict() for a in self.actions],
            "notes": self.notes,
            "problems": [p.to_dict() for p in self.problems],
            "unchanged": self.unchanged,
            "error": self.error,
            "ok": self.ok,
        }


# --------------------------------------------------------------------------- Prefect


@dataclass(frozen=True)
class BlockDoc:
    """A block document as read from Prefect (secrets included)."""

    id: Any
    name: str
    data: dict[str, Any]
    updated: datetime | None


@contextmanager
def _client(api_url: str) -> Iterator[SyncPrefectClient]:
    """Yield a sync Prefect client (and settings) pointed at ``api_url``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def register_block_types(api_url: str) -> list[str]:
    """Register the svrctl block types with the Prefect API; return their slugs."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from svrctl.blocks import BLOCK_TYPES

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        for cls in BLOCK_TYPES:
            cls.register_type_and_schema(_sync=True)
    return [cls.get_block_type_slug() for cls in BLOCK_TYPES]


def read_docs(client: SyncPrefectClient, slug: str) -> dict[str, BlockDoc]:
    """Return every named block document of type ``slug``, by document name."""
    from prefect.exceptions import ObjectNotFound

    docs: dict[str, BlockDoc] = {}
    offset = 0
    while True:
        try:
            page = client.read_block_documents_by_type(
                slug, offset=offset, limit=PAGE_SIZE, include_secrets=True
            )
        except ObjectNotFound:
            return docs
        for doc in page:
            if doc.name and not doc.is_anonymous:
                docs[doc.name] = BlockDoc(doc.id, doc.name, dict(doc.data), doc.updated)
        if len(page) < PAGE_SIZE:
            return docs
        offset += PAGE_SIZE


def write_doc(
    client: SyncPrefectClient, cls: Any, name: str, data: dict[str, Any], doc: BlockDoc | None
) -> None:
    """Create block ``name`` with ``data``, or replace the data of ``doc``."""
    from prefect.client.schemas.actions import BlockDocumentCreate, BlockDocumentUpdate

    payload = cls(**data).model_dump(mode="json", include=set(cls.model_fields))
    payload[EXPORT_MARK] = True
    if doc is None:
        client.create_block_document(
            BlockDocumentCreate(
                name=name,
                data=payload,
                block_schema_id=cls._block_schema_id,
                block_type_id=cls._block_type_id,
            )
        )
    else:
        client.update_block_document(
            doc.id,
            BlockDocumentUpdate(
                block_schema_id=cls._block_schema_id, data=payload, merge_existing_data=False
            ),
        )


def newer(doc: BlockDoc, row_updated: datetime | None) -> bool:
    """Tell whether a block document was saved after its row last changed."""
    if doc.updated is None or row_updated is None:
        return False
    return doc.updated > row_updated


# --------------------------------------------------------------------------- servers


def _server_rows(session: Session) -> dict[str, tuple[dict[str, Any], datetime]]:
    """Return every server as block data, with its ``updated`` time, by name."""
    from sqlalchemy import select

    from svrctl.servers import server_spec

    rows = session.scalars(select(Server).order_by(Server.name))
    return {r.name: (server_spec(session, r).model_dump(mode="json"), r.updated) for r in rows}


def _server_normal(data: dict[str, Any]) -> dict[str, Any]:
    """Return block data with every ServerSpec field, defaults filled in (no validation)."""
    out: dict[str, Any] = {}
    for key, info in ServerSpec.model_fields.items():
        if key in data:
            out[key] = data[key]
        elif key == "username":
            out[key] = None
        else:
            out[key] = info.get_default(call_default_factory=True)
    return out


def _server_spec_of(data: dict[str, Any]) -> ServerSpec:
    """Validate block data as ``svrctl server add`` validates its options."""
    given = {
        k: v
        for k, v in data.items()
        if k in ServerSpec.model_fields and v is not None and not (k == "username" and v == "")
    }
    return validate(ServerSpec, given)


def _apply_servers(
    db: Database, client: SyncPrefectClient, report: BlocksReport, dry_run: bool
) -> None:
    from svrctl.servers import add_server, update_server

    docs = read_docs(client, SERVER_BLOCK_TYPE)
    with db.read() as session:
        rows = _server_rows(session)
    pending: list[tuple[BlockAction, ServerSpec]] = []
    for doc in sorted(docs.values(), key=lambda d: d.name):
        name = named_in(doc, "server", report)
        if name is None or left_over(doc, "server", name, name in rows, report):
            continue
        row = rows.get(name)
        if row is not None and not newer(doc, row[1]):
            if _server_normal(doc.data) == row[0]:
                report.unchanged += 1
            else:
                report.notes.append(
                    f"server {name}: the database changed after block {doc.name}; the database "
                    "wins (the export rewrites the block)"
                )
            continue
        try:
            spec = _server_spec_of(doc.data)
        except BadInputError as exc:
            report.problems.append(BlockProblem("server", doc.name, name, exc.field, exc.message))
            continue
        want = spec.model_dump(mode="json")
        if row is None:
            pending.append((BlockAction("server", name, doc.name, "add"), spec))
        elif want != row[0]:
            changed = [k for k in want if want[k] != row[0].get(k)]
            pending.append((BlockAction("server", name, doc.name, "update", changed), spec))
        else:
            report.unchanged += 1
    for action, spec in _jump_order(pending):
        report.actions.append(action)
        if dry_run:
            continue
        try:
            with db.write() as session:
                if action.op == "add":
                    add_server(session, spec)
                else:
                    update_server(session, action.name, spec.model_dump())
        except BadInputError as exc:
            report.actions.remove(action)
            # the only server looked up by name here is the jump host
            missing_jump = isinstance(exc, NotFoundError) and spec.jump is not None
            where = "jump" if missing_jump else exc.field
            report.problems.append(
                BlockProblem("server", action.block, action.name, where, exc.message)
            )
            continue
        action.done = True


def _jump_order(
    pending: list[tuple[BlockAction, ServerSpec]],
) -> list[tuple[BlockAction, ServerSpec]]:
    """Order server writes so that a jump host added from a block comes before its users."""
    names = {spec.name for _, spec in pending}
    done: set[str] = set()
    ordered: list[tuple[BlockAction, ServerSpec]] = []
    left = list(pending)
    while left:
        ready = [p for p in left if p[1].jump not in names or p[1].jump in done]
        if not ready:  # a loop of jump hosts: update_server refuses it with its message
            ready = left
        for item in ready:
            ordered.append(item)
            done.add(item[1].name)
            left.remove(item)
    return ordered


def named_in(doc: BlockDoc, kind: Kind, report: BlocksReport) -> str | None:
    """Return the ``name`` field of a block named after it, else report the block."""
    name = doc.data.get("name")
    if not isinstance(name, str) or not name.strip():
        report.problems.append(
            BlockProblem(kind, doc.name, None, "name", f"the block gives no {kind} name")
        )
        return None
    name = name.strip()
    expected = block_document_name(name)
    if doc.name != expected:
        report.problems.append(
            BlockProblem(
                kind,
                doc.name,
                name,
                "name",
                f"a block is named after its {kind}: the block of {kind} {name!r} is "
                f"{expected!r}, not {doc.name!r}; rename the block, or correct the name field",
            )
        )
        return None
    return name


def left_over(doc: BlockDoc, kind: Kind, name: str, has_row: bool, report: BlocksReport) -> bool:
    """Tell whether a block is one the export wrote for a row that is gone (and note it)."""
    if has_row or not doc.data.get(EXPORT_MARK):
        return False
    report.notes.append(
        f"block {doc.name}: svrctl wrote it for {kind} {name}, which is no longer in the "
        "database (removed, or another app database); the export deletes it"
    )
    return True


def delete_left_over(
    client: SyncPrefectClient,
    docs: dict[str, BlockDoc],
    kind: Kind,
    names: set[str],
    report: BlocksReport,
) -> None:
    """Delete the blocks the export wrote for rows that are gone."""
    from prefect.exceptions import ObjectNotFound

    for doc in docs.values():
        name = doc.data.get("name")
        if not isinstance(name, str) or not doc.data.get(EXPORT_MARK):
            continue
        name = name.strip()
        if name in names or doc.name != block_document_name(name):
            continue  # a renamed name field is a person's edit: the apply reports it
        action = BlockAction(kind, name, doc.name, "delete")
        report.actions.append(action)
        with contextlib.suppress(ObjectNotFound):
            client.delete_block_document(doc.id)
        action.done = True


def _export_servers(db: Database, client: SyncPrefectClient, report: BlocksReport) -> None:
    from svrctl.blocks import SvrctlServer

    docs = read_docs(client, SERVER_BLOCK_TYPE)
    with db.read() as session:
        rows = _server_rows(session)
    for name, (data, updated) in rows.items():
        block = block_document_name(name)
        doc = docs.get(block)
        if doc is not None and _server_normal(doc.data) == data and doc.data.get(EXPORT_MARK):
            report.unchanged += 1
            continue
        if doc is not None and _server_normal(doc.data) != data and newer(doc, updated):
            report.notes.append(
                f"block {block} holds an edit of server {name} newer than the database: "
                "`svrctl blocks apply` applies it (the export leaves it)"
            )
            continue
        changed = [] if doc is None else [k for k in data if _server_normal(doc.data)[k] != data[k]]
        action = BlockAction("server", name, block, "create" if doc is None else "rewrite", changed)
        report.actions.append(action)
        write_doc(client, SvrctlServer, block, data, doc)
        action.done = True
    delete_left_over(client, docs, "server", set(rows), report)


# --------------------------------------------------------------------------- entry points


def apply_blocks(
    db: Database, api_url: str, *, dry_run: bool = False, report: BlocksReport | None = None
) -> BlocksReport:
    """Write to the app database every block edited after its row (or without a row).

    Args:
        db: The app database.
        api_url: A Prefect API that answers.
        dry_run: Plan only; server blocks are still validated, channel values are
            checked only when applied.
        report: A report to add to (a new one when None).
    """
    from svrctl.blocks_channels import apply_channels

    report = report or BlocksReport(api_url, dry_run=dry_run)
    register_block_types(api_url)
    with _client(api_url) as client:
        _apply_servers(db, client, report, dry_run)
        apply_channels(db, client, report, dry_run)
    return report


def export_blocks(
    db: Database, api_url: str, *, report: BlocksReport | None = None, register: bool = True
) -> BlocksReport:
    """Write every server and channel of the app database to its block.

    A block holding an edit newer than its row is left for :func:`apply_blocks`.
    ``register=False`` skips registering the block types (done already).
    """
    from svrctl.blocks_channels import export_channels

    report = report or BlocksReport(api_url)
    if register:
        register_block_types(api_url)
    with _client(api_url) as client:
        _export_servers(db, client, report)
        export_channels(db, client, report)
    return report


def sync_blocks(db: Database, api_url: str, *, dry_run: bool = False) -> BlocksReport:
    """Apply newer block edits, then export the database to the blocks (for sync and up).

    A failure to talk to Prefect becomes a problem of the report, not an exception.
    """
    report = BlocksReport(api_url, dry_run=dry_run)
    try:
        apply_blocks(db, api_url, dry_run=dry_run, report=report)
        if not dry_run:
            export_blocks(db, api_url, report=report, register=False)  # apply registered
    except Exception as exc:  # Prefect went away, or answered with an error
        from svrctl.notify.channels import redact

        report.error = redact(f"blocks not synced: {type(exc).__name__}: {exc}")
    return report


def up_blocks(db: Database, api_url: str, echo: Callable[[str], None]) -> BlocksReport:
    """Register the block types and sync the blocks, telling ``echo`` (for `svrctl up`)."""
    report = sync_blocks(db, api_url)
    mark = "✓" if report.ok else "!"
    echo(f"{mark} block types registered; blocks: {report.summary()} (docs/blocks.md)")
    for line in report.lines():
        echo(f"  {line}")
    return report


def delete_block(api_url: str, kind: Kind, name: str) -> bool:
    """Delete the block of server or channel ``name``; return False when there was none."""
    from prefect.exceptions import ObjectNotFound

    with _client(api_url) as client:
        try:
            doc = client.read_block_document_by_name(
                block_document_name(name), _TYPE_OF[kind], include_secrets=False
            )
            client.delete_block_document(doc.id)
        except ObjectNotFound:
            return False
    return True


def forget_block(settings: Settings, kind: Kind, name: str, warn: Callable[[str], None]) -> None:
    """After svrctl removed ``name``, delete its block if a Prefect API answers; else say so."""
    from svrctl.prefect_api import find_api

    target = find_api(settings)
    block = block_document_name(name)
    if target.url is None:
        if target.configured:
            warn(
                f"warning: the {kind} block {block} (if any) was not deleted: {target.problem}. "
                "The next `svrctl sync` (or `svrctl blocks export`) deletes it once Prefect "
                "answers; or delete it on Prefect's Blocks page."
            )
        return
    try:
        delete_block(target.url, kind, name)
    except Exception as exc:
        warn(
            f"warning: the {kind} block {block} was not deleted ({type(exc).__name__}): the "
            "next `svrctl sync` (or `svrctl blocks export`) deletes it; or delete it on "
            "Prefect's Blocks page."
        )
