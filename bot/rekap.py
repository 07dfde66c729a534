"""/rekap: the officers' monthly picture of their scope (reporting, status, obstacles, help
requested, per kecamatan, change against the month before) and its two charts.

Counting is set-based: a handful of queries per recap whatever the number of cooperatives (the
registry counted per kecamatan, the reports of two months grouped by each counted answer, and
for the chart the reports of twelve months counted per month). The counted answers are columns
of the report (`Report.count_answers`, written with each revision): no revision is read.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVarTuple

from babel.dates import format_date
from sqlalchemy import Select, bindparam, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.core import Core
from bot.identity import Actor
from bot.laporan import BANTUAN, KENDALA, MONTHLY_REPORT, STATUS, main_obstacle
from bot.periods import MIN_YEAR, Period, parse_period
from bot.reminders import calendar, current_period
from bot.replies import Reply
from bot.reports import option_label
from messages import Messages
from storage.models import Kecamatan, Kelurahan, Koperasi, Report

# Statuses that count as "operating" (persiapan is not yet: nothing is sold).
OPERATING = ("sebagian", "rutin")
NONE = "NIHIL"
TREND_MONTHS = 12
# Lines of the per-kecamatan part of /rekap. A city or a kabupaten has fewer kecamatan (Kota
# Serang 6, the largest kabupaten about 50) and sees them all in registry order; a province or
# the country (7,000) sees those with the lowest reporting rate first, and /ekspor has the rest,
# instead of a hundred messages.
REKAP_MAX_KECAMATAN = 50
CHART_RATE = "rate"
CHART_KENDALA = "kendala"
# Button actions (the channel adds its prefix): "chart:<kind>:<YYYY-MM>".
_CHART_ACTION = re.compile(r"chart:(rate|kendala):([0-9]{4}-[0-9]{2})")


class NotAnOfficer(PermissionError):
    """Recaps are for city officers only."""


# What is counted ------------------------------------------------------------------------------


@dataclass
class Tally:
    """One month's reports in one scope, counted."""

    reported: int = 0
    late: int = 0
    status: Counter[str] = field(default_factory=Counter)
    obstacles: Counter[str] = field(default_factory=Counter)
    main: Counter[str] = field(default_factory=Counter)
    no_obstacle: int = 0
    help: Counter[str] = field(default_factory=Counter)
    no_help: int = 0
    # Last month's obstacles reported solved, or worse, this month (carry-forward questions).
    solved: Counter[str] = field(default_factory=Counter)
    worse: Counter[str] = field(default_factory=Counter)

    @property
    def on_time(self) -> int:
        return self.reported - self.late

    @property
    def operating(self) -> int:
        return sum(self.status[s] for s in OPERATING)

    def add(
        self,
        late: bool,
        status: Any,
        kendala: Any,
        utama: Any,
        bantuan: Any,
        solved: Any = None,
        worse: Any = None,
    ) -> None:
        self.solved.update(_codes(solved, KENDALA))
        self.worse.update(_codes(worse, KENDALA))
        self.reported += 1
        self.late += bool(late)
        if status in STATUS:
            self.status[status] += 1
        named = _codes(kendala, KENDALA)
        obstacles = [code for code in named if code != NONE]
        if not obstacles:
            # NIHIL, or (in a malformed row) nothing at all: no obstacle named either way.
            self.no_obstacle += 1
        self.obstacles.update(obstacles)
        answers: dict[str, Any] = {"kendala": obstacles}
        if isinstance(utama, str) and utama in obstacles:
            answers["kendala_utama"] = utama
        main = main_obstacle(answers)
        if main is not None:
            self.main[main] += 1
        asked = _codes(bantuan, BANTUAN)
        self.help.update(asked)
        self.no_help += not asked


def _codes(value: Any, allowed: Sequence[str]) -> list[str]:
    """The known codes of a multiple-choice answer, each once (the data is not trusted)."""
    if not isinstance(value, list):
        return []
    return [code for code in dict.fromkeys(value) if isinstance(code, str) and code in allowed]


@dataclass(frozen=True)
class KecamatanRecap:
    id: int
    nama: str
    total: int
    tally: Tally


@dataclass(frozen=True)
class Ranked:
    """An obstacle or a kind of help: how many cooperatives name it (and as the main one), and
    the change against the month before (None when there is nothing to compare with)."""

    code: str
    count: int
    main: int = 0
    change: int | None = None


