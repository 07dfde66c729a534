"""/rekap and its charts, driven through process_update: three months of reports written with a
known pattern, so every number the officers read is known; scope kept to the officer's
kecamatan whatever the buttons say; charts are real PNGs."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from alembic.command import downgrade
from sqlalchemy import event, func, select
from telegram.ext import CommandHandler

from bot import charts
from bot.config import Settings
from bot.core import Core
from bot.identity import Actor, identify
from bot.laporan import BANTUAN, KENDALA, STATUS
from bot.periods import Period
from bot.rekap import Chart, NotAnOfficer, chart_view, latest_period, recap
from handlers.local_api import LocalChat, SentMessage
from storage.migrate import alembic_config, upgrade
from storage.models import Kecamatan, Kelurahan, Koperasi, Report, ReportRevision
from tests.bot.test_reminders import link, officer
from tests.conftest import WIB, Chats

AUGUST, SEPTEMBER, OCTOBER = Period(2026, 8), Period(2026, 9), Period(2026, 10)
MONTHS = (AUGUST, SEPTEMBER, OCTOBER)
CURUG = range(36, 46)  # positions of Curug's ten kelurahan in code order (36.73.04.*)
OTHER_KECAMATAN = ("Serang", "Kasemen", "Walantaka", "Cipocok Jaya", "Taktakan")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# The pattern ----------------------------------------------------------------------------------
# Cooperative i (0..66 in code order) in month m (0 = August .. 2 = October):
# reports unless i is a multiple of 3, 4, 5 (Aug, Sep, Oct); late when i % 7 == 1; status cycles
# with i + m; obstacles: NIHIL when i % 6 == 5, else the codes (i + m) % 10 and 3i % 10 (the
# second is the main one when they differ); help: one kind for even i, none for odd i.


def reports_in(month: int, i: int) -> bool:
    return i % (3 + month) != 0


def answers(month: int, i: int) -> dict[str, Any]:
    first, second = KENDALA[(i + month) % 10], KENDALA[(i * 3) % 10]
    result: dict[str, Any] = {
        "status_operasional": STATUS[(i + month) % 4],
        "jumlah_anggota": 100 + i,
        "anggota_baru": i % 5,
        "omzet_bulan": 1_000_000 * i,
        "kegiatan": "Rapat pengurus",
        "kebutuhan_bantuan": [BANTUAN[(i // 2 + month) % 6]] if i % 2 == 0 else [],
    }
    if i % 6 == 5:
        result["kendala"] = ["NIHIL"]
    elif first == second:
        result["kendala"] = [first]  # one named: the main one is derived
    else:
        result["kendala"] = [first, second]
        result["kendala_utama"] = second
    return result


async def koperasi_ids(core: Core) -> list[int]:
    async with core.db.sessions() as session:
        rows = await session.scalars(select(Koperasi.id).join(Kelurahan).order_by(Kelurahan.kode))
        return list(rows.all())


async def write_reports(core: Core) -> None:
    """August to October for the 67 cooperatives. In October, every cooperative with i % 10 == 2
    sent a first revision that a second one corrected: only the second may count."""
    ids = await koperasi_ids(core)
    assert len(ids) == 67
    async with core.db.transaction() as session:
        for month, period in enumerate(MONTHS):
            for i, koperasi_id in enumerate(ids):
                if not reports_in(month, i):
                    continue
                late = i % 7 == 1
                day = 12 if late else 5
                at = datetime(period.next().year, period.next().month, day, 10, tzinfo=WIB)
                revisions = [answers(month, i)]
                if month == 2 and i % 10 == 2:
                    wrong = {
                        "status_operasional": "rutin",
                        "kendala": ["MODAL", "TEMPAT"],
                        "kendala_utama": "MODAL",
                        "kebutuhan_bantuan": ["pelatihan", "konsultasi"],
                    }
                    revisions.insert(0, wrong)
                session.add(
                    Report(
                        koperasi_id=koperasi_id,
                        period=period.key,
                        current_revision=len(revisions),
                        first_submitted_at=at,
                        last_submitted_at=at,
                        late=late,
                        **Report.counted(revisions[-1]),
                        revisions=[
                            ReportRevision(
                                revision=number,
                                answers=given,
                                submitted_by_name="Bendahara",
                                submitted_at=at,
                                late=late,
                            )
                            for number, given in enumerate(revisions, start=1)
                        ],
                    )
                )


def with_rekap(app: Any) -> None:
    """bot/app.py registers /rekap (ahead of the fallbacks)."""
    assert any(
        isinstance(handler, CommandHandler) and "rekap" in handler.commands
        for handlers in app.handlers.values()
        for handler in handlers
    )


@pytest.fixture
async def people(registry_loaded: Core, app: Any, chats: Chats) -> dict[str, LocalChat]:
    with_rekap(app)
    await write_reports(registry_loaded)
    return {
        "kota": await officer(registry_loaded, chats, "Oki", None),
        "curug": await officer(registry_loaded, chats, "Cici", "Curug"),
    }


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which must come first)."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def joined(messages: list[SentMessage]) -> str:
    return "\n".join(m.text for m in messages)


def alerts(chat: LocalChat, since: int) -> list[str]:
    return [
        str(call.params.get("text", ""))
        for call in chat.api.sent_since(since)
        if call.method == "answerCallbackQuery" and call.params.get("show_alert")
    ]


# The recap ------------------------------------------------------------------------------------


CITY_OCTOBER = """📊 <b>Rekap laporan Oktober 2026</b>
Seluruh kota, 67 koperasi

