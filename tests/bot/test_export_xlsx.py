"""The officers' workbook: three months of reports of the 67 sample cooperatives, exported by the
CLI and by /ekspor in chat, read back with openpyxl; and the kecamatan scope of exports and
profiles (a Curug officer never sees another kecamatan, whatever they type or forge)."""

from __future__ import annotations

import asyncio
import csv
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from sqlalchemy import select
from telegram import Update
from telegram.ext import CommandHandler

import handlers.ekspor
from bot import export
from bot.core import Core
from bot.export import MONEY_FORMAT, parse_period_range
from bot.laporan import KENDALA, MONTHLY_REPORT, STATUS, TEMPAT
from bot.periods import Period
from bot.reports import field_label
from handlers.common import settle
from handlers.local_api import LocalChat, SentMessage
from messages import Messages
from storage.models import (
    BoardMember,
    ChatIdentity,
    Jabatan,
    Kecamatan,
    Kelurahan,
    Koperasi,
    LedgerEntry,
    OutboxMessage,
    OutboxStatus,
    Person,
    Report,
    ReportRevision,
    Rsvp,
    RsvpAnswer,
    Summons,
    SummonsKoperasi,
)
from tests.bot.test_cli import cli
from tests.bot.test_reminders import CIPARE, SUKAWANA_CURUG, link, officer
from tests.conftest import WIB, Chats

MONTHS = [Period(2026, 8), Period(2026, 9), Period(2026, 10)]
KASEMEN = "36.73.02.1001"
OBSTACLES = KENDALA[:10]  # PAHAM .. PASAR
HEADER = 1


def wire(app: Any) -> None:
    """bot/app.py registers /ekspor and /koperasi ahead of the fallbacks."""
    commands = {
        c for h in app.handlers.get(0, []) if isinstance(h, CommandHandler) for c in h.commands
    }
    assert {"ekspor", "koperasi"} <= commands


# The data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One report as the fixture writes it (and as the export should show it)."""

    kode: str
    kecamatan: str
    period: Period
    answers: dict[str, Any]
    late: bool
    revisions: int
    first_at: datetime
    last_at: datetime


def answers_for(i: int, j: int, month: Period) -> dict[str, Any]:
    status = STATUS[(i + j) % 4]
    a: dict[str, Any] = {"status_operasional": status}
    if status != "belum":
        a["unit_usaha"] = ["sembako"] if i % 2 else ["sembako", "simpan_pinjam"]
    a.update(
        jumlah_anggota=20 + i + 5 * j,
        anggota_baru=j,
        simpanan_pokok_total=1_000_000 * (i + 1) + 100_000 * j,
        simpanan_wajib_bulan=50_000 * (j + 1),
        omzet_bulan=1_000 * (i * 1_000 + j),
        modal_baru=0 if i % 3 else 2_500_000,
    )
    if a["modal_baru"]:
        a["modal_sumber"] = ["simpanan", "apbd"]
    a.update(
        tempat_usaha=TEMPAT[i % 5],
        nib="ya" if i % 2 == 0 else "tidak",
        npwp="ya",
        akun_simkopdes="tidak",
        microsite="tidak",
        # A control character typed in the chat must not break the workbook.
        kegiatan=f"Rapat pengurus {month.key}" + ("\x07" if i == 1 else ""),
    )
    if (i + j) % 7 == 0:
        kendala = ["NIHIL"]
    else:
        first, second = OBSTACLES[(i + j) % 10], OBSTACLES[(3 * i + j + 1) % 10]
        kendala = [first] if first == second else [first, second]
    a["kendala"] = kendala
    # Last month's obstacles, asked about again: some solved, some worse.
    if j and i % 4 in (1, 3):
        before = "MODAL" if i % 4 == 1 else "SDM"
        a["kendala_lalu"] = [before]
        a["kendala_teratasi" if i % 4 == 1 else "kendala_memburuk"] = [before]
    if len(kendala) == 2:
        a["kendala_utama"] = kendala[1]
    if kendala != ["NIHIL"]:
        a["kendala_uraian"] = "Uraian kendala"
    a["kebutuhan_bantuan"] = ["pelatihan"] if j else []
    a["foto"] = ["file"] * (i % 3)
    return a


