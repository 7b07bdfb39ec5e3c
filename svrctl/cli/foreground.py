"""Running a long-lived command (`svrctl up`, `svrctl worker`) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

__all__ = ["run_until_stopped"]


def run_until_stopped(main: Callable[[], Awaitable[None]]) -> bool:
    """Run ``main()`` in a new event loop; return True when SIGINT or SIGTERM stopped it.

    Both signals cancel ``main`` (Ctrl-C as asyncio does it, SIGTERM the same way),
    so its ``finally`` blocks and cancellation handling run before the process ends.
    """

    async def until_stopped() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await main()

    try:
        asyncio.run(until_stopped())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return True
    return False
