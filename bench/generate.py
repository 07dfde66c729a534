"""Generate a national-scale database for bench/scale.py: N cooperatives with three linked board
members each, months of monthly reports, and the reminder history of the last months.

    .venv/bin/python bench/generate.py --url /tmp/koperasi-scale.db
    .venv/bin/python bench/generate.py --url postgresql://postgres@127.0.0.1:5432/bench_scale

The schema comes from the project's migrations; rows are written in batches of `--batch` (Core
executemany on SQLite, COPY on PostgreSQL) in one transaction per table group, with the ids
chosen here so no row has to be read back (PostgreSQL's sequences are moved past them). Rows
have the shape the app writes (bot/reports.py `_submit`, bot/reminders.py `_board_notice`,
bot/outbox.py `enqueue`; the audit log of each submission is left out); the distributions:

- registry: the 67 sample cooperatives of Kota Serang, then synthetic kecamatan of 6 to 16
  villages each under real province codes (about one in ten a kelurahan, the rest desa);
- three board members per cooperative (ketua, sekretaris, bendahara), each a person with a
  Telegram identity; 2 % blocked the bot; one city-wide officer;
- reports: the share of cooperatives reporting grows from 10 % in the first month to 60 % in
  the last, mostly the same cooperatives month after month; about one report in five late, one
  in sixteen revised; operating status advancing over time; obstacles drawn with a skew (MODAL,
  PAHAM, TEMPAT most named; NIHIL when none), carried forward as the form does (solved, worse);
  members, savings and turnover log-normal;
- the last `--history-months` months: the opening notice and both reminders decided in the
  ledger for every cooperative that had not reported by then, with their outbox rows (sent).

The last row written is an audit-log entry (action `bench.generated`) describing the data, so
a half-written database is never mistaken for a complete one.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import JSON, insert
from sqlalchemy.ext.asyncio import AsyncConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    GENERATED,
    LAST_PERIOD,
    async_url,
    pg_create_database,
    pg_database_exists,
    pg_drop_database,
    sqlite_file,
)
from bot.config import Settings
from bot.laporan import BANTUAN, KENDALA, SUMBER_MODAL, TEMPAT, UNIT_USAHA
from bot.periods import Period
from bot.registry import SAMPLE_REGISTRY, default_name
from bot.reminders import calendar
from bot.reports import deadline, report_topic
from messages import Messages
from storage.db import create_engine
from storage.migrate import upgrade
from storage.models import (
    AuditLog,
    BoardMember,
    ChatIdentity,
    Jabatan,
    Kecamatan,
    Kelurahan,
    Koperasi,
    LedgerEntry,
    Officer,
    OutboxMessage,
    OutboxStatus,
    Person,
    Report,
    ReportRevision,
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Province codes (Kemendagri); Kota Serang (36.73) comes from the sample registry.
PROVINCES = _words(
    "11 12 13 14 15 16 17 18 19 21 31 32 33 34 35 36 51 52 53 61 62 63 64 65 71 72 73 74 "
    "75 76 81 82 91 92 93 94 95 96"
)
_HEADS = _words(
    "Suka Sumber Karang Tanjung Sido Mekar Pasir Bojong Wono Kali Banjar Tegal Muara Batu "
    "Gunung Rawa Jati Teluk Padang Cibodas Ciherang Tanah Lubuk Sungai Air"
)
_TAILS = _words(
    "jaya makmur mulya rejo sari asih maju harjo agung baru indah wangi mukti raharja "
    "lestari mekar tengah rahayu sejahtera permai"
)
FIRST = _words(
    "Siti Budi Ahmad Dewi Agus Sri Bambang Rina Hendra Yuni Joko Wati Andi Nur Eko Fitri "
    "Dedi Lestari Rudi Ani Slamet Ratna Hasan Maya Yusuf Endang Iwan Tuti Asep Neneng "
    "Made Ketut Putu Wayan Fajar Indah Rizki Ayu Teguh Sari"
)
LAST = _words(
    "Aminah Santoso Wijaya Rahayu Hidayat Susanti Saputra Lestari Nugroho Kurniawan "
    "Setiawan Pratama Siregar Nasution Harahap Simanjuntak Sembiring Hutapea Tanjung "
    "Lubis Pohan Sitompul Manurung Daulay Hasibuan Permana Gunawan Suryadi Hakim Ramadhan "
    "Firmansyah Maulana Syahputra Purnomo Utami Wulandari Anggraini Handayani Puspita"
)
STATUS_UP = {"belum": 0.07, "persiapan": 0.05, "sebagian": 0.035}
NEXT_STATUS = {"belum": "persiapan", "persiapan": "sebagian", "sebagian": "rutin"}
# How often each obstacle is named (independently); none named means NIHIL.
OBSTACLE_WEIGHT = {
    "PAHAM": 0.30,
    "MANAJEMEN": 0.20,
    "MODAL": 0.42,
    "TEMPAT": 0.26,
    "LEGALITAS": 0.14,
    "SDM": 0.16,
    "PENDAMPINGAN": 0.18,
    "REGULASI": 0.11,
    "DIGITAL": 0.09,
    "PASAR": 0.07,
    "LAIN": 0.03,
}
HELP_WEIGHT = {
    "pelatihan": 0.35,
    "konsultasi": 0.30,
    "kunjungan": 0.14,
    "modal": 0.30,
    "tempat": 0.12,
    "perizinan": 0.10,
}
UNIT_WEIGHT = dict(
    zip(UNIT_USAHA, (0.85, 0.15, 0.08, 0.45, 0.25, 0.10, 0.08, 0.20, 0.03), strict=True)
)
TEMPAT_WEIGHT = (0.12, 0.18, 0.20, 0.25, 0.25)
ACTIVITIES = (
    "Rapat pengurus membahas rencana usaha gerai sembako",
    "Sosialisasi koperasi kepada warga di balai desa",
    "Pendataan anggota baru dan penagihan simpanan wajib",
    "Pelatihan pembukuan sederhana untuk bendahara",
    "Penjualan sembako dan LPG kepada anggota",
    "Koordinasi dengan pendamping dari dinas",
    "Pengurusan NIB melalui OSS",
    "Belanja stok barang untuk gerai",
    "Rapat anggota membahas simpanan pokok",
    "Penyusunan laporan keuangan bulanan",
)
OBSTACLE_NOTES = (
    "Modal awal belum cukup untuk membeli stok barang",
    "Pengurus masih belum memahami aturan koperasi",
    "Belum ada tempat usaha yang tetap",
    "Pembukuan masih manual dan belum rapi",
    "Menunggu petunjuk teknis dari kementerian",
    "Pengurus sibuk dengan pekerjaan utama",
)
PENDING_LATE_SHARE = 0.20
REVISED_SHARE = 1 / 16
BLOCKED_SHARE = 0.02


@dataclass
class Counts:
    kecamatan: int = 0
    kelurahan: int = 0
    koperasi: int = 0
    person: int = 0
    chat_identity: int = 0
    board_member: int = 0
    report: int = 0
    report_revision: int = 0
    late: int = 0
    reminder_ledger: int = 0
    outbox: int = 0
    per_month: dict[str, int] = field(default_factory=dict)


class Writer:
    """Buffers rows per table and inserts them in batches on one connection: executemany on
    SQLite, COPY on PostgreSQL (asyncpg's executemany sends a statement per row)."""

    def __init__(self, conn: Any, batch: int) -> None:
        self.conn = conn
        self.batch = batch
        self.buffers: dict[Any, list[dict[str, Any]]] = {}
        self.copy = conn.dialect.name == "postgresql"

    async def add(self, model: Any, row: dict[str, Any]) -> None:
        rows = self.buffers.setdefault(model, [])
        rows.append(row)
        if len(rows) >= self.batch:
            await self.flush()

    async def flush(self) -> None:
        # Tables in the order their first row came, which is parents before children.
        for model, rows in self.buffers.items():
            if rows:
                if self.copy:
                    await self._copy(model.__table__, rows)
                else:
                    await self.conn.execute(model.__table__.insert(), rows)
                self.buffers[model] = []

    async def _copy(self, table: Any, rows: list[dict[str, Any]]) -> None:
        # The values as SQLAlchemy would bind them: JSON as json.dumps text, enums by value.
        columns = [c.name for c in table.columns if c.name in rows[0]]
        as_json = {c.name for c in table.columns if isinstance(c.type, JSON)}
        records = [
            tuple(
                json.dumps(row[name])
                if name in as_json and row[name] is not None
                else row[name].value
                if isinstance(row[name], enum.Enum)
                else row[name]
                for name in columns
            )
            for row in rows
        ]
        raw = await self.conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(
            table.name, records=records, columns=columns
        )


def _place_name(rng: random.Random) -> str:
    head, tail = rng.choice(_HEADS), rng.choice(_TAILS)
    return f"{head} {tail.title()}" if rng.random() < 0.3 else f"{head}{tail}"


def _sample_registry() -> list[tuple[str, str, str]]:
    rows = SAMPLE_REGISTRY.read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.split(",")) for line in rows if line.strip()]  # type: ignore[misc]


