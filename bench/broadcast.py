"""A summons to every cooperative through the outbox, at a paid-broadcast or free-tier rate.

    .venv/bin/python bench/broadcast.py --recipients 10000 --rate 1000
    .venv/bin/python bench/broadcast.py --recipients 3000 --rate 30 --url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/broadcast.py --rate 1000,30 --processes 2 --json

For each `--rate` (messages per second, the whole budget: OUTBOX_RATE_PER_SECOND), in a fresh
database (a temporary SQLite file, or a database of its own on the PostgreSQL server `--url`
names, dropped afterwards):

1. `--recipients` cooperatives, each with one linked treasurer (a person with a Telegram
   identity), and one city-wide officer who may broadcast (not timed);
2. the officer's summons to all of them through `bot.summons.send`, which writes the summons
   and its outbox rows in one transaction: timed ("write", target under 2 s for 10,000);
3. `--processes` sender processes (`koperasi-bot send`, the real CLI, started together once
   each has imported the app) deliver the outbox to a fake Bot API in a process of its own (a
   minimal asyncio HTTP server in this file: it answers sendMessage with a Message like
   Telegram's and records every chat id with its arrival time);
4. when no row is pending or being sent any more, the senders are stopped (SIGTERM) and the
   figures are taken from what the fake server saw.

Figures: the achieved rate (intervals between the first and the last delivery over the time
between them), the most deliveries in any 1 s window, lost (outbox rows not `sent`, chats that
got nothing), duplicated (chats that got the letter more than once), the CPU time of the
senders, the fake server and (PostgreSQL) the database backends of the run. On a small machine
the senders, the database and the fake server share the cores, so the rate is a ceiling the
configured limit may not reach.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOKEN = "123456:BROADCASTBENCH"  # noqa: S105 - the fake server's
BOT_ID = 123456
OFFICER_CHAT = "999000001"
FIRST_CHAT = 5_000_000_000
# Every run sends inside the sending window, whatever the hour.
WINDOW = {"SEND_WINDOW_START": "00:00", "SEND_WINDOW_END": "23:59:59"}
# A run that has not finished after this many times its expected length (plus a minute) stops.
PATIENCE = 3.0


# -- the fake Bot API ---------------------------------------------------------------------------


def _bot_user() -> dict[str, Any]:
    return {"id": BOT_ID, "is_bot": True, "first_name": "KMP", "username": "kmp_bench_bot"}


class _FakeApi(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the fake Bot API (requests with Content-Length,
    as httpx sends them)."""

    def __init__(self, server: FastBotAPI) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length, json_body = 0, False
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "content-type":
                    json_body = "json" in value
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            path = head.split(" ", 2)[1]
            status, answer = self.server.answer(path, body, json_body)
            payload = json.dumps(answer).encode()
            assert self.transport is not None
            self.transport.write(
                f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )


