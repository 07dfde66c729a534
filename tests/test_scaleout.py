"""Scale-out on PostgreSQL: three `koperasi-bot run --webhook` processes behind one address.

The fake Bot API plays Telegram and a round-robin load balancer in front of the three processes,
so each update may land on any of them (the conversation lives in the database). A notice of
the reporting calendar is due when they start; a broadcast of a few hundred messages goes out
through their outbox senders under one shared rate limit. In the middle of it all the process
that runs the scheduler is SIGKILLed while it is handling an update. Then:

- no update is lost: every update is answered 200 in the end, the one the dead process was
  handling included (it got no 200, so the fake delivered it again, to another process), and
  the people filling in their reports across processes finish their steps;
- no notice is doubled: each target has it once, although the new leader ticked again;
- the rate limit held across the three senders (the fake's arrival times, any 1 s window);
- one process at a time logged itself the scheduler's leader, and another took over after the
  kill, within about SCHEDULER_TAKEOVER_SECONDS.

What a kill may duplicate: broadcast messages the dead sender had in flight (at most its
concurrency), as tests/test_sender_processes.py explains; the notices were all out before.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot import officers, onboarding
from bot.config import Settings
from bot.core import Core
from bot.registry import SAMPLE_REGISTRY, import_file
from storage.models import (
    BoardMember,
    ChatIdentity,
    Jabatan,
    Kelurahan,
    Koperasi,
    LedgerEntry,
    OutboxMessage,
    Person,
    ReportDraft,
)
from tests.fake_bot_api import FakeBotAPI, iter_windows
from tests.test_sender_processes import FIRST_CHAT, IN_FLIGHT, broadcast
from tests.test_webhook_e2e import (
    PUBLIC_URL,
    SECRET,
    BotProcess,
    Conversation,
    bot_env,
    first_questions,
    free_port,
    onboard,
)

PROCESSES = 3
RATE = 20  # messages per second, for the three senders together
# The senders start their sends on a grid of RATE slots a second; the fake sees them arrive
# with the jitter of three processes and itself sharing a loaded machine (tens of ms), so a
# late arrival can share a 1 s window with the next slots. Three senders with limits of their
# own would reach 3 * RATE.
TOLERANCE = 2
BROADCAST = 240
LEASE_SECONDS = 3.0
TAKEOVER_SECONDS = 1.0
# People the due notice goes to (linked before the processes start), people who fill in their
# report across the processes, and one who asks for /bantuan while the kill happens.
TARGETS = 4
TALKERS = 3
TARGET_CHAT = 720_000_000
TALKER_CHAT = 730_000_000
PROBE = 740_000_001
WAIT = 40.0
# The leadership lines of bot/leader.py, with the time the log gives them.
LEADER_LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ bot\.leader: Scheduler: (?P<holder>\S+) "
    r"(?P<event>is now the leader|lost the leadership|stopped and is no longer the leader)",
    re.MULTILINE,
)
FOLLOWER_LINE = "Scheduler: another process is the leader"


def calendar_env(settings: Settings) -> tuple[dict[str, str], str]:
    """Calendar settings that make one notice due today (the processes run on the real clock),
    and its kind: a reminder on days 2-28, the opening notice on day 1, and the officers'
    digest on days 29-31 (no board notice can fall there: the deadline is day 28 at most)."""
    day = datetime.now(settings.tz).day
    env = {"REPORT_OPEN_DAY": "1", "REPORT_NOTICE_TIME": "00:00", "REPORT_REMINDER_DAYS": ""}
    if day == 1:
        return {**env, "REPORT_DEADLINE_DAY": "10"}, "open"
    if day <= 28:
        return {**env, "REPORT_REMINDER_DAYS": str(day), "REPORT_DEADLINE_DAY": str(day)}, (
            "reminder_1"
        )
    return {**env, "REPORT_DEADLINE_DAY": "28"}, "digest"


@dataclass
class Node:
    """One bot process and the origin the load balancer reaches it at."""

    bot: BotProcess
    origin: str

    @property
    def pid(self) -> int:
        return self.bot.process.pid

    def leadership(self) -> list[tuple[float, str]]:
        """(wall time, event) of this process's leadership lines, in order."""
        events = []
        for match in LEADER_LINE.finditer(self.bot.output()):
            # The holder is host:pid:random (bot/sender.py default_name).
            assert f":{self.pid}:" in match["holder"], match.group(0)
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append((at, match["event"]))
        return events

    def leads(self) -> bool:
        events = self.leadership()
        return bool(events) and events[-1][1] == "is now the leader"


@dataclass
class World:
    targets: dict[str, int] = field(default_factory=dict)  # chat id -> number
    invites: list[str] = field(default_factory=list)  # talkers' invite codes


