"""Incidents: a short id per failure, telling a database outage from a bug, and the rate-limited
alert to the officers who keep the bot running (the `ops` flag), through the outbox."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from bot.core import Core
from bot.outbox import Outgoing, enqueue
from storage.models import ChatIdentity, Officer

log = logging.getLogger(__name__)

ALERT_KIND = "ops_alert"
# At most one alert per error type in each window of this length (and per recipient chat).
ALERT_WINDOW = timedelta(minutes=10)
# Ahead of summons (3) and the monthly notices (5).
ALERT_PRIORITY = 1
# After a failed attempt to queue an alert (the database itself may be away), wait this long
# before trying again, so an outage does not add a failing write to every update.
RETRY_AFTER_FAILURE_SECONDS = 60.0
_TYPE_LENGTH = 120

# asyncpg's errors when the server or the connection to it is gone.
_ASYNCPG_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
)


def new_incident_id() -> str:
    """Eight hex characters: short enough to read out over the phone, unique enough per day."""
    return secrets.token_hex(4)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def database_unavailable(error: BaseException) -> bool:
    """True when the error means the database could not be reached or the connection broke
    (as opposed to a bug): the person is asked to try again shortly, nothing was half-written
    because the transaction was rolled back, and the pool hands out a fresh connection next."""
    for item in _chain(error):
        if isinstance(item, DBAPIError) and item.connection_invalidated:
            return True
        if isinstance(item, OperationalError | InterfaceError | PoolTimeoutError):
            return True
        if isinstance(item, _ASYNCPG_CONNECTION_ERRORS):
            return True
        if isinstance(item, OSError):  # refused, reset, unreachable, timed out, disk errors
            return True
    return False


def error_type(error: BaseException) -> str:
    """The name alerts are grouped by, e.g. "RuntimeError" or "sqlalchemy.exc.OperationalError"."""
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return name[:_TYPE_LENGTH]


def alert_bucket(at: datetime, window: timedelta = ALERT_WINDOW) -> int:
    """Which alert window a moment falls in (windows are aligned on the epoch)."""
    return int(at.timestamp() // window.total_seconds())


def alert_key(kind: str, bucket: int, chat_identity_id: int) -> str:
    """The outbox dedupe key: one alert per error type, window and chat, in every process."""
    return f"{ALERT_KIND}:{kind}:{bucket}:i{chat_identity_id}"


@dataclass(frozen=True)
class Incident:
    """What an alert says: the id, the error type, and what the bot was handling (a command,
    a button prefix; never what the person typed)."""

    incident_id: str
    kind: str
    database: bool
    source: str
    detail: str = ""


class OpsAlerts:
    """Queues ops alerts. The outbox's unique dedupe key makes them at most one per error type
    per window across processes; the in-process memory only saves database round trips."""

    def __init__(
        self,
        core: Core,
        window: timedelta = ALERT_WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = core
        self.window = window
        self._monotonic = monotonic
        self._queued: set[tuple[str, int]] = set()
        self._failed_at: dict[tuple[str, int], float] = {}

    async def alert(self, incident: Incident) -> int:
        """Queue the alert for every ops officer's chat; returns how many rows were new.

        Never raises: a failure to alert is logged with the incident id and dropped.
        """
        now = self.core.clock.now()
        bucket = alert_bucket(now, self.window)
        memo = (incident.kind, bucket)
        if memo in self._queued:
            return 0
        failed_at = self._failed_at.get(memo)
        if failed_at is not None and self._monotonic() - failed_at < RETRY_AFTER_FAILURE_SECONDS:
            return 0
        try:
            new = await self._queue(incident, now, bucket)
        except Exception:
            self._failed_at[memo] = self._monotonic()
            log.warning(
                "incident %s: could not queue the ops alert", incident.incident_id, exc_info=True
            )
            return 0
        self._failed_at.pop(memo, None)
        self._queued = {key for key in self._queued if key[1] >= bucket - 1}
        self._queued.add(memo)
        return new

    async def _queue(self, incident: Incident, now: datetime, bucket: int) -> int:
        async with self.core.db.transaction() as session:
            recipients = (
                await session.execute(
                    select(ChatIdentity.id, ChatIdentity.person_id)
                    .join(Officer, Officer.person_id == ChatIdentity.person_id)
                    .where(
                        Officer.ops.is_(True),
                        Officer.active.is_(True),
                        ChatIdentity.unreachable_at.is_(None),
                    )
                    .order_by(ChatIdentity.id)
                )
            ).all()
            if not recipients:
                return 0
            text = self.core.messages.render(
                "ops_alert",
                waktu=now,
                kode=incident.incident_id,
                jenis=incident.kind,
                basis_data=incident.database,
                sumber=incident.source,
                rincian=incident.detail,
                menit=int(self.window.total_seconds() // 60),
            )
            # WhatsApp's template outside its 24-hour window (messages/*/wa_template_ops).
            m = self.core.messages
            params = {
                "waktu": f"{m.tanggal_pendek(now)} {m.jam(now)}",
                "jenis": incident.kind,
                "kode": incident.incident_id,
            }
            items = [
                Outgoing(
                    dedupe_key=alert_key(incident.kind, bucket, identity_id),
                    kind=ALERT_KIND,
                    chat_identity_id=identity_id,
                    person_id=person_id,
                    text=text,
                    quiet_hours=False,  # a failure does not wait for the morning
                    priority=ALERT_PRIORITY,
                    params=params,
                )
                for identity_id, person_id in recipients
            ]
            return await enqueue(session, items, now)
