"""The registry: the sample, idempotent imports of CSV and XLSX, bad rows, name lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from bot import registry
from bot.core import Core
from storage.models import Kecamatan, Kelurahan, Koperasi


async def test_sample_registry_has_67_cooperatives_in_6_kecamatan(registry_loaded: Core) -> None:
    async with registry_loaded.db.sessions() as session:
        assert await session.scalar(select(func.count(Koperasi.id))) == 67
        assert await session.scalar(select(func.count(Kecamatan.id))) == 6
        curug = await session.scalar(select(Kecamatan).where(Kecamatan.kode == "36.73.04"))
        assert curug is not None
        assert curug.nama == "Curug"
        coop = await session.scalar(
            select(Koperasi).join(Kelurahan).where(Kelurahan.kode == "36.73.04.1007")
        )
        assert coop is not None
        assert coop.nama == "Koperasi Kelurahan Merah Putih Sukawana"


async def test_reimporting_the_sample_changes_nothing(registry_loaded: Core) -> None:
    report = await registry.import_file(
        registry_loaded.db, registry.SAMPLE_REGISTRY, registry_loaded.clock.now(), "test"
    )
    assert (report.created, report.updated, report.unchanged) == (0, 0, 67)
    assert await registry.count_koperasi(registry_loaded.db) == 67


async def test_bad_rows_are_reported_by_line_and_the_rest_imports(
    core: Core, tmp_path: Path
) -> None:
    csv_file = tmp_path / "coops.csv"
    csv_file.write_text(
        "kode_wilayah;kecamatan;kelurahan;nama;telepon;email\n"
        "36.73.01.1001;Serang;Serang;;0812-1111-2222;serang@contoh.id\n"
        "36.73.01;Serang;Cipare;;;\n"
        ";Serang;Kosong;;;\n"
        "36.73.01.1001;Serang;Serang lagi;;;\n"
        "36.73.02.1001;Kasemen;;;;\n"
        "36.73.02.1002;Kasemen;Warung Jaud;;nomor saya;\n"
        "36.73.02.1003;Kasemen;Kasunyatan;;;bukan-email\n"
        "36.73.01.1002;Serang Kota;Cipare;;;\n"
        "\n"
        "36.73.02.1004;Kasemen;Mesjid Priyayi;Koperasi Priyayi Jaya;;\n",
        encoding="utf-8",
    )
    report = await registry.import_file(core.db, csv_file, core.clock.now(), "test")

    assert [(e.line, e.code) for e in report.errors] == [
        (3, "kode_invalid"),
        (4, "kode_missing"),
        (5, "kode_duplicate"),
        (6, "kelurahan_missing"),
        (7, "telepon_invalid"),
        (8, "email_invalid"),
        (9, "kecamatan_conflict"),
    ]
    assert report.created == 2
    text = core.messages.render("cli_import", file=csv_file, report=report)
    assert 'baris 3: kode wilayah "36.73.01" tidak sah (contoh: 36.73.01.1008)' in text
    assert "baris 5: kode wilayah 36.73.01.1001 sudah ada di baris 2" in text
    async with core.db.sessions() as session:
        names = set((await session.scalars(select(Koperasi.nama))).all())
        serang = await session.scalar(select(Koperasi).where(Koperasi.telepon.is_not(None)))
    assert names == {"Koperasi Kelurahan Merah Putih Serang", "Koperasi Priyayi Jaya"}
    assert serang is not None
    assert serang.email == "serang@contoh.id"


async def test_reimport_updates_contact_fields_and_counts(
    registry_loaded: Core, tmp_path: Path
) -> None:
    path = tmp_path / "update.csv"
    path.write_text(
        "kode_kemendagri,kecamatan,kelurahan,alamat,telepon\n"
        "36.73.04.1007,Curug,Sukawana,Jl. Raya Curug No. 1,081234567890\n"
        "36.73.01.1008,Serang,Sukawana,,\n",
        encoding="utf-8",
    )
    first = await registry.import_file(registry_loaded.db, path, registry_loaded.clock.now(), "t")
    second = await registry.import_file(registry_loaded.db, path, registry_loaded.clock.now(), "t")
    assert (first.created, first.updated, first.unchanged) == (0, 1, 1)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 2)
    assert await registry.count_koperasi(registry_loaded.db) == 67


async def test_xlsx_import(core: Core, tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Kode Kemendagri", "Kecamatan", "Kelurahan", "Nama Koperasi", "No HP"])
    sheet.append(["36.73.05.1001", "Cipocok Jaya", "Cipocok Jaya", None, 81298765432])
    sheet.append(["36.73.05.100X", "Cipocok Jaya", "Salah", None, None])
    sheet.append(["36.73.05.1002", "Cipocok Jaya", "Banjar Agung", "KKMP Banjaragung", None])
    path = tmp_path / "coops.xlsx"
    book.save(path)

    report = await registry.import_file(core.db, path, core.clock.now(), "test")

    assert report.created == 2
    assert [(e.line, e.code) for e in report.errors] == [(3, "kode_invalid")]
    async with core.db.sessions() as session:
        phone = await session.scalar(select(Koperasi.telepon).where(Koperasi.telepon.is_not(None)))
    assert phone == "81298765432"


async def test_file_without_the_needed_columns_is_refused(core: Core, tmp_path: Path) -> None:
    path = tmp_path / "wrong.csv"
    path.write_text("nama,alamat\nKoperasi A,Jl. B\n", encoding="utf-8")
    with pytest.raises(registry.RegistryFileError) as raised:
        await registry.import_file(core.db, path, core.clock.now(), "test")
    assert raised.value.code == "missing_columns"
    assert raised.value.value == "kode, kecamatan, kelurahan"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Kalang Anyar", ["Kalanganyar"]),
        ("sumurpecung", ["Sumur Pecung"]),
        ("Penancangan", ["Panancangan"]),
        ("36.73.04.1007", ["Sukawana (Curug)"]),
        ("Sukawana (Curug)", ["Sukawana (Curug)"]),
        ("sukawana", ["Sukawana (Serang)", "Sukawana (Curug)"]),
        ("Kel. Lontar Baru", ["Lontarbaru"]),
        ("tidak ada", []),
    ],
)
async def test_find_koperasi_by_name_variants(
    registry_loaded: Core, query: str, expected: list[str]
) -> None:
    async with registry_loaded.db.sessions() as session:
        found = await registry.find_koperasi(session, query)
    assert [c.label for c in found] == expected
