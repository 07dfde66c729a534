"""/koperasi played through process_update: the Sukawana ambiguity, unknown names, a board
member's own cooperative, refusals, what the profile shows, and splitting a long one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from bot.core import Core
from handlers.local_api import SentMessage
from storage.models import BoardMember, ChatIdentity, Jabatan, Person
from tests.bot.test_export_xlsx import registry, wire, write_history, write_reports
from tests.bot.test_reminders import CIPARE, SUKAWANA_CURUG, link, officer
from tests.conftest import Chats


def joined(messages: list[SentMessage]) -> str:
    return "\n".join(m.text for m in messages)


def last_alert(api: Any) -> dict[str, Any]:
    calls = [c for c in api.calls if c.method == "answerCallbackQuery"]
    return dict(calls[-1].params)


async def test_sukawana_asks_which_and_the_profile_shows_everything(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    core = registry_loaded
    wire(app)
    await write_reports(core)
    ids = await write_history(core)
    oki = await officer(core, chats, "Oki", None)

    asked = await oki.send("/koperasi sukawana")
    assert (
        asked[-1].text == 'Ada 2 koperasi yang cocok dengan "sukawana". Silakan pilih salah satu:'
    )
    assert asked[-1].button_labels == ["Sukawana (Serang)", "Sukawana (Curug)"]
    assert asked[-1].button("Sukawana (Curug)")["callback_data"] == f"o:{ids[SUKAWANA_CURUG]}"

    shown = joined(await oki.press("Sukawana (Curug)"))
    assert shown == "\n".join(
        [
            "<b>Koperasi Kelurahan Merah Putih Sukawana</b>",
            "Kelurahan Sukawana, Kecamatan Curug",
            "Kode wilayah: 36.73.04.1007",
            "Kontak: belum tercatat",
            "",
            "<b>Pengurus yang terhubung</b>",
            "• Budi — Ketua",
            "• Siti — Bendahara",
            "",
            "<b>Laporan terakhir</b>",
            "• <b>Oktober 2026</b>: Belum beroperasi; kendala utama: Sulit pasokan/pembeli/harga."
            " Dikirim Bendahara 1007, 02/11/2026 pukul 10.15 WIB.",
            "• <b>September 2026</b>: Beroperasi rutin; kendala utama: Kesulitan"
            " SIMKOPDES/aplikasi. Dikirim Bendahara 1007, 02/10/2026 pukul 10.15 WIB.",
            "• <b>Agustus 2026</b>: Beroperasi sebagian; kendala utama: -. Dikirim Bendahara"
            " 1007, 12/09/2026 pukul 10.15 WIB (terlambat).",
            "",
            "<b>Kendala Mei 2026 – Oktober 2026</b>",
            "• Mei 2026: belum melapor",
            "• Juni 2026: belum melapor",
            "• Juli 2026: belum melapor",
            "• Agustus 2026: Tidak ada kendala",
            "• September 2026: Belum punya tempat usaha, Kesulitan SIMKOPDES/aplikasi (utama)",
            "• Oktober 2026: Perizinan belum lengkap, Sulit pasokan/pembeli/harga (utama)",
            "",
            "<b>Undangan</b>",
            f"• {ids['december']:03d}/UND-KMP/X/2026 — Rapat Desember, Senin, 7 Desember 2026"
            " pukul 09.00 WIB",
            "   – belum ada jawaban",
            f"• {ids['october']:03d}/UND-KMP/X/2026 — Rapat koordinasi KMP, Selasa, 20 Oktober"
            " 2026 pukul 09.00 WIB",
            "   – Budi: berhalangan (Sakit)",
            "   – Siti: diwakilkan kepada Joko (Sekretaris)",
        ]
    )
    # The button only names a cooperative: pressed again it is looked up and checked again.
    again = await oki.press("Sukawana (Serang)", asked[-1])
    assert "Kelurahan Sukawana, Kecamatan Serang" in joined(again)
    assert "Belum ada pengurus yang terhubung dengan bot." in joined(again)
    assert "<b>Undangan</b>" not in joined(again)


async def test_unknown_names_get_an_example(registry_loaded: Core, app: Any, chats: Chats) -> None:
    core = registry_loaded
    wire(app)
    oki = await officer(core, chats, "Oki", None)
    unknown = await oki.send("/koperasi Bogor")
    assert unknown[-1].text == (
        'Mohon maaf, tidak ada koperasi yang cocok dengan "Bogor". Ketik nama kelurahan atau'
        " kode wilayahnya, misalnya <code>/koperasi Banjar Agung</code>."
    )
    assert not unknown[-1].buttons
    empty = await oki.send("/koperasi")
    assert "Koperasi mana yang ingin Bapak/Ibu lihat?" in empty[-1].text
    many = await oki.send("/koperasi an")
    assert len(many[-1].button_labels) == 10
    assert "Ditampilkan 10 yang pertama" in many[-1].text
    # Spelling variants and codes work as everywhere else.
    variant = await oki.send("/koperasi Penancangan")
    assert "Kelurahan Panancangan, Kecamatan Cipocok Jaya" in joined(variant)
    by_code = await oki.send("/koperasi 36.73.01.1002")
    assert "Kelurahan Cipare, Kecamatan Serang" in joined(by_code)


async def test_a_board_member_sees_only_their_own_cooperative(
    registry_loaded: Core, app: Any, chats: Chats, api: Any
) -> None:
    core = registry_loaded
    wire(app)
    dewi = await link(core, chats, SUKAWANA_CURUG, "Dewi")
    budi = await link(core, chats, SUKAWANA_CURUG, "Budi", role="ketua")
    async with core.db.transaction() as session:
        await session.execute(
            update(ChatIdentity)
            .where(ChatIdentity.external_id == str(budi.user.user_id))
            .values(unreachable_at=core.clock.now(), unreachable_reason="blocked")
        )

    own = joined(await dewi.send("/koperasi"))
    assert "Kelurahan Sukawana, Kecamatan Curug" in own
    assert "• Budi — Ketua ⚠️ tidak dapat dihubungi\n• Dewi — Bendahara\n" in own
    assert "Belum ada laporan." in own
    # The ambiguous name: their own Sukawana is the only one they may see.
    typed = await dewi.send("/koperasi Sukawana")
    assert "Kecamatan Curug" in joined(typed)
    assert not typed[-1].buttons
    other = await dewi.send("/koperasi Cipare")
    assert other[-1].text == (
        "Mohon maaf, sebagai pengurus Bapak/Ibu hanya dapat melihat profil Koperasi Kelurahan"
        " Merah Putih Sukawana. Ketik /koperasi saja untuk melihatnya."
    )
    ids = {kode: koperasi_id for koperasi_id, kode, _ in await registry(core)}
    cipare = await dewi.process(dewi.user.callback_update(other[-1], f"o:{ids[CIPARE]}"))
    assert cipare == []
    assert last_alert(api)["show_alert"] is True


async def test_strangers_are_refused(
    registry_loaded: Core, app: Any, chats: Chats, api: Any
) -> None:
    wire(app)
    stranger = chats.user("Tamu", None)
    refused = await stranger.send("/koperasi Sukawana")
    assert "hanya untuk petugas Dinas dan pengurus koperasi yang sudah terhubung" in (
        refused[-1].text
    )
    assert not refused[-1].buttons
    forged = await stranger.process(stranger.user.callback_update(refused[-1], "o:1"))
    assert forged == []
    assert last_alert(api) == {
        "callback_query_id": last_alert(api)["callback_query_id"],
        "text": "Tombol ini sudah tidak berlaku.",
        "show_alert": True,
    }


async def test_a_long_profile_is_split_below_telegrams_limit(
    registry_loaded: Core, app: Any, chats: Chats
) -> None:
    core = registry_loaded
    wire(app)
    cipare = await link(core, chats, CIPARE, "Ani")
    now = core.clock.now()
    async with core.db.transaction() as session:
        koperasi_id = await session.scalar(
            select(BoardMember.koperasi_id).join(Person).where(Person.nama == "Ani")
        )
        pengawas = await session.scalar(select(Jabatan.id).where(Jabatan.kode == "pengawas"))
        for number in range(60):
            person = Person(nama=f"Anggota Pengawas Nomor {number:02d} " + "x" * 60, created_at=now)
            session.add(person)
            await session.flush()
            session.add(
                BoardMember(
                    person_id=person.id,
                    koperasi_id=koperasi_id,
                    jabatan_id=pengawas,
                    linked_at=now,
                )
            )
    parts = await cipare.send("/koperasi")
    assert len(parts) == 2
    assert all(len(p.text) <= 4096 for p in parts)
    text = joined(parts)
    # Nobody lost; the people without a chat are marked unreachable.
    assert text.count("⚠️ tidak dapat dihubungi") == 60
    assert "Nomor 59" in parts[1].text
