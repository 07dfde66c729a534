"""/koperasi in Telegram: a cooperative's profile; match buttons carry "o:<koperasi id>"."""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot import profile
from handlers.common import PRIVATE, Context, actor_of, core_of, show_replies

CALLBACK_PREFIX = "o:"


async def koperasi(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    query = " ".join(context.args or [])
    replies = await profile.profile(core_of(context), actor, query)
    await show_replies(update, context, replies, CALLBACK_PREFIX)


async def button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    actor = await actor_of(update, context)
    data = (query.data or "").removeprefix(CALLBACK_PREFIX)
    await show_replies(update, context, await profile.on_choice(core_of(context), actor, data))


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    """/koperasi and its "o:" buttons; before the fallback's catch-all button handler."""
    return [
        CommandHandler("koperasi", koperasi, filters=PRIVATE),
        CallbackQueryHandler(button, pattern=r"^o:"),
    ]
