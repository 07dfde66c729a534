"""Writes the audit log: who did what, in the transaction that did it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.models import AuditLog


def entry(
    *,
    at: datetime,
    action: str,
    actor_label: str,
    actor_person_id: int | None = None,
    koperasi_id: int | None = None,
    note: str | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """An audit row's values: who did what, on which cooperative; the rest is its detail."""
    return {
        "at": at,
        "action": action,
        "actor_label": actor_label,
        "actor_person_id": actor_person_id,
        "koperasi_id": koperasi_id,
        "detail": detail,
        "note": note,
    }


def record(session: AsyncSession, **values: Any) -> None:
    """Add an audit row (see `entry` for the values) to the session's transaction."""
    session.add(AuditLog(**entry(**values)))


_INSERT = insert(AuditLog)


async def write(connection: AsyncConnection, **values: Any) -> None:
    """`record` for a caller working on a connection without an ORM session (one INSERT)."""
    await connection.execute(_INSERT, entry(**values))
