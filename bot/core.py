"""The services' shared dependencies, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

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
