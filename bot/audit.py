"""Writes the audit log: who did what, in the transaction that did it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

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
