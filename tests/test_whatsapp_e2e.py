"""The WhatsApp channel end to end: `koperasi-bot run` as a process, over HTTP, against the fake
Cloud API (tests/fake_whatsapp.py) beside the fake Bot API, on SQLite and PostgreSQL.

The fake plays Meta: it posts signed notifications to the bot's /whatsapp webhook (as the TLS
proxy would forward them) and records the messages the bot sends. A person links with "DAFTAR
<code>", fills in a whole monthly report with reply buttons, lists, typed numbers and "1, 3"
for a multi-select, and answers a summons the outbox delivered on WhatsApp. The GET handshake
answers the challenge only with the verify token; forged notifications get 403 and change
nothing; a notification delivered twice is handled once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from sqlalchemy import select

from bot.config import Settings
from bot.core import Core
from bot.laporan import KENDALA
from storage.models import ChatIdentity, InboundMessage, OutboxMessage, ReportRevision, RsvpAnswer
from tests.bot.test_cli import cli
from tests.fake_bot_api import FakeBotAPI
from tests.fake_whatsapp import Call, FakeWhatsApp, WaUser, signature
from tests.test_webhook_e2e import (
    PUBLIC_URL,
    SECRET,
    SUKAWANA_CURUG,
    WAIT,
    BotProcess,
    bot_env,
    calendar_elsewhere,
    fake,
    free_port,
    live_core,
    prepare,
    rsvp_of,
    send_summons,
    snapshot,
    stopped_cleanly,
)

__all__ = ["calendar_elsewhere", "fake", "live_core"]  # fixtures used by name

SITI = "6281234567890"
STRANGER = "6289999999999"


@pytest.fixture
def wa() -> Any:
    with FakeWhatsApp() as server:
        yield server


def wa_env(
    cli_env: dict[str, str], api: FakeBotAPI, wa: FakeWhatsApp, port: int, **extra: str
) -> dict[str, str]:
    return bot_env(
        cli_env,
        api,
        WHATSAPP_PHONE_NUMBER_ID=wa.phone_id,
        WHATSAPP_ACCESS_TOKEN=wa.token,
        WHATSAPP_APP_SECRET=wa.app_secret,
        WHATSAPP_VERIFY_TOKEN=wa.verify_token,
        WHATSAPP_API_BASE_URL=wa.base_url,
        WHATSAPP_BUSINESS_NUMBER=wa.display_number,
        WHATSAPP_LISTEN=f"127.0.0.1:{port}",
        # The test's people answer far faster than anyone types.
        FLOOD_LIMIT="1000",
        **extra,
    )


def serving(wa: FakeWhatsApp, port: int) -> None:
    """Wait until the bot answers Meta's verification on /whatsapp."""
    wa.forward_to(f"http://127.0.0.1:{port}/whatsapp")

    def answered() -> bool:
        try:
            return wa.handshake(challenge="ready")[0] == 200
        except OSError:
            return False

    wa.wait_for(answered, "the WhatsApp webhook", WAIT, every=0.1)


class Chat:
    """One person's WhatsApp chat with the business number."""

    def __init__(self, wa: FakeWhatsApp, user: WaUser) -> None:
        self.wa = wa
        self.user = user

    def mark(self) -> int:
        return len(self.wa.calls)

    def said(self, since: int = 0) -> list[Call]:
        return [c for c in self.wa.calls[since:] if c.to == self.user.wa_id and c.delivered]

    def expect(self, since: int, *texts: str) -> list[Call]:
        def seen() -> list[Call] | None:
            said = self.said(since)
            written = "\n".join(
                [c.text for c in said] + [title for c in said for _, title in c.buttons]
            )
            return said if all(text in written for text in texts) else None

        found: list[Call] = self.wa.wait_for(seen, f"the bot to write {texts}", WAIT)
        return found

    def say(self, text: str, *expect: str) -> list[Call]:
        since = self.mark()
        assert self.user.send(text) == 200
        return self.expect(since, *expect)

    def press(self, choice: str, *expect: str) -> list[Call]:
        since = self.mark()
        assert self.user.press(choice) == 200
        return self.expect(since, *expect)

    def choices(self) -> list[str]:
        return [title for _, title in self.wa.message_with_choices(self.user.wa_id).buttons]

    def last(self) -> Call:
        return self.said()[-1]


