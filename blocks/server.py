"""The ``svrctl Server`` block type: a server of svrctl's inventory, as a Blocks-page form."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from svrctl.db.models import HostKeyPolicy

__all__ = ["SvrctlServer"]


class SvrctlServer(Block):
    """A server svrctl runs commands on over SSH.

    svrctl's app database holds the server; this block is a second way to edit it.
    `svrctl blocks apply` (and `svrctl sync`, `svrctl up`) validates an edited block
    the way `svrctl server add/edit` does and writes it to the database, when the
    block was saved after the database row last changed. See docs/blocks.md.
    """

    _block_type_name: ClassVar[str] = "svrctl Server"
    _block_type_slug: ClassVar[str] = "svrctl-server"
    _description: ClassVar[str] = (
        "A server svrctl runs commands on over SSH. svrctl's database is the source of "
        "truth: an edit saved here is applied by `svrctl blocks apply` (or `svrctl sync`) "
        "when it is newer than the database's copy; otherwise the block is rewritten from "
        "the database. Name the block after the server: lowercase, with dashes for other "
        "characters (server 'web-1' -> block 'web-1')."
    )

    name: str = Field(
        title="Name",
        description="Unique name of the server, e.g. 'web-1': letters, digits, '.', '_' or "
        "'-'. It identifies the server; the block's own name is derived from it.",
    )
    host: str = Field(title="Host", description="Host name or IP address to connect to.")
    port: int = Field(default=22, ge=1, le=65535, title="Port", description="SSH port.")
    username: str | None = Field(
        default=None,
        title="User",
        description="User to log in as; empty means the user svrctl runs as.",
    )
    key_path: str | None = Field(
        default=None,
        title="Key path",
        description="Private key file on the machine that runs svrctl; empty means try "
        "the keys in SVRCTL_SSH_KEY_DIR.",
    )
    host_key_policy: HostKeyPolicy = Field(
        default=HostKeyPolicy.STRICT,
        title="Host key policy",
        description="strict: only pinned host keys (pin with `svrctl server trust`); "
        "accept-new: pin the key on first contact.",
    )
    work_pool: str | None = Field(
        default=None,
        title="Work pool",
        description="Prefect work pool that runs this server's tasks; empty means 'svrctl'.",
    )
    tags: list[str] = Field(
        default_factory=list,
        title="Tags",
        description="Group names; a task given a tag runs on every enabled server with it.",
    )
    description: str = Field(default="", title="Description", description="Free text.")
    enabled: bool = Field(
        default=True, title="Enabled", description="A disabled server runs no tasks."
    )
    jump: str | None = Field(
        default=None,
        title="Jump host",
        description="Name of another server to connect through (like ProxyJump).",
    )
    connect_timeout_seconds: int = Field(
        default=10,
        ge=1,
        le=300,
        title="Connect timeout (seconds)",
        description="Seconds for each of connect, SSH banner and login.",
    )
    key_passphrase_secret: str | None = Field(
        default=None,
        title="Key passphrase secret",
        description="Name of the Prefect Secret block holding the key's passphrase.",
    )
    password_secret: str | None = Field(
        default=None,
        title="Password secret",
        description="Name of the Prefect Secret block holding a login password "
        "(allows password login).",
    )
    sudo_password_secret: str | None = Field(
        default=None,
        title="sudo password secret",
        description="Name of the Prefect Secret block that answers sudo prompts.",
    )
    max_concurrent: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        title="Max concurrent runs",
        description="At most this many runs touch the server at once, across all tasks; "
        "empty means no limit.",
    )
