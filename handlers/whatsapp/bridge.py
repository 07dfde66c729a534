"""The Bot API the handlers call, answered with the WhatsApp Cloud API.

`WhatsAppBotAPI` is a python-telegram-bot request class (like handlers/local_api.py's
`LocalBotAPI`): the WhatsApp Application's `Bot` sends every Bot API call here, and the calls
that show something to a person become Cloud API calls over httpx:

- sendMessage: the text and buttons as handlers/whatsapp/format.py renders them (reply
  buttons, a list, or a numbered text), one or more POST /{phone_number_id}/messages. The
  answer is a Telegram Message with a message id this class assigns and remembers, with the
  buttons, so a press can be given back to the handlers as a CallbackQuery on that message.
- editMessageText / editMessageReplyMarkup: WhatsApp cannot edit a sent message. An edit that
  carries buttons (a multi-select's ticks, a question asked again) is sent as a new message.
  An edit without buttons (a question marked answered, "cancelled") is held and sent at the
  head of the next message to that chat in the same update, or alone when the update ends
  (`flush`): one message per step rather than two. Removing buttons alone sends nothing.
- answerCallbackQuery: an alert becomes a text message; otherwise nothing.
- sendPhoto / sendDocument: the file is uploaded (POST /{phone_number_id}/media) and sent as
  an image or document; buttons follow in their own message.
- getMe, setMyCommands, sendChatAction, setWebhook, deleteWebhook and anything else: answered
  locally (`true`).

Cloud API errors are answered to PTB as the Bot API would answer them, so the handlers' retry
policy (handlers/common.py call_api) applies: the throughput limit as 429 with a retry_after,
a person who cannot be reached (not on WhatsApp, window closed) as 403, other refusals as 400,
Meta's 5xx and dropped connections as network errors.

What is remembered lives in memory, bounded: after a restart a press on an old message still
works (the button's id is the action), only the message it was pressed on is rebuilt empty.
"""

from __future__ import annotations

import itertools
import json
import logging
import mimetypes
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
from telegram.error import NetworkError
from telegram.request import BaseRequest, RequestData

from handlers.local_api import api_call
from handlers.whatsapp.format import choice_style, to_whatsapp, whatsapp_message
from messages import Messages

log = logging.getLogger(__name__)

BOT_ID = 1
# PTB wants a token of the Bot API's shape; it is never sent anywhere.
BOT_TOKEN = f"{BOT_ID}:whatsapp"
BOT_USERNAME = "koperasi_whatsapp"
REMEMBERED = 20_000  # bot messages kept for presses and typed numbers
CAPTION_LIMIT = 1024
REQUEST_TIMEOUT = 15.0

# Cloud API error codes and what the Bot API would have said.
_THROTTLED = {4, 80007, 130429, 131056}
_UNREACHABLE = {131026, 131047, 131051, 131052}


@dataclass
class BotMessage:
    """A message the bot sent, as the handlers know it."""

    chat_id: int
    message_id: int
    text: str
    keyboard: list[list[dict[str, Any]]] = field(default_factory=list)
    wamids: list[str] = field(default_factory=list)
    # The actions a typed number picks (list and numbered text), in order; else empty.
    numbered: list[str] = field(default_factory=list)


def _choices(keyboard: list[list[dict[str, Any]]]) -> list[list[tuple[str, str]]]:
    """Inline keyboard -> rows of (label, action); URL buttons become plain labels."""
    rows: list[list[tuple[str, str]]] = []
    for row in keyboard:
        out = [
            (str(button.get("text", "")), str(button["callback_data"]))
            for button in row
            if button.get("callback_data")
        ]
        if out:
            rows.append(out)
    return rows


def _url_lines(keyboard: list[list[dict[str, Any]]]) -> str:
    return "\n".join(
        f"{button.get('text', '')}: {button['url']}"
        for row in keyboard
        for button in row
        if button.get("url")
    )


class CloudAPIError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"WhatsApp Cloud API {status} (code {code}): {message}")
        self.status = status
        self.code = code
        self.message = message


