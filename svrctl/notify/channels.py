"""Notification channels: validate, add, edit, list and remove them; keep tokens secret.

A channel's token (Gotify, ntfy) or whole URL (Apprise) lives in the Prefect Secret
block :func:`secret_block_name` names; the ``notify_channels`` row stores only that
block's name. :func:`redact` removes every secret this process has seen from text
(errors, log records) before it is stored or printed.

Adding is all or nothing: the block is saved first, then the row; when the row
cannot be written the block is deleted again. Removing deletes the row first, then
the block (a block left behind holds a secret but nothing uses it: the CLI warns).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from svrctl.db.engine import Database
from svrctl.db.models import ChannelKind, NotifyChannel, Task
from svrctl.exceptions import BadInputError, ConflictError, NotFoundError, SecretError

__all__ = [
    "ChannelInfo",
    "add_channel",
    "channel_to_dict",
    "check_apprise_url",
    "get_channel",
    "list_channels",
    "redact",
    "remember_secret",
    "remove_channel",
    "secret_block_name",
    "update_channel",
]

log = logging.getLogger("svrctl.notify")

# ntfy's own topic rule (server/server.go topicRegex)
_TOPIC_RE = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
# The longest server address a channel keeps (its database column's size).
URL_MAX_LENGTH = 2048
_BLOCK_PREFIX = "svrctl-notify-"
_PRIORITY_RANGE = {ChannelKind.GOTIFY: (0, 10), ChannelKind.NTFY: (1, 5)}
REDACTED = "***"


# --------------------------------------------------------------------------- secrets


_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Add a token or secret URL (and the secret parts of a URL) to what :func:`redact` hides."""
    if not value:
        return
    parts = _secret_parts(value)
    with _secrets_lock:
        _secrets.update(parts)
    _install_log_filters()


def _secret_parts(value: str) -> set[str]:
    """Return ``value`` and, for a URL, its user, password, path segments and query values."""
    parts = {value}
    if "://" in value:
        try:
            split = urlsplit(value)
            pieces: list[str | None] = [split.username, split.password]
            # Apprise URLs often carry a token where the host goes (discord://ID/TOKEN,
            # tgram://BOT:TOKEN/CHAT); a real host name or address has a dot.
            host = split.netloc.rpartition("@")[2]
            if "." not in host and not host.startswith(("localhost", "[")):
                pieces += [host, *host.split(":")]
            pieces += split.path.split("/")
            for pair in split.query.split("&"):
                pieces.append(pair.partition("=")[2])
            pieces.append(split.fragment)
        except ValueError:
            pieces = []
        for piece in pieces:
            if piece and len(piece) >= 4:
                parts.update({piece, unquote(piece)})
    return {p for p in parts if len(p) >= 4}


