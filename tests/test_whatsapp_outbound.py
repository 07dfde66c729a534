"""WhatsApp's outbound half: the outbox over the Cloud API (the fake on 127.0.0.1, over HTTP),
the 24-hour window and its templates, one message per person on the channel they used last,
the Cloud API's error codes, and the status callbacks officers see."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from bot import onboarding, reminders
from bot import summons as summons_service
from bot.app import build_whatsapp_application
from bot.clock import FixedClock
from bot.config import WHATSAPP_TEMPLATES, Settings
from bot.core import Core
from bot.identity import identify
from bot.outbox import Outgoing, enqueue, record_status, resend_held
from bot.sender import Sender, SendStats
from handlers.local_api import LocalBotAPI, LocalChat
from handlers.transport import TelegramTransport
from handlers.whatsapp.transport import WhatsAppTransport, template_family
from handlers.whatsapp.webhook import WhatsAppServer
from messages import TEMPLATE_DIR
from storage.models import BoardMember, ChatIdentity, Kecamatan, OutboxMessage, OutboxStatus, Person
from tests.bot.test_cli import cli
from tests.conftest import WIB, Chats
from tests.fake_whatsapp import FakeWhatsApp
from tests.handlers.test_rsvp import officer
from tests.test_webhook_e2e import free_port

SUKAWANA_CURUG = "36.73.04.1007"
SUKAWANA_NAMA = "Koperasi Kelurahan Merah Putih Sukawana"
SITI_WA = "6281234567001"
BUDI_WA = "6281234567002"


def wib(day: int, hour: int = 9, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=WIB)


@pytest.fixture
def wa() -> Iterator[FakeWhatsApp]:
    with FakeWhatsApp() as fake:
        yield fake


@pytest.fixture
def settings(database_url: str, wa: FakeWhatsApp) -> Settings:
    return Settings(  # type: ignore[call-arg]
        database_url=database_url,
        telegram_bot_token=None,
        whatsapp_phone_number_id=wa.phone_id,
        whatsapp_access_token=wa.token,
        whatsapp_app_secret=wa.app_secret,
        whatsapp_verify_token=wa.verify_token,
        whatsapp_api_base_url=wa.base_url,
        whatsapp_business_number="628112345678",
        _env_file=None,
    )


def whatsapp_sender(core: Core) -> Sender:
    return Sender(core, WhatsAppTransport(core), name="wa", rate=200.0, per_chat_interval=0.0)


def telegram_sender(core: Core, app: Any) -> Sender:
    return Sender(core, TelegramTransport(app.bot), name="tg", rate=200.0, per_chat_interval=0.0)


async def link(core: Core, chats: Chats, name: str, role: str = "bendahara") -> LocalChat:
    invite = await onboarding.create_invite(
        core, koperasi_kode=SUKAWANA_CURUG, role=role, created_by="t"
    )
    chat = chats.user(name, None)
    await chat.send(f"/start {invite.code}")
    return chat


async def person_of(core: Core, chat: LocalChat) -> int:
    async with core.db.sessions() as session:
        found = (await identify(session, "telegram", str(chat.user.user_id))).person_id
    assert found is not None
    return found


async def add_whatsapp(core: Core, person_id: int, wa_id: str, last_seen: datetime | None) -> int:
    """The identity the webhook creates when the person links on WhatsApp, and the time of
    their last message there."""
    async with core.db.transaction() as session:
        identity = ChatIdentity(
            person_id=person_id,
            channel="whatsapp",
            external_id=wa_id,
            created_at=core.clock.now(),
            last_seen_at=last_seen,
        )
        session.add(identity)
        await session.flush()
        return identity.id


async def only_on_whatsapp(core: Core, chat: LocalChat, wa_id: str, last_seen: datetime) -> int:
    """The person linked through Telegram's chat becomes one reachable on WhatsApp only."""
    person_id = await person_of(core, chat)
    async with core.db.transaction() as session:
        await session.execute(
            update(ChatIdentity)
            .where(ChatIdentity.person_id == person_id)
            .values(channel="whatsapp", external_id=wa_id, last_seen_at=last_seen)
        )
    return person_id


