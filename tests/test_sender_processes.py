"""`koperasi-bot send` as separate processes against the fake Bot API: a sender killed in the
middle of a broadcast and taken over, a graceful stop, and several senders sharing the outbox.

What a kill may cost. The sender has up to `concurrency` sends in flight at once
(OUTBOX_CONCURRENCY, 64 by default).
A message the Bot API accepted but whose row was not yet marked sent when the process died is
sent again by whoever reclaims the row after its lease: that is the at-least-once promise of
bot/sender.py. So a kill duplicates at most `concurrency` messages, only messages the dead
process held, and each at most once; a graceful stop (SIGTERM, SIGINT) duplicates nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import func, select

from bot.config import Settings
from bot.core import Core
from bot.outbox import Outgoing, enqueue
from storage.models import ChatIdentity, OutboxMessage, OutboxStatus, Person
from tests.bot.test_cli import ROOT, cli
from tests.fake_bot_api import TOKEN, FakeBotAPI

# Chat ids of the recipients: FIRST_CHAT + 1, + 2, ...
FIRST_CHAT = 700_000_000
# Each sender's rows stay reserved this long: short, so a takeover happens within the test.
LEASE_SECONDS = 2.0
# What the killed process may have had in flight: the sender's default concurrency.
IN_FLIGHT = Settings.model_fields["outbox_concurrency"].default
TIMEOUT = 60.0


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


@pytest.fixture
def send_env(cli_env: dict[str, str], fake: FakeBotAPI) -> dict[str, str]:
    return {
        **cli_env,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": fake.base_url,
        "OUTBOX_RATE_PER_SECOND": "400",
        "OUTBOX_PER_CHAT_INTERVAL_SECONDS": "0",
    }


class SenderProcess:
    """One `koperasi-bot send` subprocess; its output goes to files so a full pipe never
    blocks it."""

    def __init__(self, env: dict[str, str], cwd: Path, label: str, *args: str) -> None:
        self.stdout_path = cwd / f"{label}.out"
        self.stderr_path = cwd / f"{label}.err"
        self._files: list[IO[bytes]] = [self.stdout_path.open("wb"), self.stderr_path.open("wb")]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "send", *args],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=cwd,
            stdout=self._files[0],
            stderr=self._files[1],
        )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            for file in self._files:
                file.close()

    def stop(self) -> None:
        """For the teardown: whatever state it is in, it must not outlive the test."""
        if self.process.poll() is None:
            self.process.kill()
        self.wait()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


@pytest.fixture
def senders(send_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., SenderProcess]]:
    started: list[SenderProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> SenderProcess:
        process = SenderProcess(
            {**send_env, **(env or {})}, tmp_path, f"sender{len(started) + 1}", *args
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def broadcast(core: Core, count: int) -> None:
    """One message to each of `count` new people, as a broadcast queues them; due now on the
    real clock (the sender processes do not share the test's fixed clock)."""
    now = datetime.now(UTC)
    async with core.db.transaction() as session:
        identities = [
            ChatIdentity(
                person=Person(nama=f"Pengurus {n}", created_at=now),
                channel="telegram",
                external_id=str(FIRST_CHAT + n),
                created_at=now,
            )
            for n in range(1, count + 1)
        ]
        session.add_all(identities)
        await session.flush()
        items = [
            Outgoing(
                dedupe_key=f"siaran:{identity.id}",
                kind="siaran",
                chat_identity_id=identity.id,
                text="Rapat anggota Sabtu pukul 09.00 di balai desa.",
                quiet_hours=False,
            )
            for identity in identities
        ]
        # In slices: SQLite caps the number of bound parameters in one statement.
        for start in range(0, len(items), 500):
            await enqueue(session, items[start : start + 500], now)


async def statuses(core: Core) -> Counter[str]:
    async with core.db.sessions() as session:
        rows = await session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        )
        return Counter({status.value: count for status, count in rows.all()})


