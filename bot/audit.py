"""Writes the audit log: who did what, in the transaction that did it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.models import AuditLog


def record(
    session: AsyncSession,
    *,
    at: datetime,
    action: str,
    actor_label: str,
    actor_person_id: int | None = None,
    koperasi_id: int | None = None,
    note: str | None = None,
    **detail: Any,
) -> None:
    session.add(
        AuditLog(
            at=at,
            action=action,
            actor_label=actor_label,
            actor_person_id=actor_person_id,
            koperasi_id=koperasi_id,
            detail=detail,
            note=note,
        )
    )


_INSERT = insert(AuditLog)


async def write(
    connection: AsyncConnection,
    *,
    at: datetime,
    action: str,
    actor_label: str,
    actor_person_id: int | None = None,
    koperasi_id: int | None = None,
    note: str | None = None,
    **detail: Any,
) -> None:
    """`record` for a caller working on a connection without an ORM session (one INSERT)."""
    await connection.execute(
        _INSERT,
        {
            "at": at,
            "action": action,
            "actor_label": actor_label,
            "actor_person_id": actor_person_id,
            "koperasi_id": koperasi_id,
            "detail": detail,
            "note": note,
        },
    )
