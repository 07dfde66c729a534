"""The monthly report conversation: drafts saved at every answer, review, submit, revisions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from datetime import datetime, time, timedelta
from functools import cache, lru_cache
from typing import Any, Literal, cast, overload

from babel.numbers import format_decimal
from sqlalchemy import Select, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import audit
from bot.config import Settings
from bot.core import Core
from bot.forms import (
    Accepted,
    Field,
    Form,
    Invalid,
    Kind,
    finish_selection,
    is_no,
    is_yes,
    toggle,
    validate_typed,
)
from bot.identity import Actor
from bot.laporan import MONTHLY_REPORT
from bot.outbox import Outgoing, cancel_topic, enqueue
from bot.periods import Period, default_period, open_periods, parse_period
from bot.replies import Buttons, Reply
from messages import Messages, rupiah
from storage.direct import Direct
from storage.models import (
    ChatIdentity,
    Kelurahan,
    Koperasi,
    Report,
    ReportDraft,
    ReportRevision,
    RoleLevel,
)

_ATTEMPTS = 3


@cache
def _labels(messages: Messages) -> dict[str, str]:
    labels: dict[str, str] = {}
    for line in messages.render("form_labels").splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            labels[key.strip()] = value.strip()
    return labels


@lru_cache(maxsize=256)
def _period_name(key: str, language: str) -> str:
    """The month's name ("Oktober 2026" for "2026-10"), asked at every question: Babel is slow."""
    return Period.parse_key(key).name(language)


def labels(messages: Messages) -> dict[str, str]:
    """Field and option labels of the report in the messages' language."""
    return _labels(messages)


def option_label(messages: Messages, f: Field, option: str) -> str:
    table = labels(messages)
    return table.get(f"{f.labels_of or f.id}.{option}") or table.get(option) or option


def field_label(messages: Messages, field_id: str) -> str:
    return labels(messages).get(f"label.{field_id}", field_id)


def format_value(messages: Messages, f: Field, value: Any) -> str:
    """An answer as people read it: Rp…, labels joined, counts of photos."""
    table = labels(messages)
    if value is None or value == "":
        return table.get("none", "-")
    if f.kind is Kind.MONEY:
        return rupiah(int(value))
    if f.kind is Kind.INTEGER:
        return format_decimal(int(value), locale="id")
    if f.kind is Kind.CHOICE:
        return option_label(messages, f, str(value))
    if f.kind is Kind.MULTI:
        if not value:
            return table.get("none", "-")
        return ", ".join(option_label(messages, f, str(v)) for v in value)
    if f.kind is Kind.PHOTO:
        return table.get("photos", "{n}").format(n=len(value)) if value else table.get("none", "-")
    return str(value)


def deadline(settings: Settings, period: Period) -> datetime:
    """The end of the deadline day in the month after the period, local time."""
    following = period.next()
    day = min(settings.report_deadline_day, following.last_day().day)
    local_end = datetime.combine(following.first_day().replace(day=day), time.max)
    return local_end.replace(tzinfo=settings.tz)


def report_topic(period: Period, koperasi_id: int) -> str:
    """The outbox topic of a cooperative's notices for a period (cancelled when it reports)."""
    return f"report:{period.key}:k{koperasi_id}"


def _last_answers(koperasi_id: Any, period: Any) -> Select[tuple[dict[str, Any]]]:
    """The answers of a cooperative's latest report (its current revision) before a period."""
    return (
        select(ReportRevision.answers)
        .join(Report, Report.id == ReportRevision.report_id)
        .where(
            Report.koperasi_id == koperasi_id,
            Report.period < period,
            ReportRevision.revision == Report.current_revision,
        )
        .order_by(Report.period.desc())
        .limit(1)
    )


@dataclass
class Draft:
    """A report being filled in (a `report_draft` row) as a plain object: a step reads it with
    one SELECT, changes it and writes it back with one UPDATE checked against its version. The
    ORM's unit of work (identity map, change tracking, flush) cost more than the rest of the
    step; the ORM model `ReportDraft` is still the table's definition and is used where a draft
    is not on the path of every answer (expiry)."""

    id: int
    person_id: int
    koperasi_id: int
    period: str
    answers: dict[str, Any]
    current_field: str | None
    pending: dict[str, Any] | None
    revising: bool
    last_message_id: int | None
    version: int
    started_at: datetime
    updated_at: datetime
    deleted: bool = field(default=False, compare=False)


class _Stale(Exception):
    """The draft changed (or went) since this step read it: nothing of the step is kept."""


