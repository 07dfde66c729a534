"""When things go wrong: unexpected errors get an incident id (log, person, ops alert once per
type and window), a database that is briefly away gets "coba lagi sebentar lagi" with nothing
half-written and no restart needed, and a person sending too fast is answered once, then
ignored until they slow down."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from telegram.error import Forbidden

from bot import officers
from bot.app import OPS_ALERTS, build_application, send_due_with
from bot.cli import main as cli_main
from bot.clock import FixedClock
from bot.config import Settings
from bot.core import Core
from bot.flood import FloodGate, Verdict
from bot.identity import Actor
from bot.ops import (
    ALERT_KIND,
    Incident,
    OpsAlerts,
    database_unavailable,
    error_type,
    new_incident_id,
)
from bot.reports import ReportService
from handlers.local_api import LocalBotAPI, LocalChat, SentMessage
from storage.direct import Direct
from storage.models import AuditLog, OutboxMessage, Report, ReportDraft, ReportRevision
from tests.bot.test_reminders import link
from tests.conftest import WIB, Chats
from tests.handlers.test_report import draft_of, play_to_review, texts

SUKAWANA_CURUG = "36.73.04.1007"
INCIDENT = re.compile(r"Kode kejadian: <code>([0-9a-f]{8})</code>")


class ExplodingReports(ReportService):
    """A report service with a bug: /lapor and the report's buttons raise."""

    async def start(self, actor: Actor, period_text: str | None) -> Any:
        raise RuntimeError("boom")

    async def on_action(self, actor: Actor, draft_id: int, action: str) -> Any:
        raise KeyError(action)


async def ops_officer(core: Core, chats: Chats, name: str = "Opi") -> LocalChat:
    chat = chats.user(name, None)
    await officers.add_officer(
        core,
        telegram_id=str(chat.user.user_id),
        nama=name,
        kecamatan=None,
        can_broadcast=False,
        ops=True,
        actor="t",
    )
    return chat


async def alerts(core: Core) -> list[OutboxMessage]:
    async with core.db.sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == ALERT_KIND).order_by(OutboxMessage.id)
        )
        return list(rows.all())


async def count(core: Core, model: Any) -> int:
    async with core.db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def incident_of(messages: list[SentMessage]) -> str:
    found = INCIDENT.search(texts(messages))
    assert found, texts(messages)
    return found.group(1)


# Unexpected errors ----------------------------------------------------------------------------


