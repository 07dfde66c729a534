"""The outbox sender: claims due rows, paces them to the channel's limits, records every attempt.

How a row travels. One short transaction claims a batch of due rows: status `sending`, a lease
(`lease_until`), `claimed_by` this sender, `attempts + 1`. Each row is then handed to the
channel's `Transport` and the answer is written in a transaction of its own right after it
(sent, back to pending with a backoff, unreachable, failed). A row stays claimed only as long as
its lease (renewed while a long flood-control pause holds the batch); a sender that dies leaves
rows in `sending` whose lease runs out, and the next round of any sender claims them again. A
sender told to stop hands its unsent rows back at once.

What that guarantees. No row is lost: it is pending, claimed under a lease, or finished. No row
is sent twice by two senders at once: claiming is one atomic statement (on PostgreSQL the
selecting part uses FOR UPDATE SKIP LOCKED, so concurrent senders pass over each other's rows;
on SQLite the single writer lock serialises the claiming UPDATE). The one duplicate left: if
the process dies after the channel accepted a message but before the row was marked sent, that
message is sent again when the lease expires, and likewise when the channel accepted a message
but its answer timed out. Telegram's sendMessage has no idempotency key, so at-least-once is
the most any sender can promise; nothing else is duplicated or lost.

Order and limits. Only the earliest unfinished row of a chat can be claimed (quiet-hours rows
waiting for the morning do not hold back urgent ones), so a chat's messages go out in id order
even with several senders, and a batch holds at most one row per chat. A send starts only in a
slot of the channel's send budget: evenly spaced starts at the global rate, claimed a few at a
time (no more than the sender can start) and dropped, not used late, when missed by more than a
quarter of their spacing, so a late sender never crowds the next one. On PostgreSQL the budget
is one row every sender shares (`send_budget`, GCRA: each claim moves the row's `next_at` on by
its slots in one statement), so N processes together keep one rate, not N; on SQLite, where one
process sends, it is kept in memory (`LocalBudget`). "Retry after" pauses every sender of the
budget: the row moves past the pause (a sender that already holds slots may use the ones it
claimed, a quarter of a second's worth at most). The minimum interval per chat is kept per
process; a batch never holds two rows of one chat and a chat's next row waits for the previous
one to finish, so several processes do not crowd a chat either.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Interval, Select, and_, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
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


class Transport(Protocol):
    """One chat channel's way of delivering a message; it maps its errors to an `Outcome`."""

    channel: str

    async def deliver(self, chat_id: str, text: str, buttons: ButtonRows | None) -> Delivery: ...


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
    buttons: ButtonRows | None
    priority: int
    attempts: int


class Budget(Protocol):
    """Where a sender gets its send slots: evenly spaced starts, `spacing` seconds apart."""

    spacing: float

    async def claim(self, count: int) -> float:
        """Reserve `count` consecutive slots; returns when the first starts (`time.monotonic()`
        of this process), the others follow every `spacing` seconds."""
        ...

    async def pause(self, seconds: float) -> None:
        """Flood control: no slot claimed from now on starts within `seconds`."""
        ...