_T = cast(Table, ReportDraft.__table__)
_COLUMNS = tuple(_T.c[f.name] for f in fields(Draft) if f.name != "deleted")
# What a step may change, written back with the version moved on.
_CHANGES = ("answers", "current_field", "pending", "last_message_id", "updated_at")

# Statements run at every answer, built once (building one costs more than running it on
# SQLite); index True is the PostgreSQL form, which locks the draft row.
_LAST_ANSWERS = _last_answers(bindparam("koperasi_id"), bindparam("period"))
_DRAFT_BY_PERSON = select(*_COLUMNS).where(_T.c.person_id == bindparam("person_id"))
_DRAFT = (_DRAFT_BY_PERSON, _DRAFT_BY_PERSON.with_for_update(of=_T))
_DRAFT_LAST = _last_answers(_T.c.koperasi_id, _T.c.period).correlate(_T).scalar_subquery()
_DRAFT_WITH_LAST = (
    _DRAFT_BY_PERSON.add_columns(_DRAFT_LAST),
    _DRAFT_BY_PERSON.add_columns(_DRAFT_LAST).with_for_update(of=_T),
)
_THIS_VERSION = (_T.c.id == bindparam("draft_id")) & (_T.c.version == bindparam("old_version"))
_DRAFT_WRITE = (
    update(_T)
    .where(_THIS_VERSION)
    .values(
        {
            **{_T.c[name]: bindparam(f"new_{name}", type_=_T.c[name].type) for name in _CHANGES},
            _T.c.version: _T.c.version + 1,
        }
    )
)
_DRAFT_DELETE = delete(_T).where(_THIS_VERSION)
_DRAFT_INSERT = insert(_T)

# Starting and submitting: the current revision of a cooperative's report for a period, the
# report itself, and the writes of a submission (Core statements on the step's connection).
_REPORT_KEY = (Report.koperasi_id == bindparam("koperasi_id")) & (
    Report.period == bindparam("period")
)
_CURRENT = (
    select(ReportRevision.answers, ReportRevision.submitted_by_name, ReportRevision.submitted_at)
    .join(Report, Report.id == ReportRevision.report_id)
    .where(_REPORT_KEY, ReportRevision.revision == Report.current_revision)
)
_CURRENT_ANSWERS = _CURRENT.with_only_columns(ReportRevision.answers)
_REPORT_OF = select(Report.id, Report.current_revision).where(_REPORT_KEY)
_REPORT_INSERT = insert(Report)
_REPORT_REVISED = (
    update(Report)
    .where(Report.id == bindparam("report_id"))
    .values(
        {
            Report.__table__.c[name]: bindparam(f"new_{name}", type_=Report.__table__.c[name].type)
            for name in ("current_revision", "last_submitted_at", *Report.COUNTED)
        }
    )
)
_REVISION_INSERT = insert(ReportRevision)
_KELURAHAN_KODE = (
    select(Kelurahan.kode)
    .join(Koperasi, Koperasi.kelurahan_id == Kelurahan.id)
    .where(Koperasi.id == bindparam("koperasi_id"))
)


def _draft_of(row: Any) -> Draft:
    return Draft(*row[: len(_COLUMNS)])


class _NeedsTransaction(Exception):
    """A step on SQLite's hot path wants to write more than the draft (submitting): it is done
    again, whole, in a transaction (nothing was written before this is raised)."""


class _Drafts(ABC):
    """Where a step reads and writes its draft. `locks`: reading the draft locks its row until
    the step's transaction ends (PostgreSQL)."""

    locks = False

    @abstractmethod
    async def first(self, query: Any, person_id: int | None) -> Any: ...

    @abstractmethod
    async def run(self, statement: Any, values: dict[str, Any]) -> int: ...

    @abstractmethod
    async def transaction(self) -> AsyncConnection:
        """A connection in the step's transaction, for a step that writes more than its draft."""

    async def write(self, draft: Draft) -> None:
        """The draft's changes, one UPDATE; _Stale when another step changed it first."""
        values = {f"new_{name}": getattr(draft, name) for name in _CHANGES}
        changed = await self.run(
            _DRAFT_WRITE, {"draft_id": draft.id, "old_version": draft.version, **values}
        )
        if changed != 1:
            raise _Stale
        draft.version += 1

    async def delete(self, draft: Draft) -> None:
        changed = await self.run(
            _DRAFT_DELETE, {"draft_id": draft.id, "old_version": draft.version}
        )
        if changed != 1:
            raise _Stale
        draft.deleted = True


