"""The local chat simulator: a terminal chat with the real handlers over the local Bot API."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from bot import officers, onboarding
from bot.clock import FixedClock, SystemClock, parse_moment
from bot.core import Core
from bot.identity import identify
from bot.registry import KoperasiInfo, count_koperasi, find_koperasi
from handlers.common import CHANNEL
from handlers.local_api import LocalBotAPI, LocalChat, LocalUser, SentMessage
from storage.models import Jabatan

ReadLine = Callable[[], Awaitable[str | None]]
Write = Callable[[str], None]

SIM_OFFICER_ID = 800_000_001
QUIT = (":keluar", ":q", ":quit")


class _Quit(Exception):
    """The person typed :keluar at any prompt."""


_TAG = re.compile(r"<[^>]+>")


def plain(text: str) -> str:
    """Telegram HTML as a terminal shows it."""
    return html.unescape(_TAG.sub("", text))


class Simulator:
    def __init__(
        self,
        core: Core,
        app: Any,
        api: LocalBotAPI,
        read_line: ReadLine,
        write: Write,
        echo_input: bool = False,
    ) -> None:
        self.core = core
        self.app = app
        self.api = api
        self.read_line = read_line
        self.write = write
        self.echo_input = echo_input
        self.chat: LocalChat | None = None
        self.shown: set[tuple[int, int]] = set()

    def say(self, template: str, **values: Any) -> None:
        self.write(self.core.messages.render(template, **values))

    async def ask(self) -> str | None:
        line = await self.read_line()
        if line is None:
            return None
        line = line.rstrip("\r\n")
        if self.echo_input:
            self.write(f"> {line}")
        if line.strip() in QUIT:
            raise _Quit
        return line.strip()

    async def choose(self, count: int, *, allow_empty: bool = False) -> int | None:
        """A 1-based choice from a numbered list; 0 for Enter where allowed; None at EOF."""
        while True:
            answer = await self.ask()
            if answer is None:
                return None
            if allow_empty and answer == "":
                return 0
            if answer.isdecimal() and 1 <= int(answer) <= count:
                return int(answer)
            self.say("sim_invalid_choice", maximum=count)

    async def ask_name(self, default: str) -> str | None:
        """The person's name ("" for the default); a command typed here is asked again: it
        was meant for the bot, which is not listening yet."""
        self.say("sim_ask_name", default=default)
        while True:
            name = await self.ask()
            if name is None or not name.startswith("/"):
                return name
            self.say("sim_name_not_command", command=name, default=default)

    def show(self, messages: list[SentMessage]) -> None:
        for message in messages:
            self.shown.add((message.chat_id, message.message_id))
            self.write(f"Bot: {plain(message.text)}")
            if message.buttons:
                numbered = [f"[{i}] {text}" for i, text in enumerate(message.button_labels, 1)]
                self.write("     " + "   ".join(numbered))

    async def send(self, text: str) -> None:
        assert self.chat is not None
        self.write(f"Anda: {text}")
        self.show(await self.chat.send(text))

    # Who the person is ------------------------------------------------------------------------
    async def choose_identity(self) -> bool:
        self.say("sim_who")
        choice = await self.choose(3)
        if choice is None:
            return False
        if choice == 1:
            return await self._as_board_member()
        if choice == 2:
            return await self._as_officer()
        user = LocalUser(self.api, 700_000_000 + secrets.randbelow(99_999_999), "Pengguna")
        self.chat = LocalChat(self.app, user)
        self.say(
            "sim_now_as", who=self.core.messages.render("sim_unlinked_who"), user_id=user.user_id
        )
        return True

    async def _pick_koperasi(self) -> KoperasiInfo | None:
        if await count_koperasi(self.core.db) == 0:
            self.say("sim_registry_empty")
            return None
        while True:
            self.say("sim_ask_coop")
            query = await self.ask()
            if query is None:
                return None
            async with self.core.db.sessions() as session:
                coops = (await find_koperasi(session, query))[:20]
            if len(coops) == 1:
                return coops[0]
            self.say("sim_coop_choices", coops=coops, query=query)
            if coops:
                picked = await self.choose(len(coops))
                return None if picked is None else coops[picked - 1]

    async def _as_board_member(self) -> bool:
        coop = await self._pick_koperasi()
        if coop is None:
            return False
        async with self.core.db.sessions() as session:
            roles = list((await session.scalars(select(Jabatan).order_by(Jabatan.urutan))).all())
        self.say("sim_ask_role", roles=roles)
        picked = await self.choose(len(roles), allow_empty=True)
        if picked is None:
            return False
        jabatan = roles[picked - 1] if picked else next(r for r in roles if r.kode == "bendahara")
        default = self.core.messages.render("sim_default_name", officer=False)
        name = await self.ask_name(default)
        if name is None:
            return False
        user_id = 900_000_000 + coop.id * 100 + jabatan.id
        user = LocalUser(self.api, user_id, name or default)
        self.chat = LocalChat(self.app, user)
        who = self.core.messages.render("sim_board_who", jabatan=jabatan.nama, koperasi=coop.nama)
        self.say("sim_now_as", who=who, user_id=user_id)
        async with self.core.db.sessions() as session:
            actor = await identify(session, CHANNEL, str(user_id))
        if actor.membership is not None and actor.membership.koperasi_id == coop.id:
            await self.send("/start")
            return True
        invite = await onboarding.create_invite(
            self.core, koperasi_kode=coop.kode, role=jabatan.kode, created_by="simulator"
        )
        await self.send(f"/start {invite.code}")
        return True

    async def _as_officer(self) -> bool:
        default = self.core.messages.render("sim_default_name", officer=True)
        name = await self.ask_name(default)
        if name is None:
            return False
        saved = await officers.add_officer(
            self.core,
            telegram_id=str(SIM_OFFICER_ID),
            nama=name or default,
            kecamatan=None,
            can_broadcast=True,
            actor="simulator",
        )
        self.chat = LocalChat(self.app, LocalUser(self.api, SIM_OFFICER_ID, saved.nama))
        who = self.core.messages.render("sim_officer_who", nama=saved.nama)
        self.say("sim_now_as", who=who, user_id=SIM_OFFICER_ID)
        await self.send("/start")
        return True

    # The chat ----------------------------------------------------------------------------------
    async def run(self) -> None:
        self.say("sim_banner")
        try:
            await self._converse()
        except _Quit:
            return

    async def _converse(self) -> None:
        if not await self.choose_identity():
            return
        while True:
            line = await self.ask()
            if line is None:
                return
            if not line:
                continue
            if line == ":ganti":
                if not await self.choose_identity():
                    return
                continue
            if line.split(maxsplit=1)[0] == ":waktu":
                await self._set_time(line.partition(" ")[2])
            else:
                await self._handle(line)
            self.show_proactive()

    def show_proactive(self) -> None:
        """Messages the outbox delivered to this chat since the last prompt (reminders...)."""
        if self.chat is None:
            return
        new = [
            message
            for (chat_id, message_id), message in self.api.messages.items()
            if chat_id == self.chat.chat_id and (chat_id, message_id) not in self.shown
        ]
        if new:
            self.say("sim_proactive", count=len(new))
            self.show(new)

    async def _set_time(self, text: str) -> None:
        """`:waktu 2026-12-05 09:00` moves the simulated clock there and runs the calendar, as
        the scheduler would at that moment; `:waktu sekarang` goes back to the real time."""
        from bot.app import send_due_with
        from bot.reminders import tick

        if text.strip().casefold() in ("sekarang", "now"):
            self.core.clock = SystemClock()
        else:
            moment = parse_moment(text, self.core.settings.tz)
            if moment is None:
                self.say("sim_waktu", error=True, value=text)
                return
            self.core.clock = FixedClock(moment)
        result = await tick(self.core)
        stats = await send_due_with(self.core, self.app.bot)
        self.say("sim_waktu", error=False, result=result, stats=stats)

    async def _handle(self, line: str) -> None:
        assert self.chat is not None
        if line.startswith("'"):
            await self.send(line[1:])
            return
        target = self.chat.last_with_buttons()
        if line.isdecimal() and target is not None and target is self.chat.last_message():
            number = int(line)
            if not 1 <= number <= len(target.button_labels):
                self.say("sim_button_hint", number=number)
                return
            self.write(f"Anda: [{target.button_labels[number - 1]}]")
            self.show(await self.chat.press(number - 1))
            return
        await self.send(line)
