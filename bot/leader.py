"""Which process runs the scheduler: one at a time, and another takes over when it dies.

Every bot process may run the outbox sender, but only the leader runs the calendar (reminders,
digests, draft expiry). The ledger already makes a second scheduler harmless (nothing is queued
twice); one leader keeps the work, the log and the alerts in one place.

PostgreSQL: the leader holds a session advisory lock (`pg_try_advisory_lock`) on a connection of
its own, outside the pool. The server drops the lock when that session ends: at once when the
process dies or its connection breaks, and, for a host that vanished, when TCP keepalive gives
up (set short on that session below). Followers try to take the lock every
SCHEDULER_TAKEOVER_SECONDS, and the leader checks its session as often, so a dead leader is
replaced within about that long. The `leader_lease` row only shows who holds the lock.

SQLite (one host, normally one process): the `leader_lease` row is the lease. The leader renews
it every SCHEDULER_TAKEOVER_SECONDS; it runs out after three times that, and then another process
may take it, or at once when its holder was a process of this host that is gone (a restart after
a crash does not wait for the old lease).

Leases use the wall clock, not the core's injectable clock: they are about processes being alive,
and a clock that tests stand still would never let one run out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from bot.core import Core
from storage.db import create_engine
from storage.models import LeaderLease
from storage.upsert import insert_ignoring_conflicts

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"
# The advisory lock's key (64 bits, any value no other code in this database uses).
ADVISORY_KEYS = {SCHEDULER: 0x6B6F_7065_7261_7331}  # b"koperas1"
# On SQLite the lease lives this many check intervals: one missed renewal does not lose it.
LEASE_INTERVALS = 3
# The leader's own session: a vanished host's lock is released after about 30 s of silence.
_KEEPALIVES = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 4",
)


class Leadership:
    """One process's claim to a role (`scheduler`): `check()` often, `release()` at the end."""

    def __init__(
        self, core: Core, holder: str, *, name: str = SCHEDULER, interval: float | None = None
    ) -> None:
        self.core = core
        self.holder = holder[:100]
        self.name = name
        self.interval = interval or core.settings.scheduler_takeover_seconds
        self.is_leader = False
        self._announced = False  # whether the first "not leader" was logged
        self._released = False  # after release() nothing is taken again
        self._lock = asyncio.Lock()
        self._postgres = core.db.dialect == "postgresql"
        self._engine: AsyncEngine | None = None
        self._session: AsyncConnection | None = None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.interval * LEASE_INTERVALS)

    async def check(self) -> bool:
        """Become or stay the leader if possible; whether this process is the leader now.

        Never raises: a database error means not being the leader until the next check.
        """
        async with self._lock:
            if self._released:
                return False
            was = self.is_leader
            try:
                if self._postgres:
                    self.is_leader = await self._check_lock()
                else:
                    self.is_leader = await self._check_lease()
            except (SQLAlchemyError, OSError) as exc:
                self.is_leader = False
                await self._close_session()
                log.warning(
                    "Scheduler: %s could not check the leadership (%s: %s); trying again in %g s",
                    self.holder,
                    type(exc).__name__,
                    exc,
                    self.interval,
                )
            if self.is_leader and not was:
                log.info("Scheduler: %s is now the leader and runs the calendar", self.holder)
            elif was and not self.is_leader:
                log.warning("Scheduler: %s lost the leadership", self.holder)
            elif not self.is_leader and not self._announced:
                log.info(
                    "Scheduler: another process is the leader; %s checks every %g s",
                    self.holder,
                    self.interval,
                )
            self._announced = True
            return self.is_leader

    async def release(self) -> None:
        """Hand the leadership over at once (on a clean stop); nothing is taken after this."""
        async with self._lock:
            self._released = True
            was, self.is_leader = self.is_leader, False
            try:
                if was and self._session is not None:
                    key = ADVISORY_KEYS[self.name]
                    await self._session.execute(select(func.pg_advisory_unlock(key)))
                await self._close_session()
                if was:
                    await self._expire_row()
            except (SQLAlchemyError, OSError) as exc:
                # Closing the session released the lock anyway; the row is only a display.
                log.warning("Scheduler: releasing the leadership: %s", exc)
                await self._close_session()
            if was:
                log.info("Scheduler: %s stopped and is no longer the leader", self.holder)
            if self._engine is not None:
                await self._engine.dispose()
                self._engine = None

    # -- PostgreSQL -----------------------------------------------------------------------

    async def _check_lock(self) -> bool:
        if self.is_leader and self._session is not None:
            # The lock lives as long as the session: a session that answers still holds it.
            await self._session.execute(text("SELECT 1"))
            await self._write_row()
            return True
        session = await self._open_session()
        key = ADVISORY_KEYS[self.name]
        if not await session.scalar(select(func.pg_try_advisory_lock(key))):
            await self._close_session()
            return False
        await self._write_row()
        return True

    async def _open_session(self) -> AsyncConnection:
        if self._engine is None:
            # Outside the pool: a connection holding the lock must never be handed to other
            # work, and closing it must really end the session.
            self._engine = create_engine(self.core.db.url, poolclass=NullPool)
        connection = await self._engine.connect()
        try:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            for statement in _KEEPALIVES:
                try:
                    await connection.execute(text(statement))
                except SQLAlchemyError as exc:  # a platform without these: the lock still works
                    log.debug("Scheduler: %s: %s", statement, exc)
        except BaseException:
            await connection.close()
            raise
        self._session = connection
        return connection

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            await session.close()
        except (SQLAlchemyError, OSError) as exc:
            # Already broken: the server has ended the session (and dropped the lock) or will.
            log.debug("Scheduler: closing the lock session: %s", exc)

    # -- the lease row ----------------------------------------------------------------------

    async def _write_row(self) -> None:
        """PostgreSQL: show who holds the lock (a failure here does not cost the leadership)."""
        try:
            async with self.core.db.transaction() as session:
                if not await self._renew(session, force=True):
                    await self._insert(session)
        except SQLAlchemyError as exc:
            log.warning("Scheduler: could not record the leader in leader_lease: %s", exc)

    async def _check_lease(self) -> bool:
        async with self.core.db.transaction() as session:
            # The write first: on SQLite it takes the write lock before anything is read.
            if await self._renew(session, force=False) or await self._insert(session):
                return True
            holder = await session.scalar(
                select(LeaderLease.holder).where(LeaderLease.name == self.name)
            )
            if holder is not None and _gone(holder):
                # A crashed process on this host: no need to wait for its lease to run out.
                return await self._renew(session, force=False, replacing=holder)
            return False

    async def _renew(self, session: Any, *, force: bool, replacing: str | None = None) -> bool:
        now = datetime.now(UTC)
        condition = LeaderLease.name == self.name
        if replacing is not None:
            condition = condition & (LeaderLease.holder == replacing)
        elif not force:
            condition = condition & or_(
                LeaderLease.holder == self.holder, LeaderLease.expires_at < now
            )
        result = await session.execute(
            update(LeaderLease)
            .where(condition)
            .values(
                holder=self.holder,
                acquired_at=case(
                    (LeaderLease.holder == self.holder, LeaderLease.acquired_at), else_=now
                ),
                renewed_at=now,
                expires_at=now + self.lease,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)

    async def _insert(self, session: Any) -> bool:
        now = datetime.now(UTC)
        row = {
            "name": self.name,
            "holder": self.holder,
            "acquired_at": now,
            "renewed_at": now,
            "expires_at": now + self.lease,
        }
        return await insert_ignoring_conflicts(session, LeaderLease, [row], ["name"]) > 0

    async def _expire_row(self) -> None:
        now = datetime.now(UTC)
        async with self.core.db.transaction() as session:
            await session.execute(
                update(LeaderLease)
                .where(LeaderLease.name == self.name, LeaderLease.holder == self.holder)
                .values(expires_at=now, renewed_at=now)
                .execution_options(synchronize_session=False)
            )


def _gone(holder: str) -> bool:
    """Whether `holder` (host:pid:…, as bot/sender.py names processes) was a process of this
    host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