<b>Pelaporan</b>
Sudah melapor: <b>53</b> dari 67 (79%) (+3)
✅ Tepat waktu: 45
🕓 Terlambat: 8
❌ Belum melapor: 14

<b>Status usaha</b>
– Beroperasi rutin: 13
– Beroperasi sebagian: 13
– Persiapan: 13
– Belum beroperasi: 14
– Tidak diketahui (belum melapor): 14
Beroperasi (sebagian atau rutin): <b>26</b> (−8)

<b>Kendala</b> (jumlah koperasi; berapa yang menyebutnya kendala utama)
1. Kurang pendampingan/konsultasi: <b>14</b>; utama 7 (+6)
2. Perizinan belum lengkap: <b>13</b>; utama 6 (+5)
3. Sulit pasokan/pembeli/harga: <b>9</b>; utama 5 (+1)
4. Manajemen/pembukuan belum tertib: <b>8</b>; utama 4 (+1)
5. Modal terbatas: <b>7</b>; utama 7 (−1)
6. Kesulitan SIMKOPDES/aplikasi: <b>7</b>; utama 7 (−1)
7. Pemahaman perkoperasian masih kurang: <b>6</b> (−1)
8. Belum punya tempat usaha: <b>5</b>; utama 5 (−4)
9. Pengurus sibuk/kurang tenaga: <b>5</b> (−2)
10. Menunggu juknis/aturan: <b>4</b>; utama 4 (−4)
Tidak ada kendala: 8

<b>Bantuan yang diminta</b>
1. Fasilitasi modal: <b>5</b> (+5)
2. Fasilitasi tempat/aset: <b>5</b> (−1)
3. Fasilitasi perizinan: <b>5</b> (+5)
4. Pelatihan: <b>4</b> (−1)
5. Konsultasi: <b>4</b> (+4)
6. Kunjungan pendamping: <b>4</b> (−2)
Tidak meminta bantuan: 26

<b>Per kecamatan</b> (melapor/jumlah; tepat waktu, terlambat; beroperasi)
<i>Cipocok Jaya</i>: 7/8; 7 tepat, 0 terlambat; 4 beroperasi
<i>Curug</i>: 8/10; 6 tepat, 2 terlambat; 4 beroperasi
<i>Kasemen</i>: 8/10; 8 tepat, 0 terlambat; 5 beroperasi
<i>Serang</i>: 9/12; 7 tepat, 2 terlambat; 4 beroperasi
<i>Taktakan</i>: 10/13; 8 tepat, 2 terlambat; 4 beroperasi
<i>Walantaka</i>: 11/14; 9 tepat, 2 terlambat; 5 beroperasi

Angka dalam kurung: perubahan dibandingkan September 2026.
Grafik tersedia melalui tombol di bawah. Terima kasih."""

CURUG_OCTOBER = """📊 <b>Rekap laporan Oktober 2026</b>
Kecamatan Curug, 10 koperasi

<b>Pelaporan</b>
Sudah melapor: <b>8</b> dari 10 (80%) (+1)
✅ Tepat waktu: 6
🕓 Terlambat: 2
❌ Belum melapor: 2

