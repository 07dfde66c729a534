"""A fake WhatsApp Cloud API on 127.0.0.1 for tests that talk HTTP: records, faults, people.

    with FakeWhatsApp() as wa:
        # settings: WHATSAPP_API_BASE_URL=wa.base_url, WHATSAPP_PHONE_NUMBER_ID=wa.phone_id,
        # WHATSAPP_ACCESS_TOKEN=wa.token, WHATSAPP_APP_SECRET=wa.app_secret,
        # WHATSAPP_VERIFY_TOKEN=wa.verify_token
        wa.forward_to("http://127.0.0.1:8444/whatsapp")
        siti = wa.user("6281234567890", "Siti")
        assert siti.send("DAFTAR ABC123") == 200
        wa.wait_for(lambda: wa.sent_to(siti.wa_id), "a welcome")
        siti.press("Ya, benar")

The Graph API part (`base_url`, calls need `Authorization: Bearer <token>`, else 401):

- POST /{phone_id}/messages: every call is recorded in `calls` (a `Call`: `.to`, `.type`
  ("text" | "interactive" | "template" | "image" | "document"), `.body`, `.text` (the text, the
  interactive body or the caption), `.buttons` [(id, title)] of reply buttons or list rows,
  `.template` name, `.wamid` (None when it failed), `.answer` ("ok" or the fault kind)), and is
  answered as Meta does: {"messaging_product": "whatsapp", "contacts": [{"input": to,
  "wa_id": to}], "messages": [{"id": "wamid.<n>"}]}.
- POST /{phone_id}/media (multipart): {"id": "media.<n>"}, kept in `media`.
- Faults, scripted with `fail(to=None, kind=..., count=1)` and used up in order, answer a
  messages call with Meta's error JSON ({"error": {"message", "type": "OAuthException",
  "code", "error_data": {"details"}, "fbtrace_id"}}):

      throughput       400, code 130429 (rate limit hit)
      reengagement     400, code 131047 (more than 24 hours since the customer last replied)
      not_on_whatsapp  400, code 131026 (message undeliverable)
      template_paused  400, code 132015 (template is paused)
      server_error     500, code 131000 (something went wrong)
      dropped          the connection is closed without an answer; not delivered

- `window_closed(wa_id)`: free-form sends to that number fail with 131047 (as Meta's do
  outside the 24-hour customer-service window) while templates pass; `window_open(wa_id)`
  undoes it (a message from the person reopens it too).

The notifications part: `forward_to(url)` names the bot's webhook (http://127.0.0.1:port/whatsapp,
the TLS proxy's target). `user(wa_id, name)` is a person whose `send(text)`, `press(id_or_title,
reply_to_wamid=None)` (a list row also by its title without its number, "2. Sewa" -> "Sewa")
and `send_image()` POST a notification signed with `app_secret` in
X-Hub-Signature-256, in the Cloud API's exact shape, and return the HTTP status. `post_raw(body,
signature)` posts anything (forged requests); `status(wamid, "sent"|"delivered"|"read"|"failed",
errors=None)` posts a delivery status; `handshake(...)` does the GET verification. Everything
posted is in `notifications` with the answer's status.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlencode, urlsplit

from tests.fake_bot_api import _multipart
from tests.fake_server import FakeServer

PHONE_ID = "106540352242922"
BUSINESS_ACCOUNT_ID = "102290129340398"
DISPLAY_NUMBER = "15550783881"
TOKEN = "EAAtesttoken"
APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
SIGNATURE_HEADER = "X-Hub-Signature-256"

# kind: (HTTP status, error code, message, details)
ERRORS: dict[str, tuple[int, int, str, str]] = {
    "throughput": (
        400,
        130429,
        "(#130429) Rate limit hit",
        "Cloud API message throughput has been reached.",
    ),
    "reengagement": (
        400,
        131047,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    "not_on_whatsapp": (
        400,
        131026,
        "Message undeliverable",
        "Unable to deliver message: the recipient is not on WhatsApp.",
    ),
    "template_paused": (
        400,
        132015,
        "(#132015) Template is Paused",
        "Template is paused due to low quality so it cannot be sent in a template message.",
    ),
    "server_error": (500, 131000, "Something went wrong", "Something went wrong."),
}
FAULT_KINDS = frozenset({*ERRORS, "dropped"})


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    """The X-Hub-Signature-256 value Meta sends: sha256=<hex HMAC of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Call:
    """One POST /{phone_id}/messages as it arrived."""

    body: dict[str, Any]
    at: float
    wamid: str | None = None
    answer: str = "ok"

    @property
    def to(self) -> str:
        return str(self.body.get("to", ""))

    @property
    def type(self) -> str:
        return str(self.body.get("type", "text"))

    @property
    def delivered(self) -> bool:
        return self.answer == "ok"

    @property
    def interactive_type(self) -> str | None:
        """ "button" or "list" for an interactive message."""
        if self.type != "interactive":
            return None
        return str(self.body["interactive"].get("type"))

    @property
    def text(self) -> str:
        kind = self.type
        if kind == "text":
            return str(self.body.get("text", {}).get("body", ""))
        if kind == "interactive":
            return str(self.body["interactive"].get("body", {}).get("text", ""))
        if kind in ("image", "document"):
            return str(self.body.get(kind, {}).get("caption", ""))
        if kind == "template":
            values = [
                str(p.get("text", ""))
                for c in self.body["template"].get("components", [])
                for p in c.get("parameters", [])
            ]
            return " | ".join(values)
        return ""

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(id, title) of the reply buttons or list rows."""
        if self.type != "interactive":
            return []
        interactive = self.body["interactive"]
        action = interactive.get("action", {})
        if interactive.get("type") == "button":
            return [(b["reply"]["id"], b["reply"]["title"]) for b in action.get("buttons", [])]
        if interactive.get("type") == "list":
            return [
                (row["id"], row["title"])
                for section in action.get("sections", [])
                for row in section.get("rows", [])
            ]
        return []

    @property
    def template(self) -> str | None:
        if self.type != "template":
            return None
        return str(self.body["template"]["name"])

    @property
    def template_params(self) -> list[str]:
        if self.type != "template":
            return []
        return [
            str(p.get("text", ""))
            for c in self.body["template"].get("components", [])
            for p in c.get("parameters", [])
        ]


@dataclass
class Fault:
    kind: str
    to: str | None = None
    count: int | None = 1  # None: every matching call
    used: int = 0

    def matches(self, to: str) -> bool:
        if self.count is not None and self.used >= self.count:
            return False
        return self.to is None or self.to == to


@dataclass
class Notification:
    """One POST to the bot's webhook and the status it answered (0: no answer)."""

    body: bytes
    status: int
    at: float
    error: str = ""