@pytest.fixture
async def live_core(settings: Settings) -> AsyncIterator[Core]:
    core = Core.create(settings)
    yield core
    await core.close()


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


async def prepare(core: Core, notice_kind: str) -> World:
    """The registry; TARGETS chairs (ketua) already linked, or TARGETS officers on digest days;
    an invite for a treasurer (bendahara) of the same cooperatives for each talker."""
    now = datetime.now(UTC)
    await import_file(core.db, SAMPLE_REGISTRY, now, "test")
    world = World()
    async with core.db.transaction() as session:
        koperasi = (
            await session.execute(
                select(Koperasi.id, Kelurahan.kode)
                .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
                .order_by(Koperasi.id)
                .limit(TARGETS)
            )
        ).all()
        ketua = await session.scalar(select(Jabatan.id).where(Jabatan.kode == "ketua"))
        assert len(koperasi) == TARGETS
        assert ketua is not None
        if notice_kind != "digest":
            for number, (koperasi_id, _) in enumerate(koperasi, start=1):
                person = Person(nama=f"Ketua {number}", created_at=now)
                chat = str(TARGET_CHAT + number)
                session.add_all(
                    [
                        ChatIdentity(
                            person=person, channel="telegram", external_id=chat, created_at=now
                        ),
                        BoardMember(
                            person=person,
                            koperasi_id=koperasi_id,
                            jabatan_id=ketua,
                            linked_at=now,
                        ),
                    ]
                )
                await session.flush()
                world.targets[chat] = person.id
        kelurahan = [kode for _, kode in koperasi]
    if notice_kind == "digest":
        for number in range(1, TARGETS + 1):
            await officers.add_officer(
                core,
                telegram_id=str(TARGET_CHAT + number),
                nama=f"Petugas {number}",
                kecamatan=None,
                can_broadcast=False,
                actor="test",
            )
            world.targets[str(TARGET_CHAT + number)] = number
    for number in range(TALKERS):
        invite = await onboarding.create_invite(
            core, koperasi_kode=kelurahan[number], role="bendahara", created_by="test"
        )
        world.invites.append(invite.code)
    return world


def start_nodes(env: dict[str, str], cwd: Path) -> list[Node]:
    nodes = []
    for _ in range(PROCESSES):
        port = free_port()
        node_env = {**env, "WEBHOOK_LISTEN": f"127.0.0.1:{port}"}
        nodes.append(Node(BotProcess.start(node_env, cwd, "--webhook"), f"http://127.0.0.1:{port}"))
    return nodes


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def outbox_sends(fake: FakeBotAPI, chats: set[str]) -> list[float]:
    return [call.at for call in fake.sent if call.chat_id in chats]


async def statuses(core: Core) -> Counter[str]:
    async with core.db.sessions() as session:
        rows = await session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        )
        return Counter({status.value: count for status, count in rows.all()})


async def drafts(core: Core) -> dict[str, dict[str, object]]:
    async with core.db.sessions() as session:
        rows = await session.execute(
            select(ChatIdentity.external_id, ReportDraft.answers).join(
                ReportDraft, ReportDraft.person_id == ChatIdentity.person_id
            )
        )
        return {chat: dict(answers) for chat, answers in rows.all()}


def talk(fake: FakeBotAPI, number: int, code: str, killed: threading.Event) -> None:
    """A treasurer links and starts the report; after the kill, goes on to the first number."""
    person = Conversation(fake, fake.user(TALKER_CHAT + number, f"Bendahara{number}", "Uji"))
    onboard(person, code)
    person.say("/lapor", "pertanyaan 1 dari")
    assert killed.wait(WAIT), "the kill did not come"
    # first_questions sends /lapor again: an open draft continues where it stopped.
    first_questions(person)
    person.say("120", "Berapa anggota baru")


def probe(fake: FakeBotAPI, stop: threading.Event) -> None:
    """Someone asking for /bantuan over and over, until told to stop."""
    person = Conversation(fake, fake.user(PROBE, "Penanya"))
    while not stop.is_set():
        person.say("/bantuan", "Yang dapat Bapak/Ibu lakukan")
        time.sleep(0.2)


def kill_while_handling(fake: FakeBotAPI, victim: Node, ready: Callable[[], bool]) -> int:
    """Once `ready()`, SIGKILL `victim` while it handles one of the probe's updates: it received
    the update and wrote its answer (which the fake holds, slowly), but has not answered the
    webhook. Returns that update's id."""
    wait_for(ready, "the moment to kill")
    deadline = time.monotonic() + WAIT
    while True:
        assert time.monotonic() < deadline, "no probe update reached the leader"
        current = fake.delivering
        if current is not None and current[1] == victim.origin:
            update = next(u for u in reversed(fake.updates) if u["update_id"] == current[0])
            if update.get("message", {}).get("from", {}).get("id") == PROBE:
                mark = len(fake.calls)
                while fake.delivering == current:
                    if any(c.chat_id == str(PROBE) for c in fake.calls[mark:]):
                        victim.bot.process.send_signal(signal.SIGKILL)
                        return current[0]
                    time.sleep(0.002)
        time.sleep(0.002)