class LocalBudget:
    """The slots of one process (SQLite: one process sends)."""

    def __init__(self, rate: float) -> None:
        self.spacing = 1.0 / rate
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

    def __init__(self, db: Database, name: str, rate: float) -> None:
        self.db = db
        self.name = name
        self.spacing = 1.0 / rate
        # (round trip, database epoch minus local monotonic) of the last answers.
        self._samples: deque[tuple[float, float]] = deque(maxlen=OFFSET_SAMPLES)

    async def _move(self, values: Any, update_to: Any, returning: Any) -> float:
        """Upsert the row; returns `returning` (epoch seconds) on this process's clock."""
        statement = (
            postgresql.insert(SendBudget)
            .values(name=self.name, next_at=values)
            .on_conflict_do_update(index_elements=["name"], set_={"next_at": update_to})
            .returning(returning, func.extract("epoch", func.clock_timestamp()))
        )
        async with self.db.engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            sent = time.monotonic()
            at, database_now = (await connection.execute(statement)).one()
            received = time.monotonic()
        self._samples.append((received - sent, float(database_now) - (sent + received) / 2))
        offset = min(self._samples)[1]
        return float(at) - offset

    async def claim(self, count: int) -> float:
        length = literal(timedelta(seconds=count * self.spacing), Interval())
        now = func.clock_timestamp()
        return await self._move(
            now + length,
            func.greatest(SendBudget.next_at, now) + length,
            func.extract("epoch", SendBudget.next_at - length),
        )

    async def pause(self, seconds: float) -> None:
        until = func.clock_timestamp() + literal(timedelta(seconds=seconds), Interval())
        await self._move(
            until, func.greatest(SendBudget.next_at, until), func.extract("epoch", until)
        )


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
        batch: int = 50,
        lease_seconds: float = 60,
        max_attempts: int | None = None,
        concurrency: int = 8,
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
        self.batch = batch
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = (
            max_attempts if max_attempts is not None else settings.outbox_max_attempts
        )
        # Sends in flight at once; the channel's HTTP client needs at least as many connections.
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.window: SendingWindow = sending_window(settings)
        if self.rate <= 0 or batch < 1 or concurrency < 1 or lease_seconds <= 0:
            raise ValueError("rate, batch, concurrency and lease must be positive")
        self.budget = budget or default_budget(core, transport.channel, self.rate)
        # The slots claimed and not used yet (monotonic start times), and the end of the last
        # flood-control pause this process was told about.
        self._slots: deque[float] = deque()
        self._paused_until = 0.0
        self._claim_size = max(1, math.ceil(self.rate * CLAIM_SECONDS))
        # Per chat identity: the monotonic time its next message may start.
        self._chat_free: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    # -- public -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Tell a running sender that rows were just queued (same event loop)."""
        self._wake.set()

    async def drain(self, *, max_rounds: int | None = None) -> SendStats:
        """Claim and send rounds until nothing is due now (or `max_rounds` were done)."""
        stats = SendStats()
        rounds = 0
        while (max_rounds is None or rounds < max_rounds) and not self._stop.is_set():
            claimed = await self._claim(stats)
            if claimed is None:
                break
            rounds += 1
            if claimed:
                await self._send_batch(claimed, stats)
        return stats

    async def run(self, stop: asyncio.Event) -> None:
        """Drain, then wait for `wake()`, the poll interval or `stop`; until `stop` is set."""
        self._stop = stop
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

    def _claim_statement(self, now: datetime, window_open: bool) -> Any:
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
        return (
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(
                status=OutboxStatus.SENDING,
                lease_until=now + self.lease,
                claimed_by=self.name,
                attempts=OutboxMessage.attempts + 1,
            )
            .returning(
                OutboxMessage.id,
                OutboxMessage.chat_identity_id,
                OutboxMessage.text,
                OutboxMessage.buttons,
                OutboxMessage.priority,
                OutboxMessage.attempts,
            )
            .execution_options(synchronize_session=False)
        )

    async def _claim(self, stats: SendStats) -> list[_Claimed] | None:
        """The rows to send now; None when nothing was due (rows closed here are counted)."""
        now = self.core.clock.now()
        statement = self._claim_statement(now, self.window.contains(now))
        claimed: list[_Claimed] = []
        async with self.core.db.transaction() as session:
            # The UPDATE comes first: on SQLite it takes the write lock before reading anything.
            rows = (await session.execute(statement)).all()
            if not rows:
                return None
            identities = {
                identity.id: identity
                for identity in (
                    await session.execute(
                        select(
                            ChatIdentity.id,
                            ChatIdentity.external_id,
                            ChatIdentity.unreachable_at,
                            ChatIdentity.unreachable_reason,
                        ).where(ChatIdentity.id.in_({row.chat_identity_id for row in rows}))
                    )
                ).all()
            }
            exhausted: list[int] = []
            for row in rows:
                identity = identities[row.chat_identity_id]
                if identity.unreachable_at is not None:
                    reason = identity.unreachable_reason or "unreachable"
                    stats.unreachable += await self._close_identity(
                        session, identity.id, f"chat unreachable: {reason}"
                    )
                elif row.attempts > self.max_attempts:
                    # Reclaimed after a sender died during its last allowed attempt.
                    exhausted.append(row.id)
                else:
                    claimed.append(
                        _Claimed(
                            id=row.id,
                            identity_id=row.chat_identity_id,
                            chat_id=identity.external_id,
                            text=row.text,
                            buttons=row.buttons,
                            priority=row.priority,
                            attempts=row.attempts,
                        )
                    )
            if exhausted:
                await session.execute(
                    self._mine(exhausted)
                    .values(
                        status=OutboxStatus.FAILED,
                        lease_until=None,
                        last_error=f"gave up after {self.max_attempts} attempts "
                        "(the last one was interrupted)",
                    )
                    .execution_options(synchronize_session=False)
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

    async def _close_identity(self, session: AsyncSession, identity_id: int, error: str) -> int:
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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _turn(self, wanted: int = 1) -> bool:
        """Wait for a send slot (claiming up to `wanted` when none is left) and for any
        flood-control pause; False when stopping."""
        spacing = self.budget.spacing
        # A slot missed by more than this is dropped, not used late: used late, it would crowd
        # the next slot, which may be another process's (the margin is for the network's jitter).
        late = max(spacing / 4, 0.002)
        while not self._stop.is_set():
            now = time.monotonic()
            if self._paused_until > now:
                await self._sleep(self._paused_until - now)
                continue
            while self._slots and self._slots[0] < now - late:
                self._slots.popleft()
            if not self._slots:
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

    async def _send_batch(self, batch: list[_Claimed], stats: SendStats) -> None:
        now = time.monotonic()
        self._chat_free = {key: at for key, at in self._chat_free.items() if at > now}
        queue = list(batch)
        in_flight: dict[asyncio.Task[None], _Claimed] = {}
        lease_until = self.core.clock.now() + self.lease
        try:
            while queue or in_flight:
                if self._stop.is_set() and queue:
                    await self._release(queue)
                    queue.clear()
                    continue
                now = time.monotonic()
                busy = {row.identity_id for row in in_flight.values()}
                startable = []
                if len(in_flight) < self.concurrency:
                    startable = [
                        row
                        for row in queue
                        if row.identity_id not in busy
                        and self._chat_free.get(row.identity_id, 0.0) <= now
                    ]
                ready = startable[0] if startable else None
                if ready is not None:
                    # The lease before the slot: a slot is used the moment it comes, as a
                    # renewal's round trip in between would make the send late and crowd the
                    # next slot, perhaps another process's.
                    if self.core.clock.now() >= lease_until - self.lease / 2:
                        lease_until = await self._renew(queue, in_flight.values())
                        continue
                    # No more slots than sends it can start: a slot not used is lost to
                    # every sender of the budget.
                    room = self.concurrency - len(in_flight)
                    if not await self._turn(min(len(startable), room)):
                        continue
                    if self.core.clock.now() >= lease_until - self.lease / 4:
                        # After a long wait (flood control): renew, and give this slot up.
                        lease_until = await self._renew(queue, in_flight.values())
                        continue
                    queue.remove(ready)
                    self._chat_free[ready.identity_id] = time.monotonic() + self.per_chat_interval
                    in_flight[asyncio.create_task(self._attempt(ready, stats))] = ready
                    continue
                waits = [
                    self._chat_free.get(row.identity_id, 0.0) - now
                    for row in queue
                    if row.identity_id not in busy
                ]
                timeout = min(waits) if waits and len(in_flight) < self.concurrency else None
                if in_flight:
                    done, _ = await asyncio.wait(
                        in_flight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        row = in_flight.pop(task)
                        if not task.cancelled() and task.exception() is not None:
                            log.error(
                                "outbox row %s: recording the attempt failed; it is retried "
                                "when its lease runs out",
                                row.id,
                                exc_info=task.exception(),
                            )
                elif timeout is not None:
                    await self._sleep(timeout)
        except asyncio.CancelledError:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise
        except Exception:
            # Let the sends already under way finish and be recorded before giving up.
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise

    async def _renew(self, queue: list[_Claimed], in_flight: Any) -> datetime:
        """Extend the lease of the rows still held; drop queued rows no longer ours."""
        now = self.core.clock.now()
        ids = [row.id for row in queue] + [row.id for row in in_flight]
        async with self.core.db.transaction() as session:
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
        async with self.core.db.transaction() as session:
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
            return await self.transport.deliver(chat_id, row.text, row.buttons)
        except Exception as exc:
            # A bug in a transport must not strand the row in `sending`.
            log.exception("outbox row %s: the transport raised", row.id)
            return Delivery(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")

    async def _attempt(self, row: _Claimed, stats: SendStats) -> None:
        chat_id = row.chat_id
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

    # -- recording ----------------------------------------------------------------------------

    async def _record(self, row: _Claimed, delivery: Delivery, stats: SendStats) -> None:
        now = self.core.clock.now()
        outcome = delivery.outcome
        values: dict[str, Any]
        async with self.core.db.transaction() as session:
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
            if outcome is Outcome.SENT:
                values = {
                    "status": OutboxStatus.SENT,
                    "sent_at": now,
                    "external_message_id": delivery.message_id,
                    "last_error": None,
                }
                counter = "sent"
            elif outcome is Outcome.RETRY_AFTER:
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

    def _lost(self, row: _Claimed) -> None:
        log.warning(
            "outbox row %s: its lease ran out during the attempt and another sender took it",
            row.id,
        )

    async def _record_migration(self, row: _Claimed, old: str, new: str) -> None:
        channel = self.transport.channel
        async with self.core.db.transaction() as session:
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
