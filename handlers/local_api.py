"""A Bot API that answers locally: the simulator's and the fast tests' Telegram.

`LocalBotAPI` is a python-telegram-bot request class. Instead of calling Telegram over the
network it answers each Bot API method from memory, remembers the messages the bot sent (so
buttons can be pressed later), and records every call. `LocalUser` builds the Updates a real
Telegram client would cause, as the JSON Telegram sends, so the handlers see real Update objects.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from telegram import Update
from telegram.ext import Application
from telegram.request import BaseRequest, RequestData

from handlers.common import settle

BOT_ID = 7_000_000_001
BOT_USERNAME = "koperasi_simulator_bot"


@dataclass
class ApiCall:
    method: str
    params: dict[str, Any]
    message: SentMessage | None = None


@dataclass
class SentMessage:
    """A message as the bot last left it (after edits)."""

    chat_id: int
    message_id: int
    text: str
    buttons: list[list[dict[str, Any]]] = field(default_factory=list)
    kind: str = "text"
    # An uploaded photo or document: (file name, bytes), as Telegram would have received it.
    file: tuple[str, bytes] | None = None

    @property
    def button_labels(self) -> list[str]:
        return [b["text"] for row in self.buttons for b in row]

    def button(self, label_or_index: str | int) -> dict[str, Any]:
        flat = [b for row in self.buttons for b in row]
        if isinstance(label_or_index, int):
            return flat[label_or_index]
        for b in flat:
            if b["text"] == label_or_index:
                return b
        raise KeyError(f"no button {label_or_index!r} in {self.button_labels}")


def _params(request_data: RequestData | None) -> dict[str, Any]:
    if request_data is None:
        return {}
    params: dict[str, Any] = {}
    for name, value in request_data.json_parameters.items():
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


def _files(request_data: RequestData) -> dict[str, tuple[str, bytes]]:
    files: dict[str, tuple[str, bytes]] = {}
    for name, value in request_data.multipart_data.items():
        filename, content = value[0], value[1]
        data = content if isinstance(content, bytes) else content.read()
        files[name] = (str(filename), bytes(data))
    return files


def api_call(url: str, request_data: RequestData | None) -> tuple[str, dict[str, Any]]:
    """The Bot API method a PTB request names, and its parameters (uploaded files, by name,
    under "_files"): what an in-process stand-in for a Bot API server answers."""
    params = _params(request_data)
    if request_data is not None and request_data.contains_files:
        params["_files"] = _files(request_data)
    return url.rsplit("/", 1)[-1], params


class LocalBotAPI(BaseRequest):
    """Answers Bot API calls in memory; unknown methods succeed with `true`, as most do."""

    def __init__(self, username: str = BOT_USERNAME) -> None:
        self.username = username
        self.calls: list[ApiCall] = []
        self.messages: dict[tuple[int, int], SentMessage] = {}
        self.commands: list[dict[str, str]] = []
        # Telegram's message ids only grow within a chat; starting from the clock keeps that
        # true across simulator restarts on the same database.
        self._message_ids = itertools.count(time.time_ns() // 1000)
        self._update_ids = itertools.count(1)

    # BaseRequest interface -------------------------------------------------------------------
    @property
    def read_timeout(self) -> float | None:
        return None

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        api_method, params = api_call(url, request_data)
        call = ApiCall(api_method, params)
        self.calls.append(call)
        handler = getattr(self, f"_api_{api_method}", None)
        result = handler(params) if handler else True
        if isinstance(result, dict) and "message_id" in result:
            call.message = self.messages.get((result["chat"]["id"], result["message_id"]))
        return 200, json.dumps({"ok": True, "result": result}).encode()

    # Bot API methods --------------------------------------------------------------------------
    def bot_user(self) -> dict[str, Any]:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Koperasi Merah Putih",
            "username": self.username,
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _api_getMe(self, _params: dict[str, Any]) -> dict[str, Any]:
        return self.bot_user()

    def _api_getUpdates(self, _params: dict[str, Any]) -> list[Any]:
        return []

    def _api_setMyCommands(self, params: dict[str, Any]) -> bool:
        self.commands = list(params.get("commands", []))
        return True

    def _message_json(self, message: SentMessage) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": int(time.time()),
            "chat": {"id": message.chat_id, "type": "private" if message.chat_id > 0 else "group"},
            "from": self.bot_user(),
        }
        if message.kind == "text":
            data["text"] = message.text
        else:
            data["caption"] = message.text
        if message.buttons:
            data["reply_markup"] = {"inline_keyboard": message.buttons}
        return data

    def _store(self, params: dict[str, Any], text: str, kind: str) -> dict[str, Any]:
        markup = params.get("reply_markup") or {}
        files = params.get("_files") or {}
        message = SentMessage(
            chat_id=int(params["chat_id"]),
            message_id=next(self._message_ids),
            text=text,
            buttons=markup.get("inline_keyboard", []),
            kind=kind,
            file=next(iter(files.values()), None),
        )
        self.messages[(message.chat_id, message.message_id)] = message
        return self._message_json(message)

    def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._store(params, str(params.get("text", "")), "text")

    def _api_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._store(params, str(params.get("caption", "")), "photo")

    def _api_sendDocument(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._store(params, str(params.get("caption", "")), "document")

    def _edited(self, params: dict[str, Any]) -> SentMessage | None:
        return self.messages.get((int(params.get("chat_id", 0)), int(params.get("message_id", 0))))

    def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        message = self._edited(params)
        if message is None:
            return True
        message.text = str(params.get("text", ""))
        message.buttons = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        return self._message_json(message)

    def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        message = self._edited(params)
        if message is None:
            return True
        message.buttons = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        return self._message_json(message)

    # Updates a user causes ---------------------------------------------------------------------
    def next_update_id(self) -> int:
        return next(self._update_ids)

    def sent_since(self, index: int) -> list[ApiCall]:
        return self.calls[index:]


@dataclass
class LocalUser:
    """A Telegram user in a private chat (or a group, with `chat_id` < 0) of the local API."""

    api: LocalBotAPI
    user_id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    chat_id: int | None = None
    language_code: str = "id"

    def user_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.user_id,
            "is_bot": False,
            "first_name": self.first_name,
            "language_code": self.language_code,
        }
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        return data

    def chat_json(self) -> dict[str, Any]:
        chat_id = self.chat_id if self.chat_id is not None else self.user_id
        if chat_id < 0:
            return {"id": chat_id, "type": "group", "title": "Grup Koperasi"}
        return {"id": chat_id, "type": "private", "first_name": self.first_name}

    def message_json(self, text: str | None = None, **extra: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self.api._message_ids),
            "date": int(time.time()),
            "chat": self.chat_json(),
            "from": self.user_json(),
        }
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                command = text.split()[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        message.update(extra)
        return message

    def text_update(self, text: str) -> dict[str, Any]:
        return {"update_id": self.api.next_update_id(), "message": self.message_json(text)}

    def callback_update(self, message: SentMessage, data: str) -> dict[str, Any]:
        return {
            "update_id": self.api.next_update_id(),
            "callback_query": {
                "id": str(self.api.next_update_id()),
                "from": self.user_json(),
                "chat_instance": str(message.chat_id),
                "data": data,
                "message": self.api._message_json(message),
            },
        }


class LocalChat:
    """Drives one user's conversation with an Application over the local API."""

    def __init__(self, app: Application[Any, Any, Any, Any, Any, Any], user: LocalUser) -> None:
        self.app = app
        self.user = user
        self.api = user.api

    @property
    def chat_id(self) -> int:
        return self.user.chat_id if self.user.chat_id is not None else self.user.user_id

    async def process(self, data: dict[str, Any]) -> list[SentMessage]:
        """Process one raw update and return the messages the bot sent or edited for it."""
        start = len(self.api.calls)
        update = Update.de_json(data, self.app.bot)
        await self.app.process_update(update)
        await settle(self.app, update)  # a slow command answers in a task of its own
        touched: list[SentMessage] = []
        for call in self.api.sent_since(start):
            if call.message is not None and call.message not in touched:
                touched.append(call.message)
        return touched

    def _last_sent(self, chat_id: int) -> SentMessage | None:
        mine = [m for (c, _), m in self.api.messages.items() if c == chat_id]
        return mine[-1] if mine else None

    async def send(self, text: str) -> list[SentMessage]:
        return await self.process(self.user.text_update(text))

    def last_with_buttons(self) -> SentMessage | None:
        mine = [m for (c, _), m in self.api.messages.items() if c == self.chat_id and m.buttons]
        return mine[-1] if mine else None

    def last_message(self) -> SentMessage | None:
        return self._last_sent(self.chat_id)

    async def press(
        self, label_or_index: str | int, message: SentMessage | None = None
    ) -> list[SentMessage]:
        target = message or self.last_with_buttons()
        if target is None:
            raise LookupError("no message with buttons in this chat")
        button = target.button(label_or_index)
        return await self.process(self.user.callback_update(target, button["callback_data"]))
