"""A fake Telegram Bot API on 127.0.0.1 for tests that talk HTTP: records and scripted faults.

    with FakeBotAPI() as api:
        bot = telegram.Bot(api.token, base_url=f"{api.base_url}/bot")
        api.fail(chat_id=42, kind="retry_after", retry_after=1)
        ...
        assert [call.text for call in api.sent] == [...]

Every call is recorded (`calls`, `attempts` for sendMessage) with its arrival time on
`time.monotonic()`, so tests can measure pacing. Faults are scripted per chat or per number of
the sendMessage call (1-based) and are used up in the order they were added. They apply to
sendMessage unless `method` names another method (or None: any method), and with `params` only
to calls with those parameters (e.g. getUpdates with {"offset": 7}). Kinds:

    retry_after   429 with parameters.retry_after = `retry_after`
    blocked       403 Forbidden: bot was blocked by the user
    deactivated   403 Forbidden: user is deactivated
    chat_not_found 400 Bad Request: chat not found
    bad_request   400 Bad Request: `description` (default: can't parse entities)
    migrate       400 with parameters.migrate_to_chat_id = `migrate_to`
    server_error  500 Internal Server Error
    bad_gateway   502 Bad Gateway
    timeout       no answer for `delay` seconds, then the connection is closed; not delivered
    dropped       the connection is closed at once, without an answer; not delivered
    slow          delivered, but answered only after `delay` seconds (a client that gave up
                  has sent a message it thinks failed)

`chaos(rate)` adds random faults on top: every call of any method (getUpdates included) fails
with probability `rate`, as one of server_error, bad_gateway, dropped or a 1 s retry_after, never
more than `max_streak` times in a row for the same method and chat. A chaos fault is never
delivered, so a bot that retries delivers each message once.

Enough of the Bot API to run the real bot over HTTP, in polling and in webhook mode:

- getMe; setMyCommands (kept in `commands`); getWebhookInfo; anything else answers `true`.
- sendMessage, sendPhoto, sendDocument (multipart uploads: `params["_files"]` holds
  {field: (file name, bytes)}), editMessageText, editMessageReplyMarkup: the chat's messages are
  kept as Telegram shows them after edits (`messages`, `chat_messages`), so a test can press the
  buttons the bot last showed. Editing a message that does not exist, or to exactly what it
  already shows, gets Telegram's 400.
- answerCallbackQuery is recorded (`answers`).
- Updates come from `push_update` (or a `FakeUser`'s `send`/`press`). getUpdates long-polls:
  with `timeout` it waits until an update is pushed or the timeout passes (without one it waits
  `poll_wait`). An update is confirmed, and never given again, once getUpdates is called with a
  higher `offset`, as Telegram does; until then a restarted bot gets it again.
- setWebhook records the URL, the secret token and the allowed updates (`webhook`); from then on
  getUpdates answers 409, and pushed updates are POSTed to the URL, in order, one at a time,
  with the secret in X-Telegram-Bot-Api-Secret-Token; an answer other than 2xx is retried after
  `webhook_retry` seconds. Every attempt is in `deliveries`. Like Telegram, setWebhook takes
  https URLs only: `forward_webhooks(origin)` makes the fake stand in for the reverse proxy
  that ends TLS in front of the bot, sending the URL's path to `origin` (http://127.0.0.1:port).
  Given several origins it is a load balancer in front of several bot processes: the attempts
  take turns (round robin), and an attempt that got no 2xx is retried on the next origin.
  `delivering` is the (update id, origin) of the POST under way, if any.
  deleteWebhook goes back to getUpdates (with drop_pending_updates, forgets what is pending).
"""

from __future__ import annotations

import email.parser
import email.policy
import http.client
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from tests.fake_server import FakeServer

TOKEN = "123456:TESTTOKEN"
BOT_ID = 123456
BOT_USERNAME = "kmp_test_bot"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# What Telegram accepts as setWebhook's secret_token.
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")

