"""The outbox: proactive messages queued as rows in the transaction that decided to send them."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, literal, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.config import Settings
from bot.replies import Buttons
from bot.text import split_message
from storage.models import ChatIdentity, OutboxMessage, OutboxStatus

if TYPE_CHECKING:
    from bot.core import Core

# The template values of the second and later parts of a long message: {CONTINUED: part}.
CONTINUED = "_continued"
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
    "params": "JSON",
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
    # The values of the channel's message template, in the order of its placeholders
    # (messages/*/wa_template_*.txt): what WhatsApp sends outside its 24-hour window.
    params: dict[str, str] | None = None


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
                # A template stands for the whole message: the later parts of a long text
                # are marked so a channel sending the template skips them.
                "params": item.params if index == 0 else {CONTINUED: index + 1},
                "status": OutboxStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
    return rows


def _same_message(item: Outgoing) -> tuple[Any, ...] | None:
    """What makes items the same message for one person: the dedupe key without its chat
    identity (keys end in ":i<identity id>"), else the kind and topic; None: not comparable."""
    if item.person_id is None:
        return None
    head, marker, tail = item.dedupe_key.rpartition(":i")
    if marker and tail.isdigit():
        return (item.person_id, head)
    if item.topic is not None:
        return (item.person_id, item.kind, item.topic)
    return None


async def one_per_person(session: AsyncSession, items: Sequence[Outgoing]) -> list[Outgoing]:
    """Of the items that are the same message for one person on several chat identities
    (Telegram and WhatsApp), keep the one for the identity the person wrote on last: the
    latest `last_seen_at` among the reachable ones (a tie, or none seen: the first given).
    One query, and only when a person has several identities in the batch."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, item in enumerate(items):
        key = _same_message(item)
        if key is not None:
            groups.setdefault(key, []).append(index)
    shared = [indexes for indexes in groups.values() if len(indexes) > 1]
    if not shared:
        return list(items)
    wanted = sorted({items[i].chat_identity_id for indexes in shared for i in indexes})
    seen: dict[int, tuple[bool, datetime | None]] = {}
    for start in range(0, len(wanted), 500):
        rows = await session.execute(
            select(ChatIdentity.id, ChatIdentity.unreachable_at, ChatIdentity.last_seen_at).where(
                ChatIdentity.id.in_(wanted[start : start + 500])
            )
        )
        for identity_id, unreachable_at, last_seen_at in rows.all():
            seen[identity_id] = (unreachable_at is None, last_seen_at)
    never = datetime.min.replace(tzinfo=UTC)

    def rank(identity_id: int) -> tuple[bool, datetime]:
        reachable, last_seen = seen.get(identity_id, (True, None))
        return (reachable, last_seen or never)

    dropped: set[int] = set()
    for indexes in shared:
        identities = {items[i].chat_identity_id for i in indexes}
        if len(identities) < 2:
            continue  # the same identity twice: the dedupe keys decide
        best = items[indexes[0]].chat_identity_id
        for i in indexes[1:]:
            if rank(items[i].chat_identity_id) > rank(best):
                best = items[i].chat_identity_id
        dropped.update(i for i in indexes if items[i].chat_identity_id != best)
    return [item for index, item in enumerate(items) if index not in dropped]


async def enqueue(session: AsyncSession, items: Sequence[Outgoing], now: datetime) -> int:
    """Queue messages in the caller's transaction; returns how many rows were new.

    A long text becomes several rows (keys `key`, `key#2`, ...) sent in order, the buttons
    on the last one. A key queued before (by anyone) is skipped. A person reachable on
    several channels gets one copy of each message, on the chat they used last
    (`one_per_person`).
    """
    items = await one_per_person(session, items)
    rows = [row for item in items for row in _rows(item, now)]
    if not rows:
        return 0
    # Whatever the caller added must be in the database before rows that refer to it.
    await session.flush()
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        columns: dict[str, Any] = {name: [row[name] for row in rows] for name in _PG_COLUMNS}
        columns["buttons"] = [None if b is None else json.dumps(b) for b in columns["buttons"]]
        columns["params"] = [None if p is None else json.dumps(p) for p in columns["params"]]
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
    session: AsyncSession | AsyncConnection, topic: str, kinds: Sequence[str] | None = None
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


# What a channel's status callback may report, in the order a message goes through them.
STATUSES = ("sent", "delivered", "read", "failed")


def external_key(external_id: str) -> str:
    """How a channel's message id is stored (`outbox.external_message_id`, 64 characters): as
    it is, or a digest of an id longer than that (WhatsApp's ids are about 60)."""
    if len(external_id) <= 64:
        return external_id
    return "sha256:" + hashlib.sha256(external_id.encode()).hexdigest()[:57]


# Error codes of a failed status that mean the chat cannot be reached at all (WhatsApp: not
# on WhatsApp, an old app, terms not accepted).
UNDELIVERABLE_CODES = frozenset({131026})


def status_error(error: object) -> tuple[str, int | None]:
    """A status callback's error as (text, code): WhatsApp's `errors` list or one of its
    objects ({"code", "title", "message", "error_data": {"details"}}), or a text that may hold
    the code."""
    if isinstance(error, list):
        error = error[0] if error else None
    if isinstance(error, dict):
        code = error.get("code")
        title = error.get("title") or error.get("message") or "failed"
        details = (error.get("error_data") or {}).get("details") or ""
        text = f"{title} ({code})" + (f": {details}" if details else "")
        return text, code if isinstance(code, int) else None
    if error is None:
        return "failed", None
    text = str(error)
    found = re.search(r"\b(1\d{5})\b", text)
    return text, int(found.group(1)) if found else None


