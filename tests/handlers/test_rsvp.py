"""Summons after sending, played through process_update: board members answer (and change
their answer), the officer sees who comes, changes the time, cancels; reminders H-1 and H-0."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select, update
from telegram.ext import CallbackQueryHandler

import handlers.router as text_router
from bot import officers, onboarding, rsvp
from bot import summons as summons_service
from bot.app import send_due_with
from bot.clock import FixedClock
from bot.core import Core
from bot.identity import Actor, identify
from handlers.local_api import LocalBotAPI, LocalChat, SentMessage
from storage.models import (
    AuditLog,
    ChatIdentity,
    ChatPrompt,
    Kecamatan,
    LedgerEntry,
    OutboxMessage,
    OutboxStatus,
    Person,
    Rsvp,
    RsvpAnswer,
    Summons,
)
from tests.conftest import WIB, Chats

SUKAWANA_CURUG = "36.73.04.1007"
CIPARE = "36.73.01.1002"
KOTA_BARU = "36.73.01.1004"
UNYUR = "36.73.01.1007"
LONTARBARU = "36.73.01.1009"
KASEMEN = "36.73.02.1001"  # not addressed
HAL = "Rapat koordinasi pengurus KMP"
MEETING = datetime(2026, 12, 3, 9, 0, tzinfo=WIB)  # Kamis
RSVP_LABELS = ["Hadir", "Diwakilkan", "Berhalangan"]


def wib(day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=WIB)


def wire(app: Any) -> None:
    """The real wiring: bot/app.py registers the "u:" buttons before the fallback's catch-all,
    and the text router asks our questions first."""
    group = app.handlers[0]
    assert any(
        isinstance(h, CallbackQueryHandler) and getattr(h.pattern, "pattern", None) == r"^u:"
        for h in group
    )
    assert hasattr(text_router, "undangan")


async def link(core: Core, chats: Chats, kode: str, name: str, role: str) -> LocalChat:
    invite = await onboarding.create_invite(core, koperasi_kode=kode, role=role, created_by="t")
    chat = chats.user(name, None)
    await chat.send(f"/start {invite.code}")
    return chat


async def officer(
    core: Core, chats: Chats, name: str, kecamatan: str | None, can_broadcast: bool
) -> LocalChat:
    chat = chats.user(name, None)
    await officers.add_officer(
        core,
        telegram_id=str(chat.user.user_id),
        nama=name,
        kecamatan=kecamatan,
        can_broadcast=can_broadcast,
        actor="t",
    )
    await chat.send("/start")
    return chat


async def actor(core: Core, chat: LocalChat) -> Actor:
    async with core.db.sessions() as session:
        return await identify(session, "telegram", str(chat.user.user_id))


async def person_id(core: Core, chat: LocalChat) -> int:
    found = (await actor(core, chat)).person_id
    assert found is not None
    return found


async def alert(chat: LocalChat, data: str, message: SentMessage | None = None) -> str:
    """Press a button with this callback data (forged when it is not on the message) and
    return the pop-up the bot answered with."""
    target = message or chat.last_message()
    assert target is not None
    start = len(chat.api.calls)
    await chat.process(chat.user.callback_update(target, data))
    answers = [c for c in chat.api.calls[start:] if c.method == "answerCallbackQuery"]
    assert answers, "the button was not answered"
    return str(answers[-1].params.get("text", ""))


async def press_alert(chat: LocalChat, label: str, message: SentMessage) -> str:
    return await alert(chat, message.button(label)["callback_data"], message)


@dataclass
class Scene:
    core: Core
    app: Any
    api: LocalBotAPI
    clock: FixedClock
    summons_id: int
    oki: LocalChat  # city-wide officer who may broadcast
    siti: LocalChat  # Sukawana (Curug), bendahara
    budi: LocalChat  # Sukawana (Curug), ketua
    ani: LocalChat  # Cipare (Serang), bendahara
    eko: LocalChat  # Kota Baru (Serang), sekretaris: never answers
    dedi: LocalChat  # Unyur (Serang): blocked the bot before the letter went out
    gita: LocalChat  # Lontarbaru (Serang): her letter could not be delivered
    asing: LocalChat  # Kasemen: not addressed

    async def deliver(self) -> None:
        await send_due_with(self.core, self.app.bot)

    def letter(self, chat: LocalChat) -> SentMessage:
        found = chat.last_with_buttons()
        assert found is not None
        return found

    async def view(self, chat: LocalChat | None = None) -> SentMessage:
        """/undangan, then the summons' detail."""
        chat = chat or self.oki
        (listing,) = await chat.send("/undangan")
        (view,) = await chat.press(0, listing)
        return view

    async def outbox(self) -> list[tuple[str, str, str, Any]]:
        async with self.core.db.sessions() as session:
            rows = await session.execute(
                select(Person.nama, OutboxMessage.kind, OutboxMessage.status, OutboxMessage)
                .join(Person, Person.id == OutboxMessage.person_id)
                .order_by(OutboxMessage.id)
            )
            return [(n, k, str(s), m) for n, k, s, m in rows.all()]


