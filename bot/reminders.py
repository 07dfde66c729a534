"""The monthly reporting calendar: the opening notice, reminders and the officers' overdue digest.

The scheduler only wakes `tick`; what is due and what was already decided comes from the
database. Each decision is a ledger row per (kind, period, target) with a unique constraint,
written in the transaction that queues its messages in the outbox, so a tick that runs twice, in
one process or two, queues nothing the second time, and a tick after downtime catches up once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot import rsvp
from bot.config import Settings
from bot.core import Core
from bot.identity import Actor
from bot.outbox import Outgoing, enqueue, sending_window
from bot.periods import Period
from bot.replies import Reply
from bot.reports import deadline, report_topic
from storage.models import (
    BoardMember,
    ChatIdentity,
    Jabatan,
    Kecamatan,
    Kelurahan,
    Koperasi,
    LedgerEntry,
    Officer,
    Person,
    Report,
    ReportDraft,
    RoleLevel,
)
from storage.upsert import insert_returning_new

OPEN = "open"
DIGEST = "digest"
# The digest lists at most this many cooperatives by name; the rest are counted.
DIGEST_MAX_NAMES = 150
# Ledger rows and their messages are decided in transactions of this many targets.
BATCH = 500


def reminder_kind(number: int) -> str:
    return f"reminder_{number}"


def board_kinds(settings: Settings) -> list[str]:
    """The kinds of notice sent to boards, in calendar order."""
    return [OPEN] + [reminder_kind(i) for i in range(1, len(settings.report_reminder_days) + 1)]


@dataclass(frozen=True)
class Notice:
    """One notice of the calendar for a period.

    `due` is when the calendar says; `send_at` is the same moved into the sending window;
    after `until` it is no longer meaningful (the next notice, or the deadline, took over).
    """

    kind: str
    period: Period
    due: datetime
    send_at: datetime
    until: datetime
    number: int = 0  # 1, 2, ... for reminders

    @property
    def is_digest(self) -> bool:
        return self.kind == DIGEST


def _on_day(settings: Settings, month: Period, day: int) -> datetime:
    day = min(day, month.last_day().day)
    return datetime.combine(
        month.first_day().replace(day=day), settings.report_notice_time, tzinfo=settings.tz
    )


def calendar(settings: Settings, period: Period) -> list[Notice]:
    """The notices of one period, in order: open, reminders, and the digest after the deadline."""
    window = sending_window(settings)
    following = period.next()
    end = deadline(settings, period)
    dues: list[tuple[str, datetime, int]] = [
        (OPEN, _on_day(settings, following, settings.report_open_day), 0)
    ]
    for number, day in enumerate(settings.report_reminder_days, start=1):
        dues.append((reminder_kind(number), _on_day(settings, following, day), number))
    # The digest goes out at the notice time of the first day after the deadline.
    digest_due = datetime.combine(
        end.date() + timedelta(days=1), settings.report_notice_time, tzinfo=settings.tz
    )
    next_open = _on_day(settings, following.next(), settings.report_open_day)
    notices = []
    for index, (kind, due, number) in enumerate(dues):
        until = dues[index + 1][1] if index + 1 < len(dues) else end
        notices.append(Notice(kind, period, due, window.next_open(due), until, number))
    notices.append(Notice(DIGEST, period, digest_due, window.next_open(digest_due), next_open))
    return notices


def _periods_around(settings: Settings, at: datetime) -> list[Period]:
    current = Period.containing(at, settings.tz)
    return [current.previous().previous(), current.previous(), current]


def due_notices(settings: Settings, at: datetime) -> list[Notice]:
    """The notices that should have gone out by `at` and are still meaningful."""
    return [
        notice
        for period in _periods_around(settings, at)
        for notice in calendar(settings, period)
        if notice.send_at <= at < notice.until
    ]


def upcoming(settings: Settings, at: datetime, count: int = 6) -> list[Notice]:
    """The next `count` notices sent after `at`, in order."""
    found: list[Notice] = []
    period = _periods_around(settings, at)[0]
    while len(found) < count:
        found.extend(n for n in calendar(settings, period) if n.send_at > at)
        period = period.next()
    return sorted(found, key=lambda n: n.send_at)[:count]


def next_wakeup(settings: Settings, at: datetime) -> datetime:
    return upcoming(settings, at, 1)[0].send_at


@dataclass
class NoticeResult:
    notice: Notice
    targets: int = 0
    messages: int = 0


@dataclass
class TickResult:
    at: datetime
    outside_window: bool = False
    notices: list[NoticeResult] = field(default_factory=list)
    # Summons reminders (H-1, H-0) queued by this tick.
    summons: int = 0

    @property
    def messages(self) -> int:
        return sum(n.messages for n in self.notices) + self.summons


async def tick(core: Core, at: datetime | None = None) -> TickResult:
    """Decide and queue whatever is due at `at` (default: now). Safe to run at any time, any
    number of times, from any number of processes."""
    at = at or core.clock.now()
    result = TickResult(at)
    if not sending_window(core.settings).contains(at):
        result.outside_window = True
        return result
    for notice in due_notices(core.settings, at):
        if notice.is_digest:
            result.notices.append(await _digest(core, notice, at))
        else:
            result.notices.append(await _board_notice(core, notice, at))
    result.summons = await rsvp.remind(core, at)
    return result


async def next_wake(core: Core, at: datetime) -> datetime:
    """When the scheduler should tick next: the next calendar notice or summons reminder."""
    candidates = [next_wakeup(core.settings, at)]
    summons = await rsvp.next_reminder_at(core, at)
    if summons is not None:
        candidates.append(summons)
    return min(candidates)


# Board notices ------------------------------------------------------------------------------


class _Recipient(NamedTuple):
    koperasi_id: int
    koperasi_nama: str
    person_id: int
    person_nama: str
    identity_id: int


# Built once: a national notice runs these a few hundred times, and building and coercing a
# statement costs about as much as SQLite takes to answer it. The position and the batch size
# are written into the SQL: PostgreSQL plans each batch for its own values then, where a plan
# cached for any value scanned a cooperative's every report from the start (4.5 s a notice).
_AFTER = bindparam("after_id", type_=Integer, literal_execute=True)
_CANDIDATES = (
    select(Koperasi.id)
    .where(
        Koperasi.id > _AFTER,
        # The bound repeated inside: PostgreSQL turns this into a merge join, which otherwise
        # reads the board members of every cooperative before `after_id` for each batch.
        exists().where(BoardMember.koperasi_id == Koperasi.id, BoardMember.koperasi_id > _AFTER),
        ~exists().where(Report.koperasi_id == Koperasi.id, Report.period == bindparam("period")),
        ~exists().where(
            LedgerEntry.kind == bindparam("kind"),
            LedgerEntry.period == bindparam("period"),
            # The whole unique key: one index lookup per cooperative on every backend, with or
            # without planner statistics (kind and period alone match every cooperative
            # already decided, so a tick re-run scanned all of them for each cooperative).
            LedgerEntry.target == literal("k") + cast(Koperasi.id, String),
        ),
    )
    .order_by(Koperasi.id)
    .limit(bindparam("limit", type_=Integer, literal_execute=True))
)
_RECIPIENTS = (
    select(Koperasi.id, Koperasi.nama, Person.id, Person.nama, ChatIdentity.id)
    .join(BoardMember, BoardMember.koperasi_id == Koperasi.id)
    .join(Jabatan, Jabatan.id == BoardMember.jabatan_id)
    .join(Person, Person.id == BoardMember.person_id)
    .join(
        ChatIdentity,
        and_(ChatIdentity.person_id == Person.id, ChatIdentity.unreachable_at.is_(None)),
    )
    .where(
        Koperasi.id.in_(bindparam("koperasi_ids", expanding=True)),
        Jabatan.level != RoleLevel.PENGAWAS,
    )
    .order_by(Koperasi.id, Person.id, ChatIdentity.id)
)


async def _candidates(
    session: AsyncSession, notice: Notice, after_id: int, limit: int
) -> list[int]:
    """Cooperatives (id > `after_id`) with a board member that have neither reported nor been
    decided for this notice."""
    # Plain rows through the connection: the ORM layer adds nothing to a list of ids.
    connection = await session.connection()
    rows = await connection.execute(
        _CANDIDATES,
        {"after_id": after_id, "period": notice.period.key, "kind": notice.kind, "limit": limit},
    )
    return list(rows.scalars().all())


async def _board_recipients(session: AsyncSession, koperasi_ids: list[int]) -> list[_Recipient]:
    """The reachable board members of these cooperatives who may report (not supervisors)."""
    connection = await session.connection()
    rows = await connection.execute(_RECIPIENTS, {"koperasi_ids": koperasi_ids})
    return [_Recipient._make(row) for row in rows.all()]


async def _drafting(session: AsyncSession, period: Period, koperasi_ids: list[int]) -> set[int]:
    """People of these cooperatives who already started this period's report: "the report is
    open" tells them nothing (someone who linked after the opening and went straight to /lapor)."""
    rows = await session.execute(
        select(ReportDraft.person_id).where(
            ReportDraft.koperasi_id.in_(koperasi_ids), ReportDraft.period == period.key
        )
    )
    return set(rows.scalars().all())


