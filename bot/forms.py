"""The form engine: forms declared as data, and the validation of each answer.

A form is a tuple of fields. Each field says how it is asked (kind, options), when it is asked
(`ask_if`), how an answer is checked, and whether last month's answer may be reused. Nothing
here knows about a chat channel: the Telegram handlers, a future WhatsApp channel and the
exports all read the same declaration.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from bot.money import MoneyError, parse_rupiah
from bot.names import normalize

Answers = Mapping[str, Any]


class Kind(enum.StrEnum):
    CHOICE = "choice"
    MULTI = "multi"
    INTEGER = "integer"
    MONEY = "money"
    TEXT = "text"
    PHOTO = "photo"


def _always(_: Answers) -> bool:
    return True


@dataclass(frozen=True)
class Invalid:
    """A refused answer: `code` picks the sentence in the `jawaban_salah` template."""

    code: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    """An accepted answer; `confirm` lists why the person should look at it once more."""

    value: Any
    confirm: tuple[str, ...] = ()


Result = Accepted | Invalid
# A check against the cooperative's own last report: (value, answers so far, last answers).
Plausibility = Callable[[Any, Answers, Answers], tuple[str, ...]]


@dataclass(frozen=True)
class Field:
    id: str
    kind: Kind
    options: tuple[str, ...] = ()
    ask_if: Callable[[Answers], bool] = _always
    options_from: Callable[[Answers], tuple[str, ...]] | None = None
    # Options borrowed from another field (options_from) keep that field's labels.
    labels_of: str | None = None
    min_value: int | None = None
    max_value: int | None = None
    min_length: int = 0
    max_length: int | None = None
    min_selected: int = 1
    max_items: int = 10  # photos kept for a PHOTO field
    exclusive: tuple[str, ...] = ()
    optional: bool = False
    required_if: Callable[[Answers], bool] | None = None
    carry: bool = False
    plausible: Plausibility | None = None
    max_of: str | None = None
    # The value exports show, where it can stand without the question being asked.
    derive: Callable[[Answers], Any] | None = None
    # Filled in by the bot from earlier data (e.g. last month's obstacles), never asked; kept
    # with the answers so later questions and the exports can use it.
    system: bool = False

    def value(self, answers: Answers) -> Any:
        return self.derive(answers) if self.derive else answers.get(self.id)

    def choices(self, answers: Answers) -> tuple[str, ...]:
        return self.options_from(answers) if self.options_from else self.options

    def skippable(self, answers: Answers) -> bool:
        if self.required_if is not None:
            return not self.required_if(answers)
        return self.optional


@dataclass(frozen=True)
class Form:
    id: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        ids = [f.id for f in self.fields]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate field ids in form {self.id}")

    @cached_property
    def _by_id(self) -> dict[str, Field]:
        # Asked several times at every answer: a lookup instead of a walk through the fields.
        return {f.id: f for f in self.fields}

    def field(self, field_id: str) -> Field:
        return self._by_id[field_id]

    def has(self, field_id: str) -> bool:
        return field_id in self._by_id

    def visible(self, answers: Answers) -> list[Field]:
        return [f for f in self.fields if f.ask_if(answers)]

    def next_field(self, answers: Answers) -> Field | None:
        """The first question still to ask, or None when the form is ready for review."""
        return next(
            (f for f in self.visible(answers) if f.id not in answers and not f.system), None
        )

    def clean(self, answers: Answers) -> dict[str, Any]:
        """The answers of the questions that apply, in form order (hidden ones dropped)."""
        return {f.id: answers[f.id] for f in self.visible(answers) if f.id in answers}

    def position(self, field_id: str, answers: Answers) -> tuple[int, int]:
        visible = [f.id for f in self.visible(answers) if not f.system]
        return (visible.index(field_id) + 1 if field_id in visible else 0, len(visible))


_INTEGER = re.compile(r"^(\d{1,3}(\.\d{3})+|\d+)$")
_YES = {"ya", "y", "iya", "benar", "betul", "ok", "oke", "yes", "sudah", "ada", "punya"}
_NO = {"tidak", "tdk", "bukan", "belum", "no", "n", "salah", "tidak ada", "gak", "nggak", "enggak"}


def is_yes(text: str) -> bool:
    return " ".join(text.lower().split()) in _YES


def is_no(text: str) -> bool:
    return " ".join(text.lower().split()) in _NO


def validate_typed(
    f: Field, text: str, answers: Answers, last: Answers, labels: Mapping[str, str]
) -> Result:
    """Check a typed answer for the field; choices may be typed by number or by label."""
    text = text.strip()
    if f.kind is Kind.TEXT:
        return _text(f, text)
    if f.kind is Kind.INTEGER:
        return _integer(f, text, answers, last)
    if f.kind is Kind.MONEY:
        return _money(f, text, answers, last)
    if f.kind is Kind.CHOICE:
        option = _match_option(f, text, answers, labels)
        if option is None:
            return Invalid("use_buttons")
        return Accepted(option)
    if f.kind is Kind.MULTI:
        return _numbers(f, text, answers, labels)
    return Invalid("send_photo")


# "1, 3, 5", "1 3 5", "1,3 dan 5": a multi-select answered at once by the options' numbers.
# One way only to read each separator, so a long text that is not such a list fails fast.
_NUMBER_LIST = re.compile(
    r"\d+(?:(?:\s*[,;/&+]\s*|\s+(?:dan|and)\s+|\s+)\d+)*", re.IGNORECASE | re.ASCII
)


def _numbers(f: Field, text: str, answers: Answers, labels: Mapping[str, str]) -> Result:
    """A multi-select typed as the numbers of the options, checked as pressed ones would be
    when Selesai is pressed (an exclusive option such as "no obstacle" stands alone)."""
    if not _NUMBER_LIST.fullmatch(text):
        return Invalid("use_buttons_multi")
    choices = f.choices(answers)
    picked: list[str] = []
    for number in (int(n) for n in re.findall(r"\d+", text)):
        if not 1 <= number <= len(choices):
            return Invalid("number_out_of_range", {"number": number, "maximum": len(choices)})
        if choices[number - 1] not in picked:
            picked.append(choices[number - 1])
    alone = [option for option in picked if option in f.exclusive]
    if alone and len(picked) > 1:
        label = labels.get(f"{f.labels_of or f.id}.{alone[0]}", alone[0])
        return Invalid("exclusive_alone", {"option": label})
    return finish_selection(f, picked, answers)


def _match_option(f: Field, text: str, answers: Answers, labels: Mapping[str, str]) -> str | None:
    choices = f.choices(answers)
    if text.isdecimal() and 1 <= int(text) <= len(choices):
        return choices[int(text) - 1]
    wanted = normalize(text)
    for option in choices:
        label = labels.get(f"{f.labels_of or f.id}.{option}", option)
        if wanted and wanted in (normalize(label), normalize(option)):
            return option
    if set(choices) == {"ya", "tidak"}:
        if is_yes(text):
            return "ya"
        if is_no(text):
            return "tidak"
    return None


def _text(f: Field, text: str) -> Result:
    if not text:
        return Invalid("text_empty")
    if len(text) < f.min_length:
        return Invalid("text_short", {"minimum": f.min_length})
    if f.max_length is not None and len(text) > f.max_length:
        return Invalid("text_long", {"maximum": f.max_length, "length": len(text)})
    return Accepted(text)


def _integer(f: Field, text: str, answers: Answers, last: Answers) -> Result:
    cleaned = re.sub(r"\s*(orang|anggota|org)\.?$", "", text.lower()).strip()
    if not _INTEGER.match(cleaned):
        return Invalid("integer", {"minimum": f.min_value or 0, "maximum": f.max_value})
    value = int(cleaned.replace(".", ""))
    maximum = f.max_value
    if f.max_of is not None and f.max_of in answers and value > int(answers[f.max_of]):
        return Invalid("integer_above", {"maximum": int(answers[f.max_of]), "field": f.max_of})
    if (f.min_value is not None and value < f.min_value) or (
        maximum is not None and value > maximum
    ):
        return Invalid("integer_range", {"minimum": f.min_value or 0, "maximum": maximum})
    return Accepted(value, f.plausible(value, answers, last) if f.plausible else ())


def _money(f: Field, text: str, answers: Answers, last: Answers) -> Result:
    try:
        parsed = parse_rupiah(text)
    except MoneyError as exc:
        return Invalid(f"money_{exc.code}")
    if parsed.amount < 0:
        return Invalid("money_negative")
    if f.max_value is not None and parsed.amount > f.max_value:
        return Invalid("money_too_large")
    reasons: tuple[str, ...] = ("shorthand",) if parsed.shorthand else ()
    if f.plausible is not None:
        reasons += f.plausible(parsed.amount, answers, last)
    return Accepted(parsed.amount, reasons)


def toggle(f: Field, selected: list[str], option: str, answers: Answers) -> list[str] | Invalid:
    """Select or unselect one option of a multi-select; exclusive options stand alone."""
    if option not in f.choices(answers):
        return Invalid("stale")
    if option in selected:
        return [o for o in selected if o != option]
    if option in f.exclusive:
        return [option]
    return [o for o in selected if o not in f.exclusive] + [option]


def finish_selection(f: Field, selected: list[str], answers: Answers) -> Result:
    choices = f.choices(answers)
    chosen = [o for o in choices if o in selected]
    if len(chosen) < f.min_selected:
        return Invalid("select_at_least", {"minimum": f.min_selected})
    return Accepted(chosen)