async def outbox(core: Core) -> list[tuple[OutboxMessage, str]]:
    async with core.db.sessions() as session:
        rows = await session.execute(
            select(OutboxMessage, ChatIdentity.channel)
            .join(ChatIdentity, ChatIdentity.id == OutboxMessage.chat_identity_id)
            .order_by(OutboxMessage.id)
        )
        return [(row, channel) for row, channel in rows.all()]


def sent_messages(api: LocalBotAPI, chat: LocalChat, since: int) -> list[str]:
    return [
        str(call.params["text"])
        for call in api.calls[since:]
        if call.method == "sendMessage" and int(call.params["chat_id"]) == chat.chat_id
    ]


def test_kinds_pick_their_template_family() -> None:
    assert [
        template_family(kind)
        for kind in (
            "open",
            "reminder_1",
            "reminder_2",
            "summons",
            "summons_h1",
            "summons_h0",
            "summons_change",
            "summons_cancel",
            "digest",
            "ops_alert",
            "draft_expired",
        )
    ] == [
        "open",
        "reminder",
        "reminder",
        "summons",
        "summons",
        "summons",
        "summons",
        "summons",
        "digest",
        "ops",
        "default",
    ]


async def test_a_reminder_outside_the_window_is_the_template_inside_it_the_message(
    registry_loaded: Core, chats: Chats, clock: FixedClock, wa: FakeWhatsApp
) -> None:
    core = registry_loaded
    clock.set(wib(1, 8))
    budi = await only_on_whatsapp(
        core, await link(core, chats, "Budi", "ketua"), BUDI_WA, last_seen=wib(1, 8)
    )
    siti_chat = await link(core, chats, "Siti")
    siti = await only_on_whatsapp(core, siti_chat, SITI_WA, last_seen=wib(4, 20))

    # 5 December, 09.00: the first reminder. Budi last wrote four days ago (window closed),
    # Siti thirteen hours ago (open).
    clock.set(wib(5, 9))
    await reminders.tick(core)
    rows = await outbox(core)
    assert {(row.person_id, row.kind) for row, _ in rows} == {
        (budi, "reminder_1"),
        (siti, "reminder_1"),
    }
    stats = await whatsapp_sender(core).drain()
    assert stats.sent == 2

    (template,) = wa.sent_to(BUDI_WA)
    assert template.type == "template"
    assert template.template == "kmp_pengingat_laporan"
    assert template.body["template"]["language"] == {"code": "id"}
    assert template.template_params == [
        "Budi",
        SUKAWANA_NAMA,
        "November 2026",
        "Kamis, 10 Desember 2026",
    ]

    (message,) = wa.sent_to(SITI_WA)
    assert message.type == "interactive"
    assert message.text.startswith("Selamat pagi, Bapak/Ibu *Siti*.")
    assert "belum kami terima" in message.text
    assert [button_id for button_id, _ in message.buttons] == ["lapor:2026-11"]

    rows = await outbox(core)
    assert {row.status for row, _ in rows} == {OutboxStatus.SENT}
    assert {row.external_message_id for row, _ in rows} == {template.wamid, message.wamid}


