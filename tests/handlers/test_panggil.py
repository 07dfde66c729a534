"""/panggil played through process_update: composing, reading dates back, targets, the preview,
refusals, and the summons arriving at board members through the outbox."""

from __future__ import annotations

from sqlalchemy import func, select

from bot.app import send_due_with
from bot.clock import FixedClock
from bot.core import Core
from handlers.local_api import LocalChat
from storage.models import OutboxMessage, Summons, SummonsDraft, SummonsKoperasi
from tests.bot.test_reminders import CIPARE, SUKAWANA_CURUG, link, officer, wib
from tests.conftest import Chats

KASEMEN = "36.73.02.1001"


def texts(messages: list) -> str:  # type: ignore[type-arg]
    return "\n---\n".join(m.text for m in messages)


async def broadcaster(core: Core, chats: Chats, kecamatan: str | None = None) -> LocalChat:
    chat = await officer(core, chats, "Rina", kecamatan)
    from bot import officers

    await officers.add_officer(
        core,
        telegram_id=str(chat.user.user_id),
        nama="Rina",
        kecamatan=kecamatan,
        can_broadcast=True,
        actor="t",
    )
    return chat


async def compose_until_target(chat: LocalChat, when: str = "Senin, 7 Desember 2026 pukul 09.00"):  # type: ignore[no-untyped-def]
    await chat.send("/panggil")
    await chat.send("Rapat koordinasi pengurus KMP")
    read_back = await chat.send(when)
    assert "Saya baca: <b>Senin, 7 Desember 2026, pukul 09.00 WIB</b>. Benar?" in texts(read_back)
    await chat.press("Ya, benar")
    await chat.send("Aula Setda Kota Serang")
    await chat.send("Evaluasi kegiatan usaha dan kendala KMP")
    return await chat.send("Budi Santoso (0812-3456-7890)")


async def test_a_summons_to_two_kecamatan_reaches_their_boards(
    registry_loaded: Core, chats: Chats, clock: FixedClock, api
) -> None:  # type: ignore[no-untyped-def]
    core = registry_loaded
    clock.set(wib(1, 10))
    siti = await link(core, chats, SUKAWANA_CURUG, "Siti")  # Kec. Curug
    budi = await link(core, chats, SUKAWANA_CURUG, "Budi", role="ketua")
    ani = await link(core, chats, CIPARE, "Ani")  # Kec. Serang
    other = await link(core, chats, KASEMEN, "Kasim")  # Kec. Kasemen: not invited
    rina = await broadcaster(core, chats)

    target_question = await compose_until_target(rina)
    assert "Undangan ini untuk koperasi yang mana?" in texts(target_question)
    await rina.press("Per kecamatan")
    await rina.press("Curug")
    toggled = await rina.press("Serang")
    assert "✅ Curug" in toggled[0].button_labels
    assert "✅ Serang" in toggled[0].button_labels
    preview = await rina.press("Selesai")

    shown = texts(preview)
    assert "<b>Pratinjau undangan</b>" in shown
    assert "Hal: <b>Undangan — Rapat koordinasi pengurus KMP</b>" in shown
    assert "Hari/tanggal: <b>Senin, 7 Desember 2026</b>" in shown
    assert "Waktu: pukul 09.00 WIB s.d. selesai" in shown
    assert "Dengan hormat," in shown
    assert "Mengingat pentingnya acara tersebut, dimohon hadir tepat waktu." in shown
    assert "<b>Wali Kota Serang</b>" in shown
    assert "Sasaran: 2 kecamatan terpilih." in shown
    assert "Akan dikirim ke <b>2</b> koperasi (3 orang pengurus)." in shown
    assert "Tidak dapat dihubungi (" in shown  # the other cooperatives of Curug and Serang
    assert preview[-1].button_labels == ["Kirim", "Ubah", "Batal"]

    sent = await rina.press("Kirim")
    assert "sedang dikirim ke 2 koperasi (3 orang pengurus)" in texts(sent)
    stats = await send_due_with(core, rina.app.bot)
    assert stats.sent == 3

    for chat in (siti, budi, ani):
        letter = chat.last_with_buttons()
        assert letter is not None
        assert "Yth. Ketua/Pengurus KMP Kelurahan" in letter.text
        assert letter.button_labels == ["Hadir", "Diwakilkan", "Berhalangan"]
    assert other.last_with_buttons() is None or "Undangan" not in other.last_with_buttons().text
    async with core.db.sessions() as session:
        summons = await session.scalar(select(Summons))
        addressed = await session.scalar(select(func.count()).select_from(SummonsKoperasi))
        drafts = await session.scalar(select(func.count()).select_from(SummonsDraft))
    assert summons is not None
    assert summons.nomor == f"{summons.id:03d}/UND-KMP/XII/2026"
    assert addressed > 2  # every cooperative of both kecamatan, reachable or not
    assert drafts == 0

    # Each of the three answers, then the officer's view.
    await siti.press("Hadir")
    await ani.press("Diwakilkan")
    await ani.send("Ahmad Fauzi")
    await ani.send("Sekretaris")
    await budi.press("Berhalangan")
    await budi.send("Sedang dinas luar kota")
    (listing,) = await rina.send("/undangan")
    assert "Terwakili: <b>2</b> dari" in listing.text
    (view,) = await rina.press(0, listing)
    assert "✅ Siti (Bendahara): hadir" in view.text
    assert "👥 Ani (Bendahara): diwakilkan kepada Ahmad Fauzi (Sekretaris)" in view.text
    assert "❌ Budi (Ketua): berhalangan — Sedang dinas luar kota" in view.text
    assert "• <b>Cipare</b> — ✅ terwakili" in view.text
    assert "• <b>Sukawana</b> — ✅ terwakili" in view.text


