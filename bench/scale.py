"""How the bot's heavy reads behave at national scale (80,000 cooperatives), on SQLite and
PostgreSQL: the reminder targets of a period, /rekap of the whole registry, the XLSX export of
one month, and the resident memory of a process that did all three.

    .venv/bin/python bench/scale.py                      # SQLite, and PostgreSQL if reachable
    .venv/bin/python bench/scale.py --url /tmp/scale.db --coops 80000 --json
    .venv/bin/python bench/scale.py --url postgresql://postgres@127.0.0.1:5432/bench_scale

A database generated earlier (bench/generate.py, recognised by its `bench.generated` audit row
with the same size) is reused; otherwise it is generated first. Each database is measured in a
fresh child process running exactly the app's code:

- (a) bot.reminders' candidate query over the whole registry, batch by batch as a tick runs
  it, for the opening notice of the month after `--period` (nobody reported or decided yet: the
  heaviest notice); the same with the recipient query (the people a tick queues messages for,
  shown without a target: it is part of queuing their messages);
  and the candidate query for `--period`'s own opening notice, already decided for everyone (the
  idempotent re-run every later tick makes). Nothing is written.
- the officers' digest and /jadwal status (bot.reminders.period_status), city-wide.
- (b) bot.rekap.recap_view for the generated city-wide officer (the recap and its message), and
  the data of the reporting-rate chart.
- (c) bot.export.export_xlsx of `--period`, the whole registry, to a file.
- (d) the child's peak resident memory (VmHWM) after all of it, plus the peak of the process
  that wrote the workbook when the export used one (bot.xlsx.WorkbookProcess).
- (e) a treasurer's /lapor while the city-wide officer's /ekspor builds the same workbook, in a
  started Application (its own update queue, handled one at a time as polling and webhook
  do): treasurers' updates are queued one after another, each once the one before it was
  answered, from the officer's /ekspor until the document is sent; their time from the queue
  to the answer. The /ekspor answers in a task of its own (handlers.common.slow); before that
  change every update behind it waited for the whole export.

(a) and (b) show the median of `--repeat` runs; (c) runs once. The exit status is 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    GENERATED,
    LAST_PERIOD,
    NOW,
    async_url,
    pg_database_exists,
    pg_drop_database,
    sqlite_file,
)

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/bench_scale"
RESULT = "SCALE-RESULT "
# Selecting the reminder targets is deciding which cooperatives are due (what every tick runs,
# and re-runs); reading their people belongs to queuing the messages, one row per message, and
# is shown without a target (docs/BENCHMARKS.md, "National scale").
TARGETS = {
    "reminder_targets": 1.0,
    "reminder_rerun": 1.0,
    "rekap": 1.0,
    "export_xlsx": 15.0,
    "memory": 250.0,
}
LABELS = {
    "reminder_targets": "(a) cooperatives to remind (first decision)",
    "reminder_people": "    ... and reading the people to remind",
    "reminder_rerun": "(a) cooperatives to remind, re-run",
    "digest_status": "    officers' digest / jadwal status, city",
    "rekap": "(b) /rekap, whole registry",
    "rekap_trend": "    /rekap chart data (12 months)",
    "export_xlsx": "(c) XLSX export, one month",
    "memory": "(d) peak resident memory (VmHWM)",
    "answer_behind_export": "(e) /lapor queued behind an inline /ekspor",
    "answer_during_export": "(e) /lapor answered during an /ekspor",
    "answer_during_export_max": "    ... the slowest of them",
}
OFFICER_ID = 999_000_001  # the generated city-wide officer
# The generated treasurers (bendahara): person 3k + 3 of cooperative k, Telegram id 10^9 + person.
FIRST_TREASURER_ID = 1_000_000_003
TREASURERS = 500  # of the first cooperatives, used in turn by (e)


@dataclass
class Figure:
    database: str
    name: str
    value: float
    unit: str
    target: float | None
    detail: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.value < self.target


# The measuring child ------------------------------------------------------------------------


def _peak_mib() -> float:
    from bot.xlsx import peak_mib

    found = peak_mib()
    # ru_maxrss is in KiB on Linux.
    return found if found is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _timed(repeat: int, work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """The median wall time of `repeat` runs, and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


