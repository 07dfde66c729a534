"""The WhatsApp bridge and webhook receiver in-process, against the fake Cloud API over HTTP:
edits, alerts, uploads, Cloud API errors as Bot API errors, and the kinds of messages people
send (the whole journeys are in tests/test_whatsapp_e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import Forbidden, RetryAfter

from bot import onboarding
from bot.app import build_whatsapp_application
from bot.core import Core
from handlers.whatsapp.bridge import WhatsAppBotAPI
from handlers.whatsapp.webhook import Receiver
from storage.models import InboundMessage
from tests.fake_whatsapp import FakeWhatsApp, WaUser

SUKAWANA_CURUG = "36.73.04.1007"
SITI = "6281234567890"


@dataclass
class Channel:
    core: Core
    app: Any
    receiver: Receiver
    wa: FakeWhatsApp

    @property
    def bridge(self) -> WhatsAppBotAPI:
        assert self.receiver.bridge is not None
        return self.receiver.bridge

    async def send(self, user: WaUser, text: str) -> list[Any]:
        return await self.post(user, user.text_message(text))

    async def press(self, user: WaUser, choice: str) -> list[Any]:
        return await self.post(user, user.press_message(choice))

    async def post(self, user: WaUser, message: dict[str, Any]) -> list[Any]:
        start = len(self.wa.calls)
        await self.receiver.handle(user.notification(message))
        return [c for c in self.wa.calls[start:] if c.to == user.wa_id]


@pytest.fixture
def wa() -> Iterator[FakeWhatsApp]:
    with FakeWhatsApp() as server:
        yield server


@pytest.fixture
async def channel(registry_loaded: Core, wa: FakeWhatsApp) -> AsyncIterator[Channel]:
    settings = registry_loaded.settings.model_copy(
        update={
            "whatsapp_phone_number_id": wa.phone_id,
            "whatsapp_access_token": SecretStr(wa.token),
            "whatsapp_app_secret": SecretStr(wa.app_secret),
            "whatsapp_verify_token": SecretStr(wa.verify_token),
            "whatsapp_api_base_url": wa.base_url,
        }
    )
    core = Core(settings, registry_loaded.db, registry_loaded.clock, registry_loaded.messages)
    app = build_whatsapp_application(core)
    async with app:
        yield Channel(core, app, Receiver(app, core), wa)


async def linked(channel: Channel) -> WaUser:
    invite = await onboarding.create_invite(
        channel.core, koperasi_kode=SUKAWANA_CURUG, role="bendahara", created_by="t"
    )
    siti = channel.wa.user(SITI, "Siti Aminah")
    said = await channel.send(siti, f"DAFTAR {invite.code}")
    assert "Akun Anda sudah terhubung" in said[0].text
    return siti


async def test_an_answered_question_heads_the_next_one(channel: Channel) -> None:
    siti = await linked(channel)
    await channel.send(siti, "LAPOR")

    said = await channel.press(siti, "Beroperasi rutin")

    # The question's "answered" edit and the next question: one message, not two.
    assert len(said) == 1
    assert said[0].text.startswith("*Status usaha*: Beroperasi rutin ✓")
    assert "pertanyaan 2 dari" in said[0].text
    assert said[0].interactive_type == "list"


async def test_a_stale_press_is_told_in_a_message(channel: Channel) -> None:
    siti = await linked(channel)
    await channel.send(siti, "LAPOR")
    first = channel.wa.message_with_choices(SITI)
    await channel.press(siti, "Beroperasi rutin")

    said = await channel.post(siti, siti.press_message("Beroperasi rutin", first.wamid))

    assert [c.type for c in said] == ["text"]
    assert channel.core.messages.render("stale_button") in said[0].text


async def test_a_typed_number_picks_from_a_numbered_text(channel: Channel) -> None:
    choices = [[InlineKeyboardButton(f"Pilihan {i}", callback_data=f"x:{i}")] for i in range(12)]
    await channel.app.bot.send_message(
        int(SITI), "Pilih", reply_markup=InlineKeyboardMarkup(choices)
    )
    assert channel.wa.calls[-1].type == "text"

    assert channel.bridge.typed_choice(int(SITI), "12")[1] == "x:11"  # type: ignore[index]
    assert channel.bridge.typed_choice(int(SITI), "13") is None
    assert channel.bridge.typed_choice(int(SITI), "1, 2") is None
    await channel.app.bot.send_message(int(SITI), "Lain")
    assert channel.bridge.typed_choice(int(SITI), "1") is None  # only the last message's


async def test_photos_are_uploaded_and_sent_with_their_buttons(channel: Channel) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Lagi", callback_data="r:1")]])

    sent = await channel.app.bot.send_photo(
        int(SITI), photo=b"\x89PNG fake", caption="<b>Rekap</b>", reply_markup=markup
    )

    assert channel.wa.media[0]["_files"]["file"][1] == b"\x89PNG fake"
    image, buttons = channel.wa.calls[-2:]
    assert image.type == "image"
    assert image.body["image"]["id"] == channel.wa.media[0]["id"]
    assert buttons.text == "*Rekap*"
    assert buttons.buttons == [("r:1", "Lagi")]
    assert sent.photo


async def test_cloud_api_refusals_are_bot_api_errors(channel: Channel) -> None:
    channel.wa.fail(SITI, kind="throughput")
    with pytest.raises(RetryAfter):
        await channel.app.bot.send_message(int(SITI), "satu")
    channel.wa.fail(SITI, kind="not_on_whatsapp")
    with pytest.raises(Forbidden):
        await channel.app.bot.send_message(int(SITI), "dua")
    await channel.app.bot.send_message(int(SITI), "tiga")
    assert [c.answer for c in channel.wa.calls] == ["throughput", "not_on_whatsapp", "ok"]


async def test_a_reply_survives_a_throughput_refusal(channel: Channel) -> None:
    siti = channel.wa.user(SITI, "Siti")
    channel.wa.fail(SITI, kind="throughput")

    said = await channel.send(siti, "BANTUAN")

    assert [c.answer for c in said] == ["throughput", "ok"]


async def test_what_people_send_besides_text(channel: Channel) -> None:
    siti = await linked(channel)
    unsupported = channel.core.messages.render("unsupported_content")

    sticker = await channel.post(siti, siti._message("sticker", {"id": "st1", "animated": False}))
    reaction = await channel.post(
        siti, siti._message("reaction", {"message_id": "wamid.1", "emoji": "👍"})
    )
    image = await channel.post(
        siti, siti._message("image", {"id": "m1", "mime_type": "image/jpeg"})
    )

    assert unsupported in sticker[0].text
    assert reaction == []  # a reaction needs no answer
    assert image  # answered (no report under way: the bot says what to do)
    async with channel.core.db.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(InboundMessage))
    assert count == 4  # DAFTAR, sticker, reaction, image


async def test_statuses_of_unknown_messages_change_nothing(channel: Channel) -> None:
    notification = channel.wa.envelope(
        {
            "statuses": [
                {
                    "id": "wamid.unknown",
                    "status": "failed",
                    "timestamp": "1764000000",
                    "recipient_id": SITI,
                    "errors": [{"code": 131026, "title": "Message undeliverable"}],
                }
            ]
        }
    )
    await channel.receiver.handle(notification)
    assert channel.wa.calls == []


def test_typed_words_become_commands(channel: Channel) -> None:
    command = channel.receiver.as_command
    assert command("DAFTAR abc123") == "/start abc123"
    assert command("  Daftar:  ABC 123 ") == "/start ABC123"
    assert command("daftar") == "/start"
    assert command("LAPOR") == "/lapor"
    assert command("Batal.") == "/batal"
    assert command("/rekap") == "/rekap"
    assert command("help") == "/help"
    assert command("lapor ke dinas") is None  # a sentence, e.g. an answer, stays text
    assert command("Daftarkan saya") is None
    assert command("120") is None