FAULT_KINDS = frozenset(
    {
        "retry_after",
        "blocked",
        "deactivated",
        "chat_not_found",
        "bad_request",
        "migrate",
        "server_error",
        "bad_gateway",
        "timeout",
        "dropped",
        "slow",
    }
)
# Methods whose answer is a new message in the chat, and what its content is called.
SENDS = {"sendMessage": "text", "sendPhoto": "photo", "sendDocument": "document"}


@dataclass
class Call:
    """One request as it arrived; `answer` is "ok" or the fault kind it got."""

    method: str
    params: dict[str, Any]
    at: float
    number: int = 0  # the how-manieth sendMessage (1-based); 0 for other methods
    answer: str = "ok"
    message_id: int | None = None
    chaos: bool = False  # failed by `chaos`, not by a scripted fault

    @property
    def chat_id(self) -> str | None:
        chat = self.params.get("chat_id")
        return None if chat is None else str(chat)

    @property
    def text(self) -> str:
        return str(self.params.get("text", self.params.get("caption", "")))

    @property
    def delivered(self) -> bool:
        return self.answer in ("ok", "slow")

    @property
    def buttons(self) -> list[list[dict[str, Any]]]:
        markup = self.params.get("reply_markup")
        if isinstance(markup, dict):
            return list(markup.get("inline_keyboard") or [])
        return []


@dataclass
class Fault:
    kind: str
    chat_id: str | None = None
    call: int | None = None
    times: int | None = 1  # None: every matching call
    retry_after: int = 1
    migrate_to: int | None = None
    delay: float = 1.0
    description: str | None = None
    method: str | None = "sendMessage"  # None: any method
    params: dict[str, Any] | None = None  # only calls with these parameters
    used: int = field(default=0)

    def matches(
        self,
        chat_id: str | None,
        number: int,
        method: str = "sendMessage",
        params: dict[str, Any] | None = None,
    ) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.params is not None and any(
            (params or {}).get(name) != value for name, value in self.params.items()
        ):
            return False
        if self.chat_id is not None and self.chat_id != chat_id:
            return False
        return self.call is None or self.call == number


@dataclass
class Webhook:
    """What setWebhook registered."""

    url: str
    secret_token: str | None
    allowed_updates: list[str] | None
    at: float


@dataclass
class Delivery:
    """One POST of an update to the webhook: `status` 0 when no HTTP answer came."""

    update_id: int
    url: str
    status: int
    at: float
    error: str = ""
    origin: str = ""  # where it was POSTed (forward_webhooks), else the URL's own host


