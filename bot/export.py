"""Exports of reports: CSV (one row per cooperative, columns from the form) and the officers'
XLSX workbook (Laporan, Kendala, Riwayat), streamed in batches so a whole country fits."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from functools import cache, partial
from io import BytesIO
from pathlib import Path
from typing import IO, Any, NamedTuple

from sqlalchemy import ARRAY, String, and_, any_, func, literal, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from bot import audit, xlsx
from bot.core import Core
from bot.forms import Field, Form, Kind
from bot.identity import Actor
from bot.laporan import KENDALA, MONTHLY_REPORT, main_obstacle
from bot.periods import Period, parse_period
from bot.rekap import latest_period
from bot.replies import Reply
from bot.reports import field_label, format_value, option_label
from messages import Messages
from storage.models import (
    BoardMember,
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

REGISTRY_COLUMNS = ("kode_wilayah", "kecamatan", "kelurahan", "nama_koperasi")
SUBMISSION_COLUMNS = ("revisi", "dikirim_oleh", "dikirim_pada", "terlambat")
# A CSV of several months starts with this column; a single month keeps the historical layout.
PERIOD_COLUMN = "periode"

# The longest range one export may cover: a typo such as 2026-01..2062-01 is refused.
MAX_MONTHS = 36
# Cooperatives read per query (and rows handed to the writer thread at once).
BATCH = 500
# Laporan rows (cooperatives x months) from which the workbook is written by a child process:
# starting one costs a tenth of a second, and saves seconds on a province.
SEPARATE_PROCESS_ROWS = 5_000

MONEY_FORMAT = '"Rp"#,##0;-"Rp"#,##0'
INTEGER_FORMAT = "#,##0"
DATETIME_FORMAT = "dd/mm/yyyy hh:mm"


class ExportError(Exception):
    """Refused input: `code` picks the sentence in the cli_export template."""

    def __init__(self, code: str, value: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.value = value


def parse_period_range(text: str) -> list[Period]:
    """ "2026-10" or "2026-08..2026-10" (both ends included), oldest first."""
    ends = [part.strip() for part in (text or "").split("..")]
    try:
        if len(ends) > 2:
            raise ValueError(text)
        first = Period.parse_key(ends[0])
        last = Period.parse_key(ends[-1])
    except ValueError:
        raise ExportError("period", text) from None
    if last < first:
        raise ExportError("range", text)
    periods = [first]
    while periods[-1] < last:
        if len(periods) >= MAX_MONTHS:
            raise ExportError("too_long", str(MAX_MONTHS))
        periods.append(periods[-1].next())
    return periods


# CSV ------------------------------------------------------------------------------------------


def columns(form: Form = MONTHLY_REPORT) -> list[str]:
    return [*REGISTRY_COLUMNS, *(f.id for f in form.fields), *SUBMISSION_COLUMNS]


def _in_scope(query: Any, kecamatan_id: int | None) -> Any:
    return query if kecamatan_id is None else query.where(Kelurahan.kecamatan_id == kecamatan_id)


async def report_rows(
    core: Core,
    period: Period,
    form: Form = MONTHLY_REPORT,
    kecamatan_id: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Every cooperative (of a kecamatan, or all) with its latest revision for the period
    (empty when none)."""
    async with core.db.sessions() as session:
        result = await session.execute(
            _in_scope(
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
                .outerjoin(
                    Report, (Report.koperasi_id == Koperasi.id) & (Report.period == period.key)
                )
                .outerjoin(
                    ReportRevision,
                    (ReportRevision.report_id == Report.id)
                    & (ReportRevision.revision == Report.current_revision),
                )
                .order_by(Kelurahan.kode),
                kecamatan_id,
            )
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


# A cell a spreadsheet program would run as a formula when it opens the CSV ("=", "+", "-",
# "@", and tab or carriage return before them): typed text from a treasurer must stay text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)?")


def csv_safe(value: object) -> object:
    """`value`, with a leading apostrophe when it is text that would start a formula (OWASP's
    advice against CSV injection); numbers, and text that is a plain number, are unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


async def write_csv(
    core: Core,
    period: Period | Sequence[Period],
    out: Path,
    kecamatan_id: int | None = None,
) -> int:
    """Write the export as UTF-8 CSV (with BOM, so spreadsheet programs read it); returns the
    rows written. One month keeps the historical columns; several months go month by month
    into one file whose first column is `periode`."""
    periods = [period] if isinstance(period, Period) else sorted(set(period))
    several = len(periods) > 1
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8-sig", newline="") as handle:
        names = [PERIOD_COLUMN, *columns()] if several else columns()
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for month in periods:
            for row in await report_rows(core, month, kecamatan_id=kecamatan_id):
                if several:
                    row = {PERIOD_COLUMN: month.key, **row}
                writer.writerow({name: csv_safe(value) for name, value in row.items()})
                count += 1
    return count


# XLSX -----------------------------------------------------------------------------------------


@cache
def _labels(messages: Messages) -> dict[str, str]:
    table: dict[str, str] = {}
    for line in messages.render("ekspor_label").splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            table[key.strip()] = value.strip()
    return table


def export_labels(messages: Messages) -> dict[str, str]:
    """Sheet names, column headers and values of the workbook in the messages' language."""
    return _labels(messages)


@dataclass(frozen=True)
class _Column:
    header: str
    width: float
    number_format: str | None = None


@dataclass
class XlsxSummary:
    """What an XLSX export wrote: rows of each sheet, and the reporting counts behind them."""

    rows: int = 0  # Laporan: one per cooperative per month
    koperasi: int = 0
    reported: int = 0  # (cooperative, month) pairs with a report
    late: int = 0
    obstacle_rows: int = 0
    history_rows: int = 0
    months: list[Period] = field(default_factory=list)
    # The peak resident memory (MiB) of the process that wrote the workbook, when not this one.
    writer_peak_mib: float | None = None

    @property
    def missing(self) -> int:
        return self.rows - self.reported


class _Coop(NamedTuple):
    id: int
    kode: str
    kecamatan_id: int
    kecamatan: str
    kelurahan: str
    nama: str


class _Submitted(NamedTuple):
    late: bool
    first_submitted_at: datetime
    revision: int
    answers: dict[str, Any]
    submitted_by_name: str
    submitted_at: datetime


def _width(header: str, default: float) -> float:
    return float(max(default, min(len(header) + 3, 40)))


def _field_width(f: Field) -> float:
    return {
        Kind.MONEY: 18.0,
        Kind.INTEGER: 12.0,
        Kind.CHOICE: 22.0,
        Kind.MULTI: 40.0,
        Kind.TEXT: 40.0,
        Kind.PHOTO: 8.0,
    }[f.kind]


def _field_format(f: Field) -> str | None:
    if f.kind is Kind.MONEY:
        return MONEY_FORMAT
    if f.kind is Kind.INTEGER:
        return INTEGER_FORMAT
    return None


def _laporan_columns(m: Messages, form: Form) -> list[_Column]:
    lab = export_labels(m)

    def col(key: str, width: float, number_format: str | None = None) -> _Column:
        header = lab[f"col.{key}"]
        return _Column(header, _width(header, width), number_format)

    fields = [
        _Column(
            field_label(m, f.id),
            _width(field_label(m, f.id), _field_width(f)),
            _field_format(f),
        )
        for f in form.fields
    ]
    return [
        col("kode_wilayah", 15),
        col("kecamatan", 16),
        col("kelurahan", 18),
        col("nama_koperasi", 40),
        col("bulan", 9),
        *fields,
        col("revisi", 8),
        col("dikirim_oleh", 24),
        col("dikirim_pada", 17, DATETIME_FORMAT),
        col("pertama_dikirim", 17, DATETIME_FORMAT),
        col("terlambat", 10),
    ]


def _kendala_columns(m: Messages) -> list[_Column]:
    lab = export_labels(m)
    specs = [
        ("bulan", 9.0),
        ("kecamatan", 16.0),
        ("kode_kendala", 14.0),
        ("kendala", 40.0),
        ("dipilih", 12.0),
        ("kendala_utama", 12.0),
        ("teratasi", 12.0),
        ("memburuk", 12.0),
        ("laporan_masuk", 12.0),
    ]
    return [_Column(lab[f"col.{k}"], _width(lab[f"col.{k}"], w)) for k, w in specs]


_RIWAYAT = (
    ("kode_wilayah", 15.0, None),
    ("kecamatan", 16.0, None),
    ("kelurahan", 18.0, None),
    ("bulan", 9.0, None),
    ("jenis", 18.0, None),
    ("pemberitahuan", 40.0, None),
    ("diputuskan", 17.0, DATETIME_FORMAT),
    ("tanggal_acara", 17.0, DATETIME_FORMAT),
    ("penerima", 10.0, None),
    ("terkirim", 10.0, None),
    ("gagal", 8.0, None),
    ("tidak_terjangkau", 10.0, None),
    ("dibatalkan", 10.0, None),
    ("menunggu", 10.0, None),
    ("jawaban", 50.0, None),
    ("terwakili", 10.0, None),
    ("undangan_batal", 10.0, None),
)


def _riwayat_columns(m: Messages) -> list[_Column]:
    lab = export_labels(m)
    return [_Column(lab[f"col.{k}"], _width(lab[f"col.{k}"], w), f) for k, w, f in _RIWAYAT]


_OUTCOME = {
    OutboxStatus.SENT: "terkirim",
    OutboxStatus.FAILED: "gagal",
    OutboxStatus.UNREACHABLE: "tidak_terjangkau",
    OutboxStatus.CANCELLED: "dibatalkan",
    OutboxStatus.PENDING: "menunggu",
    OutboxStatus.SENDING: "menunggu",
}
_KENDALA_SLOT = {code: slot for slot, code in enumerate(KENDALA)}
_OUTCOME_COLUMNS = ("terkirim", "gagal", "tidak_terjangkau", "dibatalkan", "menunggu")
# count(*) FILTER (WHERE status IN ...) for each outcome column, in order.
_OUTCOME_COUNTS = [
    func.count()
    .filter(OutboxMessage.status.in_([s for s, column in _OUTCOME.items() if column == name]))
    .label(name)
    for name in _OUTCOME_COLUMNS
]


class _Writer:
    """Turns database rows into worksheet rows in the messages' language and time zone.

    A national month is a million answers: each field's way of showing a value, and each
    option's label, is worked out once here rather than for every cell.
    """

    def __init__(self, core: Core, form: Form) -> None:
        self.m = core.messages
        self.tz = core.settings.tz
        self.form = form
        self.lab = export_labels(self.m)
        self._fields = [
            (f, {o: option_label(self.m, f, o) for o in f.options}) for f in form.fields
        ]
        self._cells = [self._cell(f, labels) for f, labels in self._fields]
        self._local: dict[datetime, float] = {}
        self._moments: dict[Any, datetime] = {}

    def local(self, moment: datetime | None) -> float | None:
        """A moment as a cell shows it: Excel has no time zones, so the wall clock in WIB (as
        the header says), as Excel's date serial (what the sheet writes for a date anyway; a
        float crosses to the writer process cheaper than a datetime)."""
        if moment is None:
            return None
        found = self._local.get(moment)
        if found is None:
            found = xlsx.serial(moment.astimezone(self.tz).replace(tzinfo=None))
            if len(self._local) < 10_000:  # notices share their moment; reports rarely do
                self._local[moment] = found
        return found

    def moment(self, stored: Any) -> datetime:
        """A UTC moment read as stored (the ledger's decision times): SQLite's text of naive
        UTC, or PostgreSQL's aware datetime. Notices decided together share it: converted
        once, not for each of 200,000 rows."""
        found = self._moments.get(stored)
        if found is None:
            if isinstance(stored, str):
                found = datetime.fromisoformat(stored).replace(tzinfo=UTC)
            else:
                found = stored.astimezone(UTC)
            if len(self._moments) < 10_000:
                self._moments[stored] = found
        return found

    def yes_no(self, value: bool) -> str:
        return self.lab["ya" if value else "tidak"]

    def answer(self, f: Field, answers: dict[str, Any], labels: dict[str, str]) -> Any:
        """How a cell shows an answer; `labels` are the field's option labels."""
        value = f.derive(answers) if f.derive else answers.get(f.id)
        if value is None or value == "":
            return None
        kind = f.kind
        if kind is Kind.MONEY or kind is Kind.INTEGER:
            return int(value)
        if kind is Kind.CHOICE:
            return labels.get(value) or option_label(self.m, f, str(value))
        if kind is Kind.MULTI:
            return (
                "; ".join(labels.get(v) or option_label(self.m, f, str(v)) for v in value) or None
            )
        if kind is Kind.PHOTO:
            return len(value)
        return str(value)

    def _cell(self, f: Field, labels: dict[str, str]) -> Callable[[dict[str, Any]], Any]:
        """`answer` for one field, its kind decided once: a national month is 80,000 reports
        of 24 answers."""
        if f.derive is not None:
            return lambda answers: self.answer(f, answers, labels)
        name, kind, m = f.id, f.kind, self.m

        def label(value: Any) -> str:
            return labels.get(value) or option_label(m, f, str(value))

        show: Callable[[Any], Any]
        if kind is Kind.MONEY or kind is Kind.INTEGER:
            show = int
        elif kind is Kind.CHOICE:
            show = label
        elif kind is Kind.MULTI:

            def show(value: Any) -> Any:
                return "; ".join(label(v) for v in value) or None

        elif kind is Kind.PHOTO:
            show = len
        else:
            show = str

        def cell(answers: dict[str, Any]) -> Any:
            value = answers.get(name)
            return None if value is None or value == "" else show(value)

        return cell

    def laporan(self, coop: _Coop, month: str, report: _Submitted | None) -> list[Any]:
        row: list[Any] = [coop.kode, coop.kecamatan, coop.kelurahan, coop.nama, month]
        if report is None:
            return row + [None] * (len(self._fields) + 5)
        answers = report.answers
        row += [cell(answers) for cell in self._cells]
        row += [
            report.revision,
            report.submitted_by_name,
            self.local(report.submitted_at),
            self.local(report.first_submitted_at),
            self.yes_no(report.late),
        ]
        return row

    def notice(self, kind: str) -> str:
        if kind == "open":
            return self.lab["notice.open"]
        number = kind.removeprefix("reminder_")
        if number.isdigit():
            return self.lab["notice.reminder"].format(n=int(number))
        return kind

    def rsvp(self, rsvp: Rsvp, nama: str, current_time: int) -> str:
        lab = self.lab
        if rsvp.answer is RsvpAnswer.DIWAKILKAN and rsvp.delegate_nama:
            text = lab["jawaban.diwakilkan"].format(
                nama=nama, wakil=rsvp.delegate_nama, jabatan=rsvp.delegate_jabatan or "-"
            )
        elif rsvp.answer is RsvpAnswer.BERHALANGAN and rsvp.alasan:
            text = lab["jawaban.berhalangan"].format(nama=nama, alasan=rsvp.alasan)
        elif rsvp.answer is RsvpAnswer.HADIR:
            text = lab["jawaban.hadir"].format(nama=nama)
        else:
            text = lab[f"jawaban.{rsvp.answer.value}_tanpa"].format(nama=nama)
        if rsvp.time_version != current_time:
            text = lab["jawaban.ulang"].format(jawaban=text)
        return text


async def _coop_batch(
    session: AsyncSession, kecamatan_id: int | None, after: str, limit: int
) -> list[_Coop]:
    rows = await (await session.connection()).execute(
        _in_scope(
            select(
                Koperasi.id,
                Kelurahan.kode,
                Kecamatan.id,
                Kecamatan.nama,
                Kelurahan.nama,
                Koperasi.nama,
            )
            .join(Kelurahan, Koperasi.kelurahan_id == Kelurahan.id)
            .join(Kecamatan, Kelurahan.kecamatan_id == Kecamatan.id)
            .where(Kelurahan.kode > after)
            .order_by(Kelurahan.kode)
            .limit(limit),
            kecamatan_id,
        )
    )
    return [_Coop._make(row) for row in rows.all()]


def _among(dialect: str, column: Any, values: Sequence[Any]) -> Any:
    """`column IN (values)` for the hundreds of ids or topics of an export batch. On PostgreSQL
    one array parameter (`column = ANY(:values)`): SQLAlchemy renders every value of an
    expanding IN, with its cast, at each execution, which cost more than the query itself
    (docs/BENCHMARKS.md, figure 3)."""
    if dialect == "postgresql":
        return column == any_(literal(list(values), ARRAY(column.type)))
    return column.in_(values)


async def _reports(
    session: AsyncSession, ids: list[int], keys: list[str]
) -> dict[tuple[int, str], _Submitted]:
    connection = await session.connection()
    among = partial(_among, connection.dialect.name)
    rows = await connection.execute(
        select(
            Report.koperasi_id,
            Report.period,
            Report.late,
            Report.first_submitted_at,
            ReportRevision.revision,
            ReportRevision.answers,
            ReportRevision.submitted_by_name,
            ReportRevision.submitted_at,
        )
        .join(
            ReportRevision,
            and_(
                ReportRevision.report_id == Report.id,
                ReportRevision.revision == Report.current_revision,
            ),
        )
        .where(among(Report.koperasi_id, ids), Report.period.in_(keys))
    )
    return {(row[0], row[1]): _Submitted._make(row[2:]) for row in rows.all()}


async def _summons_in(core: Core, periods: list[Period]) -> dict[int, Summons]:
    """Summons whose meeting falls in one of the months (WIB)."""
    tz = core.settings.tz
    start = datetime.combine(periods[0].first_day(), time.min, tzinfo=tz)
    end = datetime.combine(periods[-1].last_day(), time.max, tzinfo=tz)
    wanted = set(periods)
    async with core.db.sessions() as session:
        found = (
            await session.scalars(
                select(Summons).where(Summons.starts_at >= start, Summons.starts_at <= end)
            )
        ).all()
    return {s.id: s for s in found if Period.containing(s.starts_at, tz) in wanted}


class _Decided(NamedTuple):
    koperasi_id: int
    kind: str
    period: str
    recipients: int
    decided_at: datetime


def _report_topic(period: str, koperasi_id: int) -> str:
    # As bot.reports.report_topic, from the ledger's period key.
    return f"report:{period}:k{koperasi_id}"


async def _history(
    session: AsyncSession,
    writer: _Writer,
    coops: list[_Coop],
    keys: list[str],
    summons: dict[int, Summons],
) -> list[list[Any]]:
    """The Riwayat rows of a batch: per cooperative, in the order things were decided."""
    ids = [c.id for c in coops]
    by_coop: dict[int, list[tuple[datetime, int, list[Any]]]] = defaultdict(list)
    coop_of = {c.id: c for c in coops}
    lab = writer.lab

    # Plain rows through the connection: a national month decides some 200,000 notices.
    connection = await session.connection()
    among = partial(_among, connection.dialect.name)
    decided = await connection.execute(
        select(
            LedgerEntry.koperasi_id,
            LedgerEntry.kind,
            LedgerEntry.period,
            LedgerEntry.recipients,
            # Converted by `_Writer.moment`, once per distinct moment rather than per row.
            type_coerce(LedgerEntry.decided_at, String),
        ).where(among(LedgerEntry.koperasi_id, ids), LedgerEntry.period.in_(keys))
    )
    moment = writer.moment
    ledger = [_Decided._make((*row[:4], moment(row[4]))) for row in decided.all()]
    # What the outbox made of each notice, one count per outcome column, counted in SQL.
    outcomes: dict[tuple[str, str], tuple[int, ...]] = {}
    topics = sorted({_report_topic(d.period, d.koperasi_id) for d in ledger})
    for start in range(0, len(topics), BATCH):
        counted = await connection.execute(
            select(OutboxMessage.topic, OutboxMessage.kind, *_OUTCOME_COUNTS)
            .where(among(OutboxMessage.topic, topics[start : start + BATCH]))
            .group_by(OutboxMessage.topic, OutboxMessage.kind)
        )
        for topic, kind, *numbers in counted.all():
            outcomes[(str(topic), kind)] = tuple(numbers)
    kind_label = lab["jenis.pengingat"]
    notices: dict[str, str] = {}
    nothing = (0,) * len(_OUTCOME_COLUMNS)
    for d in ledger:
        coop = coop_of[d.koperasi_id]
        outcome = outcomes.get((_report_topic(d.period, d.koperasi_id), d.kind), nothing)
        notice = notices.get(d.kind)
        if notice is None:
            notice = notices[d.kind] = writer.notice(d.kind)
        row = [
            coop.kode,
            coop.kecamatan,
            coop.kelurahan,
            d.period,
            kind_label,
            notice,
            writer.local(d.decided_at),
            None,
            d.recipients,
            *outcome,
            None,
            None,
            None,
        ]
        by_coop[d.koperasi_id].append((d.decided_at, 0, row))

    if summons:
        addressed = (
            await session.execute(
                select(
                    SummonsKoperasi.summons_id,
                    SummonsKoperasi.koperasi_id,
                    SummonsKoperasi.recipients,
                ).where(
                    SummonsKoperasi.summons_id.in_(list(summons)),
                    among(SummonsKoperasi.koperasi_id, ids),
                )
            )
        ).all()
        # The letter's outbox rows name a person; their cooperative is where they sit now.
        letters: dict[tuple[int, int], Counter[str]] = defaultdict(Counter)
        delivered = await session.execute(
            select(BoardMember.koperasi_id, OutboxMessage.topic, OutboxMessage.status, func.count())
            .join(BoardMember, BoardMember.person_id == OutboxMessage.person_id)
            .where(
                OutboxMessage.topic.in_([f"summons:{i}" for i in summons]),
                OutboxMessage.kind == "summons",
                among(BoardMember.koperasi_id, ids),
            )
            .group_by(BoardMember.koperasi_id, OutboxMessage.topic, OutboxMessage.status)
        )
        for kid, topic, status, count in delivered.all():
            summons_id = int(str(topic).removeprefix("summons:"))
            letters[(summons_id, kid)][_OUTCOME[status]] += int(count)
        answers: dict[tuple[int, int], list[tuple[str, Rsvp]]] = defaultdict(list)
        rsvps = await session.execute(
            select(Rsvp, Person.nama)
            .join(Person, Person.id == Rsvp.person_id)
            .where(Rsvp.summons_id.in_(list(summons)), among(Rsvp.koperasi_id, ids))
            .order_by(Person.nama, Rsvp.id)
        )
        for rsvp, nama in rsvps.all():
            answers[(rsvp.summons_id, rsvp.koperasi_id)].append((nama, rsvp))
        for summons_id, kid, recipients in addressed:
            s = summons[summons_id]
            coop = coop_of[kid]
            given = answers.get((summons_id, kid), [])
            texts = [writer.rsvp(r, nama, s.time_version) for nama, r in given]
            represented = any(
                r.answer in (RsvpAnswer.HADIR, RsvpAnswer.DIWAKILKAN)
                and r.time_version == s.time_version
                for _, r in given
            )
            counts = letters[(summons_id, kid)]
            row = [
                coop.kode,
                coop.kecamatan,
                coop.kelurahan,
                Period.containing(s.starts_at, writer.tz).key,
                lab["jenis.undangan"],
                lab["notice.summons"].format(nomor=s.nomor, hal=s.hal),
                writer.local(s.created_at),
                writer.local(s.starts_at),
                recipients,
                *(counts[c] for c in _OUTCOME_COLUMNS),
                "; ".join(texts) or lab["jawaban.belum"],
                writer.yes_no(represented),
                writer.yes_no(s.cancelled_at is not None),
            ]
            by_coop[kid].append((s.created_at, 1, row))

    rows: list[list[Any]] = []
    for coop in coops:
        entries = sorted(by_coop.get(coop.id, []), key=lambda e: (e[0], e[1], e[2][5]))
        rows.extend(row for _, _, row in entries)
    return rows


async def _kecamatan_in_scope(core: Core, kecamatan_id: int | None) -> list[tuple[int, str]]:
    async with core.db.sessions() as session:
        query = select(Kecamatan.id, Kecamatan.nama).order_by(Kecamatan.kode)
        if kecamatan_id is not None:
            query = query.where(Kecamatan.id == kecamatan_id)
        return [(int(i), str(n)) for i, n in (await session.execute(query)).all()]


def _save(book: xlsx.Book, out: str | os.PathLike[str] | IO[bytes]) -> None:
    if isinstance(out, str | os.PathLike):
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed, so a failed export leaves no half file.
        partial = path.with_name(f".{path.name}.partial")
        try:
            book.save(partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return
    book.save(out)


def _append(
    laporan: xlsx.Rows, rows: list[list[Any]], riwayat: xlsx.Rows, history: list[list[Any]]
) -> None:
    laporan.append(rows)
    riwayat.append(history)


def _sheet(book: xlsx.Book, title: str, cols: list[_Column]) -> xlsx.Rows:
    """A sheet with a bold frozen header, the columns' widths, and an autofilter over
    whatever is written."""
    return book.add_sheet(title, [(c.header, c.width, c.number_format) for c in cols])


async def export_xlsx(
    core: Core,
    periods: Sequence[Period],
    out: str | os.PathLike[str] | IO[bytes],
    kecamatan_id: int | None,
    form: Form = MONTHLY_REPORT,
) -> XlsxSummary:
    """Write the workbook for the months (of one kecamatan, or all) to a path or a binary
    buffer. Sheets: Laporan (a row per cooperative per month, by code then month), Kendala
    (per month, kecamatan and obstacle: reports naming it, as the main one, solved or worse
    since last month) and Riwayat (report notices decided in the
    ledger and what the outbox made of them; summons whose meeting falls in the months,
    with the answers)."""
    months = sorted(set(periods))
    if not months:
        raise ValueError("no months to export")
    keys = [p.key for p in months]
    writer = _Writer(core, form)
    rows = len(months) * await _koperasi_in_scope(core, kecamatan_id)
    # A big workbook is written by a child process, on the other core (see WorkbookProcess).
    book: xlsx.Book = xlsx.WorkbookProcess() if rows >= SEPARATE_PROCESS_ROWS else xlsx.Workbook()
    try:
        summary = await _fill(core, book, months, keys, writer, form, kecamatan_id, out)
    finally:
        book.close()
    if isinstance(book, xlsx.WorkbookProcess):
        summary.writer_peak_mib = book.peak_mib
    return summary


async def _koperasi_in_scope(core: Core, kecamatan_id: int | None) -> int:
    async with core.db.sessions() as session:
        query = select(func.count(Koperasi.id)).join(
            Kelurahan, Kelurahan.id == Koperasi.kelurahan_id
        )
        return int(await session.scalar(_in_scope(query, kecamatan_id)) or 0)


async def _fill(
    core: Core,
    book: xlsx.Book,
    months: list[Period],
    keys: list[str],
    writer: _Writer,
    form: Form,
    kecamatan_id: int | None,
    out: str | os.PathLike[str] | IO[bytes],
) -> XlsxSummary:
    lab = writer.lab
    laporan = _sheet(book, lab["sheet.laporan"], _laporan_columns(writer.m, form))
    kendala = _sheet(book, lab["sheet.kendala"], _kendala_columns(writer.m))
    riwayat = _sheet(book, lab["sheet.riwayat"], _riwayat_columns(writer.m))
    summary = XlsxSummary(months=months)
    # (month, kecamatan id) -> for each obstacle (in KENDALA's order) the reports naming it,
    # then as the main one, as solved since last month, as worse than last month; last, the
    # reports received. A list per kecamatan, not a counter per cell: a country has 7,000.
    counted: dict[tuple[str, int], list[int]] = {}
    width = len(KENDALA)
    summons = await _summons_in(core, months)
    after = ""
    writing: asyncio.Future[None] | None = None
    while True:
        async with core.db.sessions() as session:
            coops = await _coop_batch(session, kecamatan_id, after, BATCH)
            if not coops:
                break
            after = coops[-1].kode
            ids = [c.id for c in coops]
            reports = await _reports(session, ids, keys)
            history = await _history(session, writer, coops, keys, summons)
        rows: list[list[Any]] = []
        for coop in coops:
            for key in keys:
                report = reports.get((coop.id, key))
                rows.append(writer.laporan(coop, key, report))
                if report is None:
                    continue
                summary.reported += 1
                summary.late += int(report.late)
                slots = counted.get((key, coop.kecamatan_id))
                if slots is None:
                    slots = counted[(key, coop.kecamatan_id)] = [0] * (4 * width + 1)
                slots[-1] += 1
                for offset, answer in (
                    (0, "kendala"),
                    (2 * width, "kendala_teratasi"),
                    (3 * width, "kendala_memburuk"),
                ):
                    for code in report.answers.get(answer) or []:
                        slot = _KENDALA_SLOT.get(code)
                        if slot is not None:
                            slots[offset + slot] += 1
                utama = main_obstacle(report.answers)
                if utama in _KENDALA_SLOT:
                    slots[width + _KENDALA_SLOT[utama]] += 1
        summary.koperasi += len(coops)
        summary.rows += len(rows)
        summary.history_rows += len(history)
        # Writing is synchronous: it goes on in a thread (the event loop keeps serving chats)
        # while the next batch is read; one batch at a time, so the rows stay in order.
        if writing is not None:
            await writing
        writing = asyncio.ensure_future(asyncio.to_thread(_append, laporan, rows, riwayat, history))
    if writing is not None:
        await writing

    obstacle = form.field("kendala")
    names = {code: option_label(writer.m, obstacle, code) for code in KENDALA}
    districts = await _kecamatan_in_scope(core, kecamatan_id)
    nothing = [0] * (4 * width + 1)
    obstacle_rows: list[list[Any]] = []
    for key in keys:
        for kec_id, kecamatan in districts:
            slots = counted.get((key, kec_id), nothing)
            obstacle_rows.extend(
                [
                    key,
                    kecamatan,
                    code,
                    names[code],
                    slots[i],
                    slots[width + i],
                    slots[2 * width + i],
                    slots[3 * width + i],
                    slots[-1],
                ]
                for i, code in enumerate(KENDALA)
            )
            if len(obstacle_rows) >= BATCH * len(KENDALA):
                summary.obstacle_rows += len(obstacle_rows)
                await asyncio.to_thread(kendala.append, obstacle_rows)
                obstacle_rows = []
    summary.obstacle_rows += len(obstacle_rows)
    await asyncio.to_thread(kendala.append, obstacle_rows)
    await asyncio.to_thread(_save, book, out)
    return summary


async def write_xlsx(
    core: Core,
    periods: list[Period],
    path_or_buffer: str | os.PathLike[str] | IO[bytes],
    kecamatan_id: int | None,
) -> int:
    """The XLSX export (see `export_xlsx`); returns the rows of the Laporan sheet."""
    return (await export_xlsx(core, periods, path_or_buffer, kecamatan_id)).rows


# /ekspor ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """A file for the chat: its name, its bytes, and the caption shown under it."""

    filename: str
    content: bytes
    caption: str


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


async def officer_export(core: Core, actor: Actor, text: str | None) -> Document | list[Reply]:
    """/ekspor [bulan]: the officer's workbook for one month, within their scope. The default
    month is the one /rekap shows: the period being reported now, or the one before while its
    report has not opened yet (so never a month that cannot have reports)."""
    m = core.messages
    officer = actor.officer
    if officer is None:
        return [Reply(m.render("ekspor_tidak_boleh"))]
    now = core.clock.now()
    tz = core.settings.tz
    period = latest_period(core.settings, now)
    if text:
        parsed = parse_period(text, now, tz)
        if parsed is None or parsed > Period.containing(now, tz):
            return [
                Reply(
                    m.render(
                        "ekspor_bulan_salah",
                        text=text,
                        future=parsed is not None,
                        contoh=period.name(m.language),
                    )
                )
            ]
        period = parsed
    buffer = BytesIO()
    summary = await export_xlsx(core, [period], buffer, officer.kecamatan_id)
    async with core.db.transaction() as session:
        audit.record(
            session,
            at=now,
            action="export.xlsx",
            actor_label=actor.label,
            actor_person_id=actor.person_id,
            period=period.key,
            kecamatan_id=officer.kecamatan_id,
            rows=summary.rows,
        )
    filename = m.render(
        "ekspor_nama_berkas",
        periode=period.key,
        wilayah=slug(officer.kecamatan) if officer.kecamatan else None,
    )
    caption = m.render(
        "ekspor_terkirim",
        periode=period.name(m.language),
        wilayah=officer.kecamatan,
        koperasi=summary.koperasi,
        melapor=summary.reported,
        terlambat=summary.late,
        belum=summary.missing,
        lembar=[export_labels(m)[f"sheet.{s}"] for s in ("laporan", "kendala", "riwayat")],
    )
    return Document(filename, buffer.getvalue(), caption)