async def _board_notice(core: Core, notice: Notice, at: datetime) -> NoticeResult:
    result = NoticeResult(notice)
    after_id = 0
    while True:
        async with core.db.transaction() as session:
            candidates = await _candidates(session, notice, after_id, BATCH)
            if not candidates:
                return result
            after_id = candidates[-1]
            by_koperasi: dict[int, list[_Recipient]] = defaultdict(list)
            drafting = (
                await _drafting(session, notice.period, candidates)
                if notice.kind == OPEN
                else set()
            )
            for recipient in await _board_recipients(session, candidates):
                if recipient.person_id not in drafting:
                    by_koperasi[recipient.koperasi_id].append(recipient)
            if not by_koperasi:
                continue
            new = set(
                await insert_returning_new(
                    session,
                    LedgerEntry,
                    [
                        {
                            "kind": notice.kind,
                            "period": notice.period.key,
                            "target": f"k{koperasi_id}",
                            "koperasi_id": koperasi_id,
                            "recipients": len(people),
                            "decided_at": at,
                        }
                        for koperasi_id, people in by_koperasi.items()
                    ],
                    ["kind", "period", "target"],
                    LedgerEntry.koperasi_id,
                )
            )
            items = [
                _board_message(core, notice, r)
                for koperasi_id in sorted(new)
                for r in by_koperasi[koperasi_id]
            ]
            result.targets += len(new)
            result.messages += await enqueue(session, items, at)