@dataclass(frozen=True)
class Recap:
    period: Period
    previous_period: Period | None
    kecamatan_id: int | None  # None: the whole city
    wilayah: str | None  # the kecamatan's name, None for the whole city
    total: int
    current: Tally
    previous: Tally
    kecamatan: list[KecamatanRecap]

    @property
    def missing(self) -> int:
        return self.total - self.current.reported

    @property
    def comparable(self) -> bool:
        """Whether there is a month before with reports to compare with."""
        return self.previous_period is not None and self.previous.reported > 0

    def status_counts(self) -> list[tuple[str, int]]:
        """Each status, most advanced first (those without one: `unknown_status`)."""
        return [(s, self.current.status[s]) for s in reversed(STATUS)]

    @property
    def unknown_status(self) -> int:
        return self.total - sum(self.current.status.values())

    def obstacles(self) -> list[Ranked]:
        """Obstacles named this month (or last month, to show what went away), most named
        first; ties by how often it is the main one, then the form's order."""
        codes = [c for c in KENDALA if c != NONE and (self.current.obstacles[c] or self._before(c))]
        ranked = [
            Ranked(
                c,
                self.current.obstacles[c],
                self.current.main[c],
                self.change(self.current.obstacles[c], self.previous.obstacles[c]),
            )
            for c in codes
        ]
        return sorted(ranked, key=lambda r: (-r.count, -r.main, KENDALA.index(r.code)))

    def help_requested(self) -> list[Ranked]:
        codes = [
            c
            for c in BANTUAN
            if self.current.help[c] or (self.comparable and self.previous.help[c])
        ]
        ranked = [
            Ranked(
                c,
                self.current.help[c],
                change=self.change(self.current.help[c], self.previous.help[c]),
            )
            for c in codes
        ]
        return sorted(ranked, key=lambda r: (-r.count, BANTUAN.index(r.code)))

    def change(self, now: int, before: int) -> int | None:
        """now - before, or None when there is no month before to compare with."""
        return now - before if self.comparable else None

    def _before(self, code: str) -> bool:
        return self.comparable and self.previous.obstacles[code] > 0


@dataclass(frozen=True)
class TrendPoint:
    period: Period
    total: int
    on_time: int
    late: int

    def percent(self, count: int) -> float:
        return 100.0 * count / self.total if self.total else 0.0


# Which month --------------------------------------------------------------------------------


def latest_period(settings: Settings, at: datetime) -> Period:
    """The newest month a recap can be asked for: the period being reported now
    (`current_period`), or the one before while that one's report has not opened yet."""
    period = current_period(settings, at)
    opening = calendar(settings, period)[0].due
    if at < opening:
        period = _previous(period) or period
    return period


def _previous(period: Period) -> Period | None:
    try:
        return period.previous()
    except ValueError:  # January of MIN_YEAR: nothing before
        return None


def _months_up_to(period: Period, count: int) -> list[Period]:
    months = [period]
    while len(months) < count and months[0] > Period(MIN_YEAR, 1):
        months.insert(0, months[0].previous())
    return months


# Queries ------------------------------------------------------------------------------------


_Ts = TypeVarTuple("_Ts")


def _in_scope(query: Select[*_Ts], kecamatan_id: int | None) -> Select[*_Ts]:
    return query if kecamatan_id is None else query.where(Kelurahan.kecamatan_id == kecamatan_id)


def _scope_of(actor: Actor) -> int | None:
    if actor.officer is None:
        raise NotAnOfficer
    return actor.officer.kecamatan_id


async def _registry(session: AsyncSession, kecamatan_id: int | None) -> list[tuple[int, str, int]]:
    """(kecamatan id, name, number of cooperatives) for each kecamatan in scope."""
    query = (
        select(Kecamatan.id, Kecamatan.nama, func.count(Koperasi.id))
        .join(Kelurahan, Kelurahan.kecamatan_id == Kecamatan.id)
        .join(Koperasi, Koperasi.kelurahan_id == Kelurahan.id)
        .group_by(Kecamatan.id, Kecamatan.nama)
        .order_by(Kecamatan.nama, Kecamatan.id)
    )
    # Plain rows through the connection: a country has 7,000 kecamatan.
    rows = await (await session.connection()).execute(_in_scope(query, kecamatan_id))
    return [(int(k), str(nama), int(n)) for k, nama, n in rows.all()]


