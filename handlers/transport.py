"""The outbox's Telegram transport: sendMessage, and Bot API errors mapped to outcomes."""

from __future__ import annotations

from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from bot.sender import ButtonRows, Delivery, Outcome
from handlers.common import CHANNEL, keyboard, retry_after_seconds

__all__ = ["TelegramTransport", "retry_after_seconds"]

# 400 answers that mean the chat is gone for good rather than that the request was wrong.
_GONE = ("chat not found", "user not found", "peer_id_invalid", "chat_write_forbidden")


def _chat(chat_id: str) -> int | str:
    # Numeric ids as numbers; "@channelname" stays a string.
    return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id


class TelegramTransport:
    """Delivers outbox rows with a python-telegram-bot `Bot`.

    Its HTTP client should allow as many connections as the sender's concurrency (an
    Application's bot has 256; a bare `Bot` has 1 unless given an `HTTPXRequest`).
    """

    channel = CHANNEL

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def deliver(self, chat_id: str, text: str, buttons: ButtonRows | None) -> Delivery:
        markup = keyboard([[(label, data) for label, data in row] for row in buttons or []])
        try:
            message = await self.bot.send_message(
                chat_id=_chat(chat_id), text=text, parse_mode=ParseMode.HTML, reply_markup=markup
            )
        except RetryAfter as exc:
            return Delivery(
                Outcome.RETRY_AFTER, retry_after=retry_after_seconds(exc), error=str(exc)
            )
        except Forbidden as exc:
            return Delivery(Outcome.UNREACHABLE, error=exc.message)
        except ChatMigrated as exc:
            return Delivery(Outcome.MIGRATED, new_chat_id=str(exc.new_chat_id), error=exc.message)
        except BadRequest as exc:
            # BadRequest is a NetworkError in PTB, so it is caught first.
            gone = any(marker in exc.message.lower() for marker in _GONE)
            return Delivery(Outcome.UNREACHABLE if gone else Outcome.PERMANENT, error=exc.message)
        except (TimedOut, NetworkError) as exc:
            return Delivery(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc.message}")
        except TelegramError as exc:
            return Delivery(Outcome.TRANSIENT, error=f"{type(exc).__name__}: {exc.message}")
        return Delivery(Outcome.SENT, message_id=str(message.message_id))