<b>Status usaha</b>
– Beroperasi rutin: 2
– Beroperasi sebagian: 2
– Persiapan: 2
– Belum beroperasi: 2
– Tidak diketahui (belum melapor): 2
Beroperasi (sebagian atau rutin): <b>4</b> (−1)

<b>Kendala</b> (jumlah koperasi; berapa yang menyebutnya kendala utama)
1. Manajemen/pembukuan belum tertib: <b>2</b>; utama 1 (+1)
2. Perizinan belum lengkap: <b>2</b>; utama 1 (tetap)
3. Kurang pendampingan/konsultasi: <b>2</b>; utama 1 (tetap)
4. Sulit pasokan/pembeli/harga: <b>2</b>; utama 1 (tetap)
5. Modal terbatas: <b>1</b>; utama 1 (+1)
6. Menunggu juknis/aturan: <b>1</b>; utama 1 (tetap)
7. Kesulitan SIMKOPDES/aplikasi: <b>1</b>; utama 1 (tetap)
8. Pemahaman perkoperasian masih kurang: <b>1</b> (tetap)
9. Pengurus sibuk/kurang tenaga: <b>1</b> (tetap)
10. Belum punya tempat usaha: <b>0</b> (−1)
Tidak ada kendala: 1

<b>Bantuan yang diminta</b>
1. Pelatihan: <b>1</b> (+1)
2. Kunjungan pendamping: <b>1</b> (tetap)
3. Fasilitasi modal: <b>1</b> (+1)
4. Fasilitasi perizinan: <b>1</b> (+1)
5. Fasilitasi tempat/aset: <b>0</b> (−1)
Tidak meminta bantuan: 4

Angka dalam kurung: perubahan dibandingkan September 2026.
Grafik tersedia melalui tombol di bawah. Terima kasih."""

BUTTONS = [
    [
        {"text": "Grafik pelaporan", "callback_data": "k:chart:rate:2026-10"},
        {"text": "Grafik kendala", "callback_data": "k:chart:kendala:2026-10"},
    ]
]


async def test_city_and_kecamatan_recaps_give_the_exact_numbers(
    people: dict[str, LocalChat],
) -> None:
    # 27 November 2026: November's report has not opened, so the latest recap is October.
    (city,) = await people["kota"].send("/rekap")
    assert city.text == CITY_OCTOBER
    assert city.buttons == BUTTONS
    (curug,) = await people["curug"].send("/rekap")
    assert curug.text == CURUG_OCTOBER
    assert curug.buttons == BUTTONS
    for name in OTHER_KECAMATAN:
        assert name not in curug.text


async def test_a_month_can_be_asked_for(people: dict[str, LocalChat]) -> None:
    chat = people["kota"]
    (september,) = await chat.send("/rekap September 2026")
    assert "📊 <b>Rekap laporan September 2026</b>" in september.text
    # August had 44 reports, 36 operating; September persiapan is absent from the pattern.
    assert "Sudah melapor: <b>50</b> dari 67 (75%) (+6)\n✅ Tepat waktu: 43\n" in september.text
    assert "🕓 Terlambat: 7\n❌ Belum melapor: 17" in september.text
    assert "– Persiapan: 0\n– Belum beroperasi: 16\n" in september.text
    assert "Beroperasi (sebagian atau rutin): <b>34</b>" in september.text
    assert "1. Belum punya tempat usaha: <b>9</b>; utama 5" in september.text
    assert "perubahan dibandingkan Agustus 2026" in september.text
    assert september.button(0)["callback_data"] == "k:chart:rate:2026-09"

    (august,) = await chat.send("/rekap agustus 2026")
    assert "Sudah melapor: <b>44</b> dari 67 (66%)\n" in august.text
    assert "(+" not in august.text
    assert "(−" not in august.text
    assert "Belum ada laporan Juli 2026 sebagai pembanding." in august.text

    (unreadable,) = await chat.send("/rekap 13/2026")
    assert unreadable.text == (
        'Mohon maaf, saya tidak mengenali bulan "13/2026". Contoh: '
        "<code>/rekap Oktober 2026</code> atau <code>/rekap 10/2026</code>."
    )
    assert not unreadable.buttons
    (future,) = await chat.send("/rekap November 2026")
    assert "laporan bulan November 2026 belum dibuka" in future.text
    assert "<code>/rekap Oktober 2026</code>" in future.text
    (later,) = await chat.send("/rekap 2027-03")
    assert "laporan bulan Maret 2027 belum dibuka" in later.text


async def test_only_officers_get_a_recap(
    registry_loaded: Core, people: dict[str, LocalChat], chats: Chats
) -> None:
    board = await link(registry_loaded, chats, "36.73.04.1007", "Siti")
    (refused,) = await board.send("/rekap")
    assert refused.text.startswith("Mohon maaf, rekap laporan hanya untuk petugas Pemerintah Kota.")
    assert "/jadwal" in refused.text
    stranger = chats.user("Tamu", None)
    (refused,) = await stranger.send("/rekap Oktober 2026")
    assert "yang sudah terdaftar" in refused.text
    # A chart button forged by a board member shows nothing.
    start = len(board.api.calls)
    sent = await board.process(board.user.callback_update(refused, "k:chart:kendala:2026-10"))
    assert sent == []
    assert alerts(board, start) == ["Mohon maaf, grafik rekap hanya untuk petugas Pemerintah Kota."]
    with pytest.raises(NotAnOfficer):
        await recap(registry_loaded, await actor(registry_loaded, board), OCTOBER)


async def actor(core: Core, chat: LocalChat) -> Actor:
    async with core.db.sessions() as session:
        return await identify(session, "telegram", str(chat.user.user_id))


# Scope ----------------------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the handlers ask the chart module to draw (a stand-in PNG goes back)."""
    calls: list[dict[str, Any]] = []

    def fake(kind: str) -> Callable[..., bytes]:
        def draw(*args: Any, **kwargs: Any) -> bytes:
            calls.append({"kind": kind, "args": args, **kwargs})
            return PNG_SIGNATURE + b"stand-in"

        return draw

    monkeypatch.setattr(charts, "reporting_rate_png", fake("rate"))
    monkeypatch.setattr(charts, "obstacles_by_kecamatan_png", fake("kendala"))
    return calls


