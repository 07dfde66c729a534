"""The outbox sender: claims due rows, paces them to the channel's limits, records every attempt.

How a row travels. One short transaction claims a batch of due rows (at least BATCH_SECONDS
of sending): status `sending`, a lease (`lease_until`), `claimed_by` this sender,
`attempts + 1`. Each row is then handed to the channel's `Transport` and the answer is written
right after it (sent, back to pending with a backoff, unreachable, failed). Rows delivered
within the same few milliseconds are marked sent by one statement (group commit: at a thousand
messages a second a statement and a commit per message cost more than the send); a row counts
as in flight until its answer is written. Rounds overlap: the next batch is claimed while the
last rows of one go out, and its sends start while the last answers are awaited. A row stays
claimed only as long as its lease (renewed while a long flood-control pause holds the batch);
a sender that dies leaves rows in `sending` whose lease runs out, and the next round of any
sender claims them again. A sender told to stop hands its unsent rows back at once.

What that guarantees. No row is lost: it is pending, claimed under a lease, or finished. No row
is sent twice by two senders at once: claiming is one atomic statement (on PostgreSQL the
selecting part uses FOR UPDATE SKIP LOCKED, so concurrent senders pass over each other's rows;
on SQLite the single writer lock serialises the claiming UPDATE). The one duplicate left: if
the process dies after the channel accepted a message but before the row was marked sent, that
message is sent again when the lease expires (at most the sender's concurrency of them), and
likewise when the channel accepted a message but its answer timed out. Telegram's sendMessage
has no idempotency key, so at-least-once is the most any sender can promise; nothing else is
duplicated or lost.

Order and limits. Only the earliest unfinished row of a chat can be claimed (quiet-hours rows
waiting for the morning do not hold back urgent ones), so a chat's messages go out in id order
even with several senders, and a batch holds at most one row per chat. A send starts only in a
slot of the channel's send budget: evenly spaced starts at the global rate, and no later than
LATE_SECONDS after its slot (a slot missed by more is dropped: used then, it would crowd the
next ones, perhaps another process's); the slots are spaced for a rate that much lower, so no
1-second window holds more sends than the rate (`slot_spacing`). On PostgreSQL the budget is one
row every sender shares (`send_budget`, GCRA: each claim moves the row's `next_at` on by its
slots in one statement), so N processes together keep one rate, not N; a sender claims its
slots ahead, a few dozen milliseconds' worth at a time and no more than it can use. On SQLite,
where one process sends, the budget is kept in memory (`LocalBudget`). "Retry after" pauses
every sender of the budget: the row moves past the pause (a sender that already holds slots may
use the ones it claimed, a quarter of a second's worth at most). The minimum interval per chat
is kept per process; a batch never holds two rows of one chat and a chat's next row waits for
the previous one to finish, so several processes do not crowd a chat either.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    Integer,
    Interval,
    Select,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    exists,
    func,
    make_url,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from bot.core import Core
from bot.outbox import SendingWindow, sending_window
from storage.db import Database
from storage.models import ChatIdentity, OutboxMessage, OutboxStatus, SendBudget

log = logging.getLogger(__name__)

# Exponential backoff after a network error or a 5xx: 2, 4, 8 ... seconds, at most 5 minutes.
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0
# A group that migrated to a supergroup is followed this many times within one attempt.
MAX_MIGRATIONS = 2
_REASON_LENGTH = 200
# A sender claims at most this many seconds' worth of send slots at once: a claim is a database
# round trip on PostgreSQL, and slots claimed but not used are lost to every process.
CLAIM_SECONDS = 0.25
# A shared budget reads the database's clock through the quickest of this many round trips.
OFFSET_SAMPLES = 16
# A sender claims at least 50 rows, and at least this many seconds' worth at its rate; it
# claims the next rows when those left cover less than PREFETCH_SECONDS, while it sends them.
BATCH_SECONDS = 0.5
PREFETCH_SECONDS = 0.2
# From a shared budget a sender claims this many seconds' worth of slots at a time (at least
# MIN_SLOT_CHUNK, no more than it can use meanwhile), the next ones when half are left.
SLOT_CHUNK_SECONDS = 0.05
MIN_SLOT_CHUNK = 8
# How late a send may start after its slot, and how far apart two processes' readings of the
# database's clock may be (see slot_spacing).
LATE_SECONDS = 0.01
CLOCK_SECONDS = 0.005
# Sleeps shorter than this do not wake up early when the sender is told to stop.
SHORT_SLEEP = 0.05
# Delivered rows are marked sent together: within this many seconds of the first one's answer,
# or as soon as half the sender's concurrency waits (see Sender._write_sent_rows).
SENT_WRITE_SECONDS = 0.02


class Outcome(enum.Enum):
    """What the channel made of one delivery."""

    SENT = "sent"
    RETRY_AFTER = "retry_after"  # flood control: everybody waits `retry_after` seconds
    UNREACHABLE = "unreachable"  # blocked, deactivated, chat gone: stop writing to it
    MIGRATED = "migrated"  # the group moved to `new_chat_id`
    TRANSIENT = "transient"  # network, timeout, 5xx: try again later
    PERMANENT = "permanent"  # the request itself is wrong: trying again will not help


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    retry_after: float = 0
    new_chat_id: str | None = None
    message_id: str | None = None
    error: str = ""


# Rows of [label, action] pairs, as the outbox stores them.
ButtonRows = list[list[list[str]]]


@dataclass(frozen=True)
class RowContext:
    """What a channel that must choose how to send is told about the row (WhatsApp outside its
    24-hour window sends a template): the row's kind and template values, when the person last
    wrote on this chat, and the row's id."""

    kind: str = ""
    params: dict[str, Any] | None = None
    last_seen_at: datetime | None = None
    row_id: int | None = None


