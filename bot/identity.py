"""Who is acting: the person behind a chat identity, their cooperative and officer scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased, selectinload

from storage.db import Database
from storage.models import (
    BoardMember,
    ChatIdentity,
    ChatPrompt,
    Jabatan,
    Kecamatan,
    Kelurahan,
    Koperasi,
    Officer,
    Person,
    RoleLevel,
)


@dataclass(frozen=True)
class Membership:
    koperasi_id: int
    koperasi_nama: str
    kelurahan: str
    kecamatan: str
    jabatan: str
    level: RoleLevel


@dataclass(frozen=True)
class OfficerScope:
    officer_id: int
    kecamatan_id: int | None
    kecamatan: str | None
    can_broadcast: bool

    @property
    def city_wide(self) -> bool:
        return self.kecamatan_id is None


@dataclass(frozen=True)
class Actor:
    """The acting identity every service call takes; checked against role and scope."""

    channel: str
    external_id: str
    person_id: int | None = None
    nama: str | None = None
    membership: Membership | None = None
    officer: OfficerScope | None = None
    # False only when identify() saw no ChatPrompt row (a question asked outside a form) for
    # the person: the text router then skips the handlers that answer one. True (look it up)
    # for an actor built any other way.
    prompt_waiting: bool = True

    @property
    def label(self) -> str:
        return f"{self.channel}:{self.external_id}"

    @property
    def is_linked(self) -> bool:
        return self.membership is not None or self.officer is not None


# Kecamatan twice: the cooperative's (through its kelurahan) and the officer's scope.
_OfficerKecamatan = aliased(Kecamatan)

# Everything identify() needs, in one round trip: the joins are one-to-one (unique person_id on
# board_member and officer), so there is one row or none. Built once; executed with the
# channel and external id as parameters.
_IDENTIFY = (
    select(
        ChatIdentity.id,
        ChatIdentity.unreachable_at,
        ChatIdentity.last_seen_at,
        Person.id,
        Person.nama,
        BoardMember.koperasi_id,
        BoardMember.judul,
        Jabatan.nama,
        Jabatan.level,
        Koperasi.nama,
        Kelurahan.nama,
        Kecamatan.nama,
        Officer.id,
        Officer.kecamatan_id,
        Officer.can_broadcast,
        Officer.active,
        _OfficerKecamatan.nama,
        ChatPrompt.id,
    )
    .select_from(ChatIdentity)
    .join(Person, Person.id == ChatIdentity.person_id)
    .outerjoin(BoardMember, BoardMember.person_id == Person.id)
    .outerjoin(Jabatan, Jabatan.id == BoardMember.jabatan_id)
    .outerjoin(Koperasi, Koperasi.id == BoardMember.koperasi_id)
    .outerjoin(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
    .outerjoin(Kecamatan, Kecamatan.id == Kelurahan.kecamatan_id)
    .outerjoin(Officer, Officer.person_id == Person.id)
    .outerjoin(_OfficerKecamatan, _OfficerKecamatan.id == Officer.kecamatan_id)
    .outerjoin(ChatPrompt, ChatPrompt.person_id == Person.id)  # unique person_id as well
    .where(
        ChatIdentity.channel == bindparam("channel"),
        ChatIdentity.external_id == bindparam("external_id"),
    )
)
_REACHABLE_AGAIN = (
    update(ChatIdentity)
    .where(ChatIdentity.id == bindparam("identity_id"))
    .values(unreachable_at=None, unreachable_reason=None)
)
_SEEN = (
    update(ChatIdentity)
    .where(ChatIdentity.id == bindparam("identity_id"))
    .values(last_seen_at=bindparam("now", type_=ChatIdentity.__table__.c.last_seen_at.type))
)
# `last_seen_at` (which chat a person used last: proactive messages go there, and WhatsApp's
# 24-hour window) is written at most once per this long per chat, not at every update.
SEEN_STEP = timedelta(minutes=5)


async def lookup(
    db: Database, channel: str, external_id: str, *, now: datetime | None = None
) -> Actor:
    """identify() for a caller that has no session open: the handlers ask it at every update.
    On SQLite it runs on the hot path's own connection (storage.direct), elsewhere on a bare
    connection of the pool (either costs less than an ORM session)."""
    direct = db.direct
    if direct is None:
        async with db.engine.connect() as connection:
            return await identify(connection, channel, external_id, now=now)
    row = await direct.first(_IDENTIFY, {"channel": channel, "external_id": external_id})
    if row is None:
        return Actor(channel=channel, external_id=external_id)
    identity_id, unreachable_at, last_seen_at = row[:3]
    if unreachable_at is not None:
        await direct.execute(_REACHABLE_AGAIN, {"identity_id": identity_id})
    if _seen_now(now, last_seen_at):
        await direct.execute(_SEEN, {"identity_id": identity_id, "now": now})
    return _actor(channel, external_id, row)


def _seen_now(now: datetime | None, last_seen_at: datetime | None) -> bool:
    return now is not None and (last_seen_at is None or now - last_seen_at >= SEEN_STEP)


async def identify(
    session: AsyncSession | AsyncConnection,
    channel: str,
    external_id: str,
    *,
    now: datetime | None = None,
) -> Actor:
    """Load the actor for a chat identity: one query (every update asks it first). With `now`
    (the person wrote at that time) the identity's `last_seen_at` moves on, at most once per
    SEEN_STEP."""
    # Plain rows, no ORM objects: the statement runs on the session's connection.
    connection = await session.connection() if isinstance(session, AsyncSession) else session
    row = (
        await connection.execute(_IDENTIFY, {"channel": channel, "external_id": external_id})
    ).first()
    if row is None:
        return Actor(channel=channel, external_id=external_id)
    identity_id, unreachable_at, last_seen_at = row[:3]
    if unreachable_at is not None:
        # They wrote to us, so they unblocked the bot: proactive messages may reach them again.
        if isinstance(session, AsyncSession):
            # Through the session, so a ChatIdentity it holds does not keep the old value.
            await session.execute(
                _REACHABLE_AGAIN,
                {"identity_id": identity_id},
                execution_options={"synchronize_session": "fetch"},
            )
        else:
            await connection.execute(_REACHABLE_AGAIN, {"identity_id": identity_id})
        await session.commit()
    if _seen_now(now, last_seen_at):
        await connection.execute(_SEEN, {"identity_id": identity_id, "now": now})
        await session.commit()
    return _actor(channel, external_id, tuple(row))


def _actor(channel: str, external_id: str, row: tuple[Any, ...]) -> Actor:
    """The actor of an _IDENTIFY row."""
    (
        _identity_id,
        _unreachable_at,
        _last_seen_at,
        person_id,
        nama,
        koperasi_id,
        judul,
        jabatan_nama,
        level,
        koperasi_nama,
        kelurahan,
        kecamatan,
        officer_id,
        officer_kecamatan_id,
        can_broadcast,
        officer_active,
        officer_kecamatan,
        prompt_id,
    ) = row
    membership = None
    if koperasi_id is not None:
        membership = Membership(
            koperasi_id=koperasi_id,
            koperasi_nama=koperasi_nama,
            kelurahan=kelurahan,
            kecamatan=kecamatan,
            jabatan=judul or jabatan_nama,  # BoardMember.title
            level=level,
        )
    officer = None
    if officer_id is not None and officer_active:
        officer = OfficerScope(
            officer_id=officer_id,
            kecamatan_id=officer_kecamatan_id,
            kecamatan=officer_kecamatan,
            can_broadcast=can_broadcast,
        )
    return Actor(
        channel=channel,
        external_id=external_id,
        person_id=person_id,
        nama=nama,
        membership=membership,
        officer=officer,
        prompt_waiting=prompt_id is not None,
    )


async def get_or_create_person(
    session: AsyncSession,
    channel: str,
    external_id: str,
    nama: str,
    *,
    now: datetime,
    username: str | None = None,
) -> Person:
    """The person behind a chat identity, created on first contact."""
    identity = await session.scalar(
        select(ChatIdentity)
        .where(ChatIdentity.channel == channel, ChatIdentity.external_id == external_id)
        .options(selectinload(ChatIdentity.person))
    )
    if identity is not None:
        if username and identity.username != username:
            identity.username = username
        return identity.person
    person = Person(nama=nama, created_at=now)
    session.add(person)
    await session.flush()
    session.add(
        ChatIdentity(
            person_id=person.id,
            channel=channel,
            external_id=external_id,
            username=username,
            created_at=now,
            last_seen_at=now,  # they are writing on it now
        )
    )
    await session.flush()
    return person