@pytest.fixture
async def scene(
    registry_loaded: Core, app: Any, api: LocalBotAPI, chats: Chats, clock: FixedClock
) -> Scene:
    core = registry_loaded
    core.settings = core.settings.model_copy(
        update={"outbox_rate_per_second": 1000.0, "outbox_per_chat_interval_seconds": 0.0}
    )
    wire(app)
    oki = await officer(core, chats, "Oki", None, can_broadcast=True)
    people = {
        "siti": await link(core, chats, SUKAWANA_CURUG, "Siti", "bendahara"),
        "budi": await link(core, chats, SUKAWANA_CURUG, "Budi", "ketua"),
        "ani": await link(core, chats, CIPARE, "Ani", "bendahara"),
        "eko": await link(core, chats, KOTA_BARU, "Eko", "sekretaris"),
        "dedi": await link(core, chats, UNYUR, "Dedi", "bendahara"),
        "gita": await link(core, chats, LONTARBARU, "Gita", "bendahara"),
        "asing": await link(core, chats, KASEMEN, "Asing", "bendahara"),
    }
    dedi = await person_id(core, people["dedi"])
    async with core.db.transaction() as session:
        await session.execute(
            update(ChatIdentity)
            .where(ChatIdentity.person_id == dedi)
            .values(unreachable_at=clock.now(), unreachable_reason="Forbidden: bot was blocked")
        )
        kecamatan = {
            k.nama: k.id
            for k in (await session.scalars(select(Kecamatan))).all()
            if k.nama in ("Curug", "Serang")
        }
    summons, _ = await summons_service.send(
        core,
        await actor(core, oki),
        summons_service.Spec(
            hal=HAL,
            starts_at=MEETING,
            tempat="Aula Setda Kota Serang",
            acara="Evaluasi kegiatan usaha dan kendala KMP",
            narahubung="Budi Santoso (0812-3456-7890)",
            target=summons_service.Target(
                kind="kecamatan", kecamatan_ids=[kecamatan["Curug"], kecamatan["Serang"]]
            ),
        ),
    )
    found = Scene(core, app, api, clock, summons.id, oki, **people)
    await found.deliver()
    gita = await person_id(core, people["gita"])
    async with core.db.transaction() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.person_id == gita)
            .values(status=OutboxStatus.FAILED, last_error="Bad Request: message is too long")
        )
    return found