async def test_a_bug_is_logged_told_with_its_incident_id_and_alerted_once_per_window(
    registry_loaded: Core,
    app: Any,
    chats: Chats,
    api: LocalBotAPI,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = registry_loaded
    opi = await ops_officer(core, chats)
    await officers.add_officer(
        core, telegram_id="77", nama="Tono", kecamatan=None, can_broadcast=True, actor="t"
    )
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")
    app.bot_data["reports"] = ExplodingReports(core)
    clock.set(datetime(2026, 11, 27, 22, 30, tzinfo=WIB))  # outside the sending window

    with caplog.at_level(logging.INFO, logger="bot.app"):
        first = await siti.send("/lapor")
        second = await siti.send("/lapor Oktober")

    (apology,) = first
    assert apology.text.startswith("Mohon maaf, terjadi gangguan saat memproses pesan Bapak/Ibu.")
    one, two = incident_of(first), incident_of(second)
    assert one != two
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 2
    assert one in logged[0].getMessage()
    assert '"text": "/lapor"' in logged[0].getMessage()  # the update is in the log line
    assert logged[0].exc_info is not None
    assert logged[0].exc_info[0] is RuntimeError
    assert two in logged[1].getMessage()

    # Two errors of one type within ten minutes: one alert, to the ops officer only.
    (alert,) = await alerts(core)
    assert alert.quiet_hours is False
    assert one in alert.text
    assert "Kesalahan tak terduga: <code>RuntimeError</code>" in alert.text
    assert "Saat menangani: perintah /lapor" in alert.text
    assert "boom" not in alert.text
    # Not bound to the sending window: it goes out at 22.30.
    await send_due_with(core, app.bot)
    delivered = [
        c for c in api.calls if c.method == "sendMessage" and c.params["chat_id"] == opi.chat_id
    ]
    assert len(delivered) == 1
    assert one in delivered[0].params["text"]

    # Another type is alerted on its own; the same type again after the window too.
    review = await siti.process(siti.user.callback_update(apology, "r:1:send"))
    assert "Kode kejadian" in texts(review)
    assert len(await alerts(core)) == 2
    assert "Saat menangani: tombol r:" in (await alerts(core))[1].text
    clock.set(datetime(2026, 11, 27, 22, 40, tzinfo=WIB))
    await siti.send("/lapor")
    assert len(await alerts(core)) == 3


async def test_a_failing_button_stops_its_spinner_and_apologises(
    registry_loaded: Core, app: Any, chats: Chats, api: LocalBotAPI
) -> None:
    core = registry_loaded
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")
    question = (await siti.send("/lapor"))[-1]
    app.bot_data["reports"] = ExplodingReports(core)
    start = len(api.calls)
    told = await siti.press("Beroperasi rutin", question)
    assert [c.method for c in api.calls[start:]] == ["answerCallbackQuery", "sendMessage"]
    assert incident_of(told)
    # Without an ops officer nobody is alerted, and nothing else was written.
    assert await alerts(core) == []
    draft = await draft_of(core, siti)
    assert draft is not None
    assert draft.answers == {}


async def test_a_person_who_blocked_the_bot_is_not_apologised_to_and_nobody_is_alerted(
    registry_loaded: Core, app: Any, chats: Chats, api: LocalBotAPI
) -> None:
    core = registry_loaded
    await ops_officer(core, chats)
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")

    class Blocked(ReportService):
        async def start(self, actor: Actor, period_text: str | None) -> Any:
            raise Forbidden("Forbidden: bot was blocked by the user")

    app.bot_data["reports"] = Blocked(core)
    assert await siti.send("/lapor") == []
    assert await alerts(core) == []


async def test_job_errors_alert_ops_without_an_update(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    core = registry_loaded
    await ops_officer(core, chats)
    await app.process_error(update=None, error=ValueError("a job failed"))
    (alert,) = await alerts(core)
    assert "<code>ValueError</code>" in alert.text
    assert "pembaruan lain" in alert.text


async def test_alerts_are_deduplicated_across_processes_by_the_outbox_key(
    registry_loaded: Core, chats: Chats, clock: FixedClock
) -> None:
    core = registry_loaded
    await ops_officer(core, chats, "Opi")
    await ops_officer(core, chats, "Oni")
    incident = Incident(new_incident_id(), "RuntimeError", False, "message")
    # Two processes, each with its own memory: the dedupe key still lets one alert per chat.
    assert await OpsAlerts(core).alert(incident) == 2
    assert await OpsAlerts(core).alert(incident) == 0
    clock.set(clock.now() + timedelta(minutes=9, seconds=59))
    assert await OpsAlerts(core).alert(incident) == 0
    clock.set(clock.now() + timedelta(seconds=1))
    assert await OpsAlerts(core).alert(incident) == 2
    assert len(await alerts(core)) == 4


def test_incident_ids_and_error_classes() -> None:
    assert re.fullmatch(r"[0-9a-f]{8}", new_incident_id())
    assert error_type(RuntimeError()) == "RuntimeError"
    assert error_type(OperationalError("SELECT 1", {}, OSError())) == (
        "sqlalchemy.exc.OperationalError"
    )
    assert database_unavailable(OperationalError("SELECT 1", {}, OSError()))
    assert database_unavailable(ConnectionRefusedError())
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = TimeoutError()
    assert database_unavailable(wrapped)
    assert not database_unavailable(RuntimeError())
    assert not database_unavailable(KeyError("x"))


# The database briefly away ------------------------------------------------------------------


@asynccontextmanager
async def database_away(core: Core, tmp_path: Path) -> AsyncIterator[None]:
    """Every new session and connection of the core goes to a database that cannot be reached
    (SQLite: a file in a directory that does not exist; PostgreSQL: a port nobody listens on)."""
    if core.db.dialect == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'koperasi.db'}"
    else:
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/koperasi"
    engine = create_async_engine(url)
    saved = core.db.engine, core.db.sessions, core.db.direct
    core.db.engine = engine
    core.db.sessions = async_sessionmaker(engine, expire_on_commit=False)
    # SQLite's hot path (storage.direct) has a connection of its own.
    core.db.direct = Direct(url) if core.db.direct is not None else None
    try:
        yield
    finally:
        if core.db.direct is not None:
            core.db.direct.close()
        core.db.engine, core.db.sessions, core.db.direct = saved
        await engine.dispose()


async def test_an_unreachable_database_asks_to_try_again_and_the_next_update_works(
    registry_loaded: Core,
    app: Any,
    chats: Chats,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = registry_loaded
    await ops_officer(core, chats)
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")
    await siti.send("/lapor")
    await siti.press("Beroperasi rutin")
    await siti.press("Gerai sembako")
    await siti.press("Selesai")

    with caplog.at_level(logging.WARNING, logger="bot"):
        async with database_away(core, tmp_path):
            told = await siti.send("120")
    (message,) = told
    assert "sistem sedang tidak dapat menyimpan data untuk sementara" in message.text
    assert "Silakan coba lagi sebentar lagi." in message.text
    incident = incident_of(told)
    warned = [r for r in caplog.records if incident in r.getMessage()]
    assert warned[0].levelname == "WARNING"
    assert "database unavailable" in warned[0].getMessage()
    # The alert could not be written either (the outbox is in the database): logged, not raised.
    assert any("could not queue the ops alert" in r.getMessage() for r in warned)

    # Back again without a restart: the same answer is taken, the draft was not touched.
    draft = await draft_of(core, siti)
    assert draft is not None
    assert "jumlah_anggota" not in draft.answers
    answered = await siti.send("120")
    assert "pertanyaan 4 dari" in texts(answered)
    draft = await draft_of(core, siti)
    assert draft is not None
    assert draft.answers["jumlah_anggota"] == 120


async def test_a_connection_lost_at_commit_leaves_nothing_half_written(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    """The submission writes the report, its revision and the audit entry, cancels reminders
    and deletes the draft in one transaction: when its commit fails, none of it happened."""
    core = registry_loaded
    await ops_officer(core, chats)
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")
    await play_to_review(siti)

    armed = [True]

    def lose_connection_at_commit(_connection: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise OperationalError("COMMIT", {}, ConnectionResetError("connection reset by peer"))

    sync_engine = core.db.engine.sync_engine
    event.listen(sync_engine, "commit", lose_connection_at_commit)
    try:
        told = await siti.press("Kirim")
    finally:
        event.remove(sync_engine, "commit", lose_connection_at_commit)
    assert "coba lagi sebentar lagi" in texts(told)
    assert await count(core, Report) == 0
    assert await count(core, ReportRevision) == 0
    assert await count(core, ReportDraft) == 1
    async with core.db.sessions() as session:
        actions = (await session.scalars(select(AuditLog.action))).all()
    assert "report.submitted" not in actions
    (alert,) = await alerts(core)
    assert "Basis data tidak dapat dihubungi (sqlalchemy.exc.OperationalError)" in alert.text

    receipt = await siti.press("Kirim")
    assert "sudah kami terima" in texts(receipt)
    async with core.db.sessions() as session:
        report = await session.scalar(select(Report))
        assert report is not None
        assert report.current_revision == 1
    assert await count(core, ReportRevision) == 1
    assert await count(core, ReportDraft) == 0


async def test_after_a_postgres_restart_the_next_update_is_answered_normally(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    core = registry_loaded
    if core.db.dialect != "postgresql":
        pytest.skip("server connections are a PostgreSQL matter")
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")
    await siti.send("/lapor")
    # What a server restart does to the pool: every connection it holds is cut (and gone
    # before the next update: with a timeout the server waits for each backend to end).
    admin = create_async_engine(core.db.url)
    async with admin.connect() as connection:
        cut = await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        assert cut.all(), "the bot held at least one connection"
    await admin.dispose()

    # The pool pings a connection before handing it out, finds it dead and opens a new one:
    # the person notices nothing.
    first = await siti.press("Beroperasi rutin")
    assert "coba lagi" not in texts(first)
    assert "<b>Status usaha</b>: Beroperasi rutin" in texts(first)
    draft = await draft_of(core, siti)
    assert draft is not None
    assert draft.answers["status_operasional"] == "rutin"


# Flood control --------------------------------------------------------------------------------


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_warns_once_then_drops_until_the_pace_drops() -> None:
    ticks = Ticks()
    gate = FloodGate(limit=3, window_seconds=10, clock=ticks)
    seen = []
    for _ in range(6):
        seen.append(gate.check("siti"))
        ticks.now += 1
    assert seen == [Verdict.ALLOW] * 3 + [Verdict.WARN, Verdict.DROP, Verdict.DROP]
    assert gate.check("budi") is Verdict.ALLOW  # counted per person
    # Still hammering at one per second: still dropped (dropped updates count too).
    ticks.now += 1
    assert gate.check("siti") is Verdict.DROP
    # A pause of a window: welcome again, and warned again if it starts over.
    ticks.now += 10
    assert [gate.check("siti") for _ in range(5)] == [Verdict.ALLOW] * 3 + [
        Verdict.WARN,
        Verdict.DROP,
    ]
    with pytest.raises(ValueError, match="positive"):
        FloodGate(limit=0)


async def test_a_person_sending_too_fast_is_told_once_and_the_rest_is_dropped(
    registry_loaded: Core, app: Any, chats: Chats, api: LocalBotAPI
) -> None:
    core = registry_loaded
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")
    budi = await link(core, chats, SUKAWANA_CURUG, "Budi", role="ketua")
    ticks = Ticks()
    app.bot_data["flood"] = FloodGate(limit=20, window_seconds=10, clock=ticks)

    for _ in range(20):
        answered = await siti.send("halo")
        assert answered, "within the limit everything is answered"
        ticks.now += 0.1
    (told,) = await siti.send("halo")
    assert told.text.startswith("Mohon maaf, pesan Bapak/Ibu terlalu cepat")
    assert "tunggu 10 detik" in told.text
    start = len(api.calls)
    assert await siti.send("/lapor") == []
    message = siti.last_message()
    assert message is not None
    assert await siti.process(siti.user.callback_update(message, "lapor:2026-10")) == []
    assert api.calls[start:] == []
    assert await count(core, ReportDraft) == 0  # dropped, not processed
    # Someone else is not held up.
    assert await budi.send("halo")

    ticks.now += 10
    started = await siti.send("/lapor")
    assert "Oktober 2026" in texts(started)
    assert await count(core, ReportDraft) == 1


async def test_flood_control_is_on_when_talking_to_telegram(
    registry_loaded: Core, settings: Settings, clock: FixedClock
) -> None:
    assert "flood" not in build_application(registry_loaded, request=LocalBotAPI()).bot_data
    token: Any = "7000000001:test"  # pydantic reads the string into a SecretStr
    with_token = Settings(  # type: ignore[call-arg]
        database_url=settings.database_url, telegram_bot_token=token, _env_file=None
    )
    core = Core(with_token, registry_loaded.db, clock, registry_loaded.messages)
    app = build_application(core, request=LocalBotAPI())
    assert isinstance(app.bot_data["flood"], FloodGate)
    assert isinstance(app.bot_data[OPS_ALERTS], OpsAlerts)


def test_officers_are_given_the_ops_flag_from_the_command_line(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no developer's .env

    def run(*args: str) -> str:
        assert cli_main(list(args)) == 0
        return capsys.readouterr().out

    added = run("officer", "add", "--telegram-id", "42", "--name", "Opi", "--ops")
    assert "menerima peringatan gangguan bot" in added
    assert "42  Opi — seluruh kota, menerima peringatan gangguan" in run("officer", "list")
    # Updating without the flag takes it away, as with --can-broadcast.
    run("officer", "add", "--telegram-id", "42", "--name", "Opi")
    assert "peringatan" not in run("officer", "list")
