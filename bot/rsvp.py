"""Answers to summons (RSVP), the officers' attendance view, changes, cancellation, reminders.

Board members answer with the letter's buttons ("u:<summons id>:<answer>"). Diwakilkan and
Berhalangan ask a typed follow-up that waits in a `ChatPrompt` row, so it survives restarts;
once answered the row stays, as step `ANSWERED`, only to keep the same message delivered again
silent. The latest answer is kept in `Rsvp` and every answer in the audit log. Officers see
who comes with /undangan and, when they may broadcast in the summons' scope, change its time
or place or cancel it; the change itself also waits in a `ChatPrompt`. Everyone addressed is told
through the outbox. `remind` decides the H-1 and H-0 reminders through the ledger.

Callback data is never trusted: it only names a summons, which is looked up and re-checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, delete, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import audit
from bot.config import Settings
from bot.core import Core
from bot.identity import Actor, OfficerScope
from bot.outbox import Outgoing, cancel_topic, enqueue, sending_window
from bot.replies import Buttons, Reply, action_id
from bot.summons import (
    PRIORITY,
    RSVP_PREFIX,
    Reach,
    Recipient,
    reach,
    rsvp_buttons,
    template_params,
)
from bot.tanggal import Moment, parse_moment_text
from storage.models import (
    BoardMember,
    ChatIdentity,
    ChatPrompt,
    Jabatan,
    Kecamatan,
    Kelurahan,
    Koperasi,
    LedgerEntry,
    OutboxMessage,
    OutboxStatus,
    Person,
    Rsvp,
    RsvpAnswer,
    Summons,
    SummonsKoperasi,
)
from storage.upsert import insert_returning_new

T = TypeVar("T")

# ChatPrompt kinds: a board member's follow-up, an officer's change or cancellation.
DELEGATE = "rsvp_delegate"
REASON = "rsvp_reason"
CHANGE = "summons_change"
CANCEL = "summons_cancel"
RSVP_PROMPTS = (DELEGATE, REASON)
OFFICER_PROMPTS = (CHANGE, CANCEL)
PROMPT_KINDS = RSVP_PROMPTS + OFFICER_PROMPTS
# A prompt whose question was answered by typed text stays as this step, holding that message's
# id in its data, so the same message delivered again is met with silence. It is no open
# question: the next newer message or /batal removes it and goes on to whatever else waits, and
# a new question replaces it.
ANSWERED = "tercatat"

# Outbox kinds of what this module queues (the letter itself is "summons", see bot/summons).
CHANGE_NOTICE = "summons_change"
CANCEL_NOTICE = "summons_cancel"
H1 = "summons_h1"
H0 = "summons_h0"

OFFICER_VERBS = frozenset({"lihat", "lama", "ubah", "kirim", "batalkan", "batalkan_ya", "urung"})
ANSWER_MAX = 200  # a delegate's name or position, a reason for not coming
OFFICER_TEXT_MIN = 3
OFFICER_TEXT_MAX = 300  # the new place, the reason for cancelling
# Typed instead of a new time or place: keep it as it is.
SAME_WORDS = frozenset({"sama", "tetap", "same"})
LIST_SIZE = 8
H1_AT = time(9, 0)
H0_BEFORE = timedelta(hours=2)
# H-1 falls at most this long before the start (09.00 the day before a 23.59 meeting).
REMIND_HORIZON = timedelta(days=2)
_ATTEMPTS = 3
_FAILED = (OutboxStatus.UNREACHABLE, OutboxStatus.FAILED)
_GOING = (RsvpAnswer.HADIR, RsvpAnswer.DIWAKILKAN)


def topic(summons_id: int) -> str:
    return f"summons:{summons_id}"


def ledger_period(summons_id: int) -> str:
    """The ledger's period for a summons: "u<id>" (7 characters at most, ids below 10**6).

    Larger ids fall back to "w<base 36>", which cannot collide with the decimal form.
    """
    if summons_id < 10**6:
        return f"u{summons_id}"
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    encoded = ""
    number = summons_id
    while number:
        number, rest = divmod(number, 36)
        encoded = digits[rest] + encoded
    return f"w{encoded}"


def ledger_target(person_id: int, time_version: int) -> str:
    """The ledger's target: "p<person>" for the first time of a summons, "p<person>t<n>" once
    the time changed, so the new time's reminders are decided afresh and old rows stay."""
    return f"p{person_id}" if time_version == 1 else f"p{person_id}t{time_version}"


# Plumbing --------------------------------------------------------------------------------------


def _reply(
    core: Core,
    template: str,
    *,
    buttons: Buttons | None = None,
    alert: bool = False,
    replace: bool = False,
    **values: Any,
) -> Reply:
    return Reply(core.messages.render(template, **values), buttons or [], replace, alert)


def _refuse(core: Core, code: str) -> list[Reply]:
    return [_reply(core, "undangan_tolak", code=code, alert=True)]


def _stale(core: Core) -> list[Reply]:
    return [_reply(core, "stale_button", alert=True)]


def _label(core: Core, name: str, **values: Any) -> str:
    return core.messages.render("undangan_tombol", name=name, **values)


def _answer_label(core: Core, rsvp: Rsvp | None) -> str | None:
    if rsvp is None:
        return None
    return core.messages.render(
        "rsvp_jawaban",
        answer=rsvp.answer.value,
        wakil=rsvp.delegate_nama,
        jabatan=rsvp.delegate_jabatan,
    )


def _clean(text: str) -> str:
    return " ".join(text.split())


def _invalid(value: str, minimum: int, maximum: int) -> str | None:
    if not value:
        return "empty"
    if len(value) < minimum:
        return "too_short"
    if len(value) > maximum:
        return "too_long"
    return None


