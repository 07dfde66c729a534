"""Templates: every Indonesian message has an English twin, filters format the Indonesian way."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bot.text import split_message
from messages import TEMPLATE_DIR, Messages, rupiah


def names(language: str) -> set[str]:
    return {p.name for p in (TEMPLATE_DIR / language).iterdir() if p.is_file()}


def test_every_template_exists_in_both_languages() -> None:
    assert names("id")
    assert names("id") == names("en")


def test_no_python_module_holds_indonesian_sentences() -> None:
    # A rough guard: the polite forms of address belong in templates only.
    root = Path(__file__).resolve().parents[1]
    for package in ("bot", "handlers", "storage"):
        for path in (root / package).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            assert "Bapak/Ibu" not in source, path
            assert "Mohon maaf" not in source, path


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0, "Rp0"),
        (1_500_000, "Rp1.500.000"),
        (999, "Rp999"),
        (-2_000_000, "-Rp2.000.000"),
        (1_000_000_000, "Rp1.000.000.000"),
        (None, "-"),
    ],
)
def test_rupiah(amount: int | None, text: str) -> None:
    assert rupiah(amount) == text


def test_counts_are_written_as_each_language_writes_them() -> None:
    assert [Messages("id").angka(n) for n in (0, 999, 1000, 82780)] == [
        "0",
        "999",
        "1.000",
        "82.780",
    ]
    assert Messages("en").angka(82780) == "82,780"


def test_dates_and_times_in_wib() -> None:
    messages = Messages("id")
    at = datetime(2025, 11, 5, 2, 0, tzinfo=UTC)  # 09.00 WIB
    assert messages.tanggal(at) == "Rabu, 5 November 2025"
    assert messages.tanggal(date(2025, 11, 5)) == "Rabu, 5 November 2025"
    assert messages.tanggal_pendek(at) == "05/11/2025"
    assert messages.jam(at) == "09.00 WIB"
    assert Messages("en").tanggal(at) == "Wednesday, 5 November 2025"


@pytest.mark.parametrize(
    ("hour_utc", "greeting"),
    [
        (23, "Selamat pagi"),
        (3, "Selamat pagi"),
        (5, "Selamat siang"),
        (9, "Selamat sore"),
        (12, "Selamat malam"),
    ],
)
def test_greeting_follows_the_local_time_of_day(hour_utc: int, greeting: str) -> None:
    assert Messages("id").salam(datetime(2026, 1, 1, hour_utc, tzinfo=UTC)) == greeting


def test_chat_templates_escape_values_and_text_templates_do_not() -> None:
    messages = Messages("id")
    html = messages.render("keluar_done", koperasi="<script>&")
    assert "&lt;script&gt;&amp;" in html
    text = messages.render("sim_now_as", who="<b>", user_id=1)
    assert "<b>" in text


def test_long_messages_split_below_telegrams_limit() -> None:
    paragraphs = [f"Baris {i} " + "kata " * 150 for i in range(40)]
    text = "\n\n".join(paragraphs)
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(p) <= 4096 for p in parts)
    assert "\n\n".join(parts).split() == text.split()
