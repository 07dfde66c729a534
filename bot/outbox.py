"""The outbox: proactive messages queued as rows in the transaction that decided to send them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.replies import Buttons
from bot.text import split_message
from storage.models import OutboxMessage, OutboxStatus

# The columns `enqueue` writes that differ from row to row, with their PostgreSQL types (for
# the arrays of `_PG_INSERT`); the others are the same for every row of a call.
_PG_COLUMNS = {
    "dedupe_key": "VARCHAR",
    "kind": "VARCHAR",
    "topic": "VARCHAR",
    "person_id": "INTEGER",
    "chat_identity_id": "INTEGER",
    "text": "TEXT",
    "buttons": "JSON",
    "quiet_hours": "BOOLEAN",
    "priority": "INTEGER",
}
# PostgreSQL: one array per column, unnested into rows (in the arrays' order, so a long
# message's parts get increasing ids): one statement for any number of rows, and much less for
# the server to parse than VALUES lists of 1,000 rows.
_PG_INSERT = text(
    f"INSERT INTO outbox ({', '.join(_PG_COLUMNS)}, status, attempts, next_attempt_at, "  # noqa: S608
    f"created_at) SELECT {', '.join(_PG_COLUMNS)}, CAST(:status AS VARCHAR), 0, "
    "CAST(:now AS TIMESTAMPTZ), CAST(:now AS TIMESTAMPTZ) FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _PG_COLUMNS.items())
    + f") WITH ORDINALITY AS given({', '.join(_PG_COLUMNS)}, number) ORDER BY number "
    "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
)


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
    on the last one. A key queued before (by anyone) is skipped.
    """
    rows = [row for item in items for row in _rows(item, now)]
    if not rows:
        return 0
    # Whatever the caller added must be in the database before rows that refer to it.
    await session.flush()
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        columns: dict[str, Any] = {name: [row[name] for row in rows] for name in _PG_COLUMNS}
        columns["buttons"] = [None if b is None else json.dumps(b) for b in columns["buttons"]]
        columns.update(status=OutboxStatus.PENDING.value, now=now)
        return len((await connection.execute(_PG_INSERT, columns)).all())
    # SQLite: one statement compiled once for all the rows, which SQLAlchemy sends as
    # multi-row VALUES ("insertmanyvalues"); a statement built per chunk of rows spent seconds
    # compiling a national summons.
    statement = (
        sqlite.insert(OutboxMessage)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(OutboxMessage.id)
    )
    return len((await connection.execute(statement, rows)).all())


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
