"""The cooperative registry: import from CSV/XLSX (idempotent), the sample, and name lookup."""

from __future__ import annotations

import asyncio
import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from bot import audit
from bot.names import KODE_KELURAHAN, normalize
from storage.db import Database
from storage.models import Kecamatan, Kelurahan, Koperasi

SAMPLE_REGISTRY = Path(__file__).parent / "sample_data" / "kota_serang_kelurahan.csv"

# Accepted header spellings (normalised) for each field.
_HEADERS = {
    "kode": ("kodekemendagri", "kodewilayah", "kode", "kodekelurahan", "kodedesa"),
    "kecamatan": ("kecamatan", "namakecamatan"),
    "kelurahan": ("kelurahan", "desa", "desakelurahan", "kelurahandesa", "namakelurahan"),
    "nama": ("nama", "namakoperasi", "koperasi"),
    "alamat": ("alamat",),
    "telepon": ("telepon", "telp", "nohp", "hp", "telpon", "nomortelepon", "notelp"),
    "email": ("email", "surel"),
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-.]{6,24}$")


@dataclass(frozen=True)
class RowError:
    """A rejected row: `code` picks the sentence in the cli_import template."""

    line: int
    code: str
    value: str = ""


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged


@dataclass(frozen=True)
class CoopRow:
    line: int
    kode: str
    kecamatan: str
    kelurahan: str
    nama: str
    alamat: str | None
    telepon: str | None
    email: str | None


def default_name(kode: str, kelurahan: str) -> str:
    # Kemendagri codes: the village part starts with 1 for a kelurahan, 2 for a desa.
    kind = "Kelurahan" if kode[-4:].startswith("1") else "Desa"
    return f"Koperasi {kind} Merah Putih {kelurahan}"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())


