"""The services' shared dependencies, built once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.clock import Clock, SystemClock
from bot.config import Settings
from messages import Messages
from storage.db import Database


@dataclass
class Core:
    settings: Settings
    db: Database
    clock: Clock
    messages: Messages
    # The slow officer commands that read a whole registry (/ekspor, /rekap, the charts) run
    # one at a time per process, whichever channel asked: a country's workbook takes a writer
    # process and about 110 MiB more, and each holds a pool connection for seconds. They run
    # beside the report answers, not in front of them (handlers.common.slow).
    slow_work: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    @classmethod
    def create(
        cls, settings: Settings, clock: Clock | None = None, db: Database | None = None
    ) -> Core:
        return cls(
            settings=settings,
            db=db or Database(settings.database_url),
            clock=clock or SystemClock(),
            messages=Messages(settings.language, settings.tz),
        )

    async def close(self) -> None:
        await self.db.dispose()