async def test_a_kecamatan_officer_sees_only_their_kecamatan_even_with_forged_buttons(
    people: dict[str, LocalChat], drawn: list[dict[str, Any]]
) -> None:
    chat = people["curug"]
    (summary,) = await chat.send("/rekap")

    (photo,) = await chat.press("Grafik kendala", summary)
    assert photo.kind == "photo"
    assert photo.file == ("rekap-kendala-2026-10.png", PNG_SIGNATURE + b"stand-in")
    assert photo.text == (
        "Kendala koperasi Kecamatan Curug, Oktober 2026 (8 dari 10 koperasi melapor). "
        "Terbanyak: Manajemen/pembukuan belum tertib (2), Perizinan belum lengkap (2), "
        "Kurang pendampingan/konsultasi (2)."
    )
    obstacles, kecamatan, counts = drawn[-1]["args"]
    assert kecamatan == ["Curug"]
    assert dict(zip(obstacles, (sum(row) for row in counts), strict=True)) == {
        "Manajemen/pembukuan belum tertib": 2,
        "Perizinan belum lengkap": 2,
        "Kurang pendampingan/konsultasi": 2,
        "Sulit pasokan/pembeli/harga": 2,
        "Modal terbatas": 1,
        "Menunggu juknis/aturan": 1,
        "Kesulitan SIMKOPDES/aplikasi": 1,
        "Pemahaman perkoperasian masih kurang": 1,
        "Pengurus sibuk/kurang tenaga": 1,
    }
    assert drawn[-1]["title"] == "Kendala koperasi, Kecamatan Curug\nOktober 2026 (10 koperasi)"

    (photo,) = await chat.press("Grafik pelaporan", summary)
    assert photo.file is not None
    assert photo.file[0] == "rekap-pelaporan-2026-10.png"
    assert "Kecamatan Curug" in photo.text
    assert "<b>8</b> dari 10 koperasi melapor (6 tepat waktu, 2 terlambat)" in photo.text
    (points,) = drawn[-1]["args"]
    assert len(points) == 12
    assert points[0] == ("Nov 25", 0.0, 0.0)
    assert points[-3:] == [("Agu 26", 50.0, 10.0), ("Sep 26", 60.0, 10.0), ("Okt 26", 60.0, 20.0)]
    assert drawn[-1]["title"] == (
        "Tingkat pelaporan koperasi, Kecamatan Curug\n12 bulan s.d. Oktober 2026 (10 koperasi)"
    )

    # Forged: another month is still Curug's; nothing names a scope, so none can be forged.
    (photo,) = await chat.process(chat.user.callback_update(summary, "k:chart:kendala:2026-09"))
    assert "Kecamatan Curug, September 2026 (7 dari 10 koperasi melapor)" in photo.text
    assert drawn[-1]["args"][1] == ["Curug"]
    assert sum(map(sum, drawn[-1]["args"][2])) == 12  # Curug's September mentions
    for text in (photo.text, summary.text, *(str(d) for d in drawn)):
        for name in OTHER_KECAMATAN:
            assert name not in text
    before = len(drawn)
    (empty,) = await chat.process(chat.user.callback_update(summary, "k:chart:kendala:2026-07"))
    assert empty.kind == "text"
    assert empty.text == (
        "Belum ada kendala yang dilaporkan koperasi Kecamatan Curug untuk bulan Juli 2026 "
        "(0 dari 10 koperasi melapor), sehingga grafik kendala belum dapat dibuat."
    )
    for forged, alert in [
        ("k:chart:rate:2026-11", "Mohon maaf, laporan bulan November 2026 belum dibuka"),
        ("k:chart:kendala:2026-13", "Tombol ini sudah tidak berlaku."),
        ("k:chart:kendala:2026-10:kota", "Tombol ini sudah tidak berlaku."),
        ("k:chart:kendala:2026-10;kecamatan=1", "Tombol ini sudah tidak berlaku."),
        ("k:chart:peta:2026-10", "Tombol ini sudah tidak berlaku."),
        ("k:", "Tombol ini sudah tidak berlaku."),
    ]:
        start = len(chat.api.calls)
        assert await chat.process(chat.user.callback_update(summary, forged)) == []
        (said,) = alerts(chat, start)
        assert said.startswith(alert), forged
    assert len(drawn) == before


