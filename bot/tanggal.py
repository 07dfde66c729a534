"""Reading the day and time of a meeting as a city officer types it ("Senin, 10 November 2025
pukul 09.00", "besok jam 2 siang", "10.11.2025 13.30").

A small hand parser, not dateparser. dateparser 1.5 was measured on the forms below: it read
"hari ini pukul 15.00" as the current time (10.00) instead of 15.00, returned nothing for
"10 November 2025 jam 9", "lusa jam 14", "Senin pukul 09.00", "jam 2 siang" or "jam 7 malam",
cannot tell "no time given" from midnight, nor a bad date from garbage, and its first call costs
about 0.2 s; making it reliable would have meant rewriting the text into its dialect first. Here
every piece of the text (date, weekday, relative day, time, period of day, filler words) is
recognised by a regular expression and removed; anything left over makes the text UNREADABLE,
so nothing is guessed silently.

Rules:
- Numeric dates are day/month/year: 10/11/2025, 10-11-2025, 10.11.2025, or ISO 2025-11-10. A
  two-digit year means 20yy (10/11/25, 10 Nov 25, 10 Nov '25): a time is always required and the
  moment must fall within `max_days_ahead`, so a misread century cannot slip through. "10/11"
  (slash only) and "10 Nov" without a year are the next such date from today on (a date of today
  whose time has passed is PAST, never next year); "10.11" is a time, not a date.
- Times: "pukul/pkl/jam/at 9", "09.00", "09:00", "9am", optionally followed by pagi/siang/sore/
  malam (also "besok pagi jam 9", "nanti sore jam 3") and the zone ("WIB"). Without a period of
  day the hour is on the 24-hour clock ("jam 2" is 02.00; the bot echoes what it read). Ranges
  ("09.00-12.00") are refused; "s.d. selesai" is accepted and ignored.
- Days: "hari ini", "nanti", "besok"/"esok", "lusa"; a weekday alone or with "depan" is the next
  one after today ("Senin", "Senin depan"), with "ini" the next one from today, with "minggu
  depan"/"pekan depan" the one in next week (weeks start on Monday). "Minggu depan"/"Minggu ini"
  alone is refused as it reads as "next/this week"; "hari Minggu depan" is a Sunday.
- A weekday typed together with a date (or "besok") is checked, not trusted: `weekday_mismatch`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from bot.periods import MONTH_NAMES
from messages import zone_abbr


@dataclass(frozen=True)
class Moment:
    """A meeting moment read from text."""

    at: datetime  # aware, UTC
    weekday_mismatch: bool  # the text named a weekday that is not the weekday of the date
    named_weekday: str | None  # the weekday typed, as its Indonesian name ("Senin"), if any


class MomentError(Enum):
    EMPTY = "empty"
    UNREADABLE = "unreadable"
    NO_TIME = "no_time"
    NO_DATE = "no_date"
    PAST = "past"
    TOO_FAR = "too_far"
    BAD_DATE = "bad_date"  # 31/02/2025
    BAD_TIME = "bad_time"  # 25.00, 09.60, "jam 14 pagi"


WEEKDAY_NAMES = ("Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu")

# Month names and abbreviations as people type them, shared with the month reader.
_MONTHS = MONTH_NAMES

_WEEKDAYS: dict[str, int] = {
    name: number
    for number, names in enumerate(
        (
            "senin monday",
            "selasa tuesday",
            "rabu wednesday",
            "kamis thursday",
            "jumat jum'at jumaat friday",
            "sabtu saturday",
            "minggu ahad sunday",
        )
    )
    for name in names.split()
}

_RELATIVE_DAYS = {"hari ini": 0, "today": 0, "nanti": 0, "tonight": 0, "lusa": 2}

_FILLERS = frozenset({"hari", "tanggal", "tgl", "pada", "waktu", "on", "the", "of"})


def _words(names: dict[str, int] | set[str]) -> str:
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


# Around numbers: not glued to another number ("10.11.2025" is one date, "13.30" one time).
_NB = r"(?<![0-9])(?<![0-9][.:/-])"
_NA = r"(?![0-9])(?![.:/-][0-9])"
_MER = r"(?:a\.?m\.?|p\.?m\.?|pagi|siang|sore|malam)(?![a-z])"
_MONTH = rf"(?P<mon>{_words(set(_MONTHS))})(?![a-z])\.?"
_YEAR = rf"(?P<y>[0-9]{{4}}|'?[0-9]{{2}}){_NA}(?!\s*{_MER})"

_UNTIL_END = re.compile(
    r"(?:(?<![a-z])s\s*[./]?\s*d(?![a-z])\.?|(?<![a-z])sampai(?:\s+dengan)?|(?<![a-z])hingga"
    r"|(?<![a-z])until|-)\s*(?:selesai|finished|done)(?![a-z])"
)
_ISO = re.compile(
    rf"{_NB}(?P<y>[0-9]{{4}})(?P<sep>[-/.])(?P<m>[0-9]{{1,2}})(?P=sep)(?P<d>[0-9]{{1,2}}){_NA}"
)
_DMY = re.compile(
    rf"{_NB}(?P<d>[0-9]{{1,2}})(?P<sep>[-/.])(?P<m>[0-9]{{1,2}})(?P=sep)"
    rf"(?P<y>[0-9]{{4}}|[0-9]{{2}}){_NA}"
)
_DM = re.compile(rf"{_NB}(?P<d>[0-9]{{1,2}})/(?P<m>[0-9]{{1,2}}){_NA}")
_NAMED_DMY = re.compile(
    rf"{_NB}(?P<d>[0-9]{{1,2}})(?:st|nd|rd|th)?[\s-]*{_MONTH}(?:[\s,-]*{_YEAR})?"
)
_NAMED_MDY = re.compile(
    rf"(?<![a-z]){_MONTH}\s*(?P<d>[0-9]{{1,2}})(?:st|nd|rd|th)?{_NA}(?!\s*{_MER})"
    rf"(?:\s*,?\s*(?P<y>[0-9]{{4}}){_NA})?"
)
_WEEKDAY = re.compile(
    rf"(?<![a-z])(?:(?P<hari>hari)\s+)?(?:(?P<en>next|this)\s+)?(?P<wd>{_words(set(_WEEKDAYS))})"
    r"(?![a-z'])(?:\s+(?P<suffix>(?:minggu|pekan)\s+depan|depan|ini)(?![a-z]))?"
)
_RELATIVE = re.compile(
    rf"(?<![a-z])(?:(?P<day>{_words(set(_RELATIVE_DAYS))})|(?P<tomorrow>besok|esok|bsk|besuk|tomorrow)"
    r"(?:\s+hari)?|(?P<mer>pagi|siang|sore|malam)\s+ini)(?![a-z])"
)
_MARKED_TIME = re.compile(
    rf"(?:(?<![a-z])(?:pukul|pkl|pk|jam|at)(?![a-z])\.?|@)\s*(?P<h>[0-9]{{1,2}})"
    rf"(?:[.:](?P<mi>[0-9]{{2}}))?{_NA}(?:\s*(?P<mer>{_MER}))?"
)
_CLOCK_TIME = re.compile(
    rf"{_NB}(?P<h>[0-9]{{1,2}})[.:](?P<mi>[0-9]{{2}}){_NA}(?:\s*(?P<mer>{_MER}))?"
)
_HOUR_MER = re.compile(rf"{_NB}(?P<h>[0-9]{{1,2}})\s*(?P<mer>{_MER})")
_LONE_MER = re.compile(r"(?<![a-z])(?P<mer>pagi|siang|sore|malam)(?![a-z])")
_TOKEN = re.compile(r"[^\s.,;:!?()\[\]/'\"*_-]+")

# Hours allowed with each period of day, and what is added to reach the 24-hour clock.
_PERIOD_HOURS: dict[str, tuple[tuple[range, int], ...]] = {
    "am": ((range(1, 12), 0), (range(12, 13), -12)),
    "pm": ((range(1, 12), 12), (range(12, 13), 0)),
    "pagi": ((range(1, 12), 0),),
    "siang": ((range(10, 13), 0), (range(1, 5), 12), (range(13, 17), 0)),
    "sore": ((range(2, 8), 12), (range(14, 20), 0)),
    "malam": ((range(6, 12), 12), (range(18, 24), 0)),
}


class _Refused(Exception):
    def __init__(self, error: MomentError) -> None:
        super().__init__(error.value)
        self.error = error


def parse_moment_text(
    text: str, now: datetime, tz: ZoneInfo, *, max_days_ahead: int = 366
) -> Moment | MomentError:
    """Read a meeting's day and time typed in Indonesian (or English), on the clock of `tz`.

    `now` must be aware. The moment may be `now` itself, not earlier (PAST), and at most
    `max_days_ahead` days later (TOO_FAR). The result is in UTC.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("an aware datetime is needed")
    cleaned = _normalise(text)
    if not _TOKEN.search(cleaned):
        return MomentError.EMPTY
    today = now.astimezone(tz).date()
    try:
        day, clock, named = _read(cleaned, today, tz)
    except _Refused as refused:
        return refused.error
    local = datetime.combine(day, clock, tzinfo=tz)
    try:
        at = local.astimezone(UTC)
    except OverflowError:  # a typed year near 1 or 9999
        return MomentError.PAST if day < today else MomentError.TOO_FAR
    if at.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        return MomentError.BAD_TIME  # a wall-clock time skipped by a daylight-saving change
    if at < now:
        return MomentError.PAST
    if at > now + timedelta(days=max_days_ahead):
        return MomentError.TOO_FAR
    return Moment(
        at=at,
        weekday_mismatch=named is not None and named != day.weekday(),
        named_weekday=None if named is None else WEEKDAY_NAMES[named],
    )