async def test_a_person_on_both_channels_gets_each_notice_once_where_they_wrote_last(
    registry_loaded: Core,
    app: Any,
    api: LocalBotAPI,
    chats: Chats,
    clock: FixedClock,
    wa: FakeWhatsApp,
) -> None:
    core = registry_loaded
    # Linked on Telegram on 30 November at 10.00, then on WhatsApp, where she last wrote at
    # 12.00.
    clock.set(wib(30, 10, month=11))
    siti_chat = await link(core, chats, "Siti")
    siti = await person_of(core, siti_chat)
    await add_whatsapp(core, siti, SITI_WA, last_seen=wib(30, 12, month=11))
    telegram, whatsapp = telegram_sender(core, app), whatsapp_sender(core)

    # 1 December: the report opens. WhatsApp was used last (21 hours ago: inside the window).
    clock.set(wib(1, 9))
    before = len(api.calls)
    await reminders.tick(core)
    await telegram.drain()
    await whatsapp.drain()
    assert sent_messages(api, siti_chat, before) == []
    (opening,) = wa.sent_to(SITI_WA)
    assert opening.type == "interactive"
    assert "sudah bisa diisi" in opening.text

    # 3 December: she writes on Telegram. The reminder of the 5th goes there, and only there.
    clock.set(wib(3, 10))
    await siti_chat.send("/jadwal")
    clock.set(wib(5, 9))
    before = len(api.calls)
    await reminders.tick(core)
    await telegram.drain()
    await whatsapp.drain()
    (reminder,) = sent_messages(api, siti_chat, before)
    assert "belum kami terima" in reminder
    assert len(wa.sent_to(SITI_WA)) == 1

    # 7 December: back on WhatsApp (the webhook records her message); the last reminder of
    # the 8th goes to WhatsApp, as the template (more than 24 hours later).
    async with core.db.transaction() as session:
        await session.execute(
            update(ChatIdentity)
            .where(ChatIdentity.channel == "whatsapp")
            .values(last_seen_at=wib(7, 8))
        )
    clock.set(wib(8, 9))
    before = len(api.calls)
    await reminders.tick(core)
    await telegram.drain()
    await whatsapp.drain()
    assert sent_messages(api, siti_chat, before) == []
    opening, last = wa.sent_to(SITI_WA)
    assert last.template == "kmp_pengingat_laporan"
    per_kind = [(row.kind, channel) for row, channel in await outbox(core)]
    assert per_kind == [
        ("open", "whatsapp"),
        ("reminder_1", "telegram"),
        ("reminder_2", "whatsapp"),
    ]


async def whatsapp_people(core: Core, *wa_ids: str, last_seen: datetime | None) -> list[int]:
    """A person per number, reachable on WhatsApp only; their identity ids."""
    identities = []
    for wa_id in wa_ids:
        async with core.db.transaction() as session:
            person = Person(nama=f"Pengurus {wa_id[-3:]}", created_at=core.clock.now())
            session.add(person)
            await session.flush()
        identities.append(await add_whatsapp(core, person.id, wa_id, last_seen))
    return identities


async def queue(core: Core, identity_id: int, kind: str, **extra: Any) -> None:
    async with core.db.transaction() as session:
        await enqueue(
            session,
            [
                Outgoing(
                    dedupe_key=extra.pop("dedupe_key", f"test:{identity_id}"),
                    kind=kind,
                    chat_identity_id=identity_id,
                    text="Laporan bulan <b>November 2026</b> sudah bisa diisi.",
                    quiet_hours=False,
                    **extra,
                )
            ],
            core.clock.now(),
        )


async def row_of(core: Core, identity_id: int) -> OutboxMessage:
    async with core.db.sessions() as session:
        found = await session.scalar(
            select(OutboxMessage).where(OutboxMessage.chat_identity_id == identity_id)
        )
    assert found is not None
    return found


async def test_cloud_api_errors_become_the_outbox_outcomes(
    core: Core, clock: FixedClock, wa: FakeWhatsApp
) -> None:
    now = clock.now()
    params = {"nama": "Ani", "koperasi": "KMP Cipare", "periode": "November 2026", "batas": "x"}
    # 131047: we thought the window open, WhatsApp says it closed: the template at once.
    (closed,) = await whatsapp_people(core, "6281000000001", last_seen=now - timedelta(hours=2))
    wa.fail("6281000000001", kind="reengagement")
    await queue(core, closed, "open", params=params)
    # 131026: not on WhatsApp: unreachable, with the reason.
    (absent,) = await whatsapp_people(core, "6281000000002", last_seen=None)
    wa.fail("6281000000002", kind="not_on_whatsapp")
    await queue(core, absent, "reminder_1", params=params)
    # 130429: throughput: tried again after a pause, delivered once.
    (busy,) = await whatsapp_people(core, "6281000000003", last_seen=now - timedelta(hours=1))
    wa.fail("6281000000003", kind="throughput")
    await queue(core, busy, "draft_expired")
    # 132015: the template is paused: failed, with the reason for the officers.
    (paused,) = await whatsapp_people(core, "6281000000004", last_seen=None)
    wa.fail("6281000000004", kind="template_paused")
    await queue(core, paused, "summons", params={"nama": "Eko", "hal": "Rapat"})

    stats: SendStats = await whatsapp_sender(core).drain()
    assert (stats.sent, stats.unreachable, stats.failed) == (2, 1, 1)
    assert stats.retried == 1

    free, template = [(c.type, c.answer) for c in wa.calls if c.to == "6281000000001"]
    assert free[1] == "reengagement"
    assert template == ("template", "ok")
    (call,) = wa.sent_to("6281000000001")
    assert call.template == "kmp_laporan_dibuka"
    assert call.template_params == ["Ani", "KMP Cipare", "November 2026", "x"]
    row = await row_of(core, closed)
    assert (row.status, row.external_message_id) == (OutboxStatus.SENT, call.wamid)

    row = await row_of(core, absent)
    assert row.status is OutboxStatus.UNREACHABLE
    async with core.db.sessions() as session:
        identity = await session.get(ChatIdentity, absent)
    assert identity is not None
    assert identity.unreachable_at is not None
    assert "131026" in (identity.unreachable_reason or "")
    assert "not on WhatsApp" in (identity.unreachable_reason or "")

    assert [c.answer for c in wa.calls if c.to == "6281000000003"] == ["throughput", "ok"]
    (call,) = wa.sent_to("6281000000003")
    assert call.type == "text"
    assert (await row_of(core, busy)).status is OutboxStatus.SENT

    row = await row_of(core, paused)
    assert row.status is OutboxStatus.FAILED
    assert "kmp_undangan_rapat" in (row.last_error or "")
    assert "132015" in (row.last_error or "")
    assert "paused" in (row.last_error or "")


