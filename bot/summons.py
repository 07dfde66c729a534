"""Summons (surat undangan) from the city: who they reach, the letter, and queueing them.

A summons is written with its addressees and its outbox rows in one transaction; the outbox
sender delivers it. Board members answer with the RSVP buttons (see bot/rsvp.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import escape
from sqlalchemy import Integer, String, and_, any_, bindparam, func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from bot import audit
from bot.core import Core
from bot.identity import Actor
from bot.outbox import Outgoing, enqueue
from bot.periods import Period
from bot.replies import Buttons
from storage.models import (
    BoardMember,
    ChatIdentity,
    Kecamatan,
    Kelurahan,
    Koperasi,
    Person,
    Report,
    ReportRevision,
    Summons,
    SummonsKoperasi,
)

ROMAN = ["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"]
# Summons go before routine reminders in the outbox.
PRIORITY = 3
NOT_OPERATING = ("belum", "persiapan")
RSVP_PREFIX = "u:"


class SummonsError(Exception):
    """Refused: `code` picks the sentence in the template."""

    def __init__(self, code: str, value: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.value = value


@dataclass
class Target:
    """Which cooperatives: kind is all | kecamatan | not_operating | not_reported | koperasi."""

    kind: str
    kecamatan_ids: list[int] = field(default_factory=list)
    period: str | None = None
    koperasi_ids: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "kecamatan_ids": self.kecamatan_ids,
            "period": self.period,
            "koperasi_ids": self.koperasi_ids,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        return cls(
            kind=str(data.get("kind", "all")),
            kecamatan_ids=[int(i) for i in data.get("kecamatan_ids") or []],
            period=data.get("period"),
            koperasi_ids=[int(i) for i in data.get("koperasi_ids") or []],
        )


@dataclass
class Spec:
    """What the officer composed."""

    hal: str
    starts_at: datetime
    tempat: str
    acara: str
    narahubung: str
    target: Target
    sifat: str = "Penting"


@dataclass(frozen=True)
class Recipient:
    koperasi_id: int
    person_id: int
    nama: str
    identity_id: int


@dataclass
class Reach:
    """The cooperatives a target resolves to, and who among their boards can be reached."""

    koperasi: list[tuple[int, str, str]]  # (id, kelurahan, kecamatan), by kecamatan and name
    people: dict[int, list[Recipient]]

    @property
    def reachable(self) -> list[tuple[int, str, str]]:
        return [k for k in self.koperasi if self.people.get(k[0])]

    @property
    def unreachable(self) -> list[tuple[int, str, str]]:
        return [k for k in self.koperasi if not self.people.get(k[0])]

    @property
    def person_count(self) -> int:
        return sum(len({p.person_id for p in people}) for people in self.people.values())


def _scope(query: Any, kecamatan_id: int | None) -> Any:
    return query if kecamatan_id is None else query.where(Kecamatan.id == kecamatan_id)


async def resolve(session: AsyncSession, scope: int | None, target: Target) -> list[int]:
    """The ids of the cooperatives a target names, within the officer's scope."""
    query = (
        select(Koperasi.id)
        .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
        .join(Kecamatan, Kecamatan.id == Kelurahan.kecamatan_id)
    )
    query = _scope(query, scope)
    if target.kind == "kecamatan":
        query = query.where(Kecamatan.id.in_(target.kecamatan_ids))
    elif target.kind == "koperasi":
        query = query.where(Koperasi.id.in_(target.koperasi_ids))
    elif target.kind == "not_reported":
        assert target.period is not None
        reported = select(Report.koperasi_id).where(Report.period == target.period)
        query = query.where(Koperasi.id.not_in(reported))
    elif target.kind == "not_operating":
        query = query.where(Koperasi.id.in_(await _not_operating(session)))
    return list((await session.scalars(query.order_by(Koperasi.id))).all())


async def _not_operating(session: AsyncSession) -> list[int]:
    """Cooperatives whose latest report says they do not operate yet (belum, persiapan)."""
    latest = (
        select(Report.koperasi_id, func.max(Report.period).label("period"))
        .group_by(Report.koperasi_id)
        .subquery()
    )
    rows = await session.execute(
        select(Report.koperasi_id, ReportRevision.answers)
        .join(
            latest,
            and_(latest.c.koperasi_id == Report.koperasi_id, latest.c.period == Report.period),
        )
        .join(
            ReportRevision,
            and_(
                ReportRevision.report_id == Report.id,
                ReportRevision.revision == Report.current_revision,
            ),
        )
    )
    return [
        koperasi_id
        for koperasi_id, answers in rows.all()
        if answers.get("status_operasional") in NOT_OPERATING
    ]


