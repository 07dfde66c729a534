"""Answers for everything no feature handled: group chats, unknown commands, stray input."""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, MessageHandler, filters

from bot.onboarding import looks_like_code
from handlers.common import PRIVATE, Context, actor_of, answer_query, core_of, reply
from handlers.onboarding import link_with_code


async def private_only(update: Update, context: Context) -> None:
    await reply(update, context, "private_only")


async def unknown_command(update: Update, context: Context) -> None:
    await reply(update, context, "unknown_command")


async def stray_text(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None
    assert message.text is not None
    actor = await actor_of(update, context)
    if not actor.is_linked and looks_like_code(message.text):
        # People often paste just the code from the letter; treat it as /start CODE.
        await link_with_code(update, context, message.text)
        return
    await reply(update, context, "fallback_linked" if actor.is_linked else "fallback_unlinked")


async def unsupported(update: Update, context: Context) -> None:
    await reply(update, context, "unsupported_content")


async def stale_button(update: Update, context: Context) -> None:
    await answer_query(update, core_of(context).messages.render("stale_button"), alert=True)


def build_group_handlers() -> list[BaseHandler[Update, Context, None]]:
    """Registered before the features: in a group the bot only points to the private chat."""
    return [MessageHandler(filters.ChatType.GROUPS & filters.COMMAND, private_only)]


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    """Registered after the features, as the last resort in private chats."""
    return [
        MessageHandler(PRIVATE & filters.COMMAND, unknown_command),
        MessageHandler(PRIVATE & filters.TEXT, stray_text),
        MessageHandler(PRIVATE, unsupported),
        CallbackQueryHandler(stale_button),
    ]
