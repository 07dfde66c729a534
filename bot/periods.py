"""Monthly reporting periods: the Period value, its keys and names, and reading typed months."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date

MIN_YEAR = 2000
MAX_YEAR = 2100

_KEY = re.compile(r"([0-9]{4})-([0-9]{2})")


@dataclass(frozen=True, order=True)
class Period:
    """One calendar month; ordered by (year, month)."""

    year: int
    month: int

    def __post_init__(self) -> None:
        for value in (self.year, self.month):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Period fields must be int, not {type(value).__name__}")
        if not MIN_YEAR <= self.year <= MAX_YEAR:
            raise ValueError(f"year {self.year} is outside {MIN_YEAR}..{MAX_YEAR}")
        if not 1 <= self.month <= 12:
            raise ValueError(f"month {self.month} is outside 1..12")

    @classmethod
    def parse_key(cls, key: str) -> Period:
        """Read a key as written by `key`: exactly "YYYY-MM", nothing else."""
        match = _KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            raise ValueError(f"not a period key: {key!r}")
        return cls(int(match[1]), int(match[2]))

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def previous(self) -> Period:
        """The month before; ValueError before January 2000."""
        return _from_index(_index(self) - 1)

    def next(self) -> Period:
        """The month after; ValueError after December 2100."""
        return _from_index(_index(self) + 1)

    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def last_day(self) -> date:
        return date(self.year, self.month, calendar.monthrange(self.year, self.month)[1])

    @classmethod
    def containing(cls, moment: datetime, tz: ZoneInfo) -> Period:
        """The month that the aware `moment` falls in, on the wall clock of `tz`."""
        local = _local(moment, tz)
        return cls(local.year, local.month)

    def name(self, language: str = "id") -> str:
        """The month as people read it: "Oktober 2026" (id), "October 2026" (en)."""
        return format_date(self.first_day(), "MMMM y", locale=language)


def default_period(now: datetime, tz: ZoneInfo) -> Period:
    """The period a report made now is for: the month before the current one in `tz`."""
    return Period.containing(now, tz).previous()


def open_periods(now: datetime, tz: ZoneInfo, months: int = 3) -> list[Period]:
    """The `months` periods before the current month in `tz`, newest first."""
    if months < 0:
        raise ValueError("months must not be negative")
    current = _index(Period.containing(now, tz))
    return [_from_index(current - back) for back in range(1, months + 1)]


def _index(period: Period) -> int:
    return period.year * 12 + period.month - 1


def _from_index(index: int) -> Period:
    year, month0 = divmod(index, 12)
    return Period(year, month0 + 1)


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("an aware datetime is needed")
    return moment.astimezone(tz)


# --- Reading a month as a treasurer types it ------------------------------------------------
#
# A hand-written table and a few regular expressions, not dateparser (which is not installed
# anyway): the accepted forms stay small, predictable and testable, and a full date such as
# "27 Oktober 2026" is deliberately *not* a month (None), so the bot asks again.

MONTH_NAMES: dict[str, int] = {
    name: number
    for number, names in enumerate(
        (
            "januari jan january",
            "februari pebruari feb peb february",
            "maret mar march",
            "april apr",
            "mei may",
            "juni jun june",
            "juli jul july",
            "agustus agu agt ags agus agust august aug",
            "september sep sept",
            "oktober okt october oct",
            "november nopember nov nop",
            "desember des december dec",
        ),
        start=1,
    )
    for name in names.split()
}

_NUMBER_WORDS = {
    "satu": 1,
    "dua": 2,
    "tiga": 3,
    "empat": 4,
    "lima": 5,
    "enam": 6,
    "tujuh": 7,
    "delapan": 8,
    "sembilan": 9,
    "sepuluh": 10,
    "sebelas": 11,
    "dua belas": 12,
}

_BULAN = r"(?:bulan|bln)"
_PAST = r"(?:(?:yang|yg)\s+)?(?:lalu|kemarin|kemaren|kmrn|kmarin|sebelumnya)"

_CURRENT = re.compile(rf"{_BULAN}\s+(?:ini|sekarang)|this\s+month|current\s+month")
_PREVIOUS = re.compile(rf"(?:{_BULAN}|sebulan)\s+{_PAST}|last\s+month|previous\s+month")
_MONTHS_AGO = re.compile(
    rf"(?P<n>[0-9]{{1,4}}|[a-z]+(?:\s+belas)?)\s+{_BULAN}\s+{_PAST}"
    r"|(?P<en>[0-9]{1,4})\s+months?\s+ago"
)
_YEAR_MONTH = re.compile(r"(?P<year>[0-9]{4})[-/.](?P<month>[0-9]{1,2})")
_MONTH_YEAR = re.compile(r"(?P<month>[0-9]{1,2})[-/.](?P<year>[0-9]{4})")
_NAMED = re.compile(
    rf"(?:{_BULAN}\s+)?(?P<name>[a-z]+)\.?"
    r"(?:"
    r"[\s,/-]*(?:(?:tahun|thn)\s+)?(?P<year>'?[0-9]{2}|[0-9]{4})"
    rf"|\s+(?P<past>{_PAST})"
    r"|\s+(?P<this>ini)"
    r")?"
)


def parse_period(text: str, now: datetime, tz: ZoneInfo) -> Period | None:
    """Read a month typed in Indonesian (or English) relative to `now` in `tz`; None if none.

    A month name without a year is the most recent such month that is not in the future
    ("november" on 27 Nov 2026 is Nov 2026, "desember" is Dec 2025); with "lalu"/"kemarin"
    it is the most recent one strictly before the current month; with "ini" it is the one in
    the current year. Two-digit years follow a month name only ("okt '26"): a purely numeric
    "10/26" or "10/11" is too easily a day and month, so numeric forms need four-digit years.
    """
    current = Period.containing(now, tz)
    cleaned = _normalise(text)
    if not cleaned:
        return None
    try:
        return _parse(cleaned, current)
    except ValueError:  # a month or year outside what Period accepts
        return None


def _normalise(text: str) -> str:
    if not isinstance(text, str):
        return ""
    text = text.casefold()
    for quote in "‘’`´′":
        text = text.replace(quote, "'")
    return " ".join(text.split()).strip(" !?;:,")


def _parse(text: str, current: Period) -> Period | None:
    if _CURRENT.fullmatch(text):
        return current
    if _PREVIOUS.fullmatch(text):
        return current.previous()
    if match := _MONTHS_AGO.fullmatch(text):
        count = _count(match["n"] if match["n"] is not None else match["en"])
        return None if count is None else _from_index(_index(current) - count)
    for pattern in (_YEAR_MONTH, _MONTH_YEAR):
        if match := pattern.fullmatch(text):
            return Period(int(match["year"]), int(match["month"]))
    if match := _NAMED.fullmatch(text.rstrip(".")):
        return _named(match, current)
    return None


def _count(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return _NUMBER_WORDS.get(word)


def _named(match: re.Match[str], current: Period) -> Period | None:
    month = MONTH_NAMES.get(match["name"])
    if month is None:
        return None
    if match["year"] is not None:
        digits = match["year"].lstrip("'")
        return Period(2000 + int(digits) if len(digits) == 2 else int(digits), month)
    if match["this"] is not None:
        return Period(current.year, month)
    if match["past"] is not None:
        # strictly before the current month
        return Period(current.year if month < current.month else current.year - 1, month)
    # the most recent such month that is not in the future
    return Period(current.year if month <= current.month else current.year - 1, month)