def _among(session: AsyncSession, column: Any, ids: list[int]) -> Any:
    """`column IN ids` with the ids as one bound value (an array on PostgreSQL, a JSON list on
    SQLite): a national summons names 10,000 cooperatives, and 10,000 parameters cost more to
    compile, send and plan than the query itself."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(Integer)))
    listed = func.json_each(bindparam(None, json.dumps(list(ids)), type_=String)).table_valued(
        "value"
    )
    return column.in_(select(listed.c.value))


async def reach(session: AsyncSession, koperasi_ids: list[int]) -> Reach:
    # Plain rows on the session's connection: the ORM's loading costs more than the query for
    # the 10,000 rows of a national summons.
    connection = await session.connection()
    rows = await connection.execute(
        select(Koperasi.id, Kelurahan.nama, Kecamatan.nama)
        .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
        .join(Kecamatan, Kecamatan.id == Kelurahan.kecamatan_id)
        .where(_among(session, Koperasi.id, koperasi_ids))
        .order_by(Kecamatan.nama, Kelurahan.nama)
    )
    koperasi = [(int(i), str(kel), str(kec)) for i, kel, kec in rows.all()]
    people: dict[int, list[Recipient]] = defaultdict(list)
    members = await connection.execute(
        select(BoardMember.koperasi_id, Person.id, Person.nama, ChatIdentity.id)
        .join(Person, Person.id == BoardMember.person_id)
        .join(
            ChatIdentity,
            and_(ChatIdentity.person_id == Person.id, ChatIdentity.unreachable_at.is_(None)),
        )
        .where(_among(session, BoardMember.koperasi_id, koperasi_ids))
        .order_by(BoardMember.koperasi_id, Person.id, ChatIdentity.id)
    )
    for koperasi_id, person_id, nama, identity_id in members.all():
        people[koperasi_id].append(Recipient(koperasi_id, person_id, nama, identity_id))
    return Reach(koperasi, dict(people))


def nomor(summons_id: int, at: datetime, core: Core) -> str:
    local = at.astimezone(core.settings.tz)
    return f"{summons_id:03d}/UND-KMP/{ROMAN[local.month]}/{local.year}"


def rsvp_buttons(core: Core, summons_id: int) -> Buttons:
    m = core.messages
    return [
        [
            (m.render("btn_hadir"), f"{RSVP_PREFIX}{summons_id}:hadir"),
            (m.render("btn_diwakilkan"), f"{RSVP_PREFIX}{summons_id}:diwakilkan"),
            (m.render("btn_berhalangan"), f"{RSVP_PREFIX}{summons_id}:berhalangan"),
        ]
    ]


def template_params(core: Core, summons: Summons) -> dict[str, str]:
    """The values of WhatsApp's summons template after the name ({{1}}), in its order
    (messages/*/wa_template_summons.txt): what, when, where. Computed once per summons;
    each row's params are {"nama": ..., **these}."""
    m = core.messages
    return {
        "hal": summons.hal,
        "waktu": f"{m.tanggal(summons.starts_at)}, {m.jam(summons.starts_at)}",
        "tempat": summons.tempat,
    }


def letter(core: Core, summons: Summons, kelurahan: str | None, **extra: Any) -> str:
    """The notice as the letter structure of DOMAIN.md, for one addressee (or the preview)."""
    return core.messages.render(
        "undangan_surat",
        s=summons,
        kelurahan=kelurahan,
        signer=summons.penandatangan,
        **extra,
    )


# PostgreSQL: the addressed cooperatives as two arrays, one statement (see bot/outbox.py).
_PG_ADDRESSED = text(
    "INSERT INTO summons_koperasi (summons_id, koperasi_id, recipients) "
    "SELECT CAST(:summons_id AS INTEGER), koperasi_id, recipients FROM unnest("
    "CAST(:koperasi_ids AS INTEGER[]), CAST(:recipients AS INTEGER[])) "
    "AS addressed(koperasi_id, recipients)"
)

# Stand-ins for the addressee in a letter rendered once for many (see `letters`).
_KELURAHAN, _NAMA = "\x00kelurahan\x00", "\x00nama\x00"


def letters(core: Core, summons: Summons) -> Callable[[str, str], str]:
    """`letter(core, summons, kelurahan, nama=nama, rsvp=True)` for many addressees.

    A national summons has 10,000 addressees and a rendering costs about 60 µs (the date in
    words through Babel, Jinja): the letter is rendered once with stand-ins for the kelurahan
    and the name, which are then replaced by the escaped values (what the template's
    autoescape does). The first letter is also rendered in full and compared; if the template
    treats the values otherwise (a filter, an empty name), each letter is rendered in full.
    """
    form = letter(core, summons, _KELURAHAN, nama=_NAMA, rsvp=True)
    usable = form.count(_KELURAHAN) == 1 and form.count(_NAMA) == 1
    checked = False

    def write(kelurahan: str, nama: str) -> str:
        nonlocal usable, checked
        if not (usable and kelurahan and nama) or "\x00" in kelurahan + nama:
            return letter(core, summons, kelurahan, nama=nama, rsvp=True)
        text = form.replace(_KELURAHAN, str(escape(kelurahan))).replace(_NAMA, str(escape(nama)))
        if not checked:
            checked = True
            full = letter(core, summons, kelurahan, nama=nama, rsvp=True)
            if full != text:
                usable = False
                return full
        return text

    return write


def new_summons(core: Core, actor: Actor, spec: Spec, at: datetime) -> Summons:
    assert actor.officer is not None
    return Summons(
        nomor="",
        sifat=spec.sifat,
        hal=spec.hal,
        starts_at=spec.starts_at,
        tempat=spec.tempat,
        acara=spec.acara,
        narahubung=spec.narahubung,
        penandatangan=core.settings.summons_signer,
        target=spec.target.as_json(),
        officer_id=actor.officer.officer_id,
        created_by_person_id=actor.person_id,
        kecamatan_id=actor.officer.kecamatan_id,
        version=1,
        time_version=1,
        created_at=at,
    )


async def send(core: Core, actor: Actor, spec: Spec) -> tuple[Summons, Reach]:
    """Record the summons and queue it for every reachable board member, in one transaction."""
    if actor.officer is None or not actor.officer.can_broadcast:
        raise SummonsError("not_allowed")
    now = core.clock.now()
    if spec.starts_at <= now:
        raise SummonsError("past")
    async with core.db.transaction() as session:
        ids = await resolve(session, actor.officer.kecamatan_id, spec.target)
        if not ids:
            raise SummonsError("empty")
        found = await reach(session, ids)
        summons = new_summons(core, actor, spec, now)
        session.add(summons)
        await session.flush()
        summons.nomor = nomor(summons.id, now, core)
        # Core statements, not ORM objects: a national summons has 10,000 of each.
        connection = await session.connection()
        addressed = [
            {
                "summons_id": summons.id,
                "koperasi_id": koperasi_id,
                "recipients": len(found.people.get(koperasi_id, [])),
            }
            for koperasi_id, _, _ in found.koperasi
        ]
        if connection.dialect.name == "postgresql":
            await connection.execute(
                _PG_ADDRESSED,
                {
                    "summons_id": summons.id,
                    "koperasi_ids": [row["koperasi_id"] for row in addressed],
                    "recipients": [row["recipients"] for row in addressed],
                },
            )
        elif addressed:
            await connection.execute(insert(SummonsKoperasi), addressed)
        kelurahan = {k[0]: k[1] for k in found.koperasi}
        write = letters(core, summons)
        buttons = rsvp_buttons(core, summons.id)
        values = template_params(core, summons)
        items = [
            Outgoing(
                dedupe_key=f"summons:{summons.id}:v1:p{p.person_id}:i{p.identity_id}",
                kind="summons",
                chat_identity_id=p.identity_id,
                person_id=p.person_id,
                text=write(kelurahan[p.koperasi_id], p.nama),
                buttons=buttons,
                topic=f"summons:{summons.id}",
                priority=PRIORITY,
                params={"nama": p.nama, **values},
            )
            for people in found.people.values()
            for p in people
        ]
        await enqueue(session, items, now)
        audit.record(
            session,
            at=now,
            action="summons.sent",
            actor_label=actor.label,
            actor_person_id=actor.person_id,
            summons_id=summons.id,
            koperasi=len(found.koperasi),
            people=found.person_count,
        )
    return summons, found


def period_of(text: str | None) -> Period | None:
    try:
        return Period.parse_key(text) if text else None
    except ValueError:
        return None
