"""/panggil in Telegram: an officer composes a summons; buttons carry "p:<draft>:<action>"."""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot.panggil import PanggilService
from bot.replies import action_id
from handlers import fallback
from handlers.common import PRIVATE, Context, actor_of, show_replies

CALLBACK_PREFIX = "p:"


def service(context: Context) -> PanggilService:
    found = context.application.bot_data["panggil"]
    assert isinstance(found, PanggilService)
    return found


async def panggil(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    await show_replies(update, context, await service(context).start(actor), CALLBACK_PREFIX)


async def button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    draft, _, action = (query.data or "").removeprefix(CALLBACK_PREFIX).partition(":")
    draft_id = action_id(draft)
    if draft_id is None or not action:
        await fallback.stale_button(update, context)
        return
    actor = await actor_of(update, context)
    replies = await service(context).on_action(actor, draft_id, action)
    await show_replies(update, context, replies, CALLBACK_PREFIX)


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [
        CommandHandler("panggil", panggil, filters=PRIVATE),
        CallbackQueryHandler(button, pattern=r"^p:"),
    ]