async def test_board_members_answer_and_the_officer_sees_who_comes(scene: Scene) -> None:
    siti, budi, ani = scene.siti, scene.budi, scene.ani
    letter = scene.letter(siti)
    assert f"Hal: <b>Undangan — {HAL}</b>" in letter.text
    assert letter.button_labels == RSVP_LABELS
    assert scene.letter(scene.eko).button_labels == RSVP_LABELS
    assert scene.dedi.last_with_buttons() is None  # blocked: nothing was queued for him

    (thanks,) = await siti.press("Hadir", letter)
    assert (
        f"Terima kasih, Bapak/Ibu Siti. Kehadiran Anda pada <b>{HAL}</b>, Kamis, 3 Desember "
        "2026 pukul 09.00 WIB sudah kami catat." in thanks.text
    )
    # The letter keeps its buttons: the answer can be changed.
    assert scene.letter(siti).message_id == letter.message_id
    assert scene.letter(siti).button_labels == RSVP_LABELS

    # Diwakilkan: the delegate's name, then the position; bad input is refused politely.
    # (The actor says whether a question waits, so the text router can skip the check.)
    assert not (await actor(scene.core, budi)).prompt_waiting
    (ask,) = await budi.press("Diwakilkan")
    assert (await actor(scene.core, budi)).prompt_waiting
    assert "<b>nama lengkap</b> wakil" in ask.text
    assert "Contoh: <i>Ahmad Fauzi</i>" in ask.text
    too_long, again = await budi.send("Ahmad " * 40)
    assert "terlalu panjang (239 huruf)" in too_long.text
    assert "paling banyak 200 huruf" in too_long.text
    assert "Contoh: <i>Ahmad Fauzi</i>" in again.text
    empty, again = await budi.send("   ")
    assert "jawaban masih kosong" in empty.text
    assert "<b>nama lengkap</b>" in again.text
    (ask,) = await budi.send("Ahmad  Fauzi")
    assert "Apa <b>jabatan</b> Ahmad Fauzi?" in ask.text
    (done,) = await budi.send("Sekretaris")
    assert "Kami catat Anda diwakili oleh <b>Ahmad Fauzi</b> (Sekretaris)" in done.text

    # Ani says Hadir, then changes to Berhalangan with a reason: the latest answer counts.
    await ani.press("Hadir")
    (ask,) = await ani.press("Berhalangan")
    assert "<b>alasan</b>" in ask.text
    (done,) = await ani.send("Sakit <b>demam</b>")
    assert "dengan alasan: Sakit &lt;b&gt;demam&lt;/b&gt;." in done.text
    assert "Jawaban sebelumnya (Hadir) sudah kami ganti." in done.text

    # Siti starts to change her answer, then /batal: her Hadir stays.
    await siti.press("Berhalangan", letter)
    (kept,) = await siti.send("/batal")
    assert "Jawaban Anda sebelumnya tetap tercatat: <b>Hadir</b>." in kept.text
    (nothing,) = await siti.send("/batal")  # nothing of ours waits: the report's answer
    assert "Tidak ada draf laporan" in nothing.text

    async with scene.core.db.sessions() as session:
        answers = {
            r.person_id: r
            for r in (
                await session.scalars(select(Rsvp).where(Rsvp.summons_id == scene.summons_id))
            )
        }
        history = (
            await session.scalars(
                select(AuditLog.detail)
                .where(AuditLog.action == "summons.rsvp")
                .order_by(AuditLog.id)
            )
        ).all()
        prompts = (await session.scalars(select(ChatPrompt))).all()
    assert Counter(r.answer for r in answers.values()) == {
        RsvpAnswer.HADIR: 1,
        RsvpAnswer.DIWAKILKAN: 1,
        RsvpAnswer.BERHALANGAN: 1,
    }
    assert answers[await person_id(scene.core, ani)].alasan == "Sakit <b>demam</b>"
    assert [(d["answer"], d["previous"]) for d in history] == [
        ("hadir", None),
        ("diwakilkan", None),
        ("hadir", None),
        ("berhalangan", "Hadir"),
    ]
    # No question is open: Budi's and Ani's prompts stay only as answered markers.
    assert sorted((p.kind, p.step) for p in prompts) == [
        (rsvp.DELEGATE, rsvp.ANSWERED),
        (rsvp.REASON, rsvp.ANSWERED),
    ]

    # The officer's view.
    (listing,) = await scene.oki.send("/undangan")
    assert "Terwakili: <b>1</b> dari 22 koperasi" in listing.text
    assert listing.button_labels == [f"03/12/2026 · {HAL} (1/22)"]
    (view,) = await scene.oki.press(0, listing)
    text = view.text
    assert "<b>Rekap 22 koperasi</b>" in text
    assert "✅ Terwakili: <b>1</b>" in text
    assert "⏳ Belum menjawab: <b>1</b>" in text
    assert "❌ Berhalangan: <b>1</b>" in text
    assert "⚠️ Tidak terjangkau: <b>19</b>" in text
    assert "Pengurus: 1 hadir, 1 diwakilkan, 1 berhalangan, 1 belum menjawab." in text
    curug, serang = text.split("<b>Kecamatan Curug</b>")[1].split("<b>Kecamatan Serang</b>")
    assert "• <b>Sukawana</b> — ✅ terwakili" in curug
    assert "👥 Budi (Ketua): diwakilkan kepada Ahmad Fauzi (Sekretaris)" in curug
    assert "✅ Siti (Bendahara): hadir" in curug
    assert curug.index("Budi (Ketua)") < curug.index("Siti (Bendahara)")
    assert "belum ada pengurus terhubung: Cilaku, Cipete, Curug, Curug Manis," in curug
    assert "• <b>Cipare</b> — ❌ berhalangan" in serang
    assert "❌ Ani (Bendahara): berhalangan — Sakit &lt;b&gt;demam&lt;/b&gt;" in serang
    assert "• <b>Kota Baru</b> — ⏳ belum menjawab" in serang
    assert "⏳ Eko (Sekretaris): belum menjawab" in serang
    assert "• <b>Unyur</b> — ⚠️ tidak terjangkau" in serang
    assert "⚠️ Dedi (Bendahara): tidak terjangkau (memblokir bot)" in serang
    assert "⚠️ Gita (Bendahara): tidak terjangkau (pesan gagal terkirim)" in serang
    assert "Lopang" in serang.split("belum ada pengurus terhubung:")[1]
    assert view.button_labels == ["Perbarui", "Ubah waktu/tempat", "Batalkan undangan"]

    (refused,) = await siti.send("/undangan")
    assert "daftar undangan hanya untuk petugas" in refused.text


