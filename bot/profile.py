"""/koperasi: one cooperative's profile for officers in its scope and for its own board."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from bot.identity import Actor
from bot.laporan import MONTHLY_REPORT, main_obstacle
from bot.periods import Period
from bot.registry import KoperasiInfo, find_koperasi
from bot.rekap import latest_period
from bot.replies import Buttons, Reply, action_id
from bot.reports import option_label
from storage.models import (
    BoardMember,
    ChatIdentity,
    Jabatan,
    Kecamatan,
    Kelurahan,
    Koperasi,
    Person,
    Report,
    ReportRevision,
    Rsvp,
    Summons,
    SummonsKoperasi,
)

SHOWN_REPORTS = 3
OBSTACLE_MONTHS = 6
SHOWN_SUMMONS = 5
# More matches than this are not offered as buttons: the officer is asked to type more.
MAX_CHOICES = 10


@dataclass(frozen=True)
class Member:
    nama: str
    jabatan: str
    unreachable: bool


@dataclass(frozen=True)
class ReportLine:
    periode: str
    status: str | None
    kendala_utama: str | None
    oleh: str
    pada: datetime
    terlambat: bool
    revisi: int


@dataclass(frozen=True)
class ObstacleMonth:
    periode: str
    reported: bool
    kendala: list[str]
    utama: str | None


@dataclass(frozen=True)
class Answer:
    nama: str
    answer: str
    delegate_nama: str | None
    delegate_jabatan: str | None
    alasan: str | None
    stale: bool


@dataclass
class SummonsLine:
    nomor: str
    hal: str
    starts_at: datetime
    cancelled: bool
    answers: list[Answer] = field(default_factory=list)


@dataclass
class Profile:
    id: int
    nama: str
    kode: str
    kelurahan: str
    kecamatan: str
    kecamatan_id: int
    alamat: str | None
    telepon: str | None
    email: str | None
    pengurus: list[Member] = field(default_factory=list)
    laporan: list[ReportLine] = field(default_factory=list)
    kendala: list[ObstacleMonth] = field(default_factory=list)
    undangan: list[SummonsLine] = field(default_factory=list)


def may_see(actor: Actor, koperasi_id: int, kecamatan_id: int) -> bool:
    """Officers see the cooperatives of their kecamatan (or all); board members their own."""
    officer = actor.officer
    if officer is not None and officer.kecamatan_id in (None, kecamatan_id):
        return True
    return actor.membership is not None and actor.membership.koperasi_id == koperasi_id


def _reply(core: Core, template: str, **values: Any) -> Reply:
    return Reply(core.messages.render(template, **values))


async def _kecamatan_of(session: AsyncSession, ids: list[int]) -> dict[int, int]:
    rows = await session.execute(
        select(Koperasi.id, Kelurahan.kecamatan_id)
        .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
        .where(Koperasi.id.in_(ids))
    )
    return {int(k): int(kec) for k, kec in rows.all()}


async def _example(session: AsyncSession, kecamatan_id: int | None) -> str:
    """A kelurahan the officer may look up, for the example in the answer."""
    query = select(Kelurahan.nama).order_by(Kelurahan.nama).limit(1)
    if kecamatan_id is not None:
        query = query.where(Kelurahan.kecamatan_id == kecamatan_id)
    return str(await session.scalar(query) or "")


async def profile(core: Core, actor: Actor, query: str | None) -> list[Reply]:
    """/koperasi [nama]: the profile of the one match in scope, buttons when several match,
    a polite answer with an example when none does."""
    officer = actor.officer
    membership = actor.membership
    if officer is None and membership is None:
        return [_reply(core, "profil_tidak_boleh", reason="unlinked", koperasi=None)]
    query = (query or "").strip()
    async with core.db.sessions() as session:
        if not query:
            if membership is not None:
                return await _show(core, session, membership.koperasi_id)
            assert officer is not None
            contoh = await _example(session, officer.kecamatan_id)
            return [
                _reply(
                    core,
                    "profil_tidak_ada",
                    kosong=True,
                    query="",
                    wilayah=officer.kecamatan,
                    contoh=contoh,
                )
            ]
        matches = await find_koperasi(session, query)
        kecamatan = await _kecamatan_of(session, [c.id for c in matches])
        visible = [c for c in matches if may_see(actor, c.id, kecamatan[c.id])]
        if len(visible) == 1:
            return await _show(core, session, visible[0].id)
        if visible:
            return [_choices(core, query, visible)]
        if officer is None:
            assert membership is not None
            return [
                _reply(
                    core,
                    "profil_tidak_boleh",
                    reason="board",
                    koperasi=membership.koperasi_nama,
                )
            ]
        contoh = await _example(session, officer.kecamatan_id)
        return [
            _reply(
                core,
                "profil_tidak_ada",
                kosong=False,
                query=query,
                wilayah=officer.kecamatan,
                contoh=contoh,
            )
        ]


def _choices(core: Core, query: str, found: list[KoperasiInfo]) -> Reply:
    shown = found[:MAX_CHOICES]
    buttons: Buttons = [[(c.label, str(c.id))] for c in shown]
    text = core.messages.render(
        "profil_pilih", query=query, jumlah=len(found), ditampilkan=len(shown)
    )
    return Reply(text, buttons)


async def on_choice(core: Core, actor: Actor, data: str) -> list[Reply]:
    """A pressed match button: the data only names a cooperative, the scope is checked again."""
    stale = [Reply(core.messages.render("stale_button"), alert=True)]
    koperasi_id = action_id(data)
    if koperasi_id is None:
        return stale
    async with core.db.sessions() as session:
        kecamatan = await _kecamatan_of(session, [koperasi_id])
        if koperasi_id not in kecamatan or not may_see(actor, koperasi_id, kecamatan[koperasi_id]):
            return stale
        return await _show(core, session, koperasi_id)


async def _show(core: Core, session: AsyncSession, koperasi_id: int) -> list[Reply]:
    found = await load(core, session, koperasi_id)
    if found is None:
        return [Reply(core.messages.render("stale_button"), alert=True)]
    m = core.messages
    months = [k.periode for k in found.kendala]
    return [
        _reply(
            core,
            "profil_koperasi",
            k=found,
            dari=months[0] if months else "",
            sampai=months[-1] if months else "",
            bahasa=m.language,
        )
    ]


async def load(core: Core, session: AsyncSession, koperasi_id: int) -> Profile | None:
    """Everything the profile shows; the caller has checked the scope."""
    row = (
        await session.execute(
            select(
                Koperasi.id,
                Koperasi.nama,
                Kelurahan.kode,
                Kelurahan.nama,
                Kecamatan.nama,
                Kecamatan.id,
                Koperasi.alamat,
                Koperasi.telepon,
                Koperasi.email,
            )
            .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
            .join(Kecamatan, Kecamatan.id == Kelurahan.kecamatan_id)
            .where(Koperasi.id == koperasi_id)
        )
    ).first()
    if row is None:
        return None
    found = Profile(*row)
    found.pengurus = await _board(session, koperasi_id)
    found.laporan = await _reports(core, session, koperasi_id)
    found.kendala = await _obstacles(core, session, koperasi_id)
    found.undangan = await _summons(session, koperasi_id)
    return found


async def _board(session: AsyncSession, koperasi_id: int) -> list[Member]:
    rows = await session.execute(
        select(Person.id, Person.nama, BoardMember.judul, Jabatan.nama)
        .join(BoardMember, BoardMember.person_id == Person.id)
        .join(Jabatan, Jabatan.id == BoardMember.jabatan_id)
        .where(BoardMember.koperasi_id == koperasi_id)
        .order_by(Jabatan.urutan, Person.nama, Person.id)
    )
    people = rows.all()
    reachable = set(
        (
            await session.scalars(
                select(ChatIdentity.person_id).where(
                    ChatIdentity.person_id.in_([p[0] for p in people]),
                    ChatIdentity.unreachable_at.is_(None),
                )
            )
        ).all()
    )
    return [
        Member(nama, judul or jabatan, person_id not in reachable)
        for person_id, nama, judul, jabatan in people
    ]


def _latest_revision() -> Any:
    return and_(
        ReportRevision.report_id == Report.id,
        ReportRevision.revision == Report.current_revision,
    )


async def _reports(core: Core, session: AsyncSession, koperasi_id: int) -> list[ReportLine]:
    m = core.messages
    status = MONTHLY_REPORT.field("status_operasional")
    kendala = MONTHLY_REPORT.field("kendala")
    rows = await session.execute(
        select(Report, ReportRevision)
        .join(ReportRevision, _latest_revision())
        .where(Report.koperasi_id == koperasi_id)
        .order_by(Report.period.desc())
        .limit(SHOWN_REPORTS)
    )
    lines = []
    for report, revision in rows.all():
        answers = revision.answers
        utama = main_obstacle(answers)
        value = answers.get("status_operasional")
        lines.append(
            ReportLine(
                periode=Period.parse_key(report.period).name(m.language),
                status=option_label(m, status, str(value)) if value else None,
                kendala_utama=option_label(m, kendala, utama) if utama else None,
                oleh=revision.submitted_by_name,
                pada=revision.submitted_at,
                terlambat=report.late,
                revisi=report.current_revision,
            )
        )
    return lines


async def _obstacles(core: Core, session: AsyncSession, koperasi_id: int) -> list[ObstacleMonth]:
    """The obstacles of the last months that can have reports, up to the month /rekap shows
    (oldest first)."""
    m = core.messages
    kendala = MONTHLY_REPORT.field("kendala")
    months = [latest_period(core.settings, core.clock.now())]
    while len(months) < OBSTACLE_MONTHS:
        months.insert(0, months[0].previous())
    rows = await session.execute(
        select(Report.period, ReportRevision.answers)
        .join(ReportRevision, _latest_revision())
        .where(Report.koperasi_id == koperasi_id, Report.period.in_([p.key for p in months]))
    )
    answers = {str(period): a for period, a in rows.all()}
    result = []
    for month in months:
        given = answers.get(month.key)
        utama = main_obstacle(given) if given else None
        result.append(
            ObstacleMonth(
                periode=month.name(m.language),
                reported=given is not None,
                kendala=[
                    option_label(m, kendala, str(code)) for code in (given or {}).get("kendala", [])
                ],
                utama=option_label(m, kendala, utama) if utama else None,
            )
        )
    return result


async def _summons(session: AsyncSession, koperasi_id: int) -> list[SummonsLine]:
    found = (
        await session.scalars(
            select(Summons)
            .join(SummonsKoperasi, SummonsKoperasi.summons_id == Summons.id)
            .where(SummonsKoperasi.koperasi_id == koperasi_id)
            .order_by(Summons.starts_at.desc(), Summons.id.desc())
            .limit(SHOWN_SUMMONS)
        )
    ).all()
    lines = {
        s.id: SummonsLine(s.nomor, s.hal, s.starts_at, s.cancelled_at is not None) for s in found
    }
    time_versions = {s.id: s.time_version for s in found}
    answers = await session.execute(
        select(Rsvp, Person.nama)
        .join(Person, Person.id == Rsvp.person_id)
        .where(Rsvp.summons_id.in_(list(lines)), Rsvp.koperasi_id == koperasi_id)
        .order_by(Person.nama, Rsvp.id)
    )
    for rsvp, nama in answers.all():
        lines[rsvp.summons_id].answers.append(
            Answer(
                nama=nama,
                answer=rsvp.answer.value,
                delegate_nama=rsvp.delegate_nama,
                delegate_jabatan=rsvp.delegate_jabatan,
                alasan=rsvp.alasan,
                stale=rsvp.time_version != time_versions[rsvp.summons_id],
            )
        )
    return list(lines.values())
