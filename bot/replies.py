"""What the core asks a channel to show: text, buttons naming actions, and how to show it."""

from __future__ import annotations

from dataclasses import dataclass, field

Buttons = list[list[tuple[str, str]]]


@dataclass
class Reply:
    """One message. `buttons` pair a label with an action the core will understand again;
    `replace` edits the message whose button was pressed; `alert` is a short pop-up answer."""

    text: str
    buttons: Buttons = field(default_factory=list)
    replace: bool = False
    alert: bool = False
