"""/panggil: an officer composes a summons step by step; every answer is saved as a draft row.

Steps: hal, waktu (read back for confirmation), tempat, acara, narahubung, sasaran (target),
then a preview with the letter, the reach and the unreachable cooperatives: Kirim, Ubah, Batal.
Button actions are "<draft id>:<verb>[:<argument>]"; the draft id makes old buttons harmless.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import summons as summons_service
from bot.core import Core
from bot.identity import Actor
from bot.periods import open_periods
from bot.registry import find_koperasi
from bot.replies import Buttons, Reply, action_id
from bot.summons import Spec, SummonsError, Target
from bot.tanggal import Moment, parse_moment_text
from storage.models import Kecamatan, SummonsDraft

TEXT_STEPS = ("hal", "waktu", "tempat", "acara", "narahubung")
# Kept in the draft's answers (like "_editing"): the last typed message handled, so a message
# Telegram delivers twice is answered once.
LAST_MESSAGE = "_message_id"
LIMITS = {"hal": 200, "tempat": 300, "acara": 1000, "narahubung": 200}
TARGET_KINDS = ("all", "kecamatan", "not_operating", "not_reported", "koperasi")
MAX_PICKED = 100


class PanggilService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.m = core.messages

    # Entry points ------------------------------------------------------------------------------
    async def start(self, actor: Actor) -> list[Reply]:
        refusal = self._refusal(actor)
        if refusal:
            return refusal
        assert actor.person_id is not None
        now = self.core.clock.now()
        try:
            async with self.core.db.transaction() as session:
                draft = await self._draft(session, actor)
                if draft is not None:
                    return [self._reply("panggil_lanjut"), *await self._ask(session, draft, actor)]
                draft = SummonsDraft(
                    person_id=actor.person_id,
                    answers={},
                    step="hal",
                    started_at=now,
                    updated_at=now,
                )
                session.add(draft)
                await session.flush()
                return [self._reply("panggil_mulai"), *await self._ask(session, draft, actor)]
        except IntegrityError:  # two /panggil at once: show the draft the other one made
            return await self.start(actor)

    async def on_text(
        self, actor: Actor, text: str, message_id: int | None = None
    ) -> list[Reply] | None:
        """A typed answer to the officer's draft; None when there is no draft waiting for text.
        `message_id` makes a message delivered twice harmless: the second gets no reply."""
        if actor.person_id is None or actor.officer is None:
            return None
        async with self.core.db.transaction() as session:
            draft = await self._draft(session, actor, lock=True)
            if draft is None:
                return None
            if message_id is not None:
                last = draft.answers.get(LAST_MESSAGE)
                if isinstance(last, int) and message_id <= last:
                    return []
                draft.answers = {**draft.answers, LAST_MESSAGE: message_id}
            if draft.step not in (*TEXT_STEPS, "pilih_koperasi"):
                return [
                    self._reply("panggil_pakai_tombol"),
                    *await self._ask(session, draft, actor),
                ]
            draft.updated_at = self.core.clock.now()
            if draft.step == "pilih_koperasi":
                return await self._picked_by_name(session, draft, actor, text)
            return await self._typed(session, draft, actor, text)

    async def on_action(self, actor: Actor, draft_id: int, action: str) -> list[Reply]:
        refusal = self._refusal(actor)
        if refusal:
            return refusal
        async with self.core.db.transaction() as session:
            draft = await self._draft(session, actor)
            if draft is None or draft.id != draft_id:
                return [self._reply("stale_button", alert=True)]
            draft.updated_at = self.core.clock.now()
            verb, _, argument = action.partition(":")
            return await self._action(session, draft, actor, verb, argument)

    async def cancel(self, actor: Actor) -> list[Reply] | None:
        """/batal: drop the draft; None when there is none (the caller tries the next thing)."""
        if actor.person_id is None:
            return None
        async with self.core.db.transaction() as session:
            draft = await self._draft(session, actor)
            if draft is None:
                return None
            await session.delete(draft)
        return [self._reply("panggil_batal")]

    # Steps ------------------------------------------------------------------------------------
    async def _typed(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, text: str
    ) -> list[Reply]:
        step = draft.step
        assert step is not None
        value = " ".join(text.split()) if step != "acara" else text.strip()
        if step == "waktu":
            return await self._time(session, draft, actor, value)
        if len(value) < 3 or len(value) > LIMITS[step]:
            return [
                self._reply("panggil_isian_salah", step=step, limit=LIMITS[step]),
                *await self._ask(session, draft, actor),
            ]
        draft.answers = {**draft.answers, step: value}
        return await self._advance(session, draft, actor)

    async def _time(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, text: str
    ) -> list[Reply]:
        now = self.core.clock.now()
        result = parse_moment_text(text, now, self.core.settings.tz)
        if not isinstance(result, Moment):
            return [
                self._reply("panggil_waktu_salah", error=result.name.lower(), text=text),
                *await self._ask(session, draft, actor),
            ]
        draft.pending = {"waktu": result.at.isoformat()}
        return [
            self._reply(
                "panggil_waktu_benar",
                at=result.at,
                mismatch=result.weekday_mismatch,
                named=result.named_weekday,
                buttons=[
                    [
                        (self.m.render("btn_ya_benar"), f"{draft.id}:waktu_ok"),
                        (self.m.render("btn_ubah"), f"{draft.id}:waktu_ulang"),
                    ]
                ],
            )
        ]

    async def _advance(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor
    ) -> list[Reply]:
        """Go to the next unanswered step, or back to the preview when editing one."""
        answers = draft.answers
        draft.pending = None
        if answers.get("_editing") or all(s in answers for s in (*TEXT_STEPS, "sasaran")):
            draft.answers = {k: v for k, v in answers.items() if k != "_editing"}
            draft.step = "pratinjau"
        else:
            draft.step = next(
                (s for s in (*TEXT_STEPS, "sasaran") if s not in answers), "pratinjau"
            )
        return await self._ask(session, draft, actor)

    async def _action(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, verb: str, argument: str
    ) -> list[Reply]:
        answers = dict(draft.answers)
        if verb == "waktu_ok" and draft.step == "waktu" and draft.pending:
            draft.answers = {**answers, "waktu": draft.pending["waktu"]}
            return await self._advance(session, draft, actor)
        if verb == "waktu_ulang" and draft.step == "waktu":
            draft.pending = None
            return await self._ask(session, draft, actor)
        if verb == "sasaran" and draft.step == "sasaran" and argument in TARGET_KINDS:
            return await self._target_kind(session, draft, actor, argument)
        picked = action_id(argument)
        if verb == "kec" and draft.step == "pilih_kecamatan" and picked is not None:
            chosen = set((draft.pending or {}).get("kecamatan_ids", []))
            chosen ^= {picked}
            draft.pending = {"kecamatan_ids": sorted(chosen)}
            return [await self._kecamatan_question(session, draft, actor, replace=True)]
        if verb == "kec_selesai" and draft.step == "pilih_kecamatan":
            chosen = (draft.pending or {}).get("kecamatan_ids", [])
            if not chosen:
                return [self._reply("panggil_pilih_minimal", alert=True)]
            return await self._set_target(
                session, draft, actor, Target("kecamatan", kecamatan_ids=chosen)
            )
        if verb == "periode" and draft.step == "pilih_periode":
            return await self._set_target(
                session, draft, actor, Target("not_reported", period=argument)
            )
        if verb == "kop" and draft.step == "pilih_koperasi" and picked is not None:
            return await self._add_koperasi(session, draft, actor, [picked])
        if verb == "kop_selesai" and draft.step == "pilih_koperasi":
            picked = (draft.pending or {}).get("koperasi_ids", [])
            if not picked:
                return [self._reply("panggil_pilih_minimal", alert=True)]
            return await self._set_target(
                session, draft, actor, Target("koperasi", koperasi_ids=picked)
            )
        if draft.step == "pratinjau":
            return await self._preview_action(session, draft, actor, verb, argument)
        return [self._reply("stale_button", alert=True)]

    async def _target_kind(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, kind: str
    ) -> list[Reply]:
        if kind == "kecamatan":
            draft.step = "pilih_kecamatan"
            draft.pending = {"kecamatan_ids": []}
            return [await self._kecamatan_question(session, draft, actor)]
        if kind == "not_reported":
            draft.step = "pilih_periode"
            return await self._ask(session, draft, actor)
        if kind == "koperasi":
            draft.step = "pilih_koperasi"
            draft.pending = {"koperasi_ids": []}
            return await self._ask(session, draft, actor)
        return await self._set_target(session, draft, actor, Target(kind))

    async def _set_target(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, target: Target
    ) -> list[Reply]:
        assert actor.officer is not None
        ids = await summons_service.resolve(session, actor.officer.kecamatan_id, target)
        if not ids:
            draft.step = "sasaran"
            draft.pending = None
            return [self._reply("panggil_sasaran_kosong"), *await self._ask(session, draft, actor)]
        found = await summons_service.reach(session, ids)
        if not found.reachable:
            draft.step = "sasaran"
            draft.pending = None
            return [
                self._reply("panggil_tidak_terjangkau", count=len(ids)),
                *await self._ask(session, draft, actor),
            ]
        draft.answers = {**draft.answers, "sasaran": target.as_json()}
        return await self._advance(session, draft, actor)

    async def _picked_by_name(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, text: str
    ) -> list[Reply]:
        assert actor.officer is not None
        scope = actor.officer.kecamatan
        picked: list[int] = []
        replies: list[Reply] = []
        for name in [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]:
            found = [
                c
                for c in await find_koperasi(session, name)
                if scope is None or c.kecamatan == scope
            ]
            if len(found) == 1:
                picked.append(found[0].id)
            elif not found:
                replies.append(self._reply("panggil_koperasi_tidak_ada", name=name))
            else:
                replies.append(
                    self._reply(
                        "panggil_koperasi_mana",
                        name=name,
                        buttons=[[(c.label, f"{draft.id}:kop:{c.id}")] for c in found[:10]],
                    )
                )
        if picked:
            return [*replies, *await self._add_koperasi(session, draft, actor, picked)]
        return replies or await self._ask(session, draft, actor)

    async def _add_koperasi(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, ids: list[int]
    ) -> list[Reply]:
        picked = list((draft.pending or {}).get("koperasi_ids", []))
        picked.extend(i for i in ids if i not in picked)
        draft.pending = {"koperasi_ids": picked[:MAX_PICKED]}
        return await self._ask(session, draft, actor)

    async def _preview_action(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, verb: str, argument: str
    ) -> list[Reply]:
        if verb == "batal":
            await session.delete(draft)
            return [self._reply("panggil_batal", replace=True)]
        if verb == "ubah":
            fields = [*TEXT_STEPS, "sasaran"]
            buttons = [
                [(self.m.render("panggil_nama_isian", step=s), f"{draft.id}:ubah_isian:{s}")]
                for s in fields
            ]
            return [self._reply("panggil_ubah_pilih", buttons=buttons)]
        if verb == "ubah_isian" and argument in (*TEXT_STEPS, "sasaran"):
            answers = {k: v for k, v in draft.answers.items() if k != argument}
            draft.answers = {**answers, "_editing": True}
            draft.step = argument
            draft.pending = None
            return await self._ask(session, draft, actor)
        if verb == "kirim":
            return await self._send(session, draft, actor)
        return [self._reply("stale_button", alert=True)]

    async def _send(self, session: AsyncSession, draft: SummonsDraft, actor: Actor) -> list[Reply]:
        spec = self._spec(draft)
        if spec.starts_at <= self.core.clock.now():
            draft.answers = {k: v for k, v in draft.answers.items() if k != "waktu"}
            draft.answers = {**draft.answers, "_editing": True}
            draft.step = "waktu"
            return [self._reply("panggil_waktu_lewat"), *await self._ask(session, draft, actor)]
        # The summons is written in its own transaction (with its outbox rows); the draft is
        # removed only after that committed.
        try:
            summons, found = await summons_service.send(self.core, actor, spec)
        except SummonsError as exc:
            draft.step = "sasaran" if exc.code == "empty" else draft.step
            return [self._reply("panggil_gagal", code=exc.code)]
        await session.delete(draft)
        return [
            self._reply(
                "panggil_terkirim",
                replace=True,
                s=summons,
                koperasi=len(found.reachable),
                orang=found.person_count,
                tak_terjangkau=len(found.unreachable),
            )
        ]

    # Questions --------------------------------------------------------------------------------
    async def _ask(self, session: AsyncSession, draft: SummonsDraft, actor: Actor) -> list[Reply]:
        step = draft.step
        if step in TEXT_STEPS:
            return [self._reply("panggil_tanya", step=step, now=self.core.clock.now())]
        if step == "sasaran":
            assert actor.officer is not None
            labels = [
                (
                    kind,
                    self.m.render(
                        "panggil_sasaran_label", kind=kind, scope=actor.officer.kecamatan
                    ),
                )
                for kind in TARGET_KINDS
            ]
            return [
                self._reply(
                    "panggil_tanya",
                    step="sasaran",
                    now=self.core.clock.now(),
                    buttons=[[(label, f"{draft.id}:sasaran:{kind}")] for kind, label in labels],
                )
            ]
        if step == "pilih_kecamatan":
            return [await self._kecamatan_question(session, draft, actor)]
        if step == "pilih_periode":
            periods = open_periods(
                self.core.clock.now(), self.core.settings.tz, self.core.settings.report_open_months
            )
            return [
                self._reply(
                    "panggil_pilih_periode",
                    buttons=[
                        [(p.name(self.m.language), f"{draft.id}:periode:{p.key}")] for p in periods
                    ],
                )
            ]
        if step == "pilih_koperasi":
            picked = (draft.pending or {}).get("koperasi_ids", [])
            names = await self._koperasi_labels(session, picked)
            buttons: Buttons = (
                [[(self.m.render("btn_selesai"), f"{draft.id}:kop_selesai")]] if picked else []
            )
            return [self._reply("panggil_pilih_koperasi", names=names, buttons=buttons)]
        return [await self._preview(session, draft, actor)]

    async def _kecamatan_question(
        self, session: AsyncSession, draft: SummonsDraft, actor: Actor, replace: bool = False
    ) -> Reply:
        assert actor.officer is not None
        query = select(Kecamatan.id, Kecamatan.nama).order_by(Kecamatan.nama)
        if actor.officer.kecamatan_id is not None:
            query = query.where(Kecamatan.id == actor.officer.kecamatan_id)
        chosen = set((draft.pending or {}).get("kecamatan_ids", []))
        rows = (await session.execute(query)).all()
        buttons: Buttons = [
            [(("✅ " if i in chosen else "") + nama, f"{draft.id}:kec:{i}")] for i, nama in rows
        ]
        buttons.append([(self.m.render("btn_selesai"), f"{draft.id}:kec_selesai")])
        reply = self._reply("panggil_pilih_kecamatan", buttons=buttons)
        reply.replace = replace
        return reply

    async def _koperasi_labels(self, session: AsyncSession, ids: list[int]) -> list[str]:
        if not ids:
            return []
        found = await summons_service.reach(session, ids)
        return [f"{kel} ({kec})" for _, kel, kec in found.koperasi]

    async def _preview(self, session: AsyncSession, draft: SummonsDraft, actor: Actor) -> Reply:
        assert actor.officer is not None
        spec = self._spec(draft)
        ids = await summons_service.resolve(session, actor.officer.kecamatan_id, spec.target)
        found = await summons_service.reach(session, ids)
        letter = summons_service.letter(
            self.core,
            summons_service.new_summons(self.core, actor, spec, self.core.clock.now()),
            None,
            rsvp=False,
        )
        target = spec.target
        period = summons_service.period_of(target.period)
        return self._reply(
            "panggil_pratinjau",
            # Already rendered (and escaped) by its own template.
            surat=Markup(letter),  # noqa: S704
            koperasi=len(found.reachable),
            orang=found.person_count,
            total=len(found.koperasi),
            tak_terjangkau=[f"{kel} ({kec})" for _, kel, kec in found.unreachable],
            sasaran=self.m.render(
                "panggil_sasaran_label",
                kind=target.kind,
                scope=actor.officer.kecamatan,
                detail=True,
                periode=period.name(self.m.language) if period else "",
                jumlah=len(target.kecamatan_ids or target.koperasi_ids),
            ),
            buttons=[
                [
                    (self.m.render("btn_kirim"), f"{draft.id}:kirim"),
                    (self.m.render("btn_ubah"), f"{draft.id}:ubah"),
                    (self.m.render("btn_batal"), f"{draft.id}:batal"),
                ]
            ],
        )

    # Helpers ----------------------------------------------------------------------------------
    def _spec(self, draft: SummonsDraft) -> Spec:
        a = draft.answers
        return Spec(
            hal=a["hal"],
            starts_at=datetime.fromisoformat(a["waktu"]),
            tempat=a["tempat"],
            acara=a["acara"],
            narahubung=a["narahubung"],
            target=Target.from_json(a["sasaran"]),
        )

    async def _draft(
        self, session: AsyncSession, actor: Actor, *, lock: bool = False
    ) -> SummonsDraft | None:
        query = select(SummonsDraft).where(
            SummonsDraft.person_id == actor.person_id, SummonsDraft.summons_id.is_(None)
        )
        if lock and self.core.db.dialect == "postgresql":
            # Two deliveries of one message handled at once: the second waits, then sees the
            # first one's message id. SQLite has a single writer already.
            query = query.with_for_update()
        return await session.scalar(query)

    def _refusal(self, actor: Actor) -> list[Reply] | None:
        if actor.officer is None or not actor.officer.can_broadcast:
            return [self._reply("panggil_tidak_boleh", officer=actor.officer is not None)]
        return None

    def _reply(
        self,
        template: str,
        *,
        buttons: Buttons | None = None,
        alert: bool = False,
        replace: bool = False,
        **values: Any,
    ) -> Reply:
        return Reply(self.m.render(template, **values), buttons or [], replace=replace, alert=alert)
