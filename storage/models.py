"""SQLAlchemy 2 models: registry, people, roles, invites, reports, outbox, ledger, audit log."""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC on every backend and always hands back an aware datetime.

    SQLite keeps no offset, so values are normalised to naive UTC on the way in and tagged as
    UTC on the way out; PostgreSQL gets timestamptz.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; the core works in aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class RoleLevel(enum.StrEnum):
    """What a role may do; the titles are configurable, the level is not a free string."""

    PENGURUS = "pengurus"
    PENGAWAS = "pengawas"
    PENGELOLA = "pengelola"


class Kecamatan(Base):
    __tablename__ = "kecamatan"

    id: Mapped[int] = mapped_column(primary_key=True)
    kode: Mapped[str] = mapped_column(String(8), unique=True)
    nama: Mapped[str] = mapped_column(String(100))

    kelurahan: Mapped[list[Kelurahan]] = relationship(back_populates="kecamatan")


class Kelurahan(Base):
    __tablename__ = "kelurahan"

    id: Mapped[int] = mapped_column(primary_key=True)
    kode: Mapped[str] = mapped_column(String(13), unique=True)
    nama: Mapped[str] = mapped_column(String(100))
    kecamatan_id: Mapped[int] = mapped_column(ForeignKey("kecamatan.id"), index=True)

    kecamatan: Mapped[Kecamatan] = relationship(back_populates="kelurahan")
    koperasi: Mapped[Koperasi | None] = relationship(back_populates="kelurahan")


class Koperasi(Base):
    __tablename__ = "koperasi"

    id: Mapped[int] = mapped_column(primary_key=True)
    kelurahan_id: Mapped[int] = mapped_column(ForeignKey("kelurahan.id"), unique=True)
    nama: Mapped[str] = mapped_column(String(200))
    alamat: Mapped[str | None] = mapped_column(String(300))
    telepon: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    kelurahan: Mapped[Kelurahan] = relationship(back_populates="koperasi")
    pengurus: Mapped[list[BoardMember]] = relationship(back_populates="koperasi")


class Person(Base):
    __tablename__ = "person"

    id: Mapped[int] = mapped_column(primary_key=True)
    nama: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]

    identities: Mapped[list[ChatIdentity]] = relationship(back_populates="person")
    board_member: Mapped[BoardMember | None] = relationship(back_populates="person")
    officer: Mapped[Officer | None] = relationship(back_populates="person")


class ChatIdentity(Base):
    """How a person is reached on one channel (telegram now, whatsapp later)."""

    __tablename__ = "chat_identity"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(64))
    username: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    # Set when the channel refuses delivery (the user blocked the bot); cleared when they write.
    unreachable_at: Mapped[datetime | None]
    unreachable_reason: Mapped[str | None] = mapped_column(String(200))

    person: Mapped[Person] = relationship(back_populates="identities")


class Jabatan(Base):
    """A board or supervisory title, e.g. Bendahara; `level` says what it may do."""

    __tablename__ = "jabatan"

    id: Mapped[int] = mapped_column(primary_key=True)
    kode: Mapped[str] = mapped_column(String(40), unique=True)
    nama: Mapped[str] = mapped_column(String(100))
    level: Mapped[RoleLevel] = mapped_column(
        Enum(
            RoleLevel, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]
        ),
    )
    urutan: Mapped[int] = mapped_column(Integer, default=0)


class BoardMember(Base):
    """A person linked to a cooperative; one cooperative per person, several per cooperative."""

    __tablename__ = "board_member"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), unique=True)
    koperasi_id: Mapped[int] = mapped_column(ForeignKey("koperasi.id"), index=True)
    jabatan_id: Mapped[int] = mapped_column(ForeignKey("jabatan.id"))
    judul: Mapped[str | None] = mapped_column(String(100))
    linked_at: Mapped[datetime]
    invite_id: Mapped[int | None] = mapped_column(ForeignKey("invite.id"))

    person: Mapped[Person] = relationship(back_populates="board_member")
    koperasi: Mapped[Koperasi] = relationship(back_populates="pengurus")
    jabatan: Mapped[Jabatan] = relationship()

    @property
    def title(self) -> str:
        return self.judul or self.jabatan.nama