class _TransactionDrafts(_Drafts):
    """A connection of the engine, in a transaction."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.locks = connection.dialect.name == "postgresql"

    async def first(self, query: Any, person_id: int | None) -> Any:
        return (await self.connection.execute(query, {"person_id": person_id})).first()

    async def run(self, statement: Any, values: dict[str, Any]) -> int:
        return (await self.connection.execute(statement, values)).rowcount

    async def transaction(self) -> AsyncConnection:
        return self.connection


class _DirectDrafts(_Drafts):
    """SQLite's hot path (storage.direct): each statement commits by itself, which is enough
    for a step that writes only its draft (the UPDATE checks the version)."""

    def __init__(self, direct: Direct) -> None:
        self.direct = direct

    async def first(self, query: Any, person_id: int | None) -> Any:
        return await self.direct.first(query, {"person_id": person_id})

    async def run(self, statement: Any, values: dict[str, Any]) -> int:
        return await self.direct.execute(statement, values)

    async def transaction(self) -> AsyncConnection:
        raise _NeedsTransaction


@dataclass(frozen=True)
class _Context:
    """What a step needs besides the draft: where the draft is written, who, which
    cooperative, and last month's answers."""

    drafts: _Drafts
    actor: Actor
    koperasi_nama: str
    last: dict[str, Any]


