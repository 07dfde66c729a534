"""The outbox's own HTTP client over TLS, as it talks to api.telegram.org in production: the
server's certificate is checked (a certificate nobody trusts, or one for another name, is a
network error, never a delivery), and a trusted one carries sendMessage and its answer.

The certificates come from trustme, a throwaway certificate authority made for tests."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from telegram import Bot
from telegram.error import NetworkError
from telegram.request import HTTPXRequest

from handlers.transport import StreamRequest, TelegramTransport

TOKEN = "123456:TEST"


class _Telegram(BaseHTTPRequestHandler):
    """sendMessage answered as Telegram does; every request body is kept."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        params = json.loads(self.rfile.read(length))
        type(self).seen.append({"path": self.path, **params})
        body = json.dumps(
            {
                "ok": True,
                "result": {
                    "message_id": 77,
                    "date": 1_800_000_000,
                    "chat": {"id": int(params["chat_id"]), "type": "private"},
                    "text": params["text"],
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """An https server on 127.0.0.1 whose certificate names `localhost`."""
    handler = type("Handler", (_Telegram,), {"seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], handler.seen
    httpd.shutdown()
    httpd.server_close()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def transport(port: int, tls: ssl.SSLContext | None, host: str = "localhost") -> TelegramTransport:
    bot = Bot(TOKEN, base_url=f"https://{host}:{port}/bot", request=HTTPXRequest())
    sender = TelegramTransport(bot)
    sender.request = StreamRequest(read_timeout=5, tls=tls)
    return sender


async def test_a_trusted_certificate_carries_the_message_and_its_answer(
    ca: trustme.CA, server: tuple[int, list[dict[str, Any]]]
) -> None:
    port, seen = server
    sender = transport(port, trusting(ca))
    async with sender.hold():
        first = await sender.deliver("42", "Rapat <b>Senin</b>", [[["Hadir", "u:1:h"]]])
        second = await sender.deliver("42", "Kedua", None)
    assert (first.outcome.value, first.message_id) == ("sent", "77")
    assert second.outcome.value == "sent"
    assert [s["text"] for s in seen] == ["Rapat <b>Senin</b>", "Kedua"]
    assert seen[0]["path"] == f"/bot{TOKEN}/sendMessage"
    assert seen[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "u:1:h"


async def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    server: tuple[int, list[dict[str, Any]]],
) -> None:
    port, seen = server
    # The machine's default trust: the test authority is not in it.
    request = StreamRequest(read_timeout=5)
    with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
        await request.post(f"https://localhost:{port}/bot{TOKEN}/sendMessage")
    assert seen == []


async def test_a_certificate_for_another_name_is_refused(
    ca: trustme.CA, server: tuple[int, list[dict[str, Any]]]
) -> None:
    port, seen = server
    # Trusted authority, but the certificate names localhost, not 127.0.0.1.
    request = StreamRequest(read_timeout=5, tls=trusting(ca))
    with pytest.raises(NetworkError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
        await request.post(f"https://127.0.0.1:{port}/bot{TOKEN}/sendMessage")
    assert seen == []