async def test_a_read_report_is_recorded_and_the_officer_sees_it(
    registry_loaded: Core, app: Any, chats: Chats, clock: FixedClock, wa: FakeWhatsApp
) -> None:
    core = registry_loaded
    clock.set(wib(1, 9))
    oki = await officer(core, chats, "Oki", None, can_broadcast=True)
    siti = await only_on_whatsapp(core, await link(core, chats, "Siti"), SITI_WA, wib(1, 8))
    budi = await only_on_whatsapp(
        core, await link(core, chats, "Budi", "ketua"), BUDI_WA, wib(1, 8)
    )
    async with core.db.sessions() as session:
        curug = await session.scalar(select(Kecamatan.id).where(Kecamatan.nama == "Curug"))
        officer_actor = await identify(session, "telegram", str(oki.user.user_id))
    assert curug is not None
    summons, _ = await summons_service.send(
        core,
        officer_actor,
        summons_service.Spec(
            hal="Rapat koordinasi pengurus KMP",
            starts_at=wib(10, 9),
            tempat="Aula Setda Kota Serang",
            acara="Evaluasi",
            narahubung="Budi Santoso",
            target=summons_service.Target(kind="kecamatan", kecamatan_ids=[curug]),
        ),
    )
    await whatsapp_sender(core).drain()
    (letter,) = wa.sent_to(SITI_WA)
    assert [title for _, title in letter.buttons] == ["Hadir", "Diwakilkan", "Berhalangan"]
    (other,) = wa.sent_to(BUDI_WA)
    assert letter.wamid is not None
    assert other.wamid is not None

    # WhatsApp reports: Siti's letter delivered then read, Budi's delivered only. The read
    # report comes through the webhook, signed, as Meta posts it.
    assert await record_status(core, "whatsapp", letter.wamid, "sent", wib(1, 9, 1))
    assert await record_status(core, "whatsapp", letter.wamid, "delivered", wib(1, 9, 2))
    assert await record_status(core, "whatsapp", other.wamid, "delivered", wib(1, 9, 3))
    whatsapp_app = build_whatsapp_application(core)
    server = WhatsAppServer(whatsapp_app, core)
    port = free_port()
    server.listen("127.0.0.1", port)
    wa.forward_to(f"http://127.0.0.1:{port}/whatsapp")
    try:
        assert await asyncio.to_thread(wa.status, letter.wamid, "read") == 200
    finally:
        await server.stop()
    assert not await record_status(core, "telegram", letter.wamid, "read", wib(1, 9, 5))
    assert not await record_status(core, "whatsapp", "wamid.unknown", "read", wib(1, 9, 5))
    async with core.db.sessions() as session:
        rows = {
            row.person_id: row
            for row in (
                await session.scalars(
                    select(OutboxMessage).where(OutboxMessage.topic == f"summons:{summons.id}")
                )
            ).all()
        }
    assert rows[siti].delivered_at == wib(1, 9, 2)
    assert rows[siti].read_at is not None  # the notification's time
    assert rows[budi].delivered_at == wib(1, 9, 3)
    assert rows[budi].read_at is None

    (listing,) = await oki.send("/undangan")
    (view,) = await oki.press(0, listing)
    lines = view.text.splitlines()
    assert any("Siti" in line and "belum menjawab · <i>dibaca</i>" in line for line in lines)
    assert any("Budi" in line and "belum menjawab · <i>diterima</i>" in line for line in lines)


