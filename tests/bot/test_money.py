"""Rupiah as people type them: a table of forms and errors, and round trips with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.money import MoneyError, ParsedMoney, format_rupiah, parse_rupiah

JT = 1_000_000
MODEST = settings(max_examples=200, derandomize=True, database=None, deadline=None)


@pytest.mark.parametrize(
    ("text", "amount", "shorthand"),
    [
        # shorthand: the bot echoes these back for confirmation
        ("1,5 jt", 1_500_000, True),
        ("1,5jt", 1_500_000, True),
        ("1.5jt", 1_500_000, True),
        ("1.50 JT", 1_500_000, True),
        ("2 juta", 2 * JT, True),
        ("2jt", 2 * JT, True),
        ("500rb", 500_000, True),
        ("500 ribu", 500_000, True),
        ("500k", 500_000, True),
        ("500K", 500_000, True),
        ("500 rb", 500_000, True),
        ("1 M", 10**9, True),
        ("1M", 10**9, True),
        ("1 m", 10**9, True),
        ("1 miliar", 10**9, True),
        ("1,25 miliar", 1_250_000_000, True),
        ("2 milyar", 2 * 10**9, True),
        ("2 mily", 2 * 10**9, True),
        ("1 T", 10**12, True),
        ("1 triliun", 10**12, True),
        ("1.500 jt", 1_500 * JT, True),
        ("0,5 jt", 500_000, True),
        ("Rp 2,5 jt", 2_500_000, True),
        ("IDR1,5jt", 1_500_000, True),
        ("1 jt 500 rb", 1_500_000, True),
        ("1jt500rb", 1_500_000, True),
        ("2 juta rupiah", 2 * JT, True),
        ("500rb.", 500_000, True),
        ("nol", 0, True),
        ("-2 jt", -2 * JT, True),
        ("- 2 jt", -2 * JT, True),
        ("rugi 2 jt", -2 * JT, True),
        ("Rugi 1.500.000", -1_500_000, True),
        ("minus 2jt", -2 * JT, True),
        ("1000 T", 10**15, True),
        # full numbers: taken as typed
        ("Rp 1.500.000,-", 1_500_000, False),
        ("Rp1.500.000,-", 1_500_000, False),
        ("1.500.000", 1_500_000, False),
        ("1500000", 1_500_000, False),
        ("Rp1.500.000,00", 1_500_000, False),
        ("rp. 1.500.000", 1_500_000, False),
        ("IDR 1500000", 1_500_000, False),
        ("1.500.000.-", 1_500_000, False),
        ("1500000,00", 1_500_000, False),
        ("  1.500.000  ", 1_500_000, False),
        ("Rp\u00a01.500.000", 1_500_000, False),
        ("1.500", 1_500, False),
        ("0", 0, False),
        ("Rp0", 0, False),
        ("-1.500.000", -1_500_000, False),
        ("-Rp2.000.000", -2 * JT, False),
        ("Rp -2.000.000", -2 * JT, False),
        ("Rp1.000.000.000.000.000", 10**15, False),
    ],
)
def test_parses(text: str, amount: int, shorthand: bool) -> None:
    assert parse_rupiah(text) == ParsedMoney(amount, shorthand)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("banyak", "not_a_number"),
        ("abc", "not_a_number"),
        ("Rp", "not_a_number"),
        ("rugi", "not_a_number"),
        ("-", "not_a_number"),
        ("1 mln", "not_a_number"),
        ("2jtan", "not_a_number"),
        ("1e6", "not_a_number"),
        ("NaN", "not_a_number"),
        ("\u0663", "not_a_number"),  # an Arabic-Indic digit
        ("1.50", "ambiguous"),
        ("1.5", "ambiguous"),
        ("1.50.000", "ambiguous"),
        ("1500.000", "ambiguous"),
        ("0.500", "ambiguous"),
        ("1..500", "ambiguous"),
        ("1,500", "ambiguous"),  # English thousands, or one and a half rupiah?
        ("1,500,000", "ambiguous"),
        ("1 500 000", "ambiguous"),
        ("1 jt 500", "ambiguous"),
        ("500 rb 1 jt", "ambiguous"),
        ("1,2345678 rb", "fraction"),
        ("1500,50", "fraction"),
        ("Rp1.500.000,50", "fraction"),
        ("1,5", "fraction"),
        ("1001 T", "too_large"),
        ("1.000.000.000.000.001", "too_large"),
        ("9" * 40, "too_large"),
    ],
)
def test_rejects(text: str, code: str) -> None:
    with pytest.raises(MoneyError) as caught:
        parse_rupiah(text)
    assert caught.value.code == code


def test_money_error_is_a_value_error_with_a_known_code() -> None:
    assert isinstance(MoneyError("empty"), ValueError)
    with pytest.raises(ValueError, match="unknown"):
        MoneyError("huh")


@pytest.mark.parametrize(
    ("amount", "text"),
    [(1_500_000, "Rp1.500.000"), (-2 * JT, "-Rp2.000.000"), (0, "Rp0"), (999, "Rp999")],
)
def test_formats(amount: int, text: str) -> None:
    assert format_rupiah(amount) == text


amounts = st.integers(min_value=0, max_value=10**13)


@MODEST
@given(amounts)
def test_full_numbers_round_trip(amount: int) -> None:
    written = format_rupiah(amount)
    plain = ParsedMoney(amount, False)
    assert parse_rupiah(written) == plain
    assert parse_rupiah(written.removeprefix("Rp")) == plain
    assert parse_rupiah(f"Rp {written.removeprefix('Rp')},-") == plain
    assert parse_rupiah(str(amount)) == plain
    assert parse_rupiah(format_rupiah(-amount)) == ParsedMoney(-amount, False)


@MODEST
@given(st.integers(min_value=0, max_value=10**10))
def test_thousands_as_rb_round_trip(thousands: int) -> None:
    amount = thousands * 1_000
    assert parse_rupiah(f"{thousands} rb") == ParsedMoney(amount, True)
    assert parse_rupiah(f"rugi {thousands} rb") == ParsedMoney(-amount, True)


@MODEST
@given(st.integers(min_value=0, max_value=10**8), st.booleans())
def test_hundred_thousands_as_jt_round_trip(tenths: int, dotted: bool) -> None:
    amount = tenths * 100_000
    whole, tenth = divmod(tenths, 10)
    number = format_rupiah(whole).removeprefix("Rp") if dotted else str(whole)
    written = f"{number},{tenth} jt" if tenth else f"{number} jt"
    assert parse_rupiah(written) == ParsedMoney(amount, True)
    assert parse_rupiah(f"rugi {written}") == ParsedMoney(-amount, True)


def outcome(text: str) -> ParsedMoney | str:
    """The parsed amount, or the code of the MoneyError."""
    try:
        return parse_rupiah(text)
    except MoneyError as error:
        return error.code


@MODEST
@given(st.text() | st.text(alphabet="0123456789.,- rbjtkmRpIDRugi"))
def test_anything_else_is_an_amount_or_a_money_error(text: str) -> None:
    result = outcome(text)
    if isinstance(result, ParsedMoney):
        assert abs(result.amount) <= 10**15
    else:
        assert result in {"empty", "not_a_number", "ambiguous", "too_large", "fraction"}