def _normalise(text: str) -> str:
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFKC", text).casefold()
    for quote in "‘’`´′":
        text = text.replace(quote, "'")
    for dash in "‐‑‒–—―−":
        text = text.replace(dash, "-")
    text = re.sub(r"(?<=[0-9])t(?=[0-9]{1,2}:)", " ", text)  # 2025-11-10T09:00
    return " ".join(text.split())


def _take(pattern: re.Pattern[str], text: str) -> tuple[str, list[re.Match[str]]]:
    """The matches of `pattern`, and the text with each replaced by a space."""
    found = list(pattern.finditer(text))
    return pattern.sub(" ", text), found


def _read(text: str, today: date, tz: ZoneInfo) -> tuple[date, time, int | None]:
    """(local day, local time, weekday typed) or _Refused."""
    rest = _UNTIL_END.sub(" ", text)
    dates: list[tuple[str | None, int, int]] = []  # (year as typed, month, day)
    for pattern in (_ISO, _DMY, _DM, _NAMED_DMY, _NAMED_MDY):
        rest, found = _take(pattern, rest)
        for match in found:
            groups = match.groupdict()
            month = _MONTHS[groups["mon"]] if groups.get("mon") else int(groups["m"])
            dates.append((groups.get("y"), month, int(groups["d"])))
    rest, weekdays = _take(_WEEKDAY, rest)
    rest, relatives = _take(_RELATIVE, rest)
    times: list[re.Match[str]] = []
    for pattern in (_MARKED_TIME, _CLOCK_TIME, _HOUR_MER):
        rest, found = _take(pattern, rest)
        times.extend(found)
    rest, lone_periods = _take(_LONE_MER, rest)

    fillers = _FILLERS | {zone_abbr(tz).casefold()}
    if any(token not in fillers for token in _TOKEN.findall(rest)):
        raise _Refused(MomentError.UNREADABLE)
    if len(dates) > 1 or len(weekdays) > 1 or len(relatives) > 1 or len(times) > 1:
        raise _Refused(MomentError.UNREADABLE)
    periods = {m["mer"] for m in (*relatives, *lone_periods) if m["mer"]}
    if times and times[0]["mer"]:
        periods.add(_period(times[0]["mer"]))
    if len(periods) > 1:
        raise _Refused(MomentError.UNREADABLE)  # "pagi ... jam 3 sore"

    explicit = _explicit_date(dates[0], today) if dates else None
    relative = _relative_date(relatives[0], today) if relatives else None
    if explicit is not None and relative is not None and explicit != relative:
        raise _Refused(MomentError.UNREADABLE)  # "besok, 20 November"
    day = explicit or relative
    named: int | None = None
    if weekdays:
        named = _WEEKDAYS[weekdays[0]["wd"]]
        if day is None:
            day = _weekday_date(weekdays[0], named, today)

    clock = _clock(times[0], periods.pop() if periods else None) if times else None
    if day is None:
        raise _Refused(MomentError.NO_DATE if clock is not None else MomentError.UNREADABLE)
    if clock is None:
        raise _Refused(MomentError.NO_TIME)
    return day, clock, named