async def test_late_stray_and_forged_answers_are_refused(scene: Scene, chats: Chats) -> None:
    sid = scene.summons_id
    # Not addressed to Kasemen, whatever the button says.
    assert "tidak ditujukan kepada koperasi" in await alert(scene.asing, f"u:{sid}:hadir")
    assert "tidak ditemukan" in await alert(scene.siti, "u:999999:hadir")
    assert "Tombol ini sudah tidak berlaku." in await alert(scene.siti, f"u:{sid}:ikut")
    assert "Tombol ini sudah tidak berlaku." in await alert(scene.siti, "u:1x:hadir")
    assert "hanya dapat dijawab oleh pengurus" in await alert(
        scene.oki, f"u:{sid}:hadir", scene.oki.last_message()
    )
    # Officers' buttons need an officer, and changing needs the right to broadcast in scope.
    assert "hanya untuk petugas" in await alert(scene.siti, f"u:{sid}:batalkan")
    cici = await officer(scene.core, chats, "Cici", "Curug", can_broadcast=True)
    assert "tidak berwenang" in await alert(cici, f"u:{sid}:ubah")
    # A Curug officer sees the city's summons, limited to Curug, without Ubah/Batalkan.
    view = await scene.view(cici)
    assert "<b>Rekap 10 koperasi di Kecamatan Curug</b>" in view.text
    assert "Kecamatan Serang" not in view.text
    assert view.button_labels == ["Perbarui"]

    # Eko opens a question before the start and answers after it: refused, nothing stored.
    await scene.eko.press("Berhalangan")
    scene.clock.set(MEETING)
    (late,) = await scene.eko.send("Ada rapat RT")
    assert "acara sudah dimulai" in late.text
    assert "acara sudah dimulai" in await press_alert(scene.siti, "Hadir", scene.letter(scene.siti))
    async with scene.core.db.sessions() as session:
        assert (await session.scalars(select(Rsvp))).all() == []
        prompts = (await session.scalars(select(ChatPrompt))).all()
    assert [p.step for p in prompts] == [rsvp.ANSWERED]  # only to keep a repeat silent
    # The text went nowhere else either: the next text is stray.
    (stray,) = await scene.eko.send("Ada rapat RT")
    assert "acara sudah dimulai" not in stray.text
    async with scene.core.db.sessions() as session:
        assert (await session.scalars(select(ChatPrompt))).all() == []


