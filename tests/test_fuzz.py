"""The whole bot under random input: people in the middle of a report, an officer composing a
summons, a board member asked for a delegate, a stranger; random text, media, edits, duplicated
updates, stale and forged buttons, commands in the wrong state.

Whatever arrives: no handler raises, every private message and every button press is
answered, what is sent stays within Telegram's limits and HTML subset, and the database keeps
its invariants. The number of examples follows the Hypothesis profile (tests/conftest.py):
`HYPOTHESIS_PROFILE=nightly make test` runs thousands of updates more.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from telegram import Update

from bot import charts, officers, onboarding
from bot import summons as summons_service
from bot.app import send_due_with
from bot.core import Core
from bot.identity import identify
from bot.laporan import MONTHLY_REPORT
from bot.panggil import TEXT_STEPS
from handlers.local_api import LocalBotAPI, LocalChat, LocalUser, SentMessage
from storage.models import (
    BoardMember,
    ChatIdentity,
    ChatPrompt,
    Kecamatan,
    Kelurahan,
    Koperasi,
    ObstacleAction,
    Officer,
    OutboxMessage,
    Report,
    ReportDraft,
    ReportRevision,
    Rsvp,
    Summons,
    SummonsDraft,
    SummonsKoperasi,
)
from tests.bot.test_reminders import CIPARE, SUKAWANA_CURUG, link, officer
from tests.conftest import WIB, Chats

KASEMEN = "36.73.02.1001"
MEETING = datetime(2026, 12, 3, 9, 0, tzinfo=WIB)
BOARD = {
    "siti": (SUKAWANA_CURUG, "bendahara"),
    "budi": (CIPARE, "ketua"),
    "asing": (KASEMEN, "bendahara"),
}
PERSONAS = ("siti", "budi", "asing", "oki", "cici", "tamu")
# The limits Telegram enforces; a message over them would be refused, not sent.
MAX_TEXT = 4096
MAX_ALERT = 200
MAX_CALLBACK_DATA = 64
# Telegram's HTML parse mode knows these tags only; anything else is refused.
TELEGRAM_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a",
    "code", "pre", "blockquote", "tg-emoji",
}  # fmt: skip
SENDING = {"sendMessage", "sendPhoto", "sendDocument", "editMessageText"}

EXAMPLES = max(10, settings().max_examples // 6)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # One Application and database per test, reused by every example on purpose (building
    # them per example would cost seconds); `prepare` resets what an example may leave behind.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# What people send -----------------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "\n\n",
    "12",
    "0",
    "-5",
    "1,5 jt",
    "Rp 1.500.000,-",
    "99999999999999999999999",
    "²³",
    "١٢٣",
    "７",
    "Ya",
    "tidak",
    "sama",
    "Senin, 7 Desember 2026 pukul 09.00",
    "31/02/2026 25.61",
    "Sukawana",
    "Cipare",
    "kasemen, sukawana; cipare",
    "😀🙏🏽👨‍👩‍👧‍👦",
    "مرحبا بكم في التعاونية",
    "\u202eterbalik\u202c",
    "<b>tebal</b> <i>miring",
    "<script>alert(1)</script>",
    "&amp; &lt; & < > \"'",
    "*tebal* _miring_ `kode` [tautan](http://contoh.id) ~~coret~~ ||rahasia||",
    "'; DROP TABLE report; --",
    "1 OR 1=1",
    "{{ 7*7 }} {{ config }}",
    "{% for x in range(10**9) %}{% endfor %}",
    "${jndi:ldap://x}",
    "%s %d %(nama)s {0}",
    "/lapor",
    "x" * 4096,
    "kata " * 819,
]
COMMANDS = [
    "/start",
    "/start KODEPALSU123",
    "/start ' OR 1=1",
    "/bantuan",
    "/help",
    "/lapor",
    "/lapor Oktober 2026",
    "/lapor 2026-13",
    "/lapor 1999-01",
    "/batal",
    "/keluar",
    "/rekap",
    "/rekap 2026-09",
    "/ekspor September 2026",
    "/ekspor 2020-01..2026-12",
    "/koperasi",
    "/koperasi Sukawana",
    "/koperasi 36.73.01.1002",
    "/panggil",
    "/undangan",
    "/tangani",
    "/tangani Sukawana",
    "/tangani Cipare",
    "/jadwal",
    "/tidakada",
    "/lapor@koperasi_simulator_bot",
]
PREFIXES = ["r:", "p:", "u:", "k:", "o:", "t:", "lapor:", "keluar:", ""]
VERBS = [
    "o:status_operasional:rutin",
    "o:status_operasional:belum",
    "t:unit_usaha:gerai_sembako",
    "d:unit_usaha",
    "t:kendala:NIHIL",
    "d:kendala",
    "k:foto",
    "s:jumlah_anggota",
    "send",
    "edit",
    "cancel",
    "waktu_ok",
    "sasaran:all",
    "sasaran:kecamatan",
    "kec_selesai",
    "kop_selesai",
    "periode:2026-10",
    "kirim",
    "batal",
    "ubah_isian:hal",
    "hadir",
    "diwakilkan",
    "berhalangan",
    "lihat",
    "lama",
    "ubah",
    "batalkan",
    "batalkan_ya",
    "urung",
    "ya",
    "chart:kendala:2026-10",
    "chart:rate:2026-09",
    "kop",
    "MODAL",
    "2026-10",
    "2026-11",
]
NUMBERS = ["0", "-1", "²", "١", "99999999999", "1" * 30, "1.5", "0x10", " 1"]

texts = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=60),
    st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(max_size=20)),
)


@dataclass(frozen=True)
class Forged:
    """Callback data built at run time from real ids (own or someone else's drafts, summons,
    cooperatives, kecamatan) or from junk."""

    prefix: str
    source: str
    pick: int
    verb: str
    junk: str

    def render(self, ids: dict[str, list[int]]) -> str:
        if self.source == "junk":
            number = NUMBERS[self.pick % len(NUMBERS)]
        else:
            pool = ids.get(self.source) or [0]
            number = str(pool[self.pick % len(pool)])
        if self.prefix in ("k:", "lapor:", "keluar:"):
            data = f"{self.prefix}{self.verb}{self.junk}"
        elif self.prefix == "t:":
            data = f"t:{self.verb}:{number}" if self.verb == "kop" else f"t:k:{number}:{self.verb}"
        else:
            data = f"{self.prefix}{number}:{self.verb}{self.junk}"
        return data.encode()[:MAX_CALLBACK_DATA].decode(errors="ignore")


forged = st.builds(
    Forged,
    prefix=st.sampled_from(PREFIXES),
    source=st.sampled_from(
        ["drafts", "panggil", "summons", "koperasi", "kecamatan", "junk", "junk"]
    ),
    pick=st.integers(0, 1000),
    verb=st.sampled_from(VERBS),
    junk=st.one_of(st.just(""), st.just(""), st.text(max_size=8)),
)


@dataclass(frozen=True)
class Move:
    who: str
    kind: str
    text: str = ""
    pick: int = 0
    data: Forged | None = None


def move(kind: str, **parts: Any) -> st.SearchStrategy[Move]:
    return st.builds(Move, who=st.sampled_from(PERSONAS), kind=st.just(kind), **parts)


moves = st.one_of(
    move("text", text=texts),
    move("command", text=st.sampled_from(COMMANDS)),
    move("command", text=st.builds(lambda c, t: f"{c} {t}", st.sampled_from(COMMANDS), texts)),
    move("advance", pick=st.integers(0, 50)),
    move("advance", pick=st.integers(0, 50)),
    move("press", pick=st.integers(0, 50)),
    move("stale", pick=st.integers(0, 1000)),
    move("forged", data=forged),
    move("media", text=st.sampled_from(["sticker", "photo", "document", "location", "voice"])),
    move("caption", text=texts),
    move("edited", text=texts),
    move("duplicate"),
    move("group", text=st.one_of(st.sampled_from(COMMANDS), texts)),
)


# The ordinary way through each conversation (as in tests/handlers/test_report.py and
# tests/handlers/test_panggil.py): "/..." and plain words are typed, ">label" presses a button.
REPORT_WAY = [
    "/lapor", ">Beroperasi rutin", ">Gerai sembako", ">Selesai", "120", "5", "12,5 jt",
    ">Ya, benar", "Rp1.500.000", "25000000", "0", ">Sewa", ">Ya", ">Tidak", ">Ya", ">Tidak",
    "Membuka gerai sembako", ">Modal terbatas", ">Selesai", "Simpanan belum terkumpul.",
    ">Pelatihan", ">Selesai", ">Selesai",
]  # fmt: skip
PANGGIL_WAY = [
    "/panggil", "Rapat koordinasi pengurus KMP", "Senin, 7 Desember 2026 pukul 09.00",
    ">Ya, benar", "Aula Setda Kota Serang", "Evaluasi kegiatan usaha", "Budi (0812-3456-7890)",
    ">Semua koperasi se-kota",
]  # fmt: skip


@dataclass(frozen=True)
class Start:
    """Where each person stands when the example begins: how far along the ordinary way
    (then a few random steps further), whether a question waits for a typed answer."""

    report_at: int
    report_steps: list[int]
    panggil_at: int
    panggil_steps: list[int]
    rsvp: str
    tangani: bool


starts = st.builds(
    Start,
    report_at=st.integers(0, len(REPORT_WAY)),
    report_steps=st.lists(st.integers(0, 50), max_size=4),
    panggil_at=st.integers(0, len(PANGGIL_WAY)),
    panggil_steps=st.lists(st.integers(0, 50), max_size=3),
    rsvp=st.sampled_from(["none", "diwakilkan", "diwakilkan_nama", "berhalangan"]),
    tangani=st.booleans(),
)


# The world the examples share -------------------------------------------------------------------


@dataclass
class World:
    core: Core
    app: Any
    api: LocalBotAPI
    chats: dict[str, LocalChat]
    summons_id: int
    errors: list[str] = field(default_factory=list)
    last_update: dict[str, dict[str, Any]] = field(default_factory=dict)
    ids: dict[str, list[int]] = field(default_factory=dict)
    group_ids: Callable[[], int] = field(default_factory=lambda: itertools.count(1).__next__)

    def chat(self, who: str) -> LocalChat:
        return self.chats[who]

    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing example
        return f"World(summons_id={self.summons_id}, {self.core.db.dialect})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@pytest.fixture
async def world(
    registry_loaded: Core,
    app: Any,
    api: LocalBotAPI,
    chats: Chats,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    core = registry_loaded
    # Drawing charts takes a second each; what they show is tested in tests/bot/test_rekap.py.
    monkeypatch.setattr(charts, "reporting_rate_png", lambda *a, **k: b"\x89PNG\r\n\x1a\n")
    monkeypatch.setattr(charts, "obstacles_by_kecamatan_png", lambda *a, **k: b"\x89PNG\r\n\x1a\n")
    people = {
        who: await link(core, chats, kode, who.title(), role) for who, (kode, role) in BOARD.items()
    }
    people["oki"] = await officer(core, chats, "Oki", None)
    people["cici"] = await officer(core, chats, "Cici", "Curug")
    people["tamu"] = chats.user("Tamu", None)
    for who, kecamatan in (("oki", None), ("cici", "Curug")):
        await officers.add_officer(
            core,
            telegram_id=str(people[who].user.user_id),
            nama=who.title(),
            kecamatan=kecamatan,
            can_broadcast=True,
            actor="t",
        )
    async with core.db.sessions() as session:
        serang = await session.scalar(select(Kecamatan.id).where(Kecamatan.nama == "Serang"))
        oki = await identify(session, "telegram", str(people["oki"].user.user_id))
    assert serang is not None
    summons, _ = await summons_service.send(
        core,
        oki,
        summons_service.Spec(
            hal="Rapat koordinasi pengurus KMP",
            starts_at=MEETING,
            tempat="Aula Setda Kota Serang",
            acara="Evaluasi kegiatan usaha",
            narahubung="Budi (0812-3456-7890)",
            target=summons_service.Target(kind="kecamatan", kecamatan_ids=[serang]),
        ),
    )
    await send_due_with(core, app.bot)
    found = World(core, app, api, people, summons.id)

    async def spy(update: object, context: Any) -> None:
        found.errors.append(f"{context.error!r} while handling {update}")

    app.add_error_handler(spy)
    return found


# One example ------------------------------------------------------------------------------------


async def prepare(world: World, start: Start) -> None:
    """Undo what the previous example left that would stop this one (a person who left with
    /keluar, a cancelled summons, conversations half done), then put people where `start` says."""
    core = world.core
    async with core.db.transaction() as session:
        await session.execute(delete(ReportDraft))
        await session.execute(delete(SummonsDraft))
        await session.execute(delete(ChatPrompt))
        await session.execute(
            update(Summons)
            .where(Summons.id == world.summons_id)
            .values(cancelled_at=None, cancel_reason=None, starts_at=MEETING)
        )
    for who, (kode, role) in BOARD.items():
        chat = world.chat(who)
        async with core.db.sessions() as session:
            actor = await identify(session, "telegram", str(chat.user.user_id))
        if actor.membership is None:
            invite = await onboarding.create_invite(
                core, koperasi_kode=kode, role=role, created_by="fuzz"
            )
            await send(world, who, chat.user.text_update(f"/start {invite.code}"))
    await refresh_ids(world)
    for who, way, at, steps in (
        ("siti", REPORT_WAY, start.report_at, start.report_steps),
        ("oki", PANGGIL_WAY, start.panggil_at, start.panggil_steps),
    ):
        for index, step in enumerate(way[:at]):
            await follow(world, who, step, index)
        for pick in steps if at else []:
            await advance(world, who, pick)
    if start.rsvp != "none":
        budi = world.chat("budi")
        verb = start.rsvp.split("_")[0]
        await press_data(world, "budi", f"u:{world.summons_id}:{verb}")
        if start.rsvp == "diwakilkan_nama":
            await send(world, "budi", budi.user.text_update("Pak Wakil"))
    if start.tangani:
        await send(world, "cici", world.chat("cici").user.text_update("/tangani Sukawana"))
        await press(world, "cici", 0)
    await refresh_ids(world)
    # Where people stand, for `pytest --hypothesis-show-statistics`.
    async with core.db.sessions() as session:
        event(f"report at {await session.scalar(select(ReportDraft.current_field))}")
        event(f"summons draft at {await session.scalar(select(SummonsDraft.step))}")
        event(f"prompts open: {await session.scalar(select(func.count()).select_from(ChatPrompt))}")


async def refresh_ids(world: World) -> None:
    async with world.core.db.sessions() as session:
        world.ids = {
            "drafts": list((await session.scalars(select(ReportDraft.id))).all()),
            "panggil": list((await session.scalars(select(SummonsDraft.id))).all()),
            "summons": [*(await session.scalars(select(Summons.id))).all(), 999_999],
            "koperasi": list((await session.scalars(select(Koperasi.id).limit(70))).all()),
            "kecamatan": list((await session.scalars(select(Kecamatan.id))).all()),
        }


def sent_to(world: World, chat_id: int, start: int) -> list[Any]:
    return [
        c
        for c in world.api.calls[start:]
        if c.method in SENDING and int(c.params.get("chat_id", 0)) == chat_id
    ]


async def send(world: World, who: str, data: dict[str, Any], *, must_answer: bool = True) -> None:
    """Process one update of `who` and check what the bot did with it."""
    chat = world.chat(who)
    start = len(world.api.calls)
    errors = len(world.errors)
    note(f"{who}: {json.dumps(data, ensure_ascii=False)[:300]}")
    await world.app.process_update(Update.de_json(data, world.app.bot))
    world.last_update[who] = data
    assert world.errors[errors:] == []
    calls = world.api.calls[start:]
    check_limits(calls)
    message = data.get("message")
    if must_answer and message is not None and message["chat"]["type"] == "private":
        assert sent_to(world, chat.chat_id, start), f"{who} got no answer to {message}"
    query = data.get("callback_query")
    if must_answer and query is not None:
        answered = [
            c
            for c in calls
            if c.method == "answerCallbackQuery"
            and str(c.params["callback_query_id"]) == query["id"]
        ]
        assert answered, f"the button {query['data']!r} of {who} was not answered"


class TelegramHTML(HTMLParser):
    """Checks a text the way Telegram's HTML parse mode reads it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in TELEGRAM_TAGS, f"<{tag}> is not in Telegram's HTML"
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open, f"</{tag}> closes nothing"
        assert self.open.pop() == tag, f"</{tag}> closes another tag"

    def handle_entityref(self, name: str) -> None:
        assert name in ("lt", "gt", "amp", "quot"), f"&{name}; is not an entity Telegram knows"

    def handle_data(self, data: str) -> None:
        assert "<" not in data, f"a bare < in {data[:80]!r}"
        assert ">" not in data, f"a bare > in {data[:80]!r}"