async def measure(url: str, period_key: str, repeat: int, out_dir: Path) -> dict[str, Any]:
    from sqlalchemy import func, select

    from bot import export, reminders
    from bot.clock import FixedClock
    from bot.config import Settings
    from bot.core import Core
    from bot.identity import identify
    from bot.periods import Period
    from bot.rekap import latest_period, recap_view, reporting_trend
    from storage.models import Koperasi

    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    core = Core.create(settings, clock=FixedClock(datetime.fromisoformat(NOW)))
    period = Period.parse_key(period_key)
    figures: dict[str, Any] = {"baseline_mib": _peak_mib()}

    async def targets(notice: reminders.Notice) -> tuple[int, int, float]:
        """What `_board_notice` reads for a notice, batch by batch (nothing is written): the
        cooperatives, their people, and the seconds spent finding the cooperatives."""
        found = people = 0
        after = 0
        finding = 0.0
        while True:
            async with core.db.sessions() as session:
                started = time.perf_counter()
                batch = await reminders._candidates(session, notice, after, reminders.BATCH)
                finding += time.perf_counter() - started
                if not batch:
                    return found, people, finding
                after = batch[-1]
                recipients = await reminders._board_recipients(session, batch)
            found += len({r.koperasi_id for r in recipients})
            people += len(recipients)

    try:
        first = reminders.calendar(settings, period.next())[0]
        runs = [await _timed(1, lambda: targets(first)) for _ in range(repeat)]
        seconds, (found, people, finding) = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        figures["reminder_targets"] = (
            finding,
            f"{first.kind} {first.period.key}: {found} koperasi not reported nor decided",
        )
        figures["reminder_people"] = (
            seconds,
            f"the same with their {people} people (what a tick reads)",
        )
        again = reminders.calendar(settings, period)[0]
        seconds, (found, _, _) = await _timed(repeat, lambda: targets(again))
        figures["reminder_rerun"] = (seconds, f"{again.kind} {again.period.key}: {found} koperasi")

        async def status() -> int:
            async with core.db.sessions() as session:
                found = await reminders.period_status(session, period, None)
            return len(found.missing)

        seconds, missing = await _timed(repeat, status)
        figures["digest_status"] = (seconds, f"{period.key}: {missing} koperasi not reported")

        async with core.db.sessions() as session:
            actor = await identify(session, "telegram", "999000001")
        assert actor.officer is not None, "no city-wide officer in the generated data"
        shown = latest_period(settings, core.clock.now())
        seconds, replies = await _timed(repeat, lambda: recap_view(core, actor, None))
        text = replies[0].text
        figures["rekap"] = (seconds, f"{shown.key}: {len(text):,} characters")
        seconds, trend = await _timed(repeat, lambda: reporting_trend(core, actor, shown))
        figures["rekap_trend"] = (seconds, f"{len(trend)} months")

        path = out_dir / f"ekspor-{period.key}.xlsx"
        started = time.perf_counter()
        summary = await export.export_xlsx(core, [period], path, None)
        seconds = time.perf_counter() - started
        writer = summary.writer_peak_mib
        figures["export_xlsx"] = (
            seconds,
            f"{summary.rows:,} rows, {summary.history_rows:,} Riwayat rows, "
            f"{path.stat().st_size / 2**20:.1f} MiB"
            + ("" if writer is None else ", written by a child process"),
        )
        path.unlink()
        own = _peak_mib()  # (d) before (e), which builds the workbook again
        async with core.db.sessions() as session:
            coops = int(await session.scalar(select(func.count(Koperasi.id))) or 0)
        treasurers = max(1, min(TREASURERS, coops))  # each a treasurer of the generated data
        waited, seconds = await _answers_during_export(core, treasurers, inline=True)
        figures["answer_behind_export"] = (
            max(waited) * 1000,
            f"baseline: /ekspor inline (as before), the /lapor queued after it; "
            f"/ekspor {seconds:.1f} s",
        )
        latencies, seconds = await _answers_during_export(core, treasurers)
        figures["answer_during_export"] = (
            statistics.median(latencies) * 1000,
            f"median of {len(latencies)} answers during the {seconds:.1f} s /ekspor",
        )
        figures["answer_during_export_max"] = (max(latencies) * 1000, "")
    finally:
        await core.close()
    detail = f"baseline after imports {figures['baseline_mib']:.0f} MiB"
    if writer is not None:
        # The XLSX writer's peak is added: an upper bound of the two processes together.
        detail += f"; this process {own:.0f} MiB + the XLSX writer process {writer:.0f} MiB"
        own += writer
    figures["memory"] = (own, detail)
    return figures


