"""SQLite's hot path (storage/direct.py): the statements of every update on the driver's own
connection give what the engine gives, wait for another writer off the event loop, and fail
with SQLAlchemy's errors; a step that finds its draft changed meanwhile keeps nothing."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from bot.core import Core
from bot.identity import _IDENTIFY, identify, lookup
from bot.laporan import MONTHLY_REPORT
from bot.officers import add_officer
from bot.reports import ReportService
from storage.db import Database
from storage.direct import Direct
from storage.models import ChatIdentity, Person, ReportDraft
from tests.conftest import Chats
from tests.handlers.test_report import linked
from tests.storage.loop import HOLD, Ticker

# The direct path is SQLite's: on PostgreSQL every statement runs on the engine (the other
# tests cover that path).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _sqlite(core: Core) -> Direct:
    assert core.db.direct is not None
    return core.db.direct


async def test_a_database_has_the_direct_path_only_for_a_sqlite_file(
    tmp_path: Path, sqlite_template: Path, database_url: str
) -> None:
    db = Database(database_url)
    try:
        assert (db.direct is not None) is database_url.startswith("sqlite")
    finally:
        await db.dispose()
    # An in-memory database would be another database on another connection; aiosqlite's
    # own thread (sqlite_inline=False) keeps the engine's way.
    for url, kwargs in (
        ("sqlite+aiosqlite:///:memory:", {}),
        (f"sqlite+aiosqlite:///{tmp_path / 'threaded.db'}", {"sqlite_inline": False}),
    ):
        db = Database(url, **kwargs)
        assert db.direct is None
        await db.dispose()


@sqlite_only
async def test_the_actor_is_the_same_as_the_engine_reads_it(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    core = registry_loaded
    direct = _sqlite(core)
    siti = await linked(core, chats)
    await add_officer(
        core,
        telegram_id=str(siti.user.user_id),
        nama="Siti",
        kecamatan="Curug",
        can_broadcast=True,
        actor="t",
    )
    external_id = str(siti.user.user_id)
    async with core.db.engine.connect() as connection:
        expected = await identify(connection, "telegram", external_id)
        row = (
            await connection.execute(_IDENTIFY, {"channel": "telegram", "external_id": external_id})
        ).one()
    assert expected.membership is not None
    assert expected.officer is not None
    assert await lookup(core.db, "telegram", external_id) == expected
    # Every column with its type: aware datetimes, enums, booleans, text.
    assert await direct.first(
        _IDENTIFY, {"channel": "telegram", "external_id": external_id}
    ) == tuple(row)
    assert await lookup(core.db, "telegram", "nobody") == type(expected)("telegram", "nobody")


@sqlite_only
async def test_last_seen_and_reachable_again_are_written(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    core = registry_loaded
    _sqlite(core)
    siti = await linked(core, chats)
    external_id = str(siti.user.user_id)
    gone = datetime(2026, 11, 1, tzinfo=UTC)
    async with core.db.transaction() as session:
        await session.execute(
            update(ChatIdentity)
            .where(ChatIdentity.external_id == external_id)
            .values(unreachable_at=gone, unreachable_reason="blocked", last_seen_at=gone)
        )
    now = core.clock.now()
    await lookup(core.db, "telegram", external_id, now=now)
    async with core.db.sessions() as session:
        identity = await session.scalar(
            select(ChatIdentity).where(ChatIdentity.external_id == external_id)
        )
    assert identity is not None
    assert (identity.unreachable_at, identity.unreachable_reason) == (None, None)
    assert identity.last_seen_at == now


@sqlite_only
async def test_json_and_dates_written_directly_read_back_through_the_orm(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    core = registry_loaded
    direct = _sqlite(core)
    siti = await linked(core, chats)
    await siti.send("/lapor")
    await siti.press("Beroperasi rutin")  # a step: written by the direct connection
    async with core.db.sessions() as session:
        draft = await session.scalar(select(ReportDraft))
    assert draft is not None
    assert draft.answers == {"status_operasional": "rutin"}
    assert draft.current_field == "unit_usaha"
    assert draft.pending == {"selected": []}
    assert draft.version == 3  # inserted, first question asked, answered
    assert draft.updated_at == core.clock.now()
    assert draft.updated_at.tzinfo is not None
    changed = await direct.execute(
        update(ReportDraft)
        .where(ReportDraft.id == bindparam("draft_id"))
        .values(answers=bindparam("answers", type_=ReportDraft.__table__.c.answers.type)),
        {"draft_id": draft.id, "answers": {"angka": [1, 2], "teks": "Rp1.500.000"}},
    )
    assert changed == 1
    async with core.db.sessions() as session:
        again = await session.get(ReportDraft, draft.id)
    assert again is not None
    assert again.answers == {"angka": [1, 2], "teks": "Rp1.500.000"}


@sqlite_only
async def test_a_step_that_finds_its_draft_changed_keeps_nothing(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    """Another process answered the same draft between this step's read and its write (on
    PostgreSQL the step locks the row instead, so this cannot happen there)."""
    core = registry_loaded
    _sqlite(core)
    siti = await linked(core, chats)
    await siti.send("/lapor")
    actor = await lookup(core.db, "telegram", str(siti.user.user_id))
    service = ReportService(core, MONTHLY_REPORT)

    async def meanwhile(draft: Any, _ctx: Any) -> list[Any]:
        async with core.db.transaction() as session:
            await session.execute(
                update(ReportDraft)
                .where(ReportDraft.id == draft.id)
                .values(answers={"status_operasional": "belum"}, version=ReportDraft.version + 1)
            )
        draft.answers = {"status_operasional": "rutin"}
        return []

    replies = await service._step(actor, None, meanwhile)
    assert replies is not None
    assert [r.text for r in replies] == [core.messages.render("laporan_sibuk")]
    async with core.db.sessions() as session:
        draft = await session.scalar(select(ReportDraft))
    assert draft is not None
    assert draft.answers == {"status_operasional": "belum"}


async def test_a_write_waits_for_another_writer_off_the_loop(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "busy.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite+aiosqlite:///{path}"
    db = Database(url)
    direct = db.direct
    assert direct is not None
    holding = asyncio.Event()

    async def hold_the_write_lock() -> None:
        async with db.transaction() as session:
            await session.execute(
                text("INSERT INTO person (nama, created_at) VALUES ('A', '2026-01-01')")
            )
            holding.set()
            await asyncio.sleep(HOLD)

    async def write_meanwhile() -> int:
        await holding.wait()
        return await direct.execute(
            update(Person).where(Person.nama == bindparam("old")).values(nama=bindparam("new")),
            {"old": "A", "new": "B"},
        )

    async def read_meanwhile() -> Any:
        # While the write waits in its thread, a read on the same connection waits its turn
        # without holding up the loop.
        await holding.wait()
        await asyncio.sleep(0.05)
        return await direct.first(select(Person.nama), {})

    try:
        async with Ticker() as loop:
            _, changed, read = await asyncio.gather(
                hold_the_write_lock(), write_meanwhile(), read_meanwhile()
            )
        assert changed == 1  # it waited for the INSERT's commit, then saw the row
        assert read == ("B",)  # after the write, not beside it
        # The loop ran while the direct write and the read waited (blocked, it would have
        # stalled for the whole hold).
        assert loop.longest_stall < HOLD / 2, loop.longest_stall
        assert await direct.first(select(Person.nama), {}) == ("B",)
        assert (await direct.first(text("PRAGMA busy_timeout"), {})) == (0,)
    finally:
        await db.dispose()


async def test_errors_are_sqlalchemys(tmp_path: Path, sqlite_template: Path) -> None:
    path = tmp_path / "errors.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    assert db.direct is not None
    try:
        with pytest.raises(IntegrityError):  # person.nama is NOT NULL
            await db.direct.execute(
                text("INSERT INTO person (nama, created_at) VALUES (NULL, '2026-01-01')"), {}
            )
    finally:
        await db.dispose()
    away = Direct(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(OperationalError):
        await away.first(select(Person.id), {})
    away.close()