async def registry(core: Core) -> list[tuple[int, str, str]]:
    """(koperasi id, kode, kecamatan) by code."""
    async with core.db.sessions() as session:
        rows = await session.execute(
            select(Koperasi.id, Kelurahan.kode, Kecamatan.nama)
            .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
            .join(Kecamatan, Kecamatan.id == Kelurahan.kecamatan_id)
            .order_by(Kelurahan.kode)
        )
        return [(int(i), str(k), str(n)) for i, k, n in rows.all()]


async def write_reports(core: Core) -> list[Planned]:
    """About four in five cooperatives report each month; some late, some revised."""
    planned: list[Planned] = []
    coops = await registry(core)
    async with core.db.transaction() as session:
        for i, (koperasi_id, kode, kecamatan) in enumerate(coops):
            for j, month in enumerate(MONTHS):
                if (i + j) % 5 == 0:
                    continue
                late = (7 * i + j) % 6 == 0
                revisions = 2 if i % 9 == 0 else 1
                day = 12 if late else 2 + i % 7
                first_at = datetime.combine(
                    month.next().first_day().replace(day=day),
                    datetime.min.time().replace(hour=10, minute=15),
                    tzinfo=WIB,
                )
                last_at = first_at + timedelta(days=revisions - 1, minutes=30 * (revisions - 1))
                answers = answers_for(i, j, month)
                plan = Planned(kode, kecamatan, month, answers, late, revisions, first_at, last_at)
                planned.append(plan)
                report = Report(
                    koperasi_id=koperasi_id,
                    period=month.key,
                    current_revision=revisions,
                    first_submitted_at=first_at,
                    last_submitted_at=last_at,
                    late=late,
                    **Report.counted(answers),
                )
                session.add(report)
                await session.flush()
                if revisions == 2:
                    session.add(
                        ReportRevision(
                            report_id=report.id,
                            revision=1,
                            answers={**answers, "jumlah_anggota": 1, "kegiatan": "Salah ketik"},
                            submitted_by_name="Pengurus Lama",
                            submitted_at=first_at,
                            late=late,
                        )
                    )
                session.add(
                    ReportRevision(
                        report_id=report.id,
                        revision=revisions,
                        answers=answers,
                        submitted_by_name=f"Bendahara {kode[-4:]}",
                        submitted_at=last_at,
                        late=late,
                    )
                )
    return planned


def wib(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour, 0, tzinfo=WIB)