# Charts -----------------------------------------------------------------------------------------


async def test_chart_buttons_send_png_photos(people: dict[str, LocalChat]) -> None:
    chat = people["kota"]
    (summary,) = await chat.send("/rekap")
    for label, name, caption in [
        (
            "Grafik pelaporan",
            "rekap-pelaporan-2026-10.png",
            "Tingkat pelaporan koperasi seluruh kota, 12 bulan s.d. Oktober 2026. "
            "Bulan Oktober 2026: <b>53</b> dari 67 koperasi melapor "
            "(45 tepat waktu, 8 terlambat).",
        ),
        (
            "Grafik kendala",
            "rekap-kendala-2026-10.png",
            "Kendala koperasi seluruh kota, Oktober 2026 (53 dari 67 koperasi melapor). "
            "Terbanyak: Kurang pendampingan/konsultasi (14), Perizinan belum lengkap (13), "
            "Sulit pasokan/pembeli/harga (9).",
        ),
    ]:
        start = len(chat.api.calls)
        (photo,) = await chat.press(label, summary)
        assert photo.kind == "photo"
        assert photo.text == caption
        assert photo.file is not None
        filename, data = photo.file
        assert filename == name
        width, height = png_size(data)
        assert width == 1080
        assert 600 <= height <= 2400
        methods = [c.method for c in chat.api.sent_since(start)]
        assert methods.index("answerCallbackQuery") < methods.index("sendPhoto")


def test_charts_render_directly() -> None:
    rate = charts.reporting_rate_png(
        [(f"M{i}", 40.0 + 4 * i, 10.0) for i in range(12)],
        title="Tingkat pelaporan koperasi, seluruh kota\n12 bulan s.d. Oktober 2026",
        on_time_label="Tepat waktu",
        late_label="Terlambat",
        axis_label="% koperasi yang melapor",
    )
    assert 600 <= png_size(rate)[1] <= 2400
    assert png_size(rate)[0] == 1080
    # More kecamatan than colours: the smaller ones are drawn as one; a "$" is only a dollar.
    kecamatan = [f"Kec ${i}" for i in range(14)]
    obstacles = ["Modal terbatas", "Pemahaman perkoperasian masih kurang", "Lainnya"]
    counts = [[(i + j) % 4 for j in range(14)] for i in range(3)]
    kendala = charts.obstacles_by_kecamatan_png(
        obstacles,
        kecamatan,
        counts,
        title="Kendala koperasi, seluruh kota\nOktober 2026",
        axis_label="Jumlah koperasi",
        others_label="Kecamatan lain",
    )
    width, height = png_size(kendala)
    assert width == 1080
    assert 600 <= height <= 2400
    with pytest.raises(ValueError, match="counts"):
        charts.obstacles_by_kecamatan_png(
            obstacles, kecamatan, counts[:2], title="", axis_label="", others_label=""
        )


