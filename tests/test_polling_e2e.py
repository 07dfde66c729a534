"""`koperasi-bot run` with a token, over HTTP, against a small fake Bot API on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from tests.bot.test_cli import ROOT, cli

TOKEN = "123456:TESTTOKEN"


class FakeBotAPI(ThreadingHTTPServer):
    """Answers getMe, getUpdates (one scripted /start), sendMessage and anything else with ok."""

    def __init__(self, updates: list[dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.updates = updates
        self.sent: list[dict[str, Any]] = []
        self.methods: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    server: FakeBotAPI

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        method = self.path.rsplit("/", 1)[-1]
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length) if length else b""
        # PTB posts form fields whose values are JSON-encoded (strings stay plain).
        params: dict[str, Any] = {}
        for name, value in parse_qsl(body.decode()):
            try:
                params[name] = json.loads(value)
            except json.JSONDecodeError:
                params[name] = value
        self.server.methods.append(method)
        result: Any = True
        if method == "getMe":
            result = {"id": 1, "is_bot": True, "first_name": "KMP", "username": "kmp_test_bot"}
        elif method == "getUpdates":
            offset = int(params.get("offset", 0))
            result = [u for u in self.server.updates if u["update_id"] >= offset]
            if not result:
                time.sleep(0.2)
        elif method == "sendMessage":
            self.server.sent.append(params)
            result = {
                "message_id": 900 + len(self.server.sent),
                "date": int(time.time()),
                "chat": {"id": params["chat_id"], "type": "private"},
                "text": params["text"],
            }
        payload = json.dumps({"ok": True, "result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_run_with_a_token_polls_and_answers(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert cli("init", "--sample", env=cli_env, cwd=tmp_path).returncode == 0
    invite = cli(
        "invite",
        "--coop",
        "36.73.04.1007",
        "--role",
        "bendahara",
        "--json",
        env={**cli_env, "TELEGRAM_BOT_USERNAME": "kmp_test_bot"},
        cwd=tmp_path,
    )
    code = json.loads(invite.stdout.strip().splitlines()[-1])["code"]
    user = {"id": 4321, "is_bot": False, "first_name": "Siti"}
    start = f"/start {code}"
    server = FakeBotAPI(
        [
            {
                "update_id": 1,
                "message": {
                    "message_id": 10,
                    "date": int(time.time()),
                    "chat": {"id": 4321, "type": "private", "first_name": "Siti"},
                    "from": user,
                    "text": start,
                    "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
                },
            }
        ]
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        **cli_env,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
    }
    bot = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not server.sent and time.monotonic() < deadline and bot.poll() is None:
            time.sleep(0.2)
    finally:
        bot.send_signal(signal.SIGINT)
        try:
            _, stderr = bot.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            bot.kill()
            _, stderr = bot.communicate()
        server.shutdown()
        server.server_close()
    assert server.sent, stderr
    assert server.sent[0]["chat_id"] == 4321
    assert "Akun Anda sudah terhubung sebagai <b>Bendahara</b>" in server.sent[0]["text"]
    assert server.sent[0]["parse_mode"] == "HTML"
    assert "setMyCommands" in server.methods
    assert bot.returncode == 0, stderr


def test_unreachable_bot_api_stops_with_one_clear_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9"}
    result = cli("run", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "Bot tidak dapat dijalankan: server Bot API di http://127.0.0.1:9 tidak dapat dihubungi"
        )
    )