async def record_status(
    core: Core,
    channel: str,
    external_message_id: str,
    status: str,
    at: datetime,
    error: object = None,
    *,
    unreachable: bool | None = None,
) -> bool:
    """Record a channel's report about a message it accepted (WhatsApp's status callbacks):
    "delivered" sets `delivered_at`, "read" sets `read_at` (and `delivered_at` if WhatsApp
    skipped that report), "failed" the error (`last_error`, status failed); "sent" tells
    nothing new. A failure that means the chat cannot be reached (`unreachable`, by default an
    error code in UNDELIVERABLE_CODES such as WhatsApp's 131026) also marks the row and the chat
    identity unreachable with the reason, as a refused send does. `error` is the callback's
    `errors` (a list or one object) or a text. Reports come in any order and may repeat: a time
    once set is kept. Returns whether a row of this channel had that message id."""
    if status not in STATUSES:
        return False
    async with core.db.transaction() as session:
        row = (
            await session.execute(
                select(OutboxMessage.id, OutboxMessage.chat_identity_id)
                .join(ChatIdentity, ChatIdentity.id == OutboxMessage.chat_identity_id)
                .where(
                    OutboxMessage.external_message_id == external_key(external_message_id),
                    ChatIdentity.channel == channel,
                )
                .order_by(OutboxMessage.id.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return False
        row_id, identity_id = row
        message = OutboxMessage.__table__.c
        # Bound with the column's type (stored in UTC), not inferred from the value.
        moment = literal(at, type_=message.delivered_at.type)
        values: dict[str, Any]
        if status == "delivered":
            values = {"delivered_at": func.coalesce(message.delivered_at, moment)}
        elif status == "read":
            values = {
                "read_at": func.coalesce(message.read_at, moment),
                "delivered_at": func.coalesce(message.delivered_at, moment),
            }
        elif status == "failed":
            reason, code = status_error(error)
            if unreachable is None:
                unreachable = code in UNDELIVERABLE_CODES
            # Accepted, then not delivered: the row says so (a summons' view counts it).
            values = {
                "last_error": reason[:500],
                "status": OutboxStatus.UNREACHABLE if unreachable else OutboxStatus.FAILED,
            }
        else:
            return True
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if status == "failed" and unreachable:
            await session.execute(
                update(ChatIdentity)
                .where(ChatIdentity.id == identity_id)
                .values(unreachable_at=at, unreachable_reason=reason[:200])
                .execution_options(synchronize_session=False)
            )
    return True


# A message WhatsApp could only announce with a template (outside its 24-hour window) is marked
# in its template values as {HELD: template name}; when the person answers, within
# RESEND_WITHIN, the message itself is queued again (`resend_held`).
HELD = "_held"
RESEND_WITHIN = timedelta(days=3)


async def note_held(core: Core, row_id: int, params: dict[str, Any] | None, template: str) -> None:
    """Mark a row whose message went out as the template `template`, to be sent in full when
    the person answers."""
    async with core.db.transaction() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id)
            .values(params={**(params or {}), HELD: template})
            .execution_options(synchronize_session=False)
        )


async def resend_held(core: Core, channel: str, external_id: str, now: datetime) -> int:
    """The person wrote on this chat (the channel's window is open): queue again, in order,
    the messages of the last RESEND_WITHIN that reached them only as a template (with the later
    parts of a long one), as they are, without waiting for the sending hours. A message goes
    again once per template that announced it (key "<key>:again"). Call it after recording the
    person's `last_seen_at`. Returns how many rows were queued."""
    async with core.db.transaction() as session:
        identity_id = await session.scalar(
            select(ChatIdentity.id).where(
                ChatIdentity.channel == channel, ChatIdentity.external_id == external_id
            )
        )
        if identity_id is None:
            return 0
        rows = (
            await session.execute(
                select(OutboxMessage)
                .where(
                    OutboxMessage.chat_identity_id == identity_id,
                    OutboxMessage.status == OutboxStatus.SENT,
                    OutboxMessage.sent_at >= now - RESEND_WITHIN,
                )
                .order_by(OutboxMessage.id)
            )
        ).scalars()
        held: list[OutboxMessage] = []
        heads: set[str] = set()
        for row in rows:
            params = row.params or {}
            if HELD in params:
                heads.add(row.dedupe_key)
                held.append(row)
            elif CONTINUED in params and row.dedupe_key.rpartition("#")[0] in heads:
                held.append(row)
        if not held:
            return 0
        items = [
            Outgoing(
                dedupe_key=f"{row.dedupe_key}:again"[:200],
                kind=row.kind,
                chat_identity_id=identity_id,
                text=row.text,
                person_id=row.person_id,
                buttons=[[(label, action) for label, action in line] for line in row.buttons]
                if row.buttons
                else None,
                topic=row.topic,
                quiet_hours=False,  # they are writing to us now
                priority=row.priority,
            )
            for row in held
        ]
        for row in held:
            if HELD in (row.params or {}):
                row.params = {k: v for k, v in (row.params or {}).items() if k != HELD}
        return await enqueue(session, items, now)
