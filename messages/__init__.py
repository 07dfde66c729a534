"""Every sentence a person reads: Jinja2 templates per language, and their filters.

Chat templates end in `.html` (autoescaped for Telegram's HTML parse mode); terminal and CLI
templates end in `.txt` (plain). Indonesian (`id`) is the default, English (`en`) second.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date
from babel.numbers import format_decimal
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    select_autoescape,
)

LANGUAGES = ("id", "en")
TEMPLATE_DIR = Path(__file__).parent

# Indonesian zone abbreviations; Babel would print "GMT+07:00".
_ZONE_ABBR = {"Asia/Jakarta": "WIB", "Asia/Pontianak": "WIB", "Asia/Makassar": "WITA"}
_ZONE_ABBR["Asia/Jayapura"] = "WIT"


def rupiah(amount: int | None) -> str:
    """Rp1.500.000 (no space, dot for thousands), -Rp2.000.000 for a loss."""
    if amount is None:
        return "-"
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp{format_decimal(abs(int(amount)), locale='id')}"


def zone_abbr(tz: ZoneInfo) -> str:
    return _ZONE_ABBR.get(tz.key) or datetime.now(tz).tzname() or tz.key


class Messages:
    """Renders message templates in one language and time zone."""

    def __init__(self, language: str = "id", tz: ZoneInfo | None = None) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"unsupported language {language!r}")
        self.language = language
        self.tz = tz or ZoneInfo("Asia/Jakarta")
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATE_DIR)),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters.update(
            rupiah=rupiah,
            angka=self.angka,
            tanggal=self.tanggal,
            tanggal_pendek=self.tanggal_pendek,
            jam=self.jam,
        )
        self.env.globals.update(salam=self.salam)
        self._templates: dict[tuple[str, str], Template] = {}
        self._constant: dict[tuple[str, str], str] = {}

    def _local(self, value: datetime | date) -> datetime | date:
        if isinstance(value, datetime):
            return value.astimezone(self.tz)
        return value

    def angka(self, value: int) -> str:
        """A count as the language writes it: 80.000 in Indonesian, 80,000 in English."""
        return str(format_decimal(value, locale=self.language))

    def tanggal(self, value: datetime | date) -> str:
        """Rabu, 5 November 2025."""
        return format_date(self._local(value), "EEEE, d MMMM y", locale=self.language)

    def tanggal_pendek(self, value: datetime | date) -> str:
        """05/11/2025."""
        return self._local(value).strftime("%d/%m/%Y")

    def jam(self, value: datetime) -> str:
        """09.00 WIB: a dot between hours and minutes, and the zone."""
        local = value.astimezone(self.tz)
        return f"{local:%H.%M} {zone_abbr(self.tz)}"

    def salam(self, now: datetime) -> str:
        """The greeting for the local time of day (pagi, siang, sore, malam)."""
        return self.render("salam", hour=now.astimezone(self.tz).hour)

    def render(self, name: str, /, language: str | None = None, **context: Any) -> str:
        lang = language or self.language
        if context:
            return self._template(lang, name).render(**context).strip()
        # A template without values (a button label, a fixed sentence) reads the same every
        # time: rendered once per process.
        text = self._constant.get((lang, name))
        if text is None:
            text = self._constant[lang, name] = self._template(lang, name).render().strip()
        return text

    def _template(self, lang: str, name: str) -> Template:
        """The compiled template, found once: the bot renders several per update, and Jinja's
        own lookup stats the file each time to see whether it changed."""
        template = self._templates.get((lang, name))
        if template is not None:
            return template
        for suffix in (".html", ".txt"):
            try:
                template = self.env.get_template(f"{lang}/{name}{suffix}")
            except TemplateNotFound:
                continue
            self._templates[lang, name] = template
            return template
        raise TemplateNotFound(f"{lang}/{name}")
