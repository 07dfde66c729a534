"""SQLite's hot path: the few statements every update runs, on the driver's own connection.

Who is writing (`bot.identity`) and the report draft (`bot.reports`) are read and written at
every update. Through SQLAlchemy's async engine each of those statements costs 70–100 µs of
Python (a pool checkout, the greenlet hand-over, the execution context, the result object)
around the 5–20 µs SQLite needs; at 3–4 statements an update that was most of an update's
cost (docs/BENCHMARKS.md, update handling). Here a statement is compiled once by SQLAlchemy
(same SQL, same bind and result types as the engine would use) and run by `sqlite3` itself on
one connection per process, in autocommit mode: each statement is its own transaction, so the
connection holds nothing between statements and any coroutine may use it (one statement at a
time). Callers that need
several statements to be atomic use the engine's sessions as before; the draft stays
consistent by its version column (`UPDATE … WHERE version = ?`).

The connection is the event loop's, like `storage.db.InlineSqlite` (which it uses): a
statement refused because another connection holds the write lock is run again in a worker
thread that waits for it, so the loop never waits for a lock. Errors come out as SQLAlchemy's
(`OperationalError`, `IntegrityError`, …), as from the engine.

PostgreSQL has no such path: there every statement is a network round trip and the engine's
cost matters less (and the throughput target of issue 8 is SQLite's).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from storage.db import InlineSqlite, sqlite_pragmas

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Parameter:
    name: str
    required: bool  # given at each execution; otherwise `default` (a constant of the statement)
    default: Any
    process: _Processor


@dataclass(frozen=True)
class Prepared:
    """A statement compiled for SQLite: its SQL, its parameters in order with their bind
    processors, and the result columns' processors."""

    sql: str
    slots: tuple[_Parameter, ...]
    results: tuple[_Processor, ...]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for p in self.slots:
            value = values[p.name] if p.required else values.get(p.name, p.default)
            out.append(value if p.process is None else p.process(value))
        return tuple(out)

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        if not self.results:  # a textual statement: the driver's values as they are
            return tuple(raw)
        return tuple(
            value if process is None or value is None else process(value)
            for value, process in zip(raw, self.results, strict=True)
        )


class Direct:
    """One autocommit sqlite3 connection of this process for the hot path (see the module)."""

    def __init__(self, url: str) -> None:
        self.dialect = SQLiteDialect_aiosqlite()
        self._args, self._options = self.dialect.create_connect_args(make_url(url))
        self._connection: InlineSqlite | None = None
        # One statement at a time: uncontended it costs nothing (statements run without
        # yielding), but while one waits in a worker thread for another connection's write
        # lock, the others wait here instead of on the connection's mutex, which would block
        # the event loop.
        self._lock = asyncio.Lock()
        # By the statement's id; the statement is kept with it so the id is not reused.
        self._prepared: dict[int, tuple[ClauseElement, Prepared]] = {}
        self.statements = 0  # how many were run (bench/updates.py counts them)

    def prepare(self, statement: ClauseElement) -> Prepared:
        """Compile once; the statement object is the key (build statements once, at import)."""
        found = self._prepared.get(id(statement))
        if found is not None:
            return found[1]
        compiled = statement.compile(dialect=self.dialect)
        assert isinstance(compiled, SQLCompiler)
        dialect = self.dialect
        # The dialect's form of each type (e.g. SQLite's DATETIME under a TypeDecorator), as
        # the engine uses them.
        parameters = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            parameters.append(
                _Parameter(
                    name,
                    bind.required,
                    None if bind.required else bind.effective_value,
                    bind.type.dialect_impl(dialect).bind_processor(dialect),
                )
            )
        results = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in getattr(statement, "selected_columns", ())
        )
        prepared = Prepared(compiled.string, tuple(parameters), results)
        self._prepared[id(statement)] = (statement, prepared)
        return prepared

    async def first(
        self, statement: ClauseElement, values: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        prepared = self.prepare(statement)
        raw = await self._run(prepared, values, _fetchone)
        return None if raw is None else prepared.row(raw)

    async def execute(self, statement: ClauseElement, values: Mapping[str, Any]) -> int:
        """Run a write; returns the rows it matched."""
        count: int = await self._run(self.prepare(statement), values, _rowcount)
        return count

    async def _run(
        self,
        prepared: Prepared,
        values: Mapping[str, Any],
        result: Callable[[sqlite3.Cursor], Any],
    ) -> Any:
        parameters = prepared.parameters(values)
        try:
            async with self._lock:
                connection = self._connection or await self._connect()
                self.statements += 1
                return await connection.run(
                    _statement, connection, prepared.sql, parameters, result
                )
        except sqlite3.Error as error:
            raise exc.DBAPIError.instance(
                prepared.sql, parameters, error, sqlite3.Error, dialect=self.dialect
            ) from error

    async def _connect(self) -> InlineSqlite:
        connection = await InlineSqlite.connect(*self._args, **self._options)
        connection.raw.isolation_level = None  # autocommit: every statement its own transaction
        for pragma in sqlite_pragmas(inline=True):
            connection.raw.execute(pragma)
        self._connection = connection
        return connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.stop()


def _statement(
    connection: InlineSqlite,
    sql: str,
    parameters: tuple[Any, ...],
    result: Callable[[sqlite3.Cursor], Any],
) -> Any:
    cursor = connection.raw.execute(sql, parameters)
    try:
        return result(cursor)
    finally:
        cursor.close()


def _fetchone(cursor: sqlite3.Cursor) -> Any:
    return cursor.fetchone()


def _rowcount(cursor: sqlite3.Cursor) -> int:
    return cursor.rowcount