async def outbox(core: Core) -> dict[str, OutboxMessage]:
    """The rows by the chat id they go to."""
    async with core.db.sessions() as session:
        rows = await session.execute(
            select(OutboxMessage, ChatIdentity.external_id).join(
                ChatIdentity, ChatIdentity.id == OutboxMessage.chat_identity_id
            )
        )
        return {chat_id: row for row, chat_id in rows.all()}


async def wait_until_all_sent(core: Core, total: int) -> float:
    """Poll the database until every row is sent; returns the seconds it took."""
    started = time.monotonic()
    while (counts := await statuses(core))["sent"] < total:
        assert time.monotonic() - started < TIMEOUT, f"not all sent: {dict(counts)}"
        await asyncio.sleep(0.1)
    assert counts == Counter(sent=total), counts
    return time.monotonic() - started


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def received(fake: FakeBotAPI) -> Counter[str]:
    """How many times each chat got the message."""
    return Counter(call.chat_id or "" for call in fake.sent)


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else 0.0


async def test_a_killed_sender_is_taken_over_with_at_most_the_in_flight_duplicates(
    core: Core, fake: FakeBotAPI, senders: Callable[..., SenderProcess]
) -> None:
    # The kill lands in the middle of a batch of 50: some of its rows are sent, some in
    # flight, some still waiting in the process.
    total, kill_at = 2000, 825
    await broadcast(core, total)
    # The kill-th message is accepted but answered late, so the kill finds it in flight for
    # sure (it then comes twice); the others in flight at that moment are up to chance.
    slow = fake.fail(kind="slow", call=kill_at, delay=3.0)
    lease = ("--lease-seconds", f"{LEASE_SECONDS:g}")
    first = senders(*lease)
    wait_for(lambda: slow.used > 0, f"{kill_at} messages at the fake Bot API")
    first.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert first.wait() == -signal.SIGKILL
    # Requests the process wrote just before it died may still be read by the server.
    await asyncio.sleep(0.3)
    settled_at, settled_at_wall = time.monotonic(), datetime.now(UTC)
    first_rate = rate([call.at for call in fake.attempts])
    delivered_before = received(fake)

    rows = await outbox(core)
    held = {chat_id: row for chat_id, row in rows.items() if row.status is OutboxStatus.SENDING}
    assert held, "the killed sender left no row claimed"
    slow_chat = fake.attempts[kill_at - 1].chat_id
    assert slow_chat in held
    dead_name = held[str(slow_chat)].claimed_by
    assert {row.claimed_by for row in held.values()} == {dead_name}
    lease_until = {
        chat_id: row.lease_until.timestamp()
        for chat_id, row in held.items()
        if row.lease_until is not None
    }
    assert set(lease_until) == set(held)

    second = senders(*lease)
    took = await wait_until_all_sent(core, total)
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.stderr
    assert "berhenti" in second.stderr

    counts = received(fake)
    assert set(counts) == {str(FIRST_CHAT + n) for n in range(1, total + 1)}
    duplicates = {chat_id for chat_id, times in counts.items() if times > 1}
    print(
        f"\n[{core.db.dialect}] first sender {first_rate:.0f} msg/s, killed after "
        f"{sum(delivered_before.values())} delivered with {len(held)} rows claimed; "
        f"{len(duplicates)} duplicate(s) (bound {IN_FLIGHT}); the rest took {took:.1f} s"
    )
    # Only messages the dead process held can come twice, each at most twice, and no more
    # of them than it could have had in flight.
    assert max(counts.values()) == 2
    assert duplicates <= set(held) & set(delivered_before)
    assert slow_chat in duplicates
    assert len(duplicates) <= IN_FLIGHT

    # The rows it held were reclaimed by the second sender, and not before their lease ran out.
    after = await outbox(core)
    for chat_id in held:
        assert after[chat_id].claimed_by not in (None, dead_name)
        assert after[chat_id].attempts == 2
    resent = [call for call in fake.sent if call.chat_id in held and call.at > settled_at]
    assert {call.chat_id for call in resent} == set(held)
    for call in resent:
        resent_wall = settled_at_wall.timestamp() + (call.at - settled_at)
        # A few milliseconds for reading the two clocks one after the other.
        assert resent_wall >= lease_until[str(call.chat_id)] - 0.05
    reclaimed_after = min(call.at for call in resent) - killed_at
    print(
        f"[{core.db.dialect}] the held rows went out again {reclaimed_after:.1f} s after the kill"
    )
    assert reclaimed_after < LEASE_SECONDS + 10


