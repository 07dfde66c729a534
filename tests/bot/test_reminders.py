"""The monthly calendar run through a whole month with a controlled clock: who is told what, on
which day, never twice, within sending hours, and caught up once after downtime."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot import officers, onboarding, reminders
from bot.clock import FixedClock
from bot.config import Settings
from bot.core import Core
from bot.periods import Period
from handlers.local_api import LocalChat
from storage.models import LedgerEntry, OutboxMessage, OutboxStatus, Person
from tests.bot.test_cli import cli
from tests.conftest import WIB, Chats
from tests.fake_bot_api import TOKEN, FakeBotAPI
from tests.handlers.test_report import play_to_review

SUKAWANA_CURUG = "36.73.04.1007"
CIPARE = "36.73.01.1002"
NOVEMBER = Period(2026, 11)


def wib(day: int, hour: int = 9, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=WIB)


async def link(
    core: Core, chats: Chats, kode: str, name: str, role: str = "bendahara"
) -> LocalChat:
    invite = await onboarding.create_invite(core, koperasi_kode=kode, role=role, created_by="t")
    chat = chats.user(name, None)
    await chat.send(f"/start {invite.code}")
    return chat


async def officer(core: Core, chats: Chats, name: str, kecamatan: str | None) -> LocalChat:
    chat = chats.user(name, None)
    await officers.add_officer(
        core,
        telegram_id=str(chat.user.user_id),
        nama=name,
        kecamatan=kecamatan,
        can_broadcast=False,
        actor="t",
    )
    await chat.send("/start")
    return chat


@dataclass(frozen=True)
class Queued:
    nama: str
    kind: str
    day: int
    text: str
    buttons: Any


async def queued(core: Core) -> list[Queued]:
    async with core.db.sessions() as session:
        rows = await session.execute(
            select(OutboxMessage, Person.nama)
            .join(Person, Person.id == OutboxMessage.person_id)
            .order_by(OutboxMessage.id)
        )
        return [
            Queued(nama, m.kind, m.created_at.astimezone(WIB).day, m.text, m.buttons)
            for m, nama in rows.all()
        ]


async def run_hours(core: Core, clock: FixedClock, start: datetime, end: datetime) -> None:
    """Tick every hour from `start` to `end`, as a scheduler that wakes hourly would."""
    moment = start
    while moment <= end:
        clock.set(moment)
        await reminders.tick(core)
        moment += timedelta(hours=1)


@pytest.fixture
async def month(registry_loaded: Core, chats: Chats) -> dict[str, LocalChat]:
    """Two board members and a supervisor in Sukawana (Curug), one member in Cipare (Serang),
    a city-wide officer and a Curug officer."""
    core = registry_loaded
    return {
        "siti": await link(core, chats, SUKAWANA_CURUG, "Siti"),
        "budi": await link(core, chats, SUKAWANA_CURUG, "Budi", role="ketua"),
        "pengawas": await link(core, chats, SUKAWANA_CURUG, "Pak Awas", role="pengawas"),
        "ani": await link(core, chats, CIPARE, "Ani"),
        "kota": await officer(core, chats, "Oki", None),
        "curug": await officer(core, chats, "Cici", "Curug"),
    }


async def test_a_whole_month(
    registry_loaded: Core, clock: FixedClock, month: dict[str, LocalChat]
) -> None:
    core = registry_loaded
    # 1 .. 3 Dec: the report opens on 1 December at 09.00 for everyone linked.
    await run_hours(core, clock, wib(1, 9), wib(3, 8))
    # Ani reports for Cipare on 3 December.
    clock.set(wib(3, 10))
    await play_to_review(month["ani"])
    await month["ani"].press("Kirim")
    await run_hours(core, clock, wib(3, 11), wib(11, 9))
    # Siti reports on 11 December, after the deadline: late.
    clock.set(wib(11, 10))
    await play_to_review(month["siti"])
    await month["siti"].press("Kirim")
    await run_hours(core, clock, wib(11, 11), wib(31, 23))

    sent = await queued(core)
    plan = Counter((q.nama, q.kind, q.day) for q in sent)
    assert plan == Counter(
        {
            ("Siti", "open", 1): 1,
            ("Budi", "open", 1): 1,
            ("Ani", "open", 1): 1,
            ("Siti", "reminder_1", 5): 1,
            ("Budi", "reminder_1", 5): 1,
            ("Siti", "reminder_2", 8): 1,
            ("Budi", "reminder_2", 8): 1,
            ("Oki", "digest", 11): 1,
            ("Cici", "digest", 11): 1,
        }
    )
    texts = {(q.nama, q.kind): q for q in sent}
    opening = texts[("Siti", "open")]
    assert "Selamat pagi, Bapak/Ibu <b>Siti</b>." in opening.text
    assert "Laporan bulan <b>November 2026</b> untuk Koperasi Kelurahan Merah Putih Sukawana" in (
        opening.text
    )
    assert "Kamis, 10 Desember 2026" in opening.text
    assert opening.buttons == [[["Isi laporan November 2026", "lapor:2026-11"]]]
    first = texts[("Siti", "reminder_1")].text
    last = texts[("Siti", "reminder_2")].text
    assert "mengingatkan dengan hormat" in first
    assert "<b>hari ini</b>" in last
    assert "dicatat terlambat" in last
    assert "hari ini" not in first

    city = texts[("Oki", "digest")].text
    assert "Rekap seluruh kota, 67 koperasi" in city
    assert "✅ Tepat waktu: <b>1</b>" in city
    assert "🕓 Terlambat: <b>0</b>" in city
    assert "❌ Belum melapor: <b>66</b>" in city
    assert "<i>Kecamatan Curug</i>" in city
    assert "<i>Kecamatan Serang</i>" in city
    assert "– Sukawana\n" in city  # linked: no remark
    assert "Cipare" not in city  # reported
    assert "(belum terhubung)" in city
    curug = texts[("Cici", "digest")].text
    assert "Rekap Kecamatan Curug" in curug
    assert "<i>Kecamatan Serang</i>" not in curug

    async with core.db.sessions() as session:
        ledger = (await session.scalars(select(LedgerEntry))).all()
    assert Counter(e.kind for e in ledger) == {
        "open": 2,
        "reminder_1": 1,
        "reminder_2": 1,
        "digest": 2,
    }


async def test_who_already_started_the_report_is_not_told_it_is_open(
    registry_loaded: Core, clock: FixedClock, month: dict[str, LocalChat]
) -> None:
    core = registry_loaded
    # Siti opens the November report at 07.00 on 1 December, before the 09.00 notice.
    clock.set(wib(1, 7))
    replies = await month["siti"].send("/lapor")
    assert "November 2026" in replies[0].text
    await run_hours(core, clock, wib(1, 8), wib(1, 10))
    told = Counter(q.nama for q in await queued(core) if q.kind == "open")
    assert told == Counter({"Budi": 1, "Ani": 1})
    # She is still reminded on the 5th: her draft is not a report.
    await run_hours(core, clock, wib(5, 8), wib(5, 10))
    assert ("Siti", "reminder_1") in {(q.nama, q.kind) for q in await queued(core)}


async def test_the_reminder_button_starts_that_months_report(
    registry_loaded: Core, clock: FixedClock, month: dict[str, LocalChat]
) -> None:
    clock.set(wib(5, 9))
    await reminders.tick(registry_loaded)
    chat = month["budi"]
    (reminder,) = [q for q in await queued(registry_loaded) if q.nama == "Budi"]
    label, action = reminder.buttons[0][0]
    # The button arrives as the outbox sends it; press it as Telegram would hand it back.
    message = chat.api._store(
        {
            "chat_id": chat.chat_id,
            "reply_markup": {"inline_keyboard": [[{"text": label, "callback_data": action}]]},
        },
        reminder.text,
        "text",
    )
    sent = chat.api.messages[(chat.chat_id, message["message_id"])]
    replies = await chat.press(label, sent)
    assert "kita isi laporan bulan <b>November 2026</b>" in replies[0].text


async def test_quiet_hours_move_notices_to_the_morning(
    registry_loaded: Core, clock: FixedClock, month: dict[str, LocalChat]
) -> None:
    core = registry_loaded
    core.settings = core.settings.model_copy(
        update={"report_notice_time": datetime.min.time().replace(hour=5)}
    )
    for hour in range(7):
        clock.set(wib(1, hour))
        result = await reminders.tick(core)
        assert result.outside_window
    assert await queued(core) == []
    clock.set(wib(1, 7))
    result = await reminders.tick(core)
    assert [n.notice.kind for n in result.notices] == ["open"]
    assert {q.nama for q in await queued(core)} == {"Siti", "Budi", "Ani"}
    # And nothing at 20.00 or later, even when something is due.
    clock.set(wib(5, 20, 30))
    assert (await reminders.tick(core)).outside_window
    assert [q.kind for q in await queued(core)].count("reminder_1") == 0
    clock.set(wib(6, 7))
    await reminders.tick(core)
    assert [q.kind for q in await queued(core)].count("reminder_1") == 3


async def test_a_restart_across_a_due_time_catches_up_exactly_once(
    registry_loaded: Core, settings: Settings, month: dict[str, LocalChat]
) -> None:
    # The bot runs until 4 December 18.00, then is down until 5 December 10.30.
    first = Core.create(settings, clock=FixedClock(wib(1, 9)))
    await reminders.tick(first)
    first.clock = FixedClock(wib(4, 18))
    await reminders.tick(first)
    await first.close()
    before = await queued(registry_loaded)

    restarted = Core.create(settings, clock=FixedClock(wib(5, 10, 30)))
    result = await reminders.tick(restarted)  # what start-up runs
    again = await reminders.tick(restarted)
    await restarted.close()

    assert [(n.notice.kind, n.targets, n.messages) for n in result.notices] == [
        ("reminder_1", 2, 3)
    ]
    assert [(n.notice.kind, n.targets, n.messages) for n in again.notices] == [("reminder_1", 0, 0)]
    after = await queued(registry_loaded)
    assert Counter(q.kind for q in after[len(before) :]) == {"reminder_1": 3}


async def test_downtime_past_a_whole_reminder_skips_it(
    registry_loaded: Core, clock: FixedClock, month: dict[str, LocalChat]
) -> None:
    # Down from 30 November to 9 December: the opening and the first reminder are stale.
    clock.set(wib(9, 8))
    await reminders.tick(registry_loaded)
    assert Counter(q.kind for q in await queued(registry_loaded)) == {"reminder_2": 3}


async def test_the_same_tick_twice_at_once_queues_each_message_once(
    registry_loaded: Core, settings: Settings, month: dict[str, LocalChat]
) -> None:
    # Two processes: two engines on the same database, ticking at the same moment.
    cores = [Core.create(settings, clock=FixedClock(wib(5, 9))) for _ in range(2)]
    try:
        results = await asyncio.gather(*(reminders.tick(c) for c in cores))
        await asyncio.gather(*(reminders.tick(c) for c in cores))
    finally:
        for core in cores:
            await core.close()
    assert sum(r.messages for r in results) == 3
    sent = await queued(registry_loaded)
    assert Counter(q.nama for q in sent) == {"Siti": 1, "Budi": 1, "Ani": 1}
    assert len({(q.nama, q.kind) for q in sent}) == len(sent)


async def test_a_report_cancels_reminders_still_waiting_to_be_sent(
    registry_loaded: Core, clock: FixedClock, month: dict[str, LocalChat]
) -> None:
    core = registry_loaded
    clock.set(wib(5, 9))
    await reminders.tick(core)
    clock.set(wib(5, 9, 5))
    await play_to_review(month["ani"])
    await month["ani"].press("Kirim")
    async with core.db.sessions() as session:
        rows = (await session.execute(select(OutboxMessage.kind, OutboxMessage.status))).all()
    statuses = Counter(status for _, status in rows)
    assert statuses == {OutboxStatus.PENDING: 2, OutboxStatus.CANCELLED: 1}


async def test_jadwal_shows_the_calendar_and_the_status(
    registry_loaded: Core, clock: FixedClock, month: dict[str, LocalChat], chats: Chats
) -> None:
    clock.set(wib(6, 10))
    await reminders.tick(registry_loaded)
    (reply,) = await month["curug"].send("/jadwal")
    assert "Jadwal laporan bulan <b>November 2026</b>" in reply.text
    assert "✓ Laporan dibuka: Selasa, 1 Desember 2026, pukul 09.00 WIB" in reply.text
    assert "✓ Pengingat ke-1 (hanya untuk yang belum melapor): Sabtu, 5 Desember 2026" in reply.text
    assert "• Pengingat ke-2" in reply.text
    assert "• Rekap tunggakan untuk petugas: Jumat, 11 Desember 2026" in reply.text
    assert "Batas waktu: <b>Kamis, 10 Desember 2026</b>, pukul 23.59 WIB" in reply.text
    assert "Kecamatan Curug (" in reply.text
    assert "0 tepat waktu" in reply.text

    (board,) = await month["siti"].send("/jadwal")
    assert "Rekap tunggakan" not in board.text
    assert "belum dikirim" in board.text

    (refused,) = await chats.user("Asing", None).send("/jadwal")
    assert "hanya untuk pengurus koperasi dan petugas" in refused.text


async def test_the_running_bot_catches_up_at_start_and_sends_through_the_outbox(
    app: Any, api: Any, clock: FixedClock, month: dict[str, LocalChat]
) -> None:
    """The real wiring: PTB's JobQueue (APScheduler) runs the start-up tick, the sender task
    delivers the reminders over the Bot API, and the next exact wake-up is armed."""
    from bot.app import CALENDAR_HOURLY, CALENDAR_NEXT, start_background, stop_background

    clock.set(wib(5, 10))
    calls_before = len(api.calls)
    await app.start()
    try:
        start_background(app)
        for _ in range(100):
            sent = [c for c in api.calls[calls_before:] if c.method == "sendMessage"]
            if len(sent) >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # nothing more arrives
        jobs = {job.name: job for job in app.job_queue.jobs()}
    finally:
        await app.stop()
        await stop_background(app)

    sent = [c for c in api.calls[calls_before:] if c.method == "sendMessage"]
    receivers = sorted(int(c.params["chat_id"]) for c in sent)
    expected = sorted(month[name].chat_id for name in ("siti", "budi", "ani"))
    assert receivers == expected
    assert all("belum kami terima" in c.params["text"] for c in sent)
    assert jobs[CALENDAR_NEXT].next_t == wib(8, 9)
    assert CALENDAR_HOURLY in jobs
    async with app.bot_data["core"].db.sessions() as session:
        statuses = (await session.scalars(select(OutboxMessage.status))).all()
    assert statuses == [OutboxStatus.SENT] * 3


async def test_operators_see_and_drive_the_calendar_from_the_command_line(
    cli_env: dict[str, str], tmp_path: Path, month: dict[str, LocalChat]
) -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return cli(*args, env=env or cli_env, cwd=tmp_path)

    shown = run("schedule", "--at", "2026-11-30T12:00")
    assert shown.returncode == 0, shown.stderr
    assert "Selasa, 1 Desember 2026 09.00 WIB  Laporan November 2026 dibuka" in shown.stdout
    assert "Sabtu, 5 Desember 2026 09.00 WIB  Pengingat ke-1 laporan November 2026" in shown.stdout
    assert "Jumat, 11 Desember 2026 09.00 WIB  Rekap tunggakan November 2026" in shown.stdout

    queued_run = run("tick", "--at", "2026-12-05T09:00", "--no-send")
    assert queued_run.returncode == 0, queued_run.stderr
    assert "Pengingat ke-1 laporan November 2026: 2 koperasi baru, 3 pesan diantrekan." in (
        queued_run.stdout
    )
    again = run("tick", "--at", "2026-12-05T09:10", "--no-send")
    assert "Pengingat ke-1 laporan November 2026: 0 koperasi baru, 0 pesan diantrekan." in (
        again.stdout
    )
    night = run("tick", "--at", "2026-12-05T22:00")
    assert "Di luar jam kirim" in night.stdout

    state = run("schedule", "--at", "2026-12-05T10:00")
    assert "sudah diputuskan untuk 2 koperasi" in state.stdout
    assert "Antrean pesan: 3 menunggu, 0 terkirim" in state.stdout

    with FakeBotAPI() as telegram:
        env = {**cli_env, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": telegram.base_url}
        sent = run("tick", "--at", "2026-12-08T09:00", env=env)
        assert sent.returncode == 0, sent.stderr
        assert "Pengingat ke-2 laporan November 2026: 2 koperasi baru, 3 pesan diantrekan." in (
            sent.stdout
        )
        assert "Terkirim 6, dicoba lagi nanti 0" in sent.stdout
        receivers = Counter(int(c.chat_id or 0) for c in telegram.sent)
    assert receivers == {month[name].chat_id: 2 for name in ("siti", "budi", "ani")}

    bad = run("tick", "--at", "besok pagi")
    assert bad.returncode == 2
    assert 'Waktu "besok pagi" tidak dapat dibaca' in bad.stderr
