"""/tangani: an officer marks a cooperative's obstacle as being handled, with a note the board
sees the next time they report. Button actions: "kop:<id>" and "k:<koperasi id>:<code>"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot import audit
from bot.core import Core
from bot.identity import Actor
from bot.laporan import KENDALA, MONTHLY_REPORT
from bot.periods import Period
from bot.registry import find_koperasi
from bot.replies import Reply, action_id
from bot.reports import option_label
from storage.models import (
    ChatPrompt,
    Kelurahan,
    Koperasi,
    ObstacleAction,
    Report,
    ReportRevision,
)

PROMPT = "tangani"
PREFIX = "t:"
NOTE_MIN, NOTE_MAX = 3, 500
# An answered prompt stays as this step, holding the note's message id in its data, so the same
# message delivered again is met with silence; the next newer message removes it.
ANSWERED = "tercatat"


@dataclass(frozen=True)
class Note:
    kendala: str
    label: str
    catatan: str
    oleh: str
    pada: datetime


class TindakService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.m = core.messages

    async def start(self, actor: Actor, text: str) -> list[Reply]:
        if actor.officer is None:
            return [self._reply("tangani_tidak_boleh")]
        query = text.strip()
        if not query:
            return [self._reply("tangani_contoh")]
        async with self.core.db.sessions() as session:
            found = [
                c
                for c in await find_koperasi(session, query)
                if actor.officer.kecamatan is None or c.kecamatan == actor.officer.kecamatan
            ]
            if not found:
                return [self._reply("tangani_tidak_ada", nama=query)]
            if len(found) > 1:
                buttons = [[(c.label, f"{PREFIX}kop:{c.id}")] for c in found[:10]]
                return [self._reply("tangani_pilih_koperasi", nama=query, buttons=buttons)]
            return [await self._obstacles(session, actor, found[0].id)]

    async def on_action(self, actor: Actor, data: str) -> list[Reply]:
        parts = data.removeprefix(PREFIX).split(":")
        if actor.officer is None:
            return [self._reply("tangani_tidak_boleh", alert=True)]
        async with self.core.db.transaction() as session:
            chosen = action_id(parts[1]) if len(parts) > 1 else None
            if len(parts) == 2 and parts[0] == "kop" and chosen is not None:
                if not await self._in_scope(session, actor, chosen):
                    return [self._reply("stale_button", alert=True)]
                return [await self._obstacles(session, actor, chosen)]
            if len(parts) == 3 and parts[0] == "k" and chosen is not None and parts[2] in KENDALA:
                koperasi_id, code = chosen, parts[2]
                if not await self._in_scope(session, actor, koperasi_id):
                    return [self._reply("stale_button", alert=True)]
                assert actor.person_id is not None
                await self._set_prompt(session, actor.person_id, koperasi_id, code)
                nama = await self._nama(session, koperasi_id)
                return [self._reply("tangani_tanya", koperasi=nama, kendala=self._label(code))]
        return [self._reply("stale_button", alert=True)]

    async def on_text(
        self, actor: Actor, text: str, message_id: int | None = None
    ) -> list[Reply] | None:
        """The note typed after choosing an obstacle; None when no such question waits.
        `message_id` makes a message delivered twice harmless: the second gets no reply."""
        if actor.person_id is None or actor.officer is None:
            return None
        async with self.core.db.transaction() as session:
            prompt = await self._prompt(session, actor.person_id)
            if prompt is None or prompt.ref_id is None:
                return None
            if message_id is not None:
                last = prompt.data.get("message_id")
                if isinstance(last, int) and message_id <= last:
                    return []
                prompt.data = {**prompt.data, "message_id": message_id}
            if prompt.step == ANSWERED:  # a new message, not a note: let the next reader have it
                await session.delete(prompt)
                return None
            code = str(prompt.data.get("kendala", ""))
            note = " ".join(text.split())
            if not NOTE_MIN <= len(note) <= NOTE_MAX:
                return [
                    self._reply("tangani_catatan_salah", minimum=NOTE_MIN, maximum=NOTE_MAX),
                    self._reply(
                        "tangani_tanya",
                        koperasi=await self._nama(session, prompt.ref_id),
                        kendala=self._label(code),
                    ),
                ]
            if not await self._in_scope(session, actor, prompt.ref_id) or code not in KENDALA:
                prompt.step = ANSWERED
                return [self._reply("stale_button")]
            now = self.core.clock.now()
            session.add(
                ObstacleAction(
                    koperasi_id=prompt.ref_id,
                    kendala=code,
                    catatan=note,
                    officer_person_id=actor.person_id,
                    officer_nama=actor.nama or "",
                    at=now,
                )
            )
            audit.record(
                session,
                at=now,
                action="obstacle.handled",
                actor_label=actor.label,
                actor_person_id=actor.person_id,
                koperasi_id=prompt.ref_id,
                kendala=code,
            )
            nama = await self._nama(session, prompt.ref_id)
            prompt.step = ANSWERED
            return [self._reply("tangani_tercatat", koperasi=nama, kendala=self._label(code))]

    async def cancel(self, actor: Actor) -> list[Reply] | None:
        if actor.person_id is None:
            return None
        async with self.core.db.transaction() as session:
            prompt = await self._prompt(session, actor.person_id)
            if prompt is None:
                return None
            await session.delete(prompt)
            if prompt.step == ANSWERED:  # nothing waits: /batal is for whatever else does
                return None
        return [self._reply("tangani_batal")]

    # Helpers ----------------------------------------------------------------------------------
    async def _obstacles(self, session: AsyncSession, actor: Actor, koperasi_id: int) -> Reply:
        row = (
            await session.execute(
                select(Report.period, ReportRevision.answers)
                .join(
                    ReportRevision,
                    (ReportRevision.report_id == Report.id)
                    & (ReportRevision.revision == Report.current_revision),
                )
                .where(Report.koperasi_id == koperasi_id)
                .order_by(Report.period.desc())
                .limit(1)
            )
        ).first()
        nama = await self._nama(session, koperasi_id)
        if row is None:
            return self._reply("tangani_tanpa_kendala", koperasi=nama, ada_laporan=False)
        codes = [c for c in row[1].get("kendala", []) if c in KENDALA and c != "NIHIL"]
        if not codes:
            return self._reply("tangani_tanpa_kendala", koperasi=nama, ada_laporan=True)
        buttons = [[(self._label(c), f"{PREFIX}k:{koperasi_id}:{c}")] for c in codes]
        periode = Period.parse_key(row[0]).name(self.m.language)
        return self._reply("tangani_pilih_kendala", koperasi=nama, periode=periode, buttons=buttons)

    async def _in_scope(self, session: AsyncSession, actor: Actor, koperasi_id: int) -> bool:
        assert actor.officer is not None
        kecamatan_id = await session.scalar(
            select(Kelurahan.kecamatan_id)
            .join(Koperasi, Koperasi.kelurahan_id == Kelurahan.id)
            .where(Koperasi.id == koperasi_id)
        )
        if kecamatan_id is None:
            return False
        return actor.officer.kecamatan_id in (None, kecamatan_id)

    async def _nama(self, session: AsyncSession, koperasi_id: int) -> str:
        return str(await session.scalar(select(Koperasi.nama).where(Koperasi.id == koperasi_id)))

    async def _prompt(self, session: AsyncSession, person_id: int) -> ChatPrompt | None:
        query = select(ChatPrompt).where(
            ChatPrompt.person_id == person_id, ChatPrompt.kind == PROMPT
        )
        if self.core.db.dialect == "postgresql":
            # Two deliveries of one message handled at once: the second waits, then sees the
            # first one's message id. SQLite has a single writer already.
            query = query.with_for_update()
        return await session.scalar(query)

    async def _set_prompt(
        self, session: AsyncSession, person_id: int, koperasi_id: int, code: str
    ) -> None:
        # One waiting question per person: a new one replaces any other.
        existing = await session.scalar(select(ChatPrompt).where(ChatPrompt.person_id == person_id))
        if existing is not None:
            await session.delete(existing)
            await session.flush()
        session.add(
            ChatPrompt(
                person_id=person_id,
                kind=PROMPT,
                ref_id=koperasi_id,
                step="catatan",
                data={"kendala": code},
                created_at=self.core.clock.now(),
            )
        )

    def _label(self, code: str) -> str:
        return option_label(self.m, MONTHLY_REPORT.field("kendala"), code)

    def _reply(
        self, template: str, *, buttons: Any = None, alert: bool = False, **values: Any
    ) -> Reply:
        return Reply(self.m.render(template, **values), buttons or [], alert=alert)


async def notes_for(
    core: Core, session: AsyncSession | AsyncConnection, koperasi_id: int, codes: list[str]
) -> list[Note]:
    """The latest officer note for each of these obstacles of a cooperative."""
    if not codes:
        return []
    rows = await session.execute(
        select(
            ObstacleAction.kendala,
            ObstacleAction.catatan,
            ObstacleAction.officer_nama,
            ObstacleAction.at,
        )
        .where(ObstacleAction.koperasi_id == koperasi_id, ObstacleAction.kendala.in_(codes))
        .order_by(ObstacleAction.at.desc(), ObstacleAction.id.desc())
    )
    latest: dict[str, tuple[str, str, datetime]] = {}
    for kendala, catatan, officer_nama, at in rows:
        latest.setdefault(kendala, (catatan, officer_nama, at))
    field = MONTHLY_REPORT.field("kendala")
    return [
        Note(c, option_label(core.messages, field, c), *note)
        for c in codes
        if (note := latest.get(c)) is not None
    ]
