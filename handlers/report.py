"""The monthly report in Telegram: /lapor, /batal, answers typed, photos and buttons."""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.replies import Reply, action_id
from bot.reports import ReportService
from handlers import fallback
from handlers.common import PRIVATE, Context, actor_of, show_replies

CALLBACK_PREFIX = "r:"
# Reminders carry this button data (see bot/reminders.py).
START_PREFIX = "lapor:"


def service(context: Context) -> ReportService:
    service = context.application.bot_data["reports"]
    assert isinstance(service, ReportService)
    return service


async def show(update: Update, context: Context, replies: list[Reply]) -> None:
    await show_replies(update, context, replies, CALLBACK_PREFIX)


async def lapor(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    text = " ".join(context.args or []) or None
    await show(update, context, await service(context).start(actor, text))


async def photo_answer(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None
    actor = await actor_of(update, context)
    photo = message.photo[-1]  # the largest size
    replies = await service(context).on_photo(actor, photo.file_id, message.message_id)
    if replies is None:
        await fallback.unsupported(update, context)
        return
    await show(update, context, replies)


async def button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    data = (query.data or "").removeprefix(CALLBACK_PREFIX)
    draft, _, action = data.partition(":")
    draft_id = action_id(draft)
    if draft_id is None or not action:
        await fallback.stale_button(update, context)
        return
    actor = await actor_of(update, context)
    await show(update, context, await service(context).on_action(actor, draft_id, action))


async def start_button(update: Update, context: Context) -> None:
    """The button under an opening notice or a reminder: start that month's report."""
    query = update.callback_query
    assert query is not None
    period = (query.data or "").removeprefix(START_PREFIX)
    actor = await actor_of(update, context)
    await show(update, context, await service(context).start(actor, period))


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [
        CommandHandler("lapor", lapor, filters=PRIVATE),
        CallbackQueryHandler(button, pattern=r"^r:"),
        CallbackQueryHandler(start_button, pattern=r"^lapor:\d{4}-\d{2}$"),
        MessageHandler(PRIVATE & filters.PHOTO, photo_answer),
    ]
