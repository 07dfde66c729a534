"""Fixtures: a migrated database on SQLite and on PostgreSQL, a core with a fixed clock, and an
Application wired to the local Bot API so tests drive real Updates through process_update."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text

from bot.app import build_application
from bot.clock import FixedClock
from bot.config import Settings
from bot.core import Core
from bot.registry import SAMPLE_REGISTRY, import_file
from handlers.local_api import LocalBotAPI, LocalChat, LocalUser
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Base

# Hypothesis: "default" keeps `make test` quick; `HYPOTHESIS_PROFILE=nightly make test` runs
# sixty times the examples (tests/test_fuzz.py scales its own count from these).
hypothesis_settings.register_profile(
    "default", max_examples=100, deadline=timedelta(seconds=2), print_blob=True
)
hypothesis_settings.register_profile("nightly", max_examples=6000, deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

WIB = ZoneInfo("Asia/Jakarta")
PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Tables the migrations seed; tests keep them between runs.
SEEDED = {"jabatan"}


def pytest_configure(config: pytest.Config) -> None:
    # The bot reads .env from the working directory; tests must not pick up a developer's.
    os.environ.pop("TELEGRAM_BOT_TOKEN", None)
    # As the bot runs: PTB reports RetryAfter as a timedelta (the int form is deprecated).
    os.environ["PTB_TIMEDELTA"] = "1"


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_reachable() -> str | None:
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy, which is faster than migrating."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test session, dropped at the end."""
    problem = _pg_reachable()
    if problem is not None:
        message = f"PostgreSQL not reachable at {PG_URL} ({problem})"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    name = f"kopbot_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://{PG_URL.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "koperasi.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_database")
    yield url
    asyncio.run(_truncate(url))


async def _truncate(url: str) -> None:
    db = Database(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name not in SEEDED)
    async with db.transaction() as session:
        await session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await db.dispose()


@pytest.fixture
def cli_env(database_url: str) -> dict[str, str]:
    """The environment of a `koperasi-bot` run against the test database."""
    return {"DATABASE_URL": database_url, "TELEGRAM_BOT_TOKEN": ""}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 27, 9, 0, tzinfo=WIB))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, telegram_bot_token=None, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def core(settings: Settings, clock: FixedClock) -> AsyncIterator[Core]:
    core = Core.create(settings, clock=clock)
    yield core
    await core.close()


@pytest.fixture
async def registry_loaded(core: Core) -> Core:
    await import_file(core.db, SAMPLE_REGISTRY, core.clock.now(), "test")
    return core


@pytest.fixture
def api() -> LocalBotAPI:
    return LocalBotAPI()


@pytest.fixture
async def app(registry_loaded: Core, api: LocalBotAPI) -> AsyncIterator[Any]:
    application = build_application(registry_loaded, request=api)
    async with application:
        yield application


class Chats:
    """Makes chats of distinct users with the app under test."""

    def __init__(self, app: Any, api: LocalBotAPI) -> None:
        self.app = app
        self.api = api
        self._next = 500_000_000

    def user(
        self, first_name: str = "Siti", last_name: str | None = "Aminah", **kw: Any
    ) -> LocalChat:
        self._next += 1
        user = LocalUser(self.api, kw.pop("user_id", self._next), first_name, last_name, **kw)
        return LocalChat(self.app, user)


@pytest.fixture
def chats(app: Any, api: LocalBotAPI) -> Chats:
    return Chats(app, api)