class Officer(Base):
    """A city officer: city-wide when kecamatan_id is NULL, else scoped to one kecamatan."""

    __tablename__ = "officer"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), unique=True)
    kecamatan_id: Mapped[int | None] = mapped_column(ForeignKey("kecamatan.id"))
    can_broadcast: Mapped[bool] = mapped_column(Boolean, default=False)
    # Told about the bot's own failures (ops alerts through the outbox).
    ops: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]

    person: Mapped[Person] = relationship(back_populates="officer")
    kecamatan: Mapped[Kecamatan | None] = relationship()


class Invite(Base):
    """A single-use, expiring invite; only the SHA-256 of the code is stored."""

    __tablename__ = "invite"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    koperasi_id: Mapped[int] = mapped_column(ForeignKey("koperasi.id"), index=True)
    jabatan_id: Mapped[int] = mapped_column(ForeignKey("jabatan.id"))
    judul: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by_person_id: Mapped[int | None] = mapped_column(
        ForeignKey("person.id", ondelete="SET NULL")
    )
    # Set for an invite that adds a chat on another channel to this (already linked) person,
    # instead of making a new board member. No foreign key: SQLite would have to rebuild the
    # invite table, which board members refer to; redeeming checks the person still exists.
    for_person_id: Mapped[int | None] = mapped_column(Integer)

    koperasi: Mapped[Koperasi] = relationship()
    jabatan: Mapped[Jabatan] = relationship()


class AuditLog(Base):
    """Who did what, when: every change a person or an operator makes."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime]
    actor_person_id: Mapped[int | None] = mapped_column(
        ForeignKey("person.id", ondelete="SET NULL"), index=True
    )
    actor_label: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    koperasi_id: Mapped[int | None] = mapped_column(ForeignKey("koperasi.id"), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str | None] = mapped_column(Text)


class ReportDraft(Base):
    """A report being filled in: every answer is committed before the bot replies.

    One draft per person (a person reports for one cooperative), so two board members of the
    same cooperative never write into each other's answers.
    """

    __tablename__ = "report_draft"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), unique=True)
    koperasi_id: Mapped[int] = mapped_column(ForeignKey("koperasi.id"), index=True)
    period: Mapped[str] = mapped_column(String(7))
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    current_field: Mapped[str | None] = mapped_column(String(40))
    # A multi-select in progress, or an answer waiting for "benar?" confirmation.
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    revising: Mapped[bool] = mapped_column(Boolean, default=False)
    last_message_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - SQLAlchemy's own form


class Report(Base):
    """The one report of a cooperative for a period; its revisions keep the history."""

    __tablename__ = "report"
    __table_args__ = (UniqueConstraint("koperasi_id", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    koperasi_id: Mapped[int] = mapped_column(ForeignKey("koperasi.id"))
    period: Mapped[str] = mapped_column(String(7), index=True)
    current_revision: Mapped[int] = mapped_column(Integer)
    first_submitted_at: Mapped[datetime]
    last_submitted_at: Mapped[datetime]
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    # The current revision's answers that /rekap counts, copied by `count_answers` whenever a
    # revision is written, so a national recap groups columns instead of reading every JSON
    # document: each as a JSON path gives it (a text answer as is, anything else as its JSON
    # text, None when absent), parsed by the recap once per distinct value.
    status_operasional: Mapped[str | None] = mapped_column(Text)
    kendala: Mapped[str | None] = mapped_column(Text)
    kendala_utama: Mapped[str | None] = mapped_column(Text)
    kebutuhan_bantuan: Mapped[str | None] = mapped_column(Text)
    kendala_teratasi: Mapped[str | None] = mapped_column(Text)
    kendala_memburuk: Mapped[str | None] = mapped_column(Text)

    revisions: Mapped[list[ReportRevision]] = relationship(
        back_populates="report", order_by="ReportRevision.revision"
    )

    COUNTED: ClassVar[tuple[str, ...]] = (
        "status_operasional",
        "kendala",
        "kendala_utama",
        "kebutuhan_bantuan",
        "kendala_teratasi",
        "kendala_memburuk",
    )

    @staticmethod
    def counted(answers: dict[str, Any]) -> dict[str, str | None]:
        """The counted columns for a revision's answers (see `count_answers`)."""
        return {name: Report._as_text(answers.get(name)) for name in Report.COUNTED}

    @staticmethod
    def _as_text(value: Any) -> str | None:
        """What a JSON path as text gives for a value: a string as is, null as None, anything
        else as its JSON text."""
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value)

    def count_answers(self, answers: dict[str, Any]) -> None:
        """Copy the counted answers of the revision that becomes current: every writer of a
        revision that becomes `current_revision` calls this."""
        for name, value in Report.counted(answers).items():
            setattr(self, name, value)