def registry(coops: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """(kelurahan code, kecamatan name, kelurahan name) for `coops` villages, sample first."""
    villages = _sample_registry()[:coops]
    province, kabupaten, kecamatan = 0, 1, 0
    while len(villages) < coops:
        kecamatan += 1
        if kecamatan > 30:
            kecamatan, kabupaten = 1, kabupaten + 1
        if kabupaten > 40:
            kabupaten, province = 1, province + 1
        code = f"{PROVINCES[province]}.{kabupaten:02d}.{kecamatan:02d}"
        if code.startswith("36.73"):
            continue
        name = _place_name(rng)
        count = min(rng.randint(6, 16), coops - len(villages))
        kelurahan = desa = 0
        for _ in range(count):
            if rng.random() < 0.10:
                kelurahan += 1
                number = 1000 + kelurahan
            else:
                desa += 1
                number = 2000 + desa
            villages.append((f"{code}.{number}", name, _place_name(rng)))
    return villages


async def write_registry(
    out: Writer, villages: list[tuple[str, str, str]], details: Callable[[], dict[str, Any]]
) -> int:
    """The kecamatan, the kelurahan and one cooperative in each (ids from 1, in the order of
    `villages`); `details()` gives each cooperative's other columns. The number of kecamatan."""
    kecamatan_ids: dict[str, int] = {}
    for number, (kode, kecamatan, kelurahan) in enumerate(villages, start=1):
        kec = kecamatan_ids.get(kode[:8])
        if kec is None:
            kec = kecamatan_ids[kode[:8]] = len(kecamatan_ids) + 1
            await out.add(Kecamatan, {"id": kec, "kode": kode[:8], "nama": kecamatan})
        await out.add(
            Kelurahan, {"id": number, "kode": kode, "nama": kelurahan, "kecamatan_id": kec}
        )
    await out.flush()
    for number, (kode, _, kelurahan) in enumerate(villages, start=1):
        await out.add(
            Koperasi,
            {
                "id": number,
                "kelurahan_id": number,
                "nama": default_name(kode, kelurahan),
                **details(),
            },
        )
    await out.flush()
    return len(kecamatan_ids)


async def move_sequences(conn: AsyncConnection, models: Iterable[Any]) -> None:
    """PostgreSQL: rows came with their ids; move each table's id sequence past them, so the
    bot's own inserts do not collide."""
    for model in models:
        table = model.__tablename__
        await conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
            f"COALESCE((SELECT MAX(id) FROM {table}), 1))"
        )