def check_html(text: str) -> None:
    parser = TelegramHTML()
    parser.feed(text)
    parser.close()
    assert parser.open == [], f"unclosed {parser.open} in {text[:200]!r}"


def check_limits(calls: list[Any]) -> None:
    for call in calls:
        params = call.params
        if call.method in ("sendMessage", "editMessageText"):
            text = str(params.get("text", ""))
            assert 0 < len(text) <= MAX_TEXT, (call.method, len(text))
            check_html(text)
        if call.method in ("sendPhoto", "sendDocument") and params.get("caption"):
            assert len(str(params["caption"])) <= 1024
            check_html(str(params["caption"]))
        if call.method == "answerCallbackQuery":
            assert len(str(params.get("text", ""))) <= MAX_ALERT
        markup = params.get("reply_markup") or {}
        for row in markup.get("inline_keyboard", []):
            for button in row:
                assert len(button["callback_data"].encode()) <= MAX_CALLBACK_DATA, button
                assert button["text"].strip(), button


def with_buttons(world: World, who: str) -> list[SentMessage]:
    chat_id = world.chat(who).chat_id
    return [m for (c, _), m in world.api.messages.items() if c == chat_id and m.buttons]


async def press_data(world: World, who: str, data: str, message: SentMessage | None = None) -> None:
    chat = world.chat(who)
    target = message or chat.last_message() or SentMessage(chat.chat_id, 1, "lama")
    await send(world, who, chat.user.callback_update(target, data))


