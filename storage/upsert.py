"""INSERT ... ON CONFLICT DO NOTHING on SQLite and PostgreSQL: idempotency by constraint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute

# Keeps each statement well below SQLite's and asyncpg's bound-parameter limits.
CHUNK = 500


def _insert(session: AsyncSession, model: type[DeclarativeBase]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"no ON CONFLICT support for {dialect}")


async def insert_ignoring_conflicts(
    session: AsyncSession,
    model: type[DeclarativeBase],
    rows: Sequence[dict[str, Any]],
    conflict_columns: Sequence[str],
) -> int:
    """Insert the rows that do not collide on `conflict_columns`; returns how many were new."""
    key = inspect(model).primary_key[0]
    inserted = await insert_returning_new(session, model, rows, conflict_columns, key)
    return len(inserted)


async def insert_returning_new(
    session: AsyncSession,
    model: type[DeclarativeBase],
    rows: Sequence[dict[str, Any]],
    conflict_columns: Sequence[str],
    returning: InstrumentedAttribute[Any] | ColumnElement[Any],
) -> list[Any]:
    """Insert the rows that do not collide and return `returning` of each new row.

    Rows another transaction inserted first are skipped, not errors: on PostgreSQL the
    statement waits for that transaction and then does nothing.
    """
    new: list[Any] = []
    for start in range(0, len(rows), CHUNK):
        chunk = list(rows[start : start + CHUNK])
        statement = (
            _insert(session, model)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=list(conflict_columns))
            .returning(returning)
        )
        result = await session.execute(statement)
        new.extend(result.scalars().all())
    return new