async def write_history(core: Core) -> dict[str, int]:
    """Reminders for October in Sukawana (Curug) and Cipare (Serang), and a summons in October
    to both and to Kasemen, with the answers; plus rows outside the months."""
    ids = {kode: koperasi_id for koperasi_id, kode, _ in await registry(core)}
    now = core.clock.now()
    async with core.db.transaction() as session:
        jabatan = {j.kode: j.id for j in (await session.scalars(select(Jabatan))).all()}
        people: dict[str, tuple[int, int]] = {}
        for number, (nama, kode, role) in enumerate(
            [
                ("Siti", SUKAWANA_CURUG, "bendahara"),
                ("Budi", SUKAWANA_CURUG, "ketua"),
                ("Ani", CIPARE, "bendahara"),
            ]
        ):
            person = Person(nama=nama, created_at=now)
            session.add(person)
            await session.flush()
            identity = ChatIdentity(
                person_id=person.id,
                channel="telegram",
                external_id=str(900_000 + number),
                created_at=now,
            )
            session.add(identity)
            session.add(
                BoardMember(
                    person_id=person.id,
                    koperasi_id=ids[kode],
                    jabatan_id=jabatan[role],
                    linked_at=now,
                )
            )
            await session.flush()
            people[nama] = (person.id, identity.id)

        def outbox(key: str, kind: str, topic: str, who: str, status: OutboxStatus) -> None:
            person_id, identity_id = people[who]
            session.add(
                OutboxMessage(
                    dedupe_key=key,
                    kind=kind,
                    topic=topic,
                    person_id=person_id,
                    chat_identity_id=identity_id,
                    text="-",
                    status=status,
                    next_attempt_at=now,
                    created_at=now,
                )
            )

        sukawana, cipare = ids[SUKAWANA_CURUG], ids[CIPARE]
        for kind, period, koperasi_id, recipients, at in [
            ("open", "2026-10", sukawana, 2, wib(11, 1)),
            ("reminder_1", "2026-10", sukawana, 2, wib(11, 5)),
            ("open", "2026-10", cipare, 1, wib(11, 1)),
            ("open", "2026-07", sukawana, 2, wib(8, 1)),  # outside the months
        ]:
            session.add(
                LedgerEntry(
                    kind=kind,
                    period=period,
                    target=f"k{koperasi_id}",
                    koperasi_id=koperasi_id,
                    recipients=recipients,
                    decided_at=at,
                )
            )
        for key, kind, topic, who, status in [
            ("o1", "open", f"report:2026-10:k{sukawana}", "Siti", OutboxStatus.SENT),
            ("o2", "open", f"report:2026-10:k{sukawana}", "Budi", OutboxStatus.UNREACHABLE),
            ("o3", "reminder_1", f"report:2026-10:k{sukawana}", "Siti", OutboxStatus.CANCELLED),
            ("o4", "reminder_1", f"report:2026-10:k{sukawana}", "Budi", OutboxStatus.PENDING),
            ("o5", "open", f"report:2026-10:k{cipare}", "Ani", OutboxStatus.SENT),
        ]:
            outbox(key, kind, topic, who, status)

        summons = []
        for hal, starts, created in [
            ("Rapat koordinasi KMP", wib(10, 20), wib(10, 10, 8)),
            ("Rapat Desember", wib(12, 7), wib(11, 20)),  # outside the months
        ]:
            s = Summons(
                nomor="",
                sifat="Penting",
                hal=hal,
                starts_at=starts,
                tempat="Aula Setda",
                acara="Evaluasi",
                narahubung="Budi Santoso",
                penandatangan="Wali Kota Serang",
                target={"kind": "all"},
                version=1,
                time_version=1,
                created_at=created,
            )
            session.add(s)
            await session.flush()
            s.nomor = f"{s.id:03d}/UND-KMP/X/2026"
            summons.append(s)
        october, december = summons
        for s in summons:
            for kode, recipients in ((SUKAWANA_CURUG, 2), (CIPARE, 1), (KASEMEN, 0)):
                session.add(
                    SummonsKoperasi(summons_id=s.id, koperasi_id=ids[kode], recipients=recipients)
                )
        topic = f"summons:{october.id}"
        outbox("s1", "summons", topic, "Siti", OutboxStatus.SENT)
        outbox("s2", "summons", topic, "Budi", OutboxStatus.FAILED)
        outbox("s3", "summons", topic, "Ani", OutboxStatus.SENT)
        for who, kode, answer, extra in [
            ("Siti", SUKAWANA_CURUG, RsvpAnswer.DIWAKILKAN, {"delegate_nama": "Joko"}),
            ("Budi", SUKAWANA_CURUG, RsvpAnswer.BERHALANGAN, {"alasan": "Sakit"}),
            ("Ani", CIPARE, RsvpAnswer.HADIR, {}),
        ]:
            session.add(
                Rsvp(
                    summons_id=october.id,
                    koperasi_id=ids[kode],
                    person_id=people[who][0],
                    answer=answer,
                    time_version=1,
                    answered_at=wib(10, 12),
                    **({"delegate_jabatan": "Sekretaris"} if "delegate_nama" in extra else {}),
                    **extra,
                )
            )
        return {"october": october.id, "december": december.id, **ids}


@pytest.fixture
async def months(registry_loaded: Core) -> tuple[list[Planned], dict[str, int]]:
    core = registry_loaded
    return await write_reports(core), await write_history(core)


# Reading the workbook back --------------------------------------------------------------------


def book(data: bytes | Path) -> Any:
    return load_workbook(BytesIO(data) if isinstance(data, bytes) else data)


def values(sheet: Any) -> list[list[Any]]:
    return [list(row) for row in sheet.iter_rows(values_only=True)]