# Counts kept for a scope as a whole (not per kecamatan) go under this kecamatan id.
WHOLE = 0


async def _tallies(
    session: AsyncSession,
    periods: Sequence[Period],
    kecamatan_id: int | None,
    per_kecamatan: Collection[str] = (),
    answers_per_kecamatan: Collection[str] = (),
) -> dict[tuple[str, int], Tally]:
    """The current revisions of the periods' reports in scope, counted per (period, kecamatan).

    Reports, lateness and status are counted per kecamatan for the `per_kecamatan` periods,
    the other answers (obstacles, help) for the `answers_per_kecamatan` ones; everything else
    under (period, WHOLE), so merging a period's tallies gives its totals. The counted answers
    are columns of the report (`Report.count_answers`), grouped in SQL: a national month is a
    hundred thousand reports whose answers repeat a few hundred combinations, and each
    distinct text is parsed once here.
    """
    connection = await session.connection()
    keys = [p.key for p in periods]

    def grouped(split: Collection[str], by: Sequence[Any], counted: Sequence[Any]) -> Select[Any]:
        """Per distinct (period, place, *by): the `counted` aggregates, then the reports. The
        place is the kecamatan for the `split` periods, WHOLE for the others."""
        query = select(Report.period)
        if split:
            # Written into the SQL: it is grouped by as well.
            in_split = Report.period.in_(bindparam("split", sorted(split), literal_execute=True))
            query = query.add_columns(
                case((in_split, Kelurahan.kecamatan_id), else_=WHOLE).label("place")
            )
        else:
            query = query.add_columns(literal_column(str(WHOLE)).label("place"))
        query = query.add_columns(*by, *counted, func.count()).where(Report.period.in_(keys))
        if split or kecamatan_id is not None:
            # The kecamatan of each report: through its cooperative's kelurahan.
            query = query.join(Koperasi, Koperasi.id == Report.koperasi_id).join(
                Kelurahan, Kelurahan.id == Koperasi.kelurahan_id
            )
        query = query.group_by(Report.period, *by)
        if split:
            query = query.group_by(literal_column("place"))
        return _in_scope(query, kecamatan_id)

    async def count(split: Collection[str], *by: Any, counted: Sequence[Any] = ()) -> list[Any]:
        return list((await connection.execute(grouped(split, by, counted))).all())

    # Counted per place as one row of numbers: the late reports, each status, all reports.
    status = Report.status_operasional
    counts = await count(
        per_kecamatan,
        counted=[
            func.count().filter(Report.late.is_(True)),
            *(func.count().filter(status == s) for s in STATUS),
        ],
    )
    if not counts:
        return {}
    # Each answer grouped on its own (with what it is read with): together, the combinations
    # would be nearly as many as the reports.
    named = await count(answers_per_kecamatan, Report.kendala, Report.kendala_utama)
    asked = await count(answers_per_kecamatan, Report.kebutuhan_bantuan)
    changed = await count(answers_per_kecamatan, Report.kendala_teratasi, Report.kendala_memburuk)
    tallies: dict[tuple[str, int], Tally] = {}

    def tally(key: tuple[str, int]) -> Tally:
        found = tallies.get(key)
        if found is None:
            found = tallies[key] = Tally()
        return found

    for p, k, late, *by_status, n in counts:
        t = tally((p, k))
        t.reported += n
        t.late += late
        for s, found in zip(STATUS, by_status, strict=True):
            if found:
                t.status[s] += found
    obstacle_codes = _parser(KENDALA)
    help_codes = _parser(BANTUAN)
    for p, k, text, main_text, n in named:
        t = tally((p, k))
        obstacles = [code for code in obstacle_codes(text) if code != NONE]
        if not obstacles:
            # NIHIL, or (in a malformed row) nothing at all: no obstacle named either way.
            t.no_obstacle += n
        for code in obstacles:
            t.obstacles[code] += n
        given: dict[str, Any] = {"kendala": obstacles}
        if isinstance(main_text, str) and main_text in obstacles:
            given["kendala_utama"] = main_text
        main = main_obstacle(given)
        if main is not None:
            t.main[main] += n
    for p, k, text, n in asked:
        t = tally((p, k))
        codes = help_codes(text)
        for code in codes:
            t.help[code] += n
        if not codes:
            t.no_help += n
    for p, k, solved_text, worse_text, n in changed:
        t = tally((p, k))
        for code in obstacle_codes(solved_text):
            t.solved[code] += n
        for code in obstacle_codes(worse_text):
            t.worse[code] += n
    return tallies


