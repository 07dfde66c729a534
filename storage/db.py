"""Async engine and session setup for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event, make_url
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

if TYPE_CHECKING:
    from storage.direct import Direct

_T = TypeVar("_T")


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path)


# How long a SQLite writer waits for another connection's write to finish before failing.
BUSY_TIMEOUT_MS = 10_000
_SQLITE_BUSY = 5  # the primary result code; extended codes keep it in the low byte


def sqlite_pragmas(*, inline: bool) -> tuple[str, ...]:
    """Every SQLite connection's settings. WAL lets readers work while one writer commits;
    busy_timeout waits instead of failing (the inline driver waits in a thread instead, see
    InlineSqlite)."""
    return (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA busy_timeout={0 if inline else BUSY_TIMEOUT_MS}",
    )


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    inline = isinstance(getattr(dbapi_connection, "_connection", None), InlineSqlite)
    cursor = dbapi_connection.cursor()
    for pragma in sqlite_pragmas(inline=inline):
        cursor.execute(pragma)
    cursor.close()


def _busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY


class InlineSqlite:
    """The part of aiosqlite's connection that SQLAlchemy's aiosqlite dialect uses, run in the
    event loop's own thread.

    aiosqlite sends every call (cursor, execute, fetch, close, commit) to a worker thread and
    waits for the answer: each hand-over costs two thread wake-ups, as much as the statement
    itself on an idle machine and several times more on busy cores (a statement on an indexed
    row takes tens of microseconds, and under WAL reads never wait for writers). Here the calls
    run directly (docs/BENCHMARKS.md, update handling).

    What would block the event loop is waiting for another connection's write lock, so a write
    never waits here: the connection's busy timeout is 0 and a statement refused with
    SQLITE_BUSY (which does nothing) is run again in a worker thread with the usual
    BUSY_TIMEOUT_MS wait. The price: a long-running query (a national export) holds up the event
    loop while SQLite works, where aiosqlite would have let other coroutines run meanwhile.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._tx = _RunNow()  # the dialect's isolation_level setter queues a call here

    @classmethod
    async def connect(cls, database: str, **kwargs: Any) -> InlineSqlite:
        kwargs.update(timeout=0, check_same_thread=False)
        return cls(sqlite3.connect(database, **kwargs))

    @property
    def raw(self) -> sqlite3.Connection:
        """The sqlite3 connection (storage.direct runs its statements on it)."""
        return self._conn

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("Connection closed")
        return self._connection

    async def run(self, call: Callable[..., _T], *args: Any) -> _T:
        """`call(*args)` here; when another connection holds the write lock, in a thread that
        waits for it."""
        try:
            return call(*args)
        except sqlite3.OperationalError as error:
            if not _busy(error):
                raise
        # The wait goes on in the thread even if the caller is cancelled meanwhile: nobody may
        # use the connection before it ends (aiosqlite's one worker thread gives the same).
        waiting = asyncio.get_running_loop().run_in_executor(
            None, partial(self._waiting, call, *args)
        )
        cancelled = None
        while True:
            try:
                result = await asyncio.shield(waiting)
            except asyncio.CancelledError as error:
                if waiting.done():
                    raise
                cancelled = error
            else:
                break
        if cancelled is not None:
            raise cancelled
        return result

    def _waiting(self, call: Callable[..., _T], *args: Any) -> _T:
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            return call(*args)
        finally:
            self._conn.execute("PRAGMA busy_timeout=0")

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _InlineCursor:
        return _InlineCursor(self, self._conn.cursor())

    async def commit(self) -> None:
        await self.run(self._conn.commit)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class _InlineCursor:
    """aiosqlite's cursor API over a sqlite3 cursor (see InlineSqlite)."""

    __slots__ = ("_connection", "_cursor")

    def __init__(self, connection: InlineSqlite, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor

    async def __aenter__(self) -> _InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Any = None) -> _InlineCursor:
        if parameters is None:
            await self._connection.run(self._cursor.execute, sql)
        else:
            await self._connection.run(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> _InlineCursor:
        await self._connection.run(self._cursor.executemany, sql, list(parameters))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _RunNow:
    """Stands for aiosqlite's queue to its worker thread: runs the call at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, call = item
        try:
            future.set_result(call())
        except Exception as error:  # handed to the awaiting caller, as aiosqlite does
            future.set_exception(error)


def create_engine(url: str, *, sqlite_inline: bool = True, **kwargs: Any) -> AsyncEngine:
    """The async engine for `url`. On SQLite the statements run in the event loop's thread
    (`sqlite_inline`, see InlineSqlite) unless told to use aiosqlite's worker thread."""
    file = _sqlite_file(url)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    if not url.startswith("sqlite"):
        # A server restart leaves dead connections in the pool: test each one as it is taken
        # (one cheap round trip) so the first update after a restart is answered, not refused.
        kwargs.setdefault("pool_pre_ping", True)
    elif sqlite_inline and "creator" not in kwargs and "async_creator" not in kwargs:
        args, options = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
        kwargs["async_creator"] = partial(InlineSqlite.connect, *args, **options)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    return engine


class Database:
    """One engine and its session factory; `session()` is the unit of work."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        # On SQLite, every unit of work runs in the event loop's thread (see InlineSqlite).
        self.engine = create_engine(url, **engine_kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # The hot path's own connection (storage.direct): SQLite files with the inline driver.
        self.direct: Direct | None = None
        inline = engine_kwargs.get("sqlite_inline", True) and not (
            {"creator", "async_creator"} & engine_kwargs.keys()
        )
        if self.dialect == "sqlite" and inline and _sqlite_file(url) is not None:
            from storage.direct import Direct  # it builds on this module

            self.direct = Direct(url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside a transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        if self.direct is not None:
            self.direct.close()
        await self.engine.dispose()
