"""/jadwal in Telegram: the reporting calendar, what went out, and the status so far."""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CommandHandler

from bot.reminders import schedule_view
from handlers.common import PRIVATE, Context, actor_of, core_of
from handlers.report import show


async def jadwal(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    await show(update, context, [await schedule_view(core_of(context), actor)])


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [CommandHandler("jadwal", jadwal, filters=PRIVATE)]
