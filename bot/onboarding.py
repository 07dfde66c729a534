"""Board onboarding: single-use expiring invites, linking a chat identity, and unlinking."""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from bot import audit
from bot.core import Core
from bot.identity import Actor, get_or_create_person, identify
from bot.names import normalize
from bot.rsvp import RSVP_PROMPTS
from storage.models import (
    AuditLog,
    BoardMember,
    ChatIdentity,
    ChatPrompt,
    Invite,
    Jabatan,
    Kelurahan,
    Koperasi,
    ReportDraft,
)

# No 0/O, 1/I/L: codes are read aloud and typed from paper.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 10
_CODE_SHAPE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")


def normalize_code(text: str) -> str:
    return re.sub(r"[\s\-]", "", text).upper()


def looks_like_code(text: str) -> bool:
    return bool(_CODE_SHAPE.match(normalize_code(text)))


def hash_code(code: str) -> str:
    return hashlib.sha256(normalize_code(code).encode()).hexdigest()


class InviteError(Exception):
    def __init__(self, code: str, value: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.value = value


@dataclass(frozen=True)
class NewInvite:
    code: str
    koperasi_kode: str
    koperasi_nama: str
    kecamatan: str
    jabatan: str
    expires_at: datetime


async def list_jabatan(core: Core) -> list[Jabatan]:
    async with core.db.sessions() as session:
        return list((await session.scalars(select(Jabatan).order_by(Jabatan.urutan))).all())


async def create_invite(
    core: Core,
    *,
    koperasi_kode: str,
    role: str,
    created_by: str,
    judul: str | None = None,
    ttl: timedelta | None = None,
) -> NewInvite:
    """Create an invite for a board member of one cooperative; only the code's hash is kept."""
    now = core.clock.now()
    async with core.db.transaction() as session:
        coop = await session.scalar(
            select(Koperasi)
            .join(Kelurahan)
            .where(Kelurahan.kode == koperasi_kode.strip())
            .options(selectinload(Koperasi.kelurahan).selectinload(Kelurahan.kecamatan))
        )
        if coop is None:
            raise InviteError("unknown_koperasi", koperasi_kode)
        roles = (await session.scalars(select(Jabatan).order_by(Jabatan.urutan))).all()
        jabatan = next(
            (j for j in roles if j.kode == role or normalize(j.nama) == normalize(role)), None
        )
        if jabatan is None:
            raise InviteError("unknown_role", ", ".join(j.kode for j in roles))
        return await _store_invite(
            core,
            session,
            now,
            created_by,
            ttl,
            coop,
            jabatan,
            judul.strip() if judul and judul.strip() else None,
        )


async def create_channel_invite(
    core: Core, *, channel: str, external_id: str, created_by: str, ttl: timedelta | None = None
) -> NewInvite:
    """An invite that adds a chat on another channel to the board member reached at
    (`channel`, `external_id`): redeemed there, the new chat joins the same person (one board
    member, one message per notice) instead of making a new one. Raises InviteError
    ("not_linked") when nobody linked is reached there."""
    now = core.clock.now()
    async with core.db.transaction() as session:
        actor = await identify(session, channel, external_id)
        if actor.person_id is None or actor.membership is None:
            raise InviteError("not_linked", f"{channel}:{external_id}")
        member = await session.scalar(
            select(BoardMember)
            .where(BoardMember.person_id == actor.person_id)
            .options(
                selectinload(BoardMember.koperasi)
                .selectinload(Koperasi.kelurahan)
                .selectinload(Kelurahan.kecamatan),
                selectinload(BoardMember.jabatan),
            )
        )
        assert member is not None
        return await _store_invite(
            core,
            session,
            now,
            created_by,
            ttl,
            member.koperasi,
            member.jabatan,
            member.judul,
            for_person_id=actor.person_id,
        )


async def _store_invite(
    core: Core,
    session: AsyncSession,
    now: datetime,
    created_by: str,
    ttl: timedelta | None,
    coop: Koperasi,
    jabatan: Jabatan,
    judul: str | None,
    *,
    for_person_id: int | None = None,
) -> NewInvite:
    """A new code for `coop` and `jabatan` (with its kelurahan and kecamatan loaded): only its
    hash is stored, and the creation is audited."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    invite = Invite(
        code_hash=hash_code(code),
        koperasi_id=coop.id,
        jabatan_id=jabatan.id,
        judul=judul,
        created_at=now,
        created_by=created_by,
        expires_at=now + (ttl or core.settings.invite_ttl),
        for_person_id=for_person_id,
    )
    session.add(invite)
    await session.flush()
    audit.record(
        session,
        at=now,
        action="invite.created",
        actor_label=created_by,
        koperasi_id=coop.id,
        invite_id=invite.id,
        jabatan=jabatan.kode,
    )
    return NewInvite(
        code=code,
        koperasi_kode=coop.kelurahan.kode,
        koperasi_nama=coop.nama,
        kecamatan=coop.kelurahan.kecamatan.nama,
        jabatan=invite.judul or jabatan.nama,
        expires_at=invite.expires_at,
    )


class RedeemStatus(enum.StrEnum):
    LINKED = "linked"
    ALREADY_LINKED = "already_linked"
    LINKED_ELSEWHERE = "linked_elsewhere"
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"


# Outcomes that count towards the hourly limit on wrong codes.
_GUESS_FAILURES = frozenset({RedeemStatus.UNKNOWN, RedeemStatus.USED, RedeemStatus.EXPIRED})


@dataclass(frozen=True)
class RedeemResult:
    status: RedeemStatus
    actor: Actor


async def redeem_invite(
    core: Core,
    *,
    channel: str,
    external_id: str,
    display_name: str,
    code: str,
    username: str | None = None,
) -> RedeemResult:
    """Link a chat identity to the invite's cooperative and role, once; failures change
    nothing but the count of failed attempts (which limits guessing)."""
    now = core.clock.now()
    label = f"{channel}:{external_id}"
    status: RedeemStatus
    try:
        async with core.db.transaction() as session:
            status = await _redeem(
                core, session, now, channel, external_id, display_name, code, username
            )
    except IntegrityError:
        # A concurrent redeem by the same person won the race for the unique membership.
        status = RedeemStatus.ALREADY_LINKED
    if status in _GUESS_FAILURES:
        async with core.db.transaction() as session:
            audit.record(
                session, at=now, action="invite.failed", actor_label=label, reason=status.value
            )
    async with core.db.sessions() as session:
        actor = await identify(session, channel, external_id)
    return RedeemResult(status, actor)


async def _redeem(
    core: Core,
    session: AsyncSession,
    now: datetime,
    channel: str,
    external_id: str,
    display_name: str,
    code: str,
    username: str | None,
) -> RedeemStatus:
    label = f"{channel}:{external_id}"
    failures = await session.scalar(
        select(func.count(AuditLog.id)).where(
            AuditLog.action == "invite.failed",
            AuditLog.actor_label == label,
            AuditLog.at >= now - timedelta(hours=1),
        )
    )
    if (failures or 0) >= core.settings.invite_max_failures_per_hour:
        return RedeemStatus.TOO_MANY_ATTEMPTS
    invite = await session.scalar(select(Invite).where(Invite.code_hash == hash_code(code)))
    if invite is None:
        return RedeemStatus.UNKNOWN
    actor = await identify(session, channel, external_id)
    if actor.membership is not None:
        if actor.membership.koperasi_id == invite.koperasi_id:
            return RedeemStatus.ALREADY_LINKED
        return RedeemStatus.LINKED_ELSEWHERE
    if invite.used_at is not None:
        return RedeemStatus.USED
    if invite.expires_at <= now:
        return RedeemStatus.EXPIRED
    if invite.for_person_id is not None:
        return await _add_chat(session, now, invite, channel, external_id, username)
    person = await get_or_create_person(
        session, channel, external_id, display_name, now=now, username=username
    )
    claimed = await session.execute(
        update(Invite)
        .where(Invite.id == invite.id, Invite.used_at.is_(None))
        .values(used_at=now, used_by_person_id=person.id)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return RedeemStatus.USED
    session.add(
        BoardMember(
            person_id=person.id,
            koperasi_id=invite.koperasi_id,
            jabatan_id=invite.jabatan_id,
            judul=invite.judul,
            linked_at=now,
            invite_id=invite.id,
        )
    )
    await session.flush()
    audit.record(
        session,
        at=now,
        action="board.linked",
        actor_label=label,
        actor_person_id=person.id,
        koperasi_id=invite.koperasi_id,
        invite_id=invite.id,
    )
    return RedeemStatus.LINKED


async def _add_chat(
    session: AsyncSession,
    now: datetime,
    invite: Invite,
    channel: str,
    external_id: str,
    username: str | None,
) -> RedeemStatus:
    """Join this chat to the invite's person (already a board member elsewhere on another
    channel). A chat that has its own person without a cooperative is moved over."""
    person_id = invite.for_person_id
    member = await session.scalar(
        select(BoardMember.id).where(
            BoardMember.person_id == person_id, BoardMember.koperasi_id == invite.koperasi_id
        )
    )
    if member is None:  # the person left the cooperative since: the invite means nothing now
        return RedeemStatus.EXPIRED
    claimed = await session.execute(
        update(Invite)
        .where(Invite.id == invite.id, Invite.used_at.is_(None))
        .values(used_at=now, used_by_person_id=person_id)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return RedeemStatus.USED
    identity_id = await session.scalar(
        select(ChatIdentity.id).where(
            ChatIdentity.channel == channel, ChatIdentity.external_id == external_id
        )
    )
    if identity_id is not None:
        await session.execute(
            update(ChatIdentity)
            .where(ChatIdentity.id == identity_id)
            .values(person_id=person_id, last_seen_at=now)
        )
    else:
        session.add(
            ChatIdentity(
                person_id=person_id,
                channel=channel,
                external_id=external_id,
                username=username,
                created_at=now,
                last_seen_at=now,
            )
        )
    await session.flush()
    audit.record(
        session,
        at=now,
        action="chat.added",
        actor_label=f"{channel}:{external_id}",
        actor_person_id=person_id,
        koperasi_id=invite.koperasi_id,
        invite_id=invite.id,
    )
    return RedeemStatus.LINKED


async def unlink(core: Core, actor: Actor) -> bool:
    """Remove the actor's link to their cooperative; False when there was none."""
    if actor.person_id is None:
        return False
    now = core.clock.now()
    async with core.db.transaction() as session:
        member = await session.scalar(
            select(BoardMember).where(BoardMember.person_id == actor.person_id)
        )
        if member is None:
            return False
        audit.record(
            session,
            at=now,
            action="board.unlinked",
            actor_label=actor.label,
            actor_person_id=actor.person_id,
            koperasi_id=member.koperasi_id,
            jabatan_id=member.jabatan_id,
        )
        await session.delete(member)
        # What they had open for the cooperative goes with the link: no "draft expired" notice
        # or delegate question later reaches someone who left.
        await session.execute(delete(ReportDraft).where(ReportDraft.person_id == actor.person_id))
        await session.execute(
            delete(ChatPrompt).where(
                ChatPrompt.person_id == actor.person_id, ChatPrompt.kind.in_(RSVP_PROMPTS)
            )
        )
    return True
