"""The outbox's WhatsApp transport: Cloud API messages, and its errors mapped to outcomes.

WhatsApp lets a business write freely only within 24 hours of the person's last message (the
customer-service window); outside it only an approved message template may start the
conversation. The sender hands each row's kind, template values (`outbox.params`) and the
chat identity's `last_seen_at` (kept by the webhook); within the window, less a safety margin,
the row goes as the same text and buttons the Telegram channel shows (handlers/whatsapp/
format.py), otherwise as the template configured for its kind (WHATSAPP_TEMPLATES: the kind
itself, else its family: open, reminder, summons, digest, ops, else default).

Errors of the Cloud API, as the outbox understands them:

- 130429 (throughput), 131056 (too many messages to one number), 80007 and 4 (rate limits),
  HTTP 429: flood control, RETRY_AFTER with a backoff that doubles while they last.
- 131047 (re-engagement: the window closed after all): the template is sent at once instead.
- 131026 (undeliverable: not on WhatsApp, an old app, terms not accepted): UNREACHABLE.
- 132015 / 132016 (template paused / disabled), 132000 / 132001 (template values / name
  wrong): PERMANENT, with the reason in the row's last_error.
- 401 and code 190 (token expired or revoked): PERMANENT, logged loudly: nothing will go out.
- 5xx, 131000 / 131016 / 1 / 2 (service trouble), timeouts, dropped connections: TRANSIENT.
- Anything else the API refuses: PERMANENT.

A template announces its message; for the kinds whose template does not say everything
(summons, digest, alerts, the rest) the row is marked (`bot.outbox.note_held`) and the message
itself goes once the person answers (`bot.outbox.resend_held`, called by the webhook).

Plain httpx rather than a WhatsApp library (pywa): the sender needs one endpoint and its own
mapping of errors to outcomes, and pywa brings its own web framework integration and update
types.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bot.core import Core
from bot.outbox import CONTINUED, external_key, note_held
from bot.sender import ButtonRows, Delivery, Outcome, RowContext
from handlers.whatsapp.format import whatsapp_message

log = logging.getLogger(__name__)

CHANNEL = "whatsapp"
# The customer-service window, and how long before its end the transport already uses the
# template (the person's last message may have been recorded a little late, and a free-form
# message refused with 131047 costs a round trip).
WINDOW = timedelta(hours=24)
WINDOW_MARGIN = timedelta(minutes=15)
# Flood control: the first pause, doubled at each further refusal in a row, at most the cap.
THROTTLE_FIRST_SECONDS = 1.0
THROTTLE_CAP_SECONDS = 60.0
# Meta's limits for a template's body parameter (no newlines or tabs, at most four spaces in
# a row) and the length the default template's excerpt of the message is cut to.
EXCERPT_LENGTH = 600
REQUEST_TIMEOUT = 10.0

# Families whose template says all there is to say and how to go on (reply LAPOR): the
# others' messages are sent in full once the person answers (bot.outbox.resend_held).
ANSWERED_BY_TEMPLATE = frozenset({"open", "reminder"})

_THROTTLED = {4, 80007, 130429, 131056}
_REENGAGEMENT = 131047
_UNDELIVERABLE = {131026}
_TEMPLATE_BROKEN = {132000, 132001, 132005, 132007, 132012, 132015, 132016}
_TOKEN = {190}
_SERVICE = {1, 2, 131000, 131016}


def template_family(kind: str) -> str:
    """The family of an outbox kind that picks its template when the kind has none itself."""
    if kind.startswith("reminder"):
        return "reminder"
    if kind == "summons" or kind.startswith("summons_"):
        return "summons"
    if kind == "ops_alert":
        return "ops"
    if kind in ("open", "digest"):
        return kind
    return "default"


def excerpt(text: str, length: int = EXCERPT_LENGTH) -> str:
    """The message as one line of plain text (a template parameter), at most `length` long."""
    plain = html.unescape(re.sub(r"<[^>]+>", "", text))
    line = " ".join(plain.split())
    return line if len(line) <= length else line[: length - 1].rstrip() + "…"


def _parameter(value: object) -> str:
    """A template body parameter as Meta accepts it: one line, no runs of spaces, not empty."""
    return " ".join(str(value).split()) or "-"


class WhatsAppTransport:
    """Delivers outbox rows to WhatsApp through the Cloud API (POST {base}/{number id}/
    messages, Authorization: Bearer <token>), inside the 24-hour window as the message itself,
    outside it as the kind's approved template."""

    channel = CHANNEL
    # The sender hands `deliver` each row's kind, template values and last_seen_at.
    wants_context = True

    def __init__(self, core: Core, *, connections: int | None = None) -> None:
        settings = core.settings
        if not settings.whatsapp_enabled or settings.whatsapp_access_token is None:
            raise ValueError("the WhatsApp channel is not configured")
        self.url = (
            f"{settings.whatsapp_api_base_url.rstrip('/')}/"
            f"{settings.whatsapp_phone_number_id}/messages"
        )
        self._headers = {
            "Authorization": f"Bearer {settings.whatsapp_access_token.get_secret_value()}",
            "Content-Type": "application/json",
        }
        self.templates = dict(settings.whatsapp_templates)
        self.language = settings.whatsapp_template_language
        self.core = core
        self._now = core.clock.now
        self.messages = core.messages
        # As many connections as the sender has sends in flight.
        self._connections = connections or settings.outbox_concurrency
        self._client: httpx.AsyncClient | None = None
        self._holders = 0
        self._throttled = 0  # flood-control refusals in a row
        self._throttled_until = 0.0  # the end of the last pause (time.monotonic())

    # -- connections --------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers=self._headers,
                timeout=REQUEST_TIMEOUT,
                limits=httpx.Limits(
                    max_connections=self._connections,
                    max_keepalive_connections=self._connections,
                ),
            )
        return self._client

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Keep the HTTP client (and its connections) until the last holder is done."""
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if not self._holders:
                await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- choosing -----------------------------------------------------------------------------

    def window_open(self, last_seen_at: datetime | None) -> bool:
        """Whether a free-form message may go: the person wrote within the last 24 hours
        (less the margin)."""
        if last_seen_at is None:
            return False
        if last_seen_at.tzinfo is None:
            last_seen_at = last_seen_at.replace(tzinfo=UTC)
        return self._now() - last_seen_at < WINDOW - WINDOW_MARGIN

    def template_for(
        self, kind: str, params: dict[str, Any] | None, text: str
    ) -> tuple[str, list[str]] | None:
        """The template name and body parameters for a row, or None when none is configured.
        The kind's own template or its family's with the row's values; without values (a
        kind the core gives none), the default template with an excerpt of the text."""
        name = self.templates.get(kind) or self.templates.get(template_family(kind))
        if name and params:
            return name, [_parameter(value) for value in params.values()]
        default = self.templates.get("default")
        if default:
            return default, [excerpt(text)]
        return None

    def template_body(self, to: str, name: str, values: list[str]) -> dict[str, Any]:
        template: dict[str, Any] = {"name": name, "language": {"code": self.language}}
        if values:
            template["components"] = [
                {"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}
            ]
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": template,
        }

    # -- sending ------------------------------------------------------------------------------

    async def deliver(
        self,
        chat_id: str,
        text: str,
        buttons: ButtonRows | None,
        context: RowContext | None = None,
    ) -> Delivery:
        row = context or RowContext()
        kind, params, row_id = row.kind, row.params, row.row_id
        continued = bool(params) and CONTINUED in (params or {})
        if self.window_open(row.last_seen_at):
            rows = [[(label, action) for label, action in row] for row in buttons or []]
            delivery = await self._post_all(
                whatsapp_message(chat_id, text, rows or None, messages=self.messages)
            )
            if delivery.error != "reengagement":
                return delivery
            log.info("whatsapp %s: the window had closed (131047); sending the template", chat_id)
        if continued:
            # The later part of a long message: the template sent for the first part stands
            # for all of it.
            return Delivery(Outcome.SENT)
        chosen = self.template_for(kind, params, text)
        if chosen is None:
            return Delivery(
                Outcome.PERMANENT,
                error=f"no WhatsApp template configured for {kind!r} (nor a default one): "
                "outside the 24-hour window only an approved template may be sent",
            )
        name, values = chosen
        delivery = await self._post_all([self.template_body(chat_id, name, values)])
        if delivery.error == "reengagement":
            return Delivery(Outcome.PERMANENT, error=f"template {name} refused (131047)")
        if (
            delivery.outcome is Outcome.SENT
            and row_id is not None
            and template_family(kind) not in ANSWERED_BY_TEMPLATE
        ):
            # The template only announces this message: it goes in full when they answer.
            try:
                await note_held(self.core, row_id, params, name)
            except Exception:
                log.exception("outbox row %s: could not mark it for sending again", row_id)
        return delivery

    async def _post_all(self, bodies: list[dict[str, Any]]) -> Delivery:
        """POST the bodies in order; the last message's id, or the first failure's outcome."""
        message_id: str | None = None
        for body in bodies:
            delivery = await self._post(body)
            if delivery.outcome is not Outcome.SENT:
                return delivery
            message_id = delivery.message_id
        self._throttled = 0
        return Delivery(Outcome.SENT, message_id=message_id)

    async def _post(self, body: dict[str, Any]) -> Delivery:
        try:
            response = await self._http().post(self.url, json=body)
        except httpx.TimeoutException as exc:
            return Delivery(Outcome.TRANSIENT, error=f"{type(exc).__name__}: timed out")
        except httpx.HTTPError as exc:
            return Delivery(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if response.is_success:
            messages = answer.get("messages") or [{}]
            wamid = messages[0].get("id") if isinstance(messages[0], dict) else None
            return Delivery(Outcome.SENT, message_id=external_key(wamid) if wamid else None)
        return self._refused(response.status_code, answer.get("error") or {}, body)

    def _refused(self, status: int, error: dict[str, Any], body: dict[str, Any]) -> Delivery:
        """The outcome of a request the Cloud API answered with an error."""
        code = error.get("code")
        details = (error.get("error_data") or {}).get("details") or ""
        message = error.get("message") or f"HTTP {status}"
        reason = f"{message} ({code}){': ' + details if details else ''}"
        if code in _THROTTLED or status == 429:
            now = time.monotonic()
            if now >= self._throttled_until:
                # A refusal after the last pause ended doubles the pause; the sends that
                # were in flight when it began do not.
                self._throttled += 1
                wait = THROTTLE_FIRST_SECONDS * 2 ** (self._throttled - 1)
                self._throttled_until = now + min(wait, THROTTLE_CAP_SECONDS)
            return Delivery(
                Outcome.RETRY_AFTER, retry_after=self._throttled_until - now, error=reason
            )
        if code == _REENGAGEMENT:
            return Delivery(Outcome.TRANSIENT, error="reengagement")
        if code in _UNDELIVERABLE:
            return Delivery(Outcome.UNREACHABLE, error=f"not reachable on WhatsApp: {reason}")
        if code in _TEMPLATE_BROKEN:
            name = (body.get("template") or {}).get("name", "?")
            log.warning("WhatsApp template %s cannot be used: %s", name, reason)
            return Delivery(Outcome.PERMANENT, error=f"template {name}: {reason}")
        if status == 401 or code in _TOKEN:
            log.critical(
                "WhatsApp refused the access token (%s): no WhatsApp message can be sent until "
                "WHATSAPP_ACCESS_TOKEN is renewed",
                reason,
            )
            return Delivery(Outcome.PERMANENT, error=f"access token refused: {reason}")
        if status >= 500 or code in _SERVICE:
            return Delivery(Outcome.TRANSIENT, error=reason)
        return Delivery(Outcome.PERMANENT, error=reason)
