"""Prefect block types of svrctl, installed as ``svrctl.blocks``.

``prefect block register -m svrctl.blocks`` registers both; so do ``svrctl blocks
register`` and ``svrctl up``.
"""

from __future__ import annotations

from svrctl.blocks.notify_channel import SvrctlNotifyChannel
from svrctl.blocks.server import SvrctlServer

__all__ = ["BLOCK_TYPES", "SvrctlNotifyChannel", "SvrctlServer"]

BLOCK_TYPES = (SvrctlServer, SvrctlNotifyChannel)
