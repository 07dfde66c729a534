"""What the national-scale scripts share: database URLs, a PostgreSQL database of their own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The report period the generated data ends with, and the moment the scale run pretends it is:
# the day after the recorded benchmark (October's reports are in, December's notices not yet).
LAST_PERIOD = "2026-10"
NOW = "2026-11-28T09:00:00+07:00"
# The audit-log action that marks a database as completely generated (written last).
GENERATED = "bench.generated"


def async_url(url: str) -> str:
    """A URL for the app's async engine: a bare path becomes SQLite, postgresql:// asyncpg."""
    if "://" not in url:
        return f"sqlite+aiosqlite:///{Path(url).resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


def sqlite_file(url: str) -> Path | None:
    url = async_url(url)
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _pg_parts(url: str) -> tuple[str, str]:
    """(an admin DSN on the same server, the database name) of a PostgreSQL URL."""
    plain = "postgresql://" + async_url(url).split("://", 1)[1]
    base, _, name = plain.partition("?")[0].rpartition("/")
    return f"{base}/postgres", name


async def _on_server(url: str, run: Any) -> Any:
    """`run(connection, database name)` on the server's `postgres` database."""
    admin, name = _pg_parts(url)
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        return await run(conn, name)
    finally:
        await conn.close()


async def pg_database_exists(url: str) -> bool:
    return bool(
        await _on_server(
            url, lambda c, name: c.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        )
    )


async def pg_create_database(url: str) -> None:
    await _on_server(url, lambda c, name: c.execute(f'CREATE DATABASE "{name}"'))


async def pg_drop_database(url: str) -> None:
    await _on_server(
        url, lambda c, name: c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    )