async def press(world: World, who: str, pick: int) -> None:
    """Press a button of the newest message with buttons, as a person would."""
    found = with_buttons(world, who)
    if not found:
        await send(world, who, world.chat(who).user.text_update("/bantuan"))
        return
    buttons = [b for row in found[-1].buttons for b in row]
    await press_data(world, who, buttons[pick % len(buttons)]["callback_data"], found[-1])


async def follow(world: World, who: str, step: str, pick: int) -> None:
    """One step of the ordinary way; where the conversation went elsewhere (an earlier example
    left a report to revise, a plausibility question came up) the button may be missing, and
    any sensible step is taken instead."""
    chat = world.chat(who)
    if not step.startswith(">"):
        await send(world, who, chat.user.text_update(step))
        return
    newest = chat.last_message()
    for button in [b for row in newest.buttons for b in row] if newest else []:
        if button["text"] == step[1:]:
            await press_data(world, who, button["callback_data"], newest)
            return
    await advance(world, who, pick)


async def advance(world: World, who: str, pick: int) -> None:
    """The answer the current question wants: a button of the newest message when it has
    buttons, else a sensible text for the question the person's draft is at."""
    chat = world.chat(who)
    newest = chat.last_message()
    if newest is not None and newest.buttons:
        buttons = [b for row in newest.buttons for b in row]
        # A third of the time the last button: "Selesai" closes a multiple choice.
        chosen = buttons[-1] if pick % 3 == 0 else buttons[pick % len(buttons)]
        await press_data(world, who, chosen["callback_data"], newest)
        return
    await send(world, who, chat.user.text_update(await sensible_text(world, who, pick)))


