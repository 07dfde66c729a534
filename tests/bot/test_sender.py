"""The outbox sender over real HTTP: a PTB Bot, TelegramTransport and a fake Bot API server."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from telegram import Bot
from telegram.error import RetryAfter
from telegram.request import HTTPXRequest

from bot.clock import FixedClock
from bot.core import Core
from bot.outbox import Outgoing, enqueue
from bot.sender import CLAIM_SECONDS, Outcome, Sender, backoff
from handlers.transport import TelegramTransport, retry_after_seconds
from storage.db import Database
from storage.models import ChatIdentity, OutboxMessage, OutboxStatus, Person
from tests.fake_bot_api import TOKEN, FakeBotAPI, iter_windows

WIB = ZoneInfo("Asia/Jakarta")
READ_TIMEOUT = 0.4
SLOW = 0.8  # longer than READ_TIMEOUT: the client gives up


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


@pytest.fixture
async def bot(fake: FakeBotAPI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bot]:
    # PTB 22 warns inside RetryAfter's constructor unless time periods are opted in as
    # timedelta; warnings are errors here, and the bot's entry point opts in the same way.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    request = HTTPXRequest(connection_pool_size=16, read_timeout=READ_TIMEOUT)
    async with Bot(TOKEN, base_url=f"{fake.base_url}/bot", request=request) as bot:
        yield bot


def sender(core: Core, bot: Bot, **options: object) -> Sender:
    options = {"name": "s1", "rate": 200.0, "per_chat_interval": 0.0, **options}
    return Sender(core, TelegramTransport(bot), **options)  # type: ignore[arg-type]


async def recipients(core: Core, *chat_ids: int) -> dict[int, int]:
    """A person with a Telegram identity per chat id; returns chat id -> identity id."""
    now = core.clock.now()
    identities = {}
    async with core.db.transaction() as session:
        for chat_id in chat_ids:
            person = Person(nama=f"Pengurus {chat_id}", created_at=now)
            identity = ChatIdentity(
                person=person, channel="telegram", external_id=str(chat_id), created_at=now
            )
            session.add(identity)
            await session.flush()
            identities[chat_id] = identity.id
    return identities


async def queue(
    core: Core, identity: int, *texts: str, quiet_hours: bool = False, **extra: object
) -> None:
    items = [
        Outgoing(
            dedupe_key=f"test:{identity}:{text}",
            kind="test",
            chat_identity_id=identity,
            text=text,
            quiet_hours=quiet_hours,
            **extra,  # type: ignore[arg-type]
        )
        for text in texts
    ]
    async with core.db.transaction() as session:
        await enqueue(session, items, core.clock.now())


async def rows(core: Core) -> list[OutboxMessage]:
    async with core.db.sessions() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def by_text(core: Core) -> dict[str, OutboxMessage]:
    return {row.text: row for row in await rows(core)}


async def identity(core: Core, identity_id: int) -> ChatIdentity:
    async with core.db.sessions() as session:
        found = await session.get(ChatIdentity, identity_id)
    assert found is not None
    return found


async def drain_until_settled(core: Core, clock: FixedClock, worker: Sender) -> None:
    """Drain, moving the clock past each backoff, until no row is waiting."""
    for _ in range(10):
        await worker.drain()
        if not any(row.status is OutboxStatus.PENDING for row in await rows(core)):
            return
        clock.set(clock.now() + timedelta(minutes=10))
    raise AssertionError("the outbox did not settle")


def per_chat_texts(fake: FakeBotAPI) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = defaultdict(list)
    for call in fake.sent:
        texts[call.chat_id or ""].append(call.text)
    return dict(texts)


async def test_every_deliverable_message_arrives_once_despite_faults(
    core: Core, clock: FixedClock, bot: Bot, fake: FakeBotAPI
) -> None:
    chats = [101, 102, 103, 104, -105, 106, 107, 108]
    ids = await recipients(core, *chats)
    for chat in chats:
        await queue(core, ids[chat], f"{chat} satu", f"{chat} dua")
    # 429 is left to the next test, which times the pause as well.
    fake.fail(chat_id=102, kind="blocked", times=None)
    fake.fail(chat_id=103, kind="server_error", times=2)
    fake.fail(chat_id=104, kind="timeout", delay=SLOW)
    fake.fail(chat_id=-105, kind="migrate", migrate_to=-1000000000105)
    fake.fail(chat_id=106, kind="bad_gateway")

    await drain_until_settled(core, clock, sender(core, bot))

    delivered = Counter(call.text for call in fake.sent)
    expected = {f"{chat} {n}" for chat in chats if chat != 102 for n in ("satu", "dua")}
    assert set(delivered) == expected
    assert set(delivered.values()) == {1}
    # A chat's messages arrive in the order they were queued.
    for chat_id, texts in per_chat_texts(fake).items():
        assert [text.split()[1] for text in texts] == ["satu", "dua"], chat_id
    statuses = {row.text: row.status for row in await rows(core)}
    assert statuses.pop("102 satu") is statuses.pop("102 dua") is OutboxStatus.UNREACHABLE
    assert set(statuses.values()) == {OutboxStatus.SENT}
    assert fake.sent_to(-1000000000105) == ["-105 satu", "-105 dua"]
    assert (await identity(core, ids[-105])).external_id == "-1000000000105"
    assert (await identity(core, ids[102])).unreachable_at is not None


async def test_retry_after_pauses_every_chat_and_does_not_count(
    core: Core, bot: Bot, fake: FakeBotAPI
) -> None:
    ids = await recipients(core, *range(201, 207))
    for chat, identity_id in ids.items():
        await queue(core, identity_id, f"pesan {chat}")
    fake.fail(call=3, kind="retry_after", retry_after=1)

    stats = await sender(core, bot, rate=20.0).drain()

    flood = next(call for call in fake.attempts if call.answer == "retry_after")
    after = [call.at for call in fake.attempts if call.number > flood.number]
    assert after
    # Nobody was written to during the pause, except a send that had started before the 429
    # reached the sender (on a loaded machine the answer can take longer than the 50 ms between
    # two sends).
    during = [at for at in after if at < flood.at + 1.0]
    assert len(during) <= 1, [round(at - flood.at, 3) for at in after]
    assert all(at < flood.at + 0.2 for at in during), [round(at - flood.at, 3) for at in after]
    assert sorted(call.text for call in fake.sent) == sorted(f"pesan {c}" for c in ids)
    assert (stats.sent, stats.retried) == (6, 1)
    row = (await by_text(core))[flood.text]
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 1)


async def test_forbidden_marks_the_identity_and_its_other_rows_unreachable(
    core: Core, bot: Bot, fake: FakeBotAPI
) -> None:
    ids = await recipients(core, 301, 302)
    await queue(core, ids[301], "a", "b", "c")
    await queue(core, ids[302], "d")
    fake.fail(chat_id=301, kind="blocked", times=None)
    worker = sender(core, bot)

    stats = await worker.drain()

    assert [call.text for call in fake.attempts if call.chat_id == "301"] == ["a"]
    assert fake.sent_to(302) == ["d"]
    assert (stats.sent, stats.unreachable) == (1, 3)
    found = await by_text(core)
    assert {found[t].status for t in "abc"} == {OutboxStatus.UNREACHABLE}
    blocked = await identity(core, ids[301])
    assert blocked.unreachable_at == core.clock.now()
    assert blocked.unreachable_reason == "Forbidden: bot was blocked by the user"

    # A message queued later for the blocked chat is closed without asking Telegram, and a
    # round that only closed rows does not end the drain.
    await queue(core, ids[301], "e")
    await queue(core, ids[302], "f")
    later = await sender(core, bot, batch=1).drain()
    assert (later.unreachable, later.sent) == (1, 1)
    assert [call.text for call in fake.attempts[2:]] == ["f"]
    assert (await by_text(core))["e"].status is OutboxStatus.UNREACHABLE


async def test_chat_migration_updates_the_identity_and_delivers(
    core: Core, bot: Bot, fake: FakeBotAPI
) -> None:
    ids = await recipients(core, -401)
    await queue(core, ids[-401], "satu", "dua")
    fake.fail(chat_id=-401, kind="migrate", migrate_to=-1000000000401, times=None)

    stats = await sender(core, bot).drain()

    assert [(c.chat_id, c.answer) for c in fake.attempts] == [
        ("-401", "migrate"),
        ("-1000000000401", "ok"),
        ("-1000000000401", "ok"),
    ]
    assert (await identity(core, ids[-401])).external_id == "-1000000000401"
    assert stats.sent == 2
    assert {(row.status, row.attempts) for row in await rows(core)} == {(OutboxStatus.SENT, 1)}


async def test_network_errors_back_off_then_fail_with_the_reason(
    core: Core, clock: FixedClock, bot: Bot, fake: FakeBotAPI
) -> None:
    ids = await recipients(core, 501, 502, 503, 504)
    for chat, identity_id in ids.items():
        await queue(core, identity_id, f"untuk {chat}")
    fake.fail(chat_id=501, kind="server_error", times=None)
    fake.fail(chat_id=502, kind="bad_gateway")
    fake.fail(chat_id=503, kind="timeout", delay=SLOW)
    fake.fail(chat_id=504, kind="bad_request")
    worker = sender(core, bot, max_attempts=3)
    start = clock.now()

    first = await worker.drain()
    found = await by_text(core)
    assert (first.retried, first.failed) == (3, 1)
    assert found["untuk 504"].status is OutboxStatus.FAILED
    assert "can't parse entities" in (found["untuk 504"].last_error or "").lower()
    for chat in (501, 502, 503):
        row = found[f"untuk {chat}"]
        assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
        assert row.next_attempt_at == start + backoff(1) == start + timedelta(seconds=2)
    assert "Timed out" in (found["untuk 503"].last_error or "")

    assert (await worker.drain()).total == 0  # nothing is due before the backoff ends
    clock.set(start + timedelta(seconds=2))
    second = await worker.drain()
    assert (second.sent, second.retried) == (2, 1)
    assert (await by_text(core))["untuk 501"].next_attempt_at == clock.now() + timedelta(seconds=4)
    clock.set(clock.now() + timedelta(seconds=4))
    assert (await worker.drain()).failed == 1

    given_up = (await by_text(core))["untuk 501"]
    assert (given_up.status, given_up.attempts) == (OutboxStatus.FAILED, 3)
    assert given_up.last_error == "NetworkError: Internal Server Error (gave up after 3 attempts)"
    assert len([c for c in fake.attempts if c.chat_id == "501"]) == 3
    assert sorted(call.text for call in fake.sent) == ["untuk 502", "untuk 503"]


async def test_pacing_keeps_the_global_rate_and_the_per_chat_interval(
    core: Core, bot: Bot, fake: FakeBotAPI
) -> None:
    rate, interval = 30.0, 1.0  # Telegram's free tier: about 30 msg/s, 1 msg/s per chat
    ids = await recipients(core, *range(600, 630))
    for chat, identity_id in ids.items():
        await queue(core, identity_id, f"{chat} pertama", f"{chat} kedua")

    started = time.monotonic()
    stats = await sender(core, bot, rate=rate, per_chat_interval=interval).drain()

    assert stats.sent == 60
    arrivals = [call.at for call in fake.sent]
    assert max(count for _, count in iter_windows(arrivals)) <= rate + 1  # jitter of the clock
    assert arrivals[-1] - started >= (60 - 1) / rate - 0.05
    by_chat: dict[str, list[float]] = defaultdict(list)
    for call in fake.sent:
        by_chat[call.chat_id or ""].append(call.at)
    for chat_id, texts in per_chat_texts(fake).items():
        assert texts == [f"{chat_id} pertama", f"{chat_id} kedua"]
    # Arrival times are taken by the fake's thread: on a loaded machine the first of two can be
    # read late. Without the per-chat pacing the two would be 1/30 s apart, not about 1 s.
    assert all(later - first >= interval - 0.1 for first, later in by_chat.values())


async def test_quiet_hours_rows_wait_for_the_sending_window(
    core: Core, clock: FixedClock, bot: Bot, fake: FakeBotAPI
) -> None:
    clock.set(datetime(2026, 11, 27, 21, 0, tzinfo=WIB))
    ids = await recipients(core, 701, 702)
    await queue(core, ids[701], "pengingat", quiet_hours=True)
    await queue(core, ids[701], "mendesak")  # not held back by the quiet row before it
    await queue(core, ids[702], "juga pengingat", quiet_hours=True)
    worker = sender(core, bot)

    assert (await worker.drain()).sent == 1
    assert [call.text for call in fake.sent] == ["mendesak"]
    clock.set(datetime(2026, 11, 28, 6, 59, tzinfo=WIB))
    assert (await worker.drain()).sent == 0
    clock.set(datetime(2026, 11, 28, 7, 0, tzinfo=WIB))
    assert (await worker.drain()).sent == 2
    assert sorted(call.text for call in fake.sent[1:]) == ["juga pengingat", "pengingat"]


async def test_a_stale_lease_is_reclaimed_and_a_live_one_is_not(
    core: Core, clock: FixedClock, bot: Bot, fake: FakeBotAPI
) -> None:
    ids = await recipients(core, 801, 802, 803)
    now = clock.now()

    def claimed(key: str, chat: int, lease: timedelta, attempts: int) -> OutboxMessage:
        return OutboxMessage(
            dedupe_key=key,
            kind="test",
            chat_identity_id=ids[chat],
            text=key,
            quiet_hours=False,
            priority=5,
            status=OutboxStatus.SENDING,
            attempts=attempts,
            next_attempt_at=now - timedelta(minutes=5),
            lease_until=now + lease,
            claimed_by="crashed",
            created_at=now - timedelta(minutes=5),
        )

    async with core.db.transaction() as session:
        session.add(claimed("stale", 801, timedelta(seconds=-1), attempts=1))
        session.add(claimed("live", 802, timedelta(seconds=30), attempts=1))
        session.add(claimed("last-try", 803, timedelta(seconds=-1), attempts=3))
    await queue(core, ids[802], "after live")
    worker = sender(core, bot, max_attempts=3)

    stats = await worker.drain()

    assert [call.text for call in fake.sent] == ["stale"]
    assert stats.failed == 1
    found = await by_text(core)
    assert (found["stale"].status, found["stale"].attempts) == (OutboxStatus.SENT, 2)
    assert found["stale"].claimed_by == "s1"
    assert found["live"].status is OutboxStatus.SENDING  # its sender may still be at it
    assert found["after live"].status is OutboxStatus.PENDING  # and it goes first
    assert found["last-try"].status is OutboxStatus.FAILED
    assert "interrupted" in (found["last-try"].last_error or "")

    clock.set(now + timedelta(seconds=31))
    await worker.drain()
    assert [call.text for call in fake.sent] == ["stale", "live", "after live"]


async def test_two_senders_with_their_own_engines_send_each_row_once(
    core: Core, bot: Bot, fake: FakeBotAPI
) -> None:
    ids = await recipients(core, *range(900, 940))
    for chat, identity_id in ids.items():
        await queue(core, identity_id, f"{chat}-1", f"{chat}-2")
    other_db = Database(core.settings.database_url)
    other_core = Core(core.settings, other_db, core.clock, core.messages)
    # A patient client: on a loaded machine an answer slower than the fixture's 0.4 s makes a
    # delivered message a timeout, tried again later (at least once), which is not this test's
    # subject (tests/bot/test_sender.py's timeout tests are).
    request = HTTPXRequest(connection_pool_size=16, read_timeout=10.0)
    patient = Bot(TOKEN, base_url=f"{fake.base_url}/bot", request=request)
    await patient.initialize()
    try:
        first = sender(core, patient, name="s1", batch=8, rate=500.0)
        second = sender(other_core, patient, name="s2", batch=8, rate=500.0)
        for _ in range(20):
            await asyncio.gather(first.drain(), second.drain())
            if all(row.status is OutboxStatus.SENT for row in await rows(core)):
                break
    finally:
        await other_db.dispose()
        await patient.shutdown()

    delivered = Counter(call.text for call in fake.sent)
    assert len(delivered) == 80
    assert set(delivered.values()) == {1}
    assert len(fake.attempts) == 80
    for chat_id, texts in per_chat_texts(fake).items():
        assert texts == [f"{chat_id}-1", f"{chat_id}-2"]
    assert {row.claimed_by for row in await rows(core)} == {"s1", "s2"}


async def test_senders_on_postgresql_share_one_rate_and_one_pause(
    core: Core, bot: Bot, fake: FakeBotAPI
) -> None:
    if core.db.dialect != "postgresql":
        pytest.skip("the send budget is shared on PostgreSQL only (SQLite: one sending process)")
    rate = 40.0
    ids = await recipients(core, *range(1300, 1380))
    for chat, identity_id in ids.items():
        await queue(core, identity_id, f"untuk {chat}")
    fake.fail(call=30, kind="retry_after", retry_after=1)
    other_db = Database(core.settings.database_url)
    other_core = Core(core.settings, other_db, core.clock, core.messages)
    try:
        first = sender(core, bot, name="s1", batch=10, rate=rate)
        second = sender(other_core, bot, name="s2", batch=10, rate=rate)
        for _ in range(5):
            await asyncio.gather(first.drain(), second.drain())
            if all(row.status is OutboxStatus.SENT for row in await rows(core)):
                break
    finally:
        await other_db.dispose()

    assert sorted(call.text for call in fake.sent) == sorted(f"untuk {c}" for c in ids)
    assert {row.claimed_by for row in await rows(core)} == {"s1", "s2"}
    # Two senders at `rate` each, one budget: together no faster than `rate`.
    arrivals = [call.at for call in fake.sent]
    assert max(count for _, count in iter_windows(arrivals)) <= rate + 1
    # The 429 paused both: only slots claimed before it (a quarter second's worth) went on.
    flood = next(call for call in fake.attempts if call.answer == "retry_after")
    during = [c for c in fake.attempts if flood.at + CLAIM_SECONDS + 0.05 < c.at < flood.at + 1]
    assert not during, [round(c.at - flood.at, 3) for c in during]


async def test_run_sends_when_woken_and_stops(core: Core, bot: Bot, fake: FakeBotAPI) -> None:
    ids = await recipients(core, 1001)
    worker = sender(core, bot, poll_interval=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.1)
    await queue(core, ids[1001], "halo")
    worker.wake()
    for _ in range(150):  # up to 3 s, far below the 30 s poll interval
        if fake.sent:
            break
        await asyncio.sleep(0.02)
    assert fake.sent_to(1001) == ["halo"]
    stop.set()
    await asyncio.wait_for(task, timeout=3)


async def test_stopping_during_a_pause_hands_the_unsent_rows_back(
    core: Core, bot: Bot, fake: FakeBotAPI
) -> None:
    ids = await recipients(core, 1201, 1202, 1203)
    for chat, identity_id in ids.items():
        await queue(core, identity_id, f"untuk {chat}")
    # Every call is answered 429: under load a second send may start before the first 429
    # is known, and it must be handed back the same way.
    fake.fail(kind="retry_after", retry_after=30, times=None)
    stop = asyncio.Event()
    task = asyncio.create_task(sender(core, bot).run(stop))
    for _ in range(150):
        if fake.attempts:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, timeout=3)  # not the 30 s Telegram asked for

    assert 1 <= len(fake.attempts) <= 3
    assert not fake.sent
    assert {(row.status, row.attempts, row.claimed_by) for row in await rows(core)} == {
        (OutboxStatus.PENDING, 0, None)
    }


async def test_an_answer_lost_after_telegram_accepted_sends_again(
    core: Core, clock: FixedClock, bot: Bot, fake: FakeBotAPI
) -> None:
    """The documented duplicate: Telegram has no idempotency key for sendMessage."""
    ids = await recipients(core, 1101)
    await queue(core, ids[1101], "sekali saja")
    fake.fail(chat_id=1101, kind="slow", delay=SLOW)

    await drain_until_settled(core, clock, sender(core, bot))

    assert fake.sent_to(1101) == ["sekali saja", "sekali saja"]


TRANSPORT_CASES = [
    ("retry_after", Outcome.RETRY_AFTER),
    ("blocked", Outcome.UNREACHABLE),
    ("deactivated", Outcome.UNREACHABLE),
    ("chat_not_found", Outcome.UNREACHABLE),
    ("bad_request", Outcome.PERMANENT),
    ("migrate", Outcome.MIGRATED),
    ("server_error", Outcome.TRANSIENT),
    ("bad_gateway", Outcome.TRANSIENT),
    ("timeout", Outcome.TRANSIENT),
    (None, Outcome.SENT),
]


async def test_the_transport_maps_bot_api_answers(bot: Bot, fake: FakeBotAPI) -> None:
    transport = TelegramTransport(bot)
    for number, (kind, outcome) in enumerate(TRANSPORT_CASES, start=1):
        if kind is not None:
            fake.fail(call=number, kind=kind, retry_after=3, migrate_to=-1009, delay=SLOW)
        delivery = await transport.deliver(
            "-7", "<b>Halo</b> &amp; selamat", [[["Isi laporan", "report:start"]]]
        )
        assert delivery.outcome is outcome, kind
        call = fake.attempts[-1]
        assert call.number == number
        assert call.params["parse_mode"] == "HTML"
        assert call.chat_id == "-7"
        assert call.params["reply_markup"] == {
            "inline_keyboard": [[{"text": "Isi laporan", "callback_data": "report:start"}]]
        }
        if outcome is Outcome.SENT:
            assert delivery.message_id == str(call.message_id)
        elif outcome is Outcome.RETRY_AFTER:
            assert delivery.retry_after == 3
        elif outcome is Outcome.MIGRATED:
            assert delivery.new_chat_id == "-1009"
        else:
            assert delivery.error, kind
    plain = await transport.deliver("42", "tanpa tombol", None)
    assert plain.outcome is Outcome.SENT
    assert "reply_markup" not in fake.attempts[-1].params


@pytest.mark.parametrize("timedelta_mode", [None, "1"])
def test_retry_after_seconds_without_deprecation_warnings(
    monkeypatch: pytest.MonkeyPatch, timedelta_mode: str | None
) -> None:
    # Built with the opt-in (PTB's constructor reads the value itself), read either way.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    whole, fraction = RetryAfter(7), RetryAfter(timedelta(seconds=2.5))
    if timedelta_mode is None:
        monkeypatch.delenv("PTB_TIMEDELTA")
    assert retry_after_seconds(whole) == 7.0
    assert retry_after_seconds(fraction) == 2.5
