"""Who is acting: the person behind a chat identity, their cooperative and officer scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from storage.models import (
    BoardMember,
    ChatIdentity,
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

    @property
    def label(self) -> str:
        return f"{self.channel}:{self.external_id}"

    @property
    def is_linked(self) -> bool:
        return self.membership is not None or self.officer is not None


async def identify(session: AsyncSession, channel: str, external_id: str) -> Actor:
    """Load the actor for a chat identity in one round trip per relation."""
    identity = await session.scalar(
        select(ChatIdentity)
        .where(ChatIdentity.channel == channel, ChatIdentity.external_id == external_id)
        .options(
            selectinload(ChatIdentity.person)
            .selectinload(Person.board_member)
            .options(
                selectinload(BoardMember.jabatan),
                selectinload(BoardMember.koperasi)
                .selectinload(Koperasi.kelurahan)
                .selectinload(Kelurahan.kecamatan),
            ),
            selectinload(ChatIdentity.person)
            .selectinload(Person.officer)
            .selectinload(Officer.kecamatan),
        )
    )
    if identity is None:
        return Actor(channel=channel, external_id=external_id)
    if identity.unreachable_at is not None:
        # They wrote to us, so they unblocked the bot: proactive messages may reach them again.
        identity.unreachable_at = None
        identity.unreachable_reason = None
        await session.commit()
    person = identity.person
    membership = None
    if person.board_member is not None:
        bm = person.board_member
        membership = Membership(
            koperasi_id=bm.koperasi_id,
            koperasi_nama=bm.koperasi.nama,
            kelurahan=bm.koperasi.kelurahan.nama,
            kecamatan=bm.koperasi.kelurahan.kecamatan.nama,
            jabatan=bm.title,
            level=bm.jabatan.level,
        )
    officer = None
    if person.officer is not None and person.officer.active:
        o = person.officer
        officer = OfficerScope(
            officer_id=o.id,
            kecamatan_id=o.kecamatan_id,
            kecamatan=o.kecamatan.nama if o.kecamatan else None,
            can_broadcast=o.can_broadcast,
        )
    return Actor(
        channel=channel,
        external_id=external_id,
        person_id=person.id,
        nama=person.nama,
        membership=membership,
        officer=officer,
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
        )
    )
    await session.flush()
    return person