async def sensible_text(world: World, who: str, pick: int) -> str:
    async with world.core.db.sessions() as session:
        actor = await identify(session, "telegram", str(world.chat(who).user.user_id))
        report = await session.scalar(
            select(ReportDraft.current_field).where(ReportDraft.person_id == actor.person_id)
        )
        step = await session.scalar(
            select(SummonsDraft.step).where(SummonsDraft.person_id == actor.person_id)
        )
    if step in TEXT_STEPS:
        return {
            "hal": "Rapat koordinasi pengurus KMP",
            "waktu": "Senin, 7 Desember 2026 pukul 09.00",
            "tempat": "Aula Setda Kota Serang",
            "acara": "Evaluasi kegiatan usaha dan kendala",
            "narahubung": "Budi (0812-3456-7890)",
        }[step]
    if step == "pilih_koperasi":
        return ["Cipare", "Sukawana", "Kasemen, Cipare"][pick % 3]
    if report is not None and MONTHLY_REPORT.has(report):
        kind = MONTHLY_REPORT.field(report).kind.value
        return {"integer": "12", "money": "1,5 jt"}.get(kind, "Rapat anggota dan pelatihan")
    return ["12", "Ya", "Pak Wakil", "Sekretaris"][pick % 4]


def media(chat: LocalChat, kind: str, caption: str | None = None) -> dict[str, Any]:
    file: dict[str, Any] = {"file_id": f"{kind}-id", "file_unique_id": f"{kind}-u"}
    kinds: dict[str, dict[str, Any]] = {
        "sticker": {"sticker": {**file, "width": 512, "height": 512, "is_animated": False,
                                "is_video": False, "type": "regular"}},
        "photo": {"photo": [{**file, "width": 800, "height": 600}]},
        "document": {"document": {**file, "file_name": "laporan.pdf",
                                  "mime_type": "application/pdf"}},
        "location": {"location": {"latitude": -6.12, "longitude": 106.15}},
        "voice": {"voice": {**file, "duration": 3}},
    }  # fmt: skip
    content = dict(kinds[kind])
    if caption is not None:
        content["caption"] = caption
    return {"update_id": chat.api.next_update_id(), "message": chat.user.message_json(**content)}