def months_ending(last: Period, count: int) -> list[Period]:
    months = [last]
    while len(months) < count:
        months.insert(0, months[0].previous())
    return months


def _weighted_subset(rng: random.Random, weights: dict[str, float], scale: float) -> list[str]:
    return [code for code, p in weights.items() if rng.random() < p * scale]


def _money(rng: random.Random, median: float, sigma: float) -> int:
    return int(round(rng.lognormvariate(math.log(median), sigma), -3))


@dataclass
class Coop:
    """A cooperative's state as the months go by; answers are read off it."""

    id: int
    propensity: float
    status: str
    members: int
    pokok: int
    wajib: int
    turnover: float
    tempat: str
    legal: list[str]
    units: list[str] = field(default_factory=list)
    unit_other: str | None = None
    obstacles: list[str] = field(default_factory=list)
    reported_last_month: bool = False
    board: list[tuple[int, str, int, bool]] = field(default_factory=list)  # person, nama, identity

    def advance(self, rng: random.Random) -> None:
        if self.status in STATUS_UP and rng.random() < STATUS_UP[self.status]:
            self.status = NEXT_STATUS[self.status]
        growth = rng.random() * 0.08 if rng.random() < 0.6 else 0.0
        self.members = min(20_000, self.members + int(self.members * growth))
        for index, chance in enumerate((0.06, 0.05, 0.04, 0.03)):
            if self.legal[index] == "tidak" and rng.random() < chance:
                self.legal[index] = "ya"