# Size and period ----------------------------------------------------------------------------


async def test_a_long_recap_is_split_below_telegrams_limit(
    registry_loaded: Core, people: dict[str, LocalChat]
) -> None:
    # 150 more kecamatan of one cooperative each: the per-kecamatan lines outgrow one message
    # (and would a hundred, for a country's 7,000).
    now = registry_loaded.clock.now()
    async with registry_loaded.db.transaction() as session:
        for n in range(150):
            kecamatan = Kecamatan(kode=f"99.{n:05d}", nama=f"Uji {n:03d}")
            kelurahan = Kelurahan(
                kode=f"99.{n:05d}.1001", nama=f"Desa {n:03d}", kecamatan=kecamatan
            )
            session.add(
                Koperasi(
                    kelurahan=kelurahan, nama=f"Koperasi {n:03d}", created_at=now, updated_at=now
                )
            )
    sent = await people["kota"].send("/rekap")
    assert len(sent) == 2
    assert all(len(m.text) <= 4096 for m in sent)
    assert [bool(m.buttons) for m in sent] == [False] * (len(sent) - 1) + [True]
    text = joined(sent)
    assert "Seluruh kota, 217 koperasi" in text
    assert "Sudah melapor: <b>53</b> dari 217 (24%) (+3)" in text
    assert "❌ Belum melapor: 164" in text
    assert "– Tidak diketahui (belum melapor): 164" in text
    # 156 kecamatan: not 156 lines but the 50 with the lowest reporting rate (the new ones,
    # none reported; then by name), and where the rest is.
    assert (
        "<b>Per kecamatan</b> (melapor/jumlah; tepat waktu, terlambat; beroperasi): "
        "50 dengan pelaporan terendah dari 156\n"
    ) in text
    lines = [line for line in text.splitlines() if line.startswith("<i>")]
    assert lines == [
        f"<i>Uji {n:03d}</i>: 0/1; 0 tepat, 0 terlambat; 0 beroperasi" for n in range(50)
    ]
    assert (
        "… dan 106 kecamatan lainnya. Angka semua kecamatan dan koperasi ada dalam berkas "
        "Excel: <code>/ekspor Oktober 2026</code>."
    ) in text
    # Every part is whole HTML: no tag is cut across messages.
    for m in sent:
        assert m.text.count("<i>") == m.text.count("</i>")
        assert m.text.count("<b>") == m.text.count("</b>")


@pytest.mark.parametrize(
    ("at", "period"),
    [
        (datetime(2026, 11, 27, 9, 0, tzinfo=WIB), OCTOBER),
        (datetime(2026, 11, 5, 9, 0, tzinfo=WIB), OCTOBER),
        (datetime(2026, 11, 1, 8, 59, tzinfo=WIB), SEPTEMBER),
        (datetime(2026, 11, 1, 9, 0, tzinfo=WIB), OCTOBER),
        (datetime(2026, 12, 1, 8, 59, tzinfo=WIB), OCTOBER),
        (datetime(2026, 12, 1, 9, 0, tzinfo=WIB), Period(2026, 11)),
        (datetime(2027, 1, 20, 12, 0, tzinfo=WIB), Period(2026, 12)),
    ],
)
def test_the_latest_recap_is_of_the_latest_opened_report(at: datetime, period: Period) -> None:
    settings = Settings(database_url="sqlite:///unused.db", _env_file=None)  # type: ignore[call-arg]
    assert latest_period(settings, at) == period


