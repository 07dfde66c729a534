"""/ekspor in Telegram: an officer's monthly workbook, sent as a document."""

from __future__ import annotations

from functools import partial

from telegram import Update
from telegram.constants import ChatAction
from telegram.ext import BaseHandler, CommandHandler

from bot.export import Document, officer_export
from handlers.common import (
    PRIVATE,
    Context,
    actor_of,
    call_api,
    chat_action,
    core_of,
    reply,
    show_replies,
    slow,
)

# The chats whose workbook is being built (or waits for Core.slow_work).
_BUILDING = "koperasi_exports_of_chats"


async def ekspor(update: Update, context: Context) -> None:
    chat = update.effective_chat
    assert chat is not None
    # /ekspor typed again while the first is built: one workbook per chat, not a queue of them.
    building: set[int] = context.bot_data.setdefault(_BUILDING, set())
    if chat.id in building:
        await reply(update, context, "ekspor_sedang")
        return
    building.add(chat.id)
    try:
        await _export(update, context, chat.id)
    finally:
        building.discard(chat.id)


async def _export(update: Update, context: Context, chat_id: int) -> None:
    actor = await actor_of(update, context)
    if actor.officer is not None:
        # Building the workbook takes a moment on a large registry; show that it is coming.
        await chat_action(context, chat_id, ChatAction.UPLOAD_DOCUMENT)
    core = core_of(context)
    async with core.slow_work:  # one at a time (the next waits with "sending a file…" shown)
        result = await officer_export(core, actor, " ".join(context.args or []) or None)
    if isinstance(result, Document):
        await call_api(
            partial(
                context.bot.send_document,
                chat_id,
                document=result.content,
                filename=result.filename,
                caption=result.caption,
            )
        )
        return
    await show_replies(update, context, result)


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [CommandHandler("ekspor", slow(ekspor), filters=PRIVATE)]
