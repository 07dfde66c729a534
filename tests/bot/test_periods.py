"""Monthly periods: keys, arithmetic, names, time zones and reading months as people type them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.periods import Period, default_period, open_periods, parse_period

WIB = ZoneInfo("Asia/Jakarta")
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=WIB)
NEW_YEAR = datetime(2026, 1, 3, 10, 0, tzinfo=WIB)

periods = st.builds(Period, st.integers(2000, 2100), st.integers(1, 12))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-10", Period(2026, 10)),
        ("10/2026", Period(2026, 10)),
        ("10-2026", Period(2026, 10)),
        ("10.2026", Period(2026, 10)),
        ("3/2026", Period(2026, 3)),
        ("2026/03", Period(2026, 3)),
        ("Oktober 2026", Period(2026, 10)),
        ("  OKTOBER   2026 ", Period(2026, 10)),
        ("oktober", Period(2026, 10)),
        ("okt", Period(2026, 10)),
        ("okt.", Period(2026, 10)),
        ("okt 2026", Period(2026, 10)),
        ("Okt. 2026", Period(2026, 10)),
        ("Okt '26", Period(2026, 10)),
        ("Okt ’26", Period(2026, 10)),
        ("okt 26", Period(2026, 10)),
        ("october 2026", Period(2026, 10)),
        ("oct", Period(2026, 10)),
        ("bulan oktober 2026", Period(2026, 10)),
        ("bulan lalu", Period(2026, 10)),
        ("bulan kemarin", Period(2026, 10)),
        ("bulan yang lalu", Period(2026, 10)),
        ("bln lalu", Period(2026, 10)),
        ("last month", Period(2026, 10)),
        ("bulan ini", Period(2026, 11)),
        ("Bulan ini?", Period(2026, 11)),
        ("2 bulan lalu", Period(2026, 9)),
        ("dua bulan yang lalu", Period(2026, 9)),
        ("12 bulan lalu", Period(2025, 11)),
        ("3 months ago", Period(2026, 8)),
        ("september kemarin", Period(2026, 9)),
        ("sept", Period(2026, 9)),
        ("november", Period(2026, 11)),
        ("november lalu", Period(2025, 11)),
        ("desember", Period(2025, 12)),
        ("des", Period(2025, 12)),
        ("desember ini", Period(2026, 12)),
        ("desember 2026", Period(2026, 12)),
        ("jan", Period(2026, 1)),
        ("pebruari", Period(2026, 2)),
        ("mar 2025", Period(2025, 3)),
        ("apr", Period(2026, 4)),
        ("mei", Period(2026, 5)),
        ("may 2024", Period(2024, 5)),
        ("jun", Period(2026, 6)),
        ("jul", Period(2026, 7)),
        ("agu", Period(2026, 8)),
        ("agt 2025", Period(2025, 8)),
        ("agust", Period(2026, 8)),
        ("nop", Period(2026, 11)),
        # not a month
        ("", None),
        ("   ", None),
        ("halo", None),
        ("bulan", None),
        ("2026", None),
        ("13/2026", None),
        ("0/2026", None),
        ("2026-13", None),
        ("1999-12", None),
        ("oktober 1999", None),
        ("10/26", None),  # numeric forms need a four-digit year
        ("27 oktober 2026", None),  # a date, not a month
        ("okt 2026 2027", None),
        ("bulan depan", None),
    ],
)
def test_parse_period_on_27_november_2026(text: str, expected: Period | None) -> None:
    assert parse_period(text, NOW, WIB) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("desember", Period(2025, 12)),
        ("bulan lalu", Period(2025, 12)),
        ("bulan ini", Period(2026, 1)),
        ("januari", Period(2026, 1)),
        ("januari kemarin", Period(2025, 1)),
        ("2 bulan lalu", Period(2025, 11)),
        ("februari", Period(2025, 2)),
    ],
)
def test_parse_period_across_the_new_year(text: str, expected: Period) -> None:
    assert parse_period(text, NEW_YEAR, WIB) == expected


def test_parse_period_reads_now_in_the_given_time_zone() -> None:
    # 17:30 UTC on 31 October is already 1 November in Jakarta.
    moment = datetime(2026, 10, 31, 17, 30, tzinfo=UTC)
    assert parse_period("bulan ini", moment, WIB) == Period(2026, 11)
    assert parse_period("bulan ini", moment, ZoneInfo("UTC")) == Period(2026, 10)


def test_parse_period_rejects_a_naive_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_period("bulan lalu", datetime(2026, 11, 27, 10, 0), WIB)


@given(st.text(max_size=40))
def test_parse_period_never_raises_on_any_text(text: str) -> None:
    result = parse_period(text, NOW, WIB)
    assert result is None or isinstance(result, Period)


@pytest.mark.parametrize(
    ("key", "period"),
    [("2026-10", Period(2026, 10)), ("2000-01", Period(2000, 1)), ("2100-12", Period(2100, 12))],
)
def test_key_round_trip(key: str, period: Period) -> None:
    assert period.key == key
    assert Period.parse_key(key) == period


@pytest.mark.parametrize(
    "key",
    [
        "",
        "2026-1",
        "2026-13",
        "2026-00",
        "26-10",
        "2026/10",
        " 2026-10",
        "2026-10\n",
        "1999-12",
        "oktober",
    ],
)
def test_parse_key_rejects_anything_else(key: str) -> None:
    with pytest.raises(ValueError, match=r"period key|outside"):
        Period.parse_key(key)


@pytest.mark.parametrize(("year", "month"), [(1999, 12), (2101, 1), (2026, 0), (2026, 13)])
def test_out_of_range_periods_are_refused(year: int, month: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        Period(year, month)


def test_previous_and_next_cross_years() -> None:
    assert Period(2026, 1).previous() == Period(2025, 12)
    assert Period(2025, 12).next() == Period(2026, 1)
    assert Period(2026, 10).previous() == Period(2026, 9)
    assert Period(2026, 10).next() == Period(2026, 11)


def test_previous_and_next_stop_at_the_ends_of_the_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        Period(2000, 1).previous()
    with pytest.raises(ValueError, match="outside"):
        Period(2100, 12).next()


def test_periods_order_by_year_then_month() -> None:
    assert sorted([Period(2026, 1), Period(2025, 12), Period(2025, 2)]) == [
        Period(2025, 2),
        Period(2025, 12),
        Period(2026, 1),
    ]


@pytest.mark.parametrize(
    ("period", "last"),
    [
        (Period(2024, 2), date(2024, 2, 29)),
        (Period(2000, 2), date(2000, 2, 29)),
        (Period(2100, 2), date(2100, 2, 28)),
        (Period(2026, 2), date(2026, 2, 28)),
        (Period(2026, 4), date(2026, 4, 30)),
        (Period(2026, 12), date(2026, 12, 31)),
    ],
)
def test_first_and_last_day(period: Period, last: date) -> None:
    assert period.first_day() == date(period.year, period.month, 1)
    assert period.last_day() == last


@pytest.mark.parametrize(
    ("period", "language", "name"),
    [
        (Period(2026, 10), "id", "Oktober 2026"),
        (Period(2026, 10), "en", "October 2026"),
        (Period(2026, 5), "id", "Mei 2026"),
        (Period(2026, 8), "id", "Agustus 2026"),
        (Period(2025, 12), "id", "Desember 2025"),
        (Period(2025, 12), "en", "December 2025"),
    ],
)
def test_names(period: Period, language: str, name: str) -> None:
    assert period.name(language) == name


def test_name_defaults_to_indonesian() -> None:
    assert Period(2026, 2).name() == "Februari 2026"


@pytest.mark.parametrize(
    ("moment", "tz", "expected"),
    [
        (datetime(2026, 10, 31, 17, 30, tzinfo=UTC), "Asia/Jakarta", Period(2026, 11)),
        (datetime(2026, 10, 31, 16, 59, tzinfo=UTC), "Asia/Jakarta", Period(2026, 10)),
        (datetime(2026, 10, 31, 17, 0, tzinfo=UTC), "Asia/Jakarta", Period(2026, 11)),
        (datetime(2026, 10, 31, 17, 30, tzinfo=UTC), "UTC", Period(2026, 10)),
        (datetime(2026, 10, 31, 15, 30, tzinfo=UTC), "Asia/Jayapura", Period(2026, 11)),
        (datetime(2026, 10, 31, 15, 30, tzinfo=UTC), "Asia/Makassar", Period(2026, 10)),
        (datetime(2026, 10, 31, 15, 30, tzinfo=UTC), "Asia/Jakarta", Period(2026, 10)),
        # 23:30 on 31 December in New York (EST) is already January in Jakarta.
        (datetime(2027, 1, 1, 4, 30, tzinfo=UTC), "America/New_York", Period(2026, 12)),
        (datetime(2027, 1, 1, 4, 30, tzinfo=UTC), "Asia/Jakarta", Period(2027, 1)),
        # the same instant written with a Jakarta offset
        (datetime(2026, 11, 1, 0, 30, tzinfo=WIB), "UTC", Period(2026, 10)),
    ],
)
def test_containing_uses_the_wall_clock_of_tz(moment: datetime, tz: str, expected: Period) -> None:
    assert Period.containing(moment, ZoneInfo(tz)) == expected


def test_containing_rejects_a_naive_moment() -> None:
    with pytest.raises(ValueError, match="aware"):
        Period.containing(datetime(2026, 10, 31, 23, 0), WIB)


def test_default_period_is_the_previous_month() -> None:
    assert default_period(NOW, WIB) == Period(2026, 10)
    assert default_period(NEW_YEAR, WIB) == Period(2025, 12)
    # 1 November 00:30 in Jakarta is still 31 October in UTC.
    early = datetime(2026, 10, 31, 17, 30, tzinfo=UTC)
    assert default_period(early, WIB) == Period(2026, 10)
    assert default_period(early, ZoneInfo("UTC")) == Period(2026, 9)


def test_open_periods_are_the_months_before_the_current_one_newest_first() -> None:
    assert open_periods(NOW, WIB) == [Period(2026, 10), Period(2026, 9), Period(2026, 8)]
    assert open_periods(NEW_YEAR, WIB) == [Period(2025, 12), Period(2025, 11), Period(2025, 10)]
    assert open_periods(NOW, WIB, months=1) == [default_period(NOW, WIB)]
    assert open_periods(NOW, WIB, months=0) == []
    assert len(open_periods(NOW, WIB, months=14)) == 14
    assert open_periods(NOW, WIB, months=14)[-1] == Period(2025, 9)


def test_open_periods_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="negative"):
        open_periods(NOW, WIB, months=-1)


@given(periods)
def test_key_round_trips_for_any_period(period: Period) -> None:
    assert Period.parse_key(period.key) == period
    assert parse_period(period.key, NOW, WIB) == period


@given(periods.filter(lambda p: p != Period(2100, 12)))
def test_next_then_previous_is_identity(period: Period) -> None:
    assert period.next().previous() == period
    assert period.next() > period


@given(periods.filter(lambda p: p != Period(2000, 1)))
def test_previous_then_next_is_identity(period: Period) -> None:
    assert period.previous().next() == period
    assert period.previous().last_day() < period.first_day()


@given(periods)
def test_every_name_parses_back(period: Period) -> None:
    assert parse_period(period.name("id"), NOW, WIB) == period
    assert parse_period(period.name("en"), NOW, WIB) == period