async def test_recap_queries_do_not_grow_with_the_cooperatives(
    registry_loaded: Core, people: dict[str, LocalChat]
) -> None:
    """A handful of statements per recap and per chart, however many cooperatives."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    engine = registry_loaded.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        kota = await actor(registry_loaded, people["kota"])
        statements.clear()
        found = await recap(registry_loaded, kota, OCTOBER)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        # The registry, then the reports grouped by status, and by each counted answer.
        assert len(selects) == 5
        assert found.total == 67
        statements.clear()
        chart = await chart_view(registry_loaded, kota, "chart:rate:2026-10")
        assert isinstance(chart, Chart)
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_malformed_answers_count_as_nothing_chosen_on_both_databases(
    registry_loaded: Core, people: dict[str, LocalChat]
) -> None:
    """Answers are read as JSON text and parsed once per distinct text: a string where a list
    belongs, a number, unknown or repeated codes, and nulls count as they always did."""
    core = registry_loaded
    ids = await koperasi_ids(core)
    odd: list[dict[str, Any]] = [
        {"status_operasional": "rutin", "kendala": "MODAL", "kebutuhan_bantuan": 7},
        {"status_operasional": 3, "kendala": ["MODAL", "MODAL", "XYZ"], "kendala_utama": 5},
        {"kendala": ["PAHAM", "SDM"], "kendala_utama": "SDM", "kebutuhan_bantuan": None},
        {"kendala": [], "kendala_teratasi": "MODAL", "kendala_memburuk": ["SDM", "SDM"]},
    ]
    november = Period(2026, 11)
    async with core.db.transaction() as session:
        for koperasi_id, given in zip(ids, odd, strict=False):
            report = Report(
                koperasi_id=koperasi_id,
                period=november.key,
                current_revision=1,
                first_submitted_at=datetime(2026, 12, 2, 9, tzinfo=WIB),
                last_submitted_at=datetime(2026, 12, 2, 9, tzinfo=WIB),
                late=False,
            )
            report.count_answers(given)
            session.add(report)
            await session.flush()
            session.add(
                ReportRevision(
                    report_id=report.id,
                    revision=1,
                    answers=given,
                    submitted_by_name="Uji",
                    submitted_at=datetime(2026, 12, 2, 9, tzinfo=WIB),
                )
            )
    kota = await actor(core, people["kota"])
    for detail in (True, False):
        found = await recap(core, kota, november, obstacles_per_kecamatan=detail)
        now = found.current
        assert now.reported == 4
        assert dict(now.status) == {"rutin": 1}
        assert dict(now.obstacles) == {"MODAL": 1, "PAHAM": 1, "SDM": 1}
        assert dict(now.main) == {"MODAL": 1, "SDM": 1}
        assert now.no_obstacle == 2
        assert not now.help
        assert now.no_help == 4
        assert not now.solved
        assert dict(now.worse) == {"SDM": 1}


async def test_the_migration_counts_the_reports_written_before_it_alike(
    registry_loaded: Core, people: dict[str, LocalChat]
) -> None:
    """Migration 0010 fills the counted answers of every report from its current revision, with
    the JSON paths the recap read before: the recaps are the same after it, malformed answers
    included."""
    core = registry_loaded
    ids = await koperasi_ids(core)
    november = Period(2026, 11)
    odd: list[dict[str, Any]] = [
        {"status_operasional": "rutin", "kendala": "MODAL", "kebutuhan_bantuan": 7},
        {"status_operasional": 3, "kendala": ["MODAL", "MODAL", "XYZ"], "kendala_utama": 5},
        {"kendala": ["PAHAM", "SDM"], "kendala_utama": "SDM", "kebutuhan_bantuan": None},
        {"kendala": [], "kendala_teratasi": "MODAL", "kendala_memburuk": ["SDM", "SDM"]},
    ]
    async with core.db.transaction() as session:
        for koperasi_id, given in zip(ids, odd, strict=False):
            at = datetime(2026, 12, 2, 9, tzinfo=WIB)
            report = Report(
                koperasi_id=koperasi_id,
                period=november.key,
                current_revision=1,
                first_submitted_at=at,
                last_submitted_at=at,
                late=False,
                **Report.counted(given),
            )
            session.add(report)
            await session.flush()
            session.add(
                ReportRevision(
                    report_id=report.id,
                    revision=1,
                    answers=given,
                    submitted_by_name="Uji",
                    submitted_at=at,
                )
            )
    kota = await actor(core, people["kota"])
    before = [await recap(core, kota, p) for p in (SEPTEMBER, OCTOBER, november)]
    url = core.settings.database_url
    await core.db.engine.dispose()
    # Alembic runs its own event loop: in a thread.
    await asyncio.to_thread(downgrade, alembic_config(url), "0009")
    await asyncio.to_thread(upgrade, url)
    async with core.db.sessions() as session:
        filled = await session.scalar(select(func.count()).where(Report.kendala.is_not(None)))
    assert filled is not None
    assert filled > 4
    assert [await recap(core, kota, p) for p in (SEPTEMBER, OCTOBER, november)] == before