async def test_a_final_answer_delivered_twice_is_recorded_once_and_answered_once(
    scene: Scene,
) -> None:
    """Telegram may deliver a message twice. The last typed answer closes the question, yet
    the repeat gets no reply (not the "belum memahami" fallback) and changes nothing."""
    core, sid = scene.core, scene.summons_id

    async def twice(chat: LocalChat, text: str) -> str:
        update = chat.user.text_update(text)
        first = await chat.process(update)
        calls = len(chat.api.calls)
        assert await chat.process(update) == []  # the same update again: silence
        assert len(chat.api.calls) == calls
        return "\n".join(m.text for m in first)

    async def answers(chat: LocalChat) -> list[Rsvp]:
        async with core.db.sessions() as session:
            query = select(Rsvp).where(
                Rsvp.summons_id == sid, Rsvp.person_id == await person_id(core, chat)
            )
            return list((await session.scalars(query)).all())

    async def prompts() -> list[ChatPrompt]:
        async with core.db.sessions() as session:
            return list((await session.scalars(select(ChatPrompt))).all())

    async def audited() -> int:
        async with core.db.sessions() as session:
            rows = await session.scalars(
                select(AuditLog.id).where(AuditLog.action == "summons.rsvp")
            )
            return len(rows.all())

    # Berhalangan: the reason is the final answer.
    await scene.ani.press("Berhalangan")
    assert "dengan alasan: Ada rapat RT." in await twice(scene.ani, "Ada rapat RT")
    (row,) = await answers(scene.ani)
    assert (row.answer, row.alasan) == (RsvpAnswer.BERHALANGAN, "Ada rapat RT")
    assert await audited() == 1
    (fallback,) = await scene.ani.send("halo")
    assert "belum memahami pesan tersebut" in fallback.text
    assert await prompts() == []
    (row,) = await answers(scene.ani)
    assert row.alasan == "Ada rapat RT"

    # Diwakilkan: the name, then the position, the final answer.
    await scene.budi.press("Diwakilkan")
    assert "Apa <b>jabatan</b> Ahmad Fauzi?" in await twice(scene.budi, "Ahmad Fauzi")
    assert "diwakili oleh <b>Ahmad Fauzi</b> (Sekretaris)" in await twice(scene.budi, "Sekretaris")
    (row,) = await answers(scene.budi)
    assert (row.answer, row.delegate_nama, row.delegate_jabatan) == (
        RsvpAnswer.DIWAKILKAN,
        "Ahmad Fauzi",
        "Sekretaris",
    )
    assert await audited() == 2
    (fallback,) = await scene.budi.send("halo")
    assert "belum memahami pesan tersebut" in fallback.text
    assert await prompts() == []

    # /batal after an answer has no question to drop: it goes on to the report's answer.
    await scene.siti.press("Berhalangan", scene.letter(scene.siti))
    await twice(scene.siti, "Dinas luar kota")
    (nothing,) = await scene.siti.send("/batal")
    assert "Tidak ada draf laporan" in nothing.text
    assert await prompts() == []
    (row,) = await answers(scene.siti)
    assert row.alasan == "Dinas luar kota"

    # An officer's change that ends in typed text ("sama" twice: nothing changes) likewise;
    # the preview's Batal button then finds no question.
    view = await scene.view()
    await scene.oki.press("Ubah waktu/tempat", view)
    await twice(scene.oki, "sama")
    assert "tidak ada perubahan yang disimpan" in await twice(scene.oki, "sama")
    assert "Tombol ini sudah tidak berlaku." in await alert(scene.oki, f"u:{sid}:urung")
    (fallback,) = await scene.oki.send("halo")
    assert "belum memahami pesan tersebut" in fallback.text
    assert await prompts() == []