async def test_a_failed_report_marks_an_undeliverable_number(
    core: Core, clock: FixedClock, wa: FakeWhatsApp
) -> None:
    first, second = await whatsapp_people(
        core, "6281000000009", "6281000000010", last_seen=clock.now()
    )
    await queue(core, first, "draft_expired")
    await queue(core, second, "draft_expired")
    await whatsapp_sender(core).drain()
    (gone,) = wa.sent_to("6281000000009")
    (late,) = wa.sent_to("6281000000010")
    assert gone.wamid is not None
    assert late.wamid is not None
    # As the webhook hands them over: the notification's `errors`.
    undeliverable = [
        {
            "code": 131026,
            "title": "Message undeliverable",
            "error_data": {"details": "Message Undeliverable."},
        }
    ]
    assert await record_status(core, "whatsapp", gone.wamid, "failed", clock.now(), undeliverable)
    assert await record_status(core, "whatsapp", late.wamid, "failed", clock.now(), "(#131000) x")
    reason = "Message undeliverable (131026): Message Undeliverable."
    row = await row_of(core, first)
    assert (row.status, row.last_error) == (OutboxStatus.UNREACHABLE, reason)
    row = await row_of(core, second)
    assert (row.status, row.last_error) == (OutboxStatus.FAILED, "(#131000) x")
    async with core.db.sessions() as session:
        found = await session.get(ChatIdentity, first)
        kept = await session.get(ChatIdentity, second)
    assert found is not None
    assert found.unreachable_reason == reason
    assert kept is not None
    assert kept.unreachable_at is None


async def test_a_message_announced_by_its_template_follows_when_the_person_answers(
    core: Core, clock: FixedClock, wa: FakeWhatsApp
) -> None:
    wa_id = "6281000000011"
    (identity,) = await whatsapp_people(core, wa_id, last_seen=None)
    params = {"nama": "Eko", "hal": "Rapat", "waktu": "Kamis", "tempat": "Aula"}
    await queue(core, identity, "summons", params=params, buttons=[[("Hadir", "u:1:hadir")]])
    await whatsapp_sender(core).drain()
    (announced,) = wa.sent_to(wa_id)
    assert announced.template == "kmp_undangan_rapat"
    assert announced.template_params == ["Eko", "Rapat", "Kamis", "Aula"]
    assert not await resend_held(core, "telegram", wa_id, clock.now())

    # He answers the next day, through the webhook: the letter itself follows, once.
    clock.set(clock.now() + timedelta(days=1))
    app = build_whatsapp_application(core)
    async with app:
        server = WhatsAppServer(app, core)
        port = free_port()
        server.listen("127.0.0.1", port)
        wa.forward_to(f"http://127.0.0.1:{port}/whatsapp")
        try:
            assert await asyncio.to_thread(wa.user(wa_id, "Eko").send, "halo") == 200
        finally:
            await server.stop()
    async with core.db.sessions() as session:
        seen = await session.scalar(
            select(ChatIdentity.last_seen_at).where(ChatIdentity.id == identity)
        )
    assert seen == clock.now()
    assert await resend_held(core, "whatsapp", wa_id, clock.now()) == 0
    await whatsapp_sender(core).drain()
    # After the bot's answer to "halo", the held letter, once.
    announced, *answered, letter = wa.sent_to(wa_id)
    assert [call.type for call in answered] == ["text"]
    assert letter.type == "interactive"
    assert letter.text == "Laporan bulan *November 2026* sudah bisa diisi."
    assert letter.buttons == [("u:1:hadir", "Hadir")]