def _unnumbered(title: str) -> str:
    """A list row's title without its number: "2. Gerai sembako" -> "Gerai sembako"."""
    return re.sub(r"^\d+\.\s+", "", title)


@dataclass
class WaUser:
    """A person on WhatsApp writing to the business number."""

    api: FakeWhatsApp
    wa_id: str
    name: str

    def _message(self, kind: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "from": self.wa_id,
            "id": self.api.next_inbound_id(),
            "timestamp": str(int(time.time())),
            "type": kind,
            kind: content,
            **extra,
        }

    def notification(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.api.envelope(
            {
                "contacts": [{"profile": {"name": self.name}, "wa_id": self.wa_id}],
                "messages": [message],
            }
        )

    def post(self, message: dict[str, Any]) -> int:
        self.api.window_open(self.wa_id)
        return self.api.post(self.notification(message))

    def text_message(self, text: str) -> dict[str, Any]:
        return self._message("text", {"body": text})

    def send(self, text: str) -> int:
        return self.post(self.text_message(text))

    def press_message(self, button_id_or_title: str, reply_to_wamid: str | None = None) -> dict:
        """The notification message of a press on a button or list row of a message the bot
        sent (the last one with choices, unless `reply_to_wamid` names it)."""
        call = self.api.message_with_choices(self.wa_id, reply_to_wamid)
        for button_id, title in call.buttons:
            if button_id_or_title in (button_id, title, _unnumbered(title)):
                break
        else:
            raise KeyError(f"no choice {button_id_or_title!r} in {call.buttons}")
        assert call.wamid is not None
        if call.interactive_type == "list":
            reply = {"type": "list_reply", "list_reply": {"id": button_id, "title": title}}
            description = next(
                (
                    row.get("description")
                    for s in call.body["interactive"]["action"]["sections"]
                    for row in s["rows"]
                    if row["id"] == button_id and row.get("description")
                ),
                None,
            )
            if description:
                reply["list_reply"]["description"] = description
        else:
            reply = {"type": "button_reply", "button_reply": {"id": button_id, "title": title}}
        return self._message(
            "interactive", reply, context={"from": DISPLAY_NUMBER, "id": call.wamid}
        )

    def press(self, button_id_or_title: str, reply_to_wamid: str | None = None) -> int:
        return self.post(self.press_message(button_id_or_title, reply_to_wamid))

    def send_image(self, caption: str | None = None) -> int:
        image: dict[str, Any] = {
            "mime_type": "image/jpeg",
            "sha256": hashlib.sha256(b"photo").hexdigest(),
            "id": f"{next(self.api._media_ids)}",
        }
        if caption:
            image["caption"] = caption
        return self.post(self._message("image", image))

    def messages(self) -> list[Call]:
        """What the bot delivered to this person, in order."""
        return [call for call in self.api.sent if call.to == self.wa_id]


class FakeWhatsApp(FakeServer):
    def __init__(
        self,
        *,
        phone_id: str = PHONE_ID,
        token: str = TOKEN,
        app_secret: str = APP_SECRET,
        verify_token: str = VERIFY_TOKEN,
    ) -> None:
        super().__init__(_Handler)
        self.phone_id = phone_id
        self.token = token
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.display_number = DISPLAY_NUMBER
        self.calls: list[Call] = []
        self.media: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.closed_windows: set[str] = set()
        self.notifications: list[Notification] = []
        self.webhook_url: str | None = None
        self._lock = threading.Lock()
        self._wamids = itertools.count(1)
        self._inbound_ids = itertools.count(1)
        self._media_ids = itertools.count(1)

    # -- scripting ----------------------------------------------------------------------------

    def fail(self, to: str | None = None, *, kind: str, count: int | None = 1) -> Fault:
        """Answer the next `count` messages calls (to `to`, or to anyone) with a fault."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        fault = Fault(kind=kind, to=None if to is None else str(to), count=count)
        with self._lock:
            self.faults.append(fault)
        return fault

    def window_closed(self, wa_id: str) -> None:
        with self._lock:
            self.closed_windows.add(str(wa_id))

    def window_open(self, wa_id: str) -> None:
        with self._lock:
            self.closed_windows.discard(str(wa_id))

    def user(self, wa_id: str, name: str = "Pengguna") -> WaUser:
        return WaUser(self, str(wa_id), name)

    def forward_to(self, url: str) -> None:
        self.webhook_url = url

    # -- notifications to the bot -------------------------------------------------------------

    def next_inbound_id(self) -> str:
        return f"wamid.in{next(self._inbound_ids)}"

    def envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        """A notification of the `messages` field around `value` (messages, statuses…)."""
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": BUSINESS_ACCOUNT_ID,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": self.display_number,
                                    "phone_number_id": self.phone_id,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }

    def post(self, notification: dict[str, Any]) -> int:
        """POST a notification, signed as Meta signs it; the HTTP status."""
        body = json.dumps(notification).encode()
        return self.post_raw(body, signature(body, self.app_secret))

    def post_raw(self, body: bytes, signature: str | None, timeout: float = 20.0) -> int:
        """POST any bytes with any (or no) signature; the HTTP status (0: no answer)."""
        if self.webhook_url is None:
            raise RuntimeError("forward_to(url) first: where is the bot's webhook?")
        target = urlsplit(self.webhook_url)
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=timeout)
        status, error = 0, ""
        try:
            connection.request("POST", target.path or "/", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        except OSError as exc:
            error = str(exc)
        finally:
            connection.close()
        with self._lock:
            self.notifications.append(Notification(body, status, time.monotonic(), error))
        return status

    def status(
        self,
        wamid: str,
        status: str,
        errors: list[dict[str, Any]] | None = None,
        recipient: str | None = None,
    ) -> int:
        """Post a delivery status ("sent", "delivered", "read", "failed") of a sent message."""
        if recipient is None:
            recipient = next((c.to for c in self.calls if c.wamid == wamid), "")
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": recipient,
        }
        if status != "read":
            entry["conversation"] = {
                "id": "conv.1",
                "origin": {"type": "service"},
            }
            entry["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
        if errors:
            entry["errors"] = errors
        return self.post(self.envelope({"statuses": [entry]}))

    def handshake(
        self,
        mode: str = "subscribe",
        verify_token: str | None = None,
        challenge: str = "1158201444",
        timeout: float = 10.0,
    ) -> tuple[int, str]:
        """The GET verification Meta makes when the webhook URL is saved: (status, body)."""
        if self.webhook_url is None:
            raise RuntimeError("forward_to(url) first")
        target = urlsplit(self.webhook_url)
        query = urlencode(
            {
                "hub.mode": mode,
                "hub.verify_token": self.verify_token if verify_token is None else verify_token,
                "hub.challenge": challenge,
            }
        )
        connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=timeout)
        try:
            connection.request("GET", f"{target.path or '/'}?{query}")
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    # -- what happened ------------------------------------------------------------------------

    @property
    def sent(self) -> list[Call]:
        """The messages calls that were delivered."""
        with self._lock:
            return [call for call in self.calls if call.delivered]

    def sent_to(self, wa_id: str) -> list[Call]:
        return [call for call in self.sent if call.to == str(wa_id)]

    def texts_to(self, wa_id: str) -> list[str]:
        return [call.text for call in self.sent_to(wa_id)]

    def message_with_choices(self, wa_id: str, wamid: str | None = None) -> Call:
        mine = [c for c in self.sent_to(wa_id) if c.buttons]
        if wamid is not None:
            mine = [c for c in mine if c.wamid == wamid]
        if not mine:
            raise LookupError(f"no message with choices to {wa_id} ({wamid or 'last'})")
        return mine[-1]

    # -- answering ----------------------------------------------------------------------------

    def _record(self, body: dict[str, Any]) -> tuple[Call, str | None]:
        with self._lock:
            call = Call(body=body, at=time.monotonic())
            self.calls.append(call)
            kind: str | None = None
            for fault in self.faults:
                if fault.matches(call.to):
                    fault.used += 1
                    kind = fault.kind
                    break
            if kind is None and call.to in self.closed_windows and call.type != "template":
                kind = "reengagement"
            if kind is None:
                call.wamid = f"wamid.{next(self._wamids)}"
            else:
                call.answer = kind
            return call, kind

    def _store_media(self, params: dict[str, Any]) -> str:
        with self._lock:
            media_id = f"media.{next(self._media_ids)}"
            self.media.append({"id": media_id, **params})
            return media_id


def error_body(kind: str) -> tuple[int, dict[str, Any]]:
    status, code, message, details = ERRORS[kind]
    return status, {
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AbCdEfGhIjK",
        }
    }


class _Handler(BaseHTTPRequestHandler):
    server: FakeWhatsApp
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._read()
        self._send(404, {"error": {"message": "Unknown path", "code": 100}})

    def do_POST(self) -> None:
        raw = self._read()
        if raw is None:
            self.close_connection = True
            return
        server = self.server
        if self.headers.get("Authorization") != f"Bearer {server.token}":
            self._send(
                401,
                {
                    "error": {
                        "message": "Invalid OAuth access token.",
                        "type": "OAuthException",
                        "code": 190,
                        "fbtrace_id": "AbCdEfGhIjK",
                    }
                },
            )
            return
        path = urlsplit(self.path).path.strip("/").split("/")
        # /{version}/{phone_id}/messages or /{phone_id}/messages
        if len(path) >= 2 and path[-2] == server.phone_id and path[-1] == "messages":
            self._messages(raw)
        elif len(path) >= 2 and path[-2] == server.phone_id and path[-1] == "media":
            params = _multipart(self.headers.get("Content-Type", ""), raw)
            self._send(200, {"id": server._store_media(params)})
        else:
            self._send(400, {"error": {"message": "Unsupported post request", "code": 100}})

    def _messages(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "Invalid JSON", "code": 100}})
            return
        call, fault = self.server._record(body)
        if fault == "dropped":
            self.close_connection = True
            return
        if fault is not None:
            self._send(*error_body(fault))
            return
        self._send(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": call.to, "wa_id": call.to}],
                "messages": [{"id": call.wamid}],
            },
        )

    def _read(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return None if len(raw) < length else raw

    def _send(self, code: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
