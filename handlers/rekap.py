"""/rekap in Telegram: an officer's monthly recap, and its charts behind "k:chart:..." buttons."""

from __future__ import annotations

import asyncio
from functools import partial

from telegram import Update
from telegram.constants import ChatAction
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot.rekap import Chart, chart_view, recap_view
from handlers.common import (
    PRIVATE,
    Context,
    actor_of,
    answer_query,
    call_api,
    chat_action,
    core_of,
    show_replies,
    slow,
)

CALLBACK_PREFIX = "k:"


async def rekap(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    text = " ".join(context.args or []) or None
    core = core_of(context)
    async with core.slow_work:
        replies = await recap_view(core, actor, text)
    await show_replies(update, context, replies, CALLBACK_PREFIX)


async def chart_button(update: Update, context: Context) -> None:
    query = update.callback_query
    chat = update.effective_chat
    assert query is not None
    assert chat is not None
    actor = await actor_of(update, context)
    action = (query.data or "").removeprefix(CALLBACK_PREFIX)
    core = core_of(context)
    found = await chart_view(core, actor, action)
    if not isinstance(found, Chart):
        await show_replies(update, context, [found], CALLBACK_PREFIX)
        return
    # Stop the button's spinner now: drawing takes a second or two.
    await answer_query(update)
    await chat_action(context, chat.id, ChatAction.UPLOAD_PHOTO)
    async with core.slow_work:
        png = await asyncio.to_thread(found.render)
    await call_api(
        partial(
            context.bot.send_photo,
            chat.id,
            photo=png,
            filename=found.filename,
            caption=found.caption,
        )
    )


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [
        # Both read a whole registry (a country's: about a second): in the background.
        CommandHandler("rekap", slow(rekap), filters=PRIVATE),
        CallbackQueryHandler(slow(chart_button), pattern=r"^k:"),
    ]
