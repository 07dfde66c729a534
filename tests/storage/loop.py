"""Whether the event loop kept running while something waited (the SQLite lock tests)."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

HOLD = 0.6  # seconds the lock tests hold SQLite's write lock while another writer waits


class Ticker:
    """Asks for a turn of the loop every 10 ms while in the `async with` block, and keeps the
    longest time the loop took to give one (a blocked loop shows as one long stall; a merely
    busy machine only makes every turn a little late)."""

    def __init__(self) -> None:
        self.longest_stall = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest_stall = max(self.longest_stall, now - last)
            last = now

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _trace: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