async def test_a_stopped_sender_hands_its_rows_back_and_once_sends_the_rest(
    core: Core,
    fake: FakeBotAPI,
    senders: Callable[..., SenderProcess],
    send_env: dict[str, str],
    tmp_path: Path,
) -> None:
    total = 300
    await broadcast(core, total)
    sender = senders(env={"OUTBOX_RATE_PER_SECOND": "200"})
    wait_for(lambda: len(fake.sent) >= total // 3, "a third of the broadcast")
    sender.signal(signal.SIGINT)
    assert sender.wait() == 0, sender.stderr
    assert "Ctrl+C" in sender.stderr
    counts = await statuses(core)
    # Nothing left claimed: what was under way was recorded, the rest handed back.
    assert set(counts) == {"sent", "pending"}, counts
    assert counts["sent"] == len(fake.sent) == len(received(fake))

    once = cli("send", "--once", env=send_env, cwd=tmp_path)
    assert once.returncode == 0, once.stderr
    rest = total - counts["sent"]
    assert f"terkirim {rest}, dicoba lagi nanti 0" in once.stdout
    assert await statuses(core) == Counter(sent=total)
    assert received(fake) == Counter({str(FIRST_CHAT + n): 1 for n in range(1, total + 1)})
    # A sender process only sends: no polling, no command menu.
    assert set(fake.methods()) == {"getMe", "sendMessage"}


async def test_several_senders_share_the_outbox_and_send_each_message_once(
    core: Core, fake: FakeBotAPI, senders: Callable[..., SenderProcess]
) -> None:
    if core.db.dialect != "postgresql":
        pytest.skip("several senders at once need PostgreSQL (FOR UPDATE SKIP LOCKED)")
    total, processes = 1000, 3
    started = [senders(env={"OUTBOX_RATE_PER_SECOND": "150"}) for _ in range(processes)]
    # Queue only once all are up, so each starts on the same outbox.
    wait_for(lambda: fake.methods().count("getMe") == processes, "every sender to start")
    await broadcast(core, total)
    took = await wait_until_all_sent(core, total)
    for process in started:
        process.signal(signal.SIGTERM)
    for process in started:
        assert process.wait() == 0, process.stderr

    assert received(fake) == Counter({str(FIRST_CHAT + n): 1 for n in range(1, total + 1)})
    shares = Counter(row.claimed_by for row in (await outbox(core)).values())
    print(
        f"\n{processes} senders, {total} messages in {took:.1f} s, shares {sorted(shares.values())}"
    )
    assert len(shares) == processes
    assert all(share > 0 for share in shares.values())


def test_send_needs_a_token_and_a_sane_lease(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'koperasi.db'}", "TELEGRAM_BOT_TOKEN": ""}
    no_token = cli("send", env=env, cwd=tmp_path)
    assert no_token.returncode == 2
    assert "TELEGRAM_BOT_TOKEN belum diatur" in no_token.stderr
    short = cli(
        "send", "--lease-seconds", "0", env={**env, "TELEGRAM_BOT_TOKEN": TOKEN}, cwd=tmp_path
    )
    assert short.returncode == 2
    assert "--lease-seconds 0 tidak sah" in short.stderr
