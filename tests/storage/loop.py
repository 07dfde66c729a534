"""Whether the event loop kept running while something waited (the SQLite lock tests)."""

from __future__ import annotations

import asyncio
from types import TracebackType


class Ticker:
    """Counts the loop's turns every 10 ms while in the `async with` block."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.01)

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