def read_table(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for every row of a CSV or the first sheet of an XLSX file."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        workbook = load_workbook(path, read_only=True, data_only=True)
        try:
            sheet = workbook.worksheets[0]
            for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
                yield number, [_cell(v) for v in row]
        finally:
            workbook.close()
        return
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig") if _is_utf8(raw) else raw.decode("cp1252")
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    for number, row in enumerate(csv.reader(text.splitlines(), dialect), start=1):
        yield number, [_cell(v) for v in row]


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class RegistryFileError(Exception):
    """The file as a whole cannot be read (no header, unknown format)."""

    def __init__(self, code: str, value: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.value = value


def parse_rows(rows: Iterator[tuple[int, list[str]]]) -> tuple[list[CoopRow], list[RowError]]:
    """Validate every row; bad rows become errors with their line number, the rest go on."""
    columns: dict[str, int] | None = None
    parsed: list[CoopRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    kecamatan_names: dict[str, str] = {}
    for line, cells in rows:
        if not any(cells):
            continue
        if columns is None:
            columns = _header(cells)
            missing = [f for f in ("kode", "kecamatan", "kelurahan") if f not in columns]
            if missing:
                raise RegistryFileError("missing_columns", ", ".join(missing))
            continue

        def get(name: str, cells: list[str] = cells, columns: dict[str, int] = columns) -> str:
            index = columns.get(name)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        kode, kecamatan, kelurahan = get("kode"), get("kecamatan"), get("kelurahan")
        telepon, email = get("telepon") or None, get("email") or None
        error = None
        if not kode:
            error = RowError(line, "kode_missing")
        elif not KODE_KELURAHAN.match(kode):
            error = RowError(line, "kode_invalid", kode)
        elif kode in seen:
            error = RowError(line, "kode_duplicate", f"{kode}|{seen[kode]}")
        elif not kecamatan:
            error = RowError(line, "kecamatan_missing")
        elif not kelurahan:
            error = RowError(line, "kelurahan_missing")
        elif kecamatan_names.setdefault(kode[:8], kecamatan) != kecamatan:
            error = RowError(line, "kecamatan_conflict", f"{kode[:8]}|{kecamatan_names[kode[:8]]}")
        elif telepon and not _PHONE.match(telepon):
            error = RowError(line, "telepon_invalid", telepon)
        elif email and not _EMAIL.match(email):
            error = RowError(line, "email_invalid", email)
        if error:
            errors.append(error)
            continue
        seen[kode] = line
        parsed.append(
            CoopRow(
                line=line,
                kode=kode,
                kecamatan=kecamatan,
                kelurahan=kelurahan,
                nama=get("nama") or default_name(kode, kelurahan),
                alamat=get("alamat") or None,
                telepon=telepon,
                email=email,
            )
        )
    if columns is None:
        raise RegistryFileError("empty")
    return parsed, errors


def _header(cells: Sequence[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, cell in enumerate(cells):
        key = normalize(cell) if cell else ""
        key = re.sub(r"[^a-z]", "", key)
        for name, spellings in _HEADERS.items():
            if key in spellings and name not in columns:
                columns[name] = index
    return columns


async def upsert(
    session: AsyncSession, rows: list[CoopRow], now: datetime, actor: str
) -> ImportReport:
    """Create or update kecamatan, kelurahan and cooperatives keyed by Kemendagri code."""
    report = ImportReport()
    kecamatan = {k.kode: k for k in (await session.scalars(select(Kecamatan))).all()}
    kelurahan = {
        k.kode: k
        for k in (
            await session.scalars(select(Kelurahan).options(selectinload(Kelurahan.koperasi)))
        ).all()
    }
    for row in rows:
        kec = kecamatan.get(row.kode[:8])
        if kec is None:
            kec = Kecamatan(kode=row.kode[:8], nama=row.kecamatan)
            session.add(kec)
            await session.flush()
            kecamatan[kec.kode] = kec
        elif kec.nama != row.kecamatan:
            kec.nama = row.kecamatan
        kel = kelurahan.get(row.kode)
        if kel is None:
            kel = Kelurahan(kode=row.kode, nama=row.kelurahan, kecamatan_id=kec.id)
            session.add(kel)
            await session.flush()
            session.add(_new_coop(row, kel.id, now))
            report.created += 1
            continue
        coop = kel.koperasi
        if coop is None:
            session.add(_new_coop(row, kel.id, now))
            report.created += 1
            continue
        changes = {
            name: value
            for name, value in (
                ("nama", row.nama),
                ("alamat", row.alamat),
                ("telepon", row.telepon),
                ("email", row.email),
            )
            if value is not None and getattr(coop, name) != value
        }
        moved = kel.nama != row.kelurahan or kel.kecamatan_id != kec.id
        if not changes and not moved:
            report.unchanged += 1
            continue
        kel.nama, kel.kecamatan_id = row.kelurahan, kec.id
        for name, value in changes.items():
            setattr(coop, name, value)
        coop.updated_at = now
        report.updated += 1
    audit.record(
        session,
        at=now,
        action="registry.imported",
        actor_label=actor,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
    )
    return report


def _new_coop(row: CoopRow, kelurahan_id: int, now: datetime) -> Koperasi:
    return Koperasi(
        kelurahan_id=kelurahan_id,
        nama=row.nama,
        alamat=row.alamat,
        telepon=row.telepon,
        email=row.email,
        created_at=now,
        updated_at=now,
    )


async def import_file(db: Database, path: Path, now: datetime, actor: str) -> ImportReport:
    # Reading a large workbook is slow and blocking; keep the event loop free.
    rows, errors = await asyncio.to_thread(lambda: parse_rows(read_table(path)))
    async with db.transaction() as session:
        report = await upsert(session, rows, now, actor)
    report.errors = errors
    return report


async def count_koperasi(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count(Koperasi.id))) or 0)


@dataclass(frozen=True)
class KoperasiInfo:
    id: int
    kode: str
    nama: str
    kelurahan: str
    kecamatan: str
    label: str


async def list_koperasi(session: AsyncSession) -> list[KoperasiInfo]:
    """All cooperatives, with a label that names the kecamatan where the kelurahan is ambiguous."""
    result = await session.execute(
        select(Koperasi.id, Kelurahan.kode, Koperasi.nama, Kelurahan.nama, Kecamatan.nama)
        .join(Kelurahan, Koperasi.kelurahan_id == Kelurahan.id)
        .join(Kecamatan, Kelurahan.kecamatan_id == Kecamatan.id)
        .order_by(Kelurahan.kode)
    )
    rows = result.all()
    counts: dict[str, int] = {}
    for row in rows:
        counts[normalize(row[3])] = counts.get(normalize(row[3]), 0) + 1
    return [
        KoperasiInfo(
            id=row[0],
            kode=row[1],
            nama=row[2],
            kelurahan=row[3],
            kecamatan=row[4],
            label=f"{row[3]} ({row[4]})" if counts[normalize(row[3])] > 1 else row[3],
        )
        for row in rows
    ]


async def find_koperasi(session: AsyncSession, query: str) -> list[KoperasiInfo]:
    """Cooperatives whose code is `query`, or whose kelurahan (or label) matches it; exact
    matches first, then those that start with it, then those containing it."""
    query = query.strip()
    coops = await list_koperasi(session)
    if KODE_KELURAHAN.match(query):
        return [c for c in coops if c.kode == query]
    wanted = normalize(query)
    if not wanted:
        return []
    exact = [c for c in coops if normalize(c.kelurahan) == wanted or normalize(c.label) == wanted]
    if exact:
        return exact
    starts = [c for c in coops if normalize(c.kelurahan).startswith(wanted)]
    return starts or [c for c in coops if wanted in normalize(c.label)]


async def find_kecamatan(session: AsyncSession, query: str) -> Kecamatan | None:
    wanted = normalize(query)
    for kec in (await session.scalars(select(Kecamatan))).all():
        if kec.kode == query.strip() or normalize(kec.nama) == wanted:
            return kec
    return None


async def kecamatan_names(session: AsyncSession) -> list[str]:
    return list((await session.scalars(select(Kecamatan.nama).order_by(Kecamatan.kode))).all())