def _answers(coop: Coop, rng: random.Random, photo_serial: int) -> dict[str, Any]:
    """One report's answers in form order, as `Form.clean` leaves them."""
    a: dict[str, Any] = {"status_operasional": coop.status}
    operating = coop.status != "belum"
    if operating:
        if not coop.units or rng.random() < 0.1:
            coop.units = [u for u in UNIT_USAHA if rng.random() < UNIT_WEIGHT[u]] or ["sembako"]
            coop.unit_other = "Usaha air minum isi ulang" if "lainnya" in coop.units else None
        a["unit_usaha"] = list(coop.units)
        if coop.unit_other:
            a["unit_usaha_lain"] = coop.unit_other
    new_members = min(coop.members, max(0, int(rng.expovariate(1 / 4))))
    a["jumlah_anggota"] = coop.members
    a["anggota_baru"] = new_members
    a["simpanan_pokok_total"] = coop.members * coop.pokok
    a["simpanan_wajib_bulan"] = (
        int(coop.members * coop.wajib * rng.uniform(0.3, 1.0)) // 1000 * 1000
    )
    if coop.status in ("sebagian", "rutin"):
        median = coop.turnover * (4 if coop.status == "rutin" else 1)
        a["omzet_bulan"] = _money(rng, median, 0.6)
    else:
        a["omzet_bulan"] = 0
    modal = _money(rng, 10_000_000, 1.2) if rng.random() < 0.2 else 0
    a["modal_baru"] = modal
    if modal:
        a["modal_sumber"] = [s for s in SUMBER_MODAL if rng.random() < 0.35] or ["simpanan"]
    a["tempat_usaha"] = coop.tempat
    a["nib"], a["npwp"], a["akun_simkopdes"], a["microsite"] = coop.legal
    a["kegiatan"] = rng.choice(ACTIVITIES)
    scale = {"belum": 1.0, "persiapan": 0.9, "sebagian": 0.7, "rutin": 0.45}[coop.status]
    unsolved: list[str] = []
    previous = [k for k in coop.obstacles if k != "NIHIL"] if coop.reported_last_month else []
    if previous:
        a["kendala_lalu"] = list(coop.obstacles)
        solved = [k for k in previous if rng.random() < 0.25]
        a["kendala_teratasi"] = solved
        unsolved = [k for k in previous if k not in solved]
        if unsolved:
            a["kendala_memburuk"] = [k for k in unsolved if rng.random() < 0.15]
    fresh = set(_weighted_subset(rng, OBSTACLE_WEIGHT, scale * 0.8))
    kept = {k for k in unsolved if rng.random() < 0.75}
    named = [k for k in KENDALA if k in fresh | kept]
    kendala = named or ["NIHIL"]
    a["kendala"] = kendala
    if len(named) > 1:
        a["kendala_utama"] = max(named, key=lambda k: OBSTACLE_WEIGHT[k] * rng.random())
    if named:
        a["kendala_uraian"] = (
            rng.choice(OBSTACLE_NOTES) if rng.random() < 0.7 or "LAIN" in named else ""
        )
    a["kebutuhan_bantuan"] = [b for b in BANTUAN if rng.random() < HELP_WEIGHT[b]]
    photos = rng.choice((0, 0, 0, 1, 1, 2, 3))
    a["foto"] = [f"AgACAgUAAxkBAAI{photo_serial + n:012d}" for n in range(photos)]
    coop.obstacles = kendala
    return a


