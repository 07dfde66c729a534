"""Exports of reports: one row per cooperative of the registry, columns from the form."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.core import Core
from bot.forms import Form, Kind
from bot.laporan import MONTHLY_REPORT
from bot.periods import Period
from bot.reports import format_value
from storage.models import Kecamatan, Kelurahan, Koperasi, Report, ReportRevision

REGISTRY_COLUMNS = ("kode_wilayah", "kecamatan", "kelurahan", "nama_koperasi")
SUBMISSION_COLUMNS = ("revisi", "dikirim_oleh", "dikirim_pada", "terlambat")


def columns(form: Form = MONTHLY_REPORT) -> list[str]:
    return [*REGISTRY_COLUMNS, *(f.id for f in form.fields), *SUBMISSION_COLUMNS]


async def report_rows(
    core: Core, period: Period, form: Form = MONTHLY_REPORT
) -> Iterator[dict[str, Any]]:
    """Every cooperative with its latest revision for the period (empty when none)."""
    async with core.db.sessions() as session:
        result = await session.execute(
            select(
                Kelurahan.kode,
                Kecamatan.nama,
                Kelurahan.nama,
                Koperasi.nama,
                ReportRevision,
            )
            .select_from(Koperasi)
            .join(Kelurahan, Koperasi.kelurahan_id == Kelurahan.id)
            .join(Kecamatan, Kelurahan.kecamatan_id == Kecamatan.id)
            .outerjoin(Report, (Report.koperasi_id == Koperasi.id) & (Report.period == period.key))
            .outerjoin(
                ReportRevision,
                (ReportRevision.report_id == Report.id)
                & (ReportRevision.revision == Report.current_revision),
            )
            .order_by(Kelurahan.kode)
        )
        rows = result.all()
    return (_row(core, form, *row) for row in rows)


def _row(
    core: Core,
    form: Form,
    kode: str,
    kecamatan: str,
    kelurahan: str,
    nama: str,
    revision: ReportRevision | None,
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(columns(form), "")
    row.update(kode_wilayah=kode, kecamatan=kecamatan, kelurahan=kelurahan, nama_koperasi=nama)
    if revision is None:
        return row
    answers = revision.answers
    for f in form.fields:
        value = f.value(answers)
        if value is None:
            continue
        if f.kind in (Kind.MONEY, Kind.INTEGER):
            row[f.id] = int(value)
        elif f.kind is Kind.PHOTO:
            row[f.id] = len(value)
        elif f.kind is Kind.MULTI:
            row[f.id] = "; ".join(format_value(core.messages, f, [v]) for v in value)
        else:
            row[f.id] = format_value(core.messages, f, value) if value != "" else ""
    local = revision.submitted_at.astimezone(core.settings.tz)
    row.update(
        revisi=revision.revision,
        dikirim_oleh=revision.submitted_by_name,
        dikirim_pada=local.isoformat(timespec="seconds"),
        terlambat="ya" if revision.late else "tidak",
    )
    return row


async def write_csv(core: Core, period: Period, out: Path) -> int:
    """Write the period's export as UTF-8 CSV (with BOM, so spreadsheet programs read it)."""
    rows = list(await report_rows(core, period))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns())
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
