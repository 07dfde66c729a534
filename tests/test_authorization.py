"""Who may do what, whatever the chat sends: strangers reach no report or officer function, board
members touch only their own cooperative and their own drafts, officer buttons need an officer
(with the right to broadcast, in scope), and forged or garbled button data is refused.

Already covered elsewhere, and not repeated here: a board member sees only their own profile
(tests/handlers/test_profile.py), RSVP for a cooperative not addressed
(tests/handlers/test_rsvp.py::test_late_stray_and_forged_answers_are_refused), recap, chart and
export scope (tests/bot/test_rekap.py, tests/bot/test_export_xlsx.py), /tangani across kecamatan
(tests/handlers/test_report.py::test_an_officer_marks_an_obstacle_handled_and_the_board_sees_the_note)
and invites (tests/handlers/test_onboarding.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from bot import officers
from bot import summons as summons_service
from bot.core import Core
from bot.identity import identify
from handlers.local_api import LocalBotAPI, LocalChat, SentMessage
from storage.models import (
    AuditLog,
    BoardMember,
    ChatIdentity,
    ChatPrompt,
    Kecamatan,
    Kelurahan,
    Koperasi,
    ObstacleAction,
    OutboxMessage,
    Report,
    ReportDraft,
    Rsvp,
    Summons,
    SummonsDraft,
    SummonsKoperasi,
)
from tests.bot.test_reminders import CIPARE, SUKAWANA_CURUG, link, officer, wib
from tests.conftest import Chats
from tests.handlers.test_panggil import compose_until_target

KASEMEN = "36.73.02.1001"
STALE = "Tombol ini sudah tidak berlaku."


@dataclass
class Town:
    core: Core
    app: Any
    api: LocalBotAPI
    siti: LocalChat  # Sukawana (Curug), bendahara, in the middle of her report
    budi: LocalChat  # Sukawana (Curug), ketua
    ani: LocalChat  # Cipare (Serang), bendahara, in the middle of her report
    oki: LocalChat  # city-wide officer who may broadcast, composing a summons
    cici: LocalChat  # Curug officer who may broadcast
    tono: LocalChat  # city-wide officer, read only
    tamu: LocalChat  # never linked
    siti_draft: int
    ani_draft: int
    oki_draft: int
    summons_id: int  # oki's summons to Kecamatan Serang (Cipare, not Sukawana)
    koperasi: dict[str, int]  # Kemendagri code -> id
    kecamatan: dict[str, int]  # name -> id
    errors: list[str]


async def person_id(core: Core, chat: LocalChat) -> int:
    async with core.db.sessions() as session:
        found = (await identify(session, "telegram", str(chat.user.user_id))).person_id
    assert found is not None
    return found


@pytest.fixture
async def town(registry_loaded: Core, app: Any, api: LocalBotAPI, chats: Chats) -> Town:
    core = registry_loaded
    errors: list[str] = []

    async def spy(update: object, context: Any) -> None:
        errors.append(repr(context.error))

    app.add_error_handler(spy)
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")
    budi = await link(core, chats, SUKAWANA_CURUG, "Budi", role="ketua")
    ani = await link(core, chats, CIPARE, "Ani")
    for chat in (siti, ani):
        await chat.send("/lapor")
        await chat.press("Beroperasi rutin")
    oki = await officer(core, chats, "Oki", None)
    cici = await officer(core, chats, "Cici", "Curug")
    tono = await officer(core, chats, "Tono", None)
    for chat, kecamatan in ((oki, None), (cici, "Curug")):
        await officers.add_officer(
            core,
            telegram_id=str(chat.user.user_id),
            nama=chat.user.first_name,
            kecamatan=kecamatan,
            can_broadcast=True,
            actor="t",
        )
    async with core.db.sessions() as session:
        kecamatan_ids = dict((await session.execute(select(Kecamatan.nama, Kecamatan.id))).all())
        koperasi_ids = dict(
            (
                await session.execute(
                    select(Kelurahan.kode, Koperasi.id).join(
                        Koperasi, Koperasi.kelurahan_id == Kelurahan.id
                    )
                )
            ).all()
        )
        oki_actor = await identify(session, "telegram", str(oki.user.user_id))
    summons, _ = await summons_service.send(
        core,
        oki_actor,
        summons_service.Spec(
            hal="Rapat koordinasi",
            starts_at=wib(3),
            tempat="Aula Setda",
            acara="Evaluasi",
            narahubung="Budi",
            target=summons_service.Target(
                kind="kecamatan", kecamatan_ids=[kecamatan_ids["Serang"]]
            ),
        ),
    )
    await compose_until_target(oki)
    async with core.db.sessions() as session:
        drafts = dict((await session.execute(select(ReportDraft.person_id, ReportDraft.id))).all())
        oki_draft = await session.scalar(select(SummonsDraft.id))
    assert oki_draft is not None
    return Town(
        core,
        app,
        api,
        siti,
        budi,
        ani,
        oki,
        cici,
        tono,
        chats.user("Tamu", None),
        drafts[await person_id(core, siti)],
        drafts[await person_id(core, ani)],
        oki_draft,
        summons.id,
        koperasi_ids,
        kecamatan_ids,
        errors,
    )


async def snapshot(core: Core) -> dict[str, Any]:
    """Everything a forged request could change."""
    async with core.db.sessions() as session:

        async def rows(*columns: Any) -> list[tuple[Any, ...]]:
            return sorted(tuple(r) for r in (await session.execute(select(*columns))).all())

        async def count(model: Any) -> int:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)

        return {
            "drafts": await rows(
                ReportDraft.id,
                ReportDraft.person_id,
                ReportDraft.koperasi_id,
                ReportDraft.period,
                ReportDraft.answers,
                ReportDraft.current_field,
            ),
            "summons_drafts": await rows(
                SummonsDraft.id, SummonsDraft.person_id, SummonsDraft.step, SummonsDraft.answers
            ),
            "summons": await rows(
                Summons.id, Summons.version, Summons.starts_at, Summons.tempat, Summons.cancelled_at
            ),
            "addressed": await rows(SummonsKoperasi.summons_id, SummonsKoperasi.koperasi_id),
            "rsvp": await rows(Rsvp.summons_id, Rsvp.person_id, Rsvp.answer),
            "prompts": await rows(ChatPrompt.person_id, ChatPrompt.kind, ChatPrompt.ref_id),
            "members": await rows(BoardMember.person_id, BoardMember.koperasi_id),
            "identities": await count(ChatIdentity),
            "reports": await count(Report),
            "notes": await count(ObstacleAction),
            "outbox": await count(OutboxMessage),
            "audit": await count(AuditLog),
        }


async def press(chat: LocalChat, data: str) -> tuple[list[SentMessage], str]:
    """Send button data as if pressed (on the chat's last message) and return what the bot
    sent and the text of the pop-up it answered the button with."""
    target = chat.last_message() or SentMessage(chat.chat_id, 1, "lama")
    start = len(chat.api.calls)
    sent = await chat.process(chat.user.callback_update(target, data))
    answers = [c for c in chat.api.calls[start:] if c.method == "answerCallbackQuery"]
    assert len(answers) == 1, f"{data!r} was answered {len(answers)} times"
    return sent, str(answers[0].params.get("text", ""))


def joined(messages: list[SentMessage]) -> str:
    return "\n".join(m.text for m in messages)


async def test_a_stranger_reaches_no_report_or_officer_function(town: Town) -> None:
    before = await snapshot(town.core)
    tamu = town.tamu
    for command in (
        "/lapor",
        "/lapor Oktober 2026",
        "/batal",
        "/rekap",
        "/rekap 2026-10",
        "/ekspor",
        "/ekspor September 2026",
        "/koperasi",
        "/koperasi Sukawana",
        "/koperasi 36.73.01.1002",
        "/panggil",
        "/undangan",
        "/tangani Sukawana",
        "/jadwal",
        "/keluar",
    ):
        sent = await tamu.send(command)
        assert sent, command
        assert all(m.kind == "text" and not m.buttons for m in sent), command
        # Nothing about any cooperative, report or summons comes back.
        for secret in ("Sukawana", "Cipare", "Rp", "Rapat koordinasi", "melapor"):
            assert secret not in joined(sent), (command, secret)
    sukawana = town.koperasi[SUKAWANA_CURUG]
    for data in (
        f"r:{town.siti_draft}:o:status_operasional:belum",
        f"r:{town.siti_draft}:send",
        f"r:{town.siti_draft}:cancel",
        "lapor:2026-10",
        f"p:{town.oki_draft}:sasaran:all",
        f"p:{town.oki_draft}:kirim",
        f"u:{town.summons_id}:hadir",
        f"u:{town.summons_id}:diwakilkan",
        f"u:{town.summons_id}:lihat",
        f"u:{town.summons_id}:batalkan_ya",
        f"u:{town.summons_id}:ubah",
        "k:chart:kendala:2026-10",
        "k:chart:rate:2026-10",
        f"o:{sukawana}",
        f"t:kop:{sukawana}",
        f"t:k:{sukawana}:MODAL",
        "keluar:ya",
    ):
        sent, alert = await press(tamu, data)
        for secret in ("Sukawana", "Cipare", "Rp", "Rapat koordinasi"):
            assert secret not in joined(sent) + alert, (data, secret)
        assert not any(m.buttons for m in sent), data
    assert await snapshot(town.core) == before
    assert town.errors == []


async def test_a_board_member_cannot_use_someone_elses_draft_or_cooperative(town: Town) -> None:
    before = await snapshot(town.core)
    # Ani (Cipare) and Budi (Siti's own cooperative) press buttons naming Siti's draft.
    for chat in (town.ani, town.budi):
        for action in (
            "o:status_operasional:belum",
            "t:unit_usaha:gerai_sembako",
            "d:unit_usaha",
            "s:jumlah_anggota",
            "edit",
            "send",
            "cancel",
        ):
            sent, alert = await press(chat, f"r:{town.siti_draft}:{action}")
            assert sent == []
            assert alert == STALE, action
    # Siti answers a summons sent to Kecamatan Serang: no question is opened for her.
    for verb in ("diwakilkan", "berhalangan"):
        _, alert = await press(town.siti, f"u:{town.summons_id}:{verb}")
        assert "tidak ditujukan kepada koperasi" in alert
    assert await snapshot(town.core) == before

    # The reminder's button names only a month: it opens the presser's own cooperative's report.
    sent, _ = await press(town.budi, "lapor:2026-10")
    assert "Koperasi Kelurahan Merah Putih Sukawana" in joined(sent)
    for closed in ("lapor:2026-11", "lapor:2025-01"):
        sent, _ = await press(town.ani, closed)
        assert "tidak dapat diisi" in joined(sent) or "belum dibuka" in joined(sent), closed
    after = await snapshot(town.core)
    new = [d for d in after["drafts"] if d not in before["drafts"]]
    assert [(d[1], d[2]) for d in new] == [
        (await person_id(town.core, town.budi), town.koperasi[SUKAWANA_CURUG])
    ]
    assert town.errors == []


async def test_officer_buttons_need_an_officer_with_the_right(town: Town) -> None:
    before = await snapshot(town.core)
    sukawana = town.koperasi[SUKAWANA_CURUG]
    for data, refusal in (
        (f"p:{town.oki_draft}:sasaran:all", "hanya untuk petugas"),
        (f"p:{town.oki_draft}:kirim", "hanya untuk petugas"),
        (f"u:{town.summons_id}:lihat", "hanya untuk petugas"),
        (f"u:{town.summons_id}:ubah", "hanya untuk petugas"),
        (f"u:{town.summons_id}:batalkan", "hanya untuk petugas"),
        (f"u:{town.summons_id}:batalkan_ya", "hanya untuk petugas"),
        (f"t:kop:{sukawana}", "hanya untuk petugas"),
        (f"t:k:{sukawana}:MODAL", "hanya untuk petugas"),
    ):
        sent, alert = await press(town.siti, data)
        assert refusal in joined(sent) + alert, data
    assert "hanya untuk petugas" in joined(await town.siti.send("/tangani Sukawana"))
    # A read-only officer may look, not change or cancel, and another's draft is not theirs.
    for verb in ("ubah", "batalkan", "batalkan_ya", "kirim"):
        _, alert = await press(town.tono, f"u:{town.summons_id}:{verb}")
        assert "tidak berwenang" in alert or alert == STALE, verb
    for action in ("sasaran:all", "kirim", "batal"):
        sent, alert = await press(town.tono, f"p:{town.oki_draft}:{action}")
        assert "belum berhak mengirim undangan" in joined(sent) + alert, action
    # A broadcaster cannot drive another officer's draft either.
    for action in ("sasaran:all", "kirim", "batal"):
        _, alert = await press(town.cici, f"p:{town.oki_draft}:{action}")
        assert alert == STALE, action
    assert await snapshot(town.core) == before
    assert town.errors == []


async def test_a_kecamatan_officer_cannot_summon_or_note_outside_their_kecamatan(
    town: Town,
) -> None:
    cici = town.cici
    cipare = town.koperasi[CIPARE]
    # /tangani: Cipare is not found, and forged buttons naming it are stale.
    (refused,) = await cici.send("/tangani Cipare")
    assert 'Koperasi "Cipare" tidak ditemukan di wilayah Bapak/Ibu.' in refused.text
    assert not refused.buttons
    for data in (f"t:kop:{cipare}", f"t:k:{cipare}:MODAL"):
        sent, alert = await press(cici, data)
        assert (sent, alert) == ([], STALE), data
    # The city's summons: she may see it (limited to Curug), not change or cancel it.
    for verb in ("ubah", "batalkan", "batalkan_ya", "kirim"):
        _, alert = await press(cici, f"u:{town.summons_id}:{verb}")
        assert "tidak berwenang" in alert or alert == STALE, verb
    async with town.core.db.sessions() as session:
        summons = await session.get(Summons, town.summons_id)
        assert summons is not None
        assert (summons.cancelled_at, summons.version) == (None, 1)

    # /panggil: forged kecamatan and cooperative choices outside Curug reach nobody.
    await compose_until_target(cici)
    async with town.core.db.sessions() as session:
        draft = await session.scalar(
            select(SummonsDraft.id).where(
                SummonsDraft.person_id == await person_id(town.core, cici)
            )
        )
    await press(cici, f"p:{draft}:sasaran:kecamatan")
    await press(cici, f"p:{draft}:kec:{town.kecamatan['Serang']}")
    empty, _ = await press(cici, f"p:{draft}:kec_selesai")
    assert "Tidak ada koperasi yang cocok dengan pilihan tersebut" in joined(empty)
    await press(cici, f"p:{draft}:sasaran:koperasi")
    await press(cici, f"p:{draft}:kop:{cipare}")
    await press(cici, f"p:{draft}:kop:{town.koperasi[KASEMEN]}")
    empty, _ = await press(cici, f"p:{draft}:kop_selesai")
    assert "Tidak ada koperasi yang cocok dengan pilihan tersebut" in joined(empty)
    async with town.core.db.sessions() as session:
        step = await session.scalar(select(SummonsDraft.step).where(SummonsDraft.id == draft))
    assert step == "sasaran", "a target outside Curug was accepted"
    # Everything in scope: only Curug's cooperatives are addressed.
    await press(cici, f"p:{draft}:sasaran:all")
    await press(cici, f"p:{draft}:kirim")
    async with town.core.db.sessions() as session:
        reached = (
            await session.scalars(
                select(Kecamatan.nama)
                .join(Kelurahan, Kelurahan.kecamatan_id == Kecamatan.id)
                .join(Koperasi, Koperasi.kelurahan_id == Kelurahan.id)
                .join(SummonsKoperasi, SummonsKoperasi.koperasi_id == Koperasi.id)
                .where(SummonsKoperasi.summons_id != town.summons_id)
                .distinct()
            )
        ).all()
    assert list(reached) == ["Curug"]
    assert town.errors == []


@pytest.mark.parametrize(
    "data",
    [
        "r:²:send",
        "r:99999999999999999999:send",
        "r:-1:send",
        "p:²:kirim",
        "p:99999999999:kirim",
        "u:²:hadir",
        "u:99999999999:hadir",
        "u::hadir",
        "o:²",
        "o:99999999999999",
        "o:-1",
        "t:kop:²",
        "t:kop:99999999999",
        "t:k:99999999999:MODAL",
        "t:k:1:'; DROP TABLE koperasi; --",
        "k:chart:kendala:²⁰²⁶-10",
        "lapor:9999-99",
        "keluar:mungkin",
        "{{ 7*7 }}",
    ],
)
async def test_garbled_or_forged_button_data_is_refused(town: Town, data: str) -> None:
    """Found by tests/test_fuzz.py: "²".isdigit() is true, and PostgreSQL refuses ids beyond
    32 bits; both used to crash the handler instead of answering "tombol tidak berlaku"."""
    before = await snapshot(town.core)
    for chat in (town.siti, town.oki, town.cici, town.tamu):
        sent, alert = await press(chat, data)
        assert sent == [] or not any(m.buttons for m in sent), (data, joined(sent))
        assert alert or sent, data
    assert await snapshot(town.core) == before
    assert town.errors == []


async def test_leaving_closes_what_was_open_for_the_cooperative(town: Town) -> None:
    """Found by tests/test_fuzz.py: a draft and a delegate question outlived /keluar (and the
    draft's expiry notice would have reached someone who had left)."""
    ani = town.ani
    await press(ani, f"u:{town.summons_id}:diwakilkan")
    await ani.send("/keluar")
    await ani.press("Ya, putuskan")
    async with town.core.db.sessions() as session:
        mine = await person_id(town.core, ani)
        assert (
            await session.scalar(select(ReportDraft).where(ReportDraft.person_id == mine)) is None
        )
        assert await session.scalar(select(ChatPrompt).where(ChatPrompt.person_id == mine)) is None
    # What she types now is not taken as a delegate's name or a report answer.
    (stray,) = await ani.send("Pak Wakil")
    assert "kode undangan" in stray.text
    _, alert = await press(ani, f"r:{town.ani_draft}:o:status_operasional:belum")
    assert alert == STALE
    assert town.errors == []
