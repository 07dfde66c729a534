"""Update handling: report answers per second through `Application.process_update`, against a
bare python-telegram-bot echo handler measured in the same run.

    .venv/bin/python bench/updates.py --updates 5000
    .venv/bin/python bench/updates.py --updates 5000 --url postgresql://postgres@127.0.0.1:5432/test

The real Application of bot/app.py runs over the in-process Bot API of handlers/local_api.py
(bot calls cost no network, only PTB's own request building). A generated registry of
`--koperasi` cooperatives is loaded, one treasurer per cooperative is linked with /start and an
invite code (not timed), then the treasurers fill in the monthly report the way
tests/handlers/test_report.py does: /lapor, typed answers, pressed buttons, a photo, "Kirim".
Forms are interleaved (`--interleave` people answer in turn, the next one starts when one
submits), and every update goes through `process_update` one after another. Each update is
timed; the rate is updates over the time spent inside `process_update`.

Then an Application with a single MessageHandler that replies with the text (the same local
Bot API, no database) gets as many text updates; its rate is the ceiling PTB itself sets.

`--url` names the database: by default a new SQLite file in a temporary directory; a
`sqlite:///…` URL is used as given (it should be a new file); a `postgresql://…` URL names a
server, on which a database of its own is created and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import event, func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# As the bot runs (tests/conftest.py does the same): RetryAfter as a timedelta.
os.environ.setdefault("PTB_TIMEDELTA", "1")

from telegram import Update  # noqa: E402
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters  # noqa: E402

from bot import onboarding  # noqa: E402
from bot.app import LOCAL_TOKEN, build_application, settle_memory  # noqa: E402
from bot.clock import FixedClock  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.core import Core  # noqa: E402
from bot.registry import import_file  # noqa: E402
from handlers.local_api import LocalBotAPI, LocalUser, SentMessage  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Kelurahan, ReportRevision  # noqa: E402

App = Application[Any, Any, Any, Any, Any, Any]
WIB = ZoneInfo("Asia/Jakarta")
# The tests' moment: the October 2026 report is open (and late).
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=WIB)
FIRST_USER_ID = 600_000_000

# One treasurer's whole report, as tests/handlers/test_report.py plays it. ("press?", label) is
# pressed only when the bot asked for a confirmation (it depends on the answers).
FORM: tuple[tuple[str, str], ...] = (
    ("send", "/lapor"),
    ("press", "Beroperasi rutin"),
    ("press", "Gerai sembako"),
    ("press", "Selesai"),
    ("send", "120"),
    ("send", "5"),
    ("send", "12,5 jt"),
    ("press", "Ya, benar"),
    ("send", "Rp1.500.000"),
    ("send", "25000000"),
    ("press?", "Ya, benar"),
    ("send", "0"),
    ("press", "Sewa"),
    ("press", "Ya"),
    ("press", "Tidak"),
    ("press", "Ya"),
    ("press", "Tidak"),
    ("send", "Membuka gerai sembako & rapat anggota <pertama>."),
    ("press", "Modal terbatas"),
    ("press", "Kurang pendampingan/konsultasi"),
    ("press", "Selesai"),
    ("press", "Modal terbatas"),
    ("send", "Simpanan anggota belum terkumpul."),
    ("press", "Pelatihan"),
    ("press", "Selesai"),
    ("photo", ""),
    ("press", "Selesai"),
    ("press", "Kirim"),
)
UPDATES_PER_FORM = sum(1 for kind, _ in FORM if kind != "press?")


class BenchAPI(LocalBotAPI):
    """The local Bot API, remembering each chat's messages so a button is found without
    scanning every message sent in the run, and forgetting its call log as it goes."""

    def __init__(self) -> None:
        super().__init__()
        self.by_chat: dict[int, list[SentMessage]] = {}

    def _store(self, params: dict[str, Any], text: str, kind: str) -> dict[str, Any]:
        result = super()._store(params, text, kind)
        message = self.messages[(result["chat"]["id"], result["message_id"])]
        self.by_chat.setdefault(message.chat_id, []).append(message)
        return result

    def last_with_buttons(self, chat_id: int) -> SentMessage | None:
        for message in reversed(self.by_chat.get(chat_id, [])):
            if message.buttons:
                return message
        return None

    def forget(self, chat_id: int) -> None:
        for message in self.by_chat.pop(chat_id, []):
            self.messages.pop((message.chat_id, message.message_id), None)


class ErrorCount(logging.Handler):
    """Counts what the bot's error handler logs: a benchmark of failing updates is no figure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = self.format(record)


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    # CPU time of the process (every thread) inside process_update: what the work costs,
    # whatever else the machine is doing.
    cpu: float = 0.0
    statements: int = 0

    @property
    def total(self) -> float:
        return sum(self.latencies)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.total if self.total else 0.0

    @property
    def cpu_rate(self) -> float:
        return len(self.latencies) / self.cpu if self.cpu else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


