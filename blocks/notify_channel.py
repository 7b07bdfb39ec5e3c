"""The ``svrctl Notification Channel`` block type: a channel, as a Blocks-page form."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from svrctl.db.models import ChannelKind

__all__ = ["SvrctlNotifyChannel"]


class SvrctlNotifyChannel(Block):
    """A notification channel of svrctl: a Gotify or ntfy server, or any Apprise URL.

    svrctl's app database holds the channel; this block is a second way to edit it.
    The token never stays here: `svrctl blocks apply` moves it into the Secret block
    `svrctl notify add` would use and clears this field. See docs/blocks.md.
    """

    _block_type_name: ClassVar[str] = "svrctl Notification Channel"
    _block_type_slug: ClassVar[str] = "svrctl-notify-channel"
    _description: ClassVar[str] = (
        "Where svrctl sends notifications: a Gotify or ntfy server, or any Apprise URL "
        "(Slack, Discord, email, ...). svrctl's database is the source of truth: an edit "
        "saved here is applied by `svrctl blocks apply` (or `svrctl sync`) when it is newer "
        "than the database's copy. A token typed here is moved into a Secret block and "
        "this field is cleared. Name the block after the channel, lowercase."
    )

    name: str = Field(
        title="Name",
        description="Unique name of the channel, e.g. 'ops': letters, digits, '.', '_' or "
        "'-'. It identifies the channel; the block's own name is derived from it.",
    )
    kind: ChannelKind = Field(
        title="Kind",
        description="gotify, ntfy, or apprise (any Apprise URL). Fixed once the channel exists.",
    )
    url: str | None = Field(
        default=None,
        title="Server URL",
        description="gotify and ntfy: the server's address, e.g. https://ntfy.example.org. "
        "apprise: shows only the URL's scheme; type the Apprise URL itself in Token.",
    )
    topic: str | None = Field(
        default=None, title="Topic", description="ntfy only: the topic to publish to."
    )
    token: SecretStr | None = Field(
        default=None,
        title="Token",
        description="Gotify app token, ntfy access token, or the whole Apprise URL. Leave "
        "empty to keep the current one: svrctl moves a token typed here into a Secret "
        "block and clears this field.",
    )
    priority: int | None = Field(
        default=None,
        title="Priority",
        description="Fixed priority of every message: ntfy 1-5, Gotify 0-10; empty means "
        "from the notice.",
    )
    markdown: bool = Field(default=True, title="Markdown", description="Send markdown.")
    summaries: bool = Field(
        default=False,
        title="Summaries",
        description="Send the daily and weekly summaries here.",
    )
    enabled: bool = Field(
        default=True, title="Enabled", description="A disabled channel receives nothing."
    )
    is_default: bool = Field(
        default=False,
        title="Default",
        description="In the default set: used by tasks that name no channel.",
    )