def by_header(sheet: Any) -> list[dict[str, Any]]:
    rows = values(sheet)
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def expected_obstacles(planned: list[Planned], kecamatan: str | None) -> dict[str, Counter[Any]]:
    chosen: Counter[tuple[str, str, str]] = Counter()
    main: Counter[tuple[str, str, str]] = Counter()
    solved: Counter[tuple[str, str, str]] = Counter()
    worse: Counter[tuple[str, str, str]] = Counter()
    received: Counter[tuple[str, str]] = Counter()
    for p in planned:
        if kecamatan and p.kecamatan != kecamatan:
            continue
        received[(p.period.key, p.kecamatan)] += 1
        for code in p.answers["kendala"]:
            chosen[(p.period.key, p.kecamatan, code)] += 1
        for code in p.answers.get("kendala_teratasi", []):
            solved[(p.period.key, p.kecamatan, code)] += 1
        for code in p.answers.get("kendala_memburuk", []):
            worse[(p.period.key, p.kecamatan, code)] += 1
        named = [k for k in p.answers["kendala"] if k != "NIHIL"]
        utama = p.answers.get("kendala_utama") or (named[0] if len(named) == 1 else None)
        if utama:
            main[(p.period.key, p.kecamatan, utama)] += 1
    return {"chosen": chosen, "main": main, "solved": solved, "worse": worse, "received": received}


# The form's fields, labelled, between the registry and the submission columns.
LAPORAN_HEADERS = [
    "Kode wilayah",
    "Kecamatan",
    "Kelurahan",
    "Nama koperasi",
    "Bulan",
    *(field_label(Messages("id"), f.id) for f in MONTHLY_REPORT.fields),
    "Revisi",
    "Dikirim oleh",
    "Dikirim pada (WIB)",
    "Pertama dikirim (WIB)",
    "Terlambat",
]


def column_of(header: str) -> str:
    return str(get_column_letter(LAPORAN_HEADERS.index(header) + 1))


def riwayat_rows(ids: dict[str, int], curug_only: bool = False) -> list[list[Any]]:
    nomor = f"{ids['october']:03d}/UND-KMP/X/2026: Rapat koordinasi KMP"
    summons: list[Any] = [
        "Undangan",
        nomor,
        datetime(2026, 10, 10, 8, 0),
        datetime(2026, 10, 20, 9, 0),
    ]
    notice: list[Any] = ["Pengingat laporan"]
    cipare: list[Any] = ["36.73.01.1002", "Serang", "Cipare", "2026-10"]
    kasemen: list[Any] = ["36.73.02.1001", "Kasemen", "Kasemen", "2026-10"]
    sukawana: list[Any] = ["36.73.04.1007", "Curug", "Sukawana", "2026-10"]
    rows: list[list[Any]] = [
        [*cipare, *summons, 1, 1, 0, 0, 0, 0, "Ani: hadir", "Ya", "Tidak"],
        [*cipare, *notice, "Pembukaan laporan", datetime(2026, 11, 1, 9), None, 1, 1, 0, 0, 0, 0]
        + [None] * 3,
        [*kasemen, *summons, 0, 0, 0, 0, 0, 0, "(belum ada jawaban)", "Tidak", "Tidak"],
        [
            *sukawana,
            *summons,
            2,
            1,
            1,
            0,
            0,
            0,
            "Budi: berhalangan (Sakit); Siti: diwakilkan kepada Joko (Sekretaris)",
            "Ya",
            "Tidak",
        ],
        [*sukawana, *notice, "Pembukaan laporan", datetime(2026, 11, 1, 9), None, 2, 1, 0, 1, 0, 0]
        + [None] * 3,
        [*sukawana, *notice, "Pengingat ke-1", datetime(2026, 11, 5, 9), None, 2, 0, 0, 0, 1, 1]
        + [None] * 3,
    ]
    return rows[3:] if curug_only else rows


# The tests ------------------------------------------------------------------------------------