def _wib(settings: Settings, day: datetime, rng: random.Random) -> datetime:
    local = datetime.combine(
        day.date(), clock_time(rng.randint(7, 21), rng.randint(0, 59)), tzinfo=settings.tz
    )
    return local.astimezone(UTC)


def _pick(rng: random.Random, options: Iterable[tuple[str, float]]) -> str:
    roll = rng.random()
    for value, weight in options:
        roll -= weight
        if roll < 0:
            return value
    return value


async def _generate(args: argparse.Namespace, url: str) -> Counts:
    rng = random.Random(args.seed)
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    now = datetime.fromisoformat("2026-11-28T09:00:00+07:00")
    counts = Counts()
    engine = create_engine(url)
    months = months_ending(Period.parse_key(args.last_period), args.months)
    history = set(months[-args.history_months :]) if args.history_months else set()
    started = time.perf_counter()

    def step(name: str) -> None:
        print(f"  {name:<28} {time.perf_counter() - started:7.1f} s", flush=True)

    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                # A benchmark database: a crash while generating means generating again.
                await conn.exec_driver_sql("PRAGMA synchronous=OFF")
                await conn.exec_driver_sql("PRAGMA cache_size=-262144")
                await conn.commit()
            out = Writer(conn, args.batch)
            jabatan = {
                kode: jid
                for jid, kode in (
                    await conn.execute(
                        Jabatan.__table__.select().with_only_columns(Jabatan.id, Jabatan.kode)
                    )
                ).all()
            }

            # Registry ---------------------------------------------------------------------------
            villages = registry(args.coops, rng)
            founded = now - timedelta(days=600)
            kecamatan_count = await write_registry(
                out,
                villages,
                lambda: {
                    "alamat": f"Jl. {_place_name(rng)} No. {rng.randint(1, 120)}",
                    "telepon": f"08{rng.randint(11, 99)}{rng.randint(10_000_000, 99_999_999)}",
                    "email": None,
                    "created_at": founded,
                    "updated_at": founded,
                },
            )
            await conn.commit()
            counts.kecamatan, counts.kelurahan, counts.koperasi = (
                kecamatan_count,
                len(villages),
                len(villages),
            )
            step("registry")

            # People -----------------------------------------------------------------------------
            coops: list[Coop] = []
            person = 0
            for number in range(1, len(villages) + 1):
                status = _pick(
                    rng, (("belum", 0.6), ("persiapan", 0.3), ("sebagian", 0.08), ("rutin", 0.02))
                )
                coop = Coop(
                    id=number,
                    propensity=rng.random(),
                    status=status,
                    members=max(9, int(rng.lognormvariate(math.log(60), 0.8))),
                    pokok=rng.choice((50_000, 100_000, 100_000, 200_000)),
                    wajib=rng.choice((5_000, 10_000, 10_000, 20_000)),
                    turnover=rng.lognormvariate(math.log(15_000_000), 0.9),
                    tempat=_pick(rng, zip(TEMPAT, TEMPAT_WEIGHT, strict=True)),
                    legal=["ya" if rng.random() < p else "tidak" for p in (0.45, 0.35, 0.30, 0.10)],
                )
                linked = now - timedelta(days=rng.randint(30, 500))
                for role in ("ketua", "sekretaris", "bendahara"):
                    person += 1
                    first, last = rng.choice(FIRST), rng.choice(LAST)
                    nama = f"{first} {last}"
                    blocked = rng.random() < BLOCKED_SHARE
                    await out.add(Person, {"id": person, "nama": nama, "created_at": linked})
                    await out.add(
                        ChatIdentity,
                        {
                            "id": person,
                            "person_id": person,
                            "channel": "telegram",
                            "external_id": str(1_000_000_000 + person),
                            "username": f"{first.lower()}{person}" if rng.random() < 0.4 else None,
                            "created_at": linked,
                            "last_seen_at": now - timedelta(days=rng.randint(0, 60)),
                            "unreachable_at": now - timedelta(days=rng.randint(1, 200))
                            if blocked
                            else None,
                            "unreachable_reason": "Forbidden: bot was blocked by the user"
                            if blocked
                            else None,
                        },
                    )
                    await out.add(
                        BoardMember,
                        {
                            "id": person,
                            "person_id": person,
                            "koperasi_id": number,
                            "jabatan_id": jabatan[role],
                            "judul": None,
                            "linked_at": linked,
                            "invite_id": None,
                        },
                    )
                    coop.board.append((person, nama, person, blocked))
                coops.append(coop)
            person += 1
            await out.add(
                Person, {"id": person, "nama": "Petugas Dinas Koperasi", "created_at": now}
            )
            await out.add(
                ChatIdentity,
                {
                    "id": person,
                    "person_id": person,
                    "channel": "telegram",
                    "external_id": "999000001",
                    "username": "petugas_dinas",
                    "created_at": now,
                    "last_seen_at": now,
                    "unreachable_at": None,
                    "unreachable_reason": None,
                },
            )
            await out.add(
                Officer,
                {
                    "id": 1,
                    "person_id": person,
                    "kecamatan_id": None,
                    "can_broadcast": True,
                    "ops": True,
                    "active": True,
                    "created_at": now,
                },
            )
            await out.flush()
            await conn.commit()
            counts.person = counts.chat_identity = person
            counts.board_member = person - 1
            step("people")

            # Reports ----------------------------------------------------------------------------
            report_id = revision_id = photo_serial = 0
            submitted: dict[tuple[int, Period], datetime] = {}
            final = len(months) - 1
            for index, month in enumerate(months):
                rate = 0.10 + 0.50 * (index / final if final else 1.0)
                limit = deadline(settings, month)
                opening = datetime.combine(
                    month.next().first_day(), clock_time(0), tzinfo=settings.tz
                )
                reported = 0
                for coop in coops:
                    coop.advance(rng)
                    if not coop.propensity + rng.gauss(0, 0.08) < rate:
                        coop.reported_last_month = False
                        continue
                    reported += 1
                    late = rng.random() < PENDING_LATE_SHARE
                    day = rng.randint(10, 27) if late else rng.randint(0, 9)
                    first_at = _wib(settings, opening + timedelta(days=day), rng)
                    late = first_at > limit
                    answers = _answers(coop, rng, photo_serial)
                    photo_serial += len(answers["foto"])
                    coop.reported_last_month = True
                    revisions = 2 if rng.random() < REVISED_SHARE else 1
                    last_at = (
                        first_at + timedelta(hours=rng.randint(2, 72))
                        if revisions == 2
                        else first_at
                    )
                    report_id += 1
                    await out.add(
                        Report,
                        {
                            "id": report_id,
                            "koperasi_id": coop.id,
                            "period": month.key,
                            "current_revision": revisions,
                            "first_submitted_at": first_at,
                            "last_submitted_at": last_at,
                            "late": late,
                            # What submitting copies of the current revision's answers.
                            **Report.counted(answers),
                        },
                    )
                    reporter = coop.board[2] if rng.random() < 0.6 else rng.choice(coop.board[:2])
                    for revision in range(1, revisions + 1):
                        at = first_at if revision == 1 else last_at
                        revision_id += 1
                        shown = answers
                        if revision < revisions:
                            shown = {**answers, "jumlah_anggota": answers["jumlah_anggota"] + 10}
                        await out.add(
                            ReportRevision,
                            {
                                "id": revision_id,
                                "report_id": report_id,
                                "revision": revision,
                                "answers": shown,
                                "submitted_by_person_id": reporter[0],
                                "submitted_by_name": reporter[1],
                                "submitted_at": at,
                                "late": at > limit,
                            },
                        )
                    counts.late += late
                    if month in history:
                        submitted[(coop.id, month)] = first_at
                counts.per_month[month.key] = reported
            await out.flush()
            await conn.commit()
            counts.report, counts.report_revision = report_id, revision_id
            step("reports")

            # Reminder history -------------------------------------------------------------------
            messages = Messages(settings.language, settings.tz)
            ledger_id = outbox_id = 0
            for month in sorted(history):
                notices = [n for n in calendar(settings, month) if not n.is_digest]
                for notice in notices:
                    text = messages.render(
                        "pengingat_laporan",
                        kind="open" if notice.kind == "open" else "reminder",
                        number=notice.number,
                        last=notice.number == len(settings.report_reminder_days),
                        salam=messages.salam(notice.send_at),
                        nama="\x00N",
                        koperasi="\x00K",
                        periode=month.name(messages.language),
                        batas=deadline(settings, month),
                    )
                    button = messages.render(
                        "btn_isi_laporan", periode=month.name(messages.language)
                    )
                    sent = 0
                    for coop in coops:
                        reported_at = submitted.get((coop.id, month))
                        if reported_at is not None and reported_at <= notice.send_at:
                            continue
                        people = [b for b in coop.board if not b[3]]
                        if not people:
                            continue
                        ledger_id += 1
                        await out.add(
                            LedgerEntry,
                            {
                                "id": ledger_id,
                                "kind": notice.kind,
                                "period": month.key,
                                "target": f"k{coop.id}",
                                "koperasi_id": coop.id,
                                "officer_id": None,
                                "recipients": len(people),
                                "decided_at": notice.send_at,
                            },
                        )
                        nama_koperasi = default_name(
                            villages[coop.id - 1][0], villages[coop.id - 1][2]
                        )
                        for person_id, nama, identity_id, _ in people:
                            outbox_id += 1
                            sent += 1
                            failed = rng.random() < 0.005
                            await out.add(
                                OutboxMessage,
                                {
                                    "id": outbox_id,
                                    "dedupe_key": (
                                        f"{notice.kind}:{month.key}:p{person_id}:i{identity_id}"
                                    ),
                                    "kind": notice.kind,
                                    "topic": report_topic(month, coop.id),
                                    "person_id": person_id,
                                    "chat_identity_id": identity_id,
                                    "text": text.replace("\x00N", nama).replace(
                                        "\x00K", nama_koperasi
                                    ),
                                    "buttons": [[button, f"lapor:{month.key}"]],
                                    "quiet_hours": True,
                                    "priority": 5,
                                    "status": OutboxStatus.FAILED if failed else OutboxStatus.SENT,
                                    "attempts": 5 if failed else 1,
                                    "next_attempt_at": notice.send_at,
                                    "lease_until": None,
                                    "claimed_by": None,
                                    "last_error": "TimedOut: Timed out" if failed else None,
                                    "created_at": notice.send_at,
                                    "sent_at": None
                                    if failed
                                    else notice.send_at + timedelta(seconds=sent / 25),
                                    "external_message_id": None if failed else str(sent),
                                },
                            )
            await out.flush()
            await conn.commit()
            counts.reminder_ledger, counts.outbox = ledger_id, outbox_id
            step("reminder history")

            if engine.dialect.name == "postgresql":
                await move_sequences(
                    conn,
                    [
                        Kecamatan,
                        Kelurahan,
                        Koperasi,
                        Person,
                        ChatIdentity,
                        BoardMember,
                        Officer,
                        Report,
                        ReportRevision,
                        LedgerEntry,
                        OutboxMessage,
                    ],
                )
            await conn.execute(
                insert(AuditLog),
                [
                    {
                        "at": datetime.now(UTC),
                        "actor_label": "bench/generate.py",
                        "action": GENERATED,
                        "koperasi_id": None,
                        "detail": {
                            "coops": args.coops,
                            "months": args.months,
                            "last_period": args.last_period,
                            "history_months": args.history_months,
                            "seed": args.seed,
                            "counts": {k: v for k, v in vars(counts).items() if k != "per_month"},
                        },
                    }
                ],
            )
            await conn.commit()
            postgres = engine.dialect.name == "postgresql"
            if args.analyze is None and not postgres:
                # As the bot leaves it: it never runs ANALYZE, so SQLite plans without statistics.
                return counts
            if not postgres:
                await conn.exec_driver_sql("ANALYZE")
                await conn.commit()
                step("analyze")
    finally:
        await engine.dispose()
    if args.analyze is not False:
        # What autovacuum does soon after a bulk load (statistics, visibility map): VACUUM cannot
        # run inside a transaction, so on a connection of its own.
        conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1], timeout=10)
        try:
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
        step("vacuum analyze")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate a national-scale database (cooperatives, board members, monthly "
        "reports, reminder history) for bench/scale.py.",
    )
    parser.add_argument(
        "--url",
        required=True,
        help="SQLite file (path or URL), or postgresql://user@host:port/db (created if missing)",
    )
    parser.add_argument("--coops", type=int, default=80_000, help="cooperatives (default 80000)")
    parser.add_argument("--months", type=int, default=24, help="months of reports (default 24)")
    parser.add_argument(
        "--last-period",
        default=LAST_PERIOD,
        help=f"the newest month, YYYY-MM (default {LAST_PERIOD})",
    )
    parser.add_argument(
        "--history-months",
        type=int,
        default=1,
        help="newest months with the reminder ledger and outbox rows (default 1)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per insert (default 10000)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing database at --url"
    )
    parser.add_argument(
        "--analyze",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gather planner statistics at the end (default: VACUUM ANALYZE on PostgreSQL, as "
        "autovacuum would soon; none on SQLite, as the bot never runs ANALYZE)",
    )
    args = parser.parse_args(argv)
    if args.coops < 1 or args.months < 1 or not 0 <= args.history_months <= args.months:
        parser.error("--coops and --months must be positive, --history-months within --months")
    try:
        Period.parse_key(args.last_period)
    except ValueError:
        parser.error(f"--last-period: not YYYY-MM: {args.last_period}")
    return args


async def _prepare_postgres(url: str, force: bool) -> None:
    if await pg_database_exists(url):
        if not force:
            raise SystemExit(f"database exists: {url} (use --force to replace it)")
        await pg_drop_database(url)
    await pg_create_database(url)


def generate(argv: list[str] | None = None) -> Counts:
    args = parse_args(argv)
    url = async_url(args.url)
    path = sqlite_file(url)
    if path is not None:
        if path.exists():
            if not args.force:
                raise SystemExit(f"file exists: {path} (use --force to replace it)")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("postgresql"):
        asyncio.run(_prepare_postgres(url, args.force))
    started = time.perf_counter()
    print(f"generating {args.coops} cooperatives x {args.months} months into {url}", flush=True)
    upgrade(url)
    counts = asyncio.run(_generate(args, url))
    elapsed = time.perf_counter() - started
    print(
        f"done in {elapsed:.1f} s: {counts.koperasi} koperasi in {counts.kecamatan} kecamatan, "
        f"{counts.person} people, {counts.report} reports ({counts.late} late, "
        f"{counts.report_revision} revisions), {counts.reminder_ledger} ledger rows, "
        f"{counts.outbox} outbox rows",
        flush=True,
    )
    if path is not None:
        print(f"size: {os.path.getsize(path) / 2**20:.0f} MiB", flush=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    generate(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
