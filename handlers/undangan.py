"""Summons after sending, in Telegram: the RSVP buttons and officers' buttons ("u:<id>:<verb>"),
/undangan, and the typed answers their questions wait for.

Button actions from bot/rsvp.py already carry the "u:" prefix (the outbox stores them as the
callback data), so replies are shown without adding one.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot import rsvp
from handlers.common import PRIVATE, Context, actor_of, core_of, show_replies

CALLBACK_PATTERN = r"^u:"


async def undangan(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    await show_replies(update, context, await rsvp.overview(core_of(context), actor))


async def button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    actor = await actor_of(update, context)
    await show_replies(
        update, context, await rsvp.on_action(core_of(context), actor, query.data or "")
    )


async def answer_text(update: Update, context: Context) -> bool:
    """For the text router: True when a question of ours took the typed text."""
    message = update.effective_message
    assert message is not None
    assert message.text is not None
    actor = await actor_of(update, context)
    if not actor.prompt_waiting:  # no question of ours waits: spare the transaction
        return False
    replies = await rsvp.on_text(core_of(context), actor, message.text, message.message_id)
    if replies is None:
        return False
    await show_replies(update, context, replies)
    return True


async def cancel(update: Update, context: Context) -> bool:
    """For /batal: True when a question of ours was waiting and is now dropped."""
    actor = await actor_of(update, context)
    replies = await rsvp.cancel_prompt(core_of(context), actor)
    if replies is None:
        return False
    await show_replies(update, context, replies)
    return True


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    """/undangan and the "u:" buttons; before the fallback's catch-all button handler."""
    return [
        CommandHandler("undangan", undangan, filters=PRIVATE),
        CallbackQueryHandler(button, pattern=CALLBACK_PATTERN),
    ]