async def test_the_send_command_sends_the_whatsapp_channel(
    core: Core, cli_env: dict[str, str], tmp_path: Path, wa: FakeWhatsApp
) -> None:
    (identity,) = await whatsapp_people(core, "6281000000012", last_seen=None)
    await queue(core, identity, "draft_expired")
    unset = cli("send", "--channel", "whatsapp", "--once", env=cli_env, cwd=tmp_path)
    assert unset.returncode == 2
    assert "WhatsApp belum diatur" in unset.stderr
    env = {
        **cli_env,
        "WHATSAPP_PHONE_NUMBER_ID": wa.phone_id,
        "WHATSAPP_ACCESS_TOKEN": wa.token,
        "WHATSAPP_APP_SECRET": wa.app_secret,
        "WHATSAPP_VERIFY_TOKEN": wa.verify_token,
        "WHATSAPP_API_BASE_URL": wa.base_url,
    }
    done = cli("send", "--channel", "whatsapp", "--once", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "terkirim 1" in done.stdout
    (call,) = wa.sent_to("6281000000012")
    assert call.template == "kmp_pesan_baru"
    assert call.template_params == ["Laporan bulan November 2026 sudah bisa diisi."]

    # `tick` sends what is due on WhatsApp too, without a Telegram token.
    await queue(core, identity, "draft_expired", dedupe_key="test:again")
    ticked = cli("tick", env=env, cwd=tmp_path)
    assert ticked.returncode == 0, ticked.stderr
    assert "TELEGRAM_BOT_TOKEN" not in ticked.stdout
    _, second = wa.sent_to("6281000000012")
    assert second.template == "kmp_pesan_baru"


# How many body values the code gives each template (bot/reminders.py, bot/summons.py,
# bot/ops.py; the default template gets the message itself).
TEMPLATE_VALUES = {"open": 4, "reminder": 4, "summons": 4, "digest": 4, "ops": 3, "default": 1}


@pytest.mark.parametrize("language", ["id", "en"])
def test_the_template_samples_keep_metas_rules(language: str) -> None:
    folder = TEMPLATE_DIR / language
    samples = {p.stem.removeprefix("wa_template_"): p for p in folder.glob("wa_template_*.txt")}
    assert set(samples) == set(TEMPLATE_VALUES) == set(WHATSAPP_TEMPLATES)
    for kind, path in samples.items():
        body = path.read_text(encoding="utf-8").strip()
        numbers = [int(n) for n in re.findall(r"\{\{(\d+)\}\}", body)]
        assert numbers == list(range(1, TEMPLATE_VALUES[kind] + 1)), kind
        assert not body.startswith("{{"), kind
        assert not body.endswith("}}"), kind
        assert not re.search(r"\}\}\W{0,2}\{\{", body), kind  # no values side by side
        assert "\n" not in body, kind
        assert len(body) <= 1024 - 600, kind  # room for the values


async def test_a_refused_token_fails_loudly_and_server_trouble_is_tried_again(
    core: Core, clock: FixedClock, wa: FakeWhatsApp, caplog: pytest.LogCaptureFixture
) -> None:
    trouble, dropped, refused = await whatsapp_people(
        core, "6281000000013", "6281000000014", "6281000000015", last_seen=clock.now()
    )
    wa.fail("6281000000013", kind="server_error")
    wa.fail("6281000000014", kind="dropped")
    await queue(core, trouble, "draft_expired")
    await queue(core, dropped, "draft_expired")
    stats = await whatsapp_sender(core).drain()
    assert (stats.sent, stats.retried) == (0, 2)
    for identity in (trouble, dropped):
        row = await row_of(core, identity)
        assert row.status is OutboxStatus.PENDING
        assert row.next_attempt_at > clock.now()  # after a backoff
    clock.set(clock.now() + timedelta(minutes=5))
    assert (await whatsapp_sender(core).drain()).sent == 2
    assert len(wa.sent_to("6281000000013")) == len(wa.sent_to("6281000000014")) == 1

    await queue(core, refused, "draft_expired")
    core.settings = core.settings.model_copy(update={"whatsapp_access_token": SecretStr("old")})
    with caplog.at_level(logging.CRITICAL):
        stats = await whatsapp_sender(core).drain()
    assert stats.failed == 1
    row = await row_of(core, refused)
    assert row.status is OutboxStatus.FAILED
    assert "access token refused" in (row.last_error or "")
    assert any("WHATSAPP_ACCESS_TOKEN" in r.getMessage() for r in caplog.records)


async def test_a_telegram_board_member_adds_whatsapp_and_stays_one_person(
    registry_loaded: Core,
    app: Any,
    api: LocalBotAPI,
    chats: Chats,
    clock: FixedClock,
    wa: FakeWhatsApp,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """`invite --same-as telegram:ID --channel whatsapp` gives a wa.me link; "DAFTAR <code>"
    sent from WhatsApp joins that chat to the same person (no second board member), and the
    next notice reaches her once, on WhatsApp, where she wrote last."""
    core = registry_loaded
    clock.set(wib(30, 10, month=11))
    siti_chat = await link(core, chats, "Siti")
    siti = await person_of(core, siti_chat)
    env = {**cli_env, "WHATSAPP_BUSINESS_NUMBER": "628112345678"}
    both = cli("invite", "--same-as", "telegram:1", "--coop", SUKAWANA_CURUG, env=env, cwd=tmp_path)
    assert both.returncode == 2
    assert "--same-as" in both.stderr
    nobody = cli("invite", "--same-as", "telegram:1", env=env, cwd=tmp_path)
    assert nobody.returncode == 2
    assert "telegram:1" in nobody.stderr
    made = cli(
        "invite",
        "--same-as",
        f"telegram:{siti_chat.user.user_id}",
        "--channel",
        "whatsapp",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    code = json.loads(made.stdout.strip().splitlines()[-1])["code"]

    clock.set(wib(30, 12, month=11))
    whatsapp_app = build_whatsapp_application(core)
    async with whatsapp_app:
        server = WhatsAppServer(whatsapp_app, core)
        port = free_port()
        server.listen("127.0.0.1", port)
        wa.forward_to(f"http://127.0.0.1:{port}/whatsapp")
        try:
            user = wa.user(SITI_WA, "Siti")
            assert await asyncio.to_thread(user.send, f"DAFTAR {code}") == 200
            (linked,) = wa.sent_to(SITI_WA)
            assert "Akun Anda sudah terhubung sebagai *Bendahara*" in linked.text
            # The code is used: another number cannot take it.
            other = wa.user("6281234567999", "Orang lain")
            assert await asyncio.to_thread(other.send, f"DAFTAR {code}") == 200
        finally:
            await server.stop()
    async with core.db.sessions() as session:
        identities = (
            await session.execute(
                select(ChatIdentity.channel, ChatIdentity.person_id).order_by(ChatIdentity.id)
            )
        ).all()
        members = (await session.scalars(select(BoardMember.person_id))).all()
    assert ("telegram", siti) in identities
    assert ("whatsapp", siti) in identities
    assert members == [siti]  # one board member; the other number linked nothing
    assert wa.sent_to("6281234567999")  # and was told so

    clock.set(wib(1, 9))
    before = len(api.calls)
    await reminders.tick(core)
    await telegram_sender(core, app).drain()
    await whatsapp_sender(core).drain()
    assert sent_messages(api, siti_chat, before) == []
    linked, opening = wa.sent_to(SITI_WA)
    assert "sudah bisa diisi" in opening.text


async def test_whatsapp_in_telegram_gives_a_board_member_their_own_code(
    registry_loaded: Core, chats: Chats
) -> None:
    core = registry_loaded
    stranger = chats.user("Tamu", None)
    (refused,) = await stranger.send("/whatsapp")
    assert "belum terhubung dengan koperasi" in refused.text
    siti_chat = await link(core, chats, "Siti")
    siti = await person_of(core, siti_chat)
    (answer,) = await siti_chat.send("/whatsapp")
    assert "https://wa.me/628112345678?text=DAFTAR%20" in answer.text
    code = answer.text.split("DAFTAR%20", 1)[1].split()[0]
    linked = await onboarding.redeem_invite(
        core, channel="whatsapp", external_id=SITI_WA, display_name="Siti", code=code
    )
    assert linked.status == onboarding.RedeemStatus.LINKED
    assert linked.actor.person_id == siti
    again = await onboarding.redeem_invite(
        core, channel="whatsapp", external_id=BUDI_WA, display_name="Budi", code=code
    )
    assert again.status == onboarding.RedeemStatus.USED