async def test_a_change_of_time_asks_again_and_the_view_marks_it(scene: Scene) -> None:
    siti, oki = scene.siti, scene.oki
    await siti.press("Hadir", scene.letter(siti))
    view = await scene.view()
    (ask,) = await oki.press("Ubah waktu/tempat", view)
    assert "Waktu sekarang: Kamis, 3 Desember 2026, pukul 09.00 WIB." in ask.text
    unreadable, again = await oki.send("kapan-kapan saja")
    assert "belum dapat saya baca sebagai tanggal dan jam" in unreadable.text
    assert "<b>hari/tanggal dan waktu baru</b>" in again.text
    past, _ = await oki.send("1 November 2026 pukul 09.00")
    assert "sudah lewat" in past.text
    (ask,) = await oki.send("Jumat, 4 Desember 2026 pukul 10.00")
    assert "Tempat sekarang: Aula Setda Kota Serang." in ask.text
    short, _ = await oki.send("ab")
    assert "paling sedikit 3 huruf" in short.text
    (preview,) = await oki.send("Gedung Juang, Jl. Veteran")
    assert (
        "Waktu: Kamis, 3 Desember 2026, pukul 09.00 WIB → <b>Jumat, 4 Desember 2026, pukul "
        "10.00 WIB</b>" in preview.text
    )
    assert "Tempat: Aula Setda Kota Serang → <b>Gedung Juang, Jl. Veteran</b>" in preview.text
    assert "kepada 5 pengurus dari 4 koperasi" in preview.text
    assert "1 jawaban yang sudah masuk akan diminta konfirmasi ulang" in preview.text
    (busy, preview_again) = await oki.send("kirim")
    assert "Mohon tekan salah satu tombol" in busy.text
    assert preview_again.button_labels == ["Kirim", "Batal"]
    (sent,) = await oki.press("Kirim", preview)
    assert "sudah disimpan: Jumat, 4 Desember 2026, pukul 10.00 WIB, di Gedung Juang" in sent.text
    assert "Pemberitahuan diantrekan untuk 5 penerima" in sent.text
    assert sent.buttons == []
    assert "Tombol ini sudah tidak berlaku." in await alert(oki, f"u:{scene.summons_id}:kirim")

    await scene.deliver()
    notice = scene.letter(siti)
    assert "<b>PERUBAHAN UNDANGAN</b>" in notice.text
    assert "(Semula: Kamis, 3 Desember 2026, pukul 09.00 WIB.)" in notice.text
    assert "Jawaban Anda sebelumnya: <b>Hadir</b> — mohon konfirmasi ulang" in notice.text
    assert notice.button_labels == RSVP_LABELS
    assert "Mohon konfirmasi kehadiran" in scene.letter(scene.eko).text

    view = await scene.view()
    assert "✅ Terwakili: <b>0</b>" in view.text
    assert "🔁 Belum konfirmasi ulang waktu baru: <b>1</b>" in view.text
    assert "• <b>Sukawana</b> — 🔁 belum konfirmasi ulang" in view.text
    assert "🔁 Siti (Bendahara): hadir — <i>belum konfirmasi ulang</i>" in view.text
    assert "Gedung Juang, Jl. Veteran" in view.text

    (again,) = await siti.press("Hadir", notice)
    assert "Jumat, 4 Desember 2026 pukul 10.00 WIB sudah kami catat" in again.text
    view = await scene.view()
    assert "✅ Terwakili: <b>1</b>" in view.text
    assert "✅ Siti (Bendahara): hadir" in view.text

    # A change that changes nothing sends nothing.
    await oki.press("Ubah waktu/tempat", view)
    await oki.send("sama")
    (same,) = await oki.send("Sama")
    assert "tidak ada perubahan yang disimpan" in same.text
    async with scene.core.db.sessions() as session:
        summons = await session.get(Summons, scene.summons_id)
        assert summons is not None
        assert (summons.version, summons.time_version) == (2, 2)
        assert summons.starts_at == wib(4, 10)
    kinds = Counter((k, s) for _, k, s, _ in await scene.outbox())
    assert kinds[("summons_change", "sent")] == 5  # Gita's chat is fine now; Dedi is blocked
    assert kinds[("summons_change", "pending")] == 0

    # Reminders follow the new time: H-1 is now 3 December, decided afresh for it.
    assert await rsvp.remind(scene.core, wib(2, 9)) == 0
    assert await rsvp.remind(scene.core, wib(3, 9)) == 5
    async with scene.core.db.sessions() as session:
        targets = (await session.scalars(select(LedgerEntry.target))).all()
    assert len(targets) == 5
    assert all(t.endswith("t2") for t in targets)