async def test_bad_dates_past_dates_and_empty_targets_are_refused(
    registry_loaded: Core, chats: Chats, clock: FixedClock
) -> None:
    core = registry_loaded
    clock.set(wib(1, 10))
    await link(core, chats, CIPARE, "Ani")
    rina = await broadcaster(core, chats)
    await rina.send("/panggil")
    await rina.send("Rapat")
    for typed, expected in (
        ("kapan-kapan", "belum dapat saya baca sebagai tanggal dan jam"),
        ("1 Desember 2025 pukul 09.00", "sudah lewat"),
        ("7 Desember 2026", "jamnya belum ada"),
    ):
        answer = texts(await rina.send(typed))
        assert expected in answer, typed
        assert "<b>Hari/tanggal dan waktu</b> acaranya?" in answer  # asked again

    mismatch = texts(await rina.send("Selasa, 7 Desember 2026 pukul 09.00"))
    assert "jatuh pada hari Senin, bukan Selasa" in mismatch
    await rina.press("Ya, benar")
    await rina.send("Aula")
    await rina.send("Evaluasi")
    await rina.send("Budi")
    empty = texts(await rina.press("Yang belum beroperasi (menurut laporan terakhir)"))
    assert "Tidak ada koperasi yang cocok" in empty
    assert "Undangan ini untuk koperasi yang mana?" in empty

    await rina.press("Pilih koperasi")
    ambiguous = await rina.send("sukawana, atlantis")
    shown = texts(ambiguous)
    assert 'Koperasi "atlantis" tidak ditemukan' in shown
    assert 'Ada beberapa koperasi bernama "sukawana"' in shown
    choice = next(m for m in ambiguous if "Sukawana (Curug)" in m.button_labels)
    await rina.press("Sukawana (Curug)", choice)
    picked = texts(await rina.send("Cipare"))
    assert "Sudah dipilih (2)" in picked
    preview = texts(await rina.press("Selesai"))
    assert "Sasaran: 2 koperasi pilihan." in preview
    assert "Akan dikirim ke <b>1</b> koperasi (1 orang pengurus)." in preview
    assert "Tidak dapat dihubungi (1 koperasi" in preview
    assert "Sukawana (Curug)" in preview

    # Time passes while the preview waits: Kirim refuses and asks for a new time.
    clock.set(wib(8, 10))
    late = texts(await rina.press("Kirim"))
    assert "sudah lewat" in late
    async with core.db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Summons)) == 0
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


