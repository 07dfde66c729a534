"""How fast `koperasi-bot send` empties the outbox against the fake Bot API, on this machine.

    .venv/bin/python bench/send_rate.py --count 2000 --rate 400
    .venv/bin/python bench/send_rate.py --database postgresql://postgres@127.0.0.1:5432/test

Queues one message to each of `count` chats in a fresh database (a temporary SQLite file, or a
new PostgreSQL database dropped afterwards), runs `koperasi-bot send --once` (or, with
`--processes N`, N `send` processes until the outbox is empty) and prints the rate the fake
server saw and the CPU each side used: on a small machine the sender, the database and the fake
server share the cores, so the configured rate is a ceiling, not a promise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.config import Settings  # noqa: E402
from bot.core import Core  # noqa: E402
from bot.outbox import Outgoing, enqueue  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import ChatIdentity, OutboxMessage, OutboxStatus, Person  # noqa: E402
from tests.fake_bot_api import TOKEN, FakeBotAPI  # noqa: E402


async def queue(url: str, count: int) -> None:
    core = Core.create(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
    now = datetime.now(UTC)
    async with core.db.transaction() as session:
        identities = [
            ChatIdentity(
                person=Person(nama=f"Pengurus {n}", created_at=now),
                channel="telegram",
                external_id=str(800_000_000 + n),
                created_at=now,
            )
            for n in range(count)
        ]
        session.add_all(identities)
        await session.flush()
        items = [
            Outgoing(
                dedupe_key=f"bench:{identity.id}",
                kind="bench",
                chat_identity_id=identity.id,
                text="Rapat anggota Sabtu pukul 09.00 di balai desa.",
                quiet_hours=False,
            )
            for identity in identities
        ]
        for start in range(0, len(items), 500):
            await enqueue(session, items[start : start + 500], now)
    await core.close()


async def unsent(url: str) -> int:
    core = Core.create(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
    async with core.db.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(OutboxMessage.status != OutboxStatus.SENT)
        )
    await core.close()
    return int(count or 0)


async def pg_admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--processes", type=int, default=0, help="0: one `send --once`")
    parser.add_argument("--database", help="a PostgreSQL server URL (default: SQLite)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        if args.database:
            name = f"kopbot_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(pg_admin(args.database, f'CREATE DATABASE "{name}"'))
            base = args.database.split("://", 1)[1].rsplit("/", 1)[0]
            url = f"postgresql+asyncpg://{base}/{name}"
        else:
            url = f"sqlite+aiosqlite:///{scratch}/bench.db"
        try:
            upgrade(url)
            asyncio.run(queue(url, args.count))
            with FakeBotAPI() as fake:
                env = {
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
                    ),
                    "PTB_TIMEDELTA": "1",
                    "DATABASE_URL": url,
                    "TELEGRAM_BOT_TOKEN": TOKEN,
                    "TELEGRAM_API_BASE_URL": fake.base_url,
                    "OUTBOX_RATE_PER_SECOND": f"{args.rate:g}",
                    "OUTBOX_PER_CHAT_INTERVAL_SECONDS": "0",
                    "LOG_LEVEL": "WARNING",
                }
                command = [
                    sys.executable,
                    *os.environ.get("BENCH_PREFIX", "-m bot").split(),
                    "send",
                ]
                cpu_before = time.process_time()
                started = time.monotonic()
                if args.processes:
                    senders = [
                        subprocess.Popen(command, env=env, cwd=scratch)  # noqa: S603 - our own CLI
                        for _ in range(args.processes)
                    ]
                    while asyncio.run(unsent(url)):
                        time.sleep(0.2)
                    for sender in senders:
                        sender.send_signal(signal.SIGTERM)
                    for sender in senders:
                        sender.wait(timeout=30)
                else:
                    subprocess.run([*command, "--once"], env=env, cwd=scratch, check=True)  # noqa: S603
                wall = time.monotonic() - started
                server_cpu = time.process_time() - cpu_before
                times = sorted(call.at for call in fake.sent)
                repeats = sum(1 for n in Counter(c.chat_id for c in fake.sent).values() if n > 1)
        finally:
            if args.database:
                asyncio.run(pg_admin(args.database, f'DROP DATABASE "{name}" WITH (FORCE)'))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    print(
        f"{'postgresql' if args.database else 'sqlite'}: {len(times)} delivered "
        f"({repeats} twice) in {span:.2f} s = {len(times) / span if span else 0:.0f} msg/s "
        f"(configured {args.rate:g}/s per process); wall {wall:.1f} s with start-up; "
        f"CPU: senders {children.ru_utime + children.ru_stime:.1f} s, "
        f"fake server {server_cpu:.1f} s, on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
