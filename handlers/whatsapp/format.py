"""The core's messages as WhatsApp Cloud API message bodies.

The core writes Telegram HTML (<b>, <i>, <code>, <a>, entities) and buttons as rows of
(label, action). WhatsApp has its own markup (*bold*, _italic_, ```monospace```) and three
ways to offer choices, each with limits:

- up to 3 reply buttons, titles up to 20 characters, body up to 1024;
- a list of up to 10 rows, titles up to 24 characters, numbered "1. label" (a longer title is
  cut and the label given whole as the row's description, up to 72), body up to 1024 (kept at
  the same limit as buttons);
- anything else: plain text with the labels numbered "1. label", answered by typing the number
  (the bridge remembers which action each number names).

A button's or row's id is the action (Telegram callback data, at most 64 bytes here; WhatsApp
allows 256 for buttons and 200 for rows). Text longer than the limit is split at paragraph, line
and word boundaries; the choices go with the last part.
"""

from __future__ import annotations

import html
import re
from functools import cache
from typing import Any

from bot.text import split_message
from messages import Messages

Buttons = list[list[tuple[str, str]]]

TEXT_LIMIT = 4096
BODY_LIMIT = 1024
MAX_BUTTONS = 3
BUTTON_TITLE = 20
MAX_ROWS = 10
ROW_TITLE = 24
ROW_DESCRIPTION = 72
ROW_ID = 200
BUTTON_ID = 256
LIST_BUTTON = 20

ELLIPSIS = "…"
# WhatsApp refuses an empty body; a message that is only choices gets this one.
EMPTY_BODY = ELLIPSIS

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)([^>]*)>")
_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_MARKS = {"b": "*", "strong": "*", "i": "_", "em": "_", "s": "~", "strike": "~", "del": "~"}
_MARKS |= {"code": "```", "pre": "```"}


@cache
def _default_messages() -> Messages:
    return Messages()


def _wrap(inner: str, mark: str) -> str:
    """`inner` in a WhatsApp mark, which only works hugging non-blank text: surrounding blanks
    move outside, and blank text gets no mark at all."""
    stripped = inner.strip()
    if not stripped:
        return inner
    lead = inner[: len(inner) - len(inner.lstrip())]
    trail = inner[len(inner.rstrip()) :]
    return f"{lead}{mark}{stripped}{mark}{trail}"


def to_whatsapp(text: str) -> str:
    """Telegram HTML -> WhatsApp text: marks for <b>, <i>, <s>, <code>; links as "label (url)";
    every other tag dropped; entities decoded."""
    out: list[str] = []
    # Each open tag: (name, index in `out` where its content starts, href for <a>).
    stack: list[tuple[str, int, str]] = []
    position = 0
    for match in _TAG.finditer(text):
        out.append(html.unescape(text[position : match.start()]))
        position = match.end()
        closing, name = match.group(1) == "/", match.group(2).lower()
        if name == "br":
            out.append("\n")
            continue
        if not closing:
            href = ""
            if name == "a":
                found = _HREF.search(match.group(3))
                href = html.unescape(found.group(1) or found.group(2) or "") if found else ""
            stack.append((name, len(out), href))
            continue
        # A closing tag closes the innermost open tag of that name (and what is open inside it).
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth][0] == name:
                break
        else:
            continue
        _, start, href = stack[depth]
        del stack[depth:]
        inner = "".join(out[start:])
        del out[start:]
        if name == "a":
            out.append(inner if not href or href == inner.strip() else f"{inner} ({href})")
        elif name in _MARKS:
            out.append(_wrap(inner, _MARKS[name]))
        else:
            out.append(inner)
    out.append(html.unescape(text[position:]))
    return "".join(out)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def _flat(buttons: Buttons | None) -> list[tuple[str, str]]:
    return [(to_whatsapp(label).strip(), action) for row in buttons or [] for label, action in row]


def _text_body(to: str, text: str) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": text, "preview_url": False},
    }


def _interactive(to: str, interactive: dict[str, Any]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "interactive",
        "interactive": interactive,
    }


def numbered(text: str, choices: list[tuple[str, str]], messages: Messages) -> str:
    """The choices as a numbered list under the text, with the hint to answer by number."""
    lines = "\n".join(f"{index}. {label}" for index, (label, _) in enumerate(choices, 1))
    hint = messages.render("wa_number_hint")
    return f"{text}\n\n{lines}\n\n{hint}" if text else f"{lines}\n\n{hint}"


def choice_style(choices: list[tuple[str, str]]) -> str:
    """How the choices can be shown: "buttons", "list" or "numbered"."""
    if not choices:
        return "none"
    labels = [label for label, _ in choices]
    actions = [action for _, action in choices]
    distinct = len(set(actions)) == len(actions) and all(labels) and all(actions)
    if (
        distinct
        and len(choices) <= MAX_BUTTONS
        and len(set(labels)) == len(labels)
        and all(len(label) <= BUTTON_TITLE for label in labels)
        and all(len(action) <= BUTTON_ID for action in actions)
    ):
        return "buttons"
    if distinct and len(choices) <= MAX_ROWS and all(len(action) <= ROW_ID for action in actions):
        return "list"
    return "numbered"


def whatsapp_message(
    to: str,
    text: str,
    buttons: list[list[tuple[str, str]]] | None,
    *,
    messages: Messages | None = None,
) -> list[dict[str, Any]]:
    """The Cloud API bodies (POST /{phone_number_id}/messages), in order, that show `text`
    (Telegram HTML) and `buttons` to `to` (a wa_id)."""
    messages = messages or _default_messages()
    plain = to_whatsapp(text).strip()
    choices = _flat(buttons)
    style = choice_style(choices)
    if style in ("none", "numbered"):
        full = numbered(plain, choices, messages) if choices else plain
        return [_text_body(to, part) for part in split_message(full, TEXT_LIMIT) if part.strip()]
    parts = split_message(plain, BODY_LIMIT) if plain else [EMPTY_BODY]
    # The text before the last part goes as plain text, in as few messages as fit.
    before = "\n\n".join(parts[:-1])
    bodies = [_text_body(to, part) for part in split_message(before, TEXT_LIMIT) if part.strip()]
    body = {"text": parts[-1]}
    if style == "buttons":
        action: dict[str, Any] = {
            "buttons": [
                {"type": "reply", "reply": {"id": action, "title": label}}
                for label, action in choices
            ]
        }
        bodies.append(_interactive(to, {"type": "button", "body": body, "action": action}))
        return bodies
    # Rows are numbered as the numbered text is: a number may be typed instead of picked
    # (and "1, 3, 5" answers a multi-select at once).
    rows = []
    for number, (label, action_id) in enumerate(choices, 1):
        title = f"{number}. {label}"
        row = {"id": action_id, "title": _cut(title, ROW_TITLE)}
        if len(title) > ROW_TITLE:
            row["description"] = _cut(label, ROW_DESCRIPTION)
        rows.append(row)
    list_action = {
        "button": _cut(messages.render("wa_list_button"), LIST_BUTTON),
        "sections": [{"rows": rows}],
    }
    bodies.append(_interactive(to, {"type": "list", "body": body, "action": list_action}))
    return bodies


def body_text(body: dict[str, Any]) -> str:
    """The text a person reads in one message body (text, interactive body, or caption)."""
    kind = body.get("type")
    if kind == "text":
        return str(body["text"]["body"])
    if kind == "interactive":
        return str(body["interactive"]["body"]["text"])
    if kind in ("image", "document"):
        return str(body[kind].get("caption", ""))
    return ""
