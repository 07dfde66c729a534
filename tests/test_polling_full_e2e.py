"""`koperasi-bot run` (long polling) as a process, over HTTP, against the fake Bot API: the
journey of tests/test_webhook_e2e.py by getUpdates, with the bot SIGKILLed in the middle of the
report and started again: the person continues where they were, since the draft is a row."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bot.core import Core
from storage.models import RsvpAnswer
from tests import test_webhook_e2e
from tests.fake_bot_api import FakeBotAPI
from tests.test_webhook_e2e import (
    SITI,
    WAIT,
    BotProcess,
    Conversation,
    answer_summons,
    bot_env,
    draft_answers,
    first_questions,
    onboard,
    prepare,
    rsvp_of,
    send_summons,
    stopped_cleanly,
)

# The same fixtures: a core with the real clock on the test database, and the fake Bot API.
live_core = test_webhook_e2e.live_core
fake = test_webhook_e2e.fake
calendar_elsewhere = test_webhook_e2e.calendar_elsewhere


def polling(fake: FakeBotAPI, since: int) -> None:
    """Wait until a bot asks for updates (after the `since`-th call)."""
    fake.wait_for(
        lambda: any(c.method == "getUpdates" for c in fake.calls[since:]), "getUpdates", WAIT
    )


@pytest.mark.usefixtures("calendar_elsewhere")
async def test_polling_journey_survives_a_kill_in_the_middle_of_a_report(
    live_core: Core, cli_env: dict[str, str], tmp_path: Path, fake: FakeBotAPI
) -> None:
    code = await prepare(live_core, cli_env, tmp_path)
    env = bot_env(cli_env, fake)
    siti = Conversation(fake, fake.user(SITI, "Siti", "Aminah"))

    first = BotProcess.start(env, tmp_path)
    with first.shown_on_failure():
        polling(fake, 0)
        assert fake.commands, "setMyCommands"
        assert fake.webhook is None
        onboard(siti, code)
        first_questions(siti)
        # Telegram forgets an update once getUpdates asks past it. The request that would
        # confirm "120" hangs, and the bot is killed then: the next bot is given "120" again.
        typed_id = fake.updates[-1]["update_id"] + 1
        hang = fake.fail(
            kind="timeout", method="getUpdates", params={"offset": typed_id + 1}, delay=WAIT
        )
        typed = siti.user.send("120")
        assert typed["update_id"] == typed_id
        siti.expect(siti.mark() - 1, "Berapa anggota baru")
        fake.wait_for(lambda: hang.used, "the getUpdates that would confirm 120", WAIT)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert fake.confirmed_below() == typed_id

    answers = await draft_answers(live_core)
    assert answers["jumlah_anggota"] == 120
    assert "anggota_baru" not in answers

    since = siti.mark()
    second = BotProcess.start(env, tmp_path)
    with second.shown_on_failure():
        polling(fake, since)
        # Updates are handled in order, so "120" (given again) is handled before /lapor: it
        # changes nothing and gets no answer, and /lapor carries on from the next question.
        said = siti.say("/lapor", "Melanjutkan draf laporan bulan", "Berapa anggota baru")
        assert fake.confirmed_below() > typed_id
        assert len(said) == 2, [call.text for call in said]
        assert "anggota_baru" not in await draft_answers(live_core)
        siti.say("2", "pertanyaan 5 dari")
        answers = await draft_answers(live_core)
        assert answers["jumlah_anggota"] == 120
        assert answers["anggota_baru"] == 2
        assert answers["unit_usaha"] == ["sembako"]
        assert answers["status_operasional"] == "rutin"

        since = siti.mark()
        summons_id = await send_summons(live_core)
        answer_summons(siti, since)
        assert await rsvp_of(live_core, summons_id) == [(RsvpAnswer.HADIR, "Siti Aminah")]
        # The restart neither lost nor repeated an answer: each question was asked once,
        # and the one pending at the kill once more when the report was resumed.
        asked = [c.text for c in siti.said() if "Berapa jumlah anggota" in c.text]
        assert len(asked) == 1
        asked = [c.text for c in siti.said() if "Berapa anggota baru" in c.text]
        assert len(asked) == 2
    stopped_cleanly(second)
