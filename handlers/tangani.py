"""/tangani in Telegram: an officer marks an obstacle as being handled; buttons "t:..."."""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot.tindak import PREFIX, TindakService
from handlers.common import PRIVATE, Context, actor_of, show_replies


def service(context: Context) -> TindakService:
    found = context.application.bot_data["tindak"]
    assert isinstance(found, TindakService)
    return found


async def tangani(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    text = " ".join(context.args or [])
    await show_replies(update, context, await service(context).start(actor, text), "")


async def button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    actor = await actor_of(update, context)
    await show_replies(update, context, await service(context).on_action(actor, query.data or ""))


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [
        CommandHandler("tangani", tangani, filters=PRIVATE),
        CallbackQueryHandler(button, pattern=f"^{PREFIX}"),
    ]