class Transport(Protocol):
    """One chat channel's way of delivering a message; it maps its errors to an `Outcome`.

    `context` is given only to a transport whose `wants_context` is true (Telegram's has no use
    for it, and its claims do not read it)."""

    channel: str

    async def deliver(
        self,
        chat_id: str,
        text: str,
        buttons: ButtonRows | None,
        context: RowContext | None = None,
    ) -> Delivery: ...


@dataclass
class SendStats:
    """Rows finished or rescheduled by a drain; `retried` rows are pending again."""

    sent: int = 0
    retried: int = 0
    unreachable: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.retried + self.unreachable + self.failed


@dataclass
class _Claimed:
    id: int
    identity_id: int
    chat_id: str
    text: str
    buttons_json: str | None  # parsed when sent: a claim of 500 rows would stall the loop
    priority: int
    attempts: int
    # Only for a transport that wants them (`Transport.deliver`'s extras).
    kind: str = ""
    params_json: str | None = None
    last_seen_at: datetime | None = None

    @property
    def buttons(self) -> ButtonRows | None:
        return None if self.buttons_json is None else json.loads(self.buttons_json)

    @property
    def params(self) -> dict[str, Any] | None:
        return None if self.params_json is None else json.loads(self.params_json)


def slot_spacing(rate: float, *, shared: bool = False) -> float:
    """Seconds between two send slots at `rate` messages a second.

    A send may start up to LATE_SECONDS after its slot (a busy event loop wakes up late; a
    slot missed by more is dropped: used then, it would crowd the slots after it, perhaps
    another process's). So that no 1-second window ever holds more than `rate` sends even so,
    the slots are spaced for a rate that much lower: 1 % below it with 10 ms. Slots shared by
    several processes are times on the database's clock, which each process reads with an
    error of a few milliseconds: CLOCK_SECONDS more for those."""
    return (1.0 + LATE_SECONDS + (CLOCK_SECONDS if shared else 0.0)) / rate


class Budget(Protocol):
    """Where a sender gets its send slots: evenly spaced starts, `spacing` seconds apart.

    `shared`: the slots are shared with other processes and a claim is a round trip (the
    sender then claims ahead, in the background); otherwise a claim costs nothing."""

    spacing: float
    shared: bool

    async def claim(self, count: int) -> float:
        """Reserve `count` consecutive slots; returns when the first starts (`time.monotonic()`
        of this process), the others follow every `spacing` seconds."""
        ...

    async def pause(self, seconds: float) -> None:
        """Flood control: no slot claimed from now on starts within `seconds`."""
        ...


class LocalBudget:
    """The slots of one process (SQLite: one process sends)."""

    shared = False

    def __init__(self, rate: float) -> None:
        self.spacing = slot_spacing(rate)
        self._next = 0.0

    async def claim(self, count: int) -> float:
        start = max(self._next, time.monotonic())
        self._next = start + count * self.spacing
        return start

    async def pause(self, seconds: float) -> None:
        self._next = max(self._next, time.monotonic() + seconds)


class SharedBudget:
    """The slots every sender of a channel shares, from one `send_budget` row (PostgreSQL).

    A claim is one statement in its own transaction: `next_at` moves to
    greatest(next_at, now) + count * spacing, and the sender learns where its slots start on
    the database's clock. Concurrent claims queue on the row lock and get consecutive slots.

    Slots are times on the database's clock, so every process must read that clock the same
    way. Each answer also brings the database's time, taken somewhere within the round trip;
    the sender keeps the offset to its own clock from the quickest recent round trip (as NTP
    does), so a claim answered late (a busy event loop, a queue on the row lock) does not shift
    its slots into the next process's.
    """

    shared = True

    def __init__(self, db: Database, name: str, rate: float) -> None:
        self.db = db
        self.name = name
        self.spacing = slot_spacing(rate, shared=True)
        # (round trip, database epoch minus local monotonic) of the last answers.
        self._samples: deque[tuple[float, float]] = deque(maxlen=OFFSET_SAMPLES)
        # Built once (a claim every few dozen milliseconds at a thousand messages a second).
        length = bindparam("length", type_=Interval())
        now = func.clock_timestamp()
        self._claim = self._upsert(
            now + length,
            func.greatest(SendBudget.next_at, now) + length,
            func.extract("epoch", SendBudget.next_at - length),
        )
        until = now + length
        self._pause = self._upsert(
            until, func.greatest(SendBudget.next_at, until), func.extract("epoch", until)
        )

    def _upsert(self, values: Any, update_to: Any, returning: Any) -> Any:
        """Upsert the row; returns `returning` (epoch seconds) and the database's time."""
        return (
            postgresql.insert(SendBudget)
            .values(
                name=bindparam("budget", type_=SendBudget.__table__.c.name.type), next_at=values
            )
            .on_conflict_do_update(index_elements=["name"], set_={"next_at": update_to})
            .returning(returning, func.extract("epoch", func.clock_timestamp()))
        )

    async def _move(self, statement: Any, seconds: float) -> float:
        """Run a built upsert; returns its time on this process's clock."""
        async with self.db.engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            sent = time.monotonic()
            at, database_now = (
                await connection.execute(
                    statement, {"budget": self.name, "length": timedelta(seconds=seconds)}
                )
            ).one()
            received = time.monotonic()
        self._samples.append((received - sent, float(database_now) - (sent + received) / 2))
        offset = min(self._samples)[1]
        return float(at) - offset

    async def claim(self, count: int) -> float:
        return await self._move(self._claim, count * self.spacing)

    async def pause(self, seconds: float) -> None:
        await self._move(self._pause, seconds)