async def _retrying(core: Core, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in a transaction; again when a unique constraint refused it (two presses at
    once both inserting the same answer or prompt): the loser sees the winner's row."""
    for attempt in range(_ATTEMPTS):
        try:
            async with core.db.transaction() as session:
                return await work(session)
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _locked(core: Core, query: Select[T]) -> Select[T]:
    # PostgreSQL: serialise two updates of one person's prompt or one summons. SQLite has a
    # single writer already.
    return query.with_for_update() if core.db.dialect == "postgresql" else query


async def _prompt(core: Core, session: AsyncSession, person_id: int) -> ChatPrompt | None:
    return await session.scalar(
        _locked(core, select(ChatPrompt).where(ChatPrompt.person_id == person_id))
    )


async def _set_prompt(
    core: Core,
    session: AsyncSession,
    person_id: int,
    kind: str,
    ref_id: int,
    step: str,
    data: dict[str, Any],
) -> ChatPrompt:
    """Ask a new question: it replaces whatever question was waiting for this person."""
    prompt = await _prompt(core, session, person_id)
    if prompt is None:
        prompt = ChatPrompt(person_id=person_id)
        session.add(prompt)
    prompt.kind = kind
    prompt.ref_id = ref_id
    prompt.step = step
    prompt.data = data
    prompt.created_at = core.clock.now()
    await session.flush()
    return prompt


async def _summons(core: Core, session: AsyncSession, summons_id: int) -> Summons | None:
    return await session.scalar(_locked(core, select(Summons).where(Summons.id == summons_id)))


async def _addressed_ids(session: AsyncSession, summons_id: int) -> list[int]:
    rows = await session.scalars(
        select(SummonsKoperasi.koperasi_id)
        .where(SummonsKoperasi.summons_id == summons_id)
        .order_by(SummonsKoperasi.koperasi_id)
    )
    return list(rows.all())


async def _rsvps(session: AsyncSession, summons_id: int) -> dict[int, Rsvp]:
    rows = await session.scalars(select(Rsvp).where(Rsvp.summons_id == summons_id))
    return {r.person_id: r for r in rows.all()}


# Board members: answering ----------------------------------------------------------------------


async def _closed_for_board(
    session: AsyncSession, summons: Summons | None, actor: Actor, now: datetime
) -> str | None:
    """Why this person may not answer this summons now, or None."""
    if summons is None:
        return "unknown"
    if actor.membership is None:
        return "not_board"
    addressed = await session.scalar(
        select(SummonsKoperasi.id).where(
            SummonsKoperasi.summons_id == summons.id,
            SummonsKoperasi.koperasi_id == actor.membership.koperasi_id,
        )
    )
    if addressed is None:
        return "not_addressed"
    if summons.cancelled_at is not None:
        return "cancelled"
    if now >= summons.starts_at:
        return "started"
    return None


async def answer(core: Core, actor: Actor, summons_id: int, choice: RsvpAnswer) -> list[Reply]:
    """A pressed Hadir / Diwakilkan / Berhalangan. Hadir is recorded at once; the other two
    ask for the delegate or the reason first."""
    if actor.person_id is None or actor.membership is None:
        return _refuse(core, "not_board")

    async def work(session: AsyncSession) -> list[Reply]:
        assert actor.person_id is not None
        summons = await session.get(Summons, summons_id)
        problem = await _closed_for_board(session, summons, actor, core.clock.now())
        if problem is not None:
            return _refuse(core, problem)
        assert summons is not None
        if choice is RsvpAnswer.HADIR:
            prompt = await _prompt(core, session, actor.person_id)
            if prompt is not None and prompt.kind in RSVP_PROMPTS and prompt.ref_id == summons.id:
                await session.delete(prompt)  # the follow-up question no longer stands
            return [await _record(core, session, actor, summons, RsvpAnswer.HADIR)]
        kind, step = (DELEGATE, "nama") if choice is RsvpAnswer.DIWAKILKAN else (REASON, "alasan")
        await _set_prompt(core, session, actor.person_id, kind, summons.id, step, {})
        return [_reply(core, "rsvp_tanya", step=step, s=summons, wakil="")]

    return await _retrying(core, work)


async def _record(
    core: Core,
    session: AsyncSession,
    actor: Actor,
    summons: Summons,
    choice: RsvpAnswer,
    *,
    delegate_nama: str | None = None,
    delegate_jabatan: str | None = None,
    alasan: str | None = None,
) -> Reply:
    """Upsert the person's answer; the audit log keeps every answer given."""
    assert actor.person_id is not None
    assert actor.membership is not None
    now = core.clock.now()
    row = await session.scalar(
        _locked(
            core,
            select(Rsvp).where(Rsvp.summons_id == summons.id, Rsvp.person_id == actor.person_id),
        )
    )
    previous = _answer_label(core, row)
    if row is None:
        row = Rsvp(summons_id=summons.id, person_id=actor.person_id)
        session.add(row)
    row.koperasi_id = actor.membership.koperasi_id
    row.answer = choice
    row.delegate_nama = delegate_nama
    row.delegate_jabatan = delegate_jabatan
    row.alasan = alasan
    row.time_version = summons.time_version
    row.answered_at = now
    audit.record(
        session,
        at=now,
        action="summons.rsvp",
        actor_label=actor.label,
        actor_person_id=actor.person_id,
        koperasi_id=actor.membership.koperasi_id,
        summons_id=summons.id,
        answer=choice.value,
        delegate_nama=delegate_nama,
        delegate_jabatan=delegate_jabatan,
        alasan=alasan,
        time_version=summons.time_version,
        previous=previous,
    )
    await session.flush()
    return _reply(
        core,
        "rsvp_tercatat",
        answer=choice.value,
        nama=actor.nama,
        s=summons,
        wakil=delegate_nama,
        jabatan=delegate_jabatan,
        alasan=alasan,
        sebelumnya=previous if previous != _answer_label(core, row) else None,
    )


# Typed answers and /batal ----------------------------------------------------------------------


async def on_text(
    core: Core, actor: Actor, text: str, message_id: int | None = None
) -> list[Reply] | None:
    """A typed answer to the person's waiting prompt; None when no prompt of ours waits (the
    caller then tries the report form). `message_id` makes a message delivered twice harmless.
    """
    if actor.person_id is None:
        return None

    async def work(session: AsyncSession) -> list[Reply] | None:
        assert actor.person_id is not None
        prompt = await _prompt(core, session, actor.person_id)
        if prompt is None or prompt.kind not in PROMPT_KINDS:
            return None
        if message_id is not None:
            last = prompt.data.get("message_id")
            if isinstance(last, int) and message_id <= last:
                return []
            prompt.data = {**prompt.data, "message_id": message_id}
        if prompt.step == ANSWERED:  # a new message, not an answer: let the next reader have it
            await session.delete(prompt)
            return None
        if prompt.kind in RSVP_PROMPTS:
            return await _board_text(core, session, actor, prompt, text)
        return await _officer_text(core, session, actor, prompt, text)

    return await _retrying(core, work)


async def _board_text(
    core: Core, session: AsyncSession, actor: Actor, prompt: ChatPrompt, text: str
) -> list[Reply]:
    summons = await session.get(Summons, prompt.ref_id) if prompt.ref_id is not None else None
    problem = await _closed_for_board(session, summons, actor, core.clock.now())
    if problem is not None:
        await _settle(session, prompt, keep=actor.membership is not None)
        return _refuse(core, problem)
    assert summons is not None
    value = _clean(text)
    step = prompt.step or "alasan"
    wakil = str(prompt.data.get("nama", ""))
    error = _invalid(value, 1, ANSWER_MAX)
    if error is not None:
        return [
            _reply(core, "undangan_isian_salah", code=error, length=len(value), maximum=ANSWER_MAX),
            _reply(core, "rsvp_tanya", step=step, s=summons, wakil=wakil),
        ]
    if prompt.kind == DELEGATE and step == "nama":
        prompt.data = {**prompt.data, "nama": value}
        prompt.step = "jabatan"
        return [_reply(core, "rsvp_tanya", step="jabatan", s=summons, wakil=value)]
    kind = prompt.kind
    await _settle(session, prompt, keep=True)
    if kind == DELEGATE:
        reply = await _record(
            core,
            session,
            actor,
            summons,
            RsvpAnswer.DIWAKILKAN,
            delegate_nama=wakil,
            delegate_jabatan=value,
        )
    else:
        reply = await _record(core, session, actor, summons, RsvpAnswer.BERHALANGAN, alasan=value)
    return [reply]


async def cancel_prompt(core: Core, actor: Actor) -> list[Reply] | None:
    """/batal while one of our prompts waits: drop it (an answer given earlier stays). None
    when nothing of ours waits, so the caller can offer to discard a report draft instead."""
    if actor.person_id is None:
        return None
    async with core.db.transaction() as session:
        prompt = await _prompt(core, session, actor.person_id)
        if prompt is None or prompt.kind not in PROMPT_KINDS:
            return None
        if prompt.step == ANSWERED:  # nothing waits: /batal is for whatever else does
            await session.delete(prompt)
            return None
        return [await _drop(core, session, prompt, replace=False)]


async def _settle(session: AsyncSession, prompt: ChatPrompt, *, keep: bool) -> None:
    """The typed text closed the question: keep the row as ANSWERED (its data holds the
    message's id) so a repeat of that message stays silent; delete it when the person may no
    longer hold a question of this kind."""
    if keep:
        prompt.step = ANSWERED
    else:
        await session.delete(prompt)


async def _drop(core: Core, session: AsyncSession, prompt: ChatPrompt, *, replace: bool) -> Reply:
    kind = prompt.kind
    earlier = None
    if kind in RSVP_PROMPTS and prompt.ref_id is not None:
        earlier = await session.scalar(
            select(Rsvp).where(Rsvp.summons_id == prompt.ref_id, Rsvp.person_id == prompt.person_id)
        )
    await session.delete(prompt)
    return _reply(
        core,
        "undangan_prompt_batal",
        kind=kind,
        jawaban=_answer_label(core, earlier),
        replace=replace,
    )


# Buttons ---------------------------------------------------------------------------------------


async def on_action(core: Core, actor: Actor, data: str) -> list[Reply]:
    """Any "u:" button: "u:<summons id>:<verb>". The id is looked up and everything re-checked.

    Verbs: hadir, diwakilkan, berhalangan (board); lihat, lama (list before this id), ubah,
    kirim, batalkan, batalkan_ya, urung (officers).
    """
    number, _, verb = data.removeprefix(RSVP_PREFIX).partition(":")
    summons_id = action_id(number)
    if summons_id is None or not verb:
        return _stale(core)
    if verb in {a.value for a in RsvpAnswer}:
        return await answer(core, actor, summons_id, RsvpAnswer(verb))
    if verb not in OFFICER_VERBS:
        return _stale(core)
    if actor.officer is None or actor.person_id is None:
        return _refuse(core, "not_officer")
    if verb == "lihat":
        return await detail(core, actor, summons_id)
    if verb == "lama":
        return await overview(core, actor, before_id=summons_id)
    if verb in ("ubah", "batalkan"):
        return await _start_officer_prompt(core, actor, summons_id, verb)
    if verb == "kirim":
        return await _send_change(core, actor, summons_id)
    if verb == "batalkan_ya":
        return await _confirm_cancel(core, actor, summons_id)
    return await _abort(core, actor, summons_id)


# Officers: the list and the attendance view ----------------------------------------------------


def _visible(officer: OfficerScope) -> ColumnElement[bool] | None:
    """Kecamatan officers see what was sent in their scope or addresses their cooperatives."""
    if officer.kecamatan_id is None:
        return None
    in_scope = exists(
        select(SummonsKoperasi.id)
        .join(Koperasi, Koperasi.id == SummonsKoperasi.koperasi_id)
        .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
        .where(
            SummonsKoperasi.summons_id == Summons.id,
            Kelurahan.kecamatan_id == officer.kecamatan_id,
        )
    )
    return or_(Summons.kecamatan_id == officer.kecamatan_id, in_scope)


async def _is_visible(session: AsyncSession, summons_id: int, officer: OfficerScope) -> bool:
    query = select(Summons.id).where(Summons.id == summons_id)
    condition = _visible(officer)
    if condition is not None:
        query = query.where(condition)
    return await session.scalar(query) is not None


def may_manage(officer: OfficerScope | None, summons: Summons) -> bool:
    """Change or cancel: broadcasting officers, city-wide or of the kecamatan it was sent in."""
    if officer is None or not officer.can_broadcast:
        return False
    return officer.kecamatan_id is None or summons.kecamatan_id == officer.kecamatan_id


def _status(summons: Summons, now: datetime) -> str:
    if summons.cancelled_at is not None:
        return "batal"
    return "selesai" if now >= summons.starts_at else "akan"


@dataclass(frozen=True)
class _Entry:
    s: Summons
    status: str
    terwakili: int
    total: int


async def overview(core: Core, actor: Actor, before_id: int | None = None) -> list[Reply]:
    """/undangan: the recent summons the officer may see, with how many cooperatives are
    represented, as buttons; `before_id` pages back."""
    officer = actor.officer
    if officer is None:
        return _refuse(core, "not_officer")
    async with core.db.sessions() as session:
        query = select(Summons).order_by(Summons.id.desc()).limit(LIST_SIZE + 1)
        condition = _visible(officer)
        if condition is not None:
            query = query.where(condition)
        if before_id is not None:
            query = query.where(Summons.id < before_id)
        found = list((await session.scalars(query)).all())
        shown = found[:LIST_SIZE]
        counts = await _represented_counts(session, shown, officer.kecamatan_id)
    now = core.clock.now()
    entries = [_Entry(s, _status(s, now), *counts.get(s.id, (0, 0))) for s in shown]
    buttons: Buttons = [
        [
            (
                _label(core, "pilih", s=e.s, terwakili=e.terwakili, total=e.total),
                f"{RSVP_PREFIX}{e.s.id}:lihat",
            )
        ]
        for e in entries
    ]
    if len(found) > LIST_SIZE:
        buttons.append([(_label(core, "lama"), f"{RSVP_PREFIX}{shown[-1].id}:lama")])
    return [
        _reply(
            core,
            "undangan_daftar",
            entries=entries,
            wilayah=officer.kecamatan,
            lanjutan=before_id is not None,
            buttons=buttons,
            replace=before_id is not None,
        )
    ]


def _in_kecamatan(query: Any, kecamatan_id: int | None) -> Any:
    return query if kecamatan_id is None else query.where(Kelurahan.kecamatan_id == kecamatan_id)


async def _represented_counts(
    session: AsyncSession, summonses: Sequence[Summons], kecamatan_id: int | None
) -> dict[int, tuple[int, int]]:
    """Per summons: (cooperatives represented, cooperatives addressed), within the scope."""
    if not summonses:
        return {}
    ids = [s.id for s in summonses]
    addressed = await session.execute(
        _in_kecamatan(
            select(SummonsKoperasi.summons_id, SummonsKoperasi.koperasi_id)
            .join(Koperasi, Koperasi.id == SummonsKoperasi.koperasi_id)
            .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
            .where(SummonsKoperasi.summons_id.in_(ids)),
            kecamatan_id,
        )
    )
    pairs = {(int(s), int(k)) for s, k in addressed.all()}
    going = await session.execute(
        select(Rsvp.summons_id, Rsvp.koperasi_id)
        .join(Summons, Summons.id == Rsvp.summons_id)
        .where(
            Rsvp.summons_id.in_(ids),
            Rsvp.answer.in_(_GOING),
            Rsvp.time_version == Summons.time_version,
        )
    )
    represented = {(int(s), int(k)) for s, k in going.all()} & pairs
    return {
        s.id: (
            sum(1 for sid, _ in represented if sid == s.id),
            sum(1 for sid, _ in pairs if sid == s.id),
        )
        for s in summonses
    }


@dataclass
class PersonAttendance:
    """One board member (or a former one who answered) and their answer."""

    person_id: int
    nama: str
    jabatan: str | None
    answer: RsvpAnswer | None = None
    delegate_nama: str | None = None
    delegate_jabatan: str | None = None
    alasan: str | None = None
    # Answered for an earlier time of the meeting: asked to confirm again.
    stale: bool = False
    # None when reachable; "blocked" (every chat refuses the bot) or "failed" (the letter could
    # not be delivered).
    unreachable: str | None = None
    # What the channel reported about the letters (WhatsApp's status callbacks): "read",
    # "delivered", or None when it tells nothing (Telegram does not).
    seen: str | None = None

    @property
    def state(self) -> str:
        """hadir | diwakilkan | berhalangan | ulang | belum | tak_terjangkau"""
        if self.answer is not None:
            return "ulang" if self.stale else self.answer.value
        return "belum" if self.unreachable is None else "tak_terjangkau"


@dataclass
class KoperasiAttendance:
    koperasi_id: int
    kelurahan: str
    kecamatan: str
    people: list[PersonAttendance] = field(default_factory=list)

    @property
    def represented(self) -> bool:
        return any(p.state in ("hadir", "diwakilkan") for p in self.people)

    @property
    def state(self) -> str:
        """terwakili | ulang | belum | berhalangan | tak_terjangkau (nobody linked, nobody
        reachable)."""
        states = {p.state for p in self.people}
        if self.represented:
            return "terwakili"
        for state in ("ulang", "belum", "berhalangan"):
            if state in states:
                return state
        return "tak_terjangkau"


@dataclass
class Attendance:
    summons: Summons
    koperasi: list[KoperasiAttendance]

    def totals(self) -> dict[str, int]:
        people = [p for k in self.koperasi for p in k.people]
        states = [k.state for k in self.koperasi]
        return {
            "koperasi": len(self.koperasi),
            **{state: states.count(state) for state in ("ulang", "belum", "berhalangan")},
            "terwakili": states.count("terwakili"),
            "tak_terjangkau": states.count("tak_terjangkau"),
            **{
                f"orang_{state}": sum(1 for p in people if p.state == state)
                for state in ("hadir", "diwakilkan", "berhalangan", "ulang", "belum")
            },
        }

    def by_kecamatan(self) -> list[tuple[str, list[KoperasiAttendance]]]:
        groups: dict[str, list[KoperasiAttendance]] = defaultdict(list)
        for k in self.koperasi:
            groups[k.kecamatan].append(k)
        return sorted(groups.items())


async def attendance(
    session: AsyncSession, summons: Summons, kecamatan_id: int | None
) -> Attendance:
    """Who comes, per addressed cooperative (within one kecamatan, or all)."""
    rows = await session.execute(
        _in_kecamatan(
            select(Koperasi.id, Kelurahan.nama, Kecamatan.nama)
            .join(SummonsKoperasi, SummonsKoperasi.koperasi_id == Koperasi.id)
            .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
            .join(Kecamatan, Kecamatan.id == Kelurahan.kecamatan_id)
            .where(SummonsKoperasi.summons_id == summons.id)
            .order_by(Kecamatan.nama, Kelurahan.nama),
            kecamatan_id,
        )
    )
    koperasi = {int(i): KoperasiAttendance(int(i), kel, kec) for i, kel, kec in rows.all()}
    ids = list(koperasi)
    members = await session.execute(
        select(BoardMember.koperasi_id, Person.id, Person.nama, BoardMember.judul, Jabatan.nama)
        .join(Person, Person.id == BoardMember.person_id)
        .join(Jabatan, Jabatan.id == BoardMember.jabatan_id)
        .where(BoardMember.koperasi_id.in_(ids))
        .order_by(Jabatan.urutan, Person.nama, Person.id)
    )
    people: dict[int, PersonAttendance] = {}
    for koperasi_id, person_id, nama, judul, jabatan in members.all():
        person = PersonAttendance(person_id, nama, judul or jabatan)
        people[person_id] = person
        koperasi[koperasi_id].people.append(person)
    answers = await session.execute(
        select(Rsvp, Person.nama)
        .join(Person, Person.id == Rsvp.person_id)
        .where(Rsvp.summons_id == summons.id, Rsvp.koperasi_id.in_(ids))
        .order_by(Person.nama)
    )
    for rsvp, nama in answers.all():
        who = people.get(rsvp.person_id)
        if who is None:  # answered, then left the board: the answer still counts
            who = PersonAttendance(rsvp.person_id, nama, None)
            people[rsvp.person_id] = who
            koperasi[rsvp.koperasi_id].people.append(who)
        who.answer = rsvp.answer
        who.delegate_nama = rsvp.delegate_nama
        who.delegate_jabatan = rsvp.delegate_jabatan
        who.alasan = rsvp.alasan
        who.stale = rsvp.time_version != summons.time_version
    await _mark_unreachable(session, summons.id, people)
    return Attendance(summons, list(koperasi.values()))


async def _mark_unreachable(
    session: AsyncSession, summons_id: int, people: dict[int, PersonAttendance]
) -> None:
    if not people:
        return
    identities = await session.execute(
        select(ChatIdentity.person_id, ChatIdentity.unreachable_at).where(
            ChatIdentity.person_id.in_(list(people))
        )
    )
    reachable: set[int] = set()
    for person_id, unreachable_at in identities.all():
        if unreachable_at is None:
            reachable.add(person_id)
    deliveries: dict[int, set[OutboxStatus]] = defaultdict(set)
    rows = await session.execute(
        select(
            OutboxMessage.person_id,
            OutboxMessage.status,
            OutboxMessage.delivered_at,
            OutboxMessage.read_at,
        ).where(
            OutboxMessage.topic == topic(summons_id),
            OutboxMessage.person_id.in_(list(people)),
            OutboxMessage.status != OutboxStatus.CANCELLED,
        )
    )
    for recipient_id, status, delivered_at, read_at in rows.all():
        if recipient_id is not None:
            deliveries[recipient_id].add(status)
            person = people.get(recipient_id)
            if person is not None and read_at is not None:
                person.seen = "read"
            elif person is not None and delivered_at is not None and person.seen is None:
                person.seen = "delivered"
    for person_id, person in people.items():
        if person_id not in reachable:
            person.unreachable = "blocked"
        elif deliveries.get(person_id) and deliveries[person_id] <= set(_FAILED):
            person.unreachable = "failed"


async def detail(core: Core, actor: Actor, summons_id: int) -> list[Reply]:
    """One summons for an officer: totals, then per cooperative by kecamatan who comes."""
    officer = actor.officer
    if officer is None:
        return _refuse(core, "not_officer")
    async with core.db.sessions() as session:
        summons = await session.get(Summons, summons_id)
        if summons is None or not await _is_visible(session, summons_id, officer):
            return _refuse(core, "unknown")
        view = await attendance(session, summons, officer.kecamatan_id)
    now = core.clock.now()
    buttons: Buttons = [[(_label(core, "perbarui"), f"{RSVP_PREFIX}{summons.id}:lihat")]]
    if may_manage(officer, summons) and _status(summons, now) == "akan":
        buttons.append(
            [
                (_label(core, "ubah"), f"{RSVP_PREFIX}{summons.id}:ubah"),
                (_label(core, "batalkan"), f"{RSVP_PREFIX}{summons.id}:batalkan"),
            ]
        )
    return [
        _reply(
            core,
            "undangan_rincian",
            s=summons,
            selesai=now >= summons.starts_at,
            wilayah=officer.kecamatan,
            t=view.totals(),
            groups=view.by_kecamatan(),
            buttons=buttons,
        )
    ]


# Officers: change and cancellation -------------------------------------------------------------


def _closed_for_officer(actor: Actor, summons: Summons | None, now: datetime) -> str | None:
    if summons is None:
        return "unknown"
    if not may_manage(actor.officer, summons):
        return "not_allowed"
    if summons.cancelled_at is not None:
        return "cancelled"
    if now >= summons.starts_at:
        return "started_officer"
    return None


async def _start_officer_prompt(
    core: Core, actor: Actor, summons_id: int, verb: str
) -> list[Reply]:
    async def work(session: AsyncSession) -> list[Reply]:
        assert actor.person_id is not None
        summons = await session.get(Summons, summons_id)
        problem = _closed_for_officer(actor, summons, core.clock.now())
        if problem is not None:
            return _refuse(core, problem)
        assert summons is not None
        kind, step = (CHANGE, "waktu") if verb == "ubah" else (CANCEL, "alasan")
        data = {"version": summons.version}
        await _set_prompt(core, session, actor.person_id, kind, summons.id, step, data)
        return [_reply(core, "undangan_ubah_tanya", step=step, s=summons)]

    return await _retrying(core, work)


async def _officer_text(
    core: Core, session: AsyncSession, actor: Actor, prompt: ChatPrompt, text: str
) -> list[Reply]:
    summons = await session.get(Summons, prompt.ref_id) if prompt.ref_id is not None else None
    problem = _closed_for_officer(actor, summons, core.clock.now())
    if problem is not None:
        await _settle(session, prompt, keep=actor.officer is not None)
        return _refuse(core, problem)
    assert summons is not None
    value = _clean(text)
    step = prompt.step
    if step in ("pratinjau", "konfirmasi"):
        return [
            _reply(core, "undangan_pakai_tombol"),
            await _officer_preview(core, session, summons, prompt),
        ]
    if step == "waktu":
        return await _new_time(core, session, summons, prompt, value)
    error = _invalid(value, OFFICER_TEXT_MIN, OFFICER_TEXT_MAX)
    same = prompt.kind == CHANGE and value.casefold() in SAME_WORDS
    if error is not None and not same:
        return [
            _reply(
                core,
                "undangan_isian_salah",
                code=error,
                length=len(value),
                minimum=OFFICER_TEXT_MIN,
                maximum=OFFICER_TEXT_MAX,
            ),
            _reply(core, "undangan_ubah_tanya", step=step, s=summons),
        ]
    if prompt.kind == CANCEL:
        prompt.data = {**prompt.data, "alasan": value}
        prompt.step = "konfirmasi"
        return [await _officer_preview(core, session, summons, prompt)]
    tempat = None if same or value == summons.tempat else value
    prompt.data = {**prompt.data, "tempat": tempat}
    if prompt.data.get("starts_at") is None and tempat is None:
        await _settle(session, prompt, keep=True)
        return [_reply(core, "undangan_ubah_tidak_ada")]
    prompt.step = "pratinjau"
    return [await _officer_preview(core, session, summons, prompt)]


async def _new_time(
    core: Core, session: AsyncSession, summons: Summons, prompt: ChatPrompt, value: str
) -> list[Reply]:
    if value.casefold() in SAME_WORDS:
        prompt.data = {**prompt.data, "starts_at": None}
    else:
        result = parse_moment_text(value, core.clock.now(), core.settings.tz)
        if not isinstance(result, Moment):
            return [
                _reply(core, "undangan_ubah_waktu_salah", error=result.name.lower(), text=value),
                _reply(core, "undangan_ubah_tanya", step="waktu", s=summons),
            ]
        changed = result.at != summons.starts_at
        prompt.data = {
            **prompt.data,
            "starts_at": result.at.isoformat() if changed else None,
            "mismatch": bool(result.weekday_mismatch),
            "named": result.named_weekday or "",
        }
    prompt.step = "tempat"
    return [_reply(core, "undangan_ubah_tanya", step="tempat", s=summons)]


def _new_starts_at(prompt: ChatPrompt) -> datetime | None:
    value = prompt.data.get("starts_at")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


async def _officer_preview(
    core: Core, session: AsyncSession, summons: Summons, prompt: ChatPrompt
) -> Reply:
    found = await reach(session, await _addressed_ids(session, summons.id))
    values: dict[str, Any] = {
        "s": summons,
        "orang": found.person_count,
        "koperasi": len(found.reachable),
    }
    if prompt.kind == CANCEL:
        return _reply(
            core,
            "undangan_batal_pratinjau",
            alasan=prompt.data.get("alasan", ""),
            buttons=[
                [
                    (_label(core, "batalkan_ya"), f"{RSVP_PREFIX}{summons.id}:batalkan_ya"),
                    (_label(core, "tidak"), f"{RSVP_PREFIX}{summons.id}:urung"),
                ]
            ],
            **values,
        )
    return _reply(
        core,
        "undangan_ubah_pratinjau",
        waktu=_new_starts_at(prompt),
        tempat=prompt.data.get("tempat"),
        mismatch=bool(prompt.data.get("mismatch")),
        named=prompt.data.get("named", ""),
        dijawab=len(await _rsvps(session, summons.id)),
        buttons=[
            [
                (core.messages.render("btn_kirim"), f"{RSVP_PREFIX}{summons.id}:kirim"),
                (core.messages.render("btn_batal"), f"{RSVP_PREFIX}{summons.id}:urung"),
            ]
        ],
        **values,
    )


async def _officer_prompt(
    core: Core, session: AsyncSession, actor: Actor, summons_id: int, kind: str, step: str
) -> ChatPrompt | None:
    assert actor.person_id is not None
    prompt = await _prompt(core, session, actor.person_id)
    if prompt is None or prompt.kind != kind or prompt.ref_id != summons_id or prompt.step != step:
        return None
    return prompt


async def _send_change(core: Core, actor: Actor, summons_id: int) -> list[Reply]:
    async with core.db.transaction() as session:
        prompt = await _officer_prompt(core, session, actor, summons_id, CHANGE, "pratinjau")
        if prompt is None:
            return _stale(core)
        now = core.clock.now()
        summons = await _summons(core, session, summons_id)
        problem = _closed_for_officer(actor, summons, now)
        assert summons is not None or problem is not None
        if problem is None and summons is not None and summons.version != prompt.data["version"]:
            problem = "changed"
        new_at = _new_starts_at(prompt)
        if problem is None and new_at is not None and new_at <= now:
            problem = "past"
        await session.delete(prompt)
        if problem is not None:
            return _refuse(core, problem)
        assert summons is not None
        old_at, old_place = summons.starts_at, summons.tempat
        new_place = prompt.data.get("tempat")
        summons.version += 1
        if new_at is not None:
            summons.time_version += 1
            summons.starts_at = new_at
        if isinstance(new_place, str):
            summons.tempat = new_place
        await session.flush()
        # Letters, notices and reminders still waiting carry the old facts; the change notice
        # is complete on its own.
        await cancel_topic(session, topic(summons.id))
        queued = await _notify(
            core,
            session,
            summons,
            CHANGE_NOTICE,
            f"v{summons.version}",
            lambda p, rsvp, kelurahan: _change_notice(
                core,
                summons,
                p,
                rsvp,
                kelurahan,
                old_at if new_at is not None else None,
                old_place if isinstance(new_place, str) else None,
            ),
            now,
        )
        audit.record(
            session,
            at=now,
            action="summons.changed",
            actor_label=actor.label,
            actor_person_id=actor.person_id,
            summons_id=summons.id,
            version=summons.version,
            starts_at=summons.starts_at.isoformat() if new_at is not None else None,
            previous_starts_at=old_at.isoformat() if new_at is not None else None,
            tempat=new_place,
            previous_tempat=old_place if isinstance(new_place, str) else None,
            messages=queued,
        )
        return [
            _reply(
                core,
                "undangan_ubah_terkirim",
                s=summons,
                pesan=queued,
                ulang=new_at is not None,
                replace=True,
            )
        ]


def _change_notice(
    core: Core,
    summons: Summons,
    person: Recipient,
    rsvp: Rsvp | None,
    kelurahan: str,
    old_at: datetime | None,
    old_place: str | None,
) -> tuple[str, Buttons | None]:
    text = core.messages.render(
        "undangan_perubahan",
        s=summons,
        nama=person.nama,
        kelurahan=kelurahan,
        lama_waktu=old_at,
        lama_tempat=old_place,
        jawaban=_answer_label(core, rsvp),
    )
    # Asked again when the time moved; those who never answered get the buttons too, since
    # their letter may have been one of the rows this change cancelled.
    ask = old_at is not None or rsvp is None
    return text, rsvp_buttons(core, summons.id) if ask else None


async def _notify(
    core: Core,
    session: AsyncSession,
    summons: Summons,
    kind: str,
    key: str,
    render: Callable[[Recipient, Rsvp | None, str], tuple[str, Buttons | None]],
    now: datetime,
) -> int:
    """Queue one message per reachable chat of every board member of an addressed
    cooperative; dedupe "summons:<id>:<key>:p<person>:i<identity>"."""
    found: Reach = await reach(session, await _addressed_ids(session, summons.id))
    rsvps = await _rsvps(session, summons.id)
    kelurahan = {k[0]: k[1] for k in found.koperasi}
    values = template_params(core, summons)
    items = []
    for people in found.people.values():
        for p in people:
            text, buttons = render(p, rsvps.get(p.person_id), kelurahan[p.koperasi_id])
            items.append(
                Outgoing(
                    dedupe_key=f"summons:{summons.id}:{key}:p{p.person_id}:i{p.identity_id}",
                    kind=kind,
                    chat_identity_id=p.identity_id,
                    person_id=p.person_id,
                    text=text,
                    buttons=buttons,
                    topic=topic(summons.id),
                    priority=PRIORITY,
                    params={"nama": p.nama, **values},
                )
            )
    return await enqueue(session, items, now)


async def _confirm_cancel(core: Core, actor: Actor, summons_id: int) -> list[Reply]:
    async with core.db.transaction() as session:
        prompt = await _officer_prompt(core, session, actor, summons_id, CANCEL, "konfirmasi")
        if prompt is None:
            return _stale(core)
        now = core.clock.now()
        summons = await _summons(core, session, summons_id)
        problem = _closed_for_officer(actor, summons, now)
        await session.delete(prompt)
        if problem is not None:
            return _refuse(core, problem)
        assert summons is not None
        summons.cancelled_at = now
        summons.cancel_reason = str(prompt.data.get("alasan", ""))
        await session.flush()
        stopped = await cancel_topic(session, topic(summons.id))
        # Board members halfway through an answer: the question no longer stands.
        await session.execute(
            delete(ChatPrompt)
            .where(ChatPrompt.kind.in_(RSVP_PROMPTS), ChatPrompt.ref_id == summons.id)
            .execution_options(synchronize_session=False)
        )
        queued = await _notify(
            core,
            session,
            summons,
            CANCEL_NOTICE,
            "batal",
            lambda p, _rsvp, kelurahan: (
                core.messages.render(
                    "undangan_pembatalan", s=summons, nama=p.nama, kelurahan=kelurahan
                ),
                None,
            ),
            now,
        )
        audit.record(
            session,
            at=now,
            action="summons.cancelled",
            actor_label=actor.label,
            actor_person_id=actor.person_id,
            summons_id=summons.id,
            reason=summons.cancel_reason,
            messages=queued,
            stopped=stopped,
        )
        return [
            _reply(
                core,
                "undangan_batal_terkirim",
                s=summons,
                pesan=queued,
                dihentikan=stopped,
                replace=True,
            )
        ]


async def _abort(core: Core, actor: Actor, summons_id: int) -> list[Reply]:
    """The Batal / Tidak button under a change's or a cancellation's preview."""
    assert actor.person_id is not None
    async with core.db.transaction() as session:
        prompt = await _prompt(core, session, actor.person_id)
        if (
            prompt is None
            or prompt.kind not in OFFICER_PROMPTS
            or prompt.ref_id != summons_id
            or prompt.step == ANSWERED
        ):
            return _stale(core)
        return [await _drop(core, session, prompt, replace=True)]


# Reminders -------------------------------------------------------------------------------------


def reminder_times(settings: Settings, starts_at: datetime) -> tuple[datetime, datetime]:
    """When the H-1 (09.00 the day before) and H-0 (two hours before) reminders go out,
    moved into the sending window."""
    window = sending_window(settings)
    local = starts_at.astimezone(settings.tz)
    h1 = datetime.combine(local.date() - timedelta(days=1), H1_AT, tzinfo=settings.tz)
    return window.next_open(h1), window.next_open(starts_at - H0_BEFORE)


def due_reminder(settings: Settings, summons: Summons, at: datetime) -> str | None:
    """H1, H0 or None: which reminder is meaningful at `at`.

    H-1 runs from its time until the H-0 time (or the start); H-0 until the start. A reminder
    whose time came before the summons was sent is skipped: the letter itself just arrived.
    """
    if summons.cancelled_at is not None or at >= summons.starts_at:
        return None
    h1, h0 = reminder_times(settings, summons.starts_at)
    if h0 <= at and summons.created_at < h0:
        return H0
    if h1 <= at < min(h0, summons.starts_at) and summons.created_at < h1:
        return H1
    return None


async def next_reminder_at(core: Core, at: datetime) -> datetime | None:
    """The earliest reminder time after `at` of a summons not cancelled (for the scheduler)."""
    async with core.db.sessions() as session:
        starts = await session.scalars(
            select(Summons.starts_at).where(Summons.cancelled_at.is_(None), Summons.starts_at > at)
        )
        times = [
            t
            for starts_at in starts.all()
            for t in reminder_times(core.settings, starts_at)
            if at < t < starts_at
        ]
    return min(times, default=None)


async def remind(core: Core, at: datetime | None = None) -> int:
    """Queue the H-1 and H-0 reminders due at `at`; returns how many messages were queued.

    H-1 goes to everyone addressed who has not answered (for the current time) and to those
    coming: Hadir, and Diwakilkan (the one who answered is reminded, naming the delegate, to
    pass the invitation on; the delegate has no chat with us). H-0 goes to those who answered
    Hadir. Each is decided once per person through the ledger, in the transaction that queues
    it, so running this twice, or in two processes, queues nothing the second time.
    """
    at = at or core.clock.now()
    if not sending_window(core.settings).contains(at):
        return 0
    async with core.db.sessions() as session:
        ids = await session.scalars(
            select(Summons.id)
            .where(
                Summons.cancelled_at.is_(None),
                Summons.starts_at > at,
                Summons.starts_at <= at + REMIND_HORIZON,
            )
            .order_by(Summons.id)
        )
        candidates = list(ids.all())
    queued = 0
    for summons_id in candidates:
        queued += await _remind_summons(core, summons_id, at)
    return queued


async def _remind_summons(core: Core, summons_id: int, at: datetime) -> int:
    async with core.db.transaction() as session:
        summons = await session.get(Summons, summons_id)
        if summons is None:
            return 0
        kind = due_reminder(core.settings, summons, at)
        if kind is None:
            return 0
        found = await reach(session, await _addressed_ids(session, summons.id))
        rsvps = await _rsvps(session, summons.id)
        chosen: dict[int, list[Recipient]] = defaultdict(list)
        current: dict[int, Rsvp | None] = {}
        for people in found.people.values():
            for p in people:
                rsvp = rsvps.get(p.person_id)
                if rsvp is not None and rsvp.time_version != summons.time_version:
                    rsvp = None  # asked to confirm the new time: as good as no answer
                wanted = (
                    rsvp is None or rsvp.answer in _GOING
                    if kind == H1
                    else rsvp is not None and rsvp.answer is RsvpAnswer.HADIR
                )
                if wanted:
                    chosen[p.person_id].append(p)
                    current[p.person_id] = rsvp
        if not chosen:
            return 0
        targets = {
            ledger_target(person_id, summons.time_version): person_id for person_id in chosen
        }
        new = await insert_returning_new(
            session,
            LedgerEntry,
            [
                {
                    "kind": kind,
                    "period": ledger_period(summons.id),
                    "target": target,
                    "koperasi_id": chosen[person_id][0].koperasi_id,
                    "recipients": len(chosen[person_id]),
                    "decided_at": at,
                }
                for target, person_id in targets.items()
            ],
            ["kind", "period", "target"],
            LedgerEntry.target,
        )
        m = core.messages
        values = template_params(core, summons)
        items = []
        for target in sorted(new):
            person_id = targets[target]
            rsvp = current[person_id]
            earlier = rsvps.get(person_id) if rsvp is None else None
            text = m.render(
                "undangan_pengingat",
                kind="h1" if kind == H1 else "h0",
                salam=m.salam(at),
                nama=chosen[person_id][0].nama,
                s=summons,
                answer=rsvp.answer.value if rsvp else None,
                wakil=rsvp.delegate_nama if rsvp else None,
                jabatan=rsvp.delegate_jabatan if rsvp else None,
                ulang=_answer_label(core, earlier),
            )
            for p in chosen[person_id]:
                items.append(
                    Outgoing(
                        dedupe_key=(
                            f"{kind}:{summons.id}:t{summons.time_version}"
                            f":p{p.person_id}:i{p.identity_id}"
                        ),
                        kind=kind,
                        chat_identity_id=p.identity_id,
                        person_id=p.person_id,
                        text=text,
                        buttons=rsvp_buttons(core, summons.id) if kind == H1 else None,
                        topic=topic(summons.id),
                        priority=PRIORITY,
                        params={"nama": p.nama, **values},
                    )
                )
        return await enqueue(session, items, at)
