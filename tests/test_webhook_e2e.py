"""`koperasi-bot run --webhook` as a process, over HTTP, against the fake Bot API on 127.0.0.1.

The fake plays Telegram and the TLS-ending reverse proxy in front of the bot: it records the
webhook the bot sets and POSTs pushed updates to it with the secret. Requests without the secret
are refused and change nothing; with it, a board member links, answers the first questions of the
report with buttons, and answers a summons the bot's own outbox sender delivered.

The journey's steps live here; tests/test_polling_full_e2e.py plays the same journey by polling.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot import officers
from bot import summons as summons_service
from bot.config import ConfigError, Settings, load_settings
from bot.core import Core
from bot.identity import identify
from bot.leader import Leadership
from bot.registry import SAMPLE_REGISTRY, import_file
from storage.models import (
    BoardMember,
    ChatIdentity,
    Invite,
    Kelurahan,
    Koperasi,
    Person,
    ReportDraft,
    Rsvp,
    RsvpAnswer,
)
from tests.bot.test_cli import ROOT, cli
from tests.fake_bot_api import TOKEN, Call, FakeBotAPI, FakeUser, button_labels, post_webhook

SUKAWANA_CURUG = "36.73.04.1007"
SITI = 4321
OFFICER = 5551
STRANGER = 6666
SECRET = "kmp-Webhook_secret-0123456789abcdef"
PUBLIC_URL = "https://bot.example.go.id/telegram/kmp"
# What the bot writes to the chat: its replies, and the questions it edits in place.
SAYS = ("sendMessage", "editMessageText", "editMessageReplyMarkup", "sendPhoto", "sendDocument")
WAIT = 30.0


# -- the bot process -------------------------------------------------------------------------


@dataclass
class BotProcess:
    """One `koperasi-bot run`; its log goes to a file, where a pipe could fill and block it."""

    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, env: dict[str, str], cwd: Path, *args: str) -> BotProcess:
        log = cwd / f"bot-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot", "run", *args],
                cwd=cwd,
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(process, log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @contextmanager
    def shown_on_failure(self) -> Iterator[None]:
        """On a failure, kill the bot and print its log (pytest shows it with the failure)."""
        try:
            yield
        except BaseException:
            if self.alive():
                self.process.kill()
                self.process.wait()
            print(f"--- bot log ({self.log.name}) ---\n{self.output()}")
            raise

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `signum` and wait for the exit code (killed if it does not come in time)."""
        if self.alive():
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the bot did not stop on {signum!r}:\n{self.output()}") from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bot_env(cli_env: dict[str, str], api: FakeBotAPI, **extra: str) -> dict[str, str]:
    return {
        **cli_env,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": api.base_url,
        "TELEGRAM_BOT_USERNAME": "kmp_test_bot",
        # Proactive messages wait for 07.00-20.00 WIB by default; tests run at any hour.
        "SEND_WINDOW_START": "00:00",
        "SEND_WINDOW_END": "23:59:59",
        "OUTBOX_PER_CHAT_INTERVAL_SECONDS": "0",
        **extra,
    }


# -- the world before the bot starts ---------------------------------------------------------


@pytest.fixture
async def live_core(settings: Settings) -> AsyncIterator[Core]:
    """A core on the test database with the real clock, as the bot process has."""
    core = Core.create(settings)
    yield core
    await core.close()


@pytest.fixture
async def calendar_elsewhere(live_core: Core) -> AsyncIterator[None]:
    """This test process leads the scheduler, so the bots it starts only send and answer: the
    journeys run on the real clock, and on the first days of a month the calendar would
    otherwise put a "report is open" notice in the middle of them."""
    leader = Leadership(live_core, f"{socket.gethostname()}:{os.getpid()}:tests0", interval=600)
    assert await leader.check()
    yield
    await leader.release()


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


async def prepare(core: Core, cli_env: dict[str, str], cwd: Path) -> str:
    """The sample registry and a city officer; the invite code as `koperasi-bot invite` gives
    it to the city office."""
    await import_file(core.db, SAMPLE_REGISTRY, core.clock.now(), "test")
    await officers.add_officer(
        core,
        telegram_id=str(OFFICER),
        nama="Oki Pratama",
        kecamatan=None,
        can_broadcast=True,
        actor="test",
    )
    invite = cli(
        "invite", "--coop", SUKAWANA_CURUG, "--role", "bendahara", "--json", env=cli_env, cwd=cwd
    )
    assert invite.returncode == 0, invite.stderr
    return str(json.loads(invite.stdout.strip().splitlines()[-1])["code"])