async def test_cancellation_notifies_everyone_and_refuses_later_answers(scene: Scene) -> None:
    oki, siti, eko = scene.oki, scene.siti, scene.eko
    await siti.press("Hadir", scene.letter(siti))
    await eko.press("Diwakilkan")  # halfway through when the summons is cancelled
    scene.clock.set(wib(2, 9))
    assert await rsvp.remind(scene.core) == 5  # H-1, still waiting to be sent
    scene.clock.set(wib(2, 9, 30))

    view = await scene.view()
    (ask,) = await oki.press("Batalkan undangan", view)
    assert "<b>alasan pembatalan</b>" in ask.text
    (kept,) = await oki.send("/batal")
    assert "undangan tidak jadi dibatalkan" in kept.text
    await oki.press("Batalkan undangan", view)
    (confirm,) = await oki.send("Ditunda karena kunjungan kerja Wali Kota")
    assert "Alasan: Ditunda karena kunjungan kerja Wali Kota" in confirm.text
    (done,) = await oki.press("Ya, batalkan undangan", confirm)
    assert "sudah dibatalkan" in done.text
    assert "5 pesan yang belum terkirim tidak jadi dikirim" in done.text

    await scene.deliver()
    notice = scene.letter(siti)  # the letter, still the last message with buttons
    last = siti.last_message()
    assert last is not None
    assert "<b>PEMBATALAN UNDANGAN</b>" in last.text
    assert "Alasan: Ditunda karena kunjungan kerja Wali Kota" in last.text
    statuses = Counter((k, s) for _, k, s, _ in await scene.outbox())
    assert statuses[("summons_cancel", "sent")] == 5
    assert statuses[("summons_h1", "cancelled")] == 5
    assert statuses[("summons_h1", "sent")] == 0

    assert "sudah dibatalkan" in await press_alert(siti, "Hadir", notice)
    (stray,) = await eko.send("Ahmad Fauzi")  # his question was dropped with the summons
    assert "jabatan" not in stray.text
    view = await scene.view()
    assert "<b>Dibatalkan</b> pada Rabu, 2 Desember 2026, pukul 09.30 WIB" in view.text
    assert view.button_labels == ["Perbarui"]
    assert "sudah dibatalkan" in await alert(oki, f"u:{scene.summons_id}:ubah")
    assert await rsvp.remind(scene.core, wib(3, 7)) == 0


async def test_reminders_go_to_the_right_people_once_and_only_in_sending_hours(
    scene: Scene,
) -> None:
    core = scene.core
    await scene.siti.press("Hadir", scene.letter(scene.siti))
    await scene.budi.press("Diwakilkan")
    await scene.budi.send("Ahmad Fauzi")
    await scene.budi.send("Sekretaris")
    await scene.ani.press("Berhalangan")
    await scene.ani.send("Sakit")
    assert await rsvp.next_reminder_at(core, wib(1)) == wib(2, 9)

    async def queued(at: datetime) -> list[tuple[str, str, str, Any]]:
        before = len(await scene.outbox())
        await rsvp.remind(core, at)
        return (await scene.outbox())[before:]

    assert await queued(wib(1, 9)) == []  # H-2: nothing yet
    assert await queued(wib(2, 6, 30)) == []  # outside 07.00-20.00
    h1 = await queued(wib(2, 9))
    assert sorted((n, k) for n, k, _, _ in h1) == [
        ("Budi", "summons_h1"),
        ("Eko", "summons_h1"),
        ("Gita", "summons_h1"),
        ("Siti", "summons_h1"),
    ]
    texts = {n: m for n, _, _, m in h1}
    assert "Anda diwakili oleh <b>Ahmad Fauzi</b> (Sekretaris)" in texts["Budi"].text
    assert "<b>besok</b>, Kamis, 3 Desember 2026, pukul 09.00 WIB" in texts["Budi"].text
    assert "Anda sudah menyatakan hadir" in texts["Siti"].text
    assert "belum menerima konfirmasi kehadiran" in texts["Eko"].text
    assert texts["Eko"].text.startswith("Selamat pagi, Bapak/Ibu <b>Eko</b>.")
    assert [b[0] for b in texts["Eko"].buttons[0]] == RSVP_LABELS
    assert await queued(wib(2, 9)) == []  # once
    assert await queued(wib(2, 15)) == []
    assert await queued(wib(2, 20, 30)) == []
    assert await queued(wib(3, 6, 59)) == []
    h0 = await queued(wib(3, 7))  # 09.00 - 2 hours
    assert [(n, k) for n, k, _, _ in h0] == [("Siti", "summons_h0")]
    assert "Hari ini pukul <b>09.00 WIB</b>" in h0[0][3].text
    assert h0[0][3].buttons is None
    assert await queued(wib(3, 8)) == []
    assert await queued(wib(3, 9)) == []  # started

    async with core.db.sessions() as session:
        ledger = (await session.scalars(select(LedgerEntry))).all()
    assert Counter((e.kind, e.period) for e in ledger) == {
        ("summons_h1", f"u{scene.summons_id}"): 4,
        ("summons_h0", f"u{scene.summons_id}"): 1,
    }
    assert all(e.target.startswith("p") for e in ledger)