def _board_message(core: Core, notice: Notice, r: _Recipient) -> Outgoing:
    m = core.messages
    period = notice.period
    settings = core.settings
    reminders = len(settings.report_reminder_days)
    text = m.render(
        "pengingat_laporan",
        kind="open" if notice.kind == OPEN else "reminder",
        number=notice.number,
        last=notice.number == reminders,
        salam=m.salam(notice.send_at),
        nama=r.person_nama,
        koperasi=r.koperasi_nama,
        periode=period.name(m.language),
        batas=deadline(settings, period),
    )
    button = m.render("btn_isi_laporan", periode=period.name(m.language))
    return Outgoing(
        dedupe_key=f"{notice.kind}:{period.key}:p{r.person_id}:i{r.identity_id}",
        kind=notice.kind,
        chat_identity_id=r.identity_id,
        person_id=r.person_id,
        text=text,
        buttons=[[(button, f"lapor:{period.key}")]],
        topic=report_topic(period, r.koperasi_id),
        # WhatsApp's template outside its 24-hour window (messages/*/wa_template_open/reminder).
        params={
            "nama": r.person_nama,
            "koperasi": r.koperasi_nama,
            "periode": period.name(m.language),
            "batas": m.tanggal(deadline(settings, period)),
        },
    )


# The officers' digest -----------------------------------------------------------------------


@dataclass
class KoperasiStatus:
    id: int
    nama: str
    kelurahan: str
    kecamatan_id: int
    kecamatan: str
    reported: bool = False
    late: bool = False
    linked: bool = False
    reachable: bool = False


@dataclass
class PeriodStatus:
    """Who reported a period, on time or late, within one scope."""

    period: Period
    koperasi: list[KoperasiStatus]

    @property
    def on_time(self) -> int:
        return sum(1 for k in self.koperasi if k.reported and not k.late)

    @property
    def late(self) -> int:
        return sum(1 for k in self.koperasi if k.reported and k.late)

    @property
    def missing(self) -> list[KoperasiStatus]:
        return [k for k in self.koperasi if not k.reported]

    def missing_by_kecamatan(self) -> list[tuple[str, list[KoperasiStatus]]]:
        groups: dict[str, list[KoperasiStatus]] = defaultdict(list)
        for k in self.missing:
            groups[k.kecamatan].append(k)
        return [
            (name, sorted(items, key=lambda k: k.nama)) for name, items in sorted(groups.items())
        ]


