"""The outbox's Telegram transport: sendMessage, and Bot API errors mapped to outcomes.

The sender's requests do not go through PTB's `Bot.send_message` and httpx: on a small machine
those cost about 3 ms of CPU per message (building the request, httpx's and anyio's layers,
turning the answer back into a `Message`), which caps one process near 300 messages a second
where a paid broadcast may send 1,000 (docs/BENCHMARKS.md, broadcast). `StreamRequest` is a
lean HTTP/1.1 client (asyncio streams, TLS for https, JSON bodies, kept-alive connections)
behind PTB's own `BaseRequest`, so the Bot API's answers become the same PTB errors as before
and are mapped to outcomes by the same code. When an HTTP proxy applies (HTTPS_PROXY and the
like, which httpx honours) the transport uses the bot as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import BaseRequest, HTTPXRequest, RequestData

# PTB's own parameter type: internal, but what a `BaseRequest` gets from the Bot (PTB is
# pinned below 23 in pyproject.toml).
from telegram.request._requestparameter import RequestParameter

from bot.sender import ButtonRows, Delivery, Outcome, RowContext
from handlers.common import CHANNEL, keyboard, markup_of, retry_after_seconds

__all__ = ["StreamRequest", "TelegramTransport", "retry_after_seconds"]

# 400 answers that mean the chat is gone for good rather than that the request was wrong.
_GONE = ("chat not found", "user not found", "peer_id_invalid", "chat_write_forbidden")
# PTB's defaults for the timeouts a bot's request does not tell (connect, pool). The read
# timeout bounds writing the request and reading its answer together.
CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 1.0
# A kept-alive connection idle longer than this is closed rather than used (servers close idle
# connections after a while; a request written into a closing connection is lost).
IDLE_SECONDS = 20.0


def _chat(chat_id: str) -> int | str:
    # Numeric ids as numbers; "@channelname" stays a string.
    return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    origin: tuple[str, str, int]
    used_at: float

    def usable(self, now: float) -> bool:
        return (
            now - self.used_at < IDLE_SECONDS
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        self.writer.close()


def _timeout(value: Any, default: float | None) -> float | None:
    """A timeout PTB passed, or ours when it passed its DEFAULT_NONE."""
    return default if value is BaseRequest.DEFAULT_NONE else value


async def _discard(connection: _Connection) -> None:
    connection.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await connection.writer.wait_closed()


class StreamRequest(BaseRequest):
    """POSTs with JSON bodies over kept-alive HTTP/1.1 connections (asyncio streams).

    At most `connections` requests at once if given (a request waits up to the pool timeout
    for one); the sender's concurrency bounds them otherwise.
    Connections are kept between requests only while `keep_alive` is set (a sender at work);
    otherwise each is closed after its answer. A connection whose request failed or timed out
    is closed, never reused. Answers are read by Content-Length, chunked, or to the end.
    Requests with files are not supported (the sender sends text).
    """

    def __init__(
        self,
        *,
        connections: int | None = None,
        read_timeout: float | None = 5.0,
        connect_timeout: float | None = CONNECT_TIMEOUT,
        pool_timeout: float | None = POOL_TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._connections = connections
        self._slots: asyncio.Semaphore | None = None
        self._idle: list[_Connection] = []
        # The certificates trusted for https (default: certifi's, as httpx trusts).
        self._tls: ssl.SSLContext | None = tls
        self.keep_alive = False

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        """Close the kept-alive connections (those in use close when their answer is read)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await _discard(connection)

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            try:
                import certifi  # httpx's certificates, so TLS trusts what it trusted

                self._tls = ssl.create_default_context(cafile=certifi.where())
            except ImportError:
                self._tls = ssl.create_default_context()
        return self._tls

    async def _connect(self, origin: tuple[str, str, int], seconds: float | None) -> _Connection:
        scheme, host, port = origin
        try:
            async with asyncio.timeout(seconds):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._context() if scheme == "https" else None
                )
        except TimeoutError as exc:
            raise TimedOut("Timed out while connecting") from exc
        except OSError as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from exc
        return _Connection(reader, writer, origin, time.monotonic())

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if request_data is not None and request_data.contains_files:
            raise NetworkError("StreamRequest does not upload files")
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host = parts.hostname or ""
        origin = (parts.scheme, host, parts.port or (443 if tls else 80))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        body = json.dumps(request_data.parameters if request_data else {}).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "User-Agent: koperasi-bot\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        exchange = self._exchange(
            origin,
            head + body,
            _timeout(read_timeout, self._read_timeout),
            _timeout(connect_timeout, self._connect_timeout),
        )
        if self._connections is None:
            return await exchange
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._connections)
        try:
            async with asyncio.timeout(_timeout(pool_timeout, self._pool_timeout)):
                await self._slots.acquire()
        except TimeoutError as exc:
            exchange.close()
            raise TimedOut("Pool timeout: all connections are in use") from exc
        try:
            return await exchange
        finally:
            self._slots.release()

    async def _exchange(
        self,
        origin: tuple[str, str, int],
        request: bytes,
        read_timeout: float | None,
        connect_timeout: float | None,
    ) -> tuple[int, bytes]:
        now = time.monotonic()
        connection = None
        while self._idle:
            candidate = self._idle.pop()
            if candidate.origin == origin and candidate.usable(now):
                connection = candidate
                break
            await _discard(candidate)
        if connection is None:
            connection = await self._connect(origin, connect_timeout)
        keep = False
        try:
            # One timer for both, the read timeout (a request is small: writing it hardly ever
            # waits, and a timer per step costs as much as the rest of the request).
            try:
                async with asyncio.timeout(read_timeout):
                    connection.writer.write(request)
                    await connection.writer.drain()
                    status, payload, keep = await _response(connection.reader)
            except TimeoutError as exc:
                raise TimedOut from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if keep and self.keep_alive:
                connection.used_at = time.monotonic()
                self._idle.append(connection)
            else:
                await _discard(connection)
        return status, payload


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection may be used again) of one HTTP/1.x answer."""
    while True:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest.split(" ", 1)[0])
        if status >= 200 or status < 100:
            break  # 1xx answers (100 Continue) come before the real one
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, b"".join(chunks), keep
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"])), keep
    if status in (204, 304):
        return status, b"", keep
    return status, await reader.read(), False


def _proxied(url: str) -> bool:
    """Whether an HTTP proxy from the environment applies to `url` (httpx would use it)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class TelegramTransport:
    """Delivers outbox rows to Telegram: sendMessage with the bot's token, base URL and read
    timeout, through a `StreamRequest` of its own (as many connections as sends in flight, up
    to the sender's concurrency). While a sender holds it (`hold()`) connections are kept alive;
    otherwise each delivery opens and closes its own.

    The bot sends instead when its request is not PTB's HTTP client (the in-process Bot API of
    handlers/local_api.py) or an HTTP proxy is configured in the environment; its HTTP client
    should then allow as many connections as the sender's concurrency (an Application's bot
    has 256; a bare `Bot` has 1 unless given an `HTTPXRequest`).
    """

    channel = CHANNEL

    def __init__(self, bot: Bot, *, connections: int | None = None) -> None:
        self.bot = bot
        self.url = f"{bot.base_url}/sendMessage"
        self.request = StreamRequest(connections=connections, read_timeout=bot.request.read_timeout)
        # The bot's own way when it does not talk HTTP itself (the in-process Bot API of
        # handlers/local_api.py, the simulator) or an HTTP proxy applies.
        self.via_bot = not isinstance(bot.request, HTTPXRequest) or _proxied(self.url)
        self._holders = 0

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Keep connections alive until the last holder is done."""
        self._holders += 1
        self.request.keep_alive = True
        try:
            yield
        finally:
            self._holders -= 1
            if not self._holders:
                self.request.keep_alive = False
                await self.request.shutdown()

    async def _send(self, chat_id: str, text: str, buttons: ButtonRows | None) -> str:
        """sendMessage; the new message's id. Raises PTB's errors."""
        rows = [[(label, data) for label, data in row] for row in buttons or []]
        if self.via_bot:
            message = await self.bot.send_message(
                chat_id=_chat(chat_id),
                text=text,
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard(rows),
            )
            return str(message.message_id)
        values: dict[str, Any] = {"chat_id": _chat(chat_id), "text": text, "parse_mode": "HTML"}
        markup = markup_of(rows)
        if markup is not None:
            values["reply_markup"] = markup
        data = RequestData([RequestParameter(name, value, None) for name, value in values.items()])
        result = await self.request.post(self.url, data)
        if not isinstance(result, dict) or "message_id" not in result:
            raise TelegramError(f"unexpected sendMessage result: {str(result)[:100]}")
        return str(result["message_id"])

    async def deliver(
        self,
        chat_id: str,
        text: str,
        buttons: ButtonRows | None,
        context: RowContext | None = None,
    ) -> Delivery:
        """Send one row (the row's context is WhatsApp's concern, not Telegram's)."""
        try:
            message_id = await self._send(chat_id, text, buttons)
        except RetryAfter as exc:
            return Delivery(
                Outcome.RETRY_AFTER, retry_after=retry_after_seconds(exc), error=str(exc)
            )
        except Forbidden as exc:
            return Delivery(Outcome.UNREACHABLE, error=exc.message)
        except ChatMigrated as exc:
            return Delivery(Outcome.MIGRATED, new_chat_id=str(exc.new_chat_id), error=exc.message)
        except BadRequest as exc:
            # BadRequest is a NetworkError in PTB, so it is caught first.
            gone = any(marker in exc.message.lower() for marker in _GONE)
            return Delivery(Outcome.UNREACHABLE if gone else Outcome.PERMANENT, error=exc.message)
        except (TimedOut, NetworkError) as exc:
            return Delivery(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc.message}")
        except TelegramError as exc:
            return Delivery(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc.message}")
        return Delivery(Outcome.SENT, message_id=message_id)