def _explicit_date(typed: tuple[str | None, int, int], today: date) -> date:
    year_text, month, day = typed
    if year_text is None:
        year = today.year if (month, day) >= (today.month, today.day) else today.year + 1
    else:
        digits = year_text.lstrip("'")
        year = 2000 + int(digits) if len(digits) == 2 else int(digits)
    try:
        return date(year, month, day)
    except ValueError:
        raise _Refused(MomentError.BAD_DATE) from None


def _relative_date(match: re.Match[str], today: date) -> date:
    if match["tomorrow"]:
        return today + timedelta(days=1)
    if match["day"]:
        return today + timedelta(days=_RELATIVE_DAYS[match["day"]])
    return today  # "sore ini"


def _weekday_date(match: re.Match[str], weekday: int, today: date) -> date:
    suffix = match["suffix"] or ""
    if match["wd"] == "minggu" and suffix in {"depan", "ini"} and not match["hari"]:
        raise _Refused(MomentError.UNREADABLE)  # "minggu depan" is next week, not a Sunday
    if suffix.endswith(" depan"):  # "Jumat minggu depan": the Friday of next week
        return today - timedelta(days=today.weekday() - 7) + timedelta(days=weekday)
    if suffix == "ini" or match["en"] == "this":  # from today on
        return today + timedelta(days=(weekday - today.weekday()) % 7)
    return today + timedelta(days=(weekday - today.weekday() - 1) % 7 + 1)  # after today


def _period(mer: str) -> str:
    return mer.replace(".", "")


def _clock(match: re.Match[str], period: str | None) -> time:
    hour = int(match["h"])
    minute = int(match.groupdict().get("mi") or 0)
    if period is not None:
        for hours, shift in _PERIOD_HOURS[period]:
            if hour in hours:
                hour += shift
                break
        else:
            raise _Refused(MomentError.BAD_TIME)  # "jam 3 malam", "jam 14 pagi"
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise _Refused(MomentError.BAD_TIME)
    return time(hour, minute)