# -- a person talking to the bot through the fake --------------------------------------------


class Conversation:
    """One person's private chat: what they type or press is pushed to the fake, and each
    step waits until the bot has written what the person should see next."""

    def __init__(self, api: FakeBotAPI, user: FakeUser) -> None:
        self.api = api
        self.user = user

    def mark(self) -> int:
        return len(self.api.calls)

    def said(self, since: int = 0) -> list[Call]:
        chat = str(self.user.user_id)
        return [
            call
            for call in self.api.calls[since:]
            if call.method in SAYS and call.chat_id == chat and call.delivered
        ]

    def expect(self, since: int, *texts: str) -> list[Call]:
        """Wait until the bot wrote each text (in any message since `since`)."""

        def seen() -> list[Call] | None:
            said = self.said(since)
            written = "\n".join(call.text for call in said)
            return said if all(text in written for text in texts) else None

        found: list[Call] = self.api.wait_for(seen, f"the bot to write {texts}", WAIT)
        return found

    def say(self, text: str, *expect: str) -> list[Call]:
        since = self.mark()
        self.user.send(text)
        return self.expect(since, *expect)

    def press(self, label: str, *expect: str, message: dict[str, Any] | None = None) -> list[Call]:
        """Press a button and wait until the press is answered and the bot wrote `expect`."""
        since = self.mark()
        update = self.user.press(label, message)
        query_id = update["callback_query"]["id"]
        self.api.wait_for(
            lambda: any(c.params.get("callback_query_id") == query_id for c in self.api.answers),
            f"the press of {label!r} to be answered",
            WAIT,
        )
        return self.expect(since, *expect)

    def buttons(self) -> list[str]:
        last = self.api.last_with_buttons(self.user.user_id)
        return button_labels(last) if last else []


def onboard(siti: Conversation, code: str) -> None:
    siti.say(f"/start {code}", "Akun Anda sudah terhubung sebagai <b>Bendahara</b>")


def first_questions(siti: Conversation) -> None:
    """/lapor, then the first questions: a choice and a multi-select, up to the first number."""
    siti.say("/lapor", "pertanyaan 1 dari")
    assert "Beroperasi rutin" in siti.buttons()
    said = siti.press("Beroperasi rutin", "<b>Status usaha</b>: Beroperasi rutin", "pertanyaan 2")
    # The question is edited into the answer and the next one is a new message.
    assert {call.method for call in said} >= {"editMessageText", "sendMessage"}
    siti.press("Gerai sembako")
    siti.api.wait_for(lambda: "✅ Gerai sembako" in siti.buttons(), "the ticked choice", WAIT)
    siti.press("Selesai", "<b>Unit usaha berjalan</b>: Gerai sembako", "Berapa jumlah anggota")


async def draft_answers(core: Core) -> dict[str, Any]:
    async with core.db.sessions() as session:
        draft = await session.scalar(
            select(ReportDraft)
            .join(ChatIdentity, ChatIdentity.person_id == ReportDraft.person_id)
            .where(ChatIdentity.external_id == str(SITI))
        )
    assert draft is not None, "no report draft for Siti"
    return dict(draft.answers)


async def send_summons(core: Core, kelurahan: Sequence[str] = (SUKAWANA_CURUG,)) -> int:
    """The city sends a summons to Siti's cooperative, or those of `kelurahan` (through the
    core, as /panggil does); the bot's outbox sender delivers it."""
    async with core.db.sessions() as session:
        officer = await identify(session, "telegram", str(OFFICER))
        koperasi_ids = list(
            await session.scalars(
                select(Koperasi.id).join(Kelurahan).where(Kelurahan.kode.in_(kelurahan))
            )
        )
    assert len(koperasi_ids) == len(kelurahan)
    day = core.clock.now().astimezone(core.settings.tz).date() + timedelta(days=7)
    summons, reach = await summons_service.send(
        core,
        officer,
        summons_service.Spec(
            hal="Rapat koordinasi pengurus KMP",
            starts_at=datetime.combine(day, clock_time(9, 0), tzinfo=core.settings.tz),
            tempat="Aula Setda Kota Serang",
            acara="Evaluasi kegiatan usaha",
            narahubung="Oki (0812-3456-7890)",
            target=summons_service.Target(kind="koperasi", koperasi_ids=koperasi_ids),
        ),
    )
    assert reach.person_count == len(kelurahan)
    return summons.id


