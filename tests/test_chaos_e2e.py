"""`koperasi-bot run` (long polling) as a process against a Bot API that fails one call in five.

For the whole scenario the fake answers a fifth of all calls, getUpdates included, with a 500, a
502, a dropped connection or a 429 (never more than twice in a row for the same method and
chat). Two treasurers link their cooperatives, one sends a whole monthly report, and the
city's summons reaches both through the outbox and is answered. The report must be stored once,
every outbox message delivered once, and each person must have seen every answer the bot had
for them (the handler retries its replies; the sender retries the outbox).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.core import Core
from storage.models import (
    Kelurahan,
    Koperasi,
    OutboxMessage,
    OutboxStatus,
    Report,
    ReportDraft,
    ReportRevision,
    Rsvp,
    RsvpAnswer,
)
from tests import test_webhook_e2e
from tests.bot.test_cli import cli
from tests.fake_bot_api import FakeBotAPI, button_labels
from tests.test_webhook_e2e import (
    SITI,
    SUKAWANA_CURUG,
    WAIT,
    BotProcess,
    Conversation,
    bot_env,
    prepare,
    send_summons,
    stopped_cleanly,
)

live_core = test_webhook_e2e.live_core
fake = test_webhook_e2e.fake
calendar_elsewhere = test_webhook_e2e.calendar_elsewhere

CIPARE = "36.73.01.1002"
RUDI = 4322
FAILURE_RATE = 0.2


def invite(cli_env: dict[str, str], cwd: Path, kode: str) -> str:
    made = cli("invite", "--coop", kode, "--role", "bendahara", "--json", env=cli_env, cwd=cwd)
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout.strip().splitlines()[-1])["code"])


def shows(person: Conversation, label: str) -> None:
    """Wait until the bot shows the button `label`."""
    try:
        person.api.wait_for(lambda: label in person.buttons(), f"the button {label!r}", WAIT)
    except AssertionError as exc:
        shown = [(c.method, c.text[:80], button_labels(c.params)) for c in person.said()[-5:]]
        raise AssertionError(f"{exc}; the chat ends with {shown}") from None


def press(person: Conversation, label: str) -> None:
    """Wait until the bot shows the button, press it, and wait until the press is answered."""
    shows(person, label)
    person.press(label)


def typed(person: Conversation, text: str) -> None:
    """Type an answer and wait until the bot wrote something back."""
    since = person.mark()
    person.user.send(text)
    person.api.wait_for(lambda: person.said(since), f"an answer to {text!r}", WAIT)


def whole_report(person: Conversation) -> None:
    """The monthly report from /lapor to the receipt, as tests/handlers/test_report.py plays it."""
    person.say("/lapor", "pertanyaan 1 dari")
    press(person, "Beroperasi rutin")
    press(person, "Gerai sembako")
    shows(person, "✅ Gerai sembako")
    press(person, "Selesai")
    for answer in ("120", "5", "12,5 jt"):
        typed(person, answer)
    press(person, "Ya, benar")
    for answer in ("Rp1.500.000", "25000000", "0"):
        typed(person, answer)
    press(person, "Sewa")
    for answer in ("Ya", "Tidak", "Ya", "Tidak"):
        press(person, answer)
    typed(person, "Membuka gerai sembako.")
    press(person, "Modal terbatas")
    shows(person, "✅ Modal terbatas")
    press(person, "Selesai")  # one obstacle: no question about the main one
    typed(person, "Simpanan anggota belum terkumpul.")
    press(person, "Pelatihan")
    shows(person, "✅ Pelatihan")
    press(person, "Selesai")
    press(person, "Selesai")  # no photo
    shows(person, "Kirim")
    since = person.mark()
    press(person, "Kirim")
    person.expect(since, "sudah kami terima", "Nomor: <b>LAP/")


@pytest.mark.usefixtures("calendar_elsewhere")
async def test_every_report_and_message_arrives_once_when_a_fifth_of_calls_fail(
    live_core: Core, cli_env: dict[str, str], tmp_path: Path, fake: FakeBotAPI
) -> None:
    siti_code = await prepare(live_core, cli_env, tmp_path)
    rudi_code = invite(cli_env, tmp_path, CIPARE)
    # The test's people answer far faster than anyone types: flood control would stop them.
    bot = BotProcess.start(bot_env(cli_env, fake, FLOOD_LIMIT="1000"), tmp_path)
    with bot.shown_on_failure():
        fake.wait_for(lambda: "getUpdates" in fake.methods(), "polling", WAIT)
        fake.chaos(FAILURE_RATE)
        siti = Conversation(fake, fake.user(SITI, "Siti", "Aminah"))
        rudi = Conversation(fake, fake.user(RUDI, "Rudi", "Hartono"))
        siti.say(f"/start {siti_code}", "Akun Anda sudah terhubung")
        rudi.say(f"/start {rudi_code}", "Akun Anda sudah terhubung")
        whole_report(siti)

        # The summons goes to both cooperatives through the outbox, and both answer.
        since = siti.mark()
        summons_id = await send_summons(live_core, [SUKAWANA_CURUG, CIPARE])
        for person in (siti, rudi):
            (letter,) = person.expect(since, "Rapat koordinasi pengurus KMP")
            assert button_labels({"reply_markup": letter.params["reply_markup"]}) == [
                "Hadir",
                "Diwakilkan",
                "Berhalangan",
            ]
            message = fake.messages[(str(person.user.user_id), int(letter.message_id or 0))]
            person.press("Hadir", "Kehadiran Anda pada", message=message)

        # Chaos did happen, to every kind of call.
        failed = fake.chaos_faults
        assert len(failed) >= 0.1 * len(fake.calls), (len(failed), len(fake.calls))
        assert {"getUpdates", "sendMessage", "editMessageText", "answerCallbackQuery"} <= {
            call.method for call in failed
        }
        fake.chaos(0)
        # Stopped before the checks below, so that a failing one leaves no bot running.
        stopped_cleanly(bot)

    async with live_core.db.sessions() as session:
        reports = (
            await session.execute(
                select(Kelurahan.kode, Report.current_revision)
                .join(Koperasi, Koperasi.id == Report.koperasi_id)
                .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
                .order_by(Kelurahan.kode)
            )
        ).all()
        revisions = await session.scalar(select(func.count()).select_from(ReportRevision))
        drafts = await session.scalar(select(func.count()).select_from(ReportDraft))
        outbox = (await session.scalars(select(OutboxMessage.status))).all()
        answers = (
            await session.scalars(select(Rsvp.answer).where(Rsvp.summons_id == summons_id))
        ).all()
    # Every report stored once.
    assert [tuple(row) for row in reports] == [(SUKAWANA_CURUG, 1)]
    assert (revisions, drafts) == (1, 0)
    # Every outbox message delivered, once.
    assert len(outbox) >= 2  # the two letters, and the officer's overdue digest if it is due
    assert set(outbox) == {OutboxStatus.SENT}
    for person in (siti, rudi):
        letters = [c for c in person.said() if "/UND-KMP/" in c.text]
        assert len([c for c in letters if c.method == "sendMessage"]) == 1, letters
    receipts = [c for c in siti.said() if "sudah kami terima" in c.text]
    assert len(receipts) == 1
    assert sorted(answers) == [RsvpAnswer.HADIR, RsvpAnswer.HADIR]