async def timed(app: App, run: Run, data: dict[str, Any]) -> None:
    update = Update.de_json(data, app.bot)
    cpu = time.process_time()
    started = time.perf_counter()
    await app.process_update(update)
    run.latencies.append(time.perf_counter() - started)
    run.cpu += time.process_time() - cpu


def registry_csv(path: Path, count: int) -> None:
    """`count` cooperatives in kecamatan of 20 kelurahan each."""
    lines = ["kode_kemendagri,kecamatan,kelurahan"]
    for n in range(count):
        kecamatan, kelurahan = divmod(n, 20)
        lines.append(
            f"36.{71 + kecamatan // 99}.{kecamatan % 99 + 1:02d}.{1001 + kelurahan},"
            f"Kecamatan {kecamatan + 1},Kelurahan {n + 1}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def link_treasurers(core: Core, app: App, api: BenchAPI, count: int) -> list[LocalUser]:
    """One linked treasurer per cooperative, the way people link: /start with their code."""
    async with core.db.sessions() as session:
        codes = (await session.scalars(select(Kelurahan.kode).order_by(Kelurahan.id))).all()
    users = []
    for n, kode in enumerate(codes[:count]):
        invite = await onboarding.create_invite(
            core, koperasi_kode=kode, role="bendahara", created_by="bench"
        )
        user = LocalUser(api, FIRST_USER_ID + n, "Bendahara", f"Nomor {n + 1}")
        await app.process_update(Update.de_json(user.text_update(f"/start {invite.code}"), app.bot))
        api.forget(user.user_id)
        users.append(user)
    return users


def photo_update(user: LocalUser) -> dict[str, Any]:
    message = user.message_json(
        photo=[
            {"file_id": f"foto-{user.user_id}", "file_unique_id": "u1", "width": 800, "height": 800}
        ]
    )
    return {"update_id": user.api.next_update_id(), "message": message}


def next_update(api: BenchAPI, user: LocalUser, step: int) -> tuple[dict[str, Any] | None, int]:
    """The update for the user's step (skipping a confirmation not asked); the next step."""
    kind, value = FORM[step]
    if kind == "send":
        return user.text_update(value), step + 1
    if kind == "photo":
        return photo_update(user), step + 1
    message = api.last_with_buttons(user.user_id)
    asked = message is not None and value in message.button_labels and "benar?" in message.text
    if kind == "press?" and not asked:
        return None, step + 1
    if message is None:
        raise RuntimeError(f"step {step}: no buttons to press {value!r}")
    data = message.button(value)["callback_data"]
    return user.callback_update(message, data), step + 1


class StatementCount:
    """SQL statements the engine sends (BEGIN and COMMIT are not statements here)."""

    def __init__(self, core: Core) -> None:
        self.count = 0
        event.listen(core.db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


async def play_forms(
    app: App, api: BenchAPI, users: list[LocalUser], updates: int, interleave: int
) -> tuple[Run, int]:
    """Interleaved forms until `updates` updates were processed; returns the run and the
    number of reports submitted."""
    run = Run()
    waiting = iter(users)
    active: list[tuple[LocalUser, int]] = []
    submitted = 0
    while len(run.latencies) < updates:
        while len(active) < interleave:
            user = next(waiting, None)
            if user is None:
                break
            active.append((user, 0))
        if not active:
            break
        still: list[tuple[LocalUser, int]] = []
        for user, step in active:
            if len(run.latencies) >= updates:
                break
            data, step = next_update(api, user, step)
            if data is None:
                data, step = next_update(api, user, step)
            assert data is not None
            await timed(app, run, data)
            if step < len(FORM):
                still.append((user, step))
            else:
                submitted += 1
                api.forget(user.user_id)
        active = still
        api.calls.clear()
    return run, submitted


async def echo(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    assert message is not None
    assert message.text is not None
    await message.reply_text(message.text)


async def play_echo(updates: int, people: int) -> Run:
    api = BenchAPI()
    app: App = ApplicationBuilder().token(LOCAL_TOKEN).request(api).get_updates_request(api).build()
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    users = [LocalUser(api, FIRST_USER_ID + n, "Bendahara") for n in range(max(1, people))]
    run = Run()
    async with app:
        for n in range(updates):
            user = users[n % len(users)]
            await timed(app, run, user.text_update(FORM[4 + n % 3][1]))
            if n % 1000 == 999:
                api.calls.clear()
                api.messages.clear()
                api.by_chat.clear()
    return run


async def measure(url: str, updates: int, koperasi: int, interleave: int) -> dict[str, Any]:
    forms = math.ceil(updates / UPDATES_PER_FORM)
    koperasi = max(koperasi, forms)
    settings = Settings(database_url=url, telegram_bot_token=None, _env_file=None)  # type: ignore[call-arg]
    core = Core.create(settings, clock=FixedClock(NOW))
    errors = ErrorCount()
    logging.getLogger().addHandler(errors)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            csv = Path(scratch) / "registry.csv"
            registry_csv(csv, koperasi)
            await import_file(core.db, csv, core.clock.now(), "bench")
        api = BenchAPI()
        app = build_application(core, request=api)
        async with app:
            setup = time.perf_counter()
            users = await link_treasurers(core, app, api, forms)
            setup = time.perf_counter() - setup
            settle_memory()  # as a started bot does at the end of its post_init
            form_errors = errors.count
            statements = StatementCount(core)
            # SQLite's hot path runs its statements on its own connection (storage.direct).
            direct = core.db.direct
            linking = direct.statements if direct else 0
            run, submitted = await play_forms(app, api, users, updates, interleave)
            run.statements = statements.count + (direct.statements - linking if direct else 0)
            form_errors = errors.count - form_errors
        async with core.db.sessions() as session:
            stored = int(await session.scalar(select(func.count(ReportRevision.id))) or 0)
    finally:
        logging.getLogger().removeHandler(errors)
        await core.close()
    if form_errors or stored != submitted:
        raise SystemExit(
            f"the form run failed: {form_errors} errors logged ({errors.first}), "
            f"{submitted} reports submitted but {stored} stored"
        )
    bare = await play_echo(updates, interleave)
    return {
        "database": core.db.dialect,
        "updates": len(run.latencies),
        "reports_submitted": submitted,
        "koperasi": koperasi,
        "interleave": interleave,
        "link_seconds": round(setup, 2),
        "answers_per_second": round(run.rate, 1),
        "echo_per_second": round(bare.rate, 1),
        "ratio": round(run.rate / bare.rate, 4) if bare.rate else 0.0,
        "answers_per_cpu_second": round(run.cpu_rate, 1),
        "echo_per_cpu_second": round(bare.cpu_rate, 1),
        "cpu_ratio": round(run.cpu_rate / bare.cpu_rate, 4) if bare.cpu_rate else 0.0,
        "statements_per_update": round(run.statements / len(run.latencies), 2),
        "p50_ms": round(run.percentile(50) * 1000, 3),
        "p99_ms": round(run.percentile(99) * 1000, 3),
        "max_ms": round(max(run.latencies, default=0.0) * 1000, 3),
        "mean_ms": round(statistics.fmean(run.latencies) * 1000, 3) if run.latencies else 0.0,
        "echo_p50_ms": round(bare.percentile(50) * 1000, 3),
        "echo_p99_ms": round(bare.percentile(99) * 1000, 3),
    }


async def pg_admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """A migrated database for the run (see the module docstring)."""
    if url is None:
        with tempfile.TemporaryDirectory() as scratch:
            path = f"sqlite+aiosqlite:///{scratch}/bench.db"
            upgrade(path)
            yield path
        return
    if url.startswith("sqlite"):
        url = url.replace("sqlite://", "sqlite+aiosqlite://", 1) if "+" not in url else url
        upgrade(url)
        yield url
        return
    server = url.replace("+asyncpg", "", 1).replace("postgres://", "postgresql://", 1)
    name = f"kopbot_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(pg_admin(server, f'CREATE DATABASE "{name}"'))
    own = f"postgresql+asyncpg://{server.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    try:
        upgrade(own)
        yield own
    finally:
        asyncio.run(pg_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Report answers per second through process_update, next to a bare echo bot."
    )
    parser.add_argument(
        "--url",
        help="database: sqlite:///new-file.db, or a PostgreSQL server URL on which a database "
        "is created and dropped (default: a temporary SQLite file)",
    )
    parser.add_argument("--updates", type=int, default=5000, help="form updates to process")
    parser.add_argument(
        "--koperasi",
        type=int,
        default=300,
        help="cooperatives in the registry (at least one "
        f"per {UPDATES_PER_FORM} updates: each treasurer fills in one whole report)",
    )
    parser.add_argument("--interleave", type=int, default=50, help="forms in progress at once")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.updates < 1 or args.interleave < 1:
        parser.error("--updates and --interleave must be positive")
    logging.basicConfig(level=logging.WARNING)
    with database(args.url) as url:
        figures = asyncio.run(measure(url, args.updates, args.koperasi, args.interleave))
    if args.json:
        print(json.dumps(figures))
        return 0
    print(
        f"{figures['database']}: {figures['updates']} report updates "
        f"({figures['reports_submitted']} reports submitted, {figures['interleave']} forms "
        f"interleaved)\n"
        f"  answers/s   {figures['answers_per_second']:>9,.0f}   "
        f"p50 {figures['p50_ms']:.2f} ms   p99 {figures['p99_ms']:.2f} ms   "
        f"max {figures['max_ms']:.1f} ms\n"
        f"  echo/s      {figures['echo_per_second']:>9,.0f}   "
        f"p50 {figures['echo_p50_ms']:.2f} ms   p99 {figures['echo_p99_ms']:.2f} ms\n"
        f"  ratio       {figures['ratio']:>9.1%}   "
        f"({figures['statements_per_update']:.1f} SQL statements per report update)\n"
        f"  CPU time only: {figures['answers_per_cpu_second']:,.0f} answers/s, "
        f"{figures['echo_per_cpu_second']:,.0f} echo/s, ratio {figures['cpu_ratio']:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
