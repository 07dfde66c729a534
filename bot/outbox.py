"""The outbox: proactive messages queued as rows in the transaction that decided to send them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.replies import Buttons
from bot.text import split_message
from storage.models import OutboxMessage, OutboxStatus
from storage.upsert import insert_ignoring_conflicts


@dataclass(frozen=True)
class Outgoing:
    """A message to queue. `dedupe_key` is unique for ever: queueing it again does nothing.

    Button actions are the data the channel hands back when the button is pressed.
    """

    dedupe_key: str
    kind: str
    chat_identity_id: int
    text: str
    person_id: int | None = None
    buttons: Buttons | None = None
    topic: str | None = None
    quiet_hours: bool = True
    priority: int = 5


@dataclass(frozen=True)
class SendingWindow:
    """Proactive messages go out only between `start` and `end`, wall clock of `tz`."""

    start: time
    end: time
    tz: ZoneInfo

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.tz).time()
        return self.start <= local < self.end

    def next_open(self, moment: datetime) -> datetime:
        """`moment` itself when inside the window, else the next opening of the window."""
        if self.contains(moment):
            return moment
        local = moment.astimezone(self.tz)
        opening = datetime.combine(local.date(), self.start, tzinfo=self.tz)
        if local.time() >= self.end:
            opening += timedelta(days=1)
        return opening


def _rows(item: Outgoing, now: datetime) -> list[dict[str, Any]]:
    parts = split_message(item.text)
    rows = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        key = item.dedupe_key if index == 0 else f"{item.dedupe_key}#{index + 1}"
        rows.append(
            {
                "dedupe_key": key,
                "kind": item.kind,
                "topic": item.topic,
                "person_id": item.person_id,
                "chat_identity_id": item.chat_identity_id,
                "text": part,
                "buttons": [[list(b) for b in row] for row in item.buttons]
                if item.buttons and last
                else None,
                "quiet_hours": item.quiet_hours,
                "priority": item.priority,
                "status": OutboxStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
    return rows


async def enqueue(session: AsyncSession, items: Sequence[Outgoing], now: datetime) -> int:
    """Queue messages in the caller's transaction; returns how many rows were new.

    A long text becomes several rows (keys `key`, `key#2`, ...) sent in order, the buttons
    on the last one.
    """
    rows = [row for item in items for row in _rows(item, now)]
    return await insert_ignoring_conflicts(session, OutboxMessage, rows, ["dedupe_key"])


async def cancel_topic(
    session: AsyncSession, topic: str, kinds: Sequence[str] | None = None
) -> int:
    """Cancel the pending messages about `topic` (of `kinds`, or all): no longer meaningful."""
    conditions = [OutboxMessage.topic == topic, OutboxMessage.status == OutboxStatus.PENDING]
    if kinds is not None:
        conditions.append(OutboxMessage.kind.in_(list(kinds)))
    result = await session.execute(
        update(OutboxMessage)
        .where(*conditions)
        .values(status=OutboxStatus.CANCELLED, last_error="no longer needed")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def sending_window(settings: Settings) -> SendingWindow:
    return SendingWindow(settings.send_window_start, settings.send_window_end, settings.tz)


async def status_counts(session: AsyncSession) -> dict[str, int]:
    """How many outbox rows are in each status."""
    rows = await session.execute(
        select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
    )
    return {str(status): int(count) for status, count in rows.all()}
