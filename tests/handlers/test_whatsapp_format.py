"""The core's HTML and buttons as WhatsApp Cloud API bodies, always within WhatsApp's limits."""

from __future__ import annotations

import html
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from handlers.whatsapp.format import (
    BODY_LIMIT,
    BUTTON_TITLE,
    MAX_BUTTONS,
    MAX_ROWS,
    ROW_DESCRIPTION,
    ROW_TITLE,
    TEXT_LIMIT,
    body_text,
    to_whatsapp,
    whatsapp_message,
)
from messages import Messages

TO = "6281234567890"


def check_limits(bodies: list[dict[str, Any]]) -> None:
    assert bodies
    for body in bodies:
        assert body["messaging_product"] == "whatsapp"
        assert body["to"] == TO
        if body["type"] == "text":
            assert 0 < len(body["text"]["body"]) <= TEXT_LIMIT
            assert body["text"]["body"].strip()
            continue
        assert body["type"] == "interactive"
        interactive = body["interactive"]
        assert 0 < len(interactive["body"]["text"]) <= BODY_LIMIT
        if interactive["type"] == "button":
            buttons = interactive["action"]["buttons"]
            assert 1 <= len(buttons) <= MAX_BUTTONS
            titles = [b["reply"]["title"] for b in buttons]
            assert all(0 < len(t) <= BUTTON_TITLE for t in titles)
            assert len(set(titles)) == len(titles)
            ids = [b["reply"]["id"] for b in buttons]
            assert len(set(ids)) == len(ids)
            assert all(0 < len(i) <= 256 for i in ids)
        else:
            assert interactive["type"] == "list"
            assert 0 < len(interactive["action"]["button"]) <= 20
            rows = [r for s in interactive["action"]["sections"] for r in s["rows"]]
            assert 1 <= len(rows) <= MAX_ROWS
            assert all(0 < len(r["title"]) <= ROW_TITLE for r in rows)
            assert all(len(r.get("description", "")) <= ROW_DESCRIPTION for r in rows)
            ids = [r["id"] for r in rows]
            assert len(set(ids)) == len(ids)
            assert all(0 < len(i) <= 200 for i in ids)
    # Only the last body may carry choices.
    assert all(body["type"] == "text" for body in bodies[:-1])


def test_markup_converted() -> None:
    text = (
        '<b>Laporan</b> &amp; <i>catatan </i><code>ABC123</code> <a href="https://x.id">situs</a>'
    )
    assert to_whatsapp(text) == "*Laporan* & _catatan_ ```ABC123``` situs (https://x.id)"
    assert to_whatsapp("<b></b><u>garis</u> 3 &lt; 4") == "garis 3 < 4"
    assert to_whatsapp("<b>a <i>b</i></b>") == "*a _b_*"


def test_three_short_buttons_are_reply_buttons() -> None:
    [body] = whatsapp_message(TO, "<b>Hadir?</b>", [[("Hadir", "r:1:y"), ("Tidak", "r:1:n")]])
    assert body["interactive"]["type"] == "button"
    assert body["interactive"]["body"]["text"] == "*Hadir?*"
    assert [b["reply"]["id"] for b in body["interactive"]["action"]["buttons"]] == [
        "r:1:y",
        "r:1:n",
    ]


def test_long_labels_make_a_list_with_descriptions() -> None:
    labels = [f"Pilihan panjang nomor {i} sekali" for i in range(5)]
    [body] = whatsapp_message(TO, "Pilih", [[(label, f"a{i}")] for i, label in enumerate(labels)])
    rows = body["interactive"]["action"]["sections"][0]["rows"]
    assert body["interactive"]["type"] == "list"
    assert rows[0]["description"] == labels[0]
    assert rows[1]["title"].startswith("2. Pilihan")
    assert len(rows[0]["title"]) <= ROW_TITLE


def test_many_choices_become_a_numbered_list() -> None:
    english = Messages("en")
    bodies = whatsapp_message(
        TO, "Pick", [[(f"O{i}", f"a{i}")] for i in range(12)], messages=english
    )
    [body] = bodies
    assert body["type"] == "text"
    assert "1. O0\n" in body["text"]["body"]
    assert "12. O11" in body["text"]["body"]
    assert english.render("wa_number_hint") in body_text(body)


def test_long_text_split_and_choices_last() -> None:
    text = "\n\n".join(f"<b>Paragraf {i}</b> " + "kata " * 80 for i in range(30))
    bodies = whatsapp_message(TO, text, [[("Kirim", "k")]])
    check_limits(bodies)
    assert len(bodies) > 2
    assert bodies[-1]["interactive"]["type"] == "button"
    joined = " ".join(body_text(b) for b in bodies)
    assert "*Paragraf 0*" in joined
    assert "*Paragraf 29*" in joined


# What the templates produce: escaped text in <b>, <i>, <code> and links, over lines.
_words = st.text(min_size=0, max_size=60)
_piece = st.one_of(
    _words.map(html.escape),
    _words.map(lambda t: f"<b>{html.escape(t)}</b>"),
    _words.map(lambda t: f"<i>{html.escape(t)}</i>"),
    _words.map(lambda t: f"<code>{html.escape(t)}</code>"),
    _words.map(lambda t: f'<a href="https://example.id/{html.escape(t, quote=True)}">x</a>'),
    st.sampled_from(["\n", "\n\n", " "]),
)
_html = st.lists(_piece, max_size=120).map("".join)
_label = st.text(min_size=1, max_size=70).filter(lambda t: t.strip()).map(html.escape)
_action = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:_-", min_size=1, max_size=64)
_buttons = st.lists(
    st.lists(st.tuples(_label, _action), min_size=1, max_size=3), min_size=0, max_size=8
)


@given(_html, _buttons, st.integers(min_value=0, max_value=6000))
def test_any_message_within_limits(
    text: str, buttons: list[list[tuple[str, str]]], pad: int
) -> None:
    text = text + ("a " * pad if pad % 3 == 0 else "")
    bodies = whatsapp_message(TO, text, buttons)
    if not to_whatsapp(text).strip() and not buttons:
        assert bodies == []  # nothing to show
        return
    check_limits(bodies)