def whole_report(siti: Chat) -> None:
    """The report of tests/test_chaos_e2e.py whole_report, as WhatsApp shows it."""
    said = siti.say("LAPOR", "pertanyaan 1 dari")
    assert said[-1].interactive_type in ("button", "list")
    siti.press("Beroperasi rutin", "pertanyaan 2 dari")
    # Ten units and Selesai: a list, its rows numbered; each pick shows the list again.
    assert siti.last().interactive_type == "list"
    siti.press("Gerai sembako", "✅ Gerai sembako")
    siti.press("Selesai", "*Unit usaha berjalan*: Gerai sembako", "Berapa jumlah anggota")
    for answer in ("120", "5", "12,5 jt"):
        siti.say(answer)
    siti.press("Ya, benar")
    for answer in ("Rp1.500.000", "25000000", "0"):
        siti.say(answer)
    siti.press("Sewa")
    for answer in ("Ya", "Tidak", "Ya", "Tidak"):
        siti.press(answer)
    siti.say("Membuka gerai sembako.", "Kendala apa saja")
    # Twelve obstacles and Selesai do not fit a list: numbered text, answered by number.
    obstacles = siti.last()
    assert obstacles.type == "text"
    assert "13. Selesai" in obstacles.text
    modal = KENDALA.index("MODAL") + 1
    siti.say(str(modal), "✅ Modal terbatas")  # one typed number: a pick, as a press
    pendampingan = KENDALA.index("PENDAMPINGAN") + 1
    siti.say(f"{modal}, {pendampingan}", "paling utama")  # several: the whole answer
    siti.press("Modal terbatas", "uraikan")
    siti.say("Simpanan anggota belum terkumpul.", "Bantuan apa")
    siti.press("Pelatihan", "✅ Pelatihan")
    siti.press("Selesai", "foto")
    siti.press("Selesai", "Kirim")
    assert siti.choices() == ["Kirim", "Ubah", "Batal"]
    siti.press("Kirim", "sudah kami terima", "Nomor: *LAP/")


@pytest.mark.usefixtures("calendar_elsewhere")
async def test_whatsapp_journey_by_polling(
    live_core: Core,
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    fake: FakeBotAPI,
    wa: FakeWhatsApp,
) -> None:
    code = await prepare(live_core, cli_env, tmp_path)
    port = free_port()
    bot = BotProcess.start(wa_env(cli_env, fake, wa, port), tmp_path)
    with bot.shown_on_failure():
        serving(wa, port)
        assert (
            f"Bot juga berjalan di WhatsApp (webhook /whatsapp, menerima di 127.0.0.1:{port})"
            in (bot.output())
        )
        # Meta's verification: the challenge back only with the verify token.
        assert wa.handshake(challenge="8472") == (200, "8472")
        assert wa.handshake(verify_token="wrong")[0] == 403
        assert wa.handshake(verify_token="")[0] == 403
        assert wa.handshake(mode="unsubscribe")[0] == 403

        # A stranger's notification with a forged or missing signature: 403, nothing changes.
        stranger = wa.user(STRANGER, "Penyusup")
        body = json.dumps(stranger.notification(stranger.text_message(f"DAFTAR {code}"))).encode()
        before = await snapshot(live_core)
        for forged in (None, "", "sha256=00", signature(body, "not-the-secret"), "sha1=abc"):
            assert wa.post_raw(body, forged) == 403, forged
        assert wa.post_raw(body + b" ", signature(body, wa.app_secret)) == 403
        # Signed, but not a notification object: 400.
        for junk in (b"{not json", b"[1, 2]"):
            assert wa.post_raw(junk, signature(junk, wa.app_secret)) == 400, junk
        assert await snapshot(live_core) == before
        assert not wa.calls
        async with live_core.db.sessions() as session:
            assert not (await session.scalars(select(InboundMessage))).all()

        # Onboarding by the code typed in chat.
        siti = Chat(wa, wa.user(SITI, "Siti Aminah"))
        siti.say(f"daftar {code.lower()}", "Akun Anda sudah terhubung sebagai *Bendahara*")
        async with live_core.db.sessions() as session:
            identity = await session.scalar(
                select(ChatIdentity).where(ChatIdentity.external_id == SITI)
            )
        assert identity is not None
        assert identity.channel == "whatsapp"
        assert identity.last_seen_at is not None

        # The same notification delivered twice is handled once.
        again = siti.user.notification(siti.user.text_message("BANTUAN"))
        since = siti.mark()
        assert wa.post(again) == 200
        siti.expect(since, "/lapor")
        answered = len(siti.said(since))
        assert wa.post(again) == 200
        assert len(siti.said(since)) == answered

        whole_report(siti)
        async with live_core.db.sessions() as session:
            revision = await session.scalar(select(ReportRevision))
        assert revision is not None
        assert revision.answers["kendala"] == ["MODAL", "PENDAMPINGAN"]
        assert revision.answers["kendala_utama"] == "MODAL"
        assert revision.answers["kebutuhan_bantuan"] == ["pelatihan"]

        # A summons from the city, delivered by the outbox on WhatsApp; Siti answers it.
        since = siti.mark()
        summons_id = await send_summons(live_core)
        (letter,) = [c for c in siti.expect(since, "Rapat koordinasi pengurus KMP") if c.buttons][
            -1:
        ]
        assert [title for _, title in letter.buttons] == ["Hadir", "Diwakilkan", "Berhalangan"]
        siti.press("Hadir", "Kehadiran Anda pada *Rapat koordinasi pengurus KMP*")
        assert await rsvp_of(live_core, summons_id) == [(RsvpAnswer.HADIR, "Siti Aminah")]

        # WhatsApp reports the letter read: the outbox row says so.
        assert letter.wamid is not None
        assert wa.status(letter.wamid, "delivered") == 200
        assert wa.status(letter.wamid, "read") == 200
        async with live_core.db.sessions() as session:
            row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "summons"))
        assert row is not None
        assert row.read_at is not None
    assert bot.stop() == 0