async def test_cli_exports_three_months_as_a_workbook(
    months: tuple[list[Planned], dict[str, int]], cli_env: dict[str, str], tmp_path: Path
) -> None:
    planned, ids = months
    out = tmp_path / "ekspor" / "kmp.xlsx"
    result = cli(
        "export",
        "--period",
        "2026-08..2026-10",
        "--format",
        "xlsx",
        "--out",
        str(out),
        env=cli_env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"Ekspor laporan Agustus 2026 s.d. Oktober 2026 (XLSX): 201 baris (koperasi per bulan) "
        f"ditulis ke {out}."
    )
    assert not list(out.parent.glob(".*partial"))
    wb = book(out)
    assert wb.sheetnames == ["Laporan", "Kendala", "Riwayat"]

    laporan = wb["Laporan"]
    rows = values(laporan)
    assert rows[0] == LAPORAN_HEADERS
    for label in ("Status usaha", "Simpanan pokok (kumulatif)", "Omzet bulan ini", "Kendala utama"):
        assert label in LAPORAN_HEADERS
    assert len(rows) == HEADER + 67 * 3
    assert laporan.freeze_panes == "A2"
    assert laporan.auto_filter.ref == f"A1:{column_of('Terlambat')}202"
    assert laporan.column_dimensions["D"].width == 40
    assert laporan.column_dimensions[column_of("Omzet bulan ini")].width == 18
    # Ordered by code, then month.
    assert [r[0] for r in rows[1:4]] == ["36.73.01.1001"] * 3
    assert [r[4] for r in rows[1:4]] == ["2026-08", "2026-09", "2026-10"]
    records = by_header(laporan)
    sent = Counter(r["Bulan"] for r in records if r["Dikirim pada (WIB)"] is not None)
    assert sent == Counter(p.period.key for p in planned)
    assert sum(1 for r in records if r["Terlambat"] == "Ya") == sum(p.late for p in planned)

    # Serang (first cooperative, i=0) in August: not reported (0 + 0) % 5 == 0: empty answers.
    first = records[0]
    assert first["Kelurahan"] == "Serang"
    assert first["Nama koperasi"] == "Koperasi Kelurahan Merah Putih Serang"
    assert all(first[h] is None for h in LAPORAN_HEADERS[5:])
    # Serang in September (i=0, j=1): revised twice, the second revision is shown.
    september = records[1]
    assert september["Status usaha"] == "Persiapan"
    assert september["Unit usaha berjalan"] == "Gerai sembako; Unit simpan pinjam"
    assert september["Jumlah anggota"] == 25
    assert september["Tambahan modal"] == 2_500_000
    assert september["Sumber modal"] == "Simpanan anggota; APBD/hibah pemda"
    assert september["Kendala"] == "Manajemen/pembukuan belum tertib; Modal terbatas"
    assert september["Kendala utama"] == "Modal terbatas"
    assert september["Kegiatan utama"] == "Rapat pengurus 2026-09"
    assert september["Bantuan yang dibutuhkan"] == "Pelatihan"
    assert september["Foto"] == 0
    assert september["Revisi"] == 2
    assert september["Dikirim oleh"] == "Bendahara 1001"
    assert september["Dikirim pada (WIB)"] == datetime(2026, 10, 3, 10, 45)
    assert september["Pertama dikirim (WIB)"] == datetime(2026, 10, 2, 10, 15)
    assert september["Terlambat"] == "Tidak"
    money = laporan.cell(row=3, column=LAPORAN_HEADERS.index("Simpanan pokok (kumulatif)") + 1)
    assert money.value == 1_100_000
    assert money.number_format == MONEY_FORMAT
    when = laporan.cell(row=3, column=LAPORAN_HEADERS.index("Dikirim pada (WIB)") + 1)
    assert when.number_format == "dd/mm/yyyy hh:mm"
    cipare = next(r for r in records if r["Kode wilayah"] == CIPARE and r["Bulan"] == "2026-09")
    assert cipare["Kegiatan utama"] == "Rapat pengurus 2026-09"
    # Sukawana (Curug) in October: i=42, j=2; on time ((7*42+2) % 6 == 2).
    sukawana = next(
        r for r in records if r["Kode wilayah"] == SUKAWANA_CURUG and r["Bulan"] == "2026-10"
    )
    assert sukawana["Kecamatan"] == "Curug"
    assert sukawana["Status usaha"] == "Belum beroperasi"
    assert sukawana["Unit usaha berjalan"] is None  # not asked when not operating
    assert sukawana["Omzet bulan ini"] == 42_002_000
    assert sukawana["NIB"] == "Ya"
    assert sukawana["Tempat usaha"] == "Pinjam pakai aset Pemkot"
    assert sukawana["Terlambat"] == "Tidak"

    kendala = by_header(wb["Kendala"])
    assert len(kendala) == 3 * 6 * 12
    expected = expected_obstacles(planned, None)
    for row in kendala:
        key = (row["Bulan"], row["Kecamatan"], row["Kode kendala"])
        assert row["Dipilih (koperasi)"] == expected["chosen"][key], key
        assert row["Sebagai kendala utama"] == expected["main"][key], key
        assert row["Teratasi dari bulan lalu"] == expected["solved"][key], key
        assert row["Makin berat dari bulan lalu"] == expected["worse"][key], key
        assert row["Laporan masuk"] == expected["received"][key[:2]], key
    modal = next(
        r
        for r in kendala
        if (r["Bulan"], r["Kecamatan"], r["Kode kendala"]) == ("2026-10", "Curug", "MODAL")
    )
    assert modal["Kendala"] == "Modal terbatas"
    # Curug is i = 36..45: in October i % 4 == 1 for 37, 41, 45, all reporting (i + 2) % 5 != 0.
    assert modal["Teratasi dari bulan lalu"] == 3
    assert sum(r["Dipilih (koperasi)"] for r in kendala if r["Kode kendala"] == "NIHIL") == sum(
        1 for p in planned if p.answers["kendala"] == ["NIHIL"]
    )

    riwayat = wb["Riwayat"]
    assert values(riwayat)[1:] == riwayat_rows(ids)
    assert riwayat.auto_filter.ref == "A1:Q7"