def _parser(allowed: Sequence[str]) -> Callable[[str | None], tuple[str, ...]]:
    """Reads a multiple-choice answer's JSON text into its known codes (see `_codes`),
    remembering each distinct text."""
    seen: dict[str | None, tuple[str, ...]] = {}

    def parse(text: str | None) -> tuple[str, ...]:
        codes = seen.get(text)
        if codes is None:
            try:
                value = json.loads(text) if text is not None else None
            except ValueError:
                value = None  # a bare string (not a list): nothing chosen, as `_codes` says
            codes = seen[text] = tuple(_codes(value, allowed))
        return codes

    return parse


def _merge(tallies: Sequence[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        total.reported += t.reported
        total.late += t.late
        total.no_obstacle += t.no_obstacle
        total.no_help += t.no_help
        # Most are empty: a national recap merges 7,000 kecamatan counting status only.
        for mine, theirs in (
            (total.status, t.status),
            (total.obstacles, t.obstacles),
            (total.main, t.main),
            (total.help, t.help),
            (total.solved, t.solved),
            (total.worse, t.worse),
        ):
            if theirs:
                mine.update(theirs)
    return total


def _found(tallies: dict[tuple[str, int], Tally], key: tuple[str, int]) -> Tally:
    found = tallies.get(key)
    return Tally() if found is None else found


async def recap(
    core: Core, actor: Actor, period: Period, obstacles_per_kecamatan: bool = True
) -> Recap:
    """The recap of `period` in the actor's scope (their kecamatan, or the city). Raises
    NotAnOfficer for anyone else.

    Without `obstacles_per_kecamatan` the kecamatan lines count reports and status only (what
    /rekap shows of them; the obstacle chart needs the rest), which is much less work when the
    scope has thousands of kecamatan."""
    kecamatan_id = _scope_of(actor)
    assert actor.officer is not None
    previous = _previous(period)
    months = [period] if previous is None else [previous, period]
    async with core.db.sessions() as session:
        registry = await _registry(session, kecamatan_id)
        # The month before is only compared as a whole: counted without the kecamatan.
        tallies = await _tallies(
            session,
            months,
            kecamatan_id,
            per_kecamatan={period.key},
            answers_per_kecamatan={period.key} if obstacles_per_kecamatan else (),
        )
    key = period.key
    lines = [KecamatanRecap(k, nama, n, _found(tallies, (key, k))) for k, nama, n in registry]
    before = tallies.get((previous.key, WHOLE), Tally()) if previous is not None else Tally()
    return Recap(
        period=period,
        previous_period=previous,
        kecamatan_id=kecamatan_id,
        wilayah=actor.officer.kecamatan,
        total=sum(line.total for line in lines),
        current=_merge(
            [line.tally for line in lines] + [tallies.get((period.key, WHOLE), Tally())]
        ),
        previous=before,
        kecamatan=lines,
    )


async def reporting_trend(
    core: Core, actor: Actor, period: Period, months: int = TREND_MONTHS
) -> list[TrendPoint]:
    """On time and late reports of the `months` months up to `period`, in the actor's scope.

    The denominator is today's registry: the city does not keep when each cooperative was
    formed, and all 67 were formed before reporting started.
    """
    kecamatan_id = _scope_of(actor)
    periods = _months_up_to(period, months)
    async with core.db.sessions() as session:
        total_query = select(func.count(Koperasi.id)).join(
            Kelurahan, Kelurahan.id == Koperasi.kelurahan_id
        )
        total = int(await session.scalar(_in_scope(total_query, kecamatan_id)) or 0)
        query = (
            select(Report.period, Report.late, func.count())
            .join(Koperasi, Koperasi.id == Report.koperasi_id)
            .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
            .where(Report.period.in_([p.key for p in periods]))
            .group_by(Report.period, Report.late)
        )
        counts = {
            (key, bool(late)): int(n)
            for key, late, n in (await session.execute(_in_scope(query, kecamatan_id))).all()
        }
    return [
        TrendPoint(p, total, counts.get((p.key, False), 0), counts.get((p.key, True), 0))
        for p in periods
    ]


# What officers see --------------------------------------------------------------------------


def _percent(count: int, total: int) -> int:
    return round(100 * count / total) if total else 0


def _kendala_label(m: Messages, code: str) -> str:
    return option_label(m, MONTHLY_REPORT.field("kendala"), code)


def _bantuan_label(m: Messages, code: str) -> str:
    return option_label(m, MONTHLY_REPORT.field("kebutuhan_bantuan"), code)


def summary_values(m: Messages, r: Recap) -> dict[str, Any]:
    """What the rekap_ringkasan template shows of a recap."""
    now, before = r.current, r.previous
    status_field = MONTHLY_REPORT.field("status_operasional")
    districts = r.kecamatan if r.kecamatan_id is None else []
    shown = _kecamatan_shown(districts)
    return {
        "periode": r.period.name(m.language),
        "sebelumnya": r.previous_period.name(m.language) if r.previous_period else None,
        "pembanding": r.comparable,
        "wilayah": r.wilayah,
        "total": r.total,
        "melapor": now.reported,
        "persen": _percent(now.reported, r.total),
        "tepat": now.on_time,
        "terlambat": now.late,
        "belum": r.missing,
        "beda_melapor": r.change(now.reported, before.reported),
        "status": [
            {"label": option_label(m, status_field, s), "jumlah": n} for s, n in r.status_counts()
        ],
        "tidak_diketahui": r.unknown_status,
        "beroperasi": now.operating,
        "beda_beroperasi": r.change(now.operating, before.operating),
        "kendala": [
            {
                "label": _kendala_label(m, x.code),
                "jumlah": x.count,
                "utama": x.main,
                "beda": x.change,
            }
            for x in r.obstacles()
        ],
        "tanpa_kendala": now.no_obstacle,
        "teratasi": [
            {"label": _kendala_label(m, code), "jumlah": n} for code, n in now.solved.most_common()
        ],
        "memburuk": [
            {"label": _kendala_label(m, code), "jumlah": n} for code, n in now.worse.most_common()
        ],
        "bantuan": [
            {"label": _bantuan_label(m, x.code), "jumlah": x.count, "beda": x.change}
            for x in r.help_requested()
        ],
        "tanpa_bantuan": now.no_help,
        # One kecamatan in scope: its line would repeat the totals.
        "kecamatan": [
            {
                "nama": k.nama,
                "total": k.total,
                "melapor": k.tally.reported,
                "tepat": k.tally.on_time,
                "terlambat": k.tally.late,
                "beroperasi": k.tally.operating,
            }
            for k in shown
        ],
        "kecamatan_semua": len(districts),
        "kecamatan_lain": len(districts) - len(shown),
    }


def _kecamatan_shown(districts: list[KecamatanRecap]) -> list[KecamatanRecap]:
    """All, in registry order; past REKAP_MAX_KECAMATAN, those with the lowest reporting rate
    (then by name)."""
    if len(districts) <= REKAP_MAX_KECAMATAN:
        return districts
    ranked = sorted(districts, key=lambda k: (k.tally.reported / max(k.total, 1), k.nama))
    return ranked[:REKAP_MAX_KECAMATAN]


def chart_buttons(m: Messages, period: Period) -> list[list[tuple[str, str]]]:
    return [
        [
            (m.render("rekap_tombol", kind=CHART_RATE), f"chart:{CHART_RATE}:{period.key}"),
            (m.render("rekap_tombol", kind=CHART_KENDALA), f"chart:{CHART_KENDALA}:{period.key}"),
        ]
    ]


def _example(m: Messages, latest: Period) -> dict[str, str]:
    return {"contoh": latest.name(m.language), "contoh_angka": f"{latest.month}/{latest.year}"}


async def recap_view(core: Core, actor: Actor, text: str | None) -> list[Reply]:
    """/rekap [bulan]: the recap of a month (default: the latest one) with the chart buttons."""
    m = core.messages
    if actor.officer is None:
        return [Reply(m.render("rekap_tidak_boleh", linked=actor.is_linked))]
    now = core.clock.now()
    latest = latest_period(core.settings, now)
    period = latest
    if text and text.strip():
        parsed = parse_period(text, now, core.settings.tz)
        if parsed is None or parsed > latest:
            return [
                Reply(
                    m.render(
                        "rekap_bulan_salah",
                        text=text.strip(),
                        future=parsed is not None,
                        periode=parsed.name(m.language) if parsed else "",
                        **_example(m, latest),
                    )
                )
            ]
        period = parsed
    found = await recap(core, actor, period, obstacles_per_kecamatan=False)
    return [
        Reply(
            m.render("rekap_ringkasan", **summary_values(m, found)),
            chart_buttons(m, period),
        )
    ]


# Charts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """A chart to send: `render` is CPU work that touches nothing shared (run it in a thread)."""

    kind: str
    period: Period
    filename: str
    caption: str
    render: Callable[[], bytes]


def _chart_texts(m: Messages, **values: Any) -> dict[str, str]:
    """The words drawn on the charts, from rekap_grafik ("key = text" lines)."""
    texts: dict[str, str] = {}
    for line in m.render("rekap_grafik", **values).splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            texts[key.strip()] = value.strip().replace("\\n", "\n")
    return texts


def _month_label(m: Messages, period: Period) -> str:
    """Short month labels for an axis: "Okt 26"."""
    return format_date(period.first_day(), "MMM yy", locale=m.language)


def _render_rate(points: list[tuple[str, float, float]], texts: dict[str, str]) -> bytes:
    from bot import charts  # matplotlib loads on the first chart, not at start-up

    return charts.reporting_rate_png(
        points,
        title=texts["rate.title"],
        on_time_label=texts["rate.on_time"],
        late_label=texts["rate.late"],
        axis_label=texts["rate.axis"],
    )


def _render_kendala(
    obstacles: list[str], kecamatan: list[str], counts: list[list[int]], texts: dict[str, str]
) -> bytes:
    from bot import charts

    return charts.obstacles_by_kecamatan_png(
        obstacles,
        kecamatan,
        counts,
        title=texts["kendala.title"],
        axis_label=texts["kendala.axis"],
        others_label=texts["kendala.others"],
    )


def _refused(m: Messages, reason: str, **values: Any) -> Reply:
    return Reply(m.render("rekap_grafik_tidak_bisa", reason=reason, **values), alert=True)


async def chart_view(core: Core, actor: Actor, action: str) -> Chart | Reply:
    """A chart button pressed. The action is parsed strictly and the scope is the actor's own,
    whatever the button says: a forged or old button can only show what /rekap would."""
    m = core.messages
    if actor.officer is None:
        return _refused(m, "officer")
    match = _CHART_ACTION.fullmatch(action)
    try:
        period = Period.parse_key(match[2]) if match else None
    except ValueError:
        period = None
    if match is None or period is None:
        return _refused(m, "stale")
    latest = latest_period(core.settings, core.clock.now())
    if period > latest:
        return _refused(m, "future", periode=period.name(m.language))
    kind = match[1]
    common = {"periode": period.name(m.language), "wilayah": actor.officer.kecamatan}
    if kind == CHART_RATE:
        trend = await reporting_trend(core, actor, period)
        last = trend[-1]
        texts = _chart_texts(m, total=last.total, bulan=len(trend), **common)
        points = [
            (_month_label(m, p.period), p.percent(p.on_time), p.percent(p.late)) for p in trend
        ]
        caption = m.render(
            "rekap_grafik_keterangan",
            kind=CHART_RATE,
            bulan=len(trend),
            total=last.total,
            melapor=last.on_time + last.late,
            tepat=last.on_time,
            terlambat=last.late,
            **common,
        )
        return Chart(
            CHART_RATE,
            period,
            f"rekap-pelaporan-{period.key}.png",
            caption,
            partial(_render_rate, points, texts),
        )
    found = await recap(core, actor, period)
    ranked = [x for x in found.obstacles() if x.count > 0]
    if not ranked:
        return Reply(
            m.render(
                "rekap_grafik_keterangan",
                kind="kosong",
                total=found.total,
                melapor=found.current.reported,
                **common,
            )
        )
    texts = _chart_texts(m, total=found.total, bulan=1, **common)
    counts = [[k.tally.obstacles[x.code] for k in found.kecamatan] for x in ranked]
    caption = m.render(
        "rekap_grafik_keterangan",
        kind=CHART_KENDALA,
        total=found.total,
        melapor=found.current.reported,
        teratas=[(_kendala_label(m, x.code), x.count) for x in ranked[:3]],
        **common,
    )
    return Chart(
        CHART_KENDALA,
        period,
        f"rekap-kendala-{period.key}.png",
        caption,
        partial(
            _render_kendala,
            [_kendala_label(m, x.code) for x in ranked],
            [k.nama for k in found.kecamatan],
            counts,
            texts,
        ),
    )