def answer_summons(siti: Conversation, since: int) -> None:
    """The letter arrives (from the outbox, not as a reply); Siti presses Hadir."""
    (letter,) = siti.expect(since, "Rapat koordinasi pengurus KMP")
    assert letter.method == "sendMessage"
    assert [b["text"] for row in letter.buttons for b in row] == [
        "Hadir",
        "Diwakilkan",
        "Berhalangan",
    ]
    message = siti.api.messages[(str(SITI), int(letter.message_id or 0))]
    siti.press("Hadir", "Kehadiran Anda pada <b>Rapat koordinasi pengurus KMP</b>", message=message)


async def rsvp_of(core: Core, summons_id: int) -> list[tuple[RsvpAnswer, str]]:
    async with core.db.sessions() as session:
        rows = await session.execute(
            select(Rsvp.answer, Person.nama)
            .join(Person, Person.id == Rsvp.person_id)
            .where(Rsvp.summons_id == summons_id)
        )
        return [(answer, nama) for answer, nama in rows.all()]


async def snapshot(core: Core) -> dict[str, Any]:
    """What a forged update could change: people, identities, memberships, invites, drafts."""
    async with core.db.sessions() as session:
        counts = {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model))
            for model in (Person, ChatIdentity, BoardMember, ReportDraft, Rsvp)
        }
        used = await session.scalar(select(func.count()).where(Invite.used_at.is_not(None)))
    return {**counts, "invites used": used}


def stopped_cleanly(bot: BotProcess) -> str:
    code = bot.stop(signal.SIGTERM)
    output = bot.output()
    assert code == 0, output
    assert "Traceback" not in output, output
    return output


# -- the test --------------------------------------------------------------------------------


@pytest.mark.usefixtures("calendar_elsewhere")
async def test_webhook_refuses_without_the_secret_and_serves_the_journey(
    live_core: Core, cli_env: dict[str, str], tmp_path: Path, fake: FakeBotAPI
) -> None:
    code = await prepare(live_core, cli_env, tmp_path)
    port = free_port()
    fake.forward_webhooks(f"http://127.0.0.1:{port}")
    env = bot_env(
        cli_env,
        fake,
        WEBHOOK_URL=PUBLIC_URL,
        WEBHOOK_LISTEN=f"127.0.0.1:{port}",
        WEBHOOK_SECRET=SECRET,
    )
    bot = BotProcess.start(env, tmp_path, "--webhook")
    with bot.shown_on_failure():
        webhook = fake.wait_for(lambda: fake.webhook, "setWebhook", WAIT)
        assert webhook.url == PUBLIC_URL
        assert webhook.secret_token == SECRET
        assert {"message", "callback_query"} <= set(webhook.allowed_updates or [])
        assert "getUpdates" not in fake.methods()
        assert fake.commands, "setMyCommands"

        # A stranger who found the URL posts Siti's own /start: refused, nothing processed.
        local = f"http://127.0.0.1:{port}/telegram/kmp"
        forged = {
            "update_id": 900,
            **FakeUser(fake, STRANGER, "Penyusup").text_update(f"/start {code}"),
        }
        before = await snapshot(live_core)
        for secret in (None, "", "wrong", SECRET[:-1], SECRET + "x", SECRET.upper()):
            status, _ = post_webhook(local, forged, secret)
            assert status == 403, secret
        # With the secret, what is not an update is a bad request; another path is not ours.
        assert post_webhook(local, b"{not json", SECRET)[0] == 400
        assert post_webhook(local, b"[1, 2]", SECRET)[0] == 400
        assert post_webhook(f"http://127.0.0.1:{port}/other", forged, SECRET)[0] == 404
        assert await snapshot(live_core) == before

        siti = Conversation(fake, fake.user(SITI, "Siti", "Aminah"))
        onboard(siti, code)
        # Updates are processed in order: had the stranger's been queued, it would have taken
        # the invite before Siti's /start.
        assert not [call for call in fake.calls if call.chat_id == str(STRANGER)]
        async with live_core.db.sessions() as session:
            stranger = await session.scalar(
                select(ChatIdentity).where(ChatIdentity.external_id == str(STRANGER))
            )
        assert stranger is None

        first_questions(siti)
        siti.say("120", "Berapa anggota baru")
        answers = await draft_answers(live_core)
        assert answers["jumlah_anggota"] == 120
        assert answers["unit_usaha"] == ["sembako"]

        since = siti.mark()
        summons_id = await send_summons(live_core)
        answer_summons(siti, since)
        assert await rsvp_of(live_core, summons_id) == [(RsvpAnswer.HADIR, "Siti Aminah")]

        # Every update went through the webhook, each delivered once and answered 200 (once
        # handled: the last answer may come just after the bot's reply).
        updates = [u["update_id"] for u in fake.updates]
        fake.wait_for(
            lambda: [d.update_id for d in fake.deliveries if d.status == 200] == updates,
            "every update answered 200",
            WAIT,
        )
        assert {d.status for d in fake.deliveries} == {200}
        assert {"answerCallbackQuery", "editMessageText", "sendMessage"} <= set(fake.methods())
    output = stopped_cleanly(bot)
    assert "without the secret: refused" in output
    assert "with a wrong secret: refused" in output
    assert SECRET not in output