async def test_cli_csv_range_of_one_kecamatan(
    months: tuple[list[Planned], dict[str, int]], cli_env: dict[str, str], tmp_path: Path
) -> None:
    planned, _ = months
    out = tmp_path / "curug.csv"
    result = cli(
        "export",
        "--period",
        "2026-09..2026-10",
        "--kecamatan",
        "curug",
        "--out",
        str(out),
        env=cli_env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "(CSV, Kecamatan Curug): 20 baris" in result.stdout
    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20
    assert list(rows[0])[:3] == ["periode", "kode_wilayah", "kecamatan"]
    assert {r["kecamatan"] for r in rows} == {"Curug"}
    assert [r["periode"] for r in rows] == ["2026-09"] * 10 + ["2026-10"] * 10
    reported = {(p.kode, p.period.key) for p in planned if p.kecamatan == "Curug"}
    assert {(r["kode_wilayah"], r["periode"]) for r in rows if r["dikirim_pada"]} == {
        k for k in reported if k[1] != "2026-08"
    }


def test_cli_refuses_bad_export_input_with_one_line(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'k.db'}", "TELEGRAM_BOT_TOKEN": ""}
    cli("init", "--sample", env=env, cwd=tmp_path)
    for args, line in [
        (["--period", "2026-10..2026-08"], 'Rentang "2026-10..2026-08" terbalik'),
        (["--period", "2026-10", "--format", "pdf"], 'Format "pdf" tidak dikenal'),
        (["--period", "2026-10", "--kecamatan", "Bogor"], 'Kecamatan "Bogor" tidak ada'),
    ]:
        result = cli("export", *args, "--out", str(tmp_path / "x.xlsx"), env=env, cwd=tmp_path)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(line), result.stderr
    assert not (tmp_path / "x.xlsx").exists()


def test_period_ranges() -> None:
    assert parse_period_range("2026-10") == [Period(2026, 10)]
    assert parse_period_range(" 2025-11 .. 2026-02 ") == [
        Period(2025, 11),
        Period(2025, 12),
        Period(2026, 1),
        Period(2026, 2),
    ]
    assert len(parse_period_range("2024-01..2026-12")) == 36
    for bad, code in [
        ("2026-13", "period"),
        ("Oktober", "period"),
        ("2026-01..2026-02..2026-03", "period"),
        ("2026-10..2026-08", "range"),
        ("2024-01..2027-01", "too_long"),
    ]:
        with pytest.raises(Exception, match=code):
            parse_period_range(bad)


async def ask_export(chat: LocalChat, text: str) -> SentMessage:
    sent = await chat.send(text)
    documents = [m for m in sent if m.kind == "document"]
    assert len(documents) == 1, [m.text for m in sent]
    return documents[0]


async def test_ekspor_in_chat_keeps_to_the_officers_kecamatan(
    registry_loaded: Core, app: Any, chats: Chats, months: tuple[list[Planned], dict[str, int]]
) -> None:
    core = registry_loaded
    wire(app)
    planned, ids = months
    curug = await officer(core, chats, "Cici", "Curug")
    document = await ask_export(curug, "/ekspor")  # default: October (27 November 2026)
    assert document.file is not None
    filename, content = document.file
    assert filename == "laporan-kmp-2026-10-curug.xlsx"
    in_curug = [p for p in planned if p.kecamatan == "Curug" and p.period == MONTHS[-1]]
    assert document.text == (
        "<b>Rekap laporan KMP Oktober 2026</b> — Kecamatan Curug\n\n"
        f"10 koperasi: {len(in_curug)} sudah melapor ({sum(p.late for p in in_curug)} "
        f"terlambat), {10 - len(in_curug)} belum melapor.\n"
        "Lembar: Laporan, Kendala, Riwayat."
    )
    wb = book(content)
    laporan = by_header(wb["Laporan"])
    assert len(laporan) == 10
    assert {r["Kecamatan"] for r in laporan} == {"Curug"}
    assert {r["Bulan"] for r in laporan} == {"2026-10"}
    kendala = by_header(wb["Kendala"])
    assert len(kendala) == 12
    assert {r["Kecamatan"] for r in kendala} == {"Curug"}
    expected = expected_obstacles(planned, "Curug")
    for row in kendala:
        assert (
            row["Dipilih (koperasi)"]
            == expected["chosen"][("2026-10", "Curug", row["Kode kendala"])]
        )
    assert values(wb["Riwayat"])[1:] == riwayat_rows(ids, curug_only=True)

    city = await officer(core, chats, "Oki", None)
    september = await ask_export(city, "/ekspor September 2026")
    assert september.file is not None
    assert september.file[0] == "laporan-kmp-2026-09-kota.xlsx"
    assert "— seluruh kota" in september.text
    assert len(by_header(book(september.file[1])["Laporan"])) == 67

    wrong = await city.send("/ekspor kemarin lusa")
    assert wrong[-1].kind == "text"
    assert 'tidak mengenali bulan "kemarin lusa"' in wrong[-1].text
    assert "<code>/ekspor Oktober 2026</code>" in wrong[-1].text
    future = await city.send("/ekspor Januari 2027")
    assert "belum berjalan" in future[-1].text
    board = await link(core, chats, SUKAWANA_CURUG, "Dewi")
    refused = await board.send("/ekspor")
    assert refused[-1].kind == "text"
    assert "hanya untuk petugas Dinas" in refused[-1].text


async def test_a_running_bot_answers_others_while_an_export_is_being_built(
    registry_loaded: Core, app: Any, chats: Chats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A country's workbook takes seconds: the export answers in a task of its own, so a
    treasurer's /lapor sent meanwhile is answered at once; the document follows."""
    core = registry_loaded
    wire(app)
    city = await officer(core, chats, "Oki", None)
    dewi = await link(core, chats, SUKAWANA_CURUG, "Dewi")
    building, finish = asyncio.Event(), asyncio.Event()
    real = handlers.ekspor.officer_export

    async def slow_export(*args: Any) -> Any:
        building.set()
        await finish.wait()  # as long as a national export takes
        return await real(*args)

    monkeypatch.setattr(handlers.ekspor, "officer_export", slow_export)
    start = len(city.api.calls)
    await app.start()
    try:
        # Handled (the export started) without waiting for the workbook.
        await asyncio.wait_for(
            app.process_update(Update.de_json(city.user.text_update("/ekspor"), app.bot)), 5
        )
        await asyncio.wait_for(building.wait(), 5)
        answered = await dewi.send("/lapor")
        assert "Oktober 2026" in answered[0].text  # answered while the export is being built
        # Asked again meanwhile: told it is coming, not queued a second time.
        again = await city.send("/ekspor")
        assert [m.text for m in again] == [
            "Mohon tunggu sebentar: berkas Excel yang Bapak/Ibu minta sebelumnya masih "
            "disiapkan dan akan segera terkirim."
        ]
        assert "sendDocument" not in [c.method for c in city.api.sent_since(start)]
        finish.set()
        await settle(app)
        documents = [c.message for c in city.api.sent_since(start) if c.method == "sendDocument"]
        assert [d.file[0] for d in documents if d is not None and d.file] == [
            "laporan-kmp-2026-10-kota.xlsx"
        ]
    finally:
        finish.set()
        await app.stop()


async def test_an_export_that_fails_in_the_background_is_apologised_for(
    registry_loaded: Core, app: Any, chats: Chats, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = registry_loaded
    wire(app)
    city = await officer(core, chats, "Oki", None)

    async def broken(*_args: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(handlers.ekspor, "officer_export", broken)
    await app.start()
    try:
        sent = await city.send("/ekspor")
    finally:
        await app.stop()
    assert [m.kind for m in sent] == ["text"]
    assert "Mohon maaf, terjadi gangguan" in sent[0].text


async def test_a_curug_officer_cannot_open_another_kecamatans_profile(
    registry_loaded: Core, app: Any, chats: Chats, api: Any, months: tuple[list[Planned], Any]
) -> None:
    core = registry_loaded
    wire(app)
    _, ids = months
    curug = await officer(core, chats, "Cici", "Curug")
    typed = await curug.send("/koperasi Cipare")
    assert 'tidak ada koperasi yang cocok dengan "Cipare" di Kecamatan Curug' in typed[-1].text
    assert "/koperasi Cilaku" in typed[-1].text
    # The ambiguous name: only the Curug one is in scope, so it is shown without asking.
    sukawana = await curug.send("/koperasi Sukawana")
    shown = "\n".join(m.text for m in sukawana)
    assert "Kelurahan Sukawana, Kecamatan Curug" in shown
    assert not sukawana[-1].buttons
    assert "• Budi — Ketua\n• Siti — Bendahara" in shown
    assert "– Budi: berhalangan (Sakit)" in shown
    assert "Cipare" not in shown
    assert "Serang" not in shown
    # A forged button naming Cipare (Kec. Serang) shows nothing but the stale-button alert.
    before = len(api.calls)
    forged = await curug.process(curug.user.callback_update(sukawana[-1], f"o:{ids[CIPARE]}"))
    assert forged == []
    alerts = [c for c in api.calls[before:] if c.method == "answerCallbackQuery"]
    assert alerts[0].params.get("show_alert") is True
    assert all("Cipare" not in str(c.params) for c in api.calls[before:])
    garbage = await curug.process(curug.user.callback_update(sukawana[-1], "o:xyz"))
    assert garbage == []


async def test_a_big_workbook_is_written_alike_by_a_child_process(
    registry_loaded: Core,
    months: tuple[list[Planned], dict[str, int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From SEPARATE_PROCESS_ROWS rows on, a child process writes the XML (on the other core):
    the same parts, byte for byte, to a file or to a buffer."""
    here = BytesIO()
    alone = await export.export_xlsx(registry_loaded, MONTHS, here, None)
    assert alone.writer_peak_mib is None
    monkeypatch.setattr(export, "SEPARATE_PROCESS_ROWS", 1)
    buffer = BytesIO()
    child = await export.export_xlsx(registry_loaded, MONTHS, buffer, None)
    path = tmp_path / "kmp.xlsx"
    await export.export_xlsx(registry_loaded, MONTHS, path, None)
    assert child.writer_peak_mib is not None
    assert (child.rows, child.history_rows, child.obstacle_rows) == (
        alone.rows,
        alone.history_rows,
        alone.obstacle_rows,
    )

    def parts(data: bytes) -> dict[str, bytes]:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            assert archive.testzip() is None
            return {name: archive.read(name) for name in archive.namelist()}

    expected = parts(here.getvalue())
    assert parts(buffer.getvalue()) == expected
    assert parts(path.read_bytes()) == expected
    assert book(buffer.getvalue()).sheetnames == ["Laporan", "Kendala", "Riwayat"]