class ReportRevision(Base):
    __tablename__ = "report_revision"
    __table_args__ = (UniqueConstraint("report_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("report.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    answers: Mapped[dict[str, Any]] = mapped_column(JSON)
    submitted_by_person_id: Mapped[int | None] = mapped_column(
        ForeignKey("person.id", ondelete="SET NULL")
    )
    submitted_by_name: Mapped[str] = mapped_column(String(200))
    submitted_at: Mapped[datetime]
    late: Mapped[bool] = mapped_column(Boolean, default=False)

    report: Mapped[Report] = relationship(back_populates="revisions")


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a sender until `lease_until`
    SENT = "sent"
    FAILED = "failed"  # gave up: `last_error` says why
    UNREACHABLE = "unreachable"  # the recipient blocked the bot or has no chat any more
    CANCELLED = "cancelled"  # no longer meaningful (e.g. the report arrived before the reminder)


class OutboxMessage(Base):
    """One proactive message, written in the transaction that decided to send it.

    The sender drains pending rows; `dedupe_key` makes deciding twice harmless.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_topic", "topic", "status"),
        # WhatsApp's status callbacks find their row by the message id the channel gave.
        Index("ix_outbox_external_message_id", "external_message_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    # What the message is about, e.g. "report:2026-10:k12"; lets a later event cancel it.
    topic: Mapped[str | None] = mapped_column(String(100))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id", ondelete="SET NULL"))
    chat_identity_id: Mapped[int] = mapped_column(
        ForeignKey("chat_identity.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(Text)
    # Rows of [label, action] pairs; the channel turns actions into its own button data.
    buttons: Mapped[list[Any] | None] = mapped_column(JSON)
    # Proactive messages wait for the sending window (07.00-20.00 local) unless this is False.
    quiet_hours: Mapped[bool] = mapped_column(Boolean, default=True)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    status: Mapped[OutboxStatus] = mapped_column(
        Enum(
            OutboxStatus,
            native_enum=False,
            length=12,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=OutboxStatus.PENDING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    external_message_id: Mapped[str | None] = mapped_column(String(64))
    # What the channel reported after sending (WhatsApp's status callbacks).
    delivered_at: Mapped[datetime | None]
    read_at: Mapped[datetime | None]
    # Values for a channel's message template, when it must use one (WhatsApp outside the
    # 24-hour window): {"nama": ..., "periode": ...}, in the order of messages/*/wa_template_*.
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LedgerEntry(Base):
    """A scheduled notice decided for one target: at most one per (kind, period, target).

    `target` is "k<koperasi id>" or "o<officer id>"; written with the outbox rows it queued.
    """

    __tablename__ = "reminder_ledger"
    __table_args__ = (
        UniqueConstraint("kind", "period", "target"),
        # The history of a batch of cooperatives (the export's Riwayat sheet): by period alone
        # it read every decided row of the month for each batch.
        Index("ix_reminder_ledger_koperasi", "koperasi_id", "period", "kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    period: Mapped[str] = mapped_column(String(7), index=True)
    target: Mapped[str] = mapped_column(String(30))
    koperasi_id: Mapped[int | None] = mapped_column(ForeignKey("koperasi.id", ondelete="CASCADE"))
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officer.id", ondelete="CASCADE"))
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    decided_at: Mapped[datetime]


class RsvpAnswer(enum.StrEnum):
    HADIR = "hadir"
    DIWAKILKAN = "diwakilkan"
    BERHALANGAN = "berhalangan"


class Summons(Base):
    """An official invitation (surat undangan) from the city to a set of cooperatives.

    `version` grows with every change of time or place; answers given to an older version of
    the time are asked again.
    """

    __tablename__ = "summons"

    id: Mapped[int] = mapped_column(primary_key=True)
    nomor: Mapped[str] = mapped_column(String(80))
    sifat: Mapped[str] = mapped_column(String(30))
    hal: Mapped[str] = mapped_column(String(300))
    starts_at: Mapped[datetime] = mapped_column(index=True)
    tempat: Mapped[str] = mapped_column(String(300))
    acara: Mapped[str] = mapped_column(Text)
    narahubung: Mapped[str] = mapped_column(String(200))
    penandatangan: Mapped[str] = mapped_column(String(200))
    # How the target was chosen, for the officer's view: {"kind": ..., ...}.
    target: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officer.id", ondelete="SET NULL"))
    created_by_person_id: Mapped[int | None] = mapped_column(
        ForeignKey("person.id", ondelete="SET NULL")
    )
    # The officer's scope when it was sent: NULL for the whole city.
    kecamatan_id: Mapped[int | None] = mapped_column(ForeignKey("kecamatan.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    time_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(Text)

    koperasi: Mapped[list[SummonsKoperasi]] = relationship(
        back_populates="summons", cascade="all, delete-orphan"
    )


class SummonsKoperasi(Base):
    """A cooperative a summons was addressed to."""

    __tablename__ = "summons_koperasi"
    __table_args__ = (UniqueConstraint("summons_id", "koperasi_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    summons_id: Mapped[int] = mapped_column(ForeignKey("summons.id", ondelete="CASCADE"))
    koperasi_id: Mapped[int] = mapped_column(ForeignKey("koperasi.id"), index=True)
    # How many people it was queued for when sent (0: nobody linked, or all unreachable).
    recipients: Mapped[int] = mapped_column(Integer, default=0)

    summons: Mapped[Summons] = relationship(back_populates="koperasi")
    koperasi: Mapped[Koperasi] = relationship()


class Rsvp(Base):
    """One person's latest answer to a summons; the audit log keeps the earlier ones."""

    __tablename__ = "summons_rsvp"
    __table_args__ = (UniqueConstraint("summons_id", "person_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    summons_id: Mapped[int] = mapped_column(ForeignKey("summons.id", ondelete="CASCADE"))
    koperasi_id: Mapped[int] = mapped_column(ForeignKey("koperasi.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"))
    answer: Mapped[RsvpAnswer] = mapped_column(
        Enum(
            RsvpAnswer,
            native_enum=False,
            length=12,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    delegate_nama: Mapped[str | None] = mapped_column(String(200))
    delegate_jabatan: Mapped[str | None] = mapped_column(String(200))
    alasan: Mapped[str | None] = mapped_column(Text)
    # The summons' time_version the answer was given for; older means "asked again".
    time_version: Mapped[int] = mapped_column(Integer, default=1)
    answered_at: Mapped[datetime]


class SummonsDraft(Base):
    """A summons being composed (or a change being prepared) by an officer, step by step."""

    __tablename__ = "summons_draft"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), unique=True)
    # Set when the draft changes an existing summons instead of composing a new one.
    summons_id: Mapped[int | None] = mapped_column(ForeignKey("summons.id", ondelete="CASCADE"))
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    step: Mapped[str | None] = mapped_column(String(40))
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ChatPrompt(Base):
    """A question the bot asked outside a form, waiting for the person's typed answer
    (e.g. the delegate's name after "Diwakilkan")."""

    __tablename__ = "chat_prompt"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    ref_id: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class ObstacleAction(Base):
    """An officer's note that an obstacle of a cooperative is being handled ("ditangani");
    the board sees the latest note per obstacle the next time they report."""

    __tablename__ = "kendala_tindak"
    __table_args__ = (Index("ix_kendala_tindak_koperasi_kendala", "koperasi_id", "kendala"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    koperasi_id: Mapped[int] = mapped_column(ForeignKey("koperasi.id", ondelete="CASCADE"))
    kendala: Mapped[str] = mapped_column(String(20))
    catatan: Mapped[str] = mapped_column(Text)
    officer_person_id: Mapped[int | None] = mapped_column(
        ForeignKey("person.id", ondelete="SET NULL")
    )
    officer_nama: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]


class SendBudget(Base):
    """The send rate every sender of a channel shares (PostgreSQL): the moment the next message
    may start. A sender claims a few evenly spaced slots at once by moving it on; a flood-control
    answer moves it past the pause, so every process waits (bot/sender.py)."""

    __tablename__ = "send_budget"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    next_at: Mapped[datetime]


class LeaderLease(Base):
    """Which process runs the scheduler (bot/leader.py). On PostgreSQL a session advisory lock
    decides and this row only shows who holds it; on SQLite the row is the lease itself."""

    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    acquired_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class InboundMessage(Base):
    """A message id a channel delivered to us, kept so a notification delivered twice (WhatsApp
    retries its webhooks) is handled once."""

    __tablename__ = "inbound_message"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(index=True)