async def test_three_webhook_processes_lose_no_update_double_no_notice_and_share_the_rate(
    live_core: Core, cli_env: dict[str, str], tmp_path: Path, fake: FakeBotAPI
) -> None:
    if live_core.db.dialect != "postgresql":
        pytest.skip(
            "several bot processes need PostgreSQL (shared send budget, advisory-lock leader)"
        )
    core = live_core
    calendar, notice_kind = calendar_env(core.settings)
    world = await prepare(core, notice_kind)
    env = bot_env(
        cli_env,
        fake,
        WEBHOOK_URL=PUBLIC_URL,
        WEBHOOK_SECRET=SECRET,
        OUTBOX_RATE_PER_SECOND=str(RATE),
        OUTBOX_LEASE_SECONDS=f"{LEASE_SECONDS:g}",
        SCHEDULER_TAKEOVER_SECONDS=f"{TAKEOVER_SECONDS:g}",
        **calendar,
    )
    started = time.monotonic()
    nodes = start_nodes(env, tmp_path)
    try:
        fake.forward_webhooks(*(node.origin for node in nodes))
        # Every process set the webhook and knows whether it leads.
        wait_for(lambda: len(fake.webhooks) == PROCESSES, "three setWebhook calls")
        wait_for(
            lambda: all(node.leads() or FOLLOWER_LINE in node.bot.output() for node in nodes),
            "every process to settle the leadership",
        )
        (leader,) = [node for node in nodes if node.leads()]
        up_at = time.monotonic()
        # The leader's start-up tick queued the notice; the senders deliver it.
        target_chats = set(world.targets)
        wait_for(
            lambda: {call.chat_id for call in fake.sent} >= target_chats,
            f"the {notice_kind} notice to reach every target",
        )

        notified_at = time.monotonic()
        await broadcast(core, BROADCAST)
        broadcast_chats = {str(FIRST_CHAT + n) for n in range(1, BROADCAST + 1)}
        fake.fail(kind="slow", chat_id=PROBE, delay=0.4, times=None)
        killed, stop_probe = threading.Event(), threading.Event()
        with ThreadPoolExecutor(TALKERS + 1) as pool:
            talkers = [
                pool.submit(talk, fake, number, code, killed)
                for number, code in enumerate(world.invites, start=1)
            ]
            asking = pool.submit(probe, fake, stop_probe)
            try:
                onboarded = {str(TALKER_CHAT + n) for n in range(1, TALKERS + 1)}

                def ready() -> bool:
                    # Mid-broadcast, and every talker has started the report.
                    reports = {c.chat_id for c in fake.sent if "pertanyaan 1 dari" in c.text}
                    return (
                        len(outbox_sends(fake, broadcast_chats)) >= BROADCAST // 5
                        and reports >= onboarded
                    )

                in_flight = kill_while_handling(fake, leader, ready)
                killed_at, killed_wall = time.monotonic(), time.time()
                killed.set()
                assert leader.bot.process.wait(10) == -signal.SIGKILL
                sent_at_kill = len(outbox_sends(fake, broadcast_chats))
                for talker in talkers:
                    talker.result(timeout=WAIT)
                # A few more questions, so some land where the dead process was.
                wait_for(
                    lambda: (
                        sum(d.origin == leader.origin for d in fake.deliveries if d.status == 0)
                        >= 2
                    ),
                    "deliveries to the dead process",
                )
            finally:
                killed.set()
                stop_probe.set()
            asking.result(timeout=WAIT)

        # The rest of the broadcast, the rows the dead sender held included (after their lease).
        deadline = time.monotonic() + WAIT
        while (counts := await statuses(core))["sent"] < BROADCAST + len(target_chats):
            assert time.monotonic() < deadline, f"not all sent: {dict(counts)}"
            await asyncio.sleep(0.1)
        assert counts == Counter(sent=BROADCAST + len(target_chats)), counts
        survivors = [node for node in nodes if node is not leader]
        wait_for(lambda: any(node.leads() for node in survivors), "a new leader")
        (successor,) = [node for node in survivors if node.leads()]
        # The new leader ticked at once: the notice is due, and already decided.
        wait_for(lambda: "Calendar tick at" in successor.bot.output(), "the new leader's tick")
        finished = time.monotonic()
    finally:
        # All at once (BotProcess.stop would signal a second time a process already stopping).
        for node in nodes:
            if node.bot.alive():
                node.bot.process.send_signal(signal.SIGTERM)
        codes = {}
        for node in nodes:
            try:
                codes[node.pid] = node.bot.process.wait(30)
            except subprocess.TimeoutExpired:
                node.bot.process.kill()
                codes[node.pid] = node.bot.process.wait()
        for node in nodes:
            print(f"--- {node.origin} (pid {node.pid}) ---\n{node.bot.output()[-3000:]}")

    # -- no update lost --------------------------------------------------------------------
    answered = {d.update_id for d in fake.deliveries if d.status == 200}
    assert answered == {u["update_id"] for u in fake.updates}
    retried = [d for d in fake.deliveries if d.update_id == in_flight]
    assert (retried[0].origin, retried[0].status) == (leader.origin, 0), retried
    assert retried[-1].status == 200, retried
    assert retried[-1].origin != leader.origin, retried
    # Each process handled updates, and each talker's updates went to more than one of them.
    by_origin = Counter(d.origin for d in fake.deliveries if d.status == 200)
    assert set(by_origin) == {node.origin for node in nodes}, by_origin
    talker_updates = {
        u["update_id"]: (u.get("message") or u.get("callback_query") or {})["from"]["id"]
        for u in fake.updates
    }
    for number in range(1, TALKERS + 1):
        origins = {
            d.origin
            for d in fake.deliveries
            if d.status == 200 and talker_updates[d.update_id] == TALKER_CHAT + number
        }
        assert len(origins) > 1, (number, origins)
    for chat, answers in (await drafts(core)).items():
        assert answers["jumlah_anggota"] == 120, chat
        assert answers["unit_usaha"] == ["sembako"], chat

    # -- no notice doubled -----------------------------------------------------------------
    notices = Counter(call.chat_id for call in fake.sent if call.chat_id in target_chats)
    assert notices == Counter(dict.fromkeys(target_chats, 1)), notices
    async with core.db.sessions() as session:
        ledger = (await session.scalars(select(LedgerEntry.kind))).all()
    assert ledger == [notice_kind] * TARGETS, ledger

    # -- the broadcast, at least once, duplicates only from the kill -----------------------
    received = Counter(call.chat_id for call in fake.sent if call.chat_id in broadcast_chats)
    assert set(received) == broadcast_chats
    duplicates = sum(times - 1 for times in received.values())
    assert duplicates <= IN_FLIGHT, duplicates

    # -- the rate held across the three senders --------------------------------------------
    arrivals = outbox_sends(fake, broadcast_chats | target_chats)
    busiest = max(count for _, count in iter_windows(arrivals))
    broadcast_arrivals = sorted(outbox_sends(fake, broadcast_chats))
    overall = (len(broadcast_arrivals) - 1) / (broadcast_arrivals[-1] - broadcast_arrivals[0])
    assert busiest <= RATE + TOLERANCE, busiest
    assert overall <= RATE, overall

    # -- one leader at a time, and a take-over ---------------------------------------------
    intervals = []
    for node in nodes:
        start_at: float | None = None
        for at, event in node.leadership():
            if event == "is now the leader":
                assert start_at is None, (node.pid, "leader twice")
                start_at = at
            elif start_at is not None:
                intervals.append((start_at, at, node.pid))
                start_at = None
        if start_at is not None:
            end = killed_wall if node is leader else time.time()
            intervals.append((start_at, end, node.pid))
    intervals.sort()
    assert [pid for _, _, pid in intervals[:2]] == [leader.pid, successor.pid], intervals
    for (_, end, _), (begin, _, _) in itertools.pairwise(intervals):
        assert begin >= end, intervals
    takeover = intervals[1][0] - killed_wall
    assert takeover < TAKEOVER_SECONDS + 3, takeover
    assert codes[leader.pid] == -signal.SIGKILL
    for node in survivors:
        assert codes[node.pid] == 0
        assert "Traceback" not in node.bot.output(), node.bot.output()

    print(
        f"\n{PROCESSES} processes, {len(fake.updates)} updates ({dict(by_origin)} per origin), "
        f"{BROADCAST} broadcast + {len(target_chats)} {notice_kind} at {RATE}/s: busiest 1 s "
        f"window {busiest}, overall {overall:.1f} msg/s; killed the leader after "
        f"{sent_at_kill} broadcast messages, {duplicates} duplicate(s); new leader "
        f"{takeover:.2f} s after the kill; all done {finished - started:.1f} s after start, "
        f"the kill at {killed_at - started:.1f} s (up {up_at - started:.1f} s, notified "
        f"{notified_at - started:.1f} s)"
    )