@pytest.mark.usefixtures("calendar_elsewhere")
async def test_whatsapp_beside_the_telegram_webhook(
    live_core: Core, cli_env: dict[str, str], tmp_path: Path, fake: FakeBotAPI, wa: FakeWhatsApp
) -> None:
    await prepare(live_core, cli_env, tmp_path)
    # The city office gives the treasurer a wa.me link: it opens the chat with DAFTAR typed in.
    args = ("invite", "--coop", SUKAWANA_CURUG, "--role", "bendahara", "--channel", "whatsapp")
    refused = cli(*args, env={**cli_env, "WHATSAPP_BUSINESS_NUMBER": ""}, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        live_core.messages.render("cli_invite_error", code="no_business_number")
    ]
    invite = cli(
        *args,
        "--json",
        env={**cli_env, "WHATSAPP_BUSINESS_NUMBER": "+62 811-2345-678"},
        cwd=tmp_path,
    )
    assert invite.returncode == 0, invite.stderr
    assert "Tautan   : https://wa.me/628112345678?text=DAFTAR%20" in invite.stdout
    link = urlsplit(json.loads(invite.stdout.strip().splitlines()[-1])["link"])
    assert (link.scheme, link.netloc, link.path) == ("https", "wa.me", "/628112345678")
    assert link.query.startswith("text=DAFTAR%20")
    typed = unquote(link.query.removeprefix("text="))
    port, telegram_port = free_port(), free_port()
    fake.forward_webhooks(f"http://127.0.0.1:{telegram_port}")
    env = wa_env(
        cli_env,
        fake,
        wa,
        port,
        WEBHOOK_URL=PUBLIC_URL,
        WEBHOOK_LISTEN=f"127.0.0.1:{telegram_port}",
        WEBHOOK_SECRET=SECRET,
    )
    bot = BotProcess.start(env, tmp_path, "--webhook")
    with bot.shown_on_failure():
        serving(wa, port)
        fake.wait_for(lambda: fake.webhook, "setWebhook", WAIT)
        assert wa.handshake(challenge="31337") == (200, "31337")
        siti = Chat(wa, wa.user(SITI, "Siti Aminah"))
        siti.say(typed, "Akun Anda sudah terhubung sebagai *Bendahara*")
        siti.say("lapor", "pertanyaan 1 dari")
        siti.press("Beroperasi rutin", "pertanyaan 2 dari")
        siti.say("1, 3", "Berapa jumlah anggota")
    assert bot.stop() == 0


@pytest.mark.usefixtures("calendar_elsewhere")
async def test_whatsapp_alone_without_a_telegram_token(
    live_core: Core, cli_env: dict[str, str], tmp_path: Path, fake: FakeBotAPI, wa: FakeWhatsApp
) -> None:
    """A city on WhatsApp only: `run` with the WhatsApp settings and no Telegram token serves
    the webhook, answers, and sends the outbox on WhatsApp; Telegram is never called."""
    code = await prepare(live_core, cli_env, tmp_path)
    port = free_port()
    bot = BotProcess.start(wa_env(cli_env, fake, wa, port, TELEGRAM_BOT_TOKEN=""), tmp_path)
    with bot.shown_on_failure():
        serving(wa, port)
        assert "Bot berjalan di WhatsApp saja" in bot.output()
        siti = Chat(wa, wa.user(SITI, "Siti Aminah"))
        siti.say(f"DAFTAR {code}", "Akun Anda sudah terhubung sebagai *Bendahara*")
        siti.say("lapor", "pertanyaan 1 dari")
        since = siti.mark()
        summons_id = await send_summons(live_core)
        (letter,) = [c for c in siti.expect(since, "Rapat koordinasi pengurus KMP") if c.buttons][
            -1:
        ]
        siti.press("Hadir", "Kehadiran Anda pada *Rapat koordinasi pengurus KMP*")
        assert await rsvp_of(live_core, summons_id) == [(RsvpAnswer.HADIR, "Siti Aminah")]
        assert letter.wamid is not None
    output = stopped_cleanly(bot)
    assert "simulator" not in output.lower()
    assert fake.calls == []