async def _answers_during_export(
    core: Any, treasurers: int, inline: bool = False
) -> tuple[list[float], float]:
    """(e): the seconds each treasurer's /lapor took from the update queue to its answer while
    the officer's /ekspor was built, and how long that /ekspor took to send its document.
    `treasurers`: how many of the generated treasurers take turns. `inline`: the baseline,
    /ekspor's handler registered as it was before it ran in a task of its own (the next
    update waits for it)."""
    from telegram import Update
    from telegram.ext import CommandHandler

    import handlers.ekspor
    from bot.app import build_application
    from handlers.local_api import LocalBotAPI, LocalUser

    answered = asyncio.Event()
    waiting_for = ""

    class Watched(LocalBotAPI):
        async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
            result = await super().do_request(*args, **kwargs)
            call = self.calls[-1]
            if call.method == "sendMessage" and str(call.params.get("chat_id")) == waiting_for:
                answered.set()
            return result

    api = Watched()
    app = build_application(core, request=api)
    if inline:
        for handler in app.handlers[0]:
            if isinstance(handler, CommandHandler) and "ekspor" in handler.commands:
                handler.callback = handlers.ekspor.ekspor
    latencies: list[float] = []
    restore = await _keep(core, treasurers)
    async with app:
        await app.start()
        try:
            officer = LocalUser(api, OFFICER_ID, "Petugas")
            started = time.perf_counter()
            await app.update_queue.put(Update.de_json(officer.text_update("/ekspor"), app.bot))
            n = 0
            while not any(c.method == "sendDocument" for c in api.calls):
                if time.perf_counter() - started > 300:
                    raise RuntimeError("/ekspor sent no document within 300 s")
                treasurer = LocalUser(api, FIRST_TREASURER_ID + 3 * (n % treasurers), "Bendahara")
                n += 1
                waiting_for = str(treasurer.user_id)
                answered.clear()
                queued = time.perf_counter()
                await app.update_queue.put(Update.de_json(treasurer.text_update("/lapor"), app.bot))
                await asyncio.wait_for(answered.wait(), 300)
                latencies.append(time.perf_counter() - queued)
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
        finally:
            await app.stop()
            await restore()
    return latencies, seconds


async def _keep(core: Any, treasurers: int) -> Callable[[], Awaitable[None]]:
    """What (e) changes in the generated data, put back afterwards so that a later run measures
    the same data: the drafts /lapor opens, the exports' audit rows, and when the treasurers
    and the officer were last seen (a person who writes is reachable again)."""
    from sqlalchemy import delete, func, select, update

    from storage.models import AuditLog, ChatIdentity, ReportDraft

    people = [str(FIRST_TREASURER_ID + 3 * n) for n in range(treasurers)] + [str(OFFICER_ID)]
    columns = (
        ChatIdentity.last_seen_at,
        ChatIdentity.unreachable_at,
        ChatIdentity.unreachable_reason,
    )
    async with core.db.sessions() as session:
        audit = await session.scalar(select(func.max(AuditLog.id))) or 0
        drafts = await session.scalar(select(func.max(ReportDraft.id))) or 0
        seen = (
            await session.execute(
                select(ChatIdentity.id, *columns).where(
                    ChatIdentity.channel == "telegram", ChatIdentity.external_id.in_(people)
                )
            )
        ).all()

    async def restore() -> None:
        async with core.db.transaction() as session:
            await session.execute(delete(AuditLog).where(AuditLog.id > audit))
            await session.execute(delete(ReportDraft).where(ReportDraft.id > drafts))
            for identity_id, *values in seen:
                await session.execute(
                    update(ChatIdentity)
                    .where(ChatIdentity.id == identity_id)
                    .values(dict(zip((c.key for c in columns), values, strict=True)))
                )

    return restore


def child(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="koperasi-scale-") as tmp:
        figures = asyncio.run(measure(async_url(args.url[0]), args.period, args.repeat, Path(tmp)))
    print(RESULT + json.dumps(figures), flush=True)
    return 0


# The parent ----------------------------------------------------------------------------------


async def _generated(url: str) -> dict[str, Any] | None:
    """What bench/generate.py wrote into the database, or None when it is not complete."""
    from sqlalchemy import select

    from storage.db import Database
    from storage.models import AuditLog

    if url.startswith("postgresql") and not await pg_database_exists(url):
        return None
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return None
    db = Database(url)
    try:
        async with db.sessions() as session:
            detail = await session.scalar(
                select(AuditLog.detail)
                .where(AuditLog.action == GENERATED)
                .order_by(AuditLog.id.desc())
                .limit(1)
            )
    except Exception:  # no schema, or not ours: generate afresh
        return None
    finally:
        await db.dispose()
    return dict(detail) if detail else None


