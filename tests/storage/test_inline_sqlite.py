"""SQLite statements run in the event loop's thread, and waiting for another writer does not
hold the loop up (storage/db.py InlineSqlite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from storage.db import Database, InlineSqlite
from tests.storage.loop import HOLD, Ticker


async def test_statements_run_inline_and_never_wait_on_the_loop(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    try:
        async with db.transaction() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))
            connection = await session.connection()
            raw = await connection.get_raw_connection()
            assert isinstance(raw.driver_connection, InlineSqlite)
            assert (await session.execute(text("PRAGMA busy_timeout"))).scalar() == 0
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
    finally:
        await db.dispose()


async def test_a_writer_waits_for_another_in_a_thread(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
    first, second = Database(url), Database(url)
    holding = asyncio.Event()

    async def hold_the_write_lock() -> None:
        async with first.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            await asyncio.sleep(HOLD)

    async def write_meanwhile() -> None:
        await holding.wait()
        async with second.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES (2)"))

    try:
        async with first.transaction() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))
        async with Ticker() as loop:
            await asyncio.gather(hold_the_write_lock(), write_meanwhile())
        async with second.sessions() as session:
            rows = (await session.execute(text("SELECT n FROM t ORDER BY n"))).scalars().all()
            # Back to failing fast after the wait, so the next lock wait goes to a thread too.
            assert (await session.execute(text("PRAGMA busy_timeout"))).scalar() == 0
    finally:
        await first.dispose()
        await second.dispose()
    assert rows == [1, 2]
    # The loop kept running while the second writer waited (blocked, it would have stalled for
    # the whole hold).
    assert loop.longest_stall < HOLD / 2, loop.longest_stall