async def test_nobody_reachable_and_people_without_the_right(
    registry_loaded: Core, chats: Chats, clock: FixedClock
) -> None:
    core = registry_loaded
    clock.set(wib(1, 10))
    rina = await broadcaster(core, chats)
    await compose_until_target(rina)
    unreachable = texts(await rina.press("Semua koperasi se-kota"))
    assert "belum satu pun pengurusnya terhubung" in unreachable

    cancelled = texts(await rina.send("/batal"))
    assert "sudah dibatalkan; tidak ada yang dikirim" in cancelled

    viewer = await officer(core, chats, "Tono", None)
    assert "belum berhak mengirim undangan" in texts(await viewer.send("/panggil"))
    board = await link(core, chats, CIPARE, "Ani")
    assert "hanya untuk petugas" in texts(await board.send("/panggil"))


async def test_editing_from_the_preview_and_a_restart_in_the_middle(
    registry_loaded: Core, chats: Chats, clock: FixedClock, api
) -> None:  # type: ignore[no-untyped-def]
    core = registry_loaded
    clock.set(wib(1, 10))
    await link(core, chats, CIPARE, "Ani")
    rina = await broadcaster(core, chats, "Serang")
    await rina.send("/panggil")
    await rina.send("Rapat")

    # A new Application on the same database continues the draft where it stopped.
    from bot.app import build_application

    restarted = build_application(core, request=api)
    async with restarted:
        again = LocalChat(restarted, rina.user)
        resumed = texts(await again.send("/panggil"))
        assert "Kita lanjutkan undangan" in resumed
        assert "<b>Hari/tanggal dan waktu</b> acaranya?" in resumed
        await again.send("07/12/2026 09.00")
        await again.press("Ya, benar")
        await again.send("Aula")
        await again.send("Evaluasi")
        await again.send("Budi")
        preview = texts(await again.press("Semua koperasi Kecamatan Serang"))
        assert "Akan dikirim ke <b>1</b> koperasi" in preview
        await again.press("Ubah")
        await again.press("Tempat")
        edited = texts(await again.send("Gedung Juang"))
        assert "Tempat: Gedung Juang" in edited
        assert "<b>Pratinjau undangan</b>" in edited


async def draft_of(core: Core) -> SummonsDraft:
    async with core.db.sessions() as session:
        draft = await session.scalar(select(SummonsDraft))
    assert draft is not None
    return draft


async def test_a_typed_answer_delivered_twice_is_handled_once(
    registry_loaded: Core, chats: Chats, clock: FixedClock
) -> None:
    core = registry_loaded
    clock.set(wib(1, 10))
    await link(core, chats, CIPARE, "Ani")
    rina = await broadcaster(core, chats)
    await rina.send("/panggil")

    async def again(update: dict) -> None:  # type: ignore[type-arg]
        calls = len(rina.api.calls)
        assert await rina.process(update) == []  # Telegram delivered it again: silence
        assert len(rina.api.calls) == calls

    async def twice(text: str) -> str:
        update = rina.user.text_update(text)
        first = await rina.process(update)
        await again(update)
        return texts(first)

    assert "<b>Hari/tanggal dan waktu</b> acaranya?" in await twice("Rapat koordinasi")
    draft = await draft_of(core)
    assert (draft.step, draft.answers["hal"]) == ("waktu", "Rapat koordinasi")

    when = rina.user.text_update("Senin, 7 Desember 2026 pukul 09.00")
    assert "Saya baca:" in texts(await rina.process(when))
    await again(when)
    await rina.press("Ya, benar")
    await again(when)  # once more after the next question: not taken as the place
    draft = await draft_of(core)
    assert draft.step == "tempat"
    assert "tempat" not in draft.answers

    await twice("Aula Setda Kota Serang")
    await twice("Evaluasi kegiatan usaha")
    # Repeated at the target question: no "please use the buttons", the question stays.
    assert "Undangan ini untuk koperasi yang mana?" in await twice("Budi Santoso (0812-3456)")
    assert (await draft_of(core)).step == "sasaran"

    await rina.press("Pilih koperasi")
    assert "Sudah dipilih (1)" in await twice("Cipare")
    picked = (await draft_of(core)).pending
    assert picked is not None
    assert len(picked["koperasi_ids"]) == 1
    preview = texts(await rina.press("Selesai"))
    assert "Hal: <b>Undangan — Rapat koordinasi</b>" in preview
    assert "Tempat: Aula Setda Kota Serang" in preview
    assert "Akan dikirim ke <b>1</b> koperasi (1 orang pengurus)." in preview
