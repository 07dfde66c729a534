"""Amounts of rupiah: reading them as people type them in chat ("1,5 jt"), and writing them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, localcontext
from itertools import pairwise

MAX_AMOUNT = 10**15

ERROR_CODES = frozenset({"empty", "not_a_number", "ambiguous", "too_large", "fraction"})

# Longest spelling first, so "miliar" is not read as "m" followed by "iliar".
_UNITS: dict[str, int] = {
    "ribu": 3,
    "rebu": 3,
    "rb": 3,
    "k": 3,
    "juta": 6,
    "jt": 6,
    "miliar": 9,
    "milyar": 9,
    "mily": 9,
    "m": 9,
    "triliun": 12,
    "trilyun": 12,
    "t": 12,
}

_SIGN = re.compile(r"(?:(?P<dash>[-−–])|(?P<word>rugi|minus)(?![a-z]))\s*")
_CURRENCY = re.compile(r"(?:rp\.?|idr)\s*")
# Suffixes peeled off the end one at a time: ",-" / ".-", a currency word, a full stop.
_SUFFIX = re.compile(r"(?:[.,]-+|(?<![a-z])(?:rupiah|rp|idr)|\.)$")
_TERM = re.compile(
    r"(?P<number>[0-9][0-9.,]*)\s*"
    r"(?:(?P<unit>" + "|".join(_UNITS) + r")(?![a-z])\.?)?\s*"
)


@dataclass(frozen=True)
class ParsedMoney:
    """An amount in whole rupiah; `shorthand` means the bot must echo it back for confirmation."""

    amount: int
    shorthand: bool


class MoneyError(ValueError):
    """The text is not an amount; `code` says why (one of ERROR_CODES)."""

    def __init__(self, code: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown MoneyError code {code!r}")
        super().__init__(code)
        self.code = code


def parse_rupiah(text: str) -> ParsedMoney:
    """Parse an Indonesian amount of rupiah; raise MoneyError when it is not one."""
    s = text.strip().lower()
    if not s:
        raise MoneyError("empty")

    while True:
        peeled = _SUFFIX.sub("", s).rstrip()
        if peeled == s:
            break
        s = peeled

    negative = False
    shorthand = False
    pos = 0
    sign = _SIGN.match(s)
    if sign:
        negative = True
        shorthand = sign["word"] is not None
        pos = sign.end()
    currency = _CURRENCY.match(s, pos)
    if currency:
        pos = currency.end()
        sign = None if negative else _SIGN.match(s, pos)
        if sign:
            negative = True
            shorthand = sign["word"] is not None
            pos = sign.end()
    body = s[pos:]

    if body == "nol":
        return ParsedMoney(0, True)

    terms: list[tuple[str, str | None]] = []
    while pos < len(s):
        term = _TERM.match(s, pos)
        if term is None:
            raise MoneyError("not_a_number")
        terms.append((term["number"], term["unit"]))
        pos = term.end()
    if not terms:
        raise MoneyError("not_a_number")

    if len(terms) > 1:
        # "1 jt 500 rb" is fine; "1 500 000", "1 jt 500" and "500 rb 1 jt" are not.
        units = [unit for _, unit in terms if unit is not None]
        if len(units) < len(terms) or any(
            _UNITS[big] <= _UNITS[small] for big, small in pairwise(units)
        ):
            raise MoneyError("ambiguous")

    with localcontext() as ctx:
        # Exact arithmetic: enough digits for every digit typed plus the largest unit.
        ctx.prec = len(s) + 30
        total = Decimal(0)
        for number, unit in terms:
            value = _number(number, has_unit=unit is not None)
            total += value.scaleb(_UNITS[unit]) if unit else value
        if abs(total) > MAX_AMOUNT:
            raise MoneyError("too_large")
        if total != total.to_integral_value():
            raise MoneyError("fraction")
    amount = int(total)
    shorthand = shorthand or any(unit is not None for _, unit in terms)
    return ParsedMoney(-amount if negative else amount, shorthand)


def _number(raw: str, *, has_unit: bool) -> Decimal:
    """The value of one run of digits, dots and commas, read the Indonesian way."""
    if raw.count(",") > 1:
        raise MoneyError("ambiguous")  # "1,500,000": English thousands
    whole, comma, fraction = raw.partition(",")
    if comma and (not fraction or "." in fraction):
        raise MoneyError("ambiguous")  # "1500," or "1,500.000"
    if comma and not has_unit and len(fraction) == 3:
        raise MoneyError("ambiguous")  # "1,500" with no unit: English thousands, or 1.5 rupiah?
    if "." in whole:
        groups = whole.split(".")
        if has_unit and not comma and len(groups) == 2 and 1 <= len(groups[1]) <= 2:
            return Decimal(f"{groups[0]}.{groups[1]}")  # "1.5jt": can't be a thousands group
        if not (
            1 <= len(groups[0]) <= 3
            and not groups[0].startswith("0")
            and all(len(group) == 3 for group in groups[1:])
        ):
            raise MoneyError("ambiguous")
        whole = "".join(groups)
    return Decimal(f"{whole}.{fraction}" if comma else whole)


def format_rupiah(amount: int) -> str:
    """Write whole rupiah the Indonesian way: "Rp1.500.000", "-Rp2.000.000", "Rp0"."""
    digits = f"{abs(amount):,}".replace(",", ".")
    return f"-Rp{digits}" if amount < 0 else f"Rp{digits}"