async def period_status(
    session: AsyncSession, period: Period, kecamatan_id: int | None
) -> PeriodStatus:
    """The reporting status of every cooperative in a scope (a kecamatan, or the city)."""
    query = (
        select(Koperasi.id, Koperasi.nama, Kelurahan.nama, Kecamatan.id, Kecamatan.nama)
        .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
        .join(Kecamatan, Kecamatan.id == Kelurahan.kecamatan_id)
        .order_by(Kecamatan.nama, Koperasi.nama)
    )
    if kecamatan_id is not None:
        query = query.where(Kecamatan.id == kecamatan_id)
    connection = await session.connection()
    koperasi = {row[0]: KoperasiStatus(*row) for row in (await connection.execute(query)).all()}

    def in_scope(statement: Any, koperasi_id: Any) -> Any:
        # A kecamatan officer's digest reads its own kecamatan, not the whole country.
        if kecamatan_id is None:
            return statement
        return (
            statement.join(Koperasi, Koperasi.id == koperasi_id)
            .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
            .where(Kelurahan.kecamatan_id == kecamatan_id)
        )

    reports = await connection.execute(
        in_scope(
            select(Report.koperasi_id, Report.late).where(Report.period == period.key),
            Report.koperasi_id,
        )
    )
    for koperasi_id, late in reports.all():
        if koperasi_id in koperasi:
            koperasi[koperasi_id].reported = True
            koperasi[koperasi_id].late = late
    # One row per cooperative with a board member: whether any of them can be reached (a
    # member without a chat identity counts as reachable, as before).
    members = await connection.execute(
        in_scope(
            select(
                BoardMember.koperasi_id,
                func.max(case((ChatIdentity.unreachable_at.is_(None), 1), else_=0)),
            )
            .join(Person, Person.id == BoardMember.person_id)
            .outerjoin(ChatIdentity, ChatIdentity.person_id == Person.id),
            BoardMember.koperasi_id,
        ).group_by(BoardMember.koperasi_id)
    )
    for koperasi_id, reachable in members.all():
        if koperasi_id in koperasi:
            koperasi[koperasi_id].linked = True
            koperasi[koperasi_id].reachable = bool(reachable)
    return PeriodStatus(period, list(koperasi.values()))


@dataclass(frozen=True)
class _OfficerRecipient:
    officer_id: int
    kecamatan_id: int | None
    kecamatan: str | None
    person_id: int
    person_nama: str
    identity_id: int


async def _officer_recipients(session: AsyncSession, notice: Notice) -> list[_OfficerRecipient]:
    rows = await session.execute(
        select(
            Officer.id,
            Officer.kecamatan_id,
            Kecamatan.nama,
            Person.id,
            Person.nama,
            ChatIdentity.id,
        )
        .join(Person, Person.id == Officer.person_id)
        .join(
            ChatIdentity,
            and_(ChatIdentity.person_id == Person.id, ChatIdentity.unreachable_at.is_(None)),
        )
        .outerjoin(Kecamatan, Kecamatan.id == Officer.kecamatan_id)
        .where(
            Officer.active.is_(True),
            ~exists().where(
                LedgerEntry.kind == notice.kind,
                LedgerEntry.period == notice.period.key,
                LedgerEntry.officer_id == Officer.id,
            ),
        )
        .order_by(Officer.id, ChatIdentity.id)
    )
    return [_OfficerRecipient(*row) for row in rows.all()]


async def _digest(core: Core, notice: Notice, at: datetime) -> NoticeResult:
    result = NoticeResult(notice)
    async with core.db.transaction() as session:
        recipients = await _officer_recipients(session, notice)
        by_officer: dict[int, list[_OfficerRecipient]] = defaultdict(list)
        for recipient in recipients:
            by_officer[recipient.officer_id].append(recipient)
        if not by_officer:
            return result
        new = set(
            await insert_returning_new(
                session,
                LedgerEntry,
                [
                    {
                        "kind": DIGEST,
                        "period": notice.period.key,
                        "target": f"o{officer_id}",
                        "officer_id": officer_id,
                        "recipients": len(people),
                        "decided_at": at,
                    }
                    for officer_id, people in by_officer.items()
                ],
                ["kind", "period", "target"],
                LedgerEntry.officer_id,
            )
        )
        statuses: dict[int | None, PeriodStatus] = {}
        items: list[Outgoing] = []
        for officer_id in sorted(new):
            for r in by_officer[officer_id]:
                if r.kecamatan_id not in statuses:
                    statuses[r.kecamatan_id] = await period_status(
                        session, notice.period, r.kecamatan_id
                    )
                items.append(_digest_message(core, notice, r, statuses[r.kecamatan_id]))
        result.targets = len(new)
        result.messages = await enqueue(session, items, at)
    return result