class FastBotAPI:
    """Enough of the Bot API for `koperasi-bot send`: getMe, sendMessage (recorded); anything
    else answers `true`. Cheaper per request than tests/fake_bot_api.py's threads."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []
        self.prefix = f"/bot{TOKEN}/"

    def answer(self, path: str, body: bytes, json_body: bool) -> tuple[int, dict[str, Any]]:
        if not path.startswith(self.prefix):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        method = path[len(self.prefix) :].split("?", 1)[0]
        if method == "getMe":
            return 200, {"ok": True, "result": {**_bot_user(), "can_join_groups": True}}
        if method != "sendMessage":
            return 200, {"ok": True, "result": True}
        params: dict[str, Any]
        if json_body:
            params = json.loads(body)
        else:  # form fields, JSON-encoded values (as PTB's httpx request sends them)
            params = dict(parse_qsl(body.decode()))
            if "reply_markup" in params:
                params["reply_markup"] = json.loads(params["reply_markup"])
        chat = str(params.get("chat_id", ""))
        self.sent.append((chat, time.monotonic()))
        message: dict[str, Any] = {
            "message_id": len(self.sent),
            "date": int(time.time()),
            "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else chat, "type": "private"},
            "from": _bot_user(),
            "text": params.get("text", ""),
        }
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        return 200, {"ok": True, "result": message}


async def _serve() -> None:
    """The fake server's process: prints its port, serves until stdin says `stop`, then prints
    what it recorded and the CPU it used."""
    api = FastBotAPI()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FakeApi(api), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cpu = time.process_time()
    print(json.dumps({"port": port}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu = time.process_time() - cpu
    server.close()
    print(json.dumps({"sent": api.sent, "cpu": cpu}), flush=True)


# -- one sender process -------------------------------------------------------------------------


def _sender() -> int:
    """`koperasi-bot send` once the parent says go; its CPU from then on is printed last."""
    import bot.app  # noqa: F401 - imported before `go`, as a running process has
    from bot.cli import main

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    cpu = time.process_time()
    code = main(["send"])
    print(json.dumps({"cpu": time.process_time() - cpu, "code": code}), flush=True)
    return code


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Result:
    database: str
    rate_limit: float
    recipients: int
    processes: int
    write_seconds: float = 0.0
    write_cpu: float = 0.0
    outbox_rows: int = 0
    delivered: int = 0
    achieved_rate: float = 0.0
    achieved_share: float = 0.0
    max_1s: int = 0
    span_seconds: float = 0.0
    rows_not_sent: int = 0
    chats_without: int = 0
    lost: int = 0
    duplicated: int = 0
    sender_cpu: float = 0.0
    sender_cpu_ms_per_message: float = 0.0
    server_cpu: float = 0.0
    database_cpu: float | None = None
    wall_seconds: float = 0.0
    load_average: float = 0.0
    cores: int = field(default_factory=lambda: os.cpu_count() or 0)
    targets_met: dict[str, bool] = field(default_factory=dict)


def _async_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if "://" not in url:
        return f"sqlite+aiosqlite:///{Path(url).resolve()}"
    return url


async def _pg_admin(server_url: str, sql: str) -> None:
    import asyncpg

    base = "postgresql://" + server_url.split("://", 1)[1]
    admin = base.split("?", 1)[0].rsplit("/", 1)[0] + "/postgres"
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _populate(url: str, recipients: int) -> None:
    """The cooperatives, their treasurers and the officer, written as bench/generate.py does
    (ids chosen here, COPY on PostgreSQL)."""
    from bench.generate import Writer, move_sequences, registry, write_registry
    from storage.db import create_engine
    from storage.models import (
        BoardMember,
        ChatIdentity,
        Jabatan,
        Kecamatan,
        Kelurahan,
        Koperasi,
        Officer,
        Person,
    )

    rng = random.Random(2026)
    now = datetime.now(UTC)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            out = Writer(conn, 5000)
            bendahara = (
                await conn.execute(
                    Jabatan.__table__.select()
                    .with_only_columns(Jabatan.id)
                    .where(Jabatan.kode == "bendahara")
                )
            ).scalar_one()
            await write_registry(
                out,
                registry(recipients, rng),
                lambda: {
                    "alamat": None,
                    "telepon": None,
                    "email": None,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            people = [(n, f"Bendahara {n}", str(FIRST_CHAT + n)) for n in range(1, recipients + 1)]
            people.append((recipients + 1, "Petugas Dinas Koperasi", OFFICER_CHAT))
            for person, nama, chat in people:
                await out.add(Person, {"id": person, "nama": nama, "created_at": now})
                await out.add(
                    ChatIdentity,
                    {
                        "id": person,
                        "person_id": person,
                        "channel": "telegram",
                        "external_id": chat,
                        "username": None,
                        "created_at": now,
                        "last_seen_at": None,
                        "unreachable_at": None,
                        "unreachable_reason": None,
                    },
                )
            await out.flush()
            for person in range(1, recipients + 1):
                await out.add(
                    BoardMember,
                    {
                        "id": person,
                        "person_id": person,
                        "koperasi_id": person,
                        "jabatan_id": bendahara,
                        "judul": None,
                        "linked_at": now,
                        "invite_id": None,
                    },
                )
            await out.add(
                Officer,
                {
                    "id": 1,
                    "person_id": recipients + 1,
                    "kecamatan_id": None,
                    "can_broadcast": True,
                    "ops": False,
                    "active": True,
                    "created_at": now,
                },
            )
            await out.flush()
            if engine.dialect.name == "postgresql":
                await move_sequences(
                    conn,
                    [Kecamatan, Kelurahan, Koperasi, Person, ChatIdentity, BoardMember, Officer],
                )
            await conn.commit()
            if engine.dialect.name == "postgresql":
                await conn.exec_driver_sql("ANALYZE")
                await conn.commit()
    finally:
        await engine.dispose()


async def _write_summons(url: str) -> tuple[float, float, int]:
    """The officer's summons to all cooperatives: (seconds, CPU seconds, outbox rows)."""
    from bot import summons
    from bot.config import Settings
    from bot.core import Core
    from bot.identity import identify

    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    core = Core.create(settings)
    try:
        async with core.db.sessions() as session:
            officer = await identify(session, "telegram", OFFICER_CHAT)
        day = core.clock.now().astimezone(settings.tz).date() + timedelta(days=7)
        spec = summons.Spec(
            hal="Rapat koordinasi pengurus Koperasi Merah Putih",
            starts_at=datetime.combine(day, clock_time(9, 0), tzinfo=settings.tz),
            tempat="Aula Kementerian Koperasi, Jakarta",
            acara="Evaluasi kegiatan usaha dan rencana triwulan berikutnya",
            narahubung="Oki (0812-3456-7890)",
            target=summons.Target(kind="all"),
        )
        cpu, started = time.process_time(), time.perf_counter()
        _, reach = await summons.send(core, officer, spec)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return seconds, cpu, sum(len(people) for people in reach.people.values())
    finally:
        await core.close()


