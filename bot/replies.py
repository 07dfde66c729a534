"""What the core asks a channel to show: text, buttons naming actions, and how to show it."""

from __future__ import annotations

from dataclasses import dataclass, field

Buttons = list[list[tuple[str, str]]]

# Row ids are 32-bit integers on PostgreSQL; nine digits always fit.
_ID_DIGITS = 9


def action_id(text: str) -> int | None:
    """The row id a button's action names, or None when it is not one: only ASCII digits that
    fit a database integer ("²".isdigit() is true, and a forged 20-digit id would make
    PostgreSQL refuse the query)."""
    if not (text.isascii() and text.isdigit()) or len(text) > _ID_DIGITS:
        return None
    return int(text)


@dataclass
class Reply:
    """One message. `buttons` pair a label with an action the core will understand again;
    `replace` edits the message whose button was pressed; `alert` is a short pop-up answer."""

    text: str
    buttons: Buttons = field(default_factory=list)
    replace: bool = False
    alert: bool = False
