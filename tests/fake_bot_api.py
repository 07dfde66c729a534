"""A fake Telegram Bot API on 127.0.0.1 for tests that talk HTTP: records and scripted faults.

    with FakeBotAPI() as api:
        bot = telegram.Bot(api.token, base_url=f"{api.base_url}/bot")
        api.fail(chat_id=42, kind="retry_after", retry_after=1)
        ...
        assert [call.text for call in api.sent] == [...]

Every call is recorded (`calls`, `attempts` for sendMessage) with its arrival time on
`time.monotonic()`, so tests can measure pacing. Faults are scripted per chat or per number of
the sendMessage call (1-based) and are used up in the order they were added. Kinds:

    retry_after   429 with parameters.retry_after = `retry_after`
    blocked       403 Forbidden: bot was blocked by the user
    deactivated   403 Forbidden: user is deactivated
    chat_not_found 400 Bad Request: chat not found
    bad_request   400 Bad Request: `description` (default: can't parse entities)
    migrate       400 with parameters.migrate_to_chat_id = `migrate_to`
    server_error  500 Internal Server Error
    bad_gateway   502 Bad Gateway
    timeout       no answer for `delay` seconds, then the connection is closed; not delivered
    slow          delivered, but answered only after `delay` seconds (a client that gave up
                  has sent a message it thinks failed)

getMe, getUpdates (updates given to `push_update`, else empty after a short wait),
setMyCommands, deleteWebhook and any other method answer ok.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "123456:TESTTOKEN"
BOT_ID = 123456
BOT_USERNAME = "kmp_test_bot"

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
        "slow",
    }
)


@dataclass
class Call:
    """One request as it arrived; `answer` is "ok" or the fault kind it got."""

    method: str
    params: dict[str, Any]
    at: float
    number: int = 0  # the how-manieth sendMessage (1-based); 0 for other methods
    answer: str = "ok"
    message_id: int | None = None

    @property
    def chat_id(self) -> str | None:
        chat = self.params.get("chat_id")
        return None if chat is None else str(chat)

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))

    @property
    def delivered(self) -> bool:
        return self.answer in ("ok", "slow")


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
    used: int = field(default=0)

    def matches(self, chat_id: str | None, number: int) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.chat_id is not None and self.chat_id != chat_id:
            return False
        return self.call is None or self.call == number


class FakeBotAPI(ThreadingHTTPServer):
    """The server; `base_url` is http://127.0.0.1:<port> (give PTB f"{base_url}/bot")."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, token: str = TOKEN, *, poll_wait: float = 0.2) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token = token
        self.poll_wait = poll_wait
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.updates: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._message_ids = itertools.count(1001)
        self._update_ids = itertools.count(1)
        self._send_numbers = itertools.count(1)
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> FakeBotAPI:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> FakeBotAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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
    ) -> Fault:
        """Answer the matching sendMessage calls with a fault, `times` times (None: always)."""
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
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates; `update_id` is filled in when missing."""
        with self._lock:
            update = {"update_id": next(self._update_ids), **update}
            self.updates.append(update)
        return update

    # -- what happened ------------------------------------------------------------------------

    @property
    def attempts(self) -> list[Call]:
        """Every sendMessage call, in order of arrival, whatever it was answered."""
        with self._lock:
            return [call for call in self.calls if call.method == "sendMessage"]

    @property
    def sent(self) -> list[Call]:
        """The sendMessage calls that delivered a message."""
        return [call for call in self.attempts if call.delivered]

    def sent_to(self, chat_id: int | str) -> list[str]:
        return [call.text for call in self.sent if call.chat_id == str(chat_id)]

    def methods(self) -> list[str]:
        with self._lock:
            return [call.method for call in self.calls]

    # -- answering ----------------------------------------------------------------------------

    def _record(self, method: str, params: dict[str, Any]) -> tuple[Call, Fault | None]:
        with self._lock:
            call = Call(method=method, params=params, at=time.monotonic())
            fault = None
            if method == "sendMessage":
                call.number = next(self._send_numbers)
                fault = next((f for f in self.faults if f.matches(call.chat_id, call.number)), None)
                if fault is not None:
                    fault.used += 1
                    call.answer = fault.kind
                if call.delivered:
                    call.message_id = next(self._message_ids)
            self.calls.append(call)
        return call, fault

    def _pending_updates(self, offset: int) -> list[dict[str, Any]]:
        with self._lock:
            return [u for u in self.updates if u["update_id"] >= offset]


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


def _message(call: Call) -> dict[str, Any]:
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
        "from": {"id": BOT_ID, "is_bot": True, "first_name": "KMP", "username": BOT_USERNAME},
        "text": call.params.get("text", ""),
    }
    markup = call.params.get("reply_markup")
    if isinstance(markup, dict) and "inline_keyboard" in markup:
        message["reply_markup"] = markup
    return message


class _Handler(BaseHTTPRequestHandler):
    server: FakeBotAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _params(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        query = urlsplit(self.path).query
        if self.headers.get("Content-Type", "").startswith("application/json") and body:
            loaded = json.loads(body)
            return dict(loaded) if isinstance(loaded, dict) else {}
        # PTB posts form fields whose values are JSON-encoded (plain strings stay plain).
        params: dict[str, Any] = {}
        for name, value in parse_qsl("&".join(part for part in (query, body) if part)):
            try:
                params[name] = json.loads(value)
            except json.JSONDecodeError:
                params[name] = value
        return params

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        path = urlsplit(self.path).path
        prefix = f"/bot{self.server.token}/"
        params = self._params()
        if not path.startswith(prefix):
            self._send(*_error(401, "Unauthorized"))
            return
        method = path[len(prefix) :]
        call, fault = self.server._record(method, params)
        if fault is not None and fault.kind == "timeout":
            time.sleep(fault.delay)
            self.close_connection = True
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        elif fault is not None:
            self._send(*_fault_answer(fault))
            return
        self._send(200, {"ok": True, "result": self._result(method, params, call)})

    def _result(self, method: str, params: dict[str, Any], call: Call) -> Any:
        if method == "getMe":
            return {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "KMP",
                "username": BOT_USERNAME,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            updates = self.server._pending_updates(offset)
            if not updates:
                time.sleep(self.server.poll_wait)
            return updates
        if method == "sendMessage":
            return _message(call)
        return True

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


def iter_windows(times: list[float], width: float = 1.0) -> Iterator[tuple[float, int]]:
    """For each arrival, how many arrivals fall in [t, t + width): the sliding-window rate."""
    ordered = sorted(times)
    end = 0
    for start, at in enumerate(ordered):
        while end < len(ordered) and ordered[end] < at + width:
            end += 1
        yield at, end - start