class FakeBotAPI(FakeServer):
    """The server; `base_url` is http://127.0.0.1:<port> (give PTB f"{base_url}/bot")."""

    def __init__(
        self, token: str = TOKEN, *, poll_wait: float = 0.2, webhook_retry: float = 0.2
    ) -> None:
        super().__init__(_Handler)
        self.token = token
        self.poll_wait = poll_wait
        self.webhook_retry = webhook_retry
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.updates: list[dict[str, Any]] = []
        self.messages: dict[tuple[str, int], dict[str, Any]] = {}
        self.commands: list[dict[str, Any]] = []
        self.webhook: Webhook | None = None
        self.webhooks: list[Webhook] = []  # every setWebhook, in order
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._message_ids = itertools.count(1001)
        self._update_ids = itertools.count(1)
        self._send_numbers = itertools.count(1)
        self._confirmed = 0  # updates below this id were confirmed (or delivered by webhook)
        self._forward: str | None = None
        self._origins: list[str] = []  # forward_webhooks with several origins: round robin
        self._turns = itertools.count()
        self.delivering: tuple[int, str] | None = None
        self._poll_allowed: list[str] | None = None  # the last getUpdates' allowed_updates
        self._closing = False
        self._delivery: threading.Thread | None = None
        self._chaos_rate = 0.0
        self._chaos_random = random.Random(0)
        self._chaos_kinds: tuple[str, ...] = ()
        self._chaos_streak: dict[tuple[str, str | None], int] = {}
        self._chaos_max_streak = 2

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        super().start()
        self._delivery = threading.Thread(target=self._deliver_webhooks, daemon=True)
        self._delivery.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._stop_serving()
        if self._delivery is not None:
            self._delivery.join(timeout=15)
            self._delivery = None
        self.server_close()

    # -- scripting ----------------------------------------------------------------------------

    def fail(
        self,
        *,
        kind: str,
        chat_id: int | str | None = None,
        call: int | None = None,
        times: int | None = 1,
        retry_after: int = 1,
        migrate_to: int | None = None,
        delay: float = 1.0,
        description: str | None = None,
        method: str | None = "sendMessage",
        params: dict[str, Any] | None = None,
    ) -> Fault:
        """Answer the matching calls of `method` with a fault, `times` times (None: always)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        if kind == "migrate" and migrate_to is None:
            raise ValueError("a migrate fault needs migrate_to")
        fault = Fault(
            kind=kind,
            chat_id=None if chat_id is None else str(chat_id),
            call=call,
            times=times,
            retry_after=retry_after,
            migrate_to=migrate_to,
            delay=delay,
            description=description,
            method=method,
            params=params,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def chaos(
        self,
        rate: float,
        *,
        seed: int = 20261128,
        kinds: tuple[str, ...] = ("server_error", "bad_gateway", "dropped", "retry_after"),
        max_streak: int = 2,
    ) -> None:
        """Fail each call at random with probability `rate` (0 turns it off); see the module
        docstring."""
        with self._lock:
            self._chaos_rate = rate
            self._chaos_random = random.Random(seed)
            self._chaos_kinds = kinds
            self._chaos_max_streak = max_streak
            self._chaos_streak.clear()

    @property
    def chaos_faults(self) -> list[Call]:
        """The calls chaos failed."""
        return [call for call in self.calls if call.chaos]

    def _chaos_fault(self, call: Call) -> Fault | None:
        """Under the lock: a random fault for this call, or None."""
        if not self._chaos_rate:
            return None
        key = (call.method, call.chat_id)
        streak = self._chaos_streak.get(key, 0)
        if streak >= self._chaos_max_streak or self._chaos_random.random() >= self._chaos_rate:
            self._chaos_streak[key] = 0
            return None
        self._chaos_streak[key] = streak + 1
        call.chaos = True
        return Fault(kind=self._chaos_random.choice(self._chaos_kinds), method=None, used=1)

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates or the webhook; `update_id` is filled in when missing."""
        with self._changed:
            update = {"update_id": next(self._update_ids), **update}
            self.updates.append(update)
            self._changed.notify_all()
        return update

    def forward_webhooks(self, origin: str, *more: str) -> None:
        """Deliver webhooks to `origin` (e.g. http://127.0.0.1:8443) instead of the URL's host,
        as the reverse proxy that ends TLS in front of the bot does; with `more` origins, to
        each in turn, as a load balancer in front of several processes does."""
        with self._changed:
            self._forward = origin.rstrip("/")
            self._origins = [o.rstrip("/") for o in (origin, *more)]
            self._changed.notify_all()

    def user(self, user_id: int, first_name: str, last_name: str | None = None) -> FakeUser:
        return FakeUser(self, user_id, first_name, last_name)

    # -- what happened ------------------------------------------------------------------------

    @property
    def attempts(self) -> list[Call]:
        """Every sendMessage call, in order of arrival, whatever it was answered."""
        return self.calls_of("sendMessage")

    @property
    def sent(self) -> list[Call]:
        """The sendMessage calls that delivered a message."""
        return [call for call in self.attempts if call.delivered]

    def sent_to(self, chat_id: int | str) -> list[str]:
        return [call.text for call in self.sent if call.chat_id == str(chat_id)]

    def methods(self) -> list[str]:
        with self._lock:
            return [call.method for call in self.calls]

    def calls_of(self, *methods: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method in methods]

    @property
    def answers(self) -> list[Call]:
        """answerCallbackQuery calls."""
        return self.calls_of("answerCallbackQuery")

    def chat_messages(self, chat_id: int | str) -> list[dict[str, Any]]:
        """The bot's messages in a chat as they look now (after edits), oldest first."""
        with self._lock:
            return [m for (chat, _), m in sorted(self.messages.items()) if chat == str(chat_id)]

    def last_with_buttons(self, chat_id: int | str) -> dict[str, Any] | None:
        found = [m for m in self.chat_messages(chat_id) if _buttons(m)]
        return found[-1] if found else None

    def confirmed_below(self) -> int:
        """Updates with a lower id were confirmed by getUpdates' offset or webhook delivery."""
        with self._lock:
            return self._confirmed

    # -- answering ----------------------------------------------------------------------------

    def _record(self, method: str, params: dict[str, Any]) -> tuple[Call, Fault | None]:
        with self._lock:
            call = Call(method=method, params=params, at=time.monotonic())
            if method == "sendMessage":
                call.number = next(self._send_numbers)
            fault = next(
                (f for f in self.faults if f.matches(call.chat_id, call.number, method, params)),
                None,
            )
            if fault is not None:
                fault.used += 1
            else:
                fault = self._chaos_fault(call)
            if fault is not None:
                call.answer = fault.kind
            if method in SENDS and call.delivered:
                call.message_id = next(self._message_ids)
            self.calls.append(call)
        return call, fault

    def _pending_updates(self, offset: int) -> list[dict[str, Any]]:
        """Under the lock: what getUpdates with this offset gives (confirming what is below)."""
        if offset > self._confirmed:
            self._confirmed = offset
        return [
            u
            for u in self.updates
            if u["update_id"] >= self._confirmed and self._allowed(u, self.webhook)
        ]

    def _allowed(self, update: dict[str, Any], webhook: Webhook | None) -> bool:
        allowed = webhook.allowed_updates if webhook else self._poll_allowed
        return not allowed or any(kind in update for kind in allowed)

    def _get_updates(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        wait = float(params.get("timeout") or 0) or self.poll_wait
        limit = int(params.get("limit") or 100)
        allowed = params.get("allowed_updates")
        deadline = time.monotonic() + wait
        with self._changed:
            if self.webhook is not None:
                return _error(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            if isinstance(allowed, list):
                self._poll_allowed = [str(kind) for kind in allowed] or None
            while True:
                updates = self._pending_updates(offset)
                left = deadline - time.monotonic()
                if updates or left <= 0 or self._closing or self.webhook is not None:
                    return 200, {"ok": True, "result": updates[:limit]}
                self._changed.wait(left)

    def _send_message(self, method: str, params: dict[str, Any], call: Call) -> dict[str, Any]:
        message = _message(call, SENDS[method])
        with self._lock:
            self.messages[(str(params.get("chat_id")), int(call.message_id or 0))] = message
        return message

    def _edit(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = (str(params.get("chat_id")), int(params.get("message_id") or 0))
        with self._lock:
            message = self.messages.get(key)
            if message is None:
                return _error(400, "Bad Request: message to edit not found")
            edited = dict(message)
            if method == "editMessageText":
                edited["text"] = str(params.get("text", ""))
            markup = params.get("reply_markup")
            if isinstance(markup, dict) and markup.get("inline_keyboard"):
                edited["reply_markup"] = markup
            else:
                edited.pop("reply_markup", None)
            if edited == message:
                return _error(
                    400,
                    "Bad Request: message is not modified: specified new message content and "
                    "reply markup are exactly the same as a current content and reply markup "
                    "of the message",
                )
            edited["edit_date"] = int(time.time())
            self.messages[key] = edited
            return 200, {"ok": True, "result": edited}

    def _set_webhook(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        allowed = params.get("allowed_updates")
        kinds = [str(kind) for kind in allowed] if isinstance(allowed, list) else None
        if url and not url.startswith("https://"):
            return _error(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        if secret is not None and not SECRET_PATTERN.fullmatch(str(secret)):
            return _error(400, "Bad Request: secret token contains unallowed characters")
        with self._changed:
            if not url:
                self.webhook = None
            else:
                self.webhook = Webhook(
                    url=url,
                    secret_token=None if secret is None else str(secret),
                    allowed_updates=kinds or None,
                    at=time.monotonic(),
                )
                self.webhooks.append(self.webhook)
            if params.get("drop_pending_updates"):
                self._drop_pending()
            self._changed.notify_all()
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    def _delete_webhook(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._changed:
            self.webhook = None
            if params.get("drop_pending_updates"):
                self._drop_pending()
            self._changed.notify_all()
        return 200, {"ok": True, "result": True, "description": "Webhook was deleted"}

    def _drop_pending(self) -> None:
        if self.updates:
            self._confirmed = max(self._confirmed, self.updates[-1]["update_id"] + 1)

    def _webhook_info(self) -> dict[str, Any]:
        with self._lock:
            webhook = self.webhook
            pending = len([u for u in self.updates if u["update_id"] >= self._confirmed])
        info: dict[str, Any] = {
            "url": webhook.url if webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": pending,
        }
        if webhook and webhook.allowed_updates:
            info["allowed_updates"] = webhook.allowed_updates
        return info

    # -- webhook delivery ---------------------------------------------------------------------

    def _next_delivery(self) -> tuple[Webhook, dict[str, Any]] | None:
        """Wait for an update to POST while a webhook is set; None when closing."""
        with self._changed:
            while not self._closing:
                webhook = self.webhook
                if webhook is not None:
                    pending = [
                        u
                        for u in self.updates
                        if u["update_id"] >= self._confirmed and self._allowed(u, webhook)
                    ]
                    if pending:
                        return webhook, pending[0]
                    # Updates the webhook does not take are confirmed without a POST.
                    if self.updates and self.updates[-1]["update_id"] >= self._confirmed:
                        self._confirmed = self.updates[-1]["update_id"] + 1
                self._changed.wait(0.5)
        return None

    def _deliver_webhooks(self) -> None:
        while (found := self._next_delivery()) is not None:
            webhook, update = found
            with self._changed:
                origin = self._forward
                if len(self._origins) > 1:
                    origin = self._origins[next(self._turns) % len(self._origins)]
                self.delivering = (update["update_id"], origin or "")
            status, error = self._post(webhook, update, origin)
            with self._changed:
                self.delivering = None
                self.deliveries.append(
                    Delivery(
                        update["update_id"],
                        webhook.url,
                        status,
                        time.monotonic(),
                        error,
                        origin or "",
                    )
                )
                if 200 <= status < 300 and self.webhook is webhook:
                    self._confirmed = max(self._confirmed, update["update_id"] + 1)
                    self._changed.notify_all()
                    continue
                # Telegram tries again later; so do we, unless we are closing.
                self._changed.wait(self.webhook_retry)

    def _post(
        self, webhook: Webhook, update: dict[str, Any], origin: str | None = None
    ) -> tuple[int, str]:
        target = urlsplit(webhook.url)
        if origin is not None:
            target = urlsplit(origin + (target.path or "/"))
        path = target.path or "/"
        if target.query:
            path += f"?{target.query}"
        headers = {"Content-Type": "application/json"}
        if webhook.secret_token is not None:
            headers[SECRET_HEADER] = webhook.secret_token
        connection_class = (
            http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(target.hostname or "", target.port, timeout=10)
        try:
            connection.request("POST", path, body=json.dumps(update).encode(), headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status, ""
        except OSError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()


@dataclass
class FakeUser:
    """A Telegram user in a private chat with the bot: what they type and press becomes an
    update pushed to the fake (and so given to getUpdates or POSTed to the webhook)."""

    api: FakeBotAPI
    user_id: int
    first_name: str
    last_name: str | None = None
    language_code: str = "id"
    _message_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def user_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.user_id,
            "is_bot": False,
            "first_name": self.first_name,
            "language_code": self.language_code,
        }
        if self.last_name:
            data["last_name"] = self.last_name
        return data

    def message_json(self, text: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": self.user_id, "type": "private", "first_name": self.first_name},
            "from": self.user_json(),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return message

    def text_update(self, text: str) -> dict[str, Any]:
        return {"message": self.message_json(text)}

    def callback_update(self, message: dict[str, Any], data: str) -> dict[str, Any]:
        return {
            "callback_query": {
                "id": f"{self.user_id}-{time.monotonic_ns()}",
                "from": self.user_json(),
                "chat_instance": str(self.user_id),
                "data": data,
                "message": message,
            }
        }

    def send(self, text: str) -> dict[str, Any]:
        """Type a message; returns the pushed update."""
        return self.api.push_update(self.text_update(text))

    def press(self, label: str, message: dict[str, Any] | None = None) -> dict[str, Any]:
        """Press the button with this label on `message` (default: the bot's last message with
        buttons in this chat); returns the pushed update."""
        target = message or self.api.last_with_buttons(self.user_id)
        if target is None:
            raise LookupError(f"no message with buttons in chat {self.user_id}")
        return self.api.push_update(self.callback_update(target, button_data(target, label)))

    def messages(self) -> list[dict[str, Any]]:
        return self.api.chat_messages(self.user_id)


def button_labels(message: dict[str, Any]) -> list[str]:
    return [str(b.get("text")) for row in _buttons(message) for b in row]


def button_data(message: dict[str, Any], label: str) -> str:
    for row in _buttons(message):
        for button in row:
            if button.get("text") == label and "callback_data" in button:
                return str(button["callback_data"])
    raise KeyError(f"no button {label!r} in {button_labels(message)}")


def _buttons(message: dict[str, Any]) -> list[list[dict[str, Any]]]:
    markup = message.get("reply_markup")
    if isinstance(markup, dict):
        return list(markup.get("inline_keyboard") or [])
    return []


def _error(code: int, description: str, **parameters: Any) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return code, body


def _fault_answer(fault: Fault) -> tuple[int, dict[str, Any]]:
    kind = fault.kind
    if kind == "retry_after":
        seconds = fault.retry_after
        return _error(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
    if kind == "blocked":
        return _error(403, "Forbidden: bot was blocked by the user")
    if kind == "deactivated":
        return _error(403, "Forbidden: user is deactivated")
    if kind == "chat_not_found":
        return _error(400, "Bad Request: chat not found")
    if kind == "bad_request":
        return _error(
            400,
            fault.description
            or 'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 0',
        )
    if kind == "migrate":
        return _error(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            migrate_to_chat_id=fault.migrate_to,
        )
    if kind == "server_error":
        return _error(500, "Internal Server Error")
    if kind == "bad_gateway":
        return _error(502, "Bad Gateway")
    raise AssertionError(kind)


def _bot_user() -> dict[str, Any]:
    return {"id": BOT_ID, "is_bot": True, "first_name": "KMP", "username": BOT_USERNAME}


def _message(call: Call, kind: str = "text") -> dict[str, Any]:
    chat_id = call.params.get("chat_id")
    chat: dict[str, Any] = {"id": chat_id, "type": "private"}
    if isinstance(chat_id, int) and chat_id < 0:
        chat = {"id": chat_id, "type": "supergroup", "title": "Grup"}
    elif isinstance(chat_id, str) and chat_id.startswith("@"):
        chat = {"id": -1000000000001, "type": "channel", "title": chat_id}
    message: dict[str, Any] = {
        "message_id": call.message_id,
        "date": int(time.time()),
        "chat": chat,
        "from": _bot_user(),
    }
    if kind == "text":
        message["text"] = call.params.get("text", "")
    else:
        unique = f"{kind}{call.message_id}"
        if kind == "photo":
            message["photo"] = [
                {"file_id": unique, "file_unique_id": unique, "width": 800, "height": 600}
            ]
        else:
            files = call.params.get("_files") or {}
            name = next(iter(files.values()), ("dokumen", b""))[0]
            message["document"] = {"file_id": unique, "file_unique_id": unique, "file_name": name}
        if call.params.get("caption"):
            message["caption"] = call.params["caption"]
    markup = call.params.get("reply_markup")
    if isinstance(markup, dict) and "inline_keyboard" in markup:
        message["reply_markup"] = markup
    return message


def _decoded(value: str) -> Any:
    # PTB posts form fields whose values are JSON-encoded (plain strings stay plain).
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """multipart/form-data as PTB sends uploads: fields JSON-decoded, files in `_files`."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    params: dict[str, Any] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, data)
        else:
            params[name] = _decoded(data.decode())
    if files:
        params["_files"] = files
    return params


class _Handler(BaseHTTPRequestHandler):
    server: FakeBotAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _params(self) -> dict[str, Any] | None:
        """The call's parameters; None when the body ended early (the client died mid-request:
        Telegram would not act on half a request)."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            return None
        query = urlsplit(self.path).query
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data") and raw:
            params = _multipart(content_type, raw)
            params.update({k: _decoded(v) for k, v in parse_qsl(query)})
            return params
        body = raw.decode()
        if content_type.startswith("application/json") and body:
            loaded = json.loads(body)
            return dict(loaded) if isinstance(loaded, dict) else {}
        return {
            name: _decoded(value)
            for name, value in parse_qsl("&".join(part for part in (query, body) if part))
        }

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        path = urlsplit(self.path).path
        prefix = f"/bot{self.server.token}/"
        params = self._params()
        if params is None:
            self.close_connection = True
            return
        if not path.startswith(prefix):
            self._send(*_error(401, "Unauthorized"))
            return
        method = path[len(prefix) :]
        call, fault = self.server._record(method, params)
        if fault is not None and fault.kind in ("timeout", "dropped"):
            if fault.kind == "timeout":
                time.sleep(fault.delay)
            self.close_connection = True
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        elif fault is not None:
            self._send(*_fault_answer(fault))
            return
        self._send(*self._result(method, params, call))

    def _result(self, method: str, params: dict[str, Any], call: Call) -> tuple[int, Any]:
        server = self.server
        if method == "getUpdates":
            return server._get_updates(params)
        if method in SENDS:
            return 200, {"ok": True, "result": server._send_message(method, params, call)}
        if method in ("editMessageText", "editMessageReplyMarkup"):
            return server._edit(method, params)
        if method == "setWebhook":
            return server._set_webhook(params)
        if method == "deleteWebhook":
            return server._delete_webhook(params)
        result: Any = True
        if method == "getMe":
            result = {
                **_bot_user(),
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        elif method == "getWebhookInfo":
            result = server._webhook_info()
        elif method == "setMyCommands":
            with server._lock:
                server.commands = list(params.get("commands") or [])
        return 200, {"ok": True, "result": result}

    def _send(self, code: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up waiting (its read timeout); nothing to tell it.
            self.close_connection = True


def post_webhook(
    url: str, body: bytes | dict[str, Any], secret: str | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """POST to the bot's webhook as anyone could (a test's stranger, or Telegram itself)."""
    target = urlsplit(url)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=timeout)
    try:
        connection.request("POST", target.path or "/", body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def iter_windows(times: list[float], width: float = 1.0) -> Iterator[tuple[float, int]]:
    """For each arrival, how many arrivals fall in [t, t + width): the sliding-window rate."""
    ordered = sorted(times)
    end = 0
    for start, at in enumerate(ordered):
        while end < len(ordered) and ordered[end] < at + width:
            end += 1
        yield at, end - start