def ensure_data(url: str, coops: int, months: int, regenerate: bool) -> None:
    from storage.migrate import upgrade

    detail = None if regenerate else asyncio.run(_generated(url))
    if detail and detail.get("coops") == coops and detail.get("months") == months:
        print(f"reusing {url} ({coops} cooperatives, {months} months)", flush=True)
        # A database generated before a newer migration (e.g. an added index) catches up.
        upgrade(url)
        return
    from bench.generate import generate

    generate(["--url", url, "--coops", str(coops), "--months", str(months), "--force"])


def run_child(url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--url",
        url,
        "--period",
        args.period,
        "--repeat",
        str(args.repeat),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"measuring {url} failed:\n{done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT))
    return result


def _database_name(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgresql") else "SQLite"


def figures_of(url: str, measured: dict[str, Any]) -> list[Figure]:
    name = _database_name(url)
    figures = []
    for key in LABELS:
        value, detail = measured[key]
        unit = "MiB" if key == "memory" else "ms" if key.startswith("answer_") else "s"
        figures.append(Figure(name, key, round(value, 3), unit, TARGETS.get(key), detail))
    return figures


def table(figures: list[Figure]) -> str:
    lines = [
        f"{'database':<11} {'figure':<44} {'value':>9} {'target':>11}  result  detail",
        "-" * 110,
    ]
    for f in figures:
        target = f"< {f.target:g} {f.unit}" if f.target is not None else ""
        result = {True: "pass", False: "FAIL", None: ""}[f.passed]
        lines.append(
            f"{f.database:<11} {LABELS[f.name]:<44} {f.value:>7.2f} {f.unit:<3}"
            f"{target:>10}  {result:<6}  {f.detail}"
        )
    return "\n".join(lines)


def default_sqlite(coops: int, months: int) -> str:
    return str(Path(tempfile.gettempdir()) / "koperasi-bench" / f"scale-{coops}x{months}.db")


def _pg_reachable() -> bool:
    try:
        asyncio.run(pg_database_exists(DEFAULT_PG))
    except Exception:  # any failure (refused, timeout, auth): not reachable
        return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure the reminder targets, /rekap, the XLSX export and the memory of "
        "the bot at national scale, on SQLite and PostgreSQL."
    )
    parser.add_argument(
        "--url",
        action="append",
        help="database to measure: SQLite file (path or URL) or postgresql://...; repeatable "
        f"(default: {default_sqlite(80_000, 24)} and {DEFAULT_PG} if reachable)",
    )
    parser.add_argument("--coops", type=int, default=80_000, help="cooperatives (default 80000)")
    parser.add_argument("--months", type=int, default=24, help="months of reports (default 24)")
    parser.add_argument(
        "--period",
        default=LAST_PERIOD,
        help=f"the month measured: its export, and the next month's reminders (default "
        f"{LAST_PERIOD}, the newest generated month)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of (a) and (b); the median is shown"
    )
    parser.add_argument("--regenerate", action="store_true", help="generate even if present")
    parser.add_argument(
        "--drop", action="store_true", help="drop the databases afterwards (PostgreSQL and files)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    urls = args.url or [default_sqlite(args.coops, args.months)]
    if not args.url and _pg_reachable():
        urls.append(DEFAULT_PG)
    figures: list[Figure] = []
    try:
        for url in urls:
            full = async_url(url)
            ensure_data(full, args.coops, args.months, args.regenerate)
            print(f"measuring {_database_name(full)} ...", flush=True)
            figures.extend(figures_of(full, run_child(full, args)))
    finally:
        if args.drop:
            for url in urls:
                full = async_url(url)
                path = sqlite_file(full)
                if path is not None:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
                elif full.startswith("postgresql"):
                    asyncio.run(pg_drop_database(full))
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    if args.json:
        print(
            json.dumps(
                {
                    "coops": args.coops,
                    "months": args.months,
                    "machine": machine,
                    "figures": [{**asdict(f), "pass": f.passed} for f in figures],
                },
                indent=2,
            )
        )
    else:
        print(f"\n{args.coops:,} cooperatives, {args.months} months of reports; {machine}")
        print(table(figures))
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
