"""/tangani played through process_update: a note Telegram delivers twice is stored once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bot import officers
from bot.clock import FixedClock
from bot.core import Core
from handlers.local_api import LocalChat, SentMessage
from storage.models import (
    AuditLog,
    ChatPrompt,
    Kelurahan,
    Koperasi,
    ObstacleAction,
    Report,
    ReportRevision,
)
from tests.bot.test_reminders import SUKAWANA_CURUG
from tests.conftest import Chats


def texts(messages: list[SentMessage]) -> str:
    return "\n---\n".join(m.text for m in messages)


async def reported_obstacle(core: Core, clock: FixedClock) -> None:
    """Sukawana (Curug) reported October with "Modal terbatas" as an obstacle."""
    now = clock.now()
    async with core.db.transaction() as session:
        koperasi_id = await session.scalar(
            select(Koperasi.id).join(Kelurahan).where(Kelurahan.kode == SUKAWANA_CURUG)
        )
        assert koperasi_id is not None
        report = Report(
            koperasi_id=koperasi_id,
            period="2026-10",
            current_revision=1,
            first_submitted_at=now,
            last_submitted_at=now,
        )
        session.add(report)
        await session.flush()
        session.add(
            ReportRevision(
                report_id=report.id,
                revision=1,
                answers={"kendala": ["MODAL"]},
                submitted_by_name="Siti",
                submitted_at=now,
            )
        )


async def officer(core: Core, chats: Chats) -> LocalChat:
    chat = chats.user("Cici", None)
    await officers.add_officer(
        core,
        telegram_id=str(chat.user.user_id),
        nama="Cici",
        kecamatan="Curug",
        can_broadcast=False,
        actor="t",
    )
    return chat


async def count(core: Core, model: Any, *where: Any) -> int:
    async with core.db.sessions() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int(await session.scalar(query) or 0)


async def test_a_note_delivered_twice_is_stored_once_and_answered_once(
    registry_loaded: Core, chats: Chats, clock: FixedClock
) -> None:
    core = registry_loaded
    await reported_obstacle(core, clock)
    cici = await officer(core, chats)
    await cici.send("/tangani sukawana")
    await cici.press("Modal terbatas")

    async def twice(text: str) -> str:
        update = cici.user.text_update(text)
        first = await cici.process(update)
        calls = len(cici.api.calls)
        assert await cici.process(update) == []  # Telegram delivered it again: silence
        assert len(cici.api.calls) == calls
        return texts(first)

    refused = await twice("ok")  # too short: asked again, once
    assert refused.count("Mohon ketik <b>catatan</b>") == 1
    assert "tercatat sedang ditangani" in await twice("Sudah diajukan ke program modal bergulir.")
    assert await count(core, ObstacleAction) == 1
    assert await count(core, AuditLog, AuditLog.action == "obstacle.handled") == 1

    # Afterwards /batal has no note to drop, and a new message is read as usual again.
    assert "tidak jadi disimpan" not in texts(await cici.send("/batal"))
    await cici.press("Modal terbatas", (await cici.send("/tangani sukawana"))[0])
    await twice("Dinas menjadwalkan pendampingan.")
    assert "belum memahami pesan" in texts(await cici.send("halo"))
    async with core.db.sessions() as session:
        notes = (await session.scalars(select(ObstacleAction.catatan))).all()
    assert sorted(notes) == [
        "Dinas menjadwalkan pendampingan.",
        "Sudah diajukan ke program modal bergulir.",
    ]
    assert await count(core, ChatPrompt) == 0
