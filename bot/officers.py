"""City officers: registration with a scope (city-wide or one kecamatan), broadcast rights, and
whether they are told about the bot's own failures (ops)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from bot import audit
from bot.core import Core
from bot.identity import get_or_create_person
from bot.registry import find_kecamatan, kecamatan_names
from storage.models import Officer, Person


class OfficerError(Exception):
    def __init__(self, code: str, value: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.value = value


@dataclass(frozen=True)
class OfficerSaved:
    created: bool
    nama: str
    kecamatan: str | None
    can_broadcast: bool
    ops: bool = False


async def add_officer(
    core: Core,
    *,
    telegram_id: str,
    nama: str,
    kecamatan: str | None,
    can_broadcast: bool,
    actor: str,
    ops: bool = False,
) -> OfficerSaved:
    """Register (or update) the officer reached at this Telegram id."""
    telegram_id = telegram_id.strip()
    if not (telegram_id.isascii() and telegram_id.lstrip("-").isdigit()):
        raise OfficerError("bad_telegram_id", telegram_id)
    nama = " ".join(nama.split())
    if not nama:
        raise OfficerError("name_missing")
    now = core.clock.now()
    async with core.db.transaction() as session:
        kecamatan_id = None
        kecamatan_nama = None
        if kecamatan:
            kec = await find_kecamatan(session, kecamatan)
            if kec is None:
                raise OfficerError("unknown_kecamatan", ", ".join(await kecamatan_names(session)))
            kecamatan_id, kecamatan_nama = kec.id, kec.nama
        person = await get_or_create_person(session, "telegram", telegram_id, nama, now=now)
        person.nama = nama
        officer = await session.scalar(select(Officer).where(Officer.person_id == person.id))
        created = officer is None
        if officer is None:
            officer = Officer(person_id=person.id, created_at=now)
            session.add(officer)
        officer.kecamatan_id = kecamatan_id
        officer.can_broadcast = can_broadcast
        officer.ops = ops
        officer.active = True
        await session.flush()
        audit.record(
            session,
            at=now,
            action="officer.added" if created else "officer.updated",
            actor_label=actor,
            actor_person_id=None,
            officer_id=officer.id,
            person_id=person.id,
            kecamatan=kecamatan_nama,
            can_broadcast=can_broadcast,
            ops=ops,
        )
    return OfficerSaved(created, nama, kecamatan_nama, can_broadcast, ops)


@dataclass(frozen=True)
class OfficerRow:
    nama: str
    telegram_id: str
    kecamatan: str | None
    can_broadcast: bool
    active: bool
    ops: bool = False


async def list_officers(core: Core) -> list[OfficerRow]:
    async with core.db.sessions() as session:
        officers = (
            await session.scalars(
                select(Officer)
                .join(Person)
                .order_by(Person.nama)
                .options(
                    selectinload(Officer.person).selectinload(Person.identities),
                    selectinload(Officer.kecamatan),
                )
            )
        ).all()
    return [
        OfficerRow(
            nama=o.person.nama,
            telegram_id=next(
                (i.external_id for i in o.person.identities if i.channel == "telegram"), "-"
            ),
            kecamatan=o.kecamatan.nama if o.kecamatan else None,
            can_broadcast=o.can_broadcast,
            active=o.active,
            ops=o.ops,
        )
        for o in officers
    ]