def redact(text: str | None) -> str | None:
    """Replace every secret this process has seen in ``text`` with ``***``."""
    if not text:
        return text
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class _RedactFilter(logging.Filter):
    """Scrub secrets from records of loggers that may print them (apprise, urllib3)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = _RedactFilter()
# apprise logs request headers (Authorization: Bearer ...) at debug level, and
# urllib3 logs request paths (webhook tokens of Apprise URLs) at debug level.
_FILTERED_LOGGERS = ("apprise", "urllib3.connectionpool", "svrctl.notify")


def _install_log_filters() -> None:
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def secret_block_name(name: str) -> str:
    """Return the Prefect Secret block that holds channel ``name``'s token or URL.

    Block names allow lowercase letters, digits and dashes only; a channel name that
    does not map onto one unchanged gets a short hash, so two names never share a block.
    """
    slug = re.sub(r"[^a-z0-9-]", "-", name.lower())[:40]
    if slug == name and len(_BLOCK_PREFIX + slug) <= 63:
        return _BLOCK_PREFIX + slug
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{_BLOCK_PREFIX}{slug}-{digest}"


def _save_secret(block: str, value: str) -> None:
    from svrctl.secrets import save_prefect_secret

    remember_secret(value)
    try:
        save_prefect_secret(block, value)
    except Exception as exc:
        raise SecretError(
            f"cannot save the Prefect Secret block {block!r}: {exc.__class__.__name__}: "
            f"{redact(str(exc))}. Check that the Prefect API (PREFECT_API_URL) is reachable; "
            "nothing was changed."
        ) from None


def _delete_secret(block: str) -> str | None:
    """Delete a Secret block; return a warning instead of raising when it cannot be."""
    from prefect.blocks.system import Secret

    try:
        Secret.delete(block, _sync=True)  # type: ignore[call-arg]
    except ValueError:
        return None  # already gone
    except Exception as exc:
        return (
            f"could not remove the Prefect Secret block {block!r} ({exc.__class__.__name__}): "
            "remove it on the Blocks page of Prefect's UI"
        )
    return None


# --------------------------------------------------------------------------- validation


def _check_name(name: str) -> None:
    from svrctl.specs import check_name

    try:
        check_name(name, "channel name")
    except ValueError as exc:
        raise BadInputError(f"invalid name: {exc}", field="name") from None


def _check_http_url(url: str | None, kind: ChannelKind) -> str:
    from svrctl.specs import shown

    if not url:
        raise BadInputError(f"invalid url (--url): a {kind} channel needs --url", field="url")
    if len(url) > URL_MAX_LENGTH:
        raise BadInputError(
            f"invalid url (--url): {shown(url)} is longer than {URL_MAX_LENGTH} characters; "
            f"give the bare address of the {kind} server, e.g. https://{kind}.example.org",
            field="url",
        )
    if any(c.isspace() or not c.isprintable() for c in url):
        raise BadInputError(
            f"invalid url (--url): {shown(url)} contains spaces, line breaks or control "
            "characters; give the bare server address, e.g. "
            f"https://{kind}.example.org",
            field="url",
        )
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError as exc:
        raise BadInputError(f"invalid url (--url): {shown(url)}: {exc}", field="url") from None
    del port
    if split.scheme not in ("http", "https") or not split.hostname:
        raise BadInputError(
            f"invalid url (--url): {shown(url)} is not an http:// or https:// address of a "
            f"{kind} server, e.g. https://{kind}.example.org",
            field="url",
        )
    if split.username or split.password or split.query or split.fragment:
        raise BadInputError(
            "invalid url (--url): give the bare server address, without credentials, query "
            "or fragment; pass the token with --token",
            field="url",
        )
    if kind is ChannelKind.NTFY and split.path.strip("/"):
        # apprise's ntfy plugin publishes to the server root (POST / with JSON);
        # it reads a path as topics, so a server under a sub-path cannot be reached.
        raise BadInputError(
            f"invalid url (--url): {shown(url)} has a path; give the ntfy server's root address "
            "and the topic with --topic",
            field="url",
        )
    return url.rstrip("/")


def _check_topic(topic: str | None) -> str:
    from svrctl.specs import shown

    if not topic:
        raise BadInputError("invalid topic (--topic): an ntfy channel needs --topic", field="topic")
    if not _TOPIC_RE.fullmatch(topic):
        raise BadInputError(
            f"invalid topic (--topic): {shown(topic)}: use 1-64 letters, digits, '-' or '_'",
            field="topic",
        )
    return topic


def _check_priority(priority: int | None, kind: ChannelKind) -> int | None:
    if priority is None:
        return None
    bounds = _PRIORITY_RANGE.get(kind)
    if bounds is None:
        raise BadInputError(
            "invalid priority (--priority): an apprise channel takes its priority from its "
            "URL (e.g. ?priority=high), where the service supports one",
            field="priority",
        )
    low, high = bounds
    if not low <= priority <= high:
        raise BadInputError(
            f"invalid priority (--priority): {priority} is outside {low}-{high} for {kind}",
            field="priority",
        )
    return priority


def _check_token(token: str | None, *, required: bool) -> str | None:
    if token is not None and not token.strip():
        raise BadInputError("invalid token (--token): the token is empty", field="token")
    if required and not token:
        raise BadInputError(
            "invalid token (--token): a gotify channel needs its app token", field="token"
        )
    if token and any(c.isspace() for c in token):
        raise BadInputError("invalid token (--token): the token contains spaces", field="token")
    return token


def check_apprise_url(url: str | None) -> str:
    """Return ``url`` if apprise can load it (e.g. ``slack://...``), else raise BadInputError.

    The message never repeats the URL: it usually embeds a token.
    """
    import apprise

    if not url:
        raise BadInputError(
            "invalid url (--url): an apprise channel needs --url APPRISE_URL", field="url"
        )
    remember_secret(url)
    if not apprise.Apprise().add(url):
        raise BadInputError(
            f"invalid url (--url): apprise cannot use this {_scheme_of(url)} URL; see "
            "https://github.com/caronc/apprise/wiki for the URL of each service",
            field="url",
        )
    return url


def _scheme_of(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"{scheme}://…"


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class ChannelInfo:
    """A detached copy of a channel row (what delivery needs), free of any session."""

    name: str
    kind: ChannelKind
    url: str | None
    topic: str | None
    secret: str | None
    priority: int | None
    markdown: bool
    is_default: bool
    summaries: bool
    enabled: bool

    @classmethod
    def of(cls, row: NotifyChannel) -> ChannelInfo:
        """Copy a row."""
        return cls(
            name=row.name,
            kind=ChannelKind(row.kind),
            url=row.url,
            topic=row.topic,
            secret=row.secret,
            priority=row.priority,
            markdown=bool(row.markdown),
            is_default=bool(row.is_default),
            summaries=bool(row.summaries),
            enabled=bool(row.enabled),
        )


def get_channel(session: Session, name: str) -> NotifyChannel:
    """Return the channel ``name`` or raise NotFoundError."""
    row = session.scalar(select(NotifyChannel).where(NotifyChannel.name == name))
    if row is None:
        raise NotFoundError(
            f"no notification channel named {name!r}: see `svrctl notify list`", field="name"
        )
    return row


def list_channels(session: Session) -> list[NotifyChannel]:
    """Return every channel, by name."""
    return list(session.scalars(select(NotifyChannel).order_by(NotifyChannel.name)))


def channel_to_dict(row: NotifyChannel) -> dict[str, Any]:
    """Return a channel as plain data, without any token (an apprise URL shows its scheme)."""
    return {
        "name": row.name,
        "kind": row.kind,
        "url": row.url,
        "topic": row.topic,
        "secret_block": row.secret,
        "priority": row.priority,
        "markdown": bool(row.markdown),
        "default": bool(row.is_default),
        "summaries": bool(row.summaries),
        "enabled": bool(row.enabled),
        "created": row.created,
        "updated": row.updated,
    }


def add_channel(
    db: Database,
    *,
    name: str,
    kind: str,
    url: str | None,
    topic: str | None = None,
    token: str | None = None,
    priority: int | None = None,
    markdown: bool = True,
    default: bool = False,
    summaries: bool = False,
) -> dict[str, Any]:
    """Validate and add a channel, its token or URL in a Secret block; return it as data.

    The first channel joins the default set whatever ``default`` says. Nothing is
    written when a value is wrong; when the row cannot be written after the block was
    saved, the block is deleted again.
    """
    _check_name(name)
    try:
        kind_ = ChannelKind(kind)
    except ValueError:
        raise BadInputError(
            f"invalid kind (--kind): {kind!r}: use gotify, ntfy or apprise", field="kind"
        ) from None
    remember_secret(token)
    secret_value: str | None
    stored_url: str | None
    if kind_ is ChannelKind.APPRISE:
        if token is not None:
            raise BadInputError(
                "invalid token (--token): an apprise channel's token is part of its URL",
                field="token",
            )
        if topic is not None:
            raise BadInputError(
                "invalid topic (--topic): only ntfy channels have a topic", field="topic"
            )
        secret_value = check_apprise_url(url)
        stored_url = _scheme_of(secret_value)
    else:
        stored_url = _check_http_url(url, kind_)
        if kind_ is ChannelKind.NTFY:
            topic = _check_topic(topic)
        elif topic is not None:
            raise BadInputError(
                "invalid topic (--topic): only ntfy channels have a topic", field="topic"
            )
        secret_value = _check_token(token, required=kind_ is ChannelKind.GOTIFY)
    priority = _check_priority(priority, kind_)

    with db.read() as session:
        if session.scalar(select(NotifyChannel.id).where(NotifyChannel.name == name)):
            raise ConflictError(
                f"invalid name: a notification channel named {name!r} exists already "
                "(`svrctl notify edit` changes it)",
                field="name",
            )
    block = secret_block_name(name) if secret_value else None
    if block and secret_value:
        _save_secret(block, secret_value)
    try:
        with db.write() as session:
            first = session.scalar(select(NotifyChannel.id).limit(1)) is None
            row = NotifyChannel(
                name=name,
                kind=kind_.value,
                url=stored_url,
                topic=topic,
                secret=block,
                priority=priority,
                markdown=markdown,
                is_default=default or first,
                summaries=summaries,
                enabled=True,
            )
            session.add(row)
            session.flush()
            data = channel_to_dict(row)
    except BaseException:
        if block:
            warning = _delete_secret(block)
            if warning:
                log.warning("%s", warning)
        raise
    return data


def update_channel(
    db: Database,
    name: str,
    *,
    url: str | None = None,
    topic: str | None = None,
    token: str | None = None,
    priority: int | None = None,
    clear_priority: bool = False,
    markdown: bool | None = None,
    default: bool | None = None,
    summaries: bool | None = None,
    enabled: bool | None = None,
) -> dict[str, Any]:
    """Change what is given of a channel; a new token or apprise URL overwrites its block."""
    remember_secret(token)
    with db.read() as session:
        info = ChannelInfo.of(get_channel(session, name))
    changes: dict[str, Any] = {}
    secret_value: str | None = None
    if info.kind is ChannelKind.APPRISE:
        if token is not None or topic is not None:
            field = "token" if token is not None else "topic"
            raise BadInputError(
                f"invalid {field} (--{field}): an apprise channel has only --url", field=field
            )
        if url is not None:
            secret_value = check_apprise_url(url)
            changes["url"] = _scheme_of(url)
    else:
        if url is not None:
            changes["url"] = _check_http_url(url, info.kind)
        if topic is not None:
            if info.kind is not ChannelKind.NTFY:
                raise BadInputError(
                    "invalid topic (--topic): only ntfy channels have a topic", field="topic"
                )
            changes["topic"] = _check_topic(topic)
        if token is not None:
            secret_value = _check_token(token, required=False)
    if clear_priority:
        changes["priority"] = None
    elif priority is not None:
        changes["priority"] = _check_priority(priority, info.kind)
    for key, value in (
        ("markdown", markdown),
        ("is_default", default),
        ("summaries", summaries),
        ("enabled", enabled),
    ):
        if value is not None:
            changes[key] = value
    block = info.secret
    if secret_value:
        block = block or secret_block_name(name)
        _save_secret(block, secret_value)
        changes["secret"] = block
    with db.write() as session:
        row = get_channel(session, name)
        for key, value in changes.items():
            setattr(row, key, value)
        session.flush()
        return channel_to_dict(row)


def tasks_using(session: Session, name: str) -> list[str]:
    """Return the names of the tasks whose ``notify`` list names channel ``name``."""
    rows = session.execute(select(Task.name, Task.notify))
    return sorted(t for t, names in rows if names and name in names)


def remove_channel(db: Database, name: str) -> str | None:
    """Remove a channel no task names, then its Secret block; return a warning, if any.

    Raises:
        ConflictError: tasks still name the channel (they would silently lose it).
    """
    with db.write() as session:
        row = get_channel(session, name)
        users = tasks_using(session, name)
        if users:
            raise ConflictError(
                f"notification channel {name!r} is named by task(s) {', '.join(users)}: "
                "change their --notify first (`svrctl task edit TASK --notify ...`)",
                field="name",
            )
        block = row.secret
        session.delete(row)
    return _delete_secret(block) if block else None