async def play(world: World, item: Move) -> None:
    chat = world.chat(item.who)
    user = chat.user
    if item.kind in ("text", "command"):
        await send(world, item.who, user.text_update(item.text))
    elif item.kind == "advance":
        await advance(world, item.who, item.pick)
    elif item.kind == "press":
        await press(world, item.who, item.pick)
    elif item.kind == "stale":
        found = with_buttons(world, item.who)
        if found:
            message = found[item.pick % len(found)]
            buttons = [b for row in message.buttons for b in row]
            await press_data(
                world, item.who, buttons[item.pick % len(buttons)]["callback_data"], message
            )
    elif item.kind == "forged":
        assert item.data is not None
        await press_data(world, item.who, item.data.render(world.ids))
    elif item.kind == "media":
        await send(world, item.who, media(chat, item.text))
    elif item.kind == "caption":
        await send(world, item.who, media(chat, "photo", item.text))
    elif item.kind == "edited":
        edit = user.message_json(item.text, edit_date=int(datetime.now().timestamp()))
        edited = {"update_id": chat.api.next_update_id(), "edited_message": edit}
        # Edits of old messages are not answers; the bot stays quiet and changes nothing.
        await send(world, item.who, edited, must_answer=False)
    elif item.kind == "duplicate":
        previous = world.last_update.get(item.who)
        if previous is not None:
            # Telegram may deliver an update twice; the second changes nothing and needs no
            # answer (the first one was answered).
            await send(world, item.who, previous, must_answer=False)
    elif item.kind == "group":
        group = LocalUser(
            chat.api, user.user_id, user.first_name, chat_id=-100_000 - world.group_ids()
        )
        await send(world, item.who, group.text_update(item.text), must_answer=False)


