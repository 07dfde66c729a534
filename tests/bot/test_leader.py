"""The scheduler's leader: one process at a time, handed over on a clean stop, taken over when
the leader's session dies (PostgreSQL) or its lease runs out (SQLite)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import select, text

from bot.core import Core
from bot.leader import Leadership
from storage.db import Database
from storage.models import LeaderLease

INTERVAL = 0.5


@pytest.fixture
async def other_core(core: Core) -> AsyncIterator[Callable[[], Core]]:
    """Cores with engines of their own, as other processes have."""
    made: list[Core] = []

    def make() -> Core:
        made.append(
            Core(core.settings, Database(core.settings.database_url), core.clock, core.messages)
        )
        return made[-1]

    yield make
    for other in made:
        await other.close()


async def holder(core: Core) -> str | None:
    async with core.db.sessions() as session:
        return await session.scalar(select(LeaderLease.holder))


async def test_one_leader_at_a_time_and_a_clean_stop_hands_over(
    core: Core, other_core: Callable[[], Core], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.leader")
    first = Leadership(core, "host:1:aaaaaa", interval=INTERVAL)
    second = Leadership(other_core(), "host:2:bbbbbb", interval=INTERVAL)
    try:
        assert await first.check()
        assert not await second.check()
        assert await first.check()  # staying the leader
        assert not await second.check()
        assert await holder(core) == "host:1:aaaaaa"

        await first.release()
        assert not first.is_leader
        assert not await first.check()  # released for good
        assert await second.check()
        assert await holder(core) == "host:2:bbbbbb"
    finally:
        await first.release()
        await second.release()
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.leader"]
    assert lines == [
        "Scheduler: host:1:aaaaaa is now the leader and runs the calendar",
        f"Scheduler: another process is the leader; host:2:bbbbbb checks every {INTERVAL:g} s",
        "Scheduler: host:1:aaaaaa stopped and is no longer the leader",
        "Scheduler: host:2:bbbbbb is now the leader and runs the calendar",
        "Scheduler: host:2:bbbbbb stopped and is no longer the leader",
    ]


async def test_a_dead_leader_is_taken_over(
    core: Core, other_core: Callable[[], Core], caplog: pytest.LogCaptureFixture
) -> None:
    first = Leadership(core, "host:1:aaaaaa", interval=INTERVAL)
    second = Leadership(other_core(), "host:2:bbbbbb", interval=INTERVAL)
    try:
        assert await first.check()
        assert not await second.check()
        if core.db.dialect == "postgresql":
            # The process dies: the server ends its session, and the lock with it. The
            # timeout makes the server wait until that backend is gone (it only signals it
            # otherwise, and the lock may still be held for a moment).
            session = first._session
            assert session is not None
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
            async with core.db.transaction() as admin:
                ended = await admin.scalar(
                    text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}
                )
            assert ended
            assert await second.check()
        else:
            # The process stops renewing: the lease runs out after three intervals.
            assert not await second.check()
            await asyncio.sleep(INTERVAL * 3 + 0.1)
            assert await second.check()
        assert await holder(core) == "host:2:bbbbbb"
        # The old leader notices at its next check and steps down.
        caplog.set_level(logging.INFO, logger="bot.leader")
        assert not await first.check()
        assert "Scheduler: host:1:aaaaaa lost the leadership" in caplog.messages
        assert await second.check()
    finally:
        await first.release()
        await second.release()


async def test_on_sqlite_a_crashed_holder_of_this_host_is_replaced_at_once(
    core: Core, other_core: Callable[[], Core]
) -> None:
    if core.db.dialect != "sqlite":
        pytest.skip("on PostgreSQL the lock goes with the crashed process's session")
    finished = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await finished.wait()
    here = socket.gethostname()
    crashed = Leadership(core, f"{here}:{finished.pid}:dead00", interval=60)
    assert await crashed.check()  # a lease for three minutes, never released
    successor = Leadership(other_core(), f"{here}:{os.getpid()}:alive0", interval=60)
    bystander = Leadership(other_core(), f"{here}:{os.getpid()}:alive1", interval=60)
    try:
        assert await successor.check()
        assert not await bystander.check()  # the successor runs: its lease holds
        assert await holder(core) == f"{here}:{os.getpid()}:alive0"
    finally:
        await successor.release()
        await bystander.release()
