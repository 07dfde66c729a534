"""Typed text and /batal, routed to whatever is waiting for this person's answer.

Order: a question asked outside a form (a delegate's name, a cancellation reason), then a
summons being composed, then the monthly report; what nobody claims goes to the fallback.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CommandHandler, MessageHandler, filters

from handlers import fallback, panggil, report, tangani, undangan
from handlers.common import PRIVATE, Context, actor_of, show_replies


async def text_answer(update: Update, context: Context) -> None:
    message = update.effective_message
    assert message is not None
    assert message.text is not None
    if await undangan.answer_text(update, context):
        return
    actor = await actor_of(update, context)
    noted = (
        await tangani.service(context).on_text(actor, message.text, message.message_id)
        if actor.prompt_waiting  # an obstacle note waits in a ChatPrompt too
        else None
    )
    if noted is not None:
        await show_replies(update, context, noted)
        return
    composed = await panggil.service(context).on_text(actor, message.text, message.message_id)
    if composed is not None:
        await show_replies(update, context, composed, panggil.CALLBACK_PREFIX)
        return
    answered = await report.service(context).on_text(actor, message.text, message.message_id)
    if answered is not None:
        await report.show(update, context, answered)
        return
    await fallback.stray_text(update, context)


async def batal(update: Update, context: Context) -> None:
    if await undangan.cancel(update, context):
        return
    actor = await actor_of(update, context)
    dropped = await tangani.service(context).cancel(actor)
    if dropped is not None:
        await show_replies(update, context, dropped)
        return
    composed = await panggil.service(context).cancel(actor)
    if composed is not None:
        await show_replies(update, context, composed, panggil.CALLBACK_PREFIX)
        return
    await report.show(update, context, await report.service(context).cancel(actor))


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [
        CommandHandler("batal", batal, filters=PRIVATE),
        MessageHandler(PRIVATE & filters.TEXT & ~filters.COMMAND, text_answer),
    ]
