"""The webhook endpoint: Telegram POSTs updates here, and only requests with the secret count.

Served with tornado, the HTTP server behind python-telegram-bot's own `[webhooks]` extra: one
maintained, pure-Python package with no dependencies of its own that runs on the asyncio loop
PTB already runs on (aiohttp brings half a dozen packages; Starlette needs uvicorn besides, which
wants to own the loop and the signals). PTB's own webhook handler is not used: it compares the
secret with `!=`, whose time leaks how much of a guess was right, and logs a wrong secret whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from http import HTTPStatus
from typing import Any

import tornado.httpserver
import tornado.web
from telegram import Update
from telegram.ext import Application, ExtBot

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
# An update is a few KiB (a message is at most 4096 characters); anything far larger is not one.
MAX_BODY_BYTES = 1024 * 1024
# On a clean stop, updates already being handled get this long to finish and be answered.
STOP_GRACE_SECONDS = 30.0

App = Application[Any, Any, Any, Any, Any, Any]


class BareHandler(tornado.web.RequestHandler):
    """Errors answered with a bare status: nothing about the server for whoever probes it."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}\n")

    def json_object(self, what: str) -> dict[str, Any] | None:
        """The body as a JSON object; None, answered 400 and logged, when it is not one."""
        try:
            data = json.loads(self.request.body)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
        except Exception as exc:
            log.warning("%s from %s: not a JSON object (%s)", what, self.request.remote_ip, exc)
            self.send_error(HTTPStatus.BAD_REQUEST)
            return None
        return data


class WebhookHandler(BareHandler):
    """POST on the webhook path: 403 without the right secret, 400 for what is not an update,
    else 200 once the Application has handled the update.

    Not queued and answered at once, as PTB's own webhook does: an update answered 200 is gone
    from Telegram, so a process that dies between the answer and the handling would lose it.
    Answered after the handling, an update whose process dies gets no 200 and Telegram delivers
    it again, to this process or, behind one address, to another (handling it twice is
    harmless: see docs/RELIABILITY.md). One update at a time per process, in arrival order, as
    the update queue did. The slow officer commands (handlers.common.slow) are handled in a
    task of their own: their update is answered once the task started.
    """

    SUPPORTED_METHODS = ("POST",)

    def initialize(self, app: App, secret: bytes, server: WebhookServer) -> None:
        self.app = app
        self.secret = secret
        self.server = server

    async def post(self) -> None:
        given = self.request.headers.get(SECRET_HEADER, "").encode()
        # Constant time: the answer must not tell how much of a guess was right.
        if not hmac.compare_digest(given, self.secret):
            log.warning(
                "Webhook request from %s %s: refused",
                self.request.remote_ip,
                "with a wrong secret" if given else "without the secret",
            )
            self.send_error(HTTPStatus.FORBIDDEN)
            return
        data = self.json_object("Webhook request")
        if data is None:
            return
        try:
            update = Update.de_json(data, self.app.bot)
        except Exception as exc:  # anything that is not an Update: Telegram never sends it
            log.warning("Webhook request from %s: not an update (%s)", self.request.remote_ip, exc)
            self.send_error(HTTPStatus.BAD_REQUEST)
            return
        if isinstance(self.app.bot, ExtBot):
            self.app.bot.insert_callback_data(update)
        # Errors in handlers go to the error handler inside process_update; the update is
        # answered either way (the person was told what went wrong).
        await self.server.handle(update)
        self.set_status(HTTPStatus.OK)


def quiet_log(handler: tornado.web.RequestHandler) -> None:
    # tornado logs every request; refusals are logged above, accepted updates need no line.
    log.debug("%s %s %s", handler.get_status(), handler.request.method, handler.request.uri)


class WebhookServer:
    """The HTTP server on WEBHOOK_LISTEN, answering on the path of WEBHOOK_URL only."""

    def __init__(self, app: App, path: str, secret: str) -> None:
        pattern = re.escape(path.rstrip("/")) + "/?"
        web = tornado.web.Application(
            [(pattern, WebhookHandler, {"app": app, "secret": secret.encode(), "server": self})],
            log_function=quiet_log,
        )
        self._app = app
        self._http = tornado.httpserver.HTTPServer(web, max_body_size=MAX_BODY_BYTES)
        self._turn = asyncio.Lock()
        self._handling = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def listen(self, host: str, port: int) -> None:
        """Bind and start accepting (OSError when the address is taken or not ours)."""
        self._http.listen(port, address=host)

    async def handle(self, update: Update) -> None:
        """Process one update, one at a time, in the order they arrived."""
        self._handling += 1
        self._idle.clear()
        try:
            async with self._turn:
                await self._app.process_update(update)
        finally:
            self._handling -= 1
            if not self._handling:
                self._idle.set()

    async def stop(self) -> None:
        """Stop taking requests, finish the updates already taken (and answer them), close."""
        self._http.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), STOP_GRACE_SECONDS)
        await self._http.close_all_connections()