# Invariants ---------------------------------------------------------------------------------------


async def check_invariants(world: World) -> None:
    async with world.core.db.sessions() as session:
        members = dict(
            (await session.execute(select(BoardMember.person_id, BoardMember.koperasi_id))).all()
        )
        officers = {
            o.person_id: o.kecamatan_id for o in (await session.scalars(select(Officer))).all()
        }
        # A draft per person at most, for the cooperative the person is linked to.
        drafts = (
            await session.execute(select(ReportDraft.person_id, ReportDraft.koperasi_id))
        ).all()
        assert len({p for p, _ in drafts}) == len(drafts)
        for person_id, koperasi_id in drafts:
            assert members.get(person_id) == koperasi_id
        # One report per cooperative and month, its revisions numbered 1..current.
        reports = (await session.scalars(select(Report))).all()
        assert len({(r.koperasi_id, r.period) for r in reports}) == len(reports)
        for report in reports:
            numbers = (
                await session.scalars(
                    select(ReportRevision.revision)
                    .where(ReportRevision.report_id == report.id)
                    .order_by(ReportRevision.revision)
                )
            ).all()
            assert list(numbers) == list(range(1, report.current_revision + 1))
        # Answers only from cooperatives a summons was addressed to, by their own members.
        stray = await session.scalar(
            select(func.count())
            .select_from(Rsvp)
            .outerjoin(
                SummonsKoperasi,
                (SummonsKoperasi.summons_id == Rsvp.summons_id)
                & (SummonsKoperasi.koperasi_id == Rsvp.koperasi_id),
            )
            .where(SummonsKoperasi.id.is_(None))
        )
        assert stray == 0
        for person_id, koperasi_id in (
            await session.execute(select(Rsvp.person_id, Rsvp.koperasi_id))
        ).all():
            assert members.get(person_id) in (koperasi_id, None)
        # Every queued message has a chat to go to, of the person it is for.
        orphans = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .outerjoin(ChatIdentity, ChatIdentity.id == OutboxMessage.chat_identity_id)
            .where(
                (ChatIdentity.id.is_(None))
                | (
                    OutboxMessage.person_id.is_not(None)
                    & (OutboxMessage.person_id != ChatIdentity.person_id)
                )
            )
        )
        assert orphans == 0
        # Conversations belong to people who may hold them.
        for person_id in (await session.scalars(select(SummonsDraft.person_id))).all():
            assert person_id in officers
        for person_id in (await session.scalars(select(ChatPrompt.person_id))).all():
            assert person_id in officers or person_id in members
        # A summons of a kecamatan officer reaches only their kecamatan; notes stay in scope.
        scoped = (
            await session.execute(
                select(Summons.kecamatan_id, Kelurahan.kecamatan_id)
                .join(SummonsKoperasi, SummonsKoperasi.summons_id == Summons.id)
                .join(Koperasi, Koperasi.id == SummonsKoperasi.koperasi_id)
                .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
                .where(Summons.kecamatan_id.is_not(None))
            )
        ).all()
        assert all(scope == where for scope, where in scoped)
        notes = (
            await session.execute(
                select(ObstacleAction.officer_person_id, Kelurahan.kecamatan_id)
                .join(Koperasi, Koperasi.id == ObstacleAction.koperasi_id)
                .join(Kelurahan, Kelurahan.id == Koperasi.kelurahan_id)
            )
        ).all()
        for noted_by, kecamatan_id in notes:
            assert noted_by in officers
            assert officers[noted_by] in (None, kecamatan_id)
        # The stranger never got anywhere.
        tamu = world.chat("tamu").user.user_id
        assert (
            await session.scalar(
                select(func.count())
                .select_from(ChatIdentity)
                .where(ChatIdentity.external_id == str(tamu))
            )
            == 0
        )


NOWHERE = Start(0, [], 0, [], "none", False)


@FUZZ
@given(start=starts, script=st.lists(moves, min_size=1, max_size=15))
# What it found once, kept as examples that run every time.
@example(start=replace(NOWHERE, report_at=1), script=[Move("siti", "text", "²³")])
@example(start=NOWHERE, script=[Move("siti", "forged", data=Forged("r:", "junk", 2, "send", ""))])
@example(start=NOWHERE, script=[Move("oki", "forged", data=Forged("o:", "junk", 4, "", ""))])
@example(
    start=replace(NOWHERE, report_at=3, rsvp="diwakilkan"),
    script=[Move("budi", "command", "/keluar"), Move("budi", "press", pick=0)],
)
async def test_random_updates_in_every_state_break_nothing(
    world: World, start: Start, script: list[Move]
) -> None:
    await prepare(world, start)
    for item in script:
        await play(world, item)
        if item.kind == "forged" or item.kind == "advance":
            await refresh_ids(world)
    await check_invariants(world)