def default_budget(core: Core, channel: str, rate: float) -> Budget:
    """Shared on PostgreSQL, where several senders may run; in memory on SQLite."""
    if core.db.dialect == "postgresql":
        return SharedBudget(core.db, channel, rate)
    return LocalBudget(rate)


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:100]


def backoff(attempts: int) -> timedelta:
    """The wait before attempt `attempts + 1` after a transient failure."""
    seconds = BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, BACKOFF_CAP_SECONDS))


def _mark_sent_statement(dialect: str) -> Any:
    """UPDATE rows to `sent` from a JSON object {row id: message id} (`:sent`) where the sender
    (`:me`) still holds them, at `:at`; returns the ids it marked. One statement for any number
    of rows, built once. (SQLite: `+outbox.status` makes it find the rows by their key, not
    through the status index, which holds every row being sent.)"""
    assert (OutboxStatus.SENT.value, OutboxStatus.SENDING.value) == ("sent", "sending")
    if dialect == "postgresql":
        sql = (
            "UPDATE outbox SET status = 'sent', sent_at = :at, lease_until = NULL, "
            "last_error = NULL, external_message_id = sent.value "
            "FROM json_each_text(CAST(:sent AS JSON)) AS sent "
            "WHERE outbox.id = CAST(sent.key AS BIGINT) "
            "AND outbox.status = 'sending' AND outbox.claimed_by = :me RETURNING outbox.id"
        )
    else:
        sql = (
            "UPDATE outbox SET status = 'sent', sent_at = :at, lease_until = NULL, "
            "last_error = NULL, external_message_id = sent.value "
            "FROM json_each(:sent) AS sent "
            "WHERE outbox.id = CAST(sent.key AS INTEGER) "
            "AND +outbox.status = 'sending' AND outbox.claimed_by = :me RETURNING id"
        )
    return text(sql).bindparams(bindparam("at", type_=OutboxMessage.__table__.c.sent_at.type))