def test_webhook_settings_are_checked_before_anything_starts(tmp_path: Path) -> None:
    def problem(**values: str) -> str:
        try:
            load_settings(_env_file=None, **values).check_webhook()
        except ConfigError as exc:
            return str(exc)
        return ""

    token = {"telegram_bot_token": TOKEN}
    url = {**token, "webhook_url": PUBLIC_URL}
    assert problem(**url, webhook_secret=SECRET) == ""
    assert problem(webhook_url=PUBLIC_URL, webhook_secret=SECRET).startswith(
        "TELEGRAM_BOT_TOKEN: required"
    )
    assert problem(**token, webhook_secret=SECRET).startswith("WEBHOOK_URL: required")
    assert problem(**url).startswith("WEBHOOK_SECRET: required")
    assert problem(**url, webhook_secret="  ").startswith("WEBHOOK_SECRET: required")
    for bad in ("rahasia kita!", "x" * 257, "kunci/rahasia", "sandi+1"):
        message = problem(**url, webhook_secret=bad)
        assert message.startswith("WEBHOOK_SECRET: use 1 to 256 characters of A-Z"), bad
        assert bad not in message
    assert problem(**url, webhook_secret="_-" + "a" * 254) == ""
    # Telegram delivers to https only; a local Bot API server also takes http.
    http = {**token, "webhook_secret": SECRET, "webhook_url": "http://bot.example.go.id:8080/tg"}
    assert problem(**http).startswith("WEBHOOK_URL: Telegram needs an https:// URL")
    assert problem(**http, telegram_api_base_url="http://127.0.0.1:8081") == ""
    complete = {**url, "webhook_secret": SECRET}
    assert problem(**{**complete, "webhook_url": "bot.example.go.id"}).startswith(
        "WEBHOOK_URL: expected the public URL"
    )
    assert problem(**complete, webhook_listen="8443").startswith(
        "WEBHOOK_LISTEN: expected host:port"
    )
    settings = load_settings(_env_file=None, **url, webhook_listen="[::1]:9443")
    assert settings.webhook_address == ("::1", 9443)
    assert settings.webhook_path == "/telegram/kmp"

    # As a person sees it: one line naming the setting, and nothing started.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/koperasi.db", "TELEGRAM_BOT_TOKEN": TOKEN}
    result = cli("run", "--webhook", env={**env, "WEBHOOK_URL": PUBLIC_URL}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Konfigurasi salah: WEBHOOK_SECRET: required for `run --webhook`"
    )
    assert not (tmp_path / "koperasi.db").exists()


def test_webhook_startup_failures_stop_with_one_clear_line(
    tmp_path: Path, fake: FakeBotAPI
) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/koperasi.db",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": fake.base_url,
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_URL": PUBLIC_URL,
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(
            "run", "--webhook", env={**env, "WEBHOOK_LISTEN": f"127.0.0.1:{port}"}, cwd=tmp_path
        )
    assert result.returncode == 1, result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"Bot tidak dapat dijalankan: tidak dapat menerima di WEBHOOK_LISTEN 127.0.0.1:{port}: "
        )
    )
    assert fake.webhook is None

    # Telegram refuses the URL (the fake, as Telegram, takes https only).
    port = free_port()
    result = cli(
        "run",
        "--webhook",
        env={
            **env,
            "WEBHOOK_URL": "http://bot.example.go.id/tg",
            "WEBHOOK_LISTEN": f"127.0.0.1:{port}",
        },
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("Bot tidak dapat dijalankan: Telegram menolak WEBHOOK_URL (")
    )
    assert "Traceback" not in result.stderr