class ReportService:
    def __init__(self, core: Core, form: Form = MONTHLY_REPORT) -> None:
        self.core = core
        self.form = form
        self.m = core.messages

    # Entry points ------------------------------------------------------------------------------
    async def start(self, actor: Actor, period_text: str | None) -> list[Reply]:
        refusal = self._refusal(actor)
        if refusal:
            return refusal
        assert actor.membership is not None
        assert actor.person_id is not None
        now = self.core.clock.now()
        tz = self.core.settings.tz
        opened = open_periods(now, tz, self.core.settings.report_open_months)
        if period_text:
            period = parse_period(period_text, now, tz)
            if period is None or period not in opened:
                return [
                    self._reply(
                        "lapor_bulan_salah",
                        text=period_text,
                        closed=period is not None,
                        periode=period.name(self.m.language) if period else "",
                        open=[p.name(self.m.language) for p in opened],
                    )
                ]
        else:
            period = default_period(now, tz)
        replies: list[Reply] = []
        try:
            async with self.core.db.engine.begin() as connection:
                drafts = _TransactionDrafts(connection)
                draft = await self._draft(drafts, actor, replies)
                if draft is not None and (period_text is None or draft.period == period.key):
                    ctx = await self._context(connection, actor, Period.parse_key(draft.period))
                    replies.append(self._reply("lapor_lanjut", periode=self._name(draft.period)))
                    replies.extend(self._ask(draft, ctx))
                    await drafts.write(draft)
                    return replies
                if draft is not None:
                    replies.append(self._reply("lapor_draf_lain", periode=self._name(draft.period)))
                    return replies
                draft, intro = await self._new_draft(connection, actor, period, opened, now)
                replies.append(intro)
                ctx = await self._context(connection, actor, period)
                replies.extend(self._ask(draft, ctx))
                await drafts.write(draft)
        except IntegrityError:
            # Two /lapor at once from one person: the other one made the draft; show it.
            return await self.start(actor, period_text)
        except _Stale:
            return [self._reply("laporan_sibuk")]
        return replies

    async def on_text(self, actor: Actor, text: str, message_id: int) -> list[Reply] | None:
        """A typed answer for the person's draft; None when they have no draft."""
        return await self._step(actor, message_id, lambda d, c: self._typed(d, c, text))

    async def on_photo(self, actor: Actor, file_id: str, message_id: int) -> list[Reply] | None:
        return await self._step(actor, message_id, lambda d, c: self._photo(d, c, file_id))

    async def on_action(self, actor: Actor, draft_id: int, action: str) -> list[Reply]:
        """A pressed button. The data only names a draft and an action: both are re-checked."""
        replies = await self._step(
            actor, None, lambda d, c: self._action(d, c, action), draft_id=draft_id
        )
        return replies if replies is not None else [self._reply("stale_button", alert=True)]

    async def cancel(self, actor: Actor) -> list[Reply]:
        if actor.person_id is None:
            return [self._reply("batal_kosong")]
        async with self.core.db.engine.begin() as connection:
            draft = await self._draft(_TransactionDrafts(connection), actor, [])
            if draft is None:
                return [self._reply("batal_kosong")]
            return self._cancel_buttons(draft)

    async def expire_drafts(self) -> int:
        """Delete drafts untouched for DRAFT_TTL_DAYS and tell their owners (through the
        outbox, in the same transaction); returns how many were deleted."""
        now = self.core.clock.now()
        cutoff = now - timedelta(days=self.core.settings.draft_ttl_days)
        async with self.core.db.transaction() as session:
            stale = (
                await session.scalars(select(ReportDraft).where(ReportDraft.updated_at < cutoff))
            ).all()
            identities = (
                await session.execute(
                    select(ChatIdentity.person_id, ChatIdentity.id).where(
                        ChatIdentity.person_id.in_([d.person_id for d in stale]),
                        ChatIdentity.unreachable_at.is_(None),
                    )
                )
            ).all()
            items = [
                Outgoing(
                    dedupe_key=f"draft_expired:{draft.id}:{draft.started_at.isoformat()}:i{ident}",
                    kind="draft_expired",
                    chat_identity_id=ident,
                    person_id=draft.person_id,
                    text=self.m.render(
                        "draf_kedaluwarsa",
                        periode=self._name(draft.period),
                        hari=self.core.settings.draft_ttl_days,
                    ),
                )
                for draft in stale
                for person_id, ident in identities
                if person_id == draft.person_id
            ]
            await enqueue(session, items, now)
            for draft in stale:
                await session.delete(draft)
            return len(stale)

    # The step machinery ------------------------------------------------------------------------
    async def _step(
        self,
        actor: Actor,
        message_id: int | None,
        handle: Any,
        draft_id: int | None = None,
    ) -> list[Reply] | None:
        if actor.person_id is None or actor.membership is None:
            return None
        # A unique constraint may refuse the work when another member submits the same report
        # at the same moment; the transaction is rolled back whole, so doing it again is safe.
        for attempt in range(_ATTEMPTS):
            try:
                return await self._step_once(actor, message_id, handle, draft_id)
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _step_once(
        self,
        actor: Actor,
        message_id: int | None,
        handle: Any,
        draft_id: int | None,
    ) -> list[Reply] | None:
        try:
            direct = self.core.db.direct
            if direct is not None:
                try:
                    return await self._step_in(
                        _DirectDrafts(direct), actor, message_id, handle, draft_id
                    )
                except _NeedsTransaction:
                    pass  # submitting: the same step again, in a transaction
            # In a transaction of the engine: everything the step writes commits together.
            async with self.core.db.engine.begin() as connection:
                return await self._step_in(
                    _TransactionDrafts(connection), actor, message_id, handle, draft_id
                )
        except _Stale:
            return [self._reply("laporan_sibuk")]

    async def _step_in(
        self,
        drafts: _Drafts,
        actor: Actor,
        message_id: int | None,
        handle: Any,
        draft_id: int | None,
    ) -> list[Reply] | None:
        """One step: the draft and last month's answers in one SELECT, the answer one UPDATE
        checked against the draft's version."""
        replies: list[Reply] = []
        found = await self._draft(drafts, actor, replies, with_last=True)
        if found is None:
            return replies or None
        draft, last = found
        if draft_id is not None and draft.id != draft_id:
            return replies or None
        if message_id is not None:
            # Telegram may deliver one message twice; the second changes nothing.
            if draft.last_message_id is not None and message_id <= draft.last_message_id:
                return []
            draft.last_message_id = message_id
        assert actor.membership is not None
        ctx = _Context(drafts, actor, actor.membership.koperasi_nama, dict(last or {}))
        replies.extend(await handle(draft, ctx))
        if not draft.deleted:  # submitted or discarded drafts are gone
            draft.updated_at = self.core.clock.now()
            await drafts.write(draft)
        return replies

    @overload
    async def _draft(
        self,
        drafts: _Drafts,
        actor: Actor,
        replies: list[Reply],
        *,
        with_last: Literal[False] = False,
    ) -> Draft | None: ...

    @overload
    async def _draft(
        self,
        drafts: _Drafts,
        actor: Actor,
        replies: list[Reply],
        *,
        with_last: Literal[True],
    ) -> tuple[Draft, dict[str, Any] | None] | None: ...

    async def _draft(
        self,
        drafts: _Drafts,
        actor: Actor,
        replies: list[Reply],
        *,
        with_last: bool = False,
    ) -> Draft | tuple[Draft, dict[str, Any] | None] | None:
        """The person's draft (locked on PostgreSQL), or None when there is none or it may no
        longer be used (then it is deleted). `with_last` also brings the answers of the
        cooperative's latest report before the draft's period (see _context)."""
        query = _DRAFT_WITH_LAST[drafts.locks] if with_last else _DRAFT[drafts.locks]
        row = await drafts.first(query, actor.person_id)
        if row is None:
            return None
        draft = _draft_of(row)
        membership = actor.membership
        ttl = timedelta(days=self.core.settings.draft_ttl_days)
        if membership is None or draft.koperasi_id != membership.koperasi_id:
            await drafts.delete(draft)  # the person left or moved; it is not theirs now
            return None
        if draft.updated_at < self.core.clock.now() - ttl:
            replies.append(
                self._reply(
                    "draf_kedaluwarsa",
                    periode=self._name(draft.period),
                    hari=self.core.settings.draft_ttl_days,
                )
            )
            await drafts.delete(draft)
            return None
        return (draft, row[-1]) if with_last else draft

    async def _context(self, connection: AsyncConnection, actor: Actor, period: Period) -> _Context:
        """What a step needs; `last` is the cooperative's latest report before `period`."""
        assert actor.membership is not None
        last = await connection.scalar(
            _LAST_ANSWERS, {"koperasi_id": actor.membership.koperasi_id, "period": period.key}
        )
        return _Context(
            _TransactionDrafts(connection), actor, actor.membership.koperasi_nama, dict(last or {})
        )

    async def _new_draft(
        self,
        connection: AsyncConnection,
        actor: Actor,
        period: Period,
        opened: list[Period],
        now: datetime,
    ) -> tuple[Draft, Reply]:
        membership = actor.membership
        assert membership is not None
        assert actor.person_id is not None
        current = (
            await connection.execute(
                _CURRENT, {"koperasi_id": membership.koperasi_id, "period": period.key}
            )
        ).first()
        answers = dict(current.answers) if current else {}
        if current is None and self.form.has("kendala_lalu"):
            previous = await connection.scalar(
                _CURRENT_ANSWERS,
                {"koperasi_id": membership.koperasi_id, "period": period.previous().key},
            )
            if previous and previous.get("kendala"):
                answers["kendala_lalu"] = list(previous["kendala"])
        # What the city noted about this cooperative's obstacles (bot.tindak imports this
        # module, hence the late import).
        from bot.tindak import notes_for

        notes = await notes_for(
            self.core,
            connection,
            membership.koperasi_id,
            [k for k in answers.get("kendala_lalu", []) if k != "NIHIL"],
        )
        values: dict[str, Any] = {
            "person_id": actor.person_id,
            "koperasi_id": membership.koperasi_id,
            "period": period.key,
            "answers": answers,
            "current_field": None,
            "pending": None,
            "revising": current is not None,
            "last_message_id": None,
            "version": 1,
            "started_at": now,
            "updated_at": now,
        }
        key = (await connection.execute(_DRAFT_INSERT, values)).inserted_primary_key
        assert key is not None
        draft = Draft(id=key[0], **values)
        others = [p.name(self.m.language) for p in opened if p != period]
        intro = self._reply(
            "lapor_mulai",
            periode=period.name(self.m.language),
            koperasi=membership.koperasi_nama,
            total=len([f for f in self.form.visible(answers) if not f.system]),
            others=others,
            revision=current is not None,
            oleh=current.submitted_by_name if current else "",
            pada=current.submitted_at if current else now,
            catatan=notes,
        )
        return draft, intro

    # Asking ------------------------------------------------------------------------------------
    def _ask(self, draft: Draft, ctx: _Context) -> list[Reply]:
        """The next question, or the review screen when every question is answered."""
        answers = draft.answers
        f = self.form.next_field(answers)
        if f is None:
            draft.current_field = None
            draft.pending = None
            return [self._review(draft, ctx)]
        draft.current_field = f.id
        if f.kind in (Kind.MULTI, Kind.PHOTO):
            draft.pending = {
                "selected": list(answers.get(f.id, []) if f.kind is Kind.MULTI else [])
            }
        else:
            draft.pending = None
        return [self._question(draft, f, ctx)]

    def _question(self, draft: Draft, f: Field, ctx: _Context) -> Reply:
        answers = draft.answers
        number, total = self.form.position(f.id, answers)
        previous = None
        if f.id in ctx.last and f.carry:
            previous = format_value(self.m, f, ctx.last[f.id])
        text = self.m.render(
            "pertanyaan",
            field=f.id,
            periode=self._name(draft.period),
            nomor=number,
            total=total,
            previous=previous,
            required=not f.skippable(answers),
        )
        return Reply(text, self._question_buttons(draft, f, ctx))

    def _question_buttons(self, draft: Draft, f: Field, ctx: _Context) -> Buttons:
        answers = draft.answers
        prefix = f"{draft.id}:"
        rows: Buttons = []
        if f.kind is Kind.CHOICE:
            choices = f.choices(answers)
            per_row = 2 if len(choices) <= 2 or f.id in ("nib", "npwp") else 1
            row: list[tuple[str, str]] = []
            for option in choices:
                row.append((option_label(self.m, f, option), f"{prefix}o:{f.id}:{option}"))
                if len(row) == per_row:
                    rows.append(row)
                    row = []
            if row:
                rows.append(row)
        elif f.kind is Kind.MULTI:
            selected = (draft.pending or {}).get("selected", [])
            for option in f.choices(answers):
                mark = "✅ " if option in selected else ""
                rows.append(
                    [(mark + option_label(self.m, f, option), f"{prefix}t:{f.id}:{option}")]
                )
            rows.append([(self.m.render("btn_selesai"), f"{prefix}d:{f.id}")])
        elif f.kind is Kind.PHOTO:
            rows.append(
                [
                    (self.m.render("btn_selesai"), f"{prefix}d:{f.id}"),
                    (self.m.render("btn_lewati"), f"{prefix}k:{f.id}"),
                ]
            )
        if f.kind is Kind.TEXT and f.skippable(answers):
            rows.append([(self.m.render("btn_lewati"), f"{prefix}k:{f.id}")])
        if f.carry and f.id in ctx.last and f.kind is not Kind.PHOTO:
            rows.append([(self.m.render("btn_sama"), f"{prefix}s:{f.id}")])
        return rows

    def _review(self, draft: Draft, ctx: _Context) -> Reply:
        answers = self.form.clean(draft.answers)
        rows = [
            {"label": field_label(self.m, f.id), "value": format_value(self.m, f, answers[f.id])}
            for f in self.form.visible(answers)
            if f.id in answers
        ]
        text = self.m.render(
            "tinjau",
            periode=self._name(draft.period),
            koperasi=ctx.koperasi_nama,
            rows=rows,
            revising=draft.revising,
        )
        prefix = f"{draft.id}:"
        buttons: Buttons = [
            [(self.m.render("btn_kirim"), f"{prefix}send")],
            [
                (self.m.render("btn_ubah"), f"{prefix}edit"),
                (self.m.render("btn_batal"), f"{prefix}cancel"),
            ],
        ]
        return Reply(text, buttons)

    # Answering ---------------------------------------------------------------------------------
    def _answered(self, f: Field, value: Any) -> Reply:
        text = self.m.render(
            "dijawab", label=field_label(self.m, f.id), value=format_value(self.m, f, value)
        )
        return Reply(text, replace=True)

    def _store(self, draft: Draft, f: Field, value: Any) -> None:
        answers = dict(draft.answers)
        answers[f.id] = value
        # Answers that no longer apply (e.g. units after "belum beroperasi") are dropped, so a
        # later change of mind asks them afresh instead of keeping stale values.
        draft.answers = self.form.clean(answers)
        draft.pending = None

    def _accept(self, draft: Draft, ctx: _Context, f: Field, result: Accepted) -> list[Reply]:
        if result.confirm:
            draft.pending = {"value": result.value, "confirm": list(result.confirm)}
            last = ctx.last.get(f.id)
            text = self.m.render(
                "konfirmasi",
                reasons=list(result.confirm),
                value=format_value(self.m, f, result.value),
                last=format_value(self.m, f, last) if last is not None else "",
            )
            prefix = f"{draft.id}:"
            buttons: Buttons = [
                [
                    (self.m.render("btn_ya_benar"), f"{prefix}y:{f.id}"),
                    (self.m.render("btn_ubah"), f"{prefix}n:{f.id}"),
                ]
            ]
            return [Reply(text, buttons)]
        self._store(draft, f, result.value)
        return self._ask(draft, ctx)

    def _invalid(self, draft: Draft, f: Field, ctx: _Context, invalid: Invalid) -> list[Reply]:
        values = dict(invalid.values)
        if "field" in values:
            values["label"] = field_label(self.m, values["field"])
        return [
            self._reply("jawaban_salah", code=invalid.code, **values),
            self._question(draft, f, ctx),
        ]

    async def _typed(self, draft: Draft, ctx: _Context, text: str) -> list[Reply]:
        if draft.current_field is None:
            return [self._reply("tinjau_petunjuk"), self._review(draft, ctx)]
        f = self.form.field(draft.current_field)
        pending = draft.pending or {}
        if "value" in pending:
            if is_yes(text):
                self._store(draft, f, pending["value"])
                return self._ask(draft, ctx)
            if is_no(text):
                draft.pending = None
                return [self._question(draft, f, ctx)]
            # Anything else is a corrected answer to the same question.
        result = validate_typed(f, text, draft.answers, ctx.last, labels(self.m))
        if isinstance(result, Invalid):
            return self._invalid(draft, f, ctx, result)
        return self._accept(draft, ctx, f, result)

    async def _photo(self, draft: Draft, ctx: _Context, file_id: str) -> list[Reply]:
        f = self.form.field(draft.current_field) if draft.current_field else None
        if f is None or f.kind is not Kind.PHOTO:
            return [self._reply("jawaban_salah", code="not_photo_now"), *self._ask(draft, ctx)]
        selected = list((draft.pending or {}).get("selected", []))
        if len(selected) >= f.max_items:
            return [self._reply("jawaban_salah", code="too_many_photos", maximum=f.max_items)]
        selected.append(file_id)
        draft.pending = {"selected": selected}
        prefix = f"{draft.id}:"
        return [
            self._reply(
                "foto_diterima",
                jumlah=len(selected),
                buttons=[[(self.m.render("btn_selesai"), f"{prefix}d:{f.id}")]],
            )
        ]

    async def _action(self, draft: Draft, ctx: _Context, action: str) -> list[Reply]:
        verb, _, rest = action.partition(":")
        field_id, _, option = rest.partition(":")
        if verb in ("send", "edit", "cancel", "cy", "cn", "e"):
            return await self._review_action(draft, ctx, verb, field_id)
        # Every question button names its field; a button of an earlier question is stale.
        if field_id != draft.current_field or not self.form.has(field_id):
            return [self._reply("stale_button", alert=True)]
        f = self.form.field(field_id)
        pending = draft.pending or {}
        if verb == "o" and f.kind is Kind.CHOICE and option in f.choices(draft.answers):
            self._store(draft, f, option)
            return [self._answered(f, option), *self._ask(draft, ctx)]
        if verb == "t" and f.kind is Kind.MULTI:
            toggled = toggle(f, list(pending.get("selected", [])), option, draft.answers)
            if isinstance(toggled, Invalid):
                return [self._reply("stale_button", alert=True)]
            draft.pending = {"selected": toggled}
            question = self._question(draft, f, ctx)
            question.replace = True
            return [question]
        if verb == "d" and f.kind in (Kind.MULTI, Kind.PHOTO):
            selected = list(pending.get("selected", []))
            if f.kind is Kind.PHOTO:
                value: Any = selected
            else:
                result = finish_selection(f, selected, draft.answers)
                if isinstance(result, Invalid):
                    return [self._reply("jawaban_salah", code=result.code, **result.values)]
                value = result.value
            self._store(draft, f, value)
            return [self._answered(f, value), *self._ask(draft, ctx)]
        if verb == "k" and f.skippable(draft.answers):
            value = [] if f.kind is Kind.PHOTO else ""
            self._store(draft, f, value)
            return [self._answered(f, value), *self._ask(draft, ctx)]
        if verb == "s" and f.carry and f.id in ctx.last:
            carried = ctx.last[f.id]
            if f.kind is Kind.MULTI:
                carried = [o for o in carried if o in f.choices(draft.answers)]
            self._store(draft, f, carried)
            return [self._answered(f, carried), *self._ask(draft, ctx)]
        if verb == "y" and "value" in pending:
            self._store(draft, f, pending["value"])
            return [self._answered(f, pending["value"]), *self._ask(draft, ctx)]
        if verb == "n" and "value" in pending:
            draft.pending = None
            return [self._question(draft, f, ctx)]
        return [self._reply("stale_button", alert=True)]

    async def _review_action(
        self, draft: Draft, ctx: _Context, verb: str, field_id: str
    ) -> list[Reply]:
        if verb == "cancel":
            return self._cancel_buttons(draft)
        if verb == "cy":
            await ctx.drafts.delete(draft)
            return [
                Reply(
                    self.m.render("batal_selesai", periode=self._name(draft.period)), replace=True
                )
            ]
        if verb == "cn":
            return [Reply(self.m.render("batal_tidak_jadi"), replace=True), *self._ask(draft, ctx)]
        if draft.current_field is not None:
            return [self._reply("stale_button", alert=True)]
        if verb == "edit":
            visible = [
                f
                for f in self.form.visible(draft.answers)
                if f.id in draft.answers and not f.system
            ]
            buttons: Buttons = [
                [(field_label(self.m, f.id), f"{draft.id}:e:{f.id}")] for f in visible
            ]
            return [self._reply("tinjau_pilih", buttons=buttons)]
        if verb == "e" and self.form.has(field_id) and field_id in draft.answers:
            answers = dict(draft.answers)
            del answers[field_id]
            draft.answers = answers
            return self._ask(draft, ctx)
        if verb == "send":
            return await self._submit(draft, ctx)
        return [self._reply("stale_button", alert=True)]

    def _cancel_buttons(self, draft: Draft) -> list[Reply]:
        return [
            self._reply(
                "batal_konfirmasi",
                periode=self._name(draft.period),
                buttons=[
                    [
                        (self.m.render("btn_hapus_draf"), f"{draft.id}:cy"),
                        (self.m.render("btn_lanjutkan"), f"{draft.id}:cn"),
                    ]
                ],
            )
        ]

    async def _submit(self, draft: Draft, ctx: _Context) -> list[Reply]:
        if self.form.next_field(draft.answers) is not None:
            return self._ask(draft, ctx)
        connection = await ctx.drafts.transaction()
        actor = ctx.actor
        assert actor.membership is not None
        now = self.core.clock.now()
        period = Period.parse_key(draft.period)
        late = now > deadline(self.core.settings, period)
        answers = self.form.clean(draft.answers)
        counted = Report.counted(answers)
        where = {"koperasi_id": draft.koperasi_id, "period": draft.period}
        report = (await connection.execute(_REPORT_OF, where)).first()
        if report is None:
            revision = 1
            key = (
                await connection.execute(
                    _REPORT_INSERT,
                    {
                        **where,
                        **counted,
                        "current_revision": revision,
                        "first_submitted_at": now,
                        "last_submitted_at": now,
                        "late": late,
                    },
                )
            ).inserted_primary_key
            assert key is not None
            report_id = key[0]
        else:
            report_id, revision = report.id, report.current_revision + 1
            await connection.execute(
                _REPORT_REVISED,
                {
                    **{f"new_{name}": value for name, value in counted.items()},
                    "report_id": report_id,
                    "new_current_revision": revision,
                    "new_last_submitted_at": now,
                },
            )
        await connection.execute(
            _REVISION_INSERT,
            {
                "report_id": report_id,
                "revision": revision,
                "answers": answers,
                "submitted_by_person_id": actor.person_id,
                "submitted_by_name": actor.nama or "",
                "submitted_at": now,
                "late": late,
            },
        )
        kode = await connection.scalar(_KELURAHAN_KODE, {"koperasi_id": draft.koperasi_id})
        number = f"LAP/{(kode or '').replace('.', '')}/{period.key}/R{revision}"
        await audit.write(
            connection,
            at=now,
            action="report.submitted",
            actor_label=actor.label,
            actor_person_id=actor.person_id,
            koperasi_id=draft.koperasi_id,
            period=draft.period,
            revision=revision,
            late=late,
        )
        await ctx.drafts.delete(draft)
        # Reminders queued for this report but not sent yet are no longer meaningful.
        await cancel_topic(connection, report_topic(period, draft.koperasi_id))
        receipt = self._reply(
            "tanda_terima",
            nama=actor.nama,
            koperasi=ctx.koperasi_nama,
            periode=period.name(self.m.language),
            nomor=number,
            waktu=now,
            revision=revision,
            late=late,
        )
        return [receipt]

    # Helpers -----------------------------------------------------------------------------------
    def _refusal(self, actor: Actor) -> list[Reply] | None:
        if actor.membership is None:
            reason = "officer" if actor.officer is not None else "unlinked"
            return [self._reply("lapor_tidak_boleh", reason=reason, jabatan="")]
        if actor.membership.level is RoleLevel.PENGAWAS:
            return [
                self._reply(
                    "lapor_tidak_boleh", reason="pengawas", jabatan=actor.membership.jabatan
                )
            ]
        return None

    def _name(self, key: str) -> str:
        return _period_name(key, self.m.language)

    def _reply(
        self, template: str, *, buttons: Buttons | None = None, alert: bool = False, **values: Any
    ) -> Reply:
        return Reply(self.m.render(template, **values), buttons or [], alert=alert)
