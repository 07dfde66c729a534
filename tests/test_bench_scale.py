"""bench/generate.py and bench/scale.py at a tiny size: the generator writes what it says, in the
shape the app writes, and scale.py prints every figure (the national run is docs/BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.generate import generate
from bot.laporan import MONTHLY_REPORT
from storage.db import Database
from storage.models import (
    AuditLog,
    BoardMember,
    ChatIdentity,
    Koperasi,
    LedgerEntry,
    OutboxMessage,
    Person,
    Report,
    ReportDraft,
    ReportRevision,
)
from tests.conftest import PG_URL, _pg_admin, _pg_reachable

ROOT = Path(__file__).resolve().parents[1]
COOPS, MONTHS = 200, 3
FIGURES = {
    "reminder_targets",
    "reminder_people",
    "reminder_rerun",
    "digest_status",
    "rekap",
    "rekap_trend",
    "export_xlsx",
    "memory",
    "answer_behind_export",
    "answer_during_export",
    "answer_during_export_max",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "scale.db")
        return
    problem = _pg_reachable()
    if problem is not None:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({problem})")
    name = f"kopbot_bench_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _traces(url: str) -> tuple[int, list[str], list[tuple[object, ...]]]:
    """What a person's messages change: drafts, audit rows, when each chat was last seen."""
    from bench._common import async_url

    db = Database(async_url(url))
    try:
        async with db.sessions() as session:
            drafts = int(await session.scalar(select(func.count()).select_from(ReportDraft)) or 0)
            actions = list((await session.scalars(select(AuditLog.action))).all())
            seen = (
                await session.execute(
                    select(
                        ChatIdentity.id, ChatIdentity.last_seen_at, ChatIdentity.unreachable_at
                    ).order_by(ChatIdentity.id)
                )
            ).all()
            return drafts, actions, [tuple(row) for row in seen]
    finally:
        await db.dispose()


async def _stored(url: str) -> dict[str, object]:
    from bench._common import async_url

    db = Database(async_url(url))
    try:
        async with db.sessions() as session:

            async def count(model: type) -> int:
                return int(await session.scalar(select(func.count()).select_from(model)) or 0)

            counts = {
                model.__tablename__: await count(model)
                for model in (
                    Koperasi,
                    Person,
                    ChatIdentity,
                    BoardMember,
                    Report,
                    ReportRevision,
                    LedgerEntry,
                    OutboxMessage,
                )
            }
            answers = (await session.scalars(select(ReportRevision.answers))).all()
            current = await session.execute(
                select(ReportRevision.answers, *(getattr(Report, c) for c in Report.COUNTED)).join(
                    Report,
                    (Report.id == ReportRevision.report_id)
                    & (Report.current_revision == ReportRevision.revision),
                )
            )
            counted = [(dict(zip(Report.COUNTED, rest, strict=True)), a) for a, *rest in current]
            marker = await session.scalar(
                select(AuditLog.detail).where(AuditLog.action == "bench.generated")
            )
            grouped = await session.execute(
                select(Report.period, func.count()).group_by(Report.period)
            )
            per_month = {str(period): int(n) for period, n in grouped.all()}
    finally:
        await db.dispose()
    return {
        "counts": counts,
        "answers": answers,
        "counted": counted,
        "marker": marker,
        "per_month": per_month,
    }


def test_generate_then_measure(url: str) -> None:
    counts = generate(["--url", url, "--coops", str(COOPS), "--months", str(MONTHS)])
    assert (counts.koperasi, counts.board_member, counts.person) == (
        COOPS,
        3 * COOPS,
        3 * COOPS + 1,
    )
    stored = asyncio.run(_stored(url))
    tables = stored["counts"]
    assert tables == {
        "koperasi": COOPS,
        "person": 3 * COOPS + 1,  # and the city-wide officer
        "chat_identity": 3 * COOPS + 1,
        "board_member": 3 * COOPS,
        "report": counts.report,
        "report_revision": counts.report_revision,
        "reminder_ledger": counts.reminder_ledger,
        "outbox": counts.outbox,
    }
    assert counts.report_revision > counts.report > 0
    assert counts.reminder_ledger > 0
    assert counts.outbox > counts.reminder_ledger
    # The reporting rate grows month by month (10 % to 60 %).
    per_month = [n for _, n in sorted(stored["per_month"].items())]  # type: ignore[attr-defined]
    assert per_month == sorted(per_month)
    assert per_month[0] < 0.25 * COOPS < 0.45 * COOPS < per_month[-1]
    # Every revision is a complete report, as the form leaves it.
    for answers in stored["answers"]:  # type: ignore[attr-defined]
        assert MONTHLY_REPORT.clean(answers) == answers
        assert MONTHLY_REPORT.next_field(answers) is None
    # Each report carries its current revision's counted answers, as submitting leaves them.
    counted = stored["counted"]
    assert len(counted) == counts.report  # type: ignore[arg-type]
    for columns, answers in counted:  # type: ignore[attr-defined]
        assert columns == Report.counted(answers)
    assert stored["marker"]["coops"] == COOPS  # type: ignore[index]

    before = asyncio.run(_traces(url))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "scale.py"),
            "--url",
            url,
            "--coops",
            str(COOPS),
            "--months",
            str(MONTHS),
            "--repeat",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert "reusing" in done.stdout, done.stdout + done.stderr
    report = json.loads(done.stdout[done.stdout.index("{") :])
    figures = {f["name"]: f for f in report["figures"]}
    assert set(figures) == FIGURES
    # Times are rounded to the millisecond: at this size a re-run may round to 0.
    assert all(f["value"] >= 0 for f in figures.values())
    assert figures["memory"]["value"] > 0
    assert figures["export_xlsx"]["value"] > 0
    assert figures["reminder_targets"]["detail"].startswith(f"open 2026-11: {COOPS} koperasi")
    assert figures["reminder_people"]["value"] >= figures["reminder_targets"]["value"]
    assert figures["reminder_rerun"]["detail"] == "open 2026-10: 0 koperasi"
    assert f"{COOPS} rows" in figures["export_xlsx"]["detail"]
    # (e): treasurers' /lapor answered while the officer's /ekspor ran, and the baseline.
    assert figures["answer_during_export"]["detail"].startswith("median of ")
    assert figures["answer_behind_export"]["value"] > 0
    # What (e) wrote is put back: the next run measures the same data.
    assert asyncio.run(_traces(url)) == before
    # At this size every target is met; the exit status says so.
    assert done.returncode == 0, done.stdout