class Sender:
    """Drains the outbox of one channel. Several may run at once on PostgreSQL."""

    def __init__(
        self,
        core: Core,
        transport: Transport,
        *,
        name: str | None = None,
        rate: float | None = None,
        per_chat_interval: float | None = None,
        batch: int | None = None,
        lease_seconds: float = 60,
        max_attempts: int | None = None,
        concurrency: int | None = None,
        poll_interval: float = 1.0,
        budget: Budget | None = None,
    ) -> None:
        settings = core.settings
        self.core = core
        self.transport = transport
        self.name = (name or default_name())[:100]
        self.rate = rate if rate is not None else settings.outbox_rate_per_second
        self.per_chat_interval = (
            per_chat_interval
            if per_chat_interval is not None
            else settings.outbox_per_chat_interval_seconds
        )
        # Rows claimed at once: at least BATCH_SECONDS of sending (a claim is a round trip, and
        # the end of a batch waits for its last answers).
        self.batch = batch if batch is not None else max(50, math.ceil(self.rate * BATCH_SECONDS))
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = (
            max_attempts if max_attempts is not None else settings.outbox_max_attempts
        )
        # Sends in flight at once (answer awaited or being recorded): the rate it can reach is
        # about concurrency / (round trip + recording), e.g. 64 / 0.1 s against a Telegram
        # 100 ms away. The channel's HTTP client needs as many connections.
        self.concurrency = concurrency = (
            concurrency if concurrency is not None else settings.outbox_concurrency
        )
        self.poll_interval = poll_interval
        self.window: SendingWindow = sending_window(settings)
        if self.rate <= 0 or self.batch < 1 or concurrency < 1 or lease_seconds <= 0:
            raise ValueError("rate, batch, concurrency and lease must be positive")
        self.budget = budget or default_budget(core, transport.channel, self.rate)
        # The slots claimed and not used yet (monotonic start times), and the end of the last
        # flood-control pause this process was told about.
        self._slots: deque[float] = deque()
        self._paused_until = 0.0
        self._claim_size = max(1, math.ceil(self.rate * CLAIM_SECONDS))
        self._chunk_size = min(
            self._claim_size, max(MIN_SLOT_CHUNK, math.ceil(self.rate * SLOT_CHUNK_SECONDS))
        )
        # A claim of shared slots under way (claimed ahead), and of the next rows.
        self._refill: asyncio.Task[None] | None = None
        self._prefetch: asyncio.Task[list[_Claimed] | None] | None = None
        # How long a send takes, answer and record (moving average): how many slots a chunk of
        # shared ones can use.
        self._round_trip = 0.05
        # Per chat identity: the monotonic time its next message may start.
        self._chat_free: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        # Delivered rows waiting to be marked sent, and the task that writes them (`_mark_sent`).
        self._sent: list[tuple[_Claimed, str | None, SendStats, asyncio.Future[None]]] = []
        self._sent_full = asyncio.Event()
        self._marker: asyncio.Task[None] | None = None
        self._mark_statement = _mark_sent_statement(core.db.dialect)
        self._db: Database | None = None
        self._holders = 0
        self._claim_statements: dict[bool, Any] = {}
        # The sends under way (of this round and the last), their chats, and a sign that one
        # ended.
        self._in_flight: dict[asyncio.Task[None], _Claimed] = {}
        self._busy: set[int] = set()
        self._done = asyncio.Event()
        # Whether the transport is handed each row's kind, template values and last_seen_at.
        self._context = bool(getattr(transport, "wants_context", False))
        self._identities = self._identities_statement()

    # -- public -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Tell a running sender that rows were just queued (same event loop)."""
        self._wake.set()

    async def drain(self, *, max_rounds: int | None = None) -> SendStats:
        """Claim and send rounds until nothing is due now (or `max_rounds` were done).

        Rounds overlap: the next round's rows are claimed while the last rows of a round are
        sent, and its sends start while the last answers of the round before are awaited, so
        a large outbox goes out without a pause between rounds."""
        stats = SendStats()
        rounds = 0
        async with self._held():
            try:
                while (max_rounds is None or rounds < max_rounds) and not self._stop.is_set():
                    claimed = await self._next_claim(stats)
                    if claimed is None and self._in_flight:
                        # Rows held back by those still in flight may be due once they are done.
                        await self._finish()
                        claimed = await self._claim(stats)
                    if claimed is None:
                        break
                    rounds += 1
                    if claimed:
                        ahead = max_rounds is None or rounds < max_rounds
                        await self._send_batch(claimed, stats, prefetch=ahead)
                await self._finish()
            except asyncio.CancelledError:
                for task in self._in_flight:
                    task.cancel()
                await asyncio.gather(*self._in_flight, return_exceptions=True)
                # Delivered rows not marked yet stay `sending` and go again after their lease.
                if self._marker is not None:
                    self._marker.cancel()
                raise
            except Exception:
                # Let the sends already under way finish and be recorded before giving up.
                await self._finish()
                raise
            finally:
                await self._drop_prefetch()
                if self._refill is not None:
                    # Slots claimed ahead stay for the next round (or run out unused).
                    await asyncio.gather(self._refill, return_exceptions=True)
        return stats

    async def _finish(self) -> None:
        """Wait for the sends in flight, and for their rows to be written."""
        while self._in_flight:
            tasks = list(self._in_flight)
            self._sent_full.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                self._attempt_done(task)
        await self._flush_sent()

    async def _next_claim(self, stats: SendStats) -> list[_Claimed] | None:
        """The rows claimed ahead, if there were any; else a claim now (rows held back by the
        last round's may be due by now)."""
        ahead, self._prefetch = self._prefetch, None
        if ahead is not None:
            claimed = await ahead
            if claimed:
                return claimed
        return await self._claim(stats)

    async def _drop_prefetch(self) -> None:
        """Hand back rows claimed ahead and not sent (stopping, or an error)."""
        ahead, self._prefetch = self._prefetch, None
        if ahead is None:
            return
        if not ahead.done():
            ahead.cancel()
        try:
            claimed = await ahead
        except BaseException:
            # Cancelled or failed: whatever it claimed goes again after its lease.
            return
        if claimed:
            await self._release(claimed)

    @property
    def db(self) -> Database:
        """Where the sender's statements run: on SQLite, while it works, an engine of its own
        whose statements run in a worker thread (aiosqlite), not in the event loop's (see
        `_held`); otherwise the core's."""
        return self._db or self.core.db

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        """While draining or running: the transport's connections kept open (if it keeps any)
        and, on a SQLite file, the sender's own engine.

        The core's SQLite engine runs statements in the event loop's thread (storage/db.py,
        InlineSqlite): cheap for a handler's short statements, but a claim of hundreds of rows
        over a large outbox takes tens of milliseconds, and at a thousand messages a second
        every such stall is a run of send slots missed. In a worker thread they overlap the
        sending instead."""
        self._holders += 1
        if (
            self._holders == 1
            and self.core.db.dialect == "sqlite"
            and make_url(self.core.db.url).database not in (None, "", ":memory:")
        ):
            self._db = Database(self.core.db.url, sqlite_inline=False)
        try:
            hold = getattr(self.transport, "hold", None)
            if hold is None:
                yield
            else:
                async with hold():
                    yield
        finally:
            self._holders -= 1
            if not self._holders and self._db is not None:
                db, self._db = self._db, None
                await db.dispose()

    async def run(self, stop: asyncio.Event) -> None:
        """Drain, then wait for `wake()`, the poll interval or `stop`; until `stop` is set."""
        self._stop = stop
        async with self._held():
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                stats = await self.drain()
            except Exception:
                log.exception("outbox sender %s: a round failed; trying again", self.name)
            else:
                if stats.total:
                    log.info(
                        "outbox: %d sent, %d retried, %d unreachable, %d failed",
                        stats.sent,
                        stats.retried,
                        stats.unreachable,
                        stats.failed,
                    )
            if stop.is_set():
                break
            waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)

    # -- claiming -----------------------------------------------------------------------------

    def _claim_statement(self, window_open: bool) -> Any:
        """The claiming UPDATE (built once per sender and window state): `:now` the time,
        `:lease_until` the new lease."""
        now = bindparam("now", type_=OutboxMessage.__table__.c.next_attempt_at.type)
        candidate = aliased(OutboxMessage, name="candidate")
        earlier = aliased(OutboxMessage, name="earlier")
        due = or_(
            and_(
                candidate.status == OutboxStatus.PENDING,
                candidate.next_attempt_at <= now,
            ),
            and_(candidate.status == OutboxStatus.SENDING, candidate.lease_until < now),
        )
        # An earlier unfinished row of the same chat goes first, unless it is a quiet-hours
        # row waiting for the morning while this one may go now.
        earlier_waiting: Any = earlier.status == OutboxStatus.PENDING
        if not window_open:
            earlier_waiting = and_(earlier_waiting, earlier.quiet_hours.is_(False))
        earlier_in_play = or_(earlier.status == OutboxStatus.SENDING, earlier_waiting)
        conditions = [
            due,
            candidate.chat_identity_id.in_(
                select(ChatIdentity.id).where(ChatIdentity.channel == self.transport.channel)
            ),
            ~exists().where(
                earlier.chat_identity_id == candidate.chat_identity_id,
                earlier.id < candidate.id,
                earlier_in_play,
            ),
        ]
        if not window_open:
            conditions.append(candidate.quiet_hours.is_(False))
        chosen: Select[Any] = (
            select(candidate.id)
            .where(*conditions)
            .order_by(candidate.priority, candidate.id)
            .limit(self.batch)
        )
        ids: Select[Any] = chosen
        if self.core.db.dialect == "postgresql":
            # Materialised so the locking SELECT runs exactly once; SKIP LOCKED lets concurrent
            # senders pass over each other's rows instead of waiting or taking them twice.
            locked = (
                chosen.with_for_update(skip_locked=True, of=candidate)
                .cte("claimable")
                .prefix_with("MATERIALIZED")
            )
            ids = select(locked.c.id)
        returned: list[Any] = [
            OutboxMessage.id,
            OutboxMessage.chat_identity_id,
            OutboxMessage.text,
            # As text: parsed when sent (`_Claimed.buttons`).
            cast(OutboxMessage.buttons, Text),
            OutboxMessage.priority,
            OutboxMessage.attempts,
        ]
        if self._context:
            returned += [OutboxMessage.kind, cast(OutboxMessage.params, Text)]
        return (
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(
                status=OutboxStatus.SENDING,
                lease_until=bindparam("lease_until", type_=now.type),
                claimed_by=self.name,
                attempts=OutboxMessage.attempts + 1,
            )
            .returning(*returned)
        )

    def _identities_statement(self) -> Any:
        """The chat identities of claimed rows: their ids as one value (`:ids`, an array on
        PostgreSQL, a JSON list on SQLite), not one parameter per row."""
        ids: Any
        if self.core.db.dialect == "postgresql":
            ids = ChatIdentity.id == any_(bindparam("ids", type_=postgresql.ARRAY(Integer)))
        else:
            listed = func.json_each(bindparam("ids", type_=String)).table_valued("value")
            ids = ChatIdentity.id.in_(select(listed.c.value))
        columns: list[Any] = [
            ChatIdentity.id,
            ChatIdentity.external_id,
            ChatIdentity.unreachable_at,
            ChatIdentity.unreachable_reason,
        ]
        if self._context:
            columns.append(ChatIdentity.last_seen_at)
        return select(*columns).where(ids)

    async def _claim(self, stats: SendStats) -> list[_Claimed] | None:
        """The rows to send now; None when nothing was due (rows closed here are counted)."""
        now = self.core.clock.now()
        window_open = self.window.contains(now)
        statement = self._claim_statements.get(window_open)
        if statement is None:
            statement = self._claim_statements[window_open] = self._claim_statement(window_open)
        claimed: list[_Claimed] = []
        # A bare connection, not an ORM session: plain rows, a claim of hundreds at a time.
        async with self.db.engine.begin() as connection:
            # The UPDATE comes first: on SQLite it takes the write lock before reading anything.
            rows = (
                await connection.execute(statement, {"now": now, "lease_until": now + self.lease})
            ).all()
            if not rows:
                return None
            wanted = sorted({row.chat_identity_id for row in rows})
            identities = {
                identity.id: identity
                for identity in (
                    await connection.execute(
                        self._identities,
                        {
                            "ids": wanted
                            if self.core.db.dialect == "postgresql"
                            else json.dumps(wanted)
                        },
                    )
                ).all()
            }
            exhausted: list[int] = []
            for row in rows:
                row_id, identity_id, text, buttons, priority, attempts = row[:6]
                identity = identities[identity_id]
                if identity.unreachable_at is not None:
                    reason = identity.unreachable_reason or "unreachable"
                    stats.unreachable += await self._close_identity(
                        connection, identity.id, f"chat unreachable: {reason}"
                    )
                elif attempts > self.max_attempts:
                    # Reclaimed after a sender died during its last allowed attempt.
                    exhausted.append(row_id)
                else:
                    item = _Claimed(
                        id=row_id,
                        identity_id=identity_id,
                        chat_id=identity.external_id,
                        text=text,
                        buttons_json=buttons,
                        priority=priority,
                        attempts=attempts,
                    )
                    if self._context:
                        item.kind, item.params_json = row[6], row[7]
                        item.last_seen_at = identity.last_seen_at
                    claimed.append(item)
            if exhausted:
                await connection.execute(
                    self._mine(exhausted).values(
                        status=OutboxStatus.FAILED,
                        lease_until=None,
                        last_error=f"gave up after {self.max_attempts} attempts "
                        "(the last one was interrupted)",
                    )
                )
                stats.failed += len(exhausted)
        claimed.sort(key=lambda c: (c.priority, c.id))
        return claimed

    def _mine(self, ids: Sequence[int]) -> Any:
        """An UPDATE of rows this sender still holds (a row whose lease ran out and was taken
        by another sender is left to that one)."""
        return update(OutboxMessage).where(
            OutboxMessage.id.in_(list(ids)),
            OutboxMessage.status == OutboxStatus.SENDING,
            OutboxMessage.claimed_by == self.name,
        )

    async def _close_identity(
        self, session: AsyncSession | AsyncConnection, identity_id: int, error: str
    ) -> int:
        """Mark the identity's waiting rows (and those this sender holds) unreachable."""
        result = await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.chat_identity_id == identity_id,
                or_(
                    OutboxMessage.status == OutboxStatus.PENDING,
                    and_(
                        OutboxMessage.status == OutboxStatus.SENDING,
                        OutboxMessage.claimed_by == self.name,
                    ),
                ),
            )
            .values(status=OutboxStatus.UNREACHABLE, lease_until=None, last_error=error)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # -- sending ------------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the sender is told to stop."""
        if seconds <= 0 or self._stop.is_set():
            return
        if seconds < SHORT_SLEEP:
            # The wait for the next send slot, a thousand times a second at most: a plain
            # sleep costs less than a cancellable wait, and the stop is seen right after.
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _turn(self, wanted: int = 1, queued: int = 1) -> bool:
        """Wait for a send slot and for any flood-control pause; False when stopping.

        `wanted`: sends that could start now; `queued`: rows waiting to be sent. From a local
        budget it claims `wanted` slots when none is left (a claim costs nothing). From a
        shared one it claims ahead, in the background, chunks of up to SLOT_CHUNK_SECONDS of
        slots for the rows it holds, never more than it can start meanwhile (its concurrency
        over the round trip of a delivery) nor more than CLAIM_SECONDS' worth in all: a slot
        claimed and not used is lost to every sender of the budget."""
        spacing = self.budget.spacing
        # A slot missed by more than LATE_SECONDS is dropped, not used late (see slot_spacing).
        late = LATE_SECONDS
        while not self._stop.is_set():
            now = time.monotonic()
            if self._paused_until > now:
                await self._sleep(self._paused_until - now)
                continue
            while self._slots and self._slots[0] < now - late:
                self._slots.popleft()
            if self.budget.shared:
                self._claim_ahead(wanted, queued)
            if not self._slots:
                if self._refill is not None:
                    await asyncio.shield(self._refill)
                else:
                    count = max(1, min(wanted, self._claim_size))
                    start = await self.budget.claim(count)
                    self._slots.extend(start + number * spacing for number in range(count))
                continue
            if (wait := self._slots[0] - now) > 0:
                await self._sleep(wait)
                continue
            self._slots.popleft()
            return True
        return False

    def _claim_ahead(self, wanted: int, queued: int) -> None:
        """Start claiming the next chunk of shared slots when half of the last is left."""
        if self._refill is not None:
            return
        held = len(self._slots)
        usable = math.ceil(self.concurrency * SLOT_CHUNK_SECONDS / max(self._round_trip, 1e-3))
        chunk = max(1, min(self._chunk_size, usable))
        count = min(chunk, max(queued, wanted) - held, self._claim_size - held)
        if count < 1 or held > chunk // 2:
            return
        self._refill = asyncio.create_task(self._claim_slots(count))

    async def _claim_slots(self, count: int) -> None:
        try:
            start = await self.budget.claim(count)
            spacing = self.budget.spacing
            self._slots.extend(start + number * spacing for number in range(count))
        except Exception:
            log.exception("outbox sender %s: claiming send slots failed", self.name)
            await self._sleep(self.poll_interval)
        finally:
            self._refill = None

    async def _pause(self, seconds: float) -> None:
        """Flood control: this process at once, then every sender of the budget."""
        seconds = max(seconds, 0.0)
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self._slots.clear()
        try:
            await self.budget.pause(seconds)
        except Exception:
            # This process still pauses; the others find out at their own 429.
            log.exception("outbox sender %s: could not share a flood-control pause", self.name)

    async def _send_batch(
        self, batch: list[_Claimed], stats: SendStats, *, prefetch: bool = False
    ) -> None:
        """Start a send for every row of the batch, each in its slot; returns when the last
        has started (`_finish` waits for them)."""
        now = time.monotonic()
        low = max(1, math.ceil(self.rate * PREFETCH_SECONDS))
        self._chat_free = {key: at for key, at in self._chat_free.items() if at > now}
        queue = list(batch)
        in_flight = self._in_flight
        lease_until = self.core.clock.now() + self.lease
        while queue:
            if self._stop.is_set():
                await self._release(queue)
                queue.clear()
                break
            if prefetch and len(queue) <= low and self._prefetch is None:
                # The next round's rows, claimed while these go out.
                self._prefetch = asyncio.create_task(self._claim(stats))
            now = time.monotonic()
            # The first row that may start now, and how many may (up to the free room: the
            # queue of a large batch is not scanned at every send).
            room = self.concurrency - len(in_flight)
            ready, startable = None, 0
            if room > 0:
                for row in queue:
                    if (
                        row.identity_id not in self._busy
                        and self._chat_free.get(row.identity_id, 0.0) <= now
                    ):
                        if ready is None:
                            ready = row
                        startable += 1
                        if startable >= room:
                            break
            if ready is not None:
                # The lease before the slot: a slot is used the moment it comes, as a
                # renewal's round trip in between would make the send late and crowd the
                # next slot, perhaps another process's.
                if self.core.clock.now() >= lease_until - self.lease / 2:
                    lease_until = await self._renew(queue, in_flight.values())
                    continue
                # No more slots than sends it can start: a slot not used is lost to
                # every sender of the budget.
                if not await self._turn(startable, len(queue)):
                    continue
                if self.core.clock.now() >= lease_until - self.lease / 4:
                    # After a long wait (flood control): renew, and give this slot up.
                    lease_until = await self._renew(queue, in_flight.values())
                    continue
                queue.remove(ready)
                self._chat_free[ready.identity_id] = time.monotonic() + self.per_chat_interval
                task = asyncio.create_task(self._attempt(ready, stats))
                in_flight[task] = ready
                self._busy.add(ready.identity_id)
                task.add_done_callback(self._attempt_done)
                continue
            timeout = None
            if room > 0:
                waits = [
                    self._chat_free.get(row.identity_id, 0.0) - now
                    for row in queue
                    if row.identity_id not in self._busy
                ]
                timeout = min(waits) if waits else None
            if in_flight:
                # Nothing to start now: the delivered rows are written at once rather than at
                # the end of SENT_WRITE_SECONDS (they hold their places meanwhile).
                self._sent_full.set()
                self._done.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._done.wait()
            elif timeout is not None:
                await self._sleep(timeout)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        """A send ended (its row recorded, or the recording failed)."""
        row = self._in_flight.pop(task, None)
        if row is None:
            return
        self._busy.discard(row.identity_id)
        self._done.set()
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "outbox row %s: recording the attempt failed; it is retried when its lease "
                "runs out",
                row.id,
                exc_info=task.exception(),
            )

    async def _renew(self, queue: list[_Claimed], in_flight: Any) -> datetime:
        """Extend the lease of the rows still held; drop queued rows no longer ours."""
        now = self.core.clock.now()
        ids = [row.id for row in queue] + [row.id for row in in_flight]
        async with self.db.transaction() as session:
            kept = set(
                (
                    await session.execute(
                        self._mine(ids)
                        .values(lease_until=now + self.lease)
                        .returning(OutboxMessage.id)
                        .execution_options(synchronize_session=False)
                    )
                )
                .scalars()
                .all()
            )
        queue[:] = [row for row in queue if row.id in kept]
        return now + self.lease

    async def _release(self, rows: list[_Claimed]) -> None:
        """Hand unsent rows back when stopping: pending, and the attempt not counted."""
        async with self.db.transaction() as session:
            await session.execute(
                self._mine([row.id for row in rows])
                .values(
                    status=OutboxStatus.PENDING,
                    attempts=OutboxMessage.attempts - 1,
                    lease_until=None,
                    claimed_by=None,
                )
                .execution_options(synchronize_session=False)
            )

    async def _deliver(self, chat_id: str, row: _Claimed) -> Delivery:
        try:
            context = (
                RowContext(row.kind, row.params, row.last_seen_at, row.id)
                if self._context
                else None
            )
            return await self.transport.deliver(chat_id, row.text, row.buttons, context)
        except Exception as exc:
            # A bug in a transport must not strand the row in `sending`.
            log.exception("outbox row %s: the transport raised", row.id)
            return Delivery(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")

    async def _attempt(self, row: _Claimed, stats: SendStats) -> None:
        chat_id = row.chat_id
        started = time.monotonic()
        delivery = await self._deliver(chat_id, row)
        hops = 0
        while (
            delivery.outcome is Outcome.MIGRATED
            and delivery.new_chat_id
            and hops < (MAX_MIGRATIONS)
        ):
            hops += 1
            await self._record_migration(row, chat_id, delivery.new_chat_id)
            chat_id = delivery.new_chat_id
            if not await self._turn():
                delivery = Delivery(Outcome.RETRY_AFTER, error="stopped after a migration")
                break
            delivery = await self._deliver(chat_id, row)
        if delivery.outcome is Outcome.MIGRATED:
            delivery = Delivery(
                Outcome.PERMANENT, error=delivery.error or "the chat keeps migrating"
            )
        if delivery.outcome is Outcome.RETRY_AFTER:
            # Before anything else, so no other send starts during the pause.
            await self._pause(delivery.retry_after)
        await self._record(row, delivery, stats)
        # How long a send holds its place among the concurrent ones (answer and record).
        self._round_trip += (time.monotonic() - started - self._round_trip) / 8

    # -- recording ----------------------------------------------------------------------------

    async def _record(self, row: _Claimed, delivery: Delivery, stats: SendStats) -> None:
        if delivery.outcome is Outcome.SENT:
            await self._mark_sent(row, delivery.message_id, stats)
            return
        now = self.core.clock.now()
        outcome = delivery.outcome
        values: dict[str, Any]
        async with self.db.transaction() as session:
            if outcome is Outcome.UNREACHABLE:
                reason = (delivery.error or "unreachable")[:_REASON_LENGTH]
                await session.execute(
                    update(ChatIdentity)
                    .where(ChatIdentity.id == row.identity_id)
                    .values(unreachable_at=now, unreachable_reason=reason)
                    .execution_options(synchronize_session=False)
                )
                closed = await self._close_identity(session, row.identity_id, reason)
                stats.unreachable += closed
                if not closed:
                    self._lost(row)
                return
            if outcome is Outcome.RETRY_AFTER:
                # Flood control is not the message's fault: the attempt does not count.
                values = {
                    "status": OutboxStatus.PENDING,
                    "attempts": OutboxMessage.attempts - 1,
                    "next_attempt_at": now,
                    "claimed_by": None,
                    "last_error": delivery.error or f"retry after {delivery.retry_after:g} s",
                }
                counter = "retried"
            elif outcome is Outcome.TRANSIENT and row.attempts < self.max_attempts:
                values = {
                    "status": OutboxStatus.PENDING,
                    "next_attempt_at": now + backoff(row.attempts),
                    "claimed_by": None,
                    "last_error": delivery.error or "transient error",
                }
                counter = "retried"
            else:
                error = delivery.error or outcome.value
                if outcome is Outcome.TRANSIENT:
                    error = f"{error} (gave up after {row.attempts} attempts)"
                values = {"status": OutboxStatus.FAILED, "last_error": error}
                counter = "failed"
            result = await session.execute(
                self._mine([row.id])
                .values(lease_until=None, **values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                setattr(stats, counter, getattr(stats, counter) + 1)
            else:
                self._lost(row)

    async def _mark_sent(self, row: _Claimed, message_id: str | None, stats: SendStats) -> None:
        """Mark a delivered row sent; returns once that is committed (the row counts as in
        flight until then, so a sender that dies leaves no more rows to be sent twice than
        its concurrency)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sent.append((row, message_id, stats, done))
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._write_sent_rows())
        elif len(self._sent) >= max(1, self.concurrency // 2):
            self._sent_full.set()
        # Shielded: a row handed over is written even if this attempt is cancelled.
        await asyncio.shield(done)

    async def _write_sent_rows(self) -> None:
        """Mark delivered rows sent, in one statement for all that wait: every
        SENT_WRITE_SECONDS, or as soon as half the concurrency waits (group commit). At a
        few messages a second that is a write per message, as before; at a thousand a second
        a statement and a commit per message would cost more than the send itself."""
        while self._sent:
            if len(self._sent) < max(1, self.concurrency // 2):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SENT_WRITE_SECONDS):
                        await self._sent_full.wait()
            self._sent_full.clear()
            batch, self._sent = self._sent, []
            try:
                kept = await self._write_sent([(row.id, message) for row, message, _, _ in batch])
            except Exception as exc:
                # Each attempt reports it (`_send_batch`); the rows go again after their lease.
                for _, _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for row, _, stats, done in batch:
                if row.id in kept:
                    stats.sent += 1
                else:
                    self._lost(row)
                if not done.done():
                    done.set_result(None)

    async def _flush_sent(self) -> None:
        """Write the delivered rows now, and wait for that."""
        marker = self._marker
        if marker is not None and not marker.done():
            self._sent_full.set()
            await asyncio.shield(marker)

    async def _write_sent(self, rows: list[tuple[int, str | None]]) -> set[int]:
        """Mark rows this sender holds sent, in one statement; the ids it marked."""
        async with self.db.engine.begin() as connection:
            result = await connection.execute(
                self._mark_statement,
                {
                    "sent": json.dumps({str(row_id): message for row_id, message in rows}),
                    "me": self.name,
                    "at": self.core.clock.now(),
                },
            )
            return set(result.scalars().all())

    def _lost(self, row: _Claimed) -> None:
        log.warning(
            "outbox row %s: its lease ran out during the attempt and another sender took it",
            row.id,
        )

    async def _record_migration(self, row: _Claimed, old: str, new: str) -> None:
        channel = self.transport.channel
        async with self.db.transaction() as session:
            # A write first: on SQLite it takes the write lock before anything is read.
            await session.execute(
                self._mine([row.id])
                .values(last_error=f"chat migrated from {old} to {new}")
                .execution_options(synchronize_session=False)
            )
            taken = await session.scalar(
                select(ChatIdentity.id).where(
                    ChatIdentity.channel == channel,
                    ChatIdentity.external_id == new,
                    ChatIdentity.id != row.identity_id,
                )
            )
            if taken is not None:
                # The new chat is already known as another identity; deliver there anyway.
                log.warning(
                    "chat %s migrated to %s, which identity %s already has", old, new, taken
                )
                return
            await session.execute(
                update(ChatIdentity)
                .where(ChatIdentity.id == row.identity_id, ChatIdentity.external_id == old)
                .values(external_id=new)
                .execution_options(synchronize_session=False)
            )