def digest_values(core: Core, status: PeriodStatus) -> dict[str, Any]:
    """What the digest and /jadwal show of a period's status."""
    groups = status.missing_by_kecamatan()
    shown: list[tuple[str, list[KoperasiStatus]]] = []
    budget = DIGEST_MAX_NAMES
    for name, items in groups:
        if budget <= 0:
            break
        shown.append((name, items[:budget]))
        budget -= len(items)
    missing = len(status.missing)
    return {
        "total": len(status.koperasi),
        "tepat": status.on_time,
        "terlambat": status.late,
        "belum": missing,
        "kelompok": shown,
        "lainnya": missing - sum(len(items) for _, items in shown),
        "belum_terhubung": sum(1 for k in status.koperasi if not k.linked),
    }


def _digest_message(
    core: Core, notice: Notice, r: _OfficerRecipient, status: PeriodStatus
) -> Outgoing:
    m = core.messages
    text = m.render(
        "rekap_tunggakan",
        salam=m.salam(notice.send_at),
        nama=r.person_nama,
        wilayah=r.kecamatan,
        periode=notice.period.name(m.language),
        batas=deadline(core.settings, notice.period),
        **digest_values(core, status),
    )
    return Outgoing(
        dedupe_key=f"{DIGEST}:{notice.period.key}:o{r.officer_id}:i{r.identity_id}",
        kind=DIGEST,
        chat_identity_id=r.identity_id,
        person_id=r.person_id,
        text=text,
        # WhatsApp's template outside its 24-hour window (messages/*/wa_template_digest).
        params={
            "nama": r.person_nama,
            "periode": notice.period.name(m.language),
            "total": str(len(status.koperasi)),
            "belum": str(len(status.missing)),
        },
    )


# What operators and officers see ------------------------------------------------------------


async def decided(session: AsyncSession, periods: Sequence[Period]) -> dict[tuple[str, str], int]:
    """How many targets each (kind, period) notice was decided for."""
    rows = await session.execute(
        select(LedgerEntry.kind, LedgerEntry.period, func.count())
        .where(LedgerEntry.period.in_([p.key for p in periods]))
        .group_by(LedgerEntry.kind, LedgerEntry.period)
    )
    return {(kind, period): int(count) for kind, period, count in rows.all()}


def current_period(settings: Settings, at: datetime) -> Period:
    """The period people are reporting for now: last month's until its deadline has passed,
    then the current month (whose report opens next)."""
    period = Period.containing(at, settings.tz).previous()
    if at > deadline(settings, period):
        period = period.next()
    return period


async def schedule_view(core: Core, actor: Actor) -> Reply:
    """/jadwal: the calendar of the current period, what already went out, and the status."""
    m = core.messages
    if not actor.is_linked:
        return Reply(m.render("jadwal_tidak_boleh"))
    settings = core.settings
    now = core.clock.now()
    period = current_period(settings, now)
    notices = calendar(settings, period)
    if actor.officer is None:
        notices = [n for n in notices if not n.is_digest]
    values: dict[str, Any] = {}
    async with core.db.sessions() as session:
        if actor.officer is not None:
            status = await period_status(session, period, actor.officer.kecamatan_id)
            values.update(digest_values(core, status), wilayah=actor.officer.kecamatan)
        report = None
        if actor.membership is not None:
            report = await session.scalar(
                select(Report).where(
                    Report.koperasi_id == actor.membership.koperasi_id,
                    Report.period == period.key,
                )
            )
    return Reply(
        m.render(
            "jadwal",
            periode=period.name(m.language),
            notices=[
                {"kind": n.kind, "number": n.number, "at": n.send_at, "past": n.send_at <= now}
                for n in notices
            ],
            batas=deadline(settings, period),
            mulai=settings.send_window_start,
            selesai=settings.send_window_end,
            petugas=actor.officer is not None,
            koperasi=actor.membership.koperasi_nama if actor.membership else None,
            laporan=report,
            **values,
        )
    )