class WhatsAppBotAPI(BaseRequest):
    """Answers the handlers' Bot API calls with WhatsApp Cloud API calls."""

    def __init__(
        self,
        *,
        base_url: str,
        phone_number_id: str,
        access_token: str,
        messages: Messages | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.phone_number_id = phone_number_id
        self._token = access_token
        self.messages = messages or Messages()
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._message_ids = itertools.count(time.time_ns() // 1000)
        self._sent: OrderedDict[int, BotMessage] = OrderedDict()
        self._by_wamid: dict[str, int] = {}
        self._last: dict[int, int] = {}  # chat -> the bot's last message there
        self._held: dict[int, list[str]] = {}  # chat -> edit texts waiting for the next message

    # BaseRequest interface -------------------------------------------------------------------
    @property
    def read_timeout(self) -> float | None:
        return self._timeout

    async def initialize(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, headers={"Authorization": f"Bearer {self._token}"}
            )

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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
        handler = getattr(self, f"_api_{api_method}", None)
        try:
            result = await handler(params) if handler else True
        except CloudAPIError as exc:
            return self._error(exc)
        return 200, json.dumps({"ok": True, "result": result}).encode()

    @staticmethod
    def _error(exc: CloudAPIError) -> tuple[int, bytes]:
        body: dict[str, Any] = {"ok": False, "description": str(exc)}
        if exc.code in _THROTTLED or exc.status == 429:
            body["error_code"] = 429
            body["parameters"] = {"retry_after": 1}
            status = 429
        elif exc.code in _UNREACHABLE:
            status = 403
        elif exc.status >= 500:
            status = 502
        else:
            status = 400
        body["error_code"] = status
        log.warning("%s", exc)
        return status, json.dumps(body).encode()

    # Cloud API ---------------------------------------------------------------------------------
    def _client_or_new(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, headers={"Authorization": f"Bearer {self._token}"}
            )
        return self._client

    async def _post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.base_url}/{self.phone_number_id}/{path}"
        try:
            response = await self._client_or_new().post(url, **kwargs)
        except httpx.HTTPError as exc:
            raise NetworkError(f"WhatsApp Cloud API unreachable: {exc!r}") from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 300 or not isinstance(data, dict) or "error" in data:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            details = (error.get("error_data") or {}).get("details") or ""
            message = " ".join(p for p in (str(error.get("message", "")), str(details)) if p)
            raise CloudAPIError(response.status_code, int(error.get("code") or 0), message)
        return data

    async def send_bodies(self, bodies: list[dict[str, Any]]) -> list[str]:
        """POST each message body; the wamids, in order."""
        wamids: list[str] = []
        for body in bodies:
            data = await self._post("messages", json=body)
            wamids.extend(str(m["id"]) for m in data.get("messages", []))
        return wamids

    # Remembering -----------------------------------------------------------------------------
    def _remember(self, message: BotMessage) -> None:
        self._sent[message.message_id] = message
        self._sent.move_to_end(message.message_id)
        for wamid in message.wamids:
            self._by_wamid[wamid] = message.message_id
        self._last[message.chat_id] = message.message_id
        while len(self._sent) > REMEMBERED:
            _, old = self._sent.popitem(last=False)
            for wamid in old.wamids:
                self._by_wamid.pop(wamid, None)

    def message_json(self, message: BotMessage) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": int(time.time()),
            "chat": {"id": message.chat_id, "type": "private"},
            "from": self.bot_user(),
            "text": message.text,
        }
        if message.keyboard:
            data["reply_markup"] = {"inline_keyboard": message.keyboard}
        return data

    def message_for(self, chat_id: int, wamid: str | None) -> dict[str, Any]:
        """The Telegram message a press on WhatsApp message `wamid` was made on: as sent when
        remembered, else an empty stand-in (sent before a restart, or by the outbox)."""
        message_id = self._by_wamid.get(wamid or "")
        message = self._sent.get(message_id) if message_id is not None else None
        if message is None or message.chat_id != chat_id:
            message = BotMessage(chat_id=chat_id, message_id=next(self._message_ids), text="")
            if wamid:
                message.wamids.append(wamid)
            self._remember(message)
        return self.message_json(message)

    def typed_choice(self, chat_id: int, text: str) -> tuple[dict[str, Any], str] | None:
        """A typed number picking a choice of the bot's last message in the chat (a list or a
        numbered text): (that message, the action); None when the text is not such a pick."""
        text = text.strip().rstrip(".")
        if not (text.isascii() and text.isdigit()) or len(text) > 3:
            return None
        message = self._sent.get(self._last.get(chat_id, -1))
        if message is None or not message.numbered:
            return None
        number = int(text)
        if not 1 <= number <= len(message.numbered):
            return None
        return self.message_json(message), message.numbered[number - 1]

    # Sending -----------------------------------------------------------------------------------
    async def _show(
        self, chat_id: int, text: str, keyboard: list[list[dict[str, Any]]]
    ) -> BotMessage:
        held = self._held.pop(chat_id, [])
        choices = _choices(keyboard)
        urls = _url_lines(keyboard)
        shown = "\n\n".join(part for part in (*held, text, urls) if part)
        bodies = whatsapp_message(str(chat_id), shown, choices, messages=self.messages)
        wamids = await self.send_bodies(bodies)
        flat = [action for row in choices for _, action in row]
        style = choice_style([(label, action) for row in choices for label, action in row])
        message = BotMessage(
            chat_id=chat_id,
            message_id=next(self._message_ids),
            text=text,
            keyboard=keyboard,
            wamids=wamids,
            numbered=flat if style in ("list", "numbered") else [],
        )
        self._remember(message)
        return message

    async def flush(self, chat_id: int | None = None) -> None:
        """Send what edits held back (all chats when `chat_id` is None): the end of an update."""
        chats = list(self._held) if chat_id is None else [chat_id]
        for chat in chats:
            if self._held.get(chat):
                await self._show(chat, "", [])

    def bot_user(self) -> dict[str, Any]:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Koperasi Merah Putih",
            "username": BOT_USERNAME,
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _api_getMe(self, _params: dict[str, Any]) -> dict[str, Any]:
        return self.bot_user()

    async def _api_getUpdates(self, _params: dict[str, Any]) -> list[Any]:
        return []

    async def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        keyboard = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        message = await self._show(int(params["chat_id"]), str(params.get("text", "")), keyboard)
        return self.message_json(message)

    def _edited(self, params: dict[str, Any]) -> BotMessage:
        chat_id, message_id = int(params.get("chat_id", 0)), int(params.get("message_id", 0))
        message = self._sent.get(message_id)
        if message is None or message.chat_id != chat_id:
            message = BotMessage(chat_id=chat_id, message_id=message_id, text="")
        return message

    async def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        old = self._edited(params)
        text = str(params.get("text", ""))
        keyboard = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        if _choices(keyboard) or _url_lines(keyboard):
            new = await self._show(old.chat_id, text, keyboard)
            # The handlers go on knowing it by the id they edited.
            self._sent.pop(new.message_id, None)
            new.wamids = [*old.wamids, *new.wamids]
            new.message_id = old.message_id
            self._remember(new)
            return self.message_json(new)
        if text.strip():
            self._held.setdefault(old.chat_id, []).append(text)
        old.text, old.keyboard, old.numbered = text, [], []
        return self.message_json(old)

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        old = self._edited(params)
        keyboard = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        if _choices(keyboard):
            return await self._api_editMessageText(
                {**params, "text": old.text, "reply_markup": {"inline_keyboard": keyboard}}
            )
        old.keyboard, old.numbered = [], []
        return self.message_json(old)

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        # The webhook names a press's chat in the query id: "<chat id>:<wamid>".
        text = str(params.get("text") or "")
        chat, _, _ = str(params.get("callback_query_id", "")).partition(":")
        if text and params.get("show_alert") and chat.isdigit():
            await self._show(int(chat), text, [])
        return True

    async def _send_file(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        keyboard = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        caption = str(params.get("caption") or "")
        files: dict[str, tuple[str, bytes]] = params.get("_files") or {}
        key = "photo" if kind == "image" else "document"
        if files:
            name, content = next(iter(files.values()))
            mime = mimetypes.guess_type(name)[0] or (
                "image/png" if kind == "image" else "application/octet-stream"
            )
            uploaded = await self._post(
                "media",
                data={"messaging_product": "whatsapp", "type": mime},
                files={"file": (name, content, mime)},
            )
            media: dict[str, Any] = {"id": str(uploaded["id"])}
            if kind == "document":
                media["filename"] = name
        else:
            media = {"id": str(params.get(key, ""))}
        held = self._held.pop(chat_id, [])
        if held:
            await self.send_bodies(
                whatsapp_message(str(chat_id), "\n\n".join(held), None, messages=self.messages)
            )
        with_buttons = bool(_choices(keyboard))
        if caption and not with_buttons:
            media["caption"] = to_whatsapp(caption)[:CAPTION_LIMIT]
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": str(chat_id),
            "type": kind,
            kind: media,
        }
        wamids = await self.send_bodies([body])
        if with_buttons:
            message = await self._show(chat_id, caption, keyboard)
            message.wamids = [*wamids, *message.wamids]
            self._remember(message)
        else:
            message = BotMessage(
                chat_id=chat_id, message_id=next(self._message_ids), text=caption, wamids=wamids
            )
            self._remember(message)
        data = self.message_json(message)
        data.pop("text", None)
        data["caption"] = caption
        unique = media["id"]
        if kind == "image":
            data["photo"] = [
                {"file_id": unique, "file_unique_id": unique, "width": 800, "height": 600}
            ]
        else:
            data["document"] = {"file_id": unique, "file_unique_id": unique}
        return data

    async def _api_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_file(params, "image")

    async def _api_sendDocument(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_file(params, "document")
