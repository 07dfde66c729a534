"""The WhatsApp webhook: Meta's notifications in, as Updates for the same handlers.

Served with tornado on WHATSAPP_LISTEN, path /whatsapp, behind the TLS proxy (like
handlers/webhook.py for Telegram):

- GET is Meta's verification when the webhook URL is saved: hub.mode=subscribe and
  hub.verify_token equal to WHATSAPP_VERIFY_TOKEN (compared in constant time) -> hub.challenge;
  anything else -> 403.
- POST carries notifications, signed: X-Hub-Signature-256 = sha256=<hex HMAC-SHA256 of the raw
  body with WHATSAPP_APP_SECRET>, compared in constant time. Unsigned or wrongly signed -> 403,
  and nothing in it is looked at.
- Each message of a notification: its id is inserted into inbound_message first (insert-ignore:
  an id already there is a notification Meta delivered again, skipped), the message becomes a
  Telegram Update the WhatsApp Application processes, and the sender's `last_seen_at` moves on
  (their 24-hour window opened). The Update: text as a message ("DAFTAR ABC123" as "/start
  ABC123", a command word alone such as LAPOR or BATAL as its command, a number picking a
  choice of the bot's last list or numbered text as that button's press), a reply button or
  list row as a CallbackQuery with the row's id as data, an image as a photo, a document as a
  document, anything else as an empty message the fallback answers politely.
- Each status (sent, delivered, read, failed) goes to bot.outbox.record_status, so the outbox row
  shows "dibaca" where WhatsApp reports it.
- 200 once everything in the notification was handled; a database failure before a message was
  recorded answers 500, and Meta delivers the notification again.

A message id is recorded before the message is handled: a process dying in between loses that
message (the person writes again) rather than handling it twice when Meta retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import re
import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import tornado.httpserver
import tornado.web
from sqlalchemy import update
from telegram import Update
from telegram.ext import Application

from bot.core import Core
from handlers.common import settle
from handlers.webhook import BareHandler, quiet_log
from storage.models import ChatIdentity, InboundMessage
from storage.upsert import insert_ignoring_conflicts

log = logging.getLogger(__name__)

CHANNEL = "whatsapp"
PATH = "/whatsapp"
SIGNATURE_HEADER = "X-Hub-Signature-256"
MAX_BODY_BYTES = 1024 * 1024
STOP_GRACE_SECONDS = 30.0
# "DAFTAR ABC123" (any case, any spacing) links with an invite code: /start ABC123.
_DAFTAR = re.compile(r"^\s*daftar\b[\s:]*(.*)$", re.IGNORECASE | re.DOTALL)
_COMMAND_WORD = re.compile(r"^/?([a-zA-Z]+)[.!]?$")
# Inbound message types the handlers cannot use, and which need no answer.
_SILENT = {"reaction", "system", "request_welcome", "ephemeral"}

App = Application[Any, Any, Any, Any, Any, Any]


def signature_ok(body: bytes, given: str, secret: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given.encode(), expected.encode())


class Receiver:
    """Turns notifications into Updates for the WhatsApp Application, one at a time."""

    def __init__(self, app: App, core: Core) -> None:
        from handlers.whatsapp.bridge import WhatsAppBotAPI

        self.app = app
        self.core = core
        request = app.bot.request
        self.bridge = request if isinstance(request, WhatsAppBotAPI) else None
        self._update_ids = itertools.count(1)
        self._last_message_id = 0
        self._turn = asyncio.Lock()
        self._commands: set[str] | None = None

    def next_message_id(self) -> int:
        """The id of an incoming message: the arrival time in microseconds (growing by one at
        least). The report form ignores a message whose id is not above the last one it took
        (Telegram's ids grow per chat), so the ids must grow across restarts and across the
        processes behind one address too, which a count from process start would not."""
        self._last_message_id = max(time.time_ns() // 1000, self._last_message_id + 1)
        return self._last_message_id

    # -- what a person typed --------------------------------------------------------------------
    def commands(self) -> set[str]:
        """Command words a person may type without the slash (both languages' menus)."""
        if self._commands is None:
            words = {"help", "start"}
            for language in ("id", "en"):
                for template in ("commands", "commands_officer"):
                    text = self.core.messages.render(template, language=language)
                    words |= {line.split()[0] for line in text.splitlines() if line.strip()}
            self._commands = words
        return self._commands

    def as_command(self, text: str) -> str | None:
        """The command a typed text stands for, or None when it is an ordinary text."""
        daftar = _DAFTAR.match(text)
        if daftar:
            code = "".join(daftar.group(1).split())
            return f"/start {code}" if code else "/start"
        word = _COMMAND_WORD.match(text.strip())
        if word and word.group(1).lower() in self.commands():
            return "/" + word.group(1).lower()
        return None

    # -- notifications ------------------------------------------------------------------------
    async def handle(self, data: dict[str, Any]) -> None:
        if data.get("object") != "whatsapp_business_account":
            return
        for entry in data.get("entry") or []:
            for change in entry.get("changes") or []:
                if change.get("field") != "messages":
                    continue
                value = change.get("value") or {}
                names = {
                    str(c.get("wa_id")): str((c.get("profile") or {}).get("name") or "")
                    for c in value.get("contacts") or []
                }
                for message in value.get("messages") or []:
                    await self.message(message, names)
                for status in value.get("statuses") or []:
                    await self.status(status)

    async def first_time(self, message_id: str) -> bool:
        """Record the message id; False when it was recorded before (a repeated delivery)."""
        now = self.core.clock.now()
        async with self.core.db.transaction() as session:
            new = await insert_ignoring_conflicts(
                session,
                InboundMessage,
                [{"channel": CHANNEL, "external_id": message_id[:128], "received_at": now}],
                ("channel", "external_id"),
            )
        return bool(new)

    async def seen(self, wa_id: str) -> None:
        """The person wrote: their 24-hour window opens now. After the handling, so the
        identity a "DAFTAR" just created counts too."""
        async with self.core.db.transaction() as session:
            await session.execute(
                update(ChatIdentity)
                .where(ChatIdentity.channel == CHANNEL, ChatIdentity.external_id == wa_id)
                .values(last_seen_at=self.core.clock.now())
                .execution_options(synchronize_session=False)
            )

    async def message(self, message: dict[str, Any], names: dict[str, str]) -> None:
        wa_id = str(message.get("from") or "")
        message_id = str(message.get("id") or "")
        if not (wa_id.isascii() and wa_id.isdigit()) or len(wa_id) > 18 or not message_id:
            log.warning("WhatsApp message without a sender or id: skipped")
            return
        if not await self.first_time(message_id):
            log.info("WhatsApp message %s delivered again: skipped", message_id)
            return
        if message.get("type") not in _SILENT:
            try:
                data = self.update_json(message, names.get(wa_id) or wa_id)
                converted = Update.de_json(data, self.app.bot)
            except (TypeError, ValueError, KeyError) as exc:
                log.warning("WhatsApp message %s not understood (%s): skipped", message_id, exc)
                return
            async with self._turn:
                await self.app.process_update(converted)
                # A slow command's answer (in a task of its own) must be whole before the
                # edits held back for this person are sent after it.
                await settle(self.app, converted)
                if self.bridge is not None:
                    try:
                        await self.bridge.flush(int(wa_id))
                    except Exception:
                        # Only a receipt of an answer is lost; the answer itself is stored.
                        log.warning("WhatsApp: a held message to %s not sent", wa_id, exc_info=True)
        await self.seen(wa_id)
        # The window is open again: what reached them only as a template follows in full.
        from bot import outbox

        await outbox.resend_held(self.core, CHANNEL, wa_id, self.core.clock.now())

    async def status(self, status: dict[str, Any]) -> None:
        from bot import outbox

        wamid = str(status.get("id") or "")
        state = str(status.get("status") or "")
        if not wamid or not state:
            return
        try:
            at = datetime.fromtimestamp(int(status.get("timestamp") or 0), UTC)
        except (TypeError, ValueError, OverflowError):
            at = self.core.clock.now()
        errors = status.get("errors") or []
        error = None
        unreachable = False
        if errors:
            first = errors[0]
            details = (first.get("error_data") or {}).get("details") or first.get("message") or ""
            error = f"{first.get('code', '')} {first.get('title', '')}: {details}".strip()
            unreachable = first.get("code") == 131026
        await outbox.record_status(
            self.core, CHANNEL, wamid, state, at, error, unreachable=unreachable
        )

    # -- Updates --------------------------------------------------------------------------------
    def update_json(self, message: dict[str, Any], name: str) -> dict[str, Any]:
        """The Telegram Update a WhatsApp message stands for."""
        wa_id = int(message["from"])
        user = {"id": wa_id, "is_bot": False, "first_name": name[:64], "language_code": "id"}
        chat = {"id": wa_id, "type": "private", "first_name": name[:64]}
        try:
            date = int(message.get("timestamp") or 0) or int(time.time())
        except ValueError:
            date = int(time.time())
        base: dict[str, Any] = {
            "message_id": self.next_message_id(),
            "date": date,
            "chat": chat,
            "from": user,
        }
        kind = message.get("type")
        update_id = next(self._update_ids)
        press = self._press(message)
        if press is not None:
            data, context_id = press
            return self._callback(update_id, message, user, data, context_id)
        if kind == "text":
            text = str((message.get("text") or {}).get("body") or "")
            command = self.as_command(text)
            if command is None and self.bridge is not None:
                choice = self.bridge.typed_choice(wa_id, text)
                if choice is not None:
                    bot_message, action = choice
                    return {
                        "update_id": update_id,
                        "callback_query": {
                            "id": f"{wa_id}:{message['id']}",
                            "from": user,
                            "chat_instance": str(wa_id),
                            "data": action,
                            "message": bot_message,
                        },
                    }
            if command is not None:
                base["text"] = command
                length = len(command.split()[0])
                base["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
            elif text.startswith("/"):
                base["text"] = text
                length = len(text.split()[0]) if text.split() else 1
                base["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
            else:
                base["text"] = text
        elif kind == "image":
            image = message.get("image") or {}
            media = str(image.get("id") or "")
            base["photo"] = [{"file_id": media, "file_unique_id": media, "width": 0, "height": 0}]
            if image.get("caption"):
                base["caption"] = str(image["caption"])
        elif kind == "document":
            document = message.get("document") or {}
            media = str(document.get("id") or "")
            base["document"] = {
                "file_id": media,
                "file_unique_id": media,
                "file_name": str(document.get("filename") or ""),
                "mime_type": str(document.get("mime_type") or ""),
            }
        elif kind == "location":
            location = message.get("location") or {}
            base["location"] = {
                "latitude": float(location.get("latitude") or 0),
                "longitude": float(location.get("longitude") or 0),
            }
        # Anything else (stickers, voice notes, contacts…): a message with nothing the
        # features take, which the fallback answers politely.
        return {"update_id": update_id, "message": base}

    def _press(self, message: dict[str, Any]) -> tuple[str, str | None] | None:
        """(action, the wamid pressed on) of a reply button, list row or template button."""
        context_id = (message.get("context") or {}).get("id")
        if message.get("type") == "interactive":
            interactive = message.get("interactive") or {}
            reply = interactive.get("button_reply") or interactive.get("list_reply") or {}
            if reply.get("id"):
                return str(reply["id"]), context_id
        if message.get("type") == "button":
            payload = (message.get("button") or {}).get("payload")
            if payload:
                return str(payload), context_id
        return None

    def _callback(
        self,
        update_id: int,
        message: dict[str, Any],
        user: dict[str, Any],
        data: str,
        context_id: str | None,
    ) -> dict[str, Any]:
        wa_id = int(message["from"])
        if self.bridge is not None:
            pressed = self.bridge.message_for(wa_id, context_id)
        else:
            pressed = {
                "message_id": self.next_message_id(),
                "date": int(time.time()),
                "chat": {"id": wa_id, "type": "private"},
                "text": "",
            }
        return {
            "update_id": update_id,
            "callback_query": {
                # The bridge reads the chat from the query id (answerCallbackQuery names none).
                "id": f"{wa_id}:{message.get('id', '')}",
                "from": user,
                "chat_instance": str(wa_id),
                "data": data[:256],
                "message": pressed,
            },
        }


class WhatsAppWebhookHandler(BareHandler):
    SUPPORTED_METHODS = ("GET", "POST")

    def initialize(
        self, receiver: Receiver, app_secret: bytes, verify_token: bytes, server: WhatsAppServer
    ) -> None:
        self.receiver = receiver
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.server = server

    def get(self) -> None:
        mode = self.get_query_argument("hub.mode", "")
        token = self.get_query_argument("hub.verify_token", "").encode()
        challenge = self.get_query_argument("hub.challenge", "")
        if mode != "subscribe" or not hmac.compare_digest(token, self.verify_token):
            log.warning("WhatsApp verification from %s: refused", self.request.remote_ip)
            self.send_error(HTTPStatus.FORBIDDEN)
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(challenge)

    async def post(self) -> None:
        given = self.request.headers.get(SIGNATURE_HEADER, "")
        if not signature_ok(self.request.body, given, self.app_secret):
            log.warning(
                "WhatsApp notification from %s %s: refused",
                self.request.remote_ip,
                "with a wrong signature" if given else "without a signature",
            )
            self.send_error(HTTPStatus.FORBIDDEN)
            return
        data = self.json_object("WhatsApp notification")
        if data is None:
            return
        try:
            await self.server.handle(data)
        except Exception:
            # Not recorded, or the status not stored: Meta delivers the notification again.
            log.exception("WhatsApp notification not handled")
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        self.set_status(HTTPStatus.OK)


class WhatsAppServer:
    """The HTTP server on WHATSAPP_LISTEN answering on /whatsapp."""

    def __init__(self, app: App, core: Core) -> None:
        settings = core.settings
        assert settings.whatsapp_app_secret is not None
        assert settings.whatsapp_verify_token is not None
        self.receiver = Receiver(app, core)
        web = tornado.web.Application(
            [
                (
                    re.escape(PATH) + "/?",
                    WhatsAppWebhookHandler,
                    {
                        "receiver": self.receiver,
                        "app_secret": settings.whatsapp_app_secret.get_secret_value().encode(),
                        "verify_token": settings.whatsapp_verify_token.get_secret_value().encode(),
                        "server": self,
                    },
                )
            ],
            log_function=quiet_log,
        )
        self._http = tornado.httpserver.HTTPServer(web, max_body_size=MAX_BODY_BYTES)
        self._handling = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def listen(self, host: str, port: int) -> None:
        self._http.listen(port, address=host)

    async def handle(self, data: dict[str, Any]) -> None:
        self._handling += 1
        self._idle.clear()
        try:
            await self.receiver.handle(data)
        finally:
            self._handling -= 1
            if not self._handling:
                self._idle.set()

    async def stop(self) -> None:
        self._http.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), STOP_GRACE_SECONDS)
        await self._http.close_all_connections()