class _Outbox:
    """Reads the outbox's state while the senders work (a connection of its own)."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        self.runner = asyncio.Runner()
        self.conn: Any
        if self.postgres:
            import asyncpg

            dsn = "postgresql://" + url.split("://", 1)[1]
            self.conn = self.runner.run(asyncpg.connect(dsn))
        else:
            import sqlite3

            self.conn = sqlite3.connect(url.split(":///", 1)[1])

    def close(self) -> None:
        if self.postgres:
            self.runner.run(self.conn.close())
        else:
            self.conn.close()
        self.runner.close()

    def value(self, sql: str) -> Any:
        if self.postgres:
            return self.runner.run(self.conn.fetchval(sql))
        return self.conn.execute(sql).fetchone()[0]

    def open_rows(self) -> int:
        return int(self.value("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"))

    def unsent(self) -> int:
        return int(self.value("SELECT count(*) FROM outbox WHERE status <> 'sent'"))

    def backend_cpu(self) -> float | None:
        """CPU seconds of this database's other backends (PostgreSQL on this machine)."""
        if not self.postgres:
            return None
        pids = self.runner.run(
            self.conn.fetch(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        total = 0
        for (pid,) in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")


def _line(stream: IO[str], timeout: float, what: str) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise RuntimeError(f"no answer from {what} within {timeout:g} s")
    line = stream.readline()
    if not line:
        raise RuntimeError(f"{what} ended early")
    return line.strip()


def _windows(times: list[float], width: float = 1.0) -> int:
    """The most arrivals in any window [t, t + width) starting at an arrival."""
    best = end = 0
    for start, at in enumerate(times):
        while end < len(times) and times[end] < at + width:
            end += 1
        best = max(best, end - start)
    return best


def _deliver(url: str, result: Result, scratch: str) -> None:
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(  # noqa: S603 - this script
        [*me, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=scratch
    )
    senders: list[subprocess.Popen[str]] = []
    logs = [Path(scratch, f"sender-{number}.log") for number in range(result.processes)]
    try:
        assert server.stdout is not None
        assert server.stdin is not None
        port = json.loads(_line(server.stdout, 30, "the fake server"))["port"]
        env = {
            **os.environ,
            **WINDOW,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "DATABASE_URL": url,
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{port}",
            "OUTBOX_RATE_PER_SECOND": f"{result.rate_limit:g}",
            "LOG_LEVEL": "WARNING",
            "RUN_SCHEDULER": "false",
        }
        for log in logs:
            with log.open("w") as stderr:
                senders.append(
                    subprocess.Popen(  # noqa: S603 - this script
                        [*me, "--sender"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        text=True,
                        env=env,
                        cwd=scratch,
                    )
                )
        for sender in senders:
            assert sender.stdout is not None
            if _line(sender.stdout, 120, "a sender") != "ready":
                raise RuntimeError("a sender did not start")
        expected = result.outbox_rows / result.rate_limit
        deadline = time.monotonic() + 60 + PATIENCE * expected
        outbox = _Outbox(url)
        try:
            started = time.monotonic()
            for sender in senders:
                assert sender.stdin is not None
                sender.stdin.write("go\n")
                sender.stdin.flush()
            while time.monotonic() < deadline:
                time.sleep(0.25 if expected < 60 else 1.0)
                if not outbox.open_rows():
                    break
                if any(sender.poll() is not None for sender in senders):
                    raise RuntimeError("a sender stopped on its own")
            result.wall_seconds = time.monotonic() - started
            result.database_cpu = outbox.backend_cpu()
            for sender in senders:
                sender.send_signal(signal.SIGTERM)
            for sender in senders:
                out, _ = sender.communicate(timeout=60)
                result.sender_cpu += json.loads(out.strip().splitlines()[-1])["cpu"]
            result.rows_not_sent = outbox.unsent()
        finally:
            outbox.close()
        server.stdin.write("stop\n")
        server.stdin.flush()
        recorded = json.loads(_line(server.stdout, 60, "the fake server"))
        server.wait(timeout=30)
    except Exception:
        for log in logs:
            if log.exists() and log.read_text().strip():
                print(f"--- {log.name}:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for process in (*senders, server):
            if process.poll() is None:
                process.kill()
                process.wait()
    result.server_cpu = recorded["cpu"]
    sent: list[tuple[str, float]] = [(chat, at) for chat, at in recorded["sent"]]
    chats = Counter(chat for chat, _ in sent)
    expected_chats = {str(FIRST_CHAT + n) for n in range(1, result.recipients + 1)}
    result.delivered = len(sent)
    result.chats_without = len(expected_chats - set(chats))
    result.lost = max(result.rows_not_sent, result.chats_without)
    result.duplicated = sum(1 for count in chats.values() if count > 1)
    times = sorted(at for _, at in sent)
    if len(times) > 1:
        result.span_seconds = times[-1] - times[0]
        result.achieved_rate = (len(times) - 1) / result.span_seconds
    result.achieved_share = result.achieved_rate / result.rate_limit
    result.max_1s = _windows(times)
    if result.delivered:
        result.sender_cpu_ms_per_message = 1000 * result.sender_cpu / result.delivered


def run(server_url: str | None, rate: float, recipients: int, processes: int) -> Result:
    result = Result(
        database="postgresql" if server_url else "sqlite",
        rate_limit=rate,
        recipients=recipients,
        processes=processes,
        load_average=os.getloadavg()[0],
    )
    from storage.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="kopbot-broadcast-") as scratch:
        name = f"kopbot_broadcast_{uuid.uuid4().hex[:10]}"
        if server_url:
            asyncio.run(_pg_admin(server_url, f'CREATE DATABASE "{name}"'))
            base = _async_url(server_url).split("?", 1)[0].rsplit("/", 1)[0]
            url = f"{base}/{name}"
        else:
            url = f"sqlite+aiosqlite:///{scratch}/broadcast.db"
        try:
            upgrade(url)
            asyncio.run(_populate(url, recipients))
            result.write_seconds, result.write_cpu, result.outbox_rows = asyncio.run(
                _write_summons(url)
            )
            _deliver(url, result, scratch)
        finally:
            if server_url:
                asyncio.run(_pg_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    result.targets_met = {
        "rate_95_percent": result.achieved_share >= 0.95,
        "none_lost": result.lost == 0,
        "none_duplicated": result.duplicated == 0,
        "write_under_2s": result.write_seconds < 2.0,
    }
    return result


def _rates(values: list[str]) -> list[float]:
    rates = [float(part) for value in values for part in value.split(",") if part.strip()]
    if any(not 0 < rate <= 1000 for rate in rates):
        raise argparse.ArgumentTypeError("--rate: between 0 and 1000 messages per second")
    return rates


def _shown(result: Result) -> str:
    database_cpu = "" if result.database_cpu is None else f", database {result.database_cpu:.1f} s"
    return (
        f"{result.database} rate {result.rate_limit:g}/s, {result.recipients} recipients, "
        f"{result.processes} sender process(es): write {result.write_seconds:.2f} s "
        f"({result.outbox_rows} outbox rows); delivered {result.delivered} in "
        f"{result.span_seconds:.2f} s = {result.achieved_rate:.0f} msg/s "
        f"({100 * result.achieved_share:.1f} % of the limit), max {result.max_1s} in 1 s; "
        f"lost {result.lost} (rows not sent {result.rows_not_sent}, chats without "
        f"{result.chats_without}), duplicated {result.duplicated}; CPU: senders "
        f"{result.sender_cpu:.1f} s ({result.sender_cpu_ms_per_message:.2f} ms/message), "
        f"fake server {result.server_cpu:.1f} s{database_cpu}; wall {result.wall_seconds:.1f} s; "
        f"load {result.load_average:.1f} on {result.cores} cores"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A summons to N cooperatives through the outbox and the real sender, "
        "against a fake Bot API: write time, achieved rate, lost and duplicated messages.",
    )
    parser.add_argument(
        "--url",
        help="a PostgreSQL server URL, e.g. postgresql://postgres@127.0.0.1:5432/test (a "
        "database of its own is created there and dropped); default: a temporary SQLite file",
    )
    parser.add_argument("--recipients", type=int, default=10_000, help="default 10000")
    parser.add_argument(
        "--rate",
        action="append",
        help="OUTBOX_RATE_PER_SECOND, the limit all senders share; repeatable or a list "
        "(--rate 1000 --rate 30, --rate 1000,30); default 1000",
    )
    parser.add_argument("--processes", type=int, default=1, help="sender processes (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve())
        return 0
    if args.sender:
        return _sender()
    try:
        rates = _rates(args.rate or ["1000"])
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc))
    if args.recipients < 1 or args.processes < 1:
        parser.error("--recipients and --processes must be positive")
    if args.url and not args.url.startswith(("postgresql://", "postgres://", "postgresql+")):
        parser.error("--url: a PostgreSQL server URL (SQLite is the default)")
    results = []
    for rate in rates:
        result = run(args.url, rate, args.recipients, args.processes)
        results.append(result)
        if not args.json:
            print(_shown(result), flush=True)
    if args.json:
        print(json.dumps([asdict(result) for result in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
