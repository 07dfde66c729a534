"""Reading a meeting's day and time as an officer types it: forms, errors, weekdays, round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.tanggal import Moment, MomentError, parse_moment_text
from messages import Messages

WIB = ZoneInfo("Asia/Jakarta")
NOW = datetime(2025, 11, 5, 10, 0, tzinfo=WIB)  # a Wednesday
YEAR_END = datetime(2025, 12, 30, 10, 0, tzinfo=WIB)  # a Tuesday


def wib(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=WIB).astimezone(UTC)


def read(text: str, now: datetime = NOW, **kwargs: int) -> Moment | MomentError:
    return parse_moment_text(text, now, WIB, **kwargs)


def moment(text: str, now: datetime = NOW) -> Moment:
    result = read(text, now)
    assert isinstance(result, Moment), f"{text!r} -> {result}"
    return result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # full dates with a month name, any case, extra spaces and punctuation, optional WIB
        ("Senin, 10 November 2025 pukul 09.00", wib(2025, 11, 10, 9, 0)),
        ("Senin 10 November 2025 pukul 09.00 WIB", wib(2025, 11, 10, 9, 0)),
        ("  SENIN,   10   NOVEMBER 2025,  PUKUL 09.00 wib. ", wib(2025, 11, 10, 9, 0)),
        ("Senin, 10 November 2025 pukul 09.00 WIB s.d. selesai", wib(2025, 11, 10, 9, 0)),
        ("pukul 09.00 WIB sampai selesai, Senin 10 November 2025", wib(2025, 11, 10, 9, 0)),
        ("Hari/tanggal: Senin, 10 November 2025; Waktu: pukul 09.00 WIB", wib(2025, 11, 10, 9, 0)),
        ("10 November 2025 jam 9", wib(2025, 11, 10, 9, 0)),
        ("10 Nov 2025 09:00", wib(2025, 11, 10, 9, 0)),
        ("10 Nov. 2025 pkl. 09.00", wib(2025, 11, 10, 9, 0)),
        ("10 Nopember 2025 jam 9", wib(2025, 11, 10, 9, 0)),
        ("10-nov-2025 09.00", wib(2025, 11, 10, 9, 0)),
        ("tanggal 10 November 2025 pukul 9.05", wib(2025, 11, 10, 9, 5)),
        # no year: the next such date from today on
        ("10 nov 09.30", wib(2025, 11, 10, 9, 30)),
        ("5 November pukul 15.00", wib(2025, 11, 5, 15, 0)),
        ("4 November pukul 15.00", wib(2026, 11, 4, 15, 0)),
        ("10/11 jam 9", wib(2025, 11, 10, 9, 0)),
        # numeric dates: day/month/year with /, - or . (dots also separate hours and minutes)
        ("10/11/2025 09.00", wib(2025, 11, 10, 9, 0)),
        ("10-11-2025 09.00", wib(2025, 11, 10, 9, 0)),
        ("10.11.2025 pukul 13.30", wib(2025, 11, 10, 13, 30)),
        ("10.11.2025 13.30", wib(2025, 11, 10, 13, 30)),
        ("13.30 10.11.2025", wib(2025, 11, 10, 13, 30)),
        ("tgl.10/11/2025 jam 9", wib(2025, 11, 10, 9, 0)),
        ("03/04/2026 09.00", wib(2026, 4, 3, 9, 0)),
        ("3/4/2026 9.00", wib(2026, 4, 3, 9, 0)),
        ("2025-11-10 09:00", wib(2025, 11, 10, 9, 0)),
        ("2025-11-10T09:00", wib(2025, 11, 10, 9, 0)),
        # two-digit years are 20yy
        ("10/11/25 09.00", wib(2025, 11, 10, 9, 0)),
        ("10.11.25 13.30", wib(2025, 11, 10, 13, 30)),
        ("10 Nov 25 jam 9", wib(2025, 11, 10, 9, 0)),
        ("10 Nov '25 jam 9", wib(2025, 11, 10, 9, 0)),
        # relative days
        ("besok pukul 10.00", wib(2025, 11, 6, 10, 0)),
        ("Besok, pukul 10.00 WIB", wib(2025, 11, 6, 10, 0)),
        ("esok hari jam 8", wib(2025, 11, 6, 8, 0)),
        ("lusa jam 14", wib(2025, 11, 7, 14, 0)),
        ("hari ini pukul 15.00", wib(2025, 11, 5, 15, 0)),
        ("hari ini pukul 10.00", wib(2025, 11, 5, 10, 0)),  # now itself is not past
        ("nanti sore jam 3", wib(2025, 11, 5, 15, 0)),
        ("malam ini jam 7", wib(2025, 11, 5, 19, 0)),
        ("besok pagi jam 9", wib(2025, 11, 6, 9, 0)),
        ("pukul 10.00 besok", wib(2025, 11, 6, 10, 0)),
        ("besok, 6 November 2025 pukul 10.00", wib(2025, 11, 6, 10, 0)),
        # weekdays: the next one after today; "ini" includes today; "minggu depan" = next week
        ("Senin depan pukul 09.00", wib(2025, 11, 10, 9, 0)),
        ("Senin pukul 09.00", wib(2025, 11, 10, 9, 0)),
        ("hari Senin jam 9", wib(2025, 11, 10, 9, 0)),
        ("Rabu pukul 09.00", wib(2025, 11, 12, 9, 0)),
        ("Rabu depan pukul 09.00", wib(2025, 11, 12, 9, 0)),
        ("Rabu ini pukul 15.00", wib(2025, 11, 5, 15, 0)),
        ("Kamis pukul 09.00", wib(2025, 11, 6, 9, 0)),
        ("Jumat minggu depan jam 9", wib(2025, 11, 14, 9, 0)),
        ("Jum'at pekan depan jam 9", wib(2025, 11, 14, 9, 0)),
        ("Minggu pukul 08.00", wib(2025, 11, 9, 8, 0)),
        ("hari Minggu depan pukul 08.00", wib(2025, 11, 9, 8, 0)),
        ("Ahad jam 8", wib(2025, 11, 9, 8, 0)),
        # periods of day
        ("besok pukul 9 pagi", wib(2025, 11, 6, 9, 0)),
        ("besok jam 2 siang", wib(2025, 11, 6, 14, 0)),
        ("besok jam 12 siang", wib(2025, 11, 6, 12, 0)),
        ("besok jam 11 siang", wib(2025, 11, 6, 11, 0)),
        ("besok jam 3 sore", wib(2025, 11, 6, 15, 0)),
        ("besok jam 7 malam", wib(2025, 11, 6, 19, 0)),
        ("besok jam 7.30 malam", wib(2025, 11, 6, 19, 30)),
        ("besok jam 19 malam", wib(2025, 11, 6, 19, 0)),
        ("besok 2 siang", wib(2025, 11, 6, 14, 0)),
        ("besok jam 2", wib(2025, 11, 6, 2, 0)),  # no period of day: the 24-hour clock
        # English
        ("10 November 2025 at 9am", wib(2025, 11, 10, 9, 0)),
        ("Monday, 10 November 2025 at 09.30 WIB", wib(2025, 11, 10, 9, 30)),
        ("November 10, 2025 9:30 pm", wib(2025, 11, 10, 21, 30)),
        ("tomorrow at 12 pm", wib(2025, 11, 6, 12, 0)),
        ("tomorrow at 12 a.m.", wib(2025, 11, 6, 0, 0)),
        ("next friday 10am", wib(2025, 11, 7, 10, 0)),
    ],
)
def test_reads_typed_moments(text: str, expected: datetime) -> None:
    assert moment(text).at == expected


def test_result_is_utc() -> None:
    result = moment("Senin, 10 November 2025 pukul 09.00")
    assert result.at.tzinfo is UTC
    assert result.at == datetime(2025, 11, 10, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", MomentError.EMPTY),
        ("   ", MomentError.EMPTY),
        (" ?! , ", MomentError.EMPTY),
        # garbage is never guessed at
        ("kapan-kapan", MomentError.UNREADABLE),
        ("xyz 99", MomentError.UNREADABLE),
        ("99", MomentError.UNREADABLE),
        ("jam", MomentError.UNREADABLE),
        ("hari", MomentError.UNREADABLE),
        ("sekitar jam 9 besok", MomentError.UNREADABLE),
        ("10 nov 9", MomentError.UNREADABLE),
        ("November 2025 jam 9", MomentError.UNREADABLE),
        ("10.11 13.30", MomentError.UNREADABLE),  # no year: "10.11" is a time, two times
        ("besok pukul 09.00 - 12.00", MomentError.UNREADABLE),  # ranges are refused
        ("besok atau lusa jam 9", MomentError.UNREADABLE),
        ("Senin Selasa jam 9", MomentError.UNREADABLE),
        ("10/11/2025 11/11/2025 jam 9", MomentError.UNREADABLE),
        ("besok, 20 November 2025 pukul 10.00", MomentError.UNREADABLE),  # they disagree
        ("besok pagi jam 3 sore", MomentError.UNREADABLE),
        ("minggu depan jam 9", MomentError.UNREADABLE),  # next week, or next Sunday?
        ("minggu ini jam 9", MomentError.UNREADABLE),
        ("besok jam 9 WITA", MomentError.UNREADABLE),  # not the zone of the bot
        # only a date, only a time
        ("10 November 2025", MomentError.NO_TIME),
        ("Senin, 10/11/2025", MomentError.NO_TIME),
        ("besok", MomentError.NO_TIME),
        ("besok pagi", MomentError.NO_TIME),
        ("Senin depan", MomentError.NO_TIME),
        ("pukul 9 pagi", MomentError.NO_DATE),
        ("jam 2 siang", MomentError.NO_DATE),
        ("09.00 WIB", MomentError.NO_DATE),
        # impossible dates and times
        ("31/02/2025 09.00", MomentError.BAD_DATE),
        ("10/13/2025 09.00", MomentError.BAD_DATE),  # never month/day
        ("32 November 2025 jam 9", MomentError.BAD_DATE),
        ("29 Februari 2026 jam 9", MomentError.BAD_DATE),
        ("29 Februari jam 9", MomentError.BAD_DATE),  # the next one, in 2026, does not exist
        ("31/02/2025", MomentError.BAD_DATE),
        ("10/11/2025 25.00", MomentError.BAD_TIME),
        ("besok 24.00", MomentError.BAD_TIME),
        ("besok 09.60", MomentError.BAD_TIME),
        ("besok jam 14 pagi", MomentError.BAD_TIME),
        ("besok jam 3 malam", MomentError.BAD_TIME),
        ("besok jam 13 pm", MomentError.BAD_TIME),
        # out of range
        ("Rabu, 5 November 2025, pukul 09.00", MomentError.PAST),
        ("hari ini pukul 09.59", MomentError.PAST),
        ("5 November pukul 09.00", MomentError.PAST),  # today, not next year
        ("4/11/2025 jam 9", MomentError.PAST),
        ("10/11/24 09.00", MomentError.PAST),
        ("01/01/0001 05.00", MomentError.PAST),
        ("10 November 2026 pukul 09.00", MomentError.TOO_FAR),
        ("31/12/9999 23.59", MomentError.TOO_FAR),
    ],
)
def test_refuses(text: str, error: MomentError) -> None:
    assert read(text) is error


def test_limits_are_inclusive() -> None:
    limit = NOW + timedelta(days=366)
    assert moment("6 November 2026 pukul 10.00").at == limit
    assert read("6 November 2026 pukul 10.01") is MomentError.TOO_FAR
    # 4 days and 23 hours ahead
    assert read("10 November 2025 jam 9", max_days_ahead=4) is MomentError.TOO_FAR
    assert isinstance(read("10 November 2025 jam 9", max_days_ahead=5), Moment)


def test_past_counts_seconds() -> None:
    now = NOW + timedelta(seconds=30)
    assert read("hari ini pukul 10.00", now) is MomentError.PAST
    assert moment("hari ini pukul 10.01", now).at == wib(2025, 11, 5, 10, 1)


def test_needs_aware_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_moment_text("besok jam 9", datetime(2025, 11, 5, 10, 0), WIB)


def test_now_in_another_zone_uses_the_local_day() -> None:
    # 2025-11-05 20:00 UTC is already Thursday 6 November 03:00 in Jakarta
    now = datetime(2025, 11, 5, 20, 0, tzinfo=UTC)
    assert moment("besok jam 9", now).at == wib(2025, 11, 7, 9, 0)
    assert moment("hari ini jam 9", now).at == wib(2025, 11, 6, 9, 0)


# --- weekdays ---------------------------------------------------------------------------------


def test_weekday_mismatch_is_flagged_not_trusted() -> None:
    result = moment("Selasa, 10 November 2025 pukul 09.00")
    assert result.at == wib(2025, 11, 10, 9, 0)  # the date wins
    assert result.weekday_mismatch
    assert result.named_weekday == "Selasa"
    assert Messages("id", WIB).tanggal(result.at) == "Senin, 10 November 2025"


@pytest.mark.parametrize(
    ("text", "named", "mismatch"),
    [
        ("Senin, 10 November 2025 pukul 09.00", "Senin", False),
        ("SENIN 10/11/2025 jam 9", "Senin", False),
        ("hari Jum'at, 14 November 2025 jam 9", "Jumat", False),
        ("Jumat, 13 November 2025 jam 9", "Jumat", True),
        ("Monday 10 November 2025 at 9am", "Senin", False),
        ("Minggu depan, 16 November 2025 jam 9", "Minggu", False),
        ("Kamis besok jam 9", "Kamis", False),
        ("besok Jumat jam 9", "Jumat", True),
        ("Senin depan pukul 09.00", "Senin", False),
        ("10 November 2025 jam 9", None, False),
        ("besok jam 9", None, False),
    ],
)
def test_named_weekday(text: str, named: str | None, mismatch: bool) -> None:
    result = moment(text)
    assert result.named_weekday == named
    assert result.weekday_mismatch is mismatch


# --- the new year -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5 Januari pukul 09.00", wib(2026, 1, 5, 9, 0)),
        ("Senin, 5 Januari pukul 09.00", wib(2026, 1, 5, 9, 0)),
        ("5/1 jam 9", wib(2026, 1, 5, 9, 0)),
        ("30 Desember pukul 15.00", wib(2025, 12, 30, 15, 0)),
        ("31 Des jam 9", wib(2025, 12, 31, 9, 0)),
        ("besok jam 9", wib(2025, 12, 31, 9, 0)),
        ("lusa jam 9", wib(2026, 1, 1, 9, 0)),
        ("Jumat pukul 09.00", wib(2026, 1, 2, 9, 0)),
        ("Senin minggu depan jam 9", wib(2026, 1, 5, 9, 0)),
    ],
)
def test_year_end(text: str, expected: datetime) -> None:
    assert moment(text, YEAR_END).at == expected
    assert not moment(text, YEAR_END).weekday_mismatch


def test_year_end_refusals() -> None:
    assert read("30 Desember pukul 09.00", YEAR_END) is MomentError.PAST
    assert read("5 Januari 2025 pukul 09.00", YEAR_END) is MomentError.PAST


# --- round trips and robustness ----------------------------------------------------------------

MINUTES_AHEAD = st.integers(0, 366 * 24 * 60)


def _ahead(minutes: int, now: datetime = NOW) -> tuple[datetime, datetime]:
    at = now.astimezone(UTC) + timedelta(minutes=minutes)
    return at, at.astimezone(WIB)


@given(MINUTES_AHEAD)
def test_round_trip_long_form(minutes: int) -> None:
    at, local = _ahead(minutes)
    text = Messages("id", WIB).tanggal(at) + ", pukul " + f"{local:%H.%M}"
    assert moment(text) == Moment(at, False, text.split(",")[0])


@given(MINUTES_AHEAD)
def test_round_trip_short_form(minutes: int) -> None:
    at, local = _ahead(minutes)
    text = Messages("id", WIB).tanggal_pendek(at) + " " + f"{local:%H.%M}"
    assert moment(text) == Moment(at, False, None)


@given(MINUTES_AHEAD)
def test_round_trip_with_zone(minutes: int) -> None:
    messages = Messages("id", WIB)
    at, _ = _ahead(minutes)
    assert moment(f"{messages.tanggal(at)} pukul {messages.jam(at)}").at == at
    english = Messages("en", WIB)
    assert moment(f"{english.tanggal(at)} at {english.jam(at)}").at == at


@given(st.datetimes(datetime(2024, 1, 1), datetime(2030, 12, 31)), MINUTES_AHEAD)
def test_round_trip_from_any_now(naive_now: datetime, minutes: int) -> None:
    now = naive_now.replace(second=0, microsecond=0, tzinfo=WIB)
    at, local = _ahead(minutes, now)
    text = Messages("id", WIB).tanggal_pendek(at) + " " + f"{local:%H.%M}"
    assert moment(text, now).at == at


@given(st.text(max_size=40))
def test_any_text_gives_an_answer(text: str) -> None:
    assert isinstance(read(text), Moment | MomentError)


@given(st.text(alphabet="0123456789 ./:-'jamkpulsobenirhWIB", max_size=30))
def test_number_soup_gives_an_answer(text: str) -> None:
    result = read(text)
    assert isinstance(result, Moment | MomentError)
    if isinstance(result, Moment):
        assert NOW <= result.at <= NOW + timedelta(days=366)
